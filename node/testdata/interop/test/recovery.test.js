'use strict';

// Connection-state recovery on one node (memory history), with the official
// socket.io-client's own recovery logic (≥ 4.6; no client option needed):
// the CONNECT reply carries a pid, every event emitted to a user through the
// HTTP API carries its offset as a trailing string argument, and a client
// that comes back with its pid and last offset gets `socket.recovered` true,
// its sid back and, once it has authenticated as the same user, every event
// it missed, in order, exactly once, then live events.
//
// The network cut is a small TCP proxy between the client and the server
// (TcpProxy, ../../jslib/common.js): cut() destroys every connection it carries (both sides,
// so the server sees the close at once) and refuses new ones until
// restore(); cut({halfOpen: true}) leaves the server's side open and silent
// (a real network loss the server notices only by its heartbeat);
// limitDown(bytes) drops the next connection after that many bytes from the
// server (a cut in the middle of a replay). The client is the guide's:
// reconnection on, `authenticate {token}` on every `connect`.
//
// Each stream test counts what the client received against what was
// emitted (lost, duplicated, out of order) and prints a MEASURE line;
// failures print the client's connection timeline and the server's output
// (HUBNODE_LOG_LEVEL=debug for more).
//
// The server runs with RECOVERY_WINDOW set here; the rest of the suite runs
// with RECOVERY_WINDOW=0 (helpers.js), where events carry no offset.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const {
  setup,
  itest,
  connect,
  makeToken,
  api,
  waitFor,
  waitForEntry,
  received,
  history,
  eventually,
  sleep,
} = require('./helpers');
// The TCP proxy and the numbered-stream accounting, shared with ../../cluster.
const { startProxy, runStream, typedStreamBody, streamOf, range, tally, fmtTally, timeline } = require('../../jslib/common');
const { assertComplete, assertStayed, metricLines } = require('../../jslib/common');

// HUBNODE_LOG_LEVEL=debug (for instance) raises the servers' log level of this file.
const LOG_ENV = process.env.HUBNODE_LOG_LEVEL ? { LOG_LEVEL: process.env.HUBNODE_LOG_LEVEL } : {};
const REC_ENV = { RECOVERY_WINDOW: '2m', ...LOG_ENV };
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, transports: ['websocket'] };

// The TCP proxy (TcpProxy, startProxy(t, targetPort)) is in ../../jslib/common.js.

// ---------------------------------------------------------------------------
// The guide's client

/**
 * A tracked socket (closed by setup's hook) with the guide's flow: on every
 * `connect` it emits `authenticate {token}`. opts.authDelay(k) returns the
 * delay in ms before authenticating on the k-th connect (1-based);
 * opts.tokenFor(k) the token of the k-th connect; opts.io more client
 * options. Every connect is logged in socket.connects as {at, recovered,
 * pid, id}.
 */
function guideClient(ctx, url, userId, opts = {}) {
  const token = makeToken(userId, `${userId}@example.com`);
  const s = ctx.track(connect(url, { ...RECONNECT, ...(opts.io || {}) }));
  s.connects = [];
  s.on('connect', () => {
    const k = s.connects.length + 1;
    s.connects.push({ at: Date.now(), recovered: s.recovered, pid: s._pid, id: s.id });
    if (opts.noAuth) return;
    const tok = opts.tokenFor ? opts.tokenFor(k) : token;
    const delay = opts.authDelay ? opts.authDelay(k) : 0;
    const go = () => {
      // Only on the connection it was meant for.
      if (s.connected && s.connects.length === k) s.emit('authenticate', { token: tok });
    };
    if (delay > 0) setTimeout(go, delay);
    else go();
  });
  return s;
}

// ---------------------------------------------------------------------------
// The stream of numbered events

/**
 * Emits numbered events 1..count to each user, one every intervalMs per
 * user, through the HTTP API of baseUrl: `tick {n, u}` through POST
 * /api/v1/emit, and every typedEvery-th through the typed endpoint
 * `unread_count_update` (totalUnread = n). Each user's emits are
 * sequential (the next is posted once the previous got its 202), so their
 * order is the server's order. Returns {done, emitted}: done resolves null
 * or the first error; emitted[user][n] = {start, end} (ms).
 */
function startStream(baseUrl, users, opts = {}) {
  return runStream(users, opts, (u, n, typed) =>
    typed
      ? api(baseUrl, `/api/v1/users/${encodeURIComponent(u)}/events/unread_count_update`, { body: typedStreamBody(n) })
      : api(baseUrl, '/api/v1/emit', { body: { userId: u, event: 'tick', data: { n, u } } }),
  );
}

/** Emits events from..to to user at once (sequentially), through /api/v1/emit. */
async function emitRange(baseUrl, user, from, to) {
  for (let n = from; n <= to; n++) {
    const res = await api(baseUrl, '/api/v1/emit', { body: { userId: user, event: 'tick', data: { n, u: user } } });
    assert.equal(res.status, 202, `emit ${n}: ${res.text}`);
  }
}

// numberOf, streamOf, range, tally, fmtTally, timeline, assertComplete and
// assertStayed (the numbered-stream accounting) are in ../../jslib/common.js.

/** The first record index (seq) of event after record index from; -1 when none. */
function seqOf(socket, event, from = -1) {
  const e = received(socket).find((x) => x.event === event && x.seq > from);
  return e ? e.seq : -1;
}

/** The stream events received between record indexes a (exclusive) and b (exclusive). */
function streamBetween(socket, a, b) {
  return streamOf(socket).filter((i) => i.seq > a && (b < 0 || i.seq < b));
}

/** The recovery-related counters of GET /metrics, as one line for the report. */
async function recoveryMetrics(baseUrl) {
  try {
    const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(3000) });
    return metricLines(await res.text(), /^hubnode_(recoveries_total|replayed_total|slow_consumers_total|protocol_errors_total)/);
  } catch (err) {
    return `(metrics: ${err.message})`;
  }
}

// ---------------------------------------------------------------------------
// Steps the tests repeat

/** A server (setup(t, env)) and a TcpProxy in front of it: {ctx, proxy}. */
async function setupWithProxy(t, env) {
  const ctx = await setup(t, env);
  const proxy = await startProxy(t, ctx.server.port);
  return { ctx, proxy };
}

/** A guideClient (same arguments) once it has connected and authenticated. */
async function readyClient(ctx, url, userId, opts) {
  const s = guideClient(ctx, url, userId, opts);
  await waitFor(s, 'connect', 5000);
  await waitFor(s, 'authenticated', 5000);
  return s;
}

/** Emits events from..to to user and waits (3 s at most) until s has `to` stream events. */
async function emitAndSee(s, baseUrl, user, from, to) {
  await emitRange(baseUrl, user, from, to);
  await eventually(() => streamOf(s).length >= to, { timeout: 3000 });
}

/** Gives s up to timeout ms to hold count stream events (no failure here), then pause ms for late duplicates. */
async function settle(s, count, timeout, pause) {
  await eventually(() => streamOf(s).length >= count, { timeout }).catch(() => {});
  await sleep(pause);
}

/** The network drops (proxy.cut()); resolves the disconnect record of s (3 s at most). */
function cutNow(proxy, s) {
  proxy.cut();
  return waitForEntry(s, 'disconnect', 3000);
}

/** The network drops for s, stays down ms after s saw the disconnect, and comes back. */
async function cutFor(proxy, s, ms) {
  await cutNow(proxy, s);
  await sleep(ms);
  proxy.restore();
}

// ---------------------------------------------------------------------------

describe('connection-state recovery (one node, memory history)', () => {
  itest('the CONNECT reply carries a pid (recovered false on a first connect); API events carry a string offset last; authenticated and error do not', async (t) => {
    const ctx = await setup(t, REC_ENV);
    const user = 'rc-shape';
    const s = guideClient(ctx, ctx.url, user);
    const plain = [];
    s.on('plain', (data) => plain.push(data)); // a guide-style listener: (data) => …
    await waitFor(s, 'connect', 5000);
    assert.equal(typeof s._pid, 'string', `socket._pid after connect: ${JSON.stringify(s._pid)}`);
    assert.ok(s._pid.length > 0, 'pid is empty');
    assert.equal(s.recovered, false, 'socket.recovered on a first connect');
    const auth = await waitForEntry(s, 'authenticated', 5000);
    assert.deepEqual(auth.args, [{ userId: user, email: `${user}@example.com` }], 'authenticated carries no offset');

    // POST /api/v1/emit
    const r1 = await ctx.api('/api/v1/emit', { body: { userId: user, event: 'plain', data: { a: 1 } } });
    assert.equal(r1.status, 202, r1.text);
    const e1 = await waitForEntry(s, 'plain');
    assert.equal(e1.args.length, 2, `emit: [data, offset], got ${JSON.stringify(e1.args)}`);
    assert.deepEqual(e1.args[0], { a: 1 });
    assert.equal(typeof e1.args[1], 'string');
    assert.ok(e1.args[1].length > 0);
    assert.deepEqual(plain, [{ a: 1 }], 'a (data) => … listener sees the data unchanged');

    // A batch, a typed endpoint.
    const batch = await ctx.api('/api/v1/emit', {
      body: [
        { userId: user, event: 'plain', data: { a: 2 } },
        { userId: user, event: 'plain', data: 'a string payload' },
      ],
    });
    assert.equal(batch.status, 202, batch.text);
    const e2 = await waitForEntry(s, 'plain');
    const e3 = await waitForEntry(s, 'plain');
    assert.deepEqual(e2.args[0], { a: 2 });
    assert.deepEqual(e3.args[0], 'a string payload');
    const typed = await ctx.api(`/api/v1/users/${user}/events/new_message`, { body: { message: { id: 'm1', text: 'hi' } } });
    assert.equal(typed.status, 202, typed.text);
    const e4 = await waitForEntry(s, 'new_message');
    assert.deepEqual(e4.args[0].message, { id: 'm1', text: 'hi' });
    for (const [name, e] of Object.entries({ e2, e3, e4 })) {
      assert.equal(e.args.length, 2, `${name}: [data, offset], got ${JSON.stringify(e.args)}`);
      assert.equal(typeof e.args[1], 'string', `${name}: offset ${JSON.stringify(e.args[1])}`);
    }
    const offsets = [e1, e2, e3, e4].map((e) => e.args[1]);
    assert.equal(new Set(offsets).size, 4, `four events, four offsets: ${JSON.stringify(offsets)}`);
    // The API answers with the offsets it assigned (README, openapi.yaml).
    assert.deepEqual(r1.body, { accepted: 1, offsets: [e1.args[1]] }, 'POST /emit answer');
    assert.deepEqual(batch.body, { accepted: 2, offsets: [e2.args[1], e3.args[1]] }, 'POST /emit (batch) answer');
    assert.deepEqual(typed.body, { accepted: 1, offset: e4.args[1] }, 'typed endpoint answer');
    assert.equal(s._lastOffset, e4.args[1], "the client keeps the last offset it saw (what it sends back on reconnect)");

    // The server's own `error` event carries no offset.
    s.emit('no_such_event', {});
    const err = await waitForEntry(s, 'error');
    assert.equal(err.args.length, 1, `error carries no offset: ${JSON.stringify(err.args)}`);
    assert.equal(err.args[0].code, 'UNKNOWN_EVENT');
    t.diagnostic(`pid ${JSON.stringify(s._pid)} (${s._pid.length} chars), sid ${s.id}, offsets ${JSON.stringify(offsets)}`);

    // RECOVERY_WINDOW=0 (the rest of the suite): no pid, no offset.
    const off = await setup(t, { RECOVERY_WINDOW: '0' });
    const s0 = await off.authed('rc-off');
    assert.equal(s0._pid, undefined, 'no pid with RECOVERY_WINDOW=0');
    assert.equal((await off.api('/api/v1/emit', { body: { userId: 'rc-off', event: 'plain', data: 1 } })).status, 202);
    assert.deepEqual((await waitForEntry(s0, 'plain')).args, [1], 'no offset with RECOVERY_WINDOW=0');

    // No RECOVERY_WINDOW at all: the default (2m) is on.
    const dflt = await setup(t, { RECOVERY_WINDOW: undefined });
    const sd = await dflt.authed('rc-default');
    assert.equal(typeof sd._pid, 'string', 'a pid with the default RECOVERY_WINDOW');
    assert.equal((await dflt.api('/api/v1/emit', { body: { userId: 'rc-default', event: 'plain', data: 1 } })).status, 202);
    const ed = await waitForEntry(sd, 'plain');
    assert.equal(ed.args.length, 2, `an offset with the default RECOVERY_WINDOW: ${JSON.stringify(ed.args)}`);
  });

  itest('a 1.5 s network cut during a stream of numbered events: recovered, same pid and sid, every event exactly once and in order, each with a string offset', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-stream';
    const COUNT = 300;
    const s = await readyClient(ctx, proxy.url, user);
    const first = s.connects[0];
    assert.equal(first.recovered, false);

    const stream = startStream(ctx.url, [user], { count: COUNT, intervalMs: 10 });
    await sleep(500);
    const cutAt = Date.now();
    const disc = await cutNow(proxy, s);
    assert.equal(disc.args[0], 'transport close', history(s));
    const before = streamOf(s).length;
    await sleep(1500 - (Date.now() - cutAt));
    proxy.restore();
    const restoredAt = Date.now();
    const back = await waitForEntry(s, 'connect', 5000);
    const second = s.connects[1];
    assert.equal(second.recovered, true, `socket.recovered after the cut (connects: ${JSON.stringify(s.connects)})`);
    assert.equal(second.pid, first.pid, 'the same pid');
    assert.equal(second.id, first.id, 'the same sid');
    const authed = await waitForEntry(s, 'authenticated', 5000);
    assert.deepEqual(authed.args, [{ userId: user, email: `${user}@example.com` }]);

    const err = await stream.done;
    assert.equal(err, null, `stream: ${err?.message}`);
    await eventually(() => streamOf(s).length >= COUNT, { timeout: 5000, message: () => `${COUNT} stream events (have ${streamOf(s).length})` }).catch(() => {});
    await sleep(300); // duplicates, if any, would arrive now
    const items = streamOf(s);
    const c = tally(items, 1, COUNT);
    // Nothing between connect and authenticated; what was missed is replayed after authenticated.
    assert.deepEqual(streamBetween(s, back.seq, authed.seq).map((i) => i.n), [], 'stream events before authenticated');
    const emittedAway = range(1, COUNT).filter((n) => stream.emitted[user][n].end >= cutAt && stream.emitted[user][n].start < back.at);
    const lastAway = Math.max(...emittedAway);
    const caught = items.find((i) => i.n === lastAway && i.seq > authed.seq);
    t.diagnostic(
      `MEASURE one node, cut 1500 ms: ${before} events before the cut, disconnect after ${disc.at - cutAt} ms, ` +
        `reconnected ${back.at - restoredAt} ms after the network returned (${proxy.refused} attempts refused), recovered=${second.recovered}; ` +
        `${emittedAway.length} events emitted while away, the last of them received ${caught ? `${caught.at - back.at} ms` : 'NEVER'} after connect; ` +
        `total ${fmtTally(c)}; server: ${await recoveryMetrics(ctx.url)}`,
    );
    assertStayed(s, back.seq, 'after the recovery');
    assertComplete(items, 1, COUNT, 'stream across the cut', s);
    assert.ok(emittedAway.length >= 100, `the cut covered ${emittedAway.length} events only`);
  });

  itest('300 events missed (more than the WRITE_QUEUE of 64 frames) are replayed on one connection that stays open', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-big-gap';
    const s = await readyClient(ctx, proxy.url, user);
    await emitAndSee(s, ctx.url, user, 1, 5);
    await cutNow(proxy, s);
    const t0 = Date.now();
    await emitRange(ctx.url, user, 6, 305);
    t.diagnostic(`300 emits while away took ${Date.now() - t0} ms`);
    proxy.restore();
    const back = await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[1].recovered, true, `recovered (connects ${JSON.stringify(s.connects)})`);
    const authed = await waitForEntry(s, 'authenticated', 5000);
    await eventually(() => streamOf(s).length >= 305, { timeout: 5000 }).catch(() => {});
    const last = streamOf(s).find((i) => i.n === 305);
    await sleep(300);
    t.diagnostic(
      `MEASURE 300 missed: all replayed ${last ? `${last.at - authed.at} ms after authenticated` : 'NEVER'}; ` +
        `${s.connects.length} connects; server: ${await recoveryMetrics(ctx.url)}`,
    );
    assertStayed(s, back.seq, 'replay of 300 events');
    assertComplete(streamOf(s), 1, 305, '300 missed', s);
  });

  itest('two tabs of one user cut at once both recover with their own pid and sid, each with the complete sequence', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-tabs';
    const COUNT = 200;
    const tabs = [guideClient(ctx, proxy.url, user), guideClient(ctx, proxy.url, user)];
    for (const s of tabs) {
      await waitFor(s, 'connect', 5000);
      await waitFor(s, 'authenticated', 5000);
    }
    assert.notEqual(tabs[0]._pid, tabs[1]._pid, 'each tab has its own pid');
    const stream = startStream(ctx.url, [user], { count: COUNT, intervalMs: 10 });
    await sleep(400);
    proxy.cut();
    for (const s of tabs) await waitForEntry(s, 'disconnect', 3000);
    await sleep(1000);
    proxy.restore();
    const backs = [];
    for (const s of tabs) {
      backs.push(await waitForEntry(s, 'connect', 5000));
      await waitForEntry(s, 'authenticated', 5000);
    }
    assert.equal(await stream.done, null);
    for (const s of tabs) await eventually(() => streamOf(s).length >= COUNT, { timeout: 5000 }).catch(() => {});
    await sleep(300);
    tabs.forEach((s, i) => {
      const [a, b] = s.connects;
      assert.equal(b?.recovered, true, `tab ${i}: recovered (connects ${JSON.stringify(s.connects)})`);
      assert.deepEqual([b.pid, b.id], [a.pid, a.id], `tab ${i}: its own pid and sid back`);
      assertStayed(s, backs[i].seq, `tab ${i}`);
      const c = assertComplete(streamOf(s), 1, COUNT, `tab ${i}`, s);
      t.diagnostic(`MEASURE tab ${i}: ${fmtTally(c)}`);
    });
  });

  itest('with the token in the CONNECT auth: recovered, authenticated first, then the missed events, then live ones', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-connect-auth';
    const COUNT = 200;
    const s = await readyClient(ctx, proxy.url, user, { noAuth: true, io: { auth: { token: makeToken(user, `${user}@example.com`) } } });
    const stream = startStream(ctx.url, [user], { count: COUNT, intervalMs: 10 });
    await sleep(400);
    await cutFor(proxy, s, 1000);
    const back = await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[1].recovered, true, `recovered with the CONNECT auth (connects ${JSON.stringify(s.connects)})`);
    const authed = await waitForEntry(s, 'authenticated', 5000);
    assert.deepEqual(streamBetween(s, back.seq, authed.seq).map((i) => i.n), [], 'nothing before authenticated');
    assert.equal(await stream.done, null);
    await settle(s, COUNT, 5000, 300);
    assertStayed(s, back.seq, 'CONNECT auth');
    const c = assertComplete(streamOf(s), 1, COUNT, 'CONNECT auth', s);
    t.diagnostic(`MEASURE CONNECT auth, cut 1000 ms: ${fmtTally(c)}`);
  });

  itest('nothing is replayed before authentication: a recovered client that authenticates 500 ms after connect gets no event in those 500 ms, then everything', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-late-auth';
    const COUNT = 250;
    const s = await readyClient(ctx, proxy.url, user, { authDelay: (k) => (k >= 2 ? 500 : 0) });
    const stream = startStream(ctx.url, [user], { count: COUNT, intervalMs: 10 });
    await sleep(400);
    await cutFor(proxy, s, 1000);
    const back = await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[1].recovered, true, `recovered (connects ${JSON.stringify(s.connects)})`);
    await sleep(450);
    const early = streamOf(s).filter((i) => i.seq > back.seq);
    assert.deepEqual(early.map((i) => i.n), [], `stream events received in the 450 ms after connect, before authenticate was sent: ${history(s)}`);
    const authed = await waitForEntry(s, 'authenticated', 3000);
    assert.ok(authed.at - back.at >= 500, `authenticated ${authed.at - back.at} ms after connect`);
    assert.deepEqual(streamBetween(s, back.seq, authed.seq).map((i) => i.n), [], 'stream events before authenticated');
    assert.equal(await stream.done, null);
    await settle(s, COUNT, 5000, 300);
    assertStayed(s, back.seq, 'late authentication');
    const c = assertComplete(streamOf(s), 1, COUNT, 'late authentication', s);
    const replayed = streamOf(s).filter((i) => i.seq > authed.seq && i.at - authed.at < 50).length;
    t.diagnostic(`MEASURE late authentication: ${replayed} events within 50 ms of authenticated; ${fmtTally(c)}`);
  });

  itest('a flapping network (5 cuts of 300 ms in 3 s) during a stream: recovered each time, every event exactly once, in order', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-flap';
    const COUNT = 400;
    const s = await readyClient(ctx, proxy.url, user);
    const stream = startStream(ctx.url, [user], { count: COUNT, intervalMs: 10 });
    for (let k = 0; k < 5; k++) {
      await sleep(300);
      proxy.cut();
      await waitForEntry(s, 'disconnect', 3000);
      await sleep(300);
      proxy.restore();
      await waitForEntry(s, 'connect', 5000);
      await waitForEntry(s, 'authenticated', 5000);
    }
    assert.equal(await stream.done, null);
    await settle(s, COUNT, 5000, 300);
    const c = tally(streamOf(s), 1, COUNT);
    t.diagnostic(`MEASURE flapping: ${s.connects.length} connects, recovered ${JSON.stringify(s.connects.map((x) => x.recovered))}; ${fmtTally(c)}`);
    assert.deepEqual(s.connects.map((x) => x.recovered), [false, true, true, true, true, true], `timeline: ${timeline(s)}`);
    assert.ok(s.connects.every((x) => x.pid === s.connects[0].pid && x.id === s.connects[0].id), 'one pid and sid throughout');
    assertComplete(streamOf(s), 1, COUNT, 'flapping network', s);
  });

  itest('the network drops again in the middle of a replay: the next recovery resumes from the last event the client processed', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, REC_ENV);
    const user = 'rc-mid-replay';
    const s = await readyClient(ctx, proxy.url, user);
    await emitAndSee(s, ctx.url, user, 1, 5);
    await cutNow(proxy, s);
    await emitRange(ctx.url, user, 6, 405);
    // The next connection carries 8 KB from the server (the upgrade, the
    // CONNECT reply, authenticated and some of the replay), then drops.
    proxy.limitDown(8000);
    proxy.restore();
    const back1 = await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[1].recovered, true);
    await waitForEntry(s, 'disconnect', 5000);
    const offsetAtCut = s._lastOffset;
    const part = streamOf(s).filter((i) => i.seq > back1.seq);
    const gotBeforeSecondCut = part.length;
    const cutAtN = part.length ? part[part.length - 1].n : null;
    assert.ok(gotBeforeSecondCut > 0 && gotBeforeSecondCut < 400, `the replay was cut in the middle (${gotBeforeSecondCut} of 400 processed)`);
    await emitRange(ctx.url, user, 406, 415);
    proxy.restore();
    const back2 = await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[2].recovered, true, `recovered again (connects ${JSON.stringify(s.connects)})`);
    await settle(s, 415, 5000, 300);
    t.diagnostic(`MEASURE replay cut after event ${cutAtN}: ${gotBeforeSecondCut} replayed events processed before the second cut (offset ${offsetAtCut}); ${fmtTally(tally(streamOf(s), 1, 415))}`);
    assertStayed(s, back2.seq, 'after the second recovery');
    assertComplete(streamOf(s), 1, 415, 'replay interrupted', s);
  });

  itest("the old connection still open on the server (a real network loss: the server has not noticed) when the client recovers: live delivery, presence and stats stay right once the server reaps the old one", { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, { ...REC_ENV, PING_INTERVAL: '1s', PING_TIMEOUT: '1s' });
    const user = 'rc-half-open';
    const s = await readyClient(ctx, proxy.url, user);
    await emitAndSee(s, ctx.url, user, 1, 5);

    proxy.cut({ halfOpen: true });
    await waitForEntry(s, 'disconnect', 3000);
    await emitRange(ctx.url, user, 6, 15); // the server still writes them to the old connection
    await sleep(200);
    const presenceWhileBoth = (await ctx.api(`/api/v1/users/${user}/presence`)).body;
    proxy.restore();
    const back = await waitForEntry(s, 'connect', 5000);
    const second = s.connects[1];
    t.diagnostic(`recovery with the old connection still open: recovered=${second.recovered}, same sid=${second.id === s.connects[0].id}; presence before: ${JSON.stringify(presenceWhileBoth)}`);
    assert.equal(second.recovered, true, `recovered (connects ${JSON.stringify(s.connects)})`);
    await waitForEntry(s, 'authenticated', 5000);
    await eventually(() => streamOf(s).length >= 15, { timeout: 3000 }).catch(() => {});

    // The server reaps the old connection (no pong: PING_INTERVAL + PING_TIMEOUT = 2 s).
    await eventually(() => proxy.lingering.size === 0, { timeout: 6000, interval: 100, message: 'the server closes the old connection' });
    const reapedAt = Date.now();
    await sleep(300);
    await emitRange(ctx.url, user, 16, 20);
    await settle(s, 20, 3000, 300);
    const presence = (await ctx.api(`/api/v1/users/${user}/presence`)).body;
    const stats = (await ctx.api('/api/v1/stats')).body;
    const health = (await ctx.api('/health', { key: null })).body;
    t.diagnostic(`after the reap (${Date.now() - reapedAt} ms): presence ${JSON.stringify(presence)}, stats ${JSON.stringify(stats)}, health websocket ${JSON.stringify(health?.services?.websocket)}`);
    assertStayed(s, back.seq, 'after the recovery');
    assertComplete(streamOf(s), 1, 20, 'across the half-open cut and the reap of the old connection', s);
    assert.deepEqual(presence, { userId: user, connected: true, connections: 1 }, 'presence once the old connection is gone');
    assert.equal(stats.totalConnections, 1, `stats: ${JSON.stringify(stats)}`);
    assert.equal(stats.authenticatedUsers, 1, `stats: ${JSON.stringify(stats)}`);
    assert.deepEqual(health.services.websocket, { status: health.services.websocket.status, connections: 1, authenticatedUsers: 1 }, 'health');
  });

  itest('a server restart (memory history gone): the client reconnects to the new process with recovered=false, a new pid and sid, and works', { timeout: 30_000 }, async (t) => {
    const a = await setup(t, REC_ENV);
    const user = 'rc-restart';
    const s = await readyClient(a, a.url, user);
    await emitAndSee(s, a.url, user, 1, 10);
    const first = s.connects[0];
    assert.equal(typeof s._lastOffset, 'string', 'the client holds an offset to send back');

    const exit = await a.stop();
    assert.equal(exit.code, 0, `first server exit: ${JSON.stringify(exit)}`);
    assert.equal((await waitForEntry(s, 'disconnect', 3000)).args[0], 'transport close');
    const b = await setup(t, { ...REC_ENV, PORT: a.server.port });
    const back = await waitForEntry(s, 'connect', 10_000);
    const second = s.connects[1];
    assert.equal(second.recovered, false, `recovered after a restart (connects ${JSON.stringify(s.connects)})`);
    assert.equal(typeof second.pid, 'string', 'a new pid');
    assert.notEqual(second.pid, first.pid, 'a new pid');
    assert.notEqual(second.id, first.id, 'a new sid');
    const authed = await waitForEntry(s, 'authenticated', 5000);
    await emitRange(b.url, user, 11, 15);
    await settle(s, 15, 3000, 200);
    assertStayed(s, back.seq, 'after the restart');
    assertComplete(streamOf(s), 1, 15, 'before and after the restart', s);
    assert.ok(streamOf(s).filter((i) => i.seq > back.seq).every((i) => i.seq > authed.seq));
    assert.doesNotMatch(b.server.output(), /panic/i, 'new server log');
    t.diagnostic(`restart: reconnected ${back.at - s.connects[0].at} ms after the first connect; recovered=${second.recovered}`);
  });

  itest('RECOVERY_WINDOW=1s: a 200 ms cut recovers, a 2 s cut does not (recovered=false, the missed events are not sent, live ones are)', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, { RECOVERY_WINDOW: '1s', ...LOG_ENV });
    const user = 'rc-window';
    const COUNT = 200;
    const INTERVAL = 20;
    const s = await readyClient(ctx, proxy.url, user);
    const stream = startStream(ctx.url, [user], { count: COUNT, intervalMs: INTERVAL });

    // Control: 200 ms, within the window.
    await sleep(400);
    await cutFor(proxy, s, 200);
    await waitForEntry(s, 'connect', 5000);
    await waitForEntry(s, 'authenticated', 5000);
    assert.equal(s.connects[1].recovered, true, `a 200 ms cut with RECOVERY_WINDOW=1s recovers (connects ${JSON.stringify(s.connects)})`);

    // 2 s: beyond it.
    await sleep(500);
    const cutAt = Date.now();
    const disc = await cutNow(proxy, s);
    const lastBefore = Math.max(0, ...streamOf(s).map((i) => i.n));
    await sleep(2000 - (Date.now() - cutAt));
    proxy.restore();
    const back = await waitForEntry(s, 'connect', 5000);
    const third = s.connects[2];
    assert.equal(third.recovered, false, `a 2 s cut with RECOVERY_WINDOW=1s (connects ${JSON.stringify(s.connects)})`);
    assert.notEqual(third.pid, s.connects[0].pid, 'a new pid');
    assert.notEqual(third.id, s.connects[0].id, 'a new sid');
    const authed = await waitForEntry(s, 'authenticated', 5000);
    assert.equal(await stream.done, null);
    await sleep(300);

    assertStayed(s, back.seq, 'after the 2 s cut');
    const items = streamOf(s);
    const beforeCut = items.filter((i) => i.seq < disc.seq);
    assertComplete(beforeCut, 1, lastBefore, 'up to the 2 s cut (across the 300 ms one)', s);
    const after = items.filter((i) => i.seq > back.seq);
    const em = stream.emitted[user];
    // Emitted while the client was surely away (after its disconnect, before it was connected again): never sent.
    const away = range(lastBefore + 1, COUNT).filter((n) => em[n].start > disc.at && em[n].end < back.at);
    const leaked = after.filter((i) => away.includes(i.n));
    assert.deepEqual(leaked.map((i) => i.n), [], 'events missed during the 2 s cut must not be replayed to a fresh session');
    // Emitted after the client saw authenticated: all delivered, in order, once.
    const live = range(lastBefore + 1, COUNT).filter((n) => em[n].start > authed.at);
    assert.ok(live.length > 0, 'the stream went on after the fresh authentication');
    assertComplete(after.filter((i) => i.n >= live[0]), live[0], COUNT, 'live events after the fresh session', s);
    assert.ok(after.every((i) => i.seq > authed.seq), 'nothing before authenticated');
    t.diagnostic(`MEASURE window 1s, cut 2000 ms: recovered=${third.recovered}; ${away.length} events emitted while away, ${leaked.length} of them sent; ${live.length} live after authentication`);
  });

  itest('HISTORY_MAX_LEN=20: 10 missed events are recovered, 60 are beyond the history (recovered=false, none of them sent)', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, { ...REC_ENV, HISTORY_MAX_LEN: '20' });
    const user = 'rc-trim';
    const s = await readyClient(ctx, proxy.url, user);
    await emitAndSee(s, ctx.url, user, 1, 5);

    await cutNow(proxy, s);
    await emitRange(ctx.url, user, 6, 15);
    proxy.restore();
    await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[1].recovered, true, `10 missed of a history of 20 (connects ${JSON.stringify(s.connects)})`);
    await waitForEntry(s, 'authenticated', 5000);
    await settle(s, 15, 3000, 200);
    assertComplete(streamOf(s), 1, 15, '10 missed', s);

    const disc = await cutNow(proxy, s);
    await emitRange(ctx.url, user, 16, 75);
    proxy.restore();
    await waitForEntry(s, 'connect', 5000);
    const third = s.connects[2];
    assert.equal(third.recovered, false, `60 missed, history of 20 (connects ${JSON.stringify(s.connects)})`);
    const authed = await waitForEntry(s, 'authenticated', 5000);
    await sleep(400);
    assert.deepEqual(streamOf(s).filter((i) => i.seq > disc.seq).map((i) => i.n), [], 'events of the lost span sent to a fresh session');
    await emitRange(ctx.url, user, 76, 80);
    await settle(s, 20, 3000, 200);
    assertComplete(streamOf(s).filter((i) => i.seq > authed.seq), 76, 80, 'live after the fresh session', s);

    // The fresh session's pid recovers in turn.
    await cutNow(proxy, s);
    await emitRange(ctx.url, user, 81, 90);
    proxy.restore();
    const back = await waitForEntry(s, 'connect', 5000);
    const fourth = s.connects[3];
    assert.equal(fourth.recovered, true, `the fresh session recovers (connects ${JSON.stringify(s.connects)})`);
    assert.deepEqual([fourth.pid, fourth.id], [third.pid, third.id], "the fresh session's pid and sid");
    await waitForEntry(s, 'authenticated', 5000);
    await settle(s, 30, 3000, 200);
    assertStayed(s, back.seq, 'second recovery');
    assertComplete(streamOf(s).filter((i) => i.seq > authed.seq), 76, 90, 'after the fresh session, across one more cut', s);
  });

  // (A pid the server never issued with a valid offset is not in this list:
  // the contract keys recovery on the offset; the replay still waits for the
  // authentication of that offset's user.)
  itest('the history trimmed between CONNECT and authentication (HISTORY_MAX_LEN=20, 60 events during a 500 ms authentication delay): no partial replay, the client ends on a fresh session', { timeout: 30_000 }, async (t) => {
    const { ctx, proxy } = await setupWithProxy(t, { ...REC_ENV, HISTORY_MAX_LEN: '20' });
    const user = 'rc-trim-late';
    const s = await readyClient(ctx, proxy.url, user, { authDelay: (k) => (k === 2 ? 500 : 0) });
    await emitAndSee(s, ctx.url, user, 1, 5);
    const disc = await cutNow(proxy, s);
    await emitRange(ctx.url, user, 6, 10);
    proxy.restore();
    await waitForEntry(s, 'connect', 5000);
    assert.equal(s.connects[1].recovered, true, 'offset 5 is still in the history at CONNECT');
    await emitRange(ctx.url, user, 11, 70); // offset 5 leaves the history before authenticate is sent
    // However the server resolves it, the client must end connected on a fresh session.
    await eventually(() => s.connected && s.connects[s.connects.length - 1].recovered === false && received(s, 'authenticated').length >= 2, {
      timeout: 8000,
      message: () => `a fresh, authenticated session; timeline: ${timeline(s)}`,
    });
    const lastConnect = received(s, 'connect').pop();
    await sleep(300);
    await emitRange(ctx.url, user, 71, 75);
    await eventually(() => streamOf(s).filter((i) => i.n >= 71).length >= 5, { timeout: 3000 }).catch(() => {});
    await sleep(200);
    t.diagnostic(`MEASURE trimmed before authentication: ${s.connects.length} connects, recovered ${JSON.stringify(s.connects.map((c) => c.recovered))}; timeline: ${timeline(s)}`);
    const after = streamOf(s).filter((i) => i.seq > disc.seq);
    const partial = after.filter((i) => i.n <= 70);
    assert.deepEqual(partial.map((i) => i.n), [], `events of the span that could not be replayed in full: ${timeline(s)}`);
    assertStayed(s, lastConnect.seq, 'the fresh session');
    assertComplete(after, 71, 75, 'live after the fresh session', s);
    assert.ok(s.connects.length <= 4, `no reconnect loop: ${s.connects.length} connects`);
  });

  itest('an unknown, forged or malformed offset gives a fresh session (recovered=false), and the server keeps serving', { timeout: 30_000 }, async (t) => {
    const ctx = await setup(t, REC_ENV);
    const user = 'rc-unknown';
    const a = await readyClient(ctx, ctx.url, user);
    await emitAndSee(a, ctx.url, user, 1, 3);
    const pid = a._pid;
    const offset = a._lastOffset;
    assert.equal(typeof offset, 'string');
    a.close();

    // A same-length offset that was never issued: one character in its middle changed.
    const mid = Math.floor(offset.length / 2);
    const ch = offset[mid];
    const swapped = /[0-9]/.test(ch) ? String((Number(ch) + 5) % 10) : ch === 'z' ? 'a' : String.fromCharCode(ch.charCodeAt(0) + 1);
    const mutated = offset.slice(0, mid) + swapped + offset.slice(mid + 1);
    const cases = [
      ['garbage offset', pid, 'not-an-offset'],
      ['offset never issued (one character changed)', pid, mutated],
      ['offset with a suffix', pid, `${offset}0`],
      ['empty offset', pid, ''],
    ];
    let k = 3;
    for (const [label, p, o] of cases) {
      const s = guideClient(ctx, ctx.url, user, { io: { autoConnect: false } });
      s._pid = p;
      s._lastOffset = o;
      s.connect();
      await waitFor(s, 'connect', 5000);
      assert.equal(s.connects[0].recovered, false, `${label}: recovered (pid ${p}, offset ${JSON.stringify(o)})`);
      assert.equal(typeof s._pid, 'string', `${label}: a pid`);
      assert.notEqual(s._pid, p, `${label}: a new pid`);
      await waitFor(s, 'authenticated', 5000);
      k++;
      await emitRange(ctx.url, user, k, k);
      const e = await waitForEntry(s, 'tick', 3000);
      assert.equal(e.args[0].n, k, `${label}: only live events (${history(s)})`);
      assert.equal(typeof e.args[1], 'string');
      s.close();
    }

    // Not strings at all, straight in the CONNECT auth.
    for (const auth of [{ pid: 123, offset: { x: 1 } }, { pid: null, offset: null }, { pid: ['a'], offset: 7 }]) {
      const s = guideClient(ctx, ctx.url, user, { io: { auth } });
      await waitFor(s, 'connect', 5000);
      assert.equal(s.connects[0].recovered, false, `CONNECT auth ${JSON.stringify(auth)}`);
      await waitFor(s, 'authenticated', 5000);
      s.close();
    }
    assert.equal((await ctx.api('/health')).status, 200);
    assert.doesNotMatch(ctx.server.output(), /panic/i);
  });

  itest('log out and in as another user on the same socket (the client sends the first user\'s pid and offset): none of the first user\'s events reach it', { timeout: 30_000 }, async (t) => {
    const ctx = await setup(t, REC_ENV);
    const alice = 'rc-alice';
    const bob = 'rc-bob';
    // Tab of alice; after the logout it is bob's (token of bob from the 2nd connect on).
    const s = await readyClient(ctx, ctx.url, alice, { tokenFor: (k) => (k === 1 ? makeToken(alice, `${alice}@example.com`) : makeToken(bob, `${bob}@example.com`)) });
    await emitAndSee(s, ctx.url, alice, 1, 5);
    const pid = s._pid;

    s.disconnect(); // logout
    await waitForEntry(s, 'disconnect', 3000);
    await emitRange(ctx.url, alice, 6, 15); // alice's, while the socket is away
    s.connect(); // bob logs in on the same socket: the client sends alice's pid and last offset
    const back = await waitForEntry(s, 'connect', 5000);
    t.diagnostic(`the client sent pid ${pid}; recovered=${s.connects[1].recovered}`);
    const next = await Promise.race([
      waitForEntry(s, 'authenticated', 3000).then((e) => ({ ok: e })),
      waitForEntry(s, 'auth_error', 3000).then((e) => ({ err: e })),
    ]).catch((err) => ({ none: err }));
    await emitRange(ctx.url, alice, 16, 20); // alice's live events: not for bob
    await sleep(500);
    const leaked = streamOf(s).filter((i) => i.seq > back.seq);
    assert.deepEqual(leaked.map((i) => i.n), [], `alice's events reached the socket that authenticated as bob: ${history(s)}`);
    t.diagnostic(`timeline: ${timeline(s)}`);
    if (next.ok) {
      assert.deepEqual(next.ok.args[0], { userId: bob, email: `${bob}@example.com` }, 'authenticated as bob');
      assert.equal((await ctx.api('/api/v1/emit', { body: { userId: bob, event: 'for_bob', data: 1 } })).status, 202);
      assert.equal((await waitForEntry(s, 'for_bob', 3000)).args[0], 1);
      assertStayed(s, back.seq, "bob's session");
    } else {
      t.diagnostic(`bob on alice's pid: ${next.err ? `auth_error ${JSON.stringify(next.err.args[0])}` : next.none.message}`);
    }
  });
});
