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
const net = require('node:net');
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

// HUBNODE_LOG_LEVEL=debug (for instance) raises the nodes' log level of this file.
const cluster = useCluster({
  env: { RECOVERY_WINDOW: '2m', ...(process.env.HUBNODE_LOG_LEVEL ? { LOG_LEVEL: process.env.HUBNODE_LOG_LEVEL } : {}) },
});

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, timeout: 3000 };
const STREAM_EVENTS = new Set(['tick', 'unread_count_update']);

// ---------------------------------------------------------------------------
// TCP proxy: one client's network, in front of nginx

class TcpProxy {
  /** localAddress: the source address of its connections to the target (what nginx hashes). */
  constructor(targetPort, localAddress) {
    this.targetPort = targetPort;
    this.localAddress = localAddress;
    this.pairs = new Set();
    this.lingering = new Set();
    this.refusing = false;
    this.refused = 0;
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
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort, localAddress: this.localAddress });
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      if (!this.pairs.has(pair)) return; // cut() took care of it
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /**
   * The network drops: every carried connection is destroyed, new ones are
   * refused. Both sides by default (the server sees the close at once);
   * with halfOpen only the client's side: the side towards nginx stays open
   * and silent until dropLingering(), as after a real network loss the
   * server notices late.
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
        upstream.on('data', () => {}); // lost
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

async function startProxy(t, localAddress) {
  const proxy = await new TcpProxy(cluster.nginx.port, localAddress).start();
  t.after(() => proxy.close());
  return proxy;
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
  const emitted = Object.fromEntries(users.map((u) => [u, []]));
  const one = async (u) => {
    const t0 = Date.now();
    for (let n = 1; n <= count; n++) {
      const wait = t0 + (n - 1) * intervalMs - Date.now();
      if (wait > 0) await sleep(wait);
      const start = Date.now();
      const res =
        typedEvery && n % typedEvery === 0
          ? await cluster.api(target, `/api/v1/users/${encodeURIComponent(u)}/events/unread_count_update`, {
              body: { unreadCounts: { stream: n }, totalUnread: n },
            })
          : await cluster.emit(target, u, 'tick', { n, u });
      if (res.status !== 202) throw new Error(`emit ${n} to ${u} on ${target}: HTTP ${res.status} ${res.text}`);
      emitted[u][n] = { start, end: Date.now() };
    }
  };
  const done = Promise.all(users.map(one)).then(
    () => null,
    (err) => err,
  );
  return { done, emitted };
}

function numberOf(entry) {
  const d = entry.args[0];
  return entry.event === 'tick' ? d?.n : d?.totalUnread;
}

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

/** The socket's connection story (connects, disconnects, authenticated, runs of stream events), for failure messages. */
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
    if (e.event === 'connect') what = `connect(recovered=${socket.connects?.[connects++]?.recovered})`;
    else if (e.event === 'disconnect' || e.event === 'connect_error') what = `${e.event}(${e.args[0] instanceof Error ? e.args[0].message : e.args[0]})`;
    out.push(`+${e.at - t0}ms ${what}`);
  }
  flush();
  return out.join(', ');
}

function fmtTally(c) {
  return `${c.received}/${c.expected} received, lost ${c.lost}, duplicated ${c.duplicated}, out of order ${c.outOfOrder}`;
}

/** Asserts exactly from..to in order, each event [payload, non-empty string offset], offsets distinct. */
function assertComplete(socket, items, from, to, label) {
  const c = tally(items, from, to);
  assert.deepEqual(
    { lost: c.lost, duplicated: c.duplicated, outOfOrder: c.outOfOrder, extra: c.extra },
    { lost: 0, duplicated: 0, outOfOrder: 0, extra: [] },
    `${label}: delivery ${JSON.stringify(c)}; timeline: ${timeline(socket)}`,
  );
  assert.deepEqual(items.map((i) => i.n), range(from, to), `${label}: the sequence`);
  const offsets = new Set();
  for (const i of items) {
    assert.equal(i.args.length, 2, `${label}: event ${i.n} (${i.event}) must carry [payload, offset], got ${JSON.stringify(i.args)}`);
    assert.equal(typeof i.args[1], 'string', `${label}: offset of event ${i.n}: ${JSON.stringify(i.args)}`);
    assert.ok(i.args[1].length > 0, `${label}: offset of event ${i.n} is empty`);
    offsets.add(i.args[1]);
  }
  assert.equal(offsets.size, items.length, `${label}: offsets are not distinct`);
  return c;
}

/** Asserts no disconnect or connect on the socket after record index from. */
function assertStayed(socket, from, label) {
  const after = received(socket).filter((e) => e.seq > from && ['disconnect', 'connect'].includes(e.event));
  assert.deepEqual(after.map((e) => `${e.event}(${e.args[0] ?? ''})`), [], `${label}: the connection must hold after the recovery; timeline: ${timeline(socket)}`);
}

/** The recovery counters of node id's /metrics, as one line. */
async function recoveryMetrics(id) {
  try {
    const res = await cluster.api(id, '/metrics', { key: null });
    return res.text
      .split('\n')
      .filter((l) => /^hubnode_(recoveries_total|replayed_total|slow_consumers_total)/.test(l))
      .join('; ');
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
 * The recovery of one client after a cut: waits for its next connect and
 * authenticated; returns {back, authed, c (its connects record)}.
 */
async function nextSession(s, timeout = 10_000) {
  const back = await waitForEntry(s, 'connect', timeout);
  const authed = await waitForEntry(s, 'authenticated', 5000);
  return { back, authed, c: s.connects[s.connects.length - 1] };
}

/**
 * The node failure scenario: three clients (three users) through nginx on
 * one node, a stream to another node, and `fail(victim)` 1 s into it.
 */
async function nodeFailure(t, label, fail, { exclude = [] } = {}) {
  await cluster.ensureAllNodes();
  const COUNT = 300;
  const { node: victim, addrs } = await addressesOnOneNode(3, exclude);
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

  const stream = startStream(streamNode, users, { count: COUNT, intervalMs: 10 });
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
  await eventually(() => clients.every((s) => streamOf(s).length >= COUNT), { timeout: 8000 }).catch(() => {});
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
  for (const l of lines) report(t, `${label} of ${victim} (stream posted to ${streamNode}): ${l}`);
  const metrics = [];
  for (const id of cluster.liveNodeIds()) metrics.push(`${id}: ${await recoveryMetrics(id)}`);
  report(t, `${label}: ${metrics.join(' | ')}`);

  clients.forEach((s, i) => {
    const { back, c } = sessions[i];
    assert.notEqual(landed[i], victim, `${users[i]} landed on another node`);
    assert.equal(c.recovered, true, `${users[i]}: socket.recovered after the ${label} (connects ${JSON.stringify(s.connects)}); timeline: ${timeline(s)}`);
    assert.deepEqual([c.pid, c.id], [s.connects[0].pid, s.connects[0].id], `${users[i]}: the same pid and sid`);
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

    const proxyA = await startProxy(t, addrA);
    const proxyB = await startProxy(t, addrB);
    const users = ['rcc-drop-stay', 'rcc-drop-move'];
    const a = guideClient(proxyA.url, users[0]);
    const b = guideClient(proxyB.url, users[1]);
    for (const s of [a, b]) {
      await waitFor(s, 'connect', 5000);
      await waitFor(s, 'authenticated', 5000);
    }
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
    const proxyA = await startProxy(t, addrA);
    const proxyB = await startProxy(t, addrB);
    const users = ['rcc-half-stay', 'rcc-half-move'];
    const a = guideClient(proxyA.url, users[0]);
    const b = guideClient(proxyB.url, users[1]);
    for (const s of [a, b]) {
      await waitFor(s, 'connect', 5000);
      await waitFor(s, 'authenticated', 5000);
    }
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

  itest(cluster, 'events from @socket.io/redis-emitter carry no offset and are not replayed; the API events around them are', { timeout: 30_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const client = await cluster.redisClient();
    const emitter = new Emitter(client);
    const user = 'rcc-emitter';
    const addr = newSourceAddress();
    const home = await cluster.nodeFor(addr);
    const other = NODE_IDS.find((n) => n !== home);
    const proxy = await startProxy(t, addr);
    const s = guideClient(proxy.url, user);
    await waitFor(s, 'connect', 5000);
    await waitFor(s, 'authenticated', 5000);

    emitter.to(`user:${user}`).emit('from_emitter', { k: 1 });
    const e1 = await waitForEntry(s, 'from_emitter', 3000);
    assert.deepEqual(e1.args, [{ k: 1 }], 'an emitter event carries no offset');
    assert.equal((await cluster.emit(other, user, 'tick', { n: 1, u: user })).status, 202);
    await eventually(() => streamOf(s).length >= 1, { timeout: 3000 });

    proxy.cut();
    const disc = await waitForEntry(s, 'disconnect', 3000);
    emitter.to(`user:${user}`).emit('from_emitter', { k: 2 });
    assert.equal((await cluster.emit(other, user, 'tick', { n: 2, u: user })).status, 202);
    emitter.to(`user:${user}`).emit('from_emitter', { k: 3 });
    assert.equal((await cluster.emit(other, user, 'tick', { n: 3, u: user })).status, 202);
    await sleep(200);
    proxy.restore();
    const { back, c } = await nextSession(s);
    assert.equal(c.recovered, true, `recovered (connects ${JSON.stringify(s.connects)})`);
    await eventually(() => streamOf(s).length >= 3, { timeout: 3000 }).catch(() => {});
    emitter.to(`user:${user}`).emit('from_emitter', { k: 4 });
    const e4 = await waitForEntry(s, 'from_emitter', 3000);
    await sleep(300);
    assert.deepEqual(e4.args, [{ k: 4 }], 'a live emitter event after the recovery');
    assert.deepEqual(
      received(s, 'from_emitter').filter((e) => e.seq > disc.seq).map((e) => e.args[0].k),
      [4],
      `emitter events while away are not in the history (not replayed); timeline: ${timeline(s)}`,
    );
    assertStayed(s, back.seq, user);
    assertComplete(s, streamOf(s), 1, 3, 'API events around the emitter events');
    s.close();
  });
});
