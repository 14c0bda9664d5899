'use strict';

// Connection-state recovery in a cluster: three nodes, the history in Redis,
// real nginx in front (charts/nginx/hubnode.conf: `hash $remote_addr
// consistent`). Clients are the guide's (socket.io-client ≥ 4.6 recovers on
// its own: reconnection on, `authenticate {token}` on every `connect`) and
// connect through nginx from distinct loopback addresses (cluster.connect's
// `from`), so nginx's hash places them. A steady stream of numbered events
// is posted to a node that stays up, while:
//   - the node holding the clients is SIGKILLed, or drained with SIGTERM:
//     the clients reconnect through nginx to another node and recover there;
//   - a client's network drops for 2 s (a TCP proxy in front of nginx for
//     that client): it recovers on the same node, or, when it comes back
//     from another address, on another node.
// Each client must end with the complete sequence: lost 0, duplicated 0, in
// order, every event with its string offset, socket.recovered true.
//
// The nodes run with RECOVERY_WINDOW=2m here (the other files of the suite
// run with RECOVERY_WINDOW=0, cluster.js).

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { Emitter } = require('@socket.io/redis-emitter');
const {
  NODE_IDS,
  useCluster,
  itest,
  makeToken,
  waitFor,
  waitForEntry,
  received,
  eventually,
  newSourceAddress,
  report,
  sleep,
} = require('./cluster');
const common = require('../../jslib/common');

const { runStream, typedStreamBody, streamOf, range, tally, fmtTally, timeline, metricLines } = common;

// HUBNODE_LOG_LEVEL=debug (for instance) raises the nodes' log level of this file.
const cluster = useCluster({
  env: { RECOVERY_WINDOW: '2m', ...(process.env.HUBNODE_LOG_LEVEL ? { LOG_LEVEL: process.env.HUBNODE_LOG_LEVEL } : {}) },
});

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, timeout: 3000 };

// ---------------------------------------------------------------------------
// TCP proxy (../../jslib/common.js): one client's network, in front of nginx

/** A proxy to nginx whose connections come from localAddress (what nginx hashes). */
function startProxy(t, localAddress) {
  return common.startProxy(t, cluster.nginx.port, { localAddress });
}

// ---------------------------------------------------------------------------
// Clients, streams, tallies

/**
 * A guide client (tracked, closed by the cluster's after hook) to target
 * ('nginx', a node id or a base URL): on every `connect` it emits
 * `authenticate {token}`. opts.from: its source address. Every connect is
 * logged in socket.connects as {at, recovered, pid, id}.
 */
function guideClient(target, userId, opts = {}) {
  const token = makeToken(userId);
  const s = cluster.connect(target, { ...RECONNECT, label: userId, ...(opts.from ? { from: opts.from } : {}) });
  s.connects = [];
  s.on('connect', () => {
    s.connects.push({ at: Date.now(), recovered: s.recovered, pid: s._pid, id: s.id });
    s.emit('authenticate', { token });
  });
  return s;
}

/**
 * Emits numbered events 1..count to each user, one every intervalMs per
 * user, to node target's HTTP API: `tick {n, u}` through POST /api/v1/emit
 * and every typedEvery-th through the typed `unread_count_update` endpoint
 * (totalUnread = n). Each user's emits are sequential. Returns {done,
 * emitted}: done resolves null or the first error; emitted[user][n] =
 * {start, end}.
 */
function startStream(target, users, { count, intervalMs = 10, typedEvery = 5 } = {}) {
  return runStream(
    users,
    { count, intervalMs, typedEvery },
    (u, n, typed) =>
      typed
        ? cluster.api(target, `/api/v1/users/${encodeURIComponent(u)}/events/unread_count_update`, { body: typedStreamBody(n) })
        : cluster.emit(target, u, 'tick', { n, u }),
    ` on ${target}`,
  );
}

// numberOf, streamOf, range, tally, fmtTally and timeline: ../../jslib/common.js.

/** Asserts exactly from..to in order, each event [payload, non-empty string offset], offsets distinct. */
function assertComplete(socket, items, from, to, label) {
  return common.assertComplete(items, from, to, label, socket);
}

/** Asserts no disconnect or connect on the socket after record index from. */
function assertStayed(socket, from, label) {
  common.assertStayed(socket, from, label, 'after the recovery');
}

/** The recovery counters of node id's /metrics, as one line. */
async function recoveryMetrics(id) {
  try {
    const res = await cluster.api(id, '/metrics', { key: null });
    return metricLines(res.text, /^hubnode_(recoveries_total|replayed_total|slow_consumers_total|emitter_[a-z_]+_total)/);
  } catch (err) {
    return `(metrics: ${err.message})`;
  }
}

/**
 * count fresh source addresses that nginx sends to one node (not in
 * exclude): {node, addrs}.
 */
async function addressesOnOneNode(count, exclude = []) {
  const buckets = {};
  for (let i = 0; i < 100; i++) {
    const a = newSourceAddress();
    const n = await cluster.nodeFor(a);
    if (exclude.includes(n)) continue;
    (buckets[n] ||= []).push(a);
    if (buckets[n].length === count) return { node: n, addrs: buckets[n] };
  }
  throw new Error(`no ${count} addresses on one node within 100 tries: ${JSON.stringify(buckets)}`);
}

/**
 * Two guide clients, users[0] and users[1], each behind its own proxy to
 * nginx (from addrs[0], addrs[1]), once both connected and authenticated:
 * {proxyA, proxyB, a, b}.
 */
async function twoBehindProxies(t, addrs, users) {
  const proxyA = await startProxy(t, addrs[0]);
  const proxyB = await startProxy(t, addrs[1]);
  const a = guideClient(proxyA.url, users[0]);
  const b = guideClient(proxyB.url, users[1]);
  for (const s of [a, b]) {
    await waitFor(s, 'connect', 5000);
    await waitFor(s, 'authenticated', 5000);
  }
  return { proxyA, proxyB, a, b };
}

/**
 * The recovery of one client after a cut: waits for its next connect and
 * authenticated; returns {back, authed, c (its connects record)}.
 */
async function nextSession(s, timeout = 10_000) {
  const back = await waitForEntry(s, 'connect', timeout);
  const authed = await waitForEntry(s, 'authenticated', 5000);
  return { back, authed, c: s.connects[s.connects.length - 1] };
}

/** count fresh source addresses that nginx sends to node. */
async function addressesOn(node, count) {
  const addrs = [];
  for (let i = 0; i < 200 && addrs.length < count; i++) {
    const a = newSourceAddress();
    if ((await cluster.nodeFor(a)) === node) addrs.push(a);
  }
  if (addrs.length < count) throw new Error(`no ${count} addresses on ${node} within 200 tries`);
  return addrs;
}

/**
 * The node that records @socket.io/redis-emitter's events (the one whose
 * hubnode_emitter_recorded_total grows when the emitter emits).
 */
async function findRecorder(emitter) {
  const counts = async () => {
    const out = {};
    for (const id of cluster.liveNodeIds()) {
      const res = await cluster.api(id, '/metrics', { key: null });
      out[id] = Number(/^hubnode_emitter_recorded_total (\d+)/m.exec(res.text)?.[1] ?? 0);
    }
    return out;
  };
  let rec = null;
  await eventually(
    async () => {
      const before = await counts();
      emitter.to('user:rcc-recorder-probe').emit('probe', {});
      await sleep(100);
      const after = await counts();
      rec = Object.keys(after).find((id) => after[id] > before[id]) ?? null;
      return rec !== null;
    },
    { timeout: 10_000, interval: 100, message: 'a node recording emitter events' },
  );
  return rec;
}

/** The stream of startStream, published by @socket.io/redis-emitter. */
function startEmitterStream(emitter, users, { count, intervalMs = 10 } = {}) {
  return runStream(
    users,
    { count, intervalMs, typedEvery: 0 },
    async (u, n) => {
      emitter.to(`user:${u}`).emit('tick', { n, u });
      return { status: 202 };
    },
    ' through the emitter',
  );
}

/**
 * The node failure scenario: three clients (three users) through nginx on
 * one node, a stream to another node, and `fail(victim)` 1 s into it.
 * opts.emitter: the stream comes from @socket.io/redis-emitter instead, and
 * the victim is opts.victim.
 */
async function nodeFailure(t, label, fail, { exclude = [], emitter = null, victim: chosen = null } = {}) {
  await cluster.ensureAllNodes();
  const COUNT = 300;
  const { node: victim, addrs } = chosen ? { node: chosen, addrs: await addressesOn(chosen, 3) } : await addressesOnOneNode(3, exclude);
  const streamNode = NODE_IDS.find((n) => n !== victim);
  const users = addrs.map((_, i) => `rcc-${label}-${i}`);
  const before = await cluster.connectionsPerNode();
  const clients = users.map((u, i) => guideClient('nginx', u, { from: addrs[i] }));
  for (const s of clients) {
    await waitFor(s, 'connect', 5000);
    await waitFor(s, 'authenticated', 5000);
    assert.equal(s.connects[0].recovered, false);
    assert.equal(typeof s._pid, 'string', 'a pid in the CONNECT reply');
  }
  const after = await cluster.connectionsPerNode();
  assert.equal(after[victim] - (before[victim] || 0), 3, `the 3 clients are on ${victim}: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);

  const stream = emitter ? startEmitterStream(emitter, users, { count: COUNT }) : startStream(streamNode, users, { count: COUNT, intervalMs: 10 });
  await sleep(1000);
  const failAt = Date.now();
  const failed = fail(victim);
  const discs = [];
  for (const s of clients) {
    const d = await waitForEntry(s, 'disconnect', 5000);
    assert.equal(d.args[0], 'transport close', `${s.hubLabel}: ${timeline(s)}`);
    discs.push(d);
  }
  const sessions = [];
  for (const s of clients) sessions.push(await nextSession(s));
  await failed;
  const landed = [];
  for (const a of addrs) landed.push(await cluster.nodeFor(a));

  const err = await stream.done;
  assert.equal(err, null, `stream: ${err?.message}`);
  // Emitter events: the standby recorder takes over up to ~4 s after a SIGKILL.
  await eventually(() => clients.every((s) => streamOf(s).length >= COUNT), { timeout: emitter ? 12_000 : 8000 }).catch(() => {});
  await sleep(300);

  const lines = clients.map((s, i) => {
    const { back, authed, c } = sessions[i];
    const em = stream.emitted[users[i]];
    const away = range(1, COUNT).filter((n) => em[n].end >= discs[i].at && em[n].start < back.at);
    const lastAway = away.length ? away[away.length - 1] : null;
    const got = streamOf(s).find((x) => x.n === lastAway && x.seq > authed.seq);
    const tl = tally(streamOf(s), 1, COUNT);
    return (
      `${users[i]} (${addrs[i]}): disconnected ${discs[i].at - failAt} ms after the ${label}, connected again ${back.at - discs[i].at} ms later ` +
      `on ${landed[i]} (${s.connects.length - 1} reconnects), recovered=${c.recovered}; ${away.length} events emitted while away, ` +
      `the last of them received ${got ? `${got.at - back.at} ms` : 'NEVER'} after connect; ${fmtTally(tl)}`
    );
  });
  for (const l of lines) report(t, `${label} of ${victim} (stream ${emitter ? 'from the emitter' : `posted to ${streamNode}`}): ${l}`);
  const metrics = [];
  for (const id of cluster.liveNodeIds()) metrics.push(`${id}: ${await recoveryMetrics(id)}`);
  report(t, `${label}: ${metrics.join(' | ')}`);

  clients.forEach((s, i) => {
    const { back, c } = sessions[i];
    assert.notEqual(landed[i], victim, `${users[i]} landed on another node`);
    assert.equal(c.recovered, true, `${users[i]}: socket.recovered after the ${label} (connects ${JSON.stringify(s.connects)}); timeline: ${timeline(s)}`);
    assert.deepEqual([c.pid, c.id], [s.connects[0].pid, s.connects[0].id], `${users[i]}: the same pid and sid`);
    // The emitter events held on the new node while the standby takes over
    // go out in one burst (up to ~400 per user at this rate), above
    // WRITE_QUEUE: the node holds them back and writes them as the client
    // reads, so the connection stays.
    assertStayed(s, back.seq, users[i]);
    assertComplete(s, streamOf(s), 1, COUNT, `${users[i]} across the ${label}`);
  });

  // The figures once the failed node's connections are gone from them (at
  // once after a drain, within ~11 s after a SIGKILL): the recovered
  // sockets (which kept their sids) are counted, once each.
  const t0 = Date.now();
  let rows;
  await eventually(
    async () => {
      rows = await cluster.clusterOf(streamNode);
      return !rows.nodes.some((r) => r.nodeId === victim);
    },
    { timeout: 15_000, interval: 250, message: () => `${victim} gone from the cluster rows (last ${JSON.stringify(rows)})` },
  );
  await sleep(1500); // a late cleanup of the failed node's rows would show now
  const presence = [];
  for (const u of users) presence.push((await cluster.api(streamNode, `/api/v1/users/${u}/presence`)).body);
  const local = await cluster.connectionsPerNode();
  const figures = await cluster.clusterOf(streamNode);
  report(t, `${label}: ${victim} left the cluster rows ${Date.now() - t0 - 1500} ms after the clients recovered; then presence ${JSON.stringify(presence.map((p) => p?.connections))}, cluster ${JSON.stringify(figures)}, local connections ${JSON.stringify(local)}`);
  users.forEach((u, i) => assert.deepEqual(presence[i], { userId: u, connected: true, connections: 1 }, `presence of ${u} after the ${label} and its recovery on ${landed[i]}`));
  assert.equal(figures.totalConnections, 3, `cluster totalConnections after the ${label}: ${JSON.stringify(figures)} (local connections ${JSON.stringify(local)})`);
  assert.equal(figures.authenticatedUsers, 3, `cluster authenticatedUsers after the ${label}: ${JSON.stringify(figures)}`);
  for (const r of figures.nodes) assert.equal(r.connections, local[r.nodeId], `row of ${r.nodeId} vs its own count: ${JSON.stringify(figures)}, local ${JSON.stringify(local)}`);

  for (const s of clients) s.close();
  return victim;
}

// ---------------------------------------------------------------------------

describe('connection-state recovery in a cluster (history in Redis, nginx in front)', () => {
  let killed = null;

  itest(cluster, 'SIGKILL of the node holding 3 clients during a stream: they reconnect through nginx to another node and recover every event, in order, once', { timeout: 60_000 }, async (t) => {
    killed = await nodeFailure(t, 'SIGKILL', (victim) => cluster.killNode(victim));
    await cluster.startNode(killed);
  });

  itest(cluster, 'SIGTERM drain of the node holding 3 clients during a stream: same, and the node exits 0', { timeout: 60_000 }, async (t) => {
    // Not the node nginx may still count as failed (fail_timeout) from the SIGKILL.
    await nodeFailure(
      t,
      'SIGTERM',
      async (victim) => {
        const info = await cluster.termNode(victim);
        assert.deepEqual({ code: info.code, signal: info.signal }, { code: 0, signal: null }, `${victim} exit after SIGTERM`);
      },
      { exclude: killed ? [killed] : [] },
    );
    await cluster.ensureAllNodes();
  });

  itest(cluster, 'SIGKILL of the node that records the emitter, holding 3 clients, during a stream from @socket.io/redis-emitter: the standby takes over, every event recovered in order, once, with offsets', { timeout: 60_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const client = await cluster.redisClient();
    const emitter = new Emitter(client);
    const recorder = await findRecorder(emitter);
    const victim = await nodeFailure(t, 'SIGKILL', (v) => cluster.killNode(v), { emitter, victim: recorder });
    report(t, `the emitter's recorder was ${recorder}; after the SIGKILL it is ${await findRecorder(emitter)}`);
    await cluster.startNode(victim);
  });

  itest(cluster, "a client's network drops for 2 s (TCP proxy in front of nginx): it recovers on its node; one that comes back from another address recovers on another node", { timeout: 60_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const COUNT = 300;
    const addrA = newSourceAddress();
    const homeA = await cluster.nodeFor(addrA);
    const addrB = newSourceAddress();
    const homeB = await cluster.nodeFor(addrB);
    // An address nginx sends to another node than homeB. Right after a node
    // failed, nginx sends nothing to it for its fail_timeout (10 s), and the
    // previous tests stopped two nodes: keep trying that long.
    let addrB2 = null;
    let homeB2 = null;
    const seen = {};
    await eventually(
      async () => {
        const a = newSourceAddress();
        const n = await cluster.nodeFor(a);
        seen[n] = (seen[n] || 0) + 1;
        if (n !== homeB) [addrB2, homeB2] = [a, n];
        return addrB2 !== null;
      },
      { timeout: 15_000, interval: 100, message: () => `an address nginx sends elsewhere than ${homeB} (seen ${JSON.stringify(seen)})` },
    );
    const streamNode = NODE_IDS.find((n) => n !== homeA && n !== homeB) || NODE_IDS.find((n) => n !== homeA);

    const users = ['rcc-drop-stay', 'rcc-drop-move'];
    const { proxyA, proxyB, a, b } = await twoBehindProxies(t, [addrA, addrB], users);
    const stream = startStream(streamNode, users, { count: COUNT, intervalMs: 10 });
    await sleep(600);
    const cutAt = Date.now();
    proxyA.cut();
    proxyB.cut();
    const discs = [await waitForEntry(a, 'disconnect', 3000), await waitForEntry(b, 'disconnect', 3000)];
    await sleep(2000 - (Date.now() - cutAt));
    proxyA.restore();
    proxyB.restore(addrB2); // b's network returns with another address: nginx sends it to homeB2
    const restoredAt = Date.now();
    const sessions = [await nextSession(a), await nextSession(b)];
    assert.equal(await stream.done, null);
    await eventually(() => [a, b].every((s) => streamOf(s).length >= COUNT), { timeout: 8000 }).catch(() => {});
    await sleep(300);

    const where = [`${homeA} → ${homeA}`, `${homeB} → ${homeB2}`];
    [a, b].forEach((s, i) => {
      const { back, authed, c } = sessions[i];
      const em = stream.emitted[users[i]];
      const away = range(1, COUNT).filter((n) => em[n].end >= discs[i].at && em[n].start < back.at);
      const got = streamOf(s).find((x) => x.n === away[away.length - 1] && x.seq > authed.seq);
      report(
        t,
        `network drop 2 s, ${users[i]} (${where[i]}, stream posted to ${streamNode}): connected again ${back.at - restoredAt} ms after the network returned ` +
          `(${s === a ? proxyA.refused : proxyB.refused} attempts refused), recovered=${c.recovered}; ${away.length} events emitted while away, ` +
          `the last received ${got ? `${got.at - back.at} ms` : 'NEVER'} after connect; ${fmtTally(tally(streamOf(s), 1, COUNT))}`,
      );
    });
    [a, b].forEach((s, i) => {
      const { back, c } = sessions[i];
      assert.equal(c.recovered, true, `${users[i]} (${where[i]}): socket.recovered (connects ${JSON.stringify(s.connects)}); timeline: ${timeline(s)}`);
      assert.deepEqual([c.pid, c.id], [s.connects[0].pid, s.connects[0].id], `${users[i]}: the same pid and sid`);
      assertStayed(s, back.seq, users[i]);
      assertComplete(s, streamOf(s), 1, COUNT, `${users[i]} (${where[i]}) across the drop`);
    });
    a.close();
    b.close();
  });

  itest(cluster, 'the old connection still open when the client recovers (on its node, or on another): once it closes, presence and the cluster figures count the recovered socket, and live events flow', { timeout: 60_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const addrA = newSourceAddress();
    const homeA = await cluster.nodeFor(addrA);
    const addrB = newSourceAddress();
    const homeB = await cluster.nodeFor(addrB);
    let addrB2 = null;
    let homeB2 = null;
    await eventually(
      async () => {
        const a = newSourceAddress();
        const n = await cluster.nodeFor(a);
        if (n !== homeB) [addrB2, homeB2] = [a, n];
        return addrB2 !== null;
      },
      { timeout: 15_000, interval: 100, message: `an address nginx sends elsewhere than ${homeB}` },
    );
    const streamNode = NODE_IDS.find((n) => n !== homeA && n !== homeB) || NODE_IDS.find((n) => n !== homeA);
    const users = ['rcc-half-stay', 'rcc-half-move'];
    const { proxyA, proxyB, a, b } = await twoBehindProxies(t, [addrA, addrB], users);
    const emitN = async (from, to) => {
      for (let n = from; n <= to; n++) for (const u of users) assert.equal((await cluster.emit(streamNode, u, 'tick', { n, u })).status, 202);
    };
    await emitN(1, 5);
    await eventually(() => [a, b].every((s) => streamOf(s).length >= 5), { timeout: 3000 });

    proxyA.cut({ halfOpen: true });
    proxyB.cut({ halfOpen: true });
    for (const s of [a, b]) await waitForEntry(s, 'disconnect', 3000);
    await emitN(6, 15); // the old connections still get them, and lose them
    proxyA.restore();
    proxyB.restore(addrB2);
    const sessions = [await nextSession(a), await nextSession(b)];
    await eventually(() => [a, b].every((s) => streamOf(s).length >= 15), { timeout: 3000 }).catch(() => {});
    const during = [];
    for (const u of users) during.push((await cluster.api(streamNode, `/api/v1/users/${u}/presence`)).body?.connections);

    // The nodes learn of the loss at last.
    proxyA.dropLingering();
    proxyB.dropLingering();
    await sleep(1500);
    await emitN(16, 20);
    await eventually(() => [a, b].every((s) => streamOf(s).length >= 20), { timeout: 3000 }).catch(() => {});
    await sleep(300);
    const presence = [];
    for (const u of users) presence.push((await cluster.api(streamNode, `/api/v1/users/${u}/presence`)).body);
    const figures = await cluster.clusterOf(streamNode);
    const local = await cluster.connectionsPerNode();
    report(
      t,
      `half-open: ${users[0]} ${homeA} → ${homeA}, ${users[1]} ${homeB} → ${homeB2}; recovered ${JSON.stringify(sessions.map((x) => x.c.recovered))}; ` +
        `presence while both connections were open ${JSON.stringify(during)}; after the old ones closed: presence ${JSON.stringify(presence.map((p) => p?.connections))}, ` +
        `cluster ${JSON.stringify(figures)}, local connections ${JSON.stringify(local)}`,
    );
    [a, b].forEach((s, i) => {
      assert.equal(sessions[i].c.recovered, true, `${users[i]}: recovered; timeline: ${timeline(s)}`);
      assertStayed(s, sessions[i].back.seq, users[i]);
      assertComplete(s, streamOf(s), 1, 20, `${users[i]} across the half-open drop`);
    });
    users.forEach((u, i) => assert.deepEqual(presence[i], { userId: u, connected: true, connections: 1 }, `presence of ${u} once its old connection closed`));
    assert.equal(figures.totalConnections, 2, `cluster totalConnections: ${JSON.stringify(figures)}; local ${JSON.stringify(local)}`);
    for (const r of figures.nodes) assert.equal(r.connections, local[r.nodeId], `row of ${r.nodeId} vs its own count: ${JSON.stringify(figures)}, local ${JSON.stringify(local)}`);
    a.close();
    b.close();
  });

  itest(cluster, 'events from @socket.io/redis-emitter carry offsets and are replayed, interleaved in history order with the API events around them', { timeout: 30_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const client = await cluster.redisClient();
    const emitter = new Emitter(client);
    await findRecorder(emitter);
    const user = 'rcc-emitter';
    const addr = newSourceAddress();
    const home = await cluster.nodeFor(addr);
    const other = NODE_IDS.find((n) => n !== home);
    const proxy = await startProxy(t, addr);
    const s = guideClient(proxy.url, user);
    await waitFor(s, 'connect', 5000);
    await waitFor(s, 'authenticated', 5000);
    const isOffset = (v) => typeof v === 'string' && v.length > 0;

    emitter.to(`user:${user}`).emit('from_emitter', { k: 1 });
    const e1 = await waitForEntry(s, 'from_emitter', 3000);
    assert.deepEqual(e1.args.slice(0, 1), [{ k: 1 }]);
    assert.ok(e1.args.length === 2 && isOffset(e1.args[1]), `an emitter event carries an offset: ${JSON.stringify(e1.args)}`);
    assert.equal((await cluster.emit(other, user, 'tick', { n: 1, u: user })).status, 202);
    await eventually(() => streamOf(s).length >= 1, { timeout: 3000 });

    proxy.cut();
    const disc = await waitForEntry(s, 'disconnect', 3000);
    emitter.to(`user:${user}`).emit('from_emitter', { k: 2 });
    assert.equal((await cluster.emit(other, user, 'tick', { n: 2, u: user })).status, 202);
    emitter.to(`user:${user}`).emit('from_emitter', { k: 3 });
    assert.equal((await cluster.emit(other, user, 'tick', { n: 3, u: user })).status, 202);
    await sleep(300);
    proxy.restore();
    const { back, c } = await nextSession(s);
    assert.equal(c.recovered, true, `recovered (connects ${JSON.stringify(s.connects)})`);
    await eventually(() => streamOf(s).length >= 3, { timeout: 3000 }).catch(() => {});
    emitter.to(`user:${user}`).emit('from_emitter', { k: 4 });
    await eventually(() => received(s, 'from_emitter').some((e) => e.args[0]?.k === 4), { timeout: 3000 });
    await sleep(300);
    const after = received(s).filter((e) => e.seq > disc.seq && (e.event === 'from_emitter' || e.event === 'tick'));
    const labels = after.map((e) => (e.event === 'tick' ? `t${e.args[0].n}` : `e${e.args[0].k}`));
    report(t, `emitter and API events after the cut, as received: ${labels.join(' ')}`);
    // The emitter and the API are two publishers: their events interleave
    // in the order they were recorded (an emitter event is recorded one hop
    // later, by the recorder). Each publisher's own order holds, and the
    // missed events come before the live one.
    assert.deepEqual(labels.filter((l) => l[0] === 'e'), ['e2', 'e3', 'e4'], `emitter events while away replayed, once, in order; timeline: ${timeline(s)}`);
    assert.deepEqual(labels.filter((l) => l[0] === 't'), ['t2', 't3'], `API events while away replayed, once, in order`);
    assert.equal(labels[labels.length - 1], 'e4', 'the live event last');
    const offs = received(s).filter((e) => e.event === 'from_emitter' || e.event === 'tick').map((e) => e.args[e.args.length - 1]);
    assert.ok(offs.every(isOffset), `every event carries an offset: ${JSON.stringify(offs)}`);
    // Offsets are stream ids "<ms>-<seq>" padded to one width: received
    // order is history order.
    assert.deepEqual([...offs].sort(), offs, `offsets increase in the order received: ${JSON.stringify(offs)}`);
    assert.equal(new Set(offs).size, offs.length, 'offsets are distinct');
    assertStayed(s, back.seq, user);
    assertComplete(s, streamOf(s), 1, 3, 'API events around the emitter events');
    s.close();
  });
});
