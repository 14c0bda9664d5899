'use strict';

// Shared helpers for the hubnode interop suite: start/stop the Go binary,
// mint tokens, connect the official socket.io-client, wait for events with
// a timeout, and call the HTTP API.
//
// Every wait in this file has a timeout, every spawned server is stopped and
// every client socket is closed by the t.after hook that setup() registers,
// so the suite always ends by itself.

const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');

const BIN = path.resolve(process.env.HUBNODE_BIN || path.resolve(__dirname, '../../../../bin/hubnode'));

// 32-character test credentials.
const JWT_SECRET = 'interop-jwt-secret-0123456789abc';
const API_KEY = 'interop-api-key-0123456789abcdef';
assert.equal(JWT_SECRET.length, 32);
assert.equal(API_KEY.length, 32);

const FRONTEND_URL = 'http://localhost:5173';
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 50;
const STOP_KILL_AFTER_MS = 5_000;
const DEFAULT_WAIT_MS = 3_000;
const MAX_LOG_BYTES = 1 << 20;

// Always print server output when HUBNODE_LOGS=1 (otherwise only on failure).
const ALWAYS_LOG = process.env.HUBNODE_LOGS === '1';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with a port that was free a moment ago on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Rejects after ms with message, unless promise settles first. */
function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Starts the hubnode binary on a free port and waits until
 * GET /health/ready answers 200. envOverrides are applied last; a value of
 * undefined removes the variable, '' passes an empty one; PORT chooses the port.
 */
async function startServer(envOverrides = {}) {
  // envOverrides.PORT (a server restarted on the port of a stopped one) or a free port.
  const port = envOverrides.PORT !== undefined ? Number(envOverrides.PORT) : await freePort();
  const env = {
    // A few process variables the binary may legitimately need; nothing else
    // leaks from the runner (a stray REDIS_URL must not change behaviour).
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...(process.env.GOCOVERDIR ? { GOCOVERDIR: process.env.GOCOVERDIR } : {}),
    HOST: '127.0.0.1',
    PORT: String(port),
    JWT_SECRET,
    API_KEY,
    FRONTEND_URL,
    LOG_LEVEL: 'warn',
    // Connection-state recovery appends an offset argument to emitted events;
    // off by default so the suite's exact argument lists hold. recovery.test.js
    // turns it on.
    RECOVERY_WINDOW: '0',
    ...envOverrides,
  };
  for (const k of Object.keys(env)) {
    if (env[k] === undefined) delete env[k];
    else env[k] = String(env[k]);
  }

  const logs = [];
  let logBytes = 0;
  const collect = (stream) => (chunk) => {
    if (logBytes > MAX_LOG_BYTES) return;
    logBytes += chunk.length;
    logs.push(`[${stream}] ${chunk.toString('utf8')}`);
  };

  const proc = spawn(BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.on('data', collect('stdout'));
  proc.stderr.on('data', collect('stderr'));

  let exitInfo = null;
  let spawnError = null;
  const exited = new Promise((resolve) => {
    proc.on('error', (err) => {
      spawnError = err;
      if (exitInfo === null) {
        exitInfo = { code: null, signal: null, error: err };
        resolve(exitInfo);
      }
    });
    proc.on('exit', (code, signal) => {
      if (exitInfo === null) exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });

  const url = `http://127.0.0.1:${port}`;
  const output = () => logs.join('');

  async function stop() {
    if (exitInfo !== null) return exitInfo;
    proc.kill('SIGTERM');
    const killer = setTimeout(() => {
      logs.push(`[helpers] no exit ${STOP_KILL_AFTER_MS} ms after SIGTERM: sending SIGKILL\n`);
      proc.kill('SIGKILL');
    }, STOP_KILL_AFTER_MS);
    try {
      return await exited;
    } finally {
      clearTimeout(killer);
      if (ALWAYS_LOG) dumpLogs(server, 'HUBNODE_LOGS=1');
    }
  }

  const server = { url, port, proc, env, stop, output, exited, get exitInfo() { return exitInfo; } };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastProblem = 'no answer yet';
  while (true) {
    if (spawnError) {
      throw new Error(
        `cannot start hubnode binary ${BIN}: ${spawnError.message}` +
          ' (build it with `go build -o bin/hubnode ./cmd/hubnode` or set HUBNODE_BIN)',
      );
    }
    if (exitInfo !== null) {
      throw new Error(
        `hubnode exited before it was ready (code ${exitInfo.code}, signal ${exitInfo.signal}); output:\n${output()}`,
      );
    }
    try {
      const res = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
      lastProblem = `status ${res.status}`;
    } catch (err) {
      lastProblem = err.cause?.code || err.message;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `hubnode not ready within ${READY_TIMEOUT_MS} ms at ${url}/health/ready (last: ${lastProblem}); output:\n${output()}`,
      );
    }
    await sleep(READY_POLL_MS);
  }
  return server;
}

function dumpLogs(server, why) {
  const out = server.output();
  process.stderr.write(
    `\n----- hubnode output (${server.url}, ${why}) -----\n${out || '(nothing)\n'}----- end of hubnode output -----\n`,
  );
}

// ---------------------------------------------------------------------------
// Tokens

/**
 * Mints an HS256 token with claims {sub, email} and an exp.
 * Options: secret, expiresIn (seconds or a ms-style string, default 1h),
 * exp (absolute, seconds since epoch), algorithm, noExp, extra (more claims),
 * omitSub, omitEmail.
 */
function makeToken(userId, email, opts = {}) {
  const payload = { ...(opts.extra || {}) };
  if (!opts.omitSub && userId !== undefined) payload.sub = userId;
  if (!opts.omitEmail && email !== undefined) payload.email = email;
  if (opts.exp !== undefined) payload.exp = opts.exp;
  const signOpts = { algorithm: opts.algorithm || 'HS256' };
  if (opts.exp === undefined && !opts.noExp) signOpts.expiresIn = opts.expiresIn ?? '1h';
  return jwt.sign(payload, opts.secret ?? JWT_SECRET, signOpts);
}

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

/** An unsigned token with alg "none". */
function makeNoneToken(userId, email) {
  const now = Math.floor(Date.now() / 1000);
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: userId, email, iat: now, exp: now + 3600 })}.`;
}

// ---------------------------------------------------------------------------
// Clients and events

const RECORDS = new WeakMap();

function describeArgs(args) {
  return args
    .filter((a) => typeof a !== 'function')
    .map((a) => {
      if (a instanceof Error) return `Error(${JSON.stringify(a.message)})`;
      try {
        const s = JSON.stringify(a);
        return s === undefined ? String(a) : s.length > 200 ? `${s.slice(0, 200)}…` : s;
      } catch {
        return String(a);
      }
    })
    .join(', ');
}

/**
 * Records every event a socket sees, in order: events from the server
 * (onAny) and the reserved connect, connect_error and disconnect. waitFor
 * consumes records, so an event that arrived before the wait started is
 * not missed.
 */
function track(socket) {
  if (RECORDS.has(socket)) return socket;
  const rec = { entries: [], waiters: [] };
  RECORDS.set(socket, rec);
  const push = (event, args) => {
    const entry = { seq: rec.entries.length, event, args, at: Date.now(), taken: false };
    rec.entries.push(entry);
    const i = rec.waiters.findIndex((w) => w.event === event);
    if (i >= 0) {
      const [w] = rec.waiters.splice(i, 1);
      entry.taken = true;
      w.resolve(entry);
    }
  };
  socket.onAny((event, ...args) => push(event, args));
  socket.on('connect', () => push('connect', []));
  socket.on('connect_error', (err) => push('connect_error', [err]));
  socket.on('disconnect', (reason, description) => push('disconnect', [reason, description]));
  return socket;
}

/** The events a tracked socket saw, as "name(args)" strings. */
function history(socket) {
  const rec = RECORDS.get(socket);
  if (!rec) return '(socket not tracked)';
  if (rec.entries.length === 0) return '(none)';
  return rec.entries.map((e) => `${e.event}(${describeArgs(e.args)})`).join(', ');
}

/** Every record of event (taken or not) on a tracked socket. */
function received(socket, event) {
  const rec = RECORDS.get(socket);
  return rec.entries.filter((e) => event === undefined || e.event === event);
}

/**
 * Resolves with the record {seq, event, args, at} of the next not yet
 * consumed event named event; rejects after timeout ms with the history.
 */
function waitForEntry(socket, event, timeout = DEFAULT_WAIT_MS) {
  const rec = RECORDS.get(socket);
  if (!rec) return Promise.reject(new Error('waitFor: socket is not tracked'));
  const found = rec.entries.find((e) => !e.taken && e.event === event);
  if (found) {
    found.taken = true;
    return Promise.resolve(found);
  }
  return new Promise((resolve, reject) => {
    const waiter = {
      event,
      resolve: (entry) => {
        clearTimeout(timer);
        resolve(entry);
      },
    };
    const timer = setTimeout(() => {
      const i = rec.waiters.indexOf(waiter);
      if (i >= 0) rec.waiters.splice(i, 1);
      reject(
        new Error(
          `timed out after ${timeout} ms waiting for event "${event}" on socket ${socket.id ?? '(no id)'}; ` +
            `events seen: ${history(socket)}`,
        ),
      );
    }, timeout);
    rec.waiters.push(waiter);
  });
}

/** Resolves with the first argument of the next `event`. */
async function waitFor(socket, event, timeout = DEFAULT_WAIT_MS) {
  const entry = await waitForEntry(socket, event, timeout);
  return entry.args[0];
}

/** Asserts that no (unconsumed) `event` arrives within ms. */
async function expectNoEvent(socket, event, ms = 300) {
  await sleep(ms);
  const extra = received(socket, event).filter((e) => !e.taken);
  assert.equal(
    extra.length,
    0,
    `expected no "${event}" within ${ms} ms, got: ${extra.map((e) => describeArgs(e.args)).join(' | ')}; ` +
      `all events: ${history(socket)}`,
  );
}

/** Promise of an ack with a timeout: socket.timeout(ms).emitWithAck(...). */
function emitWithAck(socket, event, ...args) {
  return socket
    .timeout(DEFAULT_WAIT_MS)
    .emitWithAck(event, ...args)
    .catch((err) => {
      throw new Error(
        `no ack for "${event}" within ${DEFAULT_WAIT_MS} ms (${err.message}); events seen: ${history(socket)}`,
      );
    });
}

/** Creates (and tracks) a socket.io-client socket with the suite's defaults. */
function connect(url, opts = {}) {
  const socket = io(url, {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    ...opts,
  });
  return track(socket);
}

/** Asserts that value is an ISO-8601 UTC timestamp with milliseconds, near now. */
function assertTimestamp(value, label = 'timestamp') {
  assert.equal(typeof value, 'string', `${label} must be a string, got ${JSON.stringify(value)}`);
  assert.match(value, ISO_RE, `${label} ${JSON.stringify(value)} is not ISO-8601 UTC with milliseconds`);
  const t = Date.parse(value);
  assert.ok(Math.abs(Date.now() - t) < 5 * 60_000, `${label} ${value} is not close to now`);
}

/** Checks payload.timestamp by regex, and returns a copy without it. */
function withoutTimestamp(payload, label = 'payload') {
  assert.ok(payload && typeof payload === 'object', `${label} must be an object, got ${JSON.stringify(payload)}`);
  assert.ok('timestamp' in payload, `${label} has no timestamp: ${JSON.stringify(payload)}`);
  assertTimestamp(payload.timestamp, `${label}.timestamp`);
  const { timestamp, ...rest } = payload;
  return rest;
}

// ---------------------------------------------------------------------------
// HTTP API

/**
 * Calls the server. opts: method (default GET, or POST with a body), body
 * (JSON-encoded), rawBody (sent as is), key (API key; null sends no
 * Authorization header; default the test API key), headers.
 * Resolves {status, headers, text, body} where body is the parsed JSON or
 * undefined when the response is not JSON.
 */
async function api(baseUrl, pathname, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  const key = opts.key === undefined ? API_KEY : opts.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  let body;
  if (opts.rawBody !== undefined) {
    body = opts.rawBody;
    if (!('content-type' in headers)) headers['content-type'] = 'application/json';
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const method = opts.method || (body === undefined ? 'GET' : 'POST');
  const res = await fetch(baseUrl + pathname, {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

/** Asserts an API error answer: status and a JSON {"error": "<non-empty>"} body. */
function assertApiError(res, status, label = '') {
  const where = label ? `${label}: ` : '';
  assert.equal(res.status, status, `${where}expected HTTP ${status}, got ${res.status} ${res.text}`);
  assert.match(
    res.headers.get('content-type') || '',
    /^application\/json/,
    `${where}error content-type is ${res.headers.get('content-type')}`,
  );
  assert.ok(res.body && typeof res.body === 'object', `${where}error body is not JSON: ${res.text}`);
  assert.equal(typeof res.body.error, 'string', `${where}error body has no string "error": ${res.text}`);
  assert.ok(res.body.error.length > 0, `${where}"error" is empty`);
}

// ---------------------------------------------------------------------------
// Per-test setup

const TEST_SERVERS = new WeakMap();

/**
 * Starts a server for test t and registers one t.after hook that closes
 * every socket made through the returned context, then stops the server.
 * Returns {server, url, connect, track, authed, api, stop}.
 */
async function setup(t, env = {}) {
  const server = await startServer(env);
  if (!TEST_SERVERS.has(t)) TEST_SERVERS.set(t, []);
  TEST_SERVERS.get(t).push(server);
  const sockets = new Set();
  t.after(async () => {
    for (const s of sockets) s.close();
    await server.stop();
  });
  const ctx = {
    server,
    url: server.url,
    /** Tracks a socket made elsewhere so the hook closes it. */
    track(socket) {
      sockets.add(socket);
      return track(socket);
    },
    connect(opts) {
      const s = connect(server.url, opts);
      sockets.add(s);
      return s;
    },
    /** A socket connected and authenticated (via the authenticate event) as userId. */
    async authed(userId, email = `${userId}@example.com`, opts = {}) {
      const s = ctx.connect(opts);
      await waitFor(s, 'connect');
      s.emit('authenticate', { token: makeToken(userId, email) });
      const data = await waitFor(s, 'authenticated');
      assert.deepEqual(data, { userId, email }, 'authenticated payload');
      return s;
    },
    api(pathname, opts) {
      return api(server.url, pathname, opts);
    },
    stop() {
      return server.stop();
    },
  };
  return ctx;
}

/**
 * node:test's test() with a default timeout; on failure it prints the output
 * of every server the test started through setup().
 */
function itest(name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  return test(name, { timeout: 20_000, ...opts }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      for (const s of TEST_SERVERS.get(t) || []) dumpLogs(s, `test "${name}" failed`);
      throw err;
    }
  });
}

/**
 * Returns the contract fields of obj (only the keys of shape, recursively for
 * nested plain-object shapes), so value checks can run separately from the
 * exact-shape check (assertExactKeys).
 */
function pick(obj, shape) {
  if (!obj || typeof obj !== 'object') return obj;
  const out = {};
  for (const [k, v] of Object.entries(shape)) {
    if (!(k in obj)) continue;
    out[k] = v && typeof v === 'object' && !Array.isArray(v) ? pick(obj[k], v) : obj[k];
  }
  return out;
}

/** Asserts that obj has no keys beyond those of shape, recursively. */
function assertExactKeys(obj, shape, label = 'response') {
  const extra = [];
  const walk = (o, sh, prefix) => {
    if (!o || typeof o !== 'object' || Array.isArray(o)) return;
    for (const k of Object.keys(o)) {
      if (!(k in sh)) extra.push(prefix + k);
      else if (sh[k] && typeof sh[k] === 'object' && !Array.isArray(sh[k])) walk(o[k], sh[k], `${prefix}${k}.`);
    }
  };
  walk(obj, shape, '');
  assert.deepEqual(extra, [], `${label} has keys that are not in the contract: ${extra.join(', ')}; got ${JSON.stringify(obj)}`);
}

/** Polls fn until it returns a truthy value; rejects with message after ms. */
async function eventually(fn, { timeout = DEFAULT_WAIT_MS, interval = 25, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (true) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${message} not met within ${timeout} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(interval);
  }
}

module.exports = {
  BIN,
  JWT_SECRET,
  API_KEY,
  FRONTEND_URL,
  ISO_RE,
  DEFAULT_WAIT_MS,
  sleep,
  withTimeout,
  freePort,
  startServer,
  dumpLogs,
  makeToken,
  makeNoneToken,
  track,
  history,
  received,
  waitFor,
  waitForEntry,
  expectNoEvent,
  emitWithAck,
  connect,
  assertTimestamp,
  withoutTimestamp,
  api,
  assertApiError,
  setup,
  itest,
  eventually,
  pick,
  assertExactKeys,
};
