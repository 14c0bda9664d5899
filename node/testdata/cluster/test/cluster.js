'use strict';

// The cluster harness: for one test file it starts one redis-server on a free
// port, three hubnode nodes (n1, n2, n3) in cluster mode against it, and real
// nginx in front of them with the repository's charts/nginx/hubnode.conf
// (copied byte for byte at test time, so the file that serves deployment is
// the file under test). That file gives client-address affinity (`hash
// $remote_addr consistent`), so clients that must look like different
// machines connect from distinct loopback addresses (connect's `from`,
// newSourceAddress()). Tests may start more nginx instances with modified
// copies of the file (startExtraNginx).
//
// Every process it starts is stopped by the after hook that startCluster()
// registers (and, as a last resort, SIGKILLed when the test process exits);
// every socket made through it is closed; every wait has a timeout. On a
// failing test, itest() prints the output of every process.

const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');
const common = require('../../jslib/common');

const { BIN, ISO_RE, DEFAULT_WAIT_MS, sleep, withTimeout } = common;
// The socket event recorder.
const { track, history, received, waitFor, waitForEntry, assertTimestamp, withoutTimestamp } = common;
const NGINX_CONF_SRC = path.resolve(__dirname, '../../../../charts/nginx/hubnode.conf');
const NGINX_BIN = process.env.NGINX_BIN || 'nginx';
const REDIS_BIN = process.env.REDIS_SERVER_BIN || 'redis-server';

// 32-character test credentials.
const JWT_SECRET = 'cluster-jwt-secret-0123456789abc';
const API_KEY = 'cluster-api-key-0123456789abcdef';
common.assertCredentials(JWT_SECRET, API_KEY);

const NODE_IDS = ['n1', 'n2', 'n3'];

const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 50;
const REDIS_START_TIMEOUT_MS = 10_000;
const NGINX_START_TIMEOUT_MS = 10_000;
const STOP_KILL_AFTER_MS = 5_000;
const HTTP_TIMEOUT_MS = 5_000;

// HUBNODE_LOGS=1 prints every process's output when the file ends, not only on failure.
const ALWAYS_LOG = process.env.HUBNODE_LOGS === '1';

// Every child process started by this file, for the exit-time safety net.
const CHILDREN = new Set();
process.on('exit', () => {
  for (const p of CHILDREN) {
    try {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

// ---------------------------------------------------------------------------
// Ports and processes

const HANDED_OUT = new Set();

/** Resolves with a port that was free a moment ago on 127.0.0.1 (never one handed out before by this process). */
async function freePort() {
  for (let i = 0; i < 50; i++) {
    const port = await common.freePort();
    if (port !== 6379 && !HANDED_OUT.has(port)) {
      HANDED_OUT.add(port);
      return port;
    }
  }
  throw new Error('freePort: no new free port found');
}

/**
 * Spawns a process and collects its output. Returns
 * {name, proc, pid, output(), exited, exitInfo, signal(sig), stop()}.
 */
function launch(name, cmd, args, opts = {}) {
  const { proc, logs, output } = common.spawnCollecting(cmd, args, { env: opts.env, cwd: opts.cwd });
  CHILDREN.add(proc);
  const handle = {
    name,
    proc,
    pid: proc.pid,
    exitInfo: null,
    spawnError: null,
    startedAt: Date.now(),
    output,
    note: (line) => logs.push(`[harness ${new Date().toISOString()}] ${line}\n`),
  };
  handle.exited = new Promise((resolve) => {
    proc.on('error', (err) => {
      handle.spawnError = err;
      if (handle.exitInfo === null) {
        handle.exitInfo = { code: null, signal: null, error: err };
        CHILDREN.delete(proc);
        resolve(handle.exitInfo);
      }
    });
    proc.on('exit', (code, signal) => {
      if (handle.exitInfo === null) handle.exitInfo = { code, signal };
      CHILDREN.delete(proc);
      resolve(handle.exitInfo);
    });
  });
  handle.signal = (sig) => {
    if (handle.exitInfo !== null) return false;
    handle.note(`sending ${sig} to pid ${proc.pid}`);
    return proc.kill(sig);
  };
  /** Sends sig (default SIGTERM), SIGKILL after STOP_KILL_AFTER_MS; resolves the exit info. */
  handle.stop = async (sig = 'SIGTERM') => {
    if (handle.exitInfo !== null) return handle.exitInfo;
    handle.signal(sig);
    const killer = setTimeout(() => {
      handle.note(`no exit ${STOP_KILL_AFTER_MS} ms after ${sig}: sending SIGKILL`);
      proc.kill('SIGKILL');
    }, STOP_KILL_AFTER_MS);
    try {
      return await handle.exited;
    } finally {
      clearTimeout(killer);
    }
  };
  /** SIGKILL and wait for the exit (bounded). */
  handle.kill9 = async () => {
    if (handle.exitInfo !== null) return handle.exitInfo;
    handle.signal('SIGKILL');
    return withTimeout(handle.exited, 5000, `${name} (pid ${proc.pid}) did not exit after SIGKILL`);
  };
  return handle;
}

function dumpOutput(handle, why) {
  process.stderr.write(
    `\n----- ${handle.name} output (pid ${handle.pid}, ${why}) -----\n${handle.output() || '(nothing)\n'}----- end of ${handle.name} output -----\n`,
  );
}

// ---------------------------------------------------------------------------
// Redis

/** Sends one inline command to Redis at port and resolves the first reply line. */
function redisCommand(port, command, timeout = 1000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${command}: no answer within ${timeout} ms`));
    }, timeout);
    sock.on('connect', () => sock.write(`${command}\r\n`));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf.slice(0, i));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Starts redis-server on port (in dir, nothing persisted) and waits for PONG. */
async function startRedisProcess(port, dir) {
  const handle = launch(`redis-server :${port}`, REDIS_BIN, [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    '--loglevel', 'warning',
  ]);
  const deadline = Date.now() + REDIS_START_TIMEOUT_MS;
  let last = 'no answer yet';
  while (true) {
    if (handle.spawnError) throw new Error(`cannot start ${REDIS_BIN}: ${handle.spawnError.message}`);
    if (handle.exitInfo) throw new Error(`redis-server exited (${JSON.stringify(handle.exitInfo)}); output:\n${handle.output()}`);
    try {
      const reply = await redisCommand(port, 'PING', 500);
      if (reply === '+PONG') return handle;
      last = reply;
    } catch (err) {
      last = err.code || err.message;
    }
    if (Date.now() > deadline) {
      await handle.kill9();
      throw new Error(`redis-server on ${port} did not answer PING within ${REDIS_START_TIMEOUT_MS} ms (last: ${last})`);
    }
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------
// HTTP

/**
 * Calls baseUrl + pathname. opts: method (default GET, or POST with a body),
 * body (JSON-encoded), key (API key; null sends no Authorization header;
 * default the test API key), headers, timeout.
 * Resolves {status, headers, text, body} (body: parsed JSON or undefined).
 */
function httpCall(baseUrl, pathname, opts = {}) {
  return common.httpRequest(baseUrl, pathname, opts, {
    apiKey: API_KEY,
    rawContentType: 'text/plain;charset=UTF-8',
    timeout: HTTP_TIMEOUT_MS,
    requestFrom,
  });
}

/**
 * One HTTP request with node:http from a chosen local (source) address,
 * which fetch() cannot do; resolves a fetch-like {status, headers, text()}.
 */
function requestFrom(localAddress, url, { method, headers, body, timeout }) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, localAddress, agent: false, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) h.set(k, Array.isArray(v) ? v.join(', ') : v);
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode, headers: h, text: async () => text });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} from ${localAddress}: no answer within ${timeout} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

// Loopback source addresses for clients that must look like different
// machines to nginx (its upstream hashes $remote_addr): 127.0.0.2 … .254,
// then 127.0.1.2 …; each call hands out a new one for this process.
// 127.0.0.0/8 is all loopback on Linux: any of them can be bound without setup.
let sourceCount = 0;
function newSourceAddress() {
  const i = sourceCount++;
  if (i >= 253 * 200) throw new Error('newSourceAddress: out of loopback addresses');
  return `127.0.${Math.floor(i / 253)}.${2 + (i % 253)}`;
}

/** Polls url until it answers 200; throws after timeout with the last problem. */
async function waitHttp200(url, timeout, isDead = () => null) {
  const deadline = Date.now() + timeout;
  let last = 'no answer yet';
  while (true) {
    const dead = isDead();
    if (dead) throw new Error(dead);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = err.cause?.code || err.message;
    }
    if (Date.now() > deadline) throw new Error(`${url} not 200 within ${timeout} ms (last: ${last})`);
    await sleep(READY_POLL_MS);
  }
}

// ---------------------------------------------------------------------------
// Tokens

/** An HS256 token with {sub, email} and exp (default in 1 h). */
const mintToken = common.tokenMinter(jwt, JWT_SECRET);
function makeToken(userId, email = `${userId}@example.com`, opts = {}) {
  return mintToken(userId, email, { secret: opts.secret, expiresIn: opts.expiresIn });
}

// ---------------------------------------------------------------------------
// Socket event recording (../../jslib/common.js, shared with ../interop)

// track, history, received, waitForEntry and waitFor come from ../../jslib/common.js.

/** Asserts that no (unconsumed) `event` arrives within ms. */
const expectNoEvent = common.noEventExpecter({ named: true });

/** Server event names a tracked socket saw from record index `from` on (connect/disconnect excluded). */
function namesSince(socket, from = 0) {
  return received(socket)
    .slice(from)
    .map((e) => e.event)
    .filter((e) => !['connect', 'connect_error', 'disconnect'].includes(e));
}

/** Polls fn until it returns a truthy value; rejects with message and the last value after timeout. */
const eventually = common.eventuallyEvery(50);

// ---------------------------------------------------------------------------
// Cluster figures

const round2 = (x) => Math.round(x * 100) / 100;

/**
 * The expected `cluster` object for live nodes liveNodeIds and authenticated
 * sockets given as [nodeId, userId] pairs. Rows sorted by nodeId.
 */
function expectedCluster(liveNodeIds, sockets) {
  const users = new Set(sockets.map(([, u]) => u));
  const nodes = [...liveNodeIds].sort().map((nodeId) => {
    const here = sockets.filter(([n]) => n === nodeId);
    return { nodeId, connections: here.length, authenticatedUsers: new Set(here.map(([, u]) => u)).size };
  });
  return {
    totalConnections: sockets.length,
    authenticatedUsers: users.size,
    averageConnectionsPerUser: users.size === 0 ? 0 : round2(sockets.length / users.size),
    nodes,
  };
}

/** A copy of a cluster/stats body with its nodes sorted by nodeId (rows copied as they are). */
function sortedCluster(c) {
  if (!c || typeof c !== 'object') return c;
  const out = { ...c };
  if (Array.isArray(c.nodes)) out.nodes = [...c.nodes].sort((a, b) => String(a?.nodeId).localeCompare(String(b?.nodeId)));
  return out;
}

// ---------------------------------------------------------------------------
// The cluster

/**
 * Starts Redis, n1..n3 and nginx once for the calling test file (before
 * hook) and stops them all (after hook). Returns the cluster object, usable
 * from the tests once the before hook has run.
 *
 * Note: on Node 20 a top-level before() hook runs as soon as it is
 * registered, concurrently with any other top-level before(); so a test file
 * must not add its own top-level before() that uses the cluster: do such
 * setup lazily inside the tests (or in a describe-level hook).
 */
function useCluster(opts = {}) {
  const cluster = new Cluster(opts);
  before(() => cluster.start(), { timeout: 60_000 });
  after(() => cluster.stop(), { timeout: 30_000 });
  return cluster;
}

class Cluster {
  constructor(opts = {}) {
    this.opts = opts;
    this.dir = null;
    this.redis = null; // {port, handle}
    this.nodes = new Map(); // id -> node
    this.nginx = null; // {port, url, handle, dir}
    this.extraNginx = []; // more nginx instances started by tests (startExtraNginx)
    this.sockets = new Set();
    this.agents = new Set(); // http.Agents bound to a source address (connect's `from`)
    this.retired = []; // handles of processes that ended (for logs)
    this.redisClients = new Set();
  }

  // ---- lifecycle ----------------------------------------------------------

  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubnode-cluster-'));
    // Running as root, nginx's workers run as nobody: let them reach their temp paths.
    fs.chmodSync(this.dir, 0o755);
    try {
      const redisPort = await freePort();
      fs.mkdirSync(path.join(this.dir, 'redis'));
      this.redis = { port: redisPort, handle: await startRedisProcess(redisPort, path.join(this.dir, 'redis')) };
      this.redisUrl = `redis://127.0.0.1:${redisPort}`;
      for (const id of NODE_IDS) {
        const port = await freePort();
        this.nodes.set(id, { id, port, url: `http://127.0.0.1:${port}`, handle: null, alive: false });
      }
      await Promise.all(NODE_IDS.map((id) => this.startNode(id)));
      await this.startNginx();
    } catch (err) {
      this.dumpAll(`cluster start failed: ${err.message}`);
      await this.stop();
      throw err;
    }
  }

  async stop() {
    for (const s of this.sockets) {
      try {
        s.close();
      } catch {
        // ignore
      }
    }
    this.sockets.clear();
    for (const a of this.agents) a.destroy();
    this.agents.clear();
    for (const c of this.redisClients) {
      try {
        await withTimeout(c.disconnect(), 2000, 'redis client disconnect');
      } catch {
        // ignore
      }
    }
    this.redisClients.clear();
    const stops = [];
    if (this.nginx) stops.push(this.nginx.handle.stop('SIGTERM'));
    for (const x of this.extraNginx) stops.push(x.handle.stop('SIGTERM'));
    for (const n of this.nodes.values()) if (n.handle) stops.push(n.handle.stop('SIGTERM'));
    await Promise.allSettled(stops);
    if (this.redis?.handle) await this.redis.handle.stop('SIGTERM').catch(() => {});
    if (ALWAYS_LOG) this.dumpAll('HUBNODE_LOGS=1');
    if (this.dir) {
      try {
        fs.rmSync(this.dir, { recursive: true, force: true });
      } catch {
        // ignore
      }
    }
  }

  nodeEnv(node) {
    const env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...(process.env.GOCOVERDIR ? { GOCOVERDIR: process.env.GOCOVERDIR } : {}),
      HOST: '127.0.0.1',
      PORT: String(node.port),
      NODE_ID: node.id,
      REDIS_URL: this.redisUrl,
      JWT_SECRET,
      API_KEY,
      LOG_LEVEL: 'warn',
      // Connection-state recovery appends an offset argument to emitted
      // events; off unless a test file turns it on (useCluster({env})).
      RECOVERY_WINDOW: '0',
      ...(this.opts.env || {}),
    };
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    return env;
  }

  /** Starts (or restarts, on the same port) node id and waits for /health/ready 200. */
  async startNode(id) {
    const node = this.node(id);
    if (node.handle && node.handle.exitInfo === null) throw new Error(`node ${id} is already running`);
    if (node.handle) this.retired.push(node.handle);
    const handle = launch(`hubnode ${id} :${node.port}`, BIN, [], { env: this.nodeEnv(node) });
    node.handle = handle;
    try {
      await waitHttp200(`${node.url}/health/ready`, READY_TIMEOUT_MS, () => {
        if (handle.spawnError) {
          return `cannot start hubnode binary ${BIN}: ${handle.spawnError.message} (build it with \`go build -o bin/hubnode ./cmd/hubnode\` or set HUBNODE_BIN)`;
        }
        if (handle.exitInfo) {
          return `hubnode ${id} exited before it was ready (code ${handle.exitInfo.code}, signal ${handle.exitInfo.signal}); output:\n${handle.output()}`;
        }
        return null;
      });
    } catch (err) {
      await handle.kill9().catch(() => {});
      throw new Error(`node ${id}: ${err.message}\noutput:\n${handle.output()}`);
    }
    node.alive = true;
    return node;
  }

  /** Starts again every node that is not running (a previous test may have stopped one). */
  async ensureAllNodes() {
    for (const n of this.nodes.values()) {
      if (n.handle && n.handle.exitInfo === null && n.alive) continue;
      if (n.handle && n.handle.exitInfo === null) await n.handle.kill9();
      await this.startNode(n.id);
    }
  }

  /** SIGKILL node id; resolves once the process is gone. */
  async killNode(id) {
    const node = this.node(id);
    node.alive = false;
    return node.handle.kill9();
  }

  /** SIGTERM node id (graceful drain); resolves the exit info once it exited. */
  async stopNode(id) {
    const node = this.node(id);
    node.alive = false;
    return node.handle.stop('SIGTERM');
  }

  /**
   * Sends SIGTERM to node id without waiting; returns the promise of its exit
   * info, rejected (after a SIGKILL) when it has not exited within limitMs.
   */
  termNode(id, limitMs = 10_000) {
    const node = this.node(id);
    const { handle } = node;
    node.alive = false;
    handle.signal('SIGTERM');
    return withTimeout(handle.exited, limitMs, `node ${id} did not exit within ${limitMs} ms of SIGTERM`).catch(async (err) => {
      await handle.kill9().catch(() => {});
      throw err;
    });
  }

  /** Ids of the nodes the harness believes alive, sorted. */
  liveNodeIds() {
    return [...this.nodes.values()].filter((n) => n.alive).map((n) => n.id).sort();
  }

  /** kill -9 the Redis server (its data is gone: nothing is persisted). */
  async killRedis() {
    await this.redis.handle.kill9();
    this.retired.push(this.redis.handle);
  }

  /** Starts Redis again, empty, on the same port. */
  async startRedis() {
    this.redis.handle = await startRedisProcess(this.redis.port, path.join(this.dir, 'redis'));
    return this.redis.handle;
  }

  /** Redis crash without persistence: kill -9, then start again empty on the same port. */
  async restartRedis(downMs = 0) {
    await this.killRedis();
    if (downMs > 0) await sleep(downMs);
    return this.startRedis();
  }

  async startNginx() {
    this.nginx = await this.launchNginx('nginx', (dir) => {
      // The repository's file, byte for byte.
      fs.copyFileSync(NGINX_CONF_SRC, path.join(dir, 'hubnode.conf'));
      assert.ok(
        fs.readFileSync(path.join(dir, 'hubnode.conf')).equals(fs.readFileSync(NGINX_CONF_SRC)),
        'hubnode.conf copy differs from the repository file',
      );
    });
  }

  /**
   * Starts one more nginx in front of n1..n3 with confText as its
   * hubnode.conf (a test's modified copy of the repository file); stopped by
   * its stop() or, at the latest, by the after hook. Resolves
   * {port, url, handle, dir, stop()}.
   */
  async startExtraNginx(label, confText) {
    this.extraCount = (this.extraCount || 0) + 1;
    const n = await this.launchNginx(`nginx-${label}-${this.extraCount}`, (dir) => fs.writeFileSync(path.join(dir, 'hubnode.conf'), confText));
    this.extraNginx.push(n);
    n.stop = async () => {
      const info = await n.handle.stop('SIGTERM');
      this.retired.push(n.handle);
      this.extraNginx = this.extraNginx.filter((x) => x !== n);
      return info;
    };
    return n;
  }

  /** Starts nginx `name` in its own directory; writeHubnodeConf(dir) puts hubnode.conf there. */
  async launchNginx(name, writeHubnodeConf) {
    const dir = path.join(this.dir, name);
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o755);
    const port = await freePort();
    writeHubnodeConf(dir);
    fs.writeFileSync(
      path.join(dir, 'hubnode-servers.inc'),
      NODE_IDS.map((id) => `server 127.0.0.1:${this.node(id).port};\n`).join(''),
    );
    fs.writeFileSync(path.join(dir, 'hubnode-listen.inc'), `listen 127.0.0.1:${port};\n`);
    const conf = [
      'daemon off;',
      'worker_processes 1;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      `  client_body_temp_path ${dir}/cbt;`,
      `  proxy_temp_path ${dir}/pt;`,
      `  fastcgi_temp_path ${dir}/ft;`,
      `  uwsgi_temp_path ${dir}/ut;`,
      `  scgi_temp_path ${dir}/st;`,
      '  include hubnode.conf;',
      '}',
      '',
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
    const handle = launch(`${name} :${port}`, NGINX_BIN, ['-p', dir, '-c', `${dir}/nginx.conf`, '-e', `${dir}/error.log`]);
    const errorLog = () => {
      try {
        return fs.readFileSync(path.join(dir, 'error.log'), 'utf8');
      } catch {
        return '';
      }
    };
    handle.errorLog = errorLog;
    const base = handle.output;
    handle.output = () => `${base()}[error.log]\n${errorLog()}`;
    const nginx = { port, url: `http://127.0.0.1:${port}`, handle, dir };
    try {
      await waitHttp200(`${nginx.url}/health/ready`, NGINX_START_TIMEOUT_MS, () => {
        if (handle.spawnError) return `cannot start ${NGINX_BIN}: ${handle.spawnError.message}`;
        if (handle.exitInfo) return `nginx exited (${JSON.stringify(handle.exitInfo)}); output:\n${handle.output()}`;
        return null;
      });
    } catch (err) {
      this.retired.push(handle); // its output goes into the failure dump
      await handle.kill9().catch(() => {});
      throw err;
    }
    return nginx;
  }

  // ---- addressing ---------------------------------------------------------

  node(id) {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Base URL of a node id, or of nginx for 'nginx'. */
  url(target) {
    if (target === 'nginx') return this.nginx.url;
    if (/^https?:\/\//.test(target)) return target;
    return this.node(target).url;
  }

  // ---- HTTP ---------------------------------------------------------------

  /** Calls the HTTP API (or any path) on node target ('n1' … or 'nginx'). */
  api(target, pathname, opts) {
    return httpCall(this.url(target), pathname, opts);
  }

  /** POST /api/v1/emit {userId, event, data} on target. */
  emit(target, userId, event, data) {
    return this.api(target, '/api/v1/emit', { body: { userId, event, data } });
  }

  /**
   * The node nginx sends requests from source address `from` to: the nodeId
   * of GET /health through nginx (target: 'nginx' or another nginx's URL).
   */
  async nodeFor(from, target = 'nginx') {
    const res = await httpCall(this.url(target), '/health', { key: null, from });
    assert.ok(res.body?.nodeId, `GET /health through ${target} from ${from}: ${res.status} ${res.text}`);
    return res.body.nodeId;
  }

  /** Open connections per node ({n1: k, …}) from each live node's /health. */
  async connectionsPerNode() {
    const out = {};
    for (const id of this.liveNodeIds()) out[id] = (await this.healthOk(id)).services.websocket.connections;
    return out;
  }

  /** GET /health of target: {status, body}. */
  async health(target) {
    const res = await this.api(target, '/health', { key: null });
    return { status: res.status, body: res.body, text: res.text };
  }

  /** GET /health of target, asserting 200 JSON; resolves the body. */
  async healthOk(target) {
    const res = await this.health(target);
    assert.equal(res.status, 200, `GET /health on ${target}: ${res.status} ${res.text}`);
    assert.ok(res.body && typeof res.body === 'object', `GET /health on ${target} is not JSON: ${res.text}`);
    return res.body;
  }

  /** The `cluster` object of target's /health, nodes sorted by nodeId. */
  async clusterOf(target) {
    return sortedCluster((await this.healthOk(target)).cluster);
  }

  /**
   * Polls each target's /health `cluster` every interval ms until all of
   * them deep-equal expected, for at most limit ms after since: {ms (after
   * since, or null when they never did), last (each target's last answer)}.
   * targets is a list, or a function read on every round (nodes restart).
   */
  async pollCluster(expected, { targets = () => this.liveNodeIds(), since = Date.now(), limit = DEFAULT_WAIT_MS, interval = 100 } = {}) {
    const last = {};
    while (true) {
      let ok = true;
      for (const id of typeof targets === 'function' ? targets() : targets) {
        try {
          last[id] = await this.clusterOf(id);
          if (!isDeepStrictEqual(last[id], expected)) ok = false;
        } catch (err) {
          last[id] = `error: ${err.message}`;
          ok = false;
        }
      }
      if (ok) return { ms: Date.now() - since, last };
      if (Date.now() - since > limit) return { ms: null, last };
      await sleep(interval);
    }
  }

  /**
   * Waits until every live node's /health `cluster` deep-equals expected
   * (see expectedCluster); throws with every node's last answer otherwise.
   */
  async expectCluster(expected, { timeout = DEFAULT_WAIT_MS, interval = 100, targets } = {}) {
    const { ms, last } = await this.pollCluster(expected, { targets: targets || this.liveNodeIds(), limit: timeout, interval });
    if (ms === null) {
      assert.fail(
        `/health cluster on ${Object.keys(last).join(', ')} not equal to ${JSON.stringify(expected)} within ${timeout} ms; last:\n` +
          Object.entries(last).map(([id, v]) => `  ${id}: ${JSON.stringify(v)}`).join('\n'),
      );
    }
    return ms;
  }

  // ---- clients ------------------------------------------------------------

  /**
   * A tracked socket.io-client socket to target (node id, 'nginx', or a base
   * URL); closed by the after hook. opts.from: the local (source) address
   * of every connection of the socket, e.g. newSourceAddress(), so nginx's
   * `hash $remote_addr` sees a distinct client. It is passed as an
   * http.Agent bound to that address: engine.io-client hands `agent` to
   * both of its Node transports (the polling XHR and the `ws` WebSocket),
   * whereas its `localAddress` option reaches only the WebSocket.
   */
  connect(target, opts = {}) {
    const { from, ...rest } = opts;
    const ioOpts = { transports: ['websocket'], forceNew: true, reconnection: false, ...rest };
    if (from) {
      const agent = new http.Agent({ localAddress: from });
      this.agents.add(agent);
      ioOpts.agent = agent;
    }
    const socket = io(this.url(target), ioOpts);
    socket.hubLabel = `${opts.label || 'socket'}${from ? ` from ${from}` : ''} via ${target}`;
    socket.hubFrom = from;
    this.sockets.add(socket);
    return track(socket);
  }

  /** A socket on target authenticated (by the authenticate event) as userId. */
  async authed(target, userId, email = `${userId}@example.com`, opts = {}) {
    const s = this.connect(target, { label: userId, ...opts });
    await waitFor(s, 'connect', 5000);
    s.emit('authenticate', { token: makeToken(userId, email) });
    const data = await waitFor(s, 'authenticated', 5000);
    assert.deepEqual(data, { userId, email }, `authenticated payload for ${userId} on ${target}`);
    s.hubNode = target;
    s.hubUser = userId;
    return s;
  }

  /**
   * [nodeId, userId] of every socket made by authed() to a node (not through
   * nginx) that is still connected, on a node the harness believes alive.
   */
  livePairs() {
    const out = [];
    for (const s of this.sockets) {
      if (!s.hubUser || !s.connected || !this.nodes.has(s.hubNode) || !this.nodes.get(s.hubNode).alive) continue;
      out.push([s.hubNode, s.hubUser]);
    }
    return out;
  }

  /** The expected cluster object from livePairs() and the live nodes. */
  expectedNow() {
    return expectedCluster(this.liveNodeIds(), this.livePairs());
  }

  /** A node-redis v4 client connected to the cluster's Redis; disconnected by the after hook. */
  async redisClient() {
    const { createClient } = require('redis');
    // Never the machine's shared Redis: only the one this harness started.
    assert.ok(this.redis?.port && this.redisUrl === `redis://127.0.0.1:${this.redis.port}`, 'redisClient() before the cluster started');
    const client = createClient({ url: this.redisUrl, socket: { reconnectStrategy: false, connectTimeout: 3000 } });
    client.on('error', () => {});
    await withTimeout(client.connect(), 5000, 'redis client connect');
    this.redisClients.add(client);
    return client;
  }

  // ---- logs ---------------------------------------------------------------

  allHandles() {
    const hs = [...this.retired];
    if (this.redis?.handle) hs.push(this.redis.handle);
    for (const n of this.nodes.values()) if (n.handle) hs.push(n.handle);
    if (this.nginx) hs.push(this.nginx.handle);
    for (const x of this.extraNginx) hs.push(x.handle);
    return [...new Set(hs)];
  }

  dumpAll(why) {
    for (const h of this.allHandles()) dumpOutput(h, why);
  }
}

const { isDeepStrictEqual } = require('node:util');

/**
 * node:test's test() with a timeout; on failure it prints the output of
 * every process of the cluster.
 */
function itest(cluster, name, opts, fn) {
  return common.testWithDump(30_000, () => cluster.dumpAll(`test "${name}" failed`), name, opts, fn);
}

/** Reports a measurement in the test output (a diagnostic line starting with MEASURE). */
function report(t, line) {
  t.diagnostic(`MEASURE ${line}`);
}

module.exports = {
  BIN,
  JWT_SECRET,
  API_KEY,
  NODE_IDS,
  ISO_RE,
  DEFAULT_WAIT_MS,
  sleep,
  withTimeout,
  freePort,
  httpCall,
  newSourceAddress,
  makeToken,
  ...common.recorder, // track, history, received, waitForEntry, waitFor
  expectNoEvent,
  namesSince,
  eventually,
  assertTimestamp,
  withoutTimestamp,
  expectedCluster,
  sortedCluster,
  round2,
  useCluster,
  Cluster,
  itest,
  report,
};
