'use strict';

// Pieces shared by the interop suite (../interop/test/helpers.js, one node)
// and the cluster suite (../cluster/test/cluster.js, three nodes): timers,
// ports, token minting, the socket event recorder (track/waitFor/…), the
// HTTP call, timestamp checks, eventually(), and for the recovery tests the
// TCP proxy and the numbered-stream accounting.
//
// Only Node built-ins are required here. What needs a package
// (jsonwebtoken) is built by a factory that takes the suite's own module,
// so each suite keeps resolving its dependencies from its own node_modules.

const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const { test } = require('node:test');
const assert = require('node:assert/strict');

/** The hubnode binary under test: $HUBNODE_BIN or the repository's bin/hubnode. */
const BIN = path.resolve(process.env.HUBNODE_BIN || path.resolve(__dirname, '../../../bin/hubnode'));
const MAX_LOG_BYTES = 1 << 20;

const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const DEFAULT_WAIT_MS = 3_000;

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

/** Asserts the suite's test credentials are 32 characters long. */
function assertCredentials(...secrets) {
  for (const s of secrets) assert.equal(s.length, 32);
}

/**
 * Spawns cmd with args (spawnOpts: env, cwd) and collects its stdout and
 * stderr (the first MiB or so). Returns {proc, logs, output()}: logs is the
 * array of collected chunks (more lines may be pushed into it).
 */
function spawnCollecting(cmd, args, { env, cwd } = {}) {
  const logs = [];
  let logBytes = 0;
  const collect = (stream) => (chunk) => {
    if (logBytes > MAX_LOG_BYTES) return;
    logBytes += chunk.length;
    logs.push(`[${stream}] ${chunk.toString('utf8')}`);
  };
  const proc = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.on('data', collect('stdout'));
  proc.stderr.on('data', collect('stderr'));
  return { proc, logs, output: () => logs.join('') };
}

/**
 * node:test's test(name, [opts], fn) with a default timeout (ms); when fn
 * fails, onFail(t) runs (to print process output) before the error is
 * rethrown.
 */
function testWithDump(defaultTimeout, onFail, name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  return test(name, { timeout: defaultTimeout, ...opts }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      onFail(t);
      throw err;
    }
  });
}

// ---------------------------------------------------------------------------
// Tokens

/**
 * Returns makeToken(userId, email, opts) minting HS256 tokens with claims
 * {sub, email} and an exp, signed with defaultSecret through the suite's
 * jsonwebtoken module. Options: secret, expiresIn (seconds or a ms-style
 * string, default 1h), exp (absolute, seconds since epoch), algorithm,
 * noExp, extra (more claims), omitSub, omitEmail.
 */
function tokenMinter(jwt, defaultSecret) {
  return function makeToken(userId, email, opts = {}) {
    const payload = { ...(opts.extra || {}) };
    if (!opts.omitSub && userId !== undefined) payload.sub = userId;
    if (!opts.omitEmail && email !== undefined) payload.email = email;
    if (opts.exp !== undefined) payload.exp = opts.exp;
    const signOpts = { algorithm: opts.algorithm || 'HS256' };
    if (opts.exp === undefined && !opts.noExp) signOpts.expiresIn = opts.expiresIn ?? '1h';
    return jwt.sign(payload, opts.secret ?? defaultSecret, signOpts);
  };
}

// ---------------------------------------------------------------------------
// Socket event recording

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

/** Every record of event (taken or not) on a tracked socket; all records without event. */
function received(socket, event) {
  const rec = RECORDS.get(socket);
  return rec.entries.filter((e) => event === undefined || e.event === event);
}

/**
 * Resolves with the record {seq, event, args, at} of the next not yet
 * consumed event named event; rejects after timeout ms with the history
 * (and the socket's hubLabel, when it has one).
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
          `timed out after ${timeout} ms waiting for event "${event}" on socket ${socket.id ?? '(no id)'}` +
            `${socket.hubLabel ? ` (${socket.hubLabel})` : ''}; events seen: ${history(socket)}`,
        ),
      );
    }, timeout);
    rec.waiters.push(waiter);
  });
}

/** Resolves with the first argument of the next `event`. */
async function waitFor(socket, event, timeout = DEFAULT_WAIT_MS) {
  return (await waitForEntry(socket, event, timeout)).args[0];
}

/**
 * Returns expectNoEvent(socket, event, ms = 300), which asserts that no
 * (unconsumed) `event` arrives within ms; with named, the failure message
 * names the socket (its hubLabel or id).
 */
function noEventExpecter({ named = false } = {}) {
  return async function expectNoEvent(socket, event, ms = 300) {
    await sleep(ms);
    const extra = received(socket, event).filter((e) => !e.taken);
    const where = named ? ` on ${socket.hubLabel || socket.id}` : '';
    assert.equal(
      extra.length,
      0,
      `expected no "${event}" within ${ms} ms${where}, got: ${extra.map((e) => describeArgs(e.args)).join(' | ')}; ` +
        `all events: ${history(socket)}`,
    );
  };
}

/**
 * Returns eventually(fn, {timeout, interval, message}): polls fn until it
 * returns a truthy value; rejects with message (a string or a function
 * giving one) and the last value after timeout.
 */
function eventuallyEvery(defaultInterval) {
  return async function eventually(fn, { timeout = DEFAULT_WAIT_MS, interval = defaultInterval, message = 'condition' } = {}) {
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
        const what = typeof message === 'function' ? message() : message;
        throw new Error(`${what} not met within ${timeout} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
      }
      await sleep(interval);
    }
  };
}

/** Asserts that value is an ISO-8601 UTC timestamp with milliseconds, near now. */
function assertTimestamp(value, label = 'timestamp') {
  assert.equal(typeof value, 'string', `${label} must be a string, got ${JSON.stringify(value)}`);
  assert.match(value, ISO_RE, `${label} ${JSON.stringify(value)} is not ISO-8601 UTC with milliseconds`);
  assert.ok(Math.abs(Date.now() - Date.parse(value)) < 5 * 60_000, `${label} ${value} is not close to now`);
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
// HTTP

/**
 * Calls baseUrl + pathname. opts: method (default GET, or POST with a body),
 * body (JSON-encoded), rawBody (sent as is), key (API key; null sends no
 * Authorization header; default defaults.apiKey), headers, timeout, from.
 * defaults: apiKey, rawContentType (content-type of a rawBody without one),
 * timeout (ms), requestFrom(from, url, init) (sends opts.from requests).
 * Resolves {status, headers, text, body} (body: parsed JSON or undefined).
 */
async function httpRequest(baseUrl, pathname, opts, defaults) {
  const headers = { ...(opts.headers || {}) };
  const key = opts.key === undefined ? defaults.apiKey : opts.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  let body;
  if (opts.rawBody !== undefined) {
    body = opts.rawBody;
    if (!('content-type' in headers)) headers['content-type'] = defaults.rawContentType;
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const method = opts.method || (body === undefined ? 'GET' : 'POST');
  const timeout = opts.timeout ?? defaults.timeout;
  const res = opts.from
    ? await defaults.requestFrom(opts.from, baseUrl + pathname, { method, headers, body, timeout })
    : await fetch(baseUrl + pathname, { method, headers, body, signal: AbortSignal.timeout(timeout) });
  const text = await res.text();
  let parsed;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

// ---------------------------------------------------------------------------
// Recovery tests: the client's network

/**
 * A small TCP proxy between a client and a server (targetHost:targetPort;
 * localAddress: the source address of its connections to the target). cut()
 * destroys every connection it carries and refuses new ones until restore();
 * cut({halfOpen: true}) leaves the server's side open and silent;
 * limitDown(bytes) drops the next connection after that many bytes from the
 * server.
 */
class TcpProxy {
  constructor(targetPort, { targetHost = '127.0.0.1', localAddress } = {}) {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.localAddress = localAddress;
    this.pairs = new Set();
    this.lingering = new Set(); // server-side connections left open by cut({halfOpen: true})
    this.refusing = false;
    this.downBudget = null;
    this.refused = 0;
    this.accepted = 0;
    this.server = net.createServer((client) => this.onClient(client));
  }

  start() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        this.url = `http://127.0.0.1:${this.port}`;
        resolve(this);
      });
    });
  }

  onClient(client) {
    if (this.refusing) {
      this.refused++;
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect({
      host: this.targetHost,
      port: this.targetPort,
      ...(this.localAddress ? { localAddress: this.localAddress } : {}),
    });
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      if (!this.pairs.has(pair)) return; // cut() took care of it (and may leave the upstream open)
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    if (this.downBudget === null) {
      upstream.pipe(client);
      return;
    }
    // limitDown(): forward only so many bytes server → client, then cut.
    upstream.on('data', (chunk) => {
      if (this.downBudget === null) return client.write(chunk);
      if (chunk.length < this.downBudget) {
        this.downBudget -= chunk.length;
        client.write(chunk);
        return;
      }
      client.write(chunk.subarray(0, this.downBudget));
      this.downBudget = null;
      this.cut();
    });
  }

  /** The next connections forward only `bytes` from the server, then the network drops (cut()). */
  limitDown(bytes) {
    this.downBudget = bytes;
  }

  /**
   * The network drops: every carried connection is destroyed and new ones
   * are refused. Both sides by default, so the server sees the close at
   * once; with halfOpen only the client's side: the server's side stays
   * open and silent (nothing forwarded either way), as after a real network
   * loss, until the server's heartbeat gives up on it (or dropLingering(),
   * close()).
   */
  cut({ halfOpen = false } = {}) {
    this.refusing = true;
    for (const { client, upstream } of this.pairs) {
      if (halfOpen) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        upstream.removeAllListeners('close');
        upstream.removeAllListeners('error');
        upstream.on('error', () => {});
        upstream.on('data', () => {}); // what the server still sends is lost (read, so its close is seen)
        upstream.resume();
        this.lingering.add(upstream);
        upstream.on('close', () => this.lingering.delete(upstream));
      } else {
        upstream.destroy();
      }
      client.destroy();
    }
    this.pairs.clear();
  }

  /** The server side of half-open connections finally closes. */
  dropLingering() {
    for (const u of this.lingering) u.destroy();
    this.lingering.clear();
  }

  /** The network returns; localAddress, when given, is the client's new address. */
  restore(localAddress) {
    if (localAddress) this.localAddress = localAddress;
    this.refusing = false;
  }

  close() {
    this.cut();
    this.dropLingering();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Starts a TcpProxy (see its constructor) closed by t's after hook. */
async function startProxy(t, targetPort, proxyOpts) {
  const proxy = await new TcpProxy(targetPort, proxyOpts).start();
  t.after(() => proxy.close());
  return proxy;
}

// ---------------------------------------------------------------------------
// Recovery tests: streams of numbered events

const STREAM_EVENTS = new Set(['tick', 'unread_count_update']);

/**
 * Emits numbered events from..from+count-1 to each user, one every
 * intervalMs per user: emitOne(u, n, typed) posts one (typed: every
 * typedEvery-th, through the typed endpoint) and resolves the HTTP answer.
 * Each user's emits are sequential (the next is posted once the previous
 * got its 202), so their order is the server's order. Returns {done,
 * emitted}: done resolves null or the first error; emitted[user][n] =
 * {start, end} (ms). where: text added to the error message.
 */
function runStream(users, { count, intervalMs = 10, typedEvery = 5, from = 1 }, emitOne, where = '') {
  const emitted = Object.fromEntries(users.map((u) => [u, []]));
  const one = async (u) => {
    const t0 = Date.now();
    for (let n = from; n < from + count; n++) {
      const due = t0 + (n - from) * intervalMs;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      const start = Date.now();
      const res = await emitOne(u, n, Boolean(typedEvery && n % typedEvery === 0));
      if (res.status !== 202) throw new Error(`emit ${n} to ${u}${where}: HTTP ${res.status} ${res.text}`);
      emitted[u][n] = { start, end: Date.now() };
    }
  };
  const done = Promise.all(users.map(one)).then(
    () => null,
    (err) => err,
  );
  return { done, emitted };
}

/** The body of the typed unread_count_update event number n of a stream. */
function typedStreamBody(n) {
  return { unreadCounts: { stream: n }, totalUnread: n };
}

function numberOf(entry) {
  const d = entry.args[0];
  return entry.event === 'tick' ? d?.n : d?.totalUnread;
}

/** The stream events a tracked socket received, in order: {n, event, args, at, seq}. */
function streamOf(socket) {
  return received(socket)
    .filter((e) => STREAM_EVENTS.has(e.event))
    .map((e) => ({ n: numberOf(e), event: e.event, args: e.args, at: e.at, seq: e.seq }));
}

function range(from, to) {
  const out = [];
  for (let n = from; n <= to; n++) out.push(n);
  return out;
}

/** {expected, received, lost, duplicated, outOfOrder, missing (first 10), extra}: the delivery count against from..to. */
function tally(items, from, to) {
  const ns = items.map((i) => i.n);
  const seen = new Map();
  for (const n of ns) seen.set(n, (seen.get(n) || 0) + 1);
  const missing = range(from, to).filter((n) => !seen.has(n));
  let duplicated = 0;
  for (const c of seen.values()) duplicated += c - 1;
  let outOfOrder = 0;
  for (let i = 1; i < ns.length; i++) if (!(ns[i] > ns[i - 1])) outOfOrder++;
  const extra = ns.filter((n) => !(n >= from && n <= to));
  return { expected: to - from + 1, received: ns.length, lost: missing.length, duplicated, outOfOrder, missing: missing.slice(0, 10), extra: extra.slice(0, 10) };
}

function fmtTally(c) {
  return `${c.received}/${c.expected} received, lost ${c.lost}, duplicated ${c.duplicated}, out of order ${c.outOfOrder}`;
}

/**
 * The socket's connection story, for failure messages: connect (recovered),
 * disconnect (reason), connect_error, authenticated, and the stream events
 * between them as "k events n1..n2", times relative to the first record.
 */
function timeline(socket) {
  const all = received(socket);
  if (all.length === 0) return '(nothing)';
  const t0 = all[0].at;
  const out = [];
  let run = null;
  const flush = () => {
    if (run) out.push(`${run.k} events ${run.a}..${run.b}`);
    run = null;
  };
  let connects = 0;
  for (const e of all) {
    if (STREAM_EVENTS.has(e.event)) {
      const n = numberOf(e);
      if (run && n === run.b + 1) {
        run.b = n;
        run.k++;
      } else {
        flush();
        run = { a: n, b: n, k: 1 };
      }
      continue;
    }
    flush();
    let what = e.event;
    if (e.event === 'connect') {
      const c = socket.connects?.[connects++];
      what = `connect(recovered=${c?.recovered})`;
    } else if (e.event === 'disconnect' || e.event === 'connect_error') {
      what = `${e.event}(${e.args[0] instanceof Error ? e.args[0].message : e.args[0]})`;
    }
    out.push(`+${e.at - t0}ms ${what}`);
  }
  flush();
  return out.join(', ');
}

/**
 * Asserts that items are exactly from..to in order, each event with two
 * arguments, the payload and a non-empty string offset, all offsets
 * distinct. Returns the tally. socket (optional): its timeline goes into
 * the failure message.
 */
function assertComplete(items, from, to, label, socket) {
  const c = tally(items, from, to);
  assert.deepEqual(
    { lost: c.lost, duplicated: c.duplicated, outOfOrder: c.outOfOrder, extra: c.extra },
    { lost: 0, duplicated: 0, outOfOrder: 0, extra: [] },
    `${label}: delivery ${JSON.stringify(c)}${socket ? `; timeline: ${timeline(socket)}` : ''}`,
  );
  assert.deepEqual(items.map((i) => i.n), range(from, to), `${label}: the sequence`);
  const offsets = new Set();
  for (const i of items) {
    assert.equal(i.args.length, 2, `${label}: event ${i.n} (${i.event}) must carry [payload, offset], got ${JSON.stringify(i.args)}`);
    assert.equal(typeof i.args[1], 'string', `${label}: offset of event ${i.n} is not a string: ${JSON.stringify(i.args)}`);
    assert.ok(i.args[1].length > 0, `${label}: offset of event ${i.n} is empty`);
    offsets.add(i.args[1]);
  }
  assert.equal(offsets.size, items.length, `${label}: offsets are not distinct`);
  return c;
}

/**
 * Asserts that the socket stayed connected since record index from (no
 * disconnect, no reconnect); when: the moment from which it must hold, for
 * the message.
 */
function assertStayed(socket, from, label, when = 'once the network is back') {
  const after = received(socket).filter((e) => e.seq > from && ['disconnect', 'connect'].includes(e.event));
  assert.deepEqual(
    after.map((e) => `${e.event}(${e.args[0] ?? ''})`),
    [],
    `${label}: the connection must hold ${when}; timeline: ${timeline(socket)}`,
  );
}

/** The lines of a /metrics text whose names match re, as one line. */
function metricLines(text, re) {
  return text
    .split('\n')
    .filter((l) => re.test(l))
    .join('; ');
}

/** The socket event recorder, as one group for the suites to re-export. */
const recorder = { track, history, received, waitForEntry, waitFor };

module.exports = {
  recorder,
  BIN,
  ISO_RE,
  DEFAULT_WAIT_MS,
  sleep,
  freePort,
  withTimeout,
  assertCredentials,
  spawnCollecting,
  testWithDump,
  tokenMinter,
  describeArgs,
  track,
  history,
  received,
  waitForEntry,
  waitFor,
  noEventExpecter,
  eventuallyEvery,
  assertTimestamp,
  withoutTimestamp,
  httpRequest,
  TcpProxy,
  startProxy,
  STREAM_EVENTS,
  runStream,
  typedStreamBody,
  numberOf,
  streamOf,
  range,
  tally,
  fmtTally,
  timeline,
  assertComplete,
  assertStayed,
  metricLines,
};
