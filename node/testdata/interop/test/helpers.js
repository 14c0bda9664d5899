'use strict';

// Shared helpers for the hubnode interop suite: start/stop the Go binary,
// mint tokens, connect the official socket.io-client, wait for events with
// a timeout, and call the HTTP API.
//
// Every wait in this file has a timeout, every spawned server is stopped and
// every client socket is closed by the t.after hook that setup() registers,
// so the suite always ends by itself.

const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');
const common = require('../../jslib/common');

const { BIN, ISO_RE, DEFAULT_WAIT_MS, sleep, withTimeout, freePort } = common;
// The socket event recorder.
const { track, history, received, waitFor, waitForEntry, assertTimestamp, withoutTimestamp } = common;

// 32-character test credentials.
const JWT_SECRET = 'interop-jwt-secret-0123456789abc';
const API_KEY = 'interop-api-key-0123456789abcdef';
common.assertCredentials(JWT_SECRET, API_KEY);

const FRONTEND_URL = 'http://localhost:5173';

const READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 50;
const STOP_KILL_AFTER_MS = 5_000;

// Always print server output when HUBNODE_LOGS=1 (otherwise only on failure).
const ALWAYS_LOG = process.env.HUBNODE_LOGS === '1';

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

  const { proc, logs, output } = common.spawnCollecting(BIN, [], { env });

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
const makeToken = common.tokenMinter(jwt, JWT_SECRET);

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

// track, history, received, waitForEntry and waitFor come from ../../jslib/common.js.

/** Asserts that no (unconsumed) `event` arrives within ms. */
const expectNoEvent = common.noEventExpecter();

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

// ---------------------------------------------------------------------------
// HTTP API

/**
 * Calls the server. opts: method (default GET, or POST with a body), body
 * (JSON-encoded), rawBody (sent as is), key (API key; null sends no
 * Authorization header; default the test API key), headers.
 * Resolves {status, headers, text, body} where body is the parsed JSON or
 * undefined when the response is not JSON.
 */
function api(baseUrl, pathname, opts = {}) {
  // (this suite's api takes no timeout or from option)
  return common.httpRequest(baseUrl, pathname, { ...opts, timeout: undefined, from: undefined }, { apiKey: API_KEY, rawContentType: 'application/json', timeout: 5000 });
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
  return common.testWithDump(
    20_000,
    (t) => {
      for (const s of TEST_SERVERS.get(t) || []) dumpLogs(s, `test "${name}" failed`);
    },
    name,
    opts,
    fn,
  );
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
const eventually = common.eventuallyEvery(25);

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
  ...common.recorder, // track, history, received, waitForEntry, waitFor
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
