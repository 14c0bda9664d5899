'use strict';

// Graceful drain: SIGTERM on a node closes its transports (clients see
// "transport close" and reconnect elsewhere) and the node leaves the cluster
// figures at once, not after the 15 s a crashed node may take.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const {
  NODE_IDS,
  useCluster,
  itest,
  makeToken,
  waitFor,
  waitForEntry,
  history,
  expectedCluster,
  eventually,
  report,
} = require('./cluster');

const cluster = useCluster();

const LEAVE_LIMIT_MS = 3_000; // "at once": far below the 15 s of a crash

/** Which node holds exactly the one connection made since `before` (per-node websocket.connections). */
async function whereIsNewConnection(before) {
  const now = {};
  for (const id of cluster.liveNodeIds()) now[id] = (await cluster.healthOk(id)).services.websocket.connections;
  const grew = Object.keys(now).filter((id) => now[id] === (before[id] ?? 0) + 1);
  assert.equal(grew.length, 1, `exactly one node gained a connection: before ${JSON.stringify(before)}, now ${JSON.stringify(now)}`);
  return grew[0];
}

async function connectionsPerNode() {
  const out = {};
  for (const id of cluster.liveNodeIds()) out[id] = (await cluster.healthOk(id)).services.websocket.connections;
  return out;
}

describe('graceful drain (SIGTERM)', () => {
  itest(cluster, 'a client through nginx with the guide\'s reconnect-and-authenticate code survives the drain of its node', { timeout: 40_000 }, async () => {
    const before = await connectionsPerNode();
    const token = makeToken('dr-roamer');
    const s = cluster.connect('nginx', { label: 'roamer', reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500, timeout: 3000 });
    // The guide's client: authenticate on every (re)connect.
    s.on('connect', () => s.emit('authenticate', { token }));
    await waitFor(s, 'connect', 5000);
    await waitFor(s, 'authenticated', 5000);
    const home = await whereIsNewConnection(before);

    const exit = cluster.termNode(home);
    assert.equal((await waitForEntry(s, 'disconnect', 5000)).args[0], 'transport close', history(s));
    const info = await exit;
    assert.deepEqual({ code: info.code, signal: info.signal }, { code: 0, signal: null }, `${home} exit after SIGTERM`);

    await waitFor(s, 'connect', 10_000);
    assert.deepEqual(await waitFor(s, 'authenticated', 5000), { userId: 'dr-roamer', email: 'dr-roamer@example.com' });
    const survivor = cluster.liveNodeIds()[0];
    assert.equal((await cluster.emit(survivor, 'dr-roamer', 'found_you', { home })).status, 202);
    assert.deepEqual(await waitFor(s, 'found_you'), { home });
    s.close();

    // Bring the drained node back for the next test.
    await cluster.startNode(home);
    await cluster.expectCluster(cluster.expectedNow(), { timeout: 5000 });
  });

  itest(cluster, 'SIGTERM n3: its clients get "transport close", it leaves the cluster rows at once, the rest keeps delivering', { timeout: 40_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const d1 = await cluster.authed('n3', 'dr-gone');
    const d2 = await cluster.authed('n3', 'dr-gone');
    const m3 = await cluster.authed('n3', 'dr-mixed');
    const m1 = await cluster.authed('n1', 'dr-mixed');
    const e = await cluster.authed('n1', 'dr-e');
    const f = await cluster.authed('n2', 'dr-f');
    const anon = cluster.connect('n3', { label: 'anon' });
    await waitFor(anon, 'connect');
    assert.deepEqual(NODE_IDS, cluster.liveNodeIds());
    await cluster.expectCluster(cluster.expectedNow());

    const t0 = Date.now();
    const exit = cluster.termNode('n3');
    const expected = expectedCluster(['n1', 'n2'], [
      ['n1', 'dr-mixed'],
      ['n1', 'dr-e'],
      ['n2', 'dr-f'],
    ]);
    const leave = await cluster.pollCluster(expected, { targets: ['n1', 'n2'], since: t0, limit: LEAVE_LIMIT_MS, interval: 50 });
    report(t, `SIGTERM n3 → survivors' /health cluster without n3 and with the right totals in ${leave.ms === null ? `NOT within ${LEAVE_LIMIT_MS} ms` : `${leave.ms} ms`}`);

    for (const [name, sock] of Object.entries({ d1, d2, m3, anon })) {
      const d = await waitForEntry(sock, 'disconnect', 5000);
      assert.equal(d.args[0], 'transport close', `${name}: ${history(sock)}`);
    }
    const info = await exit;
    report(t, `SIGTERM n3 → process exited ${Date.now() - t0} ms after the signal (code ${info.code}, signal ${info.signal})`);
    assert.deepEqual({ code: info.code, signal: info.signal }, { code: 0, signal: null }, 'n3 exit after SIGTERM');
    assert.ok(leave.ms !== null, `n3 not gone from the survivors' cluster rows within ${LEAVE_LIMIT_MS} ms: expected ${JSON.stringify(expected)}; last ${JSON.stringify(leave.last)}`);

    // Survivors keep delivering, across nodes.
    assert.equal((await cluster.emit('n2', 'dr-e', 'after_drain', 'e')).status, 202);
    assert.equal(await waitFor(e, 'after_drain'), 'e');
    assert.equal((await cluster.emit('n1', 'dr-f', 'after_drain', 'f')).status, 202);
    assert.equal(await waitFor(f, 'after_drain'), 'f');
    assert.equal((await cluster.emit('n2', 'dr-mixed', 'after_drain', 'm')).status, 202);
    assert.equal(await waitFor(m1, 'after_drain'), 'm');
    for (const id of ['n1', 'n2']) {
      await eventually(
        async () => {
          const r = await cluster.api(id, '/api/v1/users/dr-gone/presence');
          return r.body?.connected === false && r.body?.connections === 0;
        },
        { message: `presence of dr-gone on ${id} == 0 after the drain`, timeout: 1000 },
      );
    }
  });
});
