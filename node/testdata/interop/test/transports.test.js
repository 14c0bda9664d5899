'use strict';

// HTTP long-polling and the upgrade to WebSocket, with the official
// socket.io-client's own transport logic: its default options (polling
// first, then upgrade), polling only, WebSocket first with tryAllTransports,
// an upgrade in the middle of a stream of emits, CORS on polling requests,
// maxPayload-aware splitting of POSTs, and SIGTERM with a polling client.
//
// Some tests put a small recording proxy between the client and the server
// (startProxy below): it forwards every request unchanged, records what the
// client sent (method, transport, Origin, body size) and what the server
// answered, and can hold WebSocket upgrades until the test releases them, so
// an upgrade happens at a moment the test chooses. The client and the
// server are unchanged; the proxy only adds latency to one connection.

const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { describe } = require('node:test');
const { io } = require('socket.io-client');
const {
  setup,
  itest,
  makeToken,
  waitFor,
  waitForEntry,
  expectNoEvent,
  emitWithAck,
  withoutTimestamp,
  withTimeout,
  eventually,
  history,
  received,
  sleep,
  FRONTEND_URL,
} = require('./helpers');

// ---------------------------------------------------------------------------
// Recording proxy

/**
 * Starts an HTTP proxy on 127.0.0.1 in front of targetUrl; t.after closes it
 * and every connection it holds. opts.holdUpgrades: WebSocket upgrade
 * requests wait until proxy.releaseUpgrades() before they are forwarded;
 * opts.refuseUpgrades: they are answered 403 (WebSocket blocked).
 * Returns {url, log, releaseUpgrades(), posts(), upgrades()}; log entries are
 * {method, transport, sid, origin, bytes, status, answer (its first 300
 * characters), at}.
 */
async function startProxy(t, targetUrl, opts = {}) {
  const target = new URL(targetUrl);
  const log = [];
  const open = new Set(); // raw sockets of upgraded connections (the HTTP server does not track them)
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  if (!opts.holdUpgrades) release();

  const describeReq = (req, method) => {
    const u = new URL(req.url, 'http://proxy');
    return {
      method,
      transport: u.searchParams.get('transport'),
      sid: u.searchParams.get('sid'),
      origin: req.headers.origin,
      bytes: 0,
      status: null,
      at: Date.now(),
    };
  };

  const server = http.createServer((req, res) => {
    const entry = describeReq(req, req.method);
    log.push(entry);
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (upRes) => {
        entry.status = upRes.statusCode;
        entry.answer = '';
        upRes.on('data', (chunk) => {
          if (entry.answer.length < 300) entry.answer += chunk.toString('utf8').slice(0, 300);
        });
        res.writeHead(upRes.statusCode, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.on('data', (chunk) => {
      entry.bytes += chunk.length;
    });
    req.pipe(up);
    // A client that goes away (or a test that closes the proxy) ends the upstream request too.
    res.on('close', () => up.destroy());
  });

  server.on('upgrade', (req, socket, head) => {
    const entry = describeReq(req, 'UPGRADE');
    log.push(entry);
    if (opts.refuseUpgrades) {
      // A network that blocks WebSocket: the upgrade request gets a plain 403.
      entry.status = 403;
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => socket.destroy());
    gate.then(() => {
      if (socket.destroyed) return;
      entry.released = Date.now();
      const up = net.connect({ host: target.hostname, port: Number(target.port) }, () => {
        let lines = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
        up.write(`${lines}\r\n`);
        if (head && head.length) up.write(head);
        socket.pipe(up).pipe(socket);
      });
      open.add(up);
      up.on('close', () => {
        open.delete(up);
        socket.destroy();
      });
      up.on('error', () => up.destroy());
      socket.on('close', () => up.destroy());
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  t.after(async () => {
    release();
    for (const s of open) s.destroy();
    server.closeAllConnections();
    await withTimeout(new Promise((resolve) => server.close(resolve)), 3000, 'proxy did not close').catch(() => {});
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    releaseUpgrades: () => release(),
    posts: () => log.filter((e) => e.method === 'POST' && e.transport === 'polling'),
    upgrades: () => log.filter((e) => e.method === 'UPGRADE'),
  };
}

// ---------------------------------------------------------------------------
// Helpers

/**
 * Watches socket.io-client's Engine.IO socket: the handshake, the transport
 * it started on, and every upgrade. Must be called right after io(): the
 * engine opens its first transport synchronously.
 */
function watchEngine(s) {
  const engine = s.io.engine;
  assert.ok(engine, 'socket.io-client created no engine (autoConnect off?)');
  const w = { first: engine.transport?.name, handshake: null, upgrades: [], upgradeErrors: [] };
  w.handshakeP = withTimeout(
    new Promise((resolve) => engine.once('handshake', (hs) => resolve((w.handshake = hs)))),
    3000,
    'no Engine.IO handshake within 3000 ms',
  );
  w.handshakeP.catch(() => {});
  engine.on('upgrade', (tr) => w.upgrades.push({ name: tr.name, at: Date.now() }));
  engine.on('upgradeError', (err) => w.upgradeErrors.push(err.message));
  w.transport = () => s.io.engine?.transport?.name;
  return w;
}

/** Waits until the socket runs on WebSocket. */
async function expectUpgraded(s, w, label = 'socket') {
  await eventually(() => w.transport() === 'websocket', {
    timeout: 5000,
    message: () => `${label} upgraded to websocket (transport ${w.transport()}, upgrades ${JSON.stringify(w.upgrades)}, errors ${JSON.stringify(w.upgradeErrors)}; events: ${history(s)})`,
  });
}

/** The guide's flow on a tracked, not yet authenticated socket: authenticate, then authenticated. */
async function authenticate(s, userId, email = `${userId}@example.com`) {
  await waitFor(s, 'connect', 5000);
  s.emit('authenticate', { token: makeToken(userId, email) });
  assert.deepEqual(await waitFor(s, 'authenticated', 5000), { userId, email }, 'authenticated payload');
}

// The guide's events, as posted to the typed endpoints (the payload is this plus a timestamp).
const TYPED = [
  [
    'new_message',
    {
      message: { id: 'msg-1', conversationId: 'conv-1', content: 'héllo ✓ 🎉', sender: { id: 'c9', name: 'Ann' }, attachments: [] },
      conversation: { id: 'conv-1', title: 'Ann', unread: 3 },
    },
  ],
  ['new_message', { message: { id: 'msg-2', content: 'solo' } }],
  ['message_status_update', { messageId: 'msg-1', conversationId: 'conv-1', status: 'read' }],
  ['message_status_update', { messageId: 'msg-1', conversationId: 'conv-1', status: 'delivered' }],
  ['unread_count_update', { unreadCounts: { whatsapp: 3, telegram: 0 }, totalUnread: 3 }],
  ['conversation_update', { conversation: { id: 'conv-1', title: 'Team', archived: false } }],
  ['error', { error: 'Sync failed', code: 'SYNC_FAILED' }],
  ['error', { error: 'no code' }],
];

/** Posts every typed event and checks each exact payload; then a generic emit with a rich payload. */
async function expectGuideEvents(ctx, s, userId, label) {
  for (const [event, body] of TYPED) {
    const res = await ctx.api(`/api/v1/users/${encodeURIComponent(userId)}/events/${event}`, { body });
    assert.equal(res.status, 202, `${label} ${event}: ${res.text}`);
    const got = await waitFor(s, event);
    assert.deepEqual(withoutTimestamp(got, `${label} ${event}`), body, `${label}: ${event} payload`);
  }
  const rich = { text: 'héllo wörld ✓ 日本語', n: 42, f: -1.5e-7, ok: true, nil: null, list: [1, 'two', { three: [3] }], sep: '\u001e record separator' };
  const res = await ctx.api('/api/v1/emit', { body: { userId, event: 'custom_event', data: rich } });
  assert.equal(res.status, 202, res.text);
  assert.deepEqual(await waitFor(s, 'custom_event'), rich, `${label}: custom_event payload`);
}

/** Open connections of the server, from /health. */
async function openConnections(ctx) {
  return (await ctx.api('/health', { key: null })).body?.services?.websocket?.connections;
}

// ---------------------------------------------------------------------------

describe('transports of the official client', () => {
  itest("default options io(url): polling first, upgrade to websocket, the guide's flow and payloads", async (t) => {
    const ctx = await setup(t);
    // Exactly the guide's call without options: transports ['polling','websocket'], upgrade on.
    const s = ctx.track(io(ctx.url));
    const w = watchEngine(s);
    assert.equal(w.first, 'polling', 'the default client starts on polling');
    const hs = await w.handshakeP;
    assert.deepEqual(hs.upgrades, ['websocket'], 'a polling handshake offers the websocket upgrade');
    assert.equal(hs.maxPayload, 1_000_000);
    await authenticate(s, 'tr-default');
    await expectUpgraded(s, w, 'default client');
    assert.deepEqual(w.upgrades.map((u) => u.name), ['websocket'], 'exactly one upgrade');
    assert.deepEqual(w.upgradeErrors, []);
    await expectGuideEvents(ctx, s, 'tr-default', 'default transports');
    assert.equal(await openConnections(ctx), 1, 'the upgraded session counts once');
    assert.equal(received(s, 'disconnect').length, 0, history(s));
  });

  itest("transports ['polling']: stays on polling; the guide's flow, payloads, acks and heartbeats work", async (t) => {
    const ctx = await setup(t, { PING_INTERVAL: '200ms', PING_TIMEOUT: '300ms' });
    const s = ctx.connect({ transports: ['polling'] });
    const w = watchEngine(s);
    assert.equal(w.first, 'polling');
    const hs = await w.handshakeP;
    assert.deepEqual(hs.upgrades, ['websocket'], 'the server offers the upgrade; the client must not take it');
    await authenticate(s, 'tr-poll');
    await expectGuideEvents(ctx, s, 'tr-poll', 'polling');

    // Acks over polling.
    const ack = await emitWithAck(s, 'authenticate', { token: makeToken('tr-poll', 'tr-poll@example.com') });
    assert.deepEqual(ack, { ok: true, userId: 'tr-poll', email: 'tr-poll@example.com' }, 'authenticate ack');
    const unknown = await emitWithAck(s, 'no_such_event', { x: 1 });
    assert.deepEqual(unknown, { ok: false, error: 'Unknown event: no_such_event' });

    // Heartbeats: several ping intervals pass with the connection idle.
    let pings = 0;
    s.io.on('ping', () => pings++);
    await sleep(1200);
    assert.ok(pings >= 3, `expected at least 3 pings in 1.2 s with PING_INTERVAL=200ms, got ${pings}`);
    assert.equal(s.connected, true, history(s));
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-poll', event: 'after_idle', data: 'still here' } });
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(s, 'after_idle'), 'still here');

    assert.equal(w.transport(), 'polling', 'transport after everything');
    assert.deepEqual(w.upgrades, [], 'no upgrade with transports [polling]');
    assert.equal(await openConnections(ctx), 1);
    assert.equal(received(s, 'disconnect').length, 0, history(s));
  });

  itest("transports ['websocket','polling'] with tryAllTransports: websocket from the start", async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect({ transports: ['websocket', 'polling'], tryAllTransports: true });
    const w = watchEngine(s);
    assert.equal(w.first, 'websocket');
    const hs = await w.handshakeP;
    assert.deepEqual(hs.upgrades, [], 'a websocket connection offers no upgrade');
    await authenticate(s, 'tr-ws-first');
    assert.equal(w.transport(), 'websocket');
    await expectGuideEvents(ctx, s, 'tr-ws-first', 'websocket first');
    assert.deepEqual(w.upgrades, []);
  });

  itest("transports ['websocket','polling'] with tryAllTransports, WebSocket blocked on the way: falls back to polling and works", async (t) => {
    const ctx = await setup(t);
    const proxy = await startProxy(t, ctx.url, { refuseUpgrades: true });
    const s = ctx.track(io(proxy.url, { forceNew: true, reconnection: false, transports: ['websocket', 'polling'], tryAllTransports: true }));
    await authenticate(s, 'tr-fallback');
    assert.equal(s.io.engine.transport.name, 'polling', 'fell back to polling');
    assert.ok(proxy.upgrades().length >= 1, 'the client tried WebSocket first');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-fallback', event: 'hello', data: 'via polling' } });
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(s, 'hello'), 'via polling');
    await sleep(300); // an upgrade attempt from polling is refused the same way; the session stays
    assert.equal(s.connected, true, history(s));
    assert.equal(s.io.engine.transport.name, 'polling');
  });

  itest('two users, one on polling and one upgraded, receive only their own events', async (t) => {
    const ctx = await setup(t);
    const p = ctx.connect({ transports: ['polling'] });
    const d = ctx.track(io(ctx.url, { forceNew: true, reconnection: false }));
    const wd = watchEngine(d);
    await authenticate(p, 'tr-iso-p');
    await authenticate(d, 'tr-iso-d');
    await expectUpgraded(d, wd);
    for (let i = 0; i < 5; i++) {
      assert.equal((await ctx.api('/api/v1/emit', { body: { userId: 'tr-iso-p', event: 'mine', data: { to: 'p', i } } })).status, 202);
      assert.equal((await ctx.api('/api/v1/emit', { body: { userId: 'tr-iso-d', event: 'mine', data: { to: 'd', i } } })).status, 202);
    }
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(await waitFor(p, 'mine'), { to: 'p', i });
      assert.deepEqual(await waitFor(d, 'mine'), { to: 'd', i });
    }
    await expectNoEvent(p, 'mine', 200);
    await expectNoEvent(d, 'mine', 0);
  });
});

describe('server-initiated disconnects over polling (as over WebSocket: the Socket.IO packets, then "io server disconnect")', () => {
  /**
   * The sequence the README promises and the WebSocket transport delivers:
   * (optionally auth_error first, then) exactly one disconnect, reason
   * "io server disconnect", and no "transport close"/"transport error"
   * (those make socket.io-client reconnect).
   */
  async function expectServerDisconnect(ctx, s, authError) {
    if (authError !== undefined) {
      const err = await waitForEntry(s, 'auth_error', 3000).catch((e) => assert.fail(`${e.message}; proxy log: ${ctx.proxyLog()}`));
      assert.deepEqual(err.args[0], authError);
    }
    const disc = await waitForEntry(s, 'disconnect', 3000);
    await sleep(200);
    const discs = received(s, 'disconnect').map((e) => e.args[0]);
    assert.deepEqual(discs, ['io server disconnect'], `disconnect reasons; events: ${history(s)}; proxy log: ${ctx.proxyLog()}`);
    if (authError !== undefined) assert.ok(received(s, 'auth_error')[0].seq < disc.seq, history(s));
    await eventually(async () => (await openConnections(ctx)) === 0, { message: 'session closed on the server' });
  }

  /** A polling client through a recording proxy (its log goes into failure messages). */
  async function pollingClient(t, ctx, opts = {}) {
    const proxy = await startProxy(t, ctx.url);
    ctx.proxyLog = () => JSON.stringify(proxy.log.map((e) => [e.method, e.status, e.bytes, e.answer]));
    return ctx.track(io(proxy.url, { forceNew: true, reconnection: false, transports: ['polling'], ...opts }));
  }

  itest('bad token → auth_error "Invalid token", then disconnect "io server disconnect" only', async (t) => {
    const ctx = await setup(t);
    const s = await pollingClient(t, ctx);
    await waitFor(s, 'connect');
    s.emit('authenticate', { token: makeToken('tr-bad', 'b@example.com', { secret: 'another-secret-0123456789abcdefg' }) });
    await expectServerDisconnect(ctx, s, { message: 'Invalid token' });
  });

  itest('AUTH_TIMEOUT → auth_error "Authentication timeout", then disconnect "io server disconnect" only', async (t) => {
    const ctx = await setup(t, { AUTH_TIMEOUT: '400ms' });
    const s = await pollingClient(t, ctx);
    await waitFor(s, 'connect');
    await expectServerDisconnect(ctx, s, { message: 'Authentication timeout' });
  });

  itest('POST /api/v1/users/{id}/disconnect → disconnect "io server disconnect" only', async (t) => {
    const ctx = await setup(t);
    const s = await pollingClient(t, ctx);
    await authenticate(s, 'tr-kick');
    const res = await ctx.api('/api/v1/users/tr-kick/disconnect', { method: 'POST' });
    assert.equal(res.status, 202, res.text);
    await expectServerDisconnect(ctx, s);
  });

  itest("the guide's client (reconnection on, authenticate on every connect) with a bad token does not loop reconnecting", async (t) => {
    const ctx = await setup(t);
    const s = await pollingClient(t, ctx, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    const token = makeToken('tr-loop', 'l@example.com', { secret: 'another-secret-0123456789abcdefg' });
    s.on('connect', () => s.emit('authenticate', { token }));
    await waitFor(s, 'connect');
    await sleep(1500);
    assert.equal(received(s, 'connect').length, 1, `connects within 1.5 s: ${history(s)}`);
    assert.equal(received(s, 'auth_error').length, 1, history(s));
  });
});

describe('upgrade during a stream of emits', () => {
  itest('300 numbered emits before, during and after the polling → websocket upgrade arrive exactly once and in order', async (t) => {
    const ctx = await setup(t);
    // The proxy holds the WebSocket of the upgrade until the stream runs.
    const proxy = await startProxy(t, ctx.url, { holdUpgrades: true });
    const s = ctx.track(io(proxy.url, { forceNew: true, reconnection: false }));
    const w = watchEngine(s);
    await authenticate(s, 'tr-stream');
    assert.equal(w.transport(), 'polling', 'authenticated while the upgrade is held');

    const N = 300;
    const RELEASE_AT = 100;
    const got = []; // {n, transport} in arrival order
    s.on('n', (n) => got.push({ n, transport: w.transport() }));
    let posted = 0;
    let releasedAfter = null;
    let upgradedAfter = null;
    s.io.engine.on('upgrade', () => {
      upgradedAfter = posted;
    });

    const started = Date.now();
    for (let i = 0; i < N; i++) {
      if (i === RELEASE_AT) {
        releasedAfter = posted;
        proxy.releaseUpgrades();
      }
      // Leave at least a third of the stream for after the upgrade: wait
      // for it here, bounded (the posts in between ran during the upgrade).
      if (i === 2 * RELEASE_AT && upgradedAfter === null) {
        await eventually(() => upgradedAfter !== null, {
          timeout: 5000,
          message: () => `upgrade completed (upgrades ${JSON.stringify(proxy.upgrades())}, errors ${JSON.stringify(w.upgradeErrors)})`,
        });
      }
      const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-stream', event: 'n', data: i } });
      assert.equal(res.status, 202, `emit ${i}: ${res.status} ${res.text}`);
      posted++;
    }
    await eventually(() => got.length >= N, {
      timeout: 5000,
      message: () => `all ${N} events arrived (got ${got.length}; last ${JSON.stringify(got.slice(-3))})`,
    });
    await sleep(300); // duplicates, if any, would arrive now

    const numbers = got.map((g) => g.n);
    const dupes = numbers.filter((n, i) => numbers.indexOf(n) !== i);
    assert.deepEqual(dupes, [], 'no number arrives twice');
    assert.deepEqual(numbers, [...Array(N).keys()], 'every number exactly once, in order');

    // The transport changed from polling to websocket during the stream.
    assert.equal(w.upgrades.length, 1, `one upgrade: ${JSON.stringify(w.upgrades)}`);
    assert.equal(w.transport(), 'websocket');
    const transports = got.map((g) => g.transport);
    const firstWs = transports.indexOf('websocket');
    assert.ok(firstWs > 0, `some events came over polling and some over websocket: first websocket event #${firstWs}`);
    assert.ok(transports.slice(0, firstWs).every((x) => x === 'polling'), 'polling until the upgrade');
    assert.ok(transports.slice(firstWs).every((x) => x === 'websocket'), 'websocket after the upgrade, never back');
    assert.ok(upgradedAfter >= releasedAfter && upgradedAfter < N, `upgrade inside the stream: released after ${releasedAfter} posts, upgraded after ${upgradedAfter}`);
    t.diagnostic(
      `stream of ${N} emits in ${Date.now() - started} ms: upgrade released after ${releasedAfter} posts, ` +
        `completed after ${upgradedAfter} posts; events #0–#${firstWs - 1} over polling, #${firstWs}–#${N - 1} over websocket`,
    );
    assert.equal(received(s, 'disconnect').length, 0, history(s));
  });
});

describe('CORS on polling requests', () => {
  itest("Origin http://localhost:5173 (FRONTEND_URL) over transports ['polling'] → connects, authenticates; CORS headers reflect it", async (t) => {
    const ctx = await setup(t);
    const proxy = await startProxy(t, ctx.url);
    const s = ctx.track(io(proxy.url, { forceNew: true, reconnection: false, transports: ['polling'], extraHeaders: { origin: FRONTEND_URL } }));
    await authenticate(s, 'tr-cors');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-cors', event: 'hello', data: 1 } });
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(s, 'hello'), 1);
    // The client really sent the Origin on its polling GETs and POSTs.
    const polls = proxy.log.filter((e) => e.transport === 'polling');
    assert.ok(polls.some((e) => e.method === 'GET') && polls.some((e) => e.method === 'POST'), JSON.stringify(polls));
    assert.ok(polls.every((e) => e.origin === FRONTEND_URL), `every polling request carries the Origin: ${JSON.stringify(polls)}`);

    // What a browser checks: the exact origin reflected with credentials, never "*".
    const hs = await fetch(`${ctx.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: FRONTEND_URL }, signal: AbortSignal.timeout(3000) });
    assert.equal(hs.status, 200);
    assert.match(await hs.text(), /^0\{"sid":/);
    assert.equal(hs.headers.get('access-control-allow-origin'), FRONTEND_URL);
    assert.equal(hs.headers.get('access-control-allow-credentials'), 'true');
    const pre = await fetch(`${ctx.url}/socket.io/?EIO=4&transport=polling`, {
      method: 'OPTIONS',
      headers: { origin: FRONTEND_URL, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      signal: AbortSignal.timeout(3000),
    });
    await pre.arrayBuffer();
    assert.ok(pre.status === 200 || pre.status === 204, `preflight status ${pre.status}`);
    assert.equal(pre.headers.get('access-control-allow-origin'), FRONTEND_URL);
    assert.match(pre.headers.get('access-control-allow-methods') || '', /POST/);
    assert.match(pre.headers.get('access-control-allow-headers') || '', /content-type/i);
  });

  itest("Origin http://evil.example over transports ['polling'] → connect_error (403), no session", async (t) => {
    const ctx = await setup(t);
    const proxy = await startProxy(t, ctx.url);
    const s = ctx.track(io(proxy.url, { forceNew: true, reconnection: false, transports: ['polling'], extraHeaders: { origin: 'http://evil.example' } }));
    const err = await waitFor(s, 'connect_error');
    assert.ok(err instanceof Error, `connect_error: ${history(s)}`);
    assert.equal(err.message, 'xhr poll error', history(s));
    assert.equal(err.description, 403, 'the handshake GET is answered 403');
    await expectNoEvent(s, 'connect', 200);
    assert.equal(s.connected, false);
    const hs = proxy.log.find((e) => e.method === 'GET' && e.transport === 'polling');
    assert.equal(hs?.origin, 'http://evil.example', 'the Origin was sent');
    assert.equal(hs?.status, 403);
    assert.equal(await openConnections(ctx), 0, 'a refused handshake opens no session');

    const raw = await fetch(`${ctx.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'http://evil.example' }, signal: AbortSignal.timeout(3000) });
    assert.equal(raw.status, 403);
    assert.deepEqual(await raw.json(), { code: 4, message: 'Forbidden' });
    assert.equal(raw.headers.get('access-control-allow-origin'), null, 'no CORS grant for a refused origin');
  });

  itest('Origin http://evil.example with default transports → connect_error, no session', async (t) => {
    const ctx = await setup(t);
    const s = ctx.track(io(ctx.url, { forceNew: true, reconnection: false, extraHeaders: { origin: 'http://evil.example' } }));
    const err = await waitFor(s, 'connect_error');
    assert.ok(err instanceof Error, history(s));
    await expectNoEvent(s, 'connect', 200);
    assert.equal(await openConnections(ctx), 0);
  });

  itest('withCredentials: true (and the allowed Origin) with default transports → connects, upgrades, receives', async (t) => {
    const ctx = await setup(t);
    const s = ctx.track(io(ctx.url, { forceNew: true, reconnection: false, withCredentials: true, extraHeaders: { origin: FRONTEND_URL } }));
    const w = watchEngine(s);
    assert.equal(w.first, 'polling');
    await authenticate(s, 'tr-cred');
    await expectUpgraded(s, w, 'withCredentials client');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-cred', event: 'hello', data: { ok: true } } });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await waitFor(s, 'hello'), { ok: true });
  });

  itest("withCredentials: true with transports ['polling'] → connects and receives", async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect({ transports: ['polling'], withCredentials: true });
    await authenticate(s, 'tr-cred-poll');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-cred-poll', event: 'hello', data: 2 } });
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(s, 'hello'), 2);
    assert.equal(s.io.engine.transport.name, 'polling');
  });
});

describe('MAX_PAYLOAD with polling', () => {
  /** A token of about `size` bytes (padded with a claim). */
  function bigToken(userId, size) {
    let token = makeToken(userId, `${userId}@example.com`, { extra: { pad: 'p'.repeat(Math.floor(size * 0.75) - 100) } });
    assert.ok(Math.abs(token.length - size) < 150, `token of ${token.length} bytes, wanted about ${size}`);
    return token;
  }

  itest('MAX_PAYLOAD=2048: the client splits its POSTs; two 1.5 kB authenticate packets sent together both work', async (t) => {
    const ctx = await setup(t, { MAX_PAYLOAD: '2048' });
    const proxy = await startProxy(t, ctx.url);
    const s = ctx.track(io(proxy.url, { forceNew: true, reconnection: false, transports: ['polling'] }));
    const w = watchEngine(s);
    assert.equal((await w.handshakeP).maxPayload, 2048, 'the client learns maxPayload from the handshake');
    const token = bigToken('tr-big', 1500);
    // Emitted before the connection: socket.io-client buffers both and
    // flushes them in one go after CONNECT, 2 × ~1.55 kB > 2048 in one
    // engine write buffer; the client must split it over two POSTs.
    const acks = [
      s.timeout(5000).emitWithAck('authenticate', { token }),
      s.timeout(5000).emitWithAck('authenticate', { token }),
    ];
    await waitFor(s, 'connect', 5000);
    const results = await Promise.all(acks);
    for (const r of results) assert.deepEqual(r, { ok: true, userId: 'tr-big', email: 'tr-big@example.com' });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'tr-big', email: 'tr-big@example.com' });

    const posts = proxy.posts();
    const big = posts.filter((p) => p.bytes > 1400);
    assert.ok(big.length >= 2, `the two authenticate packets went in separate POSTs: ${JSON.stringify(posts.map((p) => p.bytes))}`);
    for (const p of posts) {
      assert.ok(p.bytes <= 2048, `POST of ${p.bytes} bytes exceeds MAX_PAYLOAD: ${JSON.stringify(posts.map((x) => x.bytes))}`);
      assert.equal(p.status, 200, `POST answered ${p.status}`);
    }
    t.diagnostic(`POST body sizes with MAX_PAYLOAD=2048: ${JSON.stringify(posts.map((p) => p.bytes))}`);

    // A burst of three ~900-byte events in one tick is split too, and each is answered.
    const pad = 'x'.repeat(900);
    const burst = await Promise.all([0, 1, 2].map((i) => emitWithAck(s, `burst_${i}`, { i, pad })));
    assert.deepEqual(burst, [0, 1, 2].map((i) => ({ ok: false, error: `Unknown event: burst_${i}` })));
    for (const p of proxy.posts()) assert.ok(p.bytes <= 2048, `POST of ${p.bytes} bytes`);

    // Events to the client are not bound by MAX_PAYLOAD (an inbound limit): several 1.5 kB emits queue into one poll.
    const items = [0, 1, 2, 3].map((i) => ({ userId: 'tr-big', event: 'down', data: { i, pad: 'y'.repeat(1500) } }));
    const res = await ctx.api('/api/v1/emit', { body: items });
    assert.equal(res.status, 202, res.text);
    for (let i = 0; i < 4; i++) assert.equal((await waitFor(s, 'down')).i, i);
    assert.equal(s.connected, true, history(s));
  });

  itest('MAX_PAYLOAD=2048, limitation: a single packet above it cannot be split; the POST gets 413 and the session closes', async (t) => {
    const ctx = await setup(t, { MAX_PAYLOAD: '2048' });
    const proxy = await startProxy(t, ctx.url);
    const s = ctx.track(io(proxy.url, { forceNew: true, reconnection: false, transports: ['polling'] }));
    await waitFor(s, 'connect');
    s.emit('authenticate', { token: bigToken('tr-huge', 3000) });
    // The server closes the session on the 413: the pending GET carries the
    // close packet ("transport close") or the failed POST is seen first
    // ("transport error"); either way the client reconnects, as with Node.
    const disc = await waitForEntry(s, 'disconnect', 5000);
    assert.ok(['transport close', 'transport error'].includes(disc.args[0]), `disconnect reason: ${history(s)}`);
    const post = proxy.posts().find((p) => p.bytes > 2048);
    assert.ok(post, `the oversized packet went out in one POST: ${JSON.stringify(proxy.posts().map((p) => p.bytes))}`);
    assert.equal(post.status, 413, 'the oversized POST is answered 413');
    assert.equal(received(s, 'authenticated').length, 0);
    await eventually(async () => (await openConnections(ctx)) === 0, { message: 'session closed on the server' });
  });
});

describe('SIGTERM with polling clients', () => {
  itest('a polling client (authenticated or not) gets disconnect "transport close", not "io server disconnect"; exit 0', async (t) => {
    const ctx = await setup(t);
    const a = ctx.connect({ transports: ['polling'] });
    await authenticate(a, 'tr-sd');
    const anon = ctx.connect({ transports: ['polling'] });
    await waitFor(anon, 'connect');
    const up = ctx.track(io(ctx.url, { forceNew: true, reconnection: false }));
    const wu = watchEngine(up);
    await authenticate(up, 'tr-sd-up');
    await expectUpgraded(up, wu);
    assert.equal(a.io.engine.transport.name, 'polling');
    await sleep(100); // let every client's next GET reach the server

    const started = Date.now();
    const exit = await ctx.stop();
    const took = Date.now() - started;
    for (const [name, s] of Object.entries({ a, anon, up })) {
      const disc = await waitForEntry(s, 'disconnect', 3000);
      assert.equal(disc.args[0], 'transport close', `${name}: disconnect reason; events: ${history(s)}`);
    }
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `exit after SIGTERM; output:\n${ctx.server.output()}`);
    assert.ok(took < 5000, `shutdown took ${took} ms (SIGKILL fallback hit?)`);
  });
  itest('SIGTERM during a stream of emits to a polling client: it disconnects without "io server disconnect" and the process exits 0 promptly', async (t) => {
    // With packets in flight the pending GET carries them, so the close
    // packet cannot follow before the server is gone: the client's next GET
    // fails ("transport error"), as with Node's io.close(); with nothing in
    // flight it is "transport close" (the test above). Either way it reconnects.
    const ctx = await setup(t);
    const s = ctx.connect({ transports: ['polling'] });
    await authenticate(s, 'tr-sd-stream');
    let stop = false;
    let accepted = 0;
    const stream = (async () => {
      for (let i = 0; !stop; i++) {
        const res = await ctx.api('/api/v1/emit', { body: { userId: 'tr-sd-stream', event: 'n', data: i } }).catch(() => null);
        if (!res || res.status !== 202) break;
        accepted++;
      }
    })();
    await eventually(() => received(s, 'n').length >= 20, { timeout: 3000, message: 'the stream flows' });
    const started = Date.now();
    const exit = await ctx.stop();
    const took = Date.now() - started;
    stop = true;
    await withTimeout(stream, 6000, 'the emit loop did not end');
    const disc = await waitForEntry(s, 'disconnect', 3000);
    assert.ok(['transport close', 'transport error'].includes(disc.args[0]), `disconnect reason; events: ${history(s).slice(-300)}`);
    assert.equal(received(s, 'disconnect').length, 1);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `exit after SIGTERM; output:\n${ctx.server.output()}`);
    assert.ok(took < 5000, `shutdown took ${took} ms`);
    const numbers = received(s, 'n').map((e) => e.args[0]);
    assert.deepEqual(numbers, [...Array(numbers.length).keys()], 'what arrived, arrived once and in order');
    t.diagnostic(`SIGTERM during a polling stream: disconnect "${disc.args[0]}", ${numbers.length} of ${accepted} accepted emits delivered, exit after ${took} ms`);
  });
});
