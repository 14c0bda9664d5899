'use strict';

// SIGKILL of a node holding connections: the survivors drop it from the
// cluster figures within 15 s and keep delivering.

const assert = require('node:assert/strict');
const { isDeepStrictEqual } = require('node:util');
const { describe } = require('node:test');
const {
  useCluster,
  itest,
  waitFor,
  waitForEntry,
  expectNoEvent,
  received,
  history,
  eventually,
  expectedCluster,
  sortedCluster,
  report,
  sleep,
} = require('./cluster');

const cluster = useCluster();

const CONVERGE_LIMIT_MS = 15_000;
const POLL_MS = 250;

/** pollCluster from killedAt for CONVERGE_LIMIT_MS (one more poll's worth): {took, last}. */
async function awaitConvergence(ids, expected, killedAt) {
  const { ms, last } = await cluster.pollCluster(expected, { targets: ids, since: killedAt, limit: CONVERGE_LIMIT_MS + POLL_MS, interval: POLL_MS });
  return { took: ms, last };
}

describe('SIGKILL of a node', () => {
  itest(cluster, 'survivors drop the killed node from /health cluster within 15 s, totals equal the live connections, delivery goes on', { timeout: 45_000 }, async (t) => {
    // dead-1: two tabs on n3 only. mixed: n1 and n3. s1 on n1, s2 on n2.
    const dead1a = await cluster.authed('n3', 'fo-dead');
    const dead1b = await cluster.authed('n3', 'fo-dead');
    const mixed1 = await cluster.authed('n1', 'fo-mixed');
    const mixed3 = await cluster.authed('n3', 'fo-mixed');
    const s1 = await cluster.authed('n1', 'fo-s1');
    const s2 = await cluster.authed('n2', 'fo-s2');
    const before = [
      ['n3', 'fo-dead'],
      ['n3', 'fo-dead'],
      ['n1', 'fo-mixed'],
      ['n3', 'fo-mixed'],
      ['n1', 'fo-s1'],
      ['n2', 'fo-s2'],
    ];
    await cluster.expectCluster(expectedCluster(['n1', 'n2', 'n3'], before));

    const killedAt = Date.now();
    await cluster.killNode('n3');
    const alive = [
      ['n1', 'fo-mixed'],
      ['n1', 'fo-s1'],
      ['n2', 'fo-s2'],
    ];
    const expected = expectedCluster(['n1', 'n2'], alive);

    // Clients of n3 lose their transport.
    for (const s of [dead1a, dead1b, mixed3]) {
      assert.equal((await waitForEntry(s, 'disconnect', 3000)).args[0], 'transport close', history(s));
    }

    // Poll every survivor every 250 ms until its cluster equals the truth.
    const { took, last } = await awaitConvergence(() => ['n1', 'n2'], expected, killedAt);
    report(t, `SIGKILL n3 → survivors' /health cluster converged in ${took === null ? `NOT within ${CONVERGE_LIMIT_MS} ms` : `${took} ms`}`);
    assert.ok(
      took !== null && took <= CONVERGE_LIMIT_MS,
      `survivors' /health cluster did not converge to ${JSON.stringify(expected)} within ${CONVERGE_LIMIT_MS} ms; last: ${JSON.stringify(last)}`,
    );
    for (const id of ['n1', 'n2']) {
      const stats = await cluster.api(id, '/api/v1/stats');
      assert.deepEqual(sortedCluster(stats.body), expected, `GET /api/v1/stats on ${id}`);
    }

    // Presence follows the dead node's connections.
    for (const id of ['n1', 'n2']) {
      for (const [user, n] of [
        ['fo-dead', 0],
        ['fo-mixed', 1],
        ['fo-s2', 1],
      ]) {
        const want = { userId: user, connected: n > 0, connections: n };
        let last;
        await eventually(
          async () => {
            last = (await cluster.api(id, `/api/v1/users/${user}/presence`)).body;
            return isDeepStrictEqual(last, want);
          },
          { message: () => `presence of ${user} on ${id} == ${JSON.stringify(want)} (got ${JSON.stringify(last)})`, timeout: 2000 },
        );
      }
    }

    // Users on the other nodes keep receiving, from either survivor.
    assert.equal((await cluster.emit('n1', 'fo-s2', 'after_kill', { to: 's2' })).status, 202);
    assert.deepEqual(await waitFor(s2, 'after_kill'), { to: 's2' });
    assert.equal((await cluster.emit('n2', 'fo-s1', 'after_kill', { to: 's1' })).status, 202);
    assert.deepEqual(await waitFor(s1, 'after_kill'), { to: 's1' });
    assert.equal((await cluster.emit('n2', 'fo-mixed', 'after_kill', { to: 'mixed' })).status, 202);
    assert.deepEqual(await waitFor(mixed1, 'after_kill'), { to: 'mixed' });
    await expectNoEvent(mixed1, 'after_kill', 300);
    // An emit to a user whose only node died is accepted and harms nobody.
    const res = await cluster.emit('n1', 'fo-dead', 'into_the_void', 1);
    assert.equal(res.status, 202, res.text);
    await sleep(200);
    for (const s of [s1, s2, mixed1]) assert.equal(received(s, 'into_the_void').length, 0);
  });

  itest(cluster, 'the killed node, started again on its port, rejoins the cluster rows and delivers', { timeout: 30_000 }, async () => {
    if (cluster.node('n3').handle.exitInfo === null) await cluster.killNode('n3');
    const started = Date.now();
    await cluster.startNode('n3');
    await cluster.expectCluster(cluster.expectedNow(), { timeout: 5000 });
    const back = await cluster.authed('n3', 'fo-back');
    assert.equal((await cluster.emit('n1', 'fo-back', 'welcome_back', { ms: Date.now() - started })).status, 202);
    assert.equal(typeof (await waitFor(back, 'welcome_back')).ms, 'number');
    assert.ok(cluster.livePairs().some(([n, u]) => n === 'n3' && u === 'fo-back'));
    await cluster.expectCluster(cluster.expectedNow());
  });

  itest(cluster, 'a node SIGKILLed and restarted at once under the same NODE_ID: its dead connections leave the figures within 15 s', { timeout: 45_000 }, async (t) => {
    await cluster.ensureAllNodes();
    const gone = [await cluster.authed('n2', 'fo-quick'), await cluster.authed('n2', 'fo-quick'), await cluster.authed('n2', 'fo-quick-2')];
    const stay = await cluster.authed('n1', 'fo-quick');
    await cluster.expectCluster(cluster.expectedNow());

    const killedAt = Date.now();
    await cluster.killNode('n2');
    await cluster.startNode('n2');
    const restartedIn = Date.now() - killedAt;
    for (const s of gone) assert.equal((await waitForEntry(s, 'disconnect', 3000)).args[0], 'transport close', history(s));
    const expected = cluster.expectedNow();
    assert.equal(expected.nodes.find((r) => r.nodeId === 'n2').connections, 0);

    const { took, last } = await awaitConvergence(() => cluster.liveNodeIds(), expected, killedAt);
    report(t, `SIGKILL n2 + restart (ready after ${restartedIn} ms) → /health cluster dropped the dead connections in ${took === null ? `NOT within ${CONVERGE_LIMIT_MS} ms` : `${took} ms`}`);
    assert.ok(
      took !== null && took <= CONVERGE_LIMIT_MS,
      `figures did not converge to ${JSON.stringify(expected)} within ${CONVERGE_LIMIT_MS} ms; last: ${JSON.stringify(last)}`,
    );
    for (const id of cluster.liveNodeIds()) {
      const r = await cluster.api(id, '/api/v1/users/fo-quick/presence');
      assert.deepEqual(r.body, { userId: 'fo-quick', connected: true, connections: 1 }, `presence of fo-quick on ${id}`);
    }
    const back = await cluster.authed('n2', 'fo-quick');
    assert.equal((await cluster.emit('n3', 'fo-quick', 'both', 1)).status, 202);
    assert.equal(await waitFor(stay, 'both'), 1);
    assert.equal(await waitFor(back, 'both'), 1);
  });
});
