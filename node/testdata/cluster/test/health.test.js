'use strict';

// Cluster-wide figures: /health on every node, /api/v1/stats and presence.

const assert = require('node:assert/strict');
const { isDeepStrictEqual } = require('node:util');
const { describe } = require('node:test');
const {
  NODE_IDS,
  useCluster,
  itest,
  waitFor,
  waitForEntry,
  eventually,
  expectedCluster,
  sortedCluster,
  assertTimestamp,
} = require('./cluster');

const cluster = useCluster();

// The /health body in cluster mode (exact keys).
const HEALTH_KEYS = ['cluster', 'nodeId', 'services', 'status', 'timestamp'];
const SERVICES_KEYS = ['redis', 'websocket'];
const WEBSOCKET_KEYS = ['authenticatedUsers', 'connections', 'status'];
const CLUSTER_KEYS = ['authenticatedUsers', 'averageConnectionsPerUser', 'nodes', 'totalConnections'];
const ROW_KEYS = ['authenticatedUsers', 'connections', 'nodeId'];
const PRESENCE_KEYS = ['connected', 'connections', 'userId'];

const keys = (o) => Object.keys(o || {}).sort();

/** Waits until node id's own websocket figures are {status:'active', connections, authenticatedUsers}. */
async function expectWebsocket(id, connections, authenticatedUsers) {
  const want = { status: 'active', connections, authenticatedUsers };
  let last;
  await eventually(
    async () => {
      const body = await cluster.healthOk(id);
      last = body.services?.websocket;
      return isDeepStrictEqual(last, want) ? body : false;
    },
    { message: () => `${id} /health services.websocket == ${JSON.stringify(want)} (got ${JSON.stringify(last)})`, timeout: 3000 },
  );
  assert.deepEqual((await cluster.healthOk(id)).services.websocket, want, `${id} services.websocket`);
}

/** Asserts that GET /api/v1/stats on every live node equals that node's /health cluster. */
async function expectStatsEqualCluster(expected) {
  for (const id of cluster.liveNodeIds()) {
    const res = await cluster.api(id, '/api/v1/stats');
    assert.equal(res.status, 200, `GET /api/v1/stats on ${id}: ${res.text}`);
    assert.deepEqual(keys(res.body), CLUSTER_KEYS, `stats keys on ${id}: ${res.text}`);
    assert.deepEqual(sortedCluster(res.body), expected, `GET /api/v1/stats on ${id}`);
    assert.deepEqual(sortedCluster(res.body), await cluster.clusterOf(id), `stats and /health cluster on ${id}`);
  }
}

async function presence(id, userId) {
  const res = await cluster.api(id, `/api/v1/users/${encodeURIComponent(userId)}/presence`);
  assert.equal(res.status, 200, `presence of ${userId} on ${id}: ${res.text}`);
  assert.deepEqual(keys(res.body), PRESENCE_KEYS, `presence keys on ${id}: ${res.text}`);
  return res.body;
}

/** Waits until presence of userId on every live node equals {userId, connected, connections}. */
async function expectPresence(userId, connections) {
  const want = { userId, connected: connections > 0, connections };
  for (const id of cluster.liveNodeIds()) {
    let last;
    await eventually(
      async () => {
        last = await presence(id, userId);
        return isDeepStrictEqual(last, want);
      },
      { message: () => `presence of ${userId} on ${id} == ${JSON.stringify(want)} (got ${JSON.stringify(last)})` },
    );
    assert.deepEqual(await presence(id, userId), want, `presence of ${userId} on ${id}`);
  }
}

describe('/health in cluster mode', () => {
  itest(cluster, 'every node: status ok, its own nodeId, redis connected, websocket 0/0, one cluster row per node', async () => {
    for (const id of NODE_IDS) {
      const body = await cluster.healthOk(id);
      assert.deepEqual(keys(body), HEALTH_KEYS, `${id} /health keys: ${JSON.stringify(body)}`);
      assert.deepEqual(keys(body.services), SERVICES_KEYS, `${id} services keys`);
      assert.deepEqual(keys(body.services.websocket), WEBSOCKET_KEYS, `${id} websocket keys`);
      assert.deepEqual(keys(body.cluster), CLUSTER_KEYS, `${id} cluster keys`);
      for (const row of body.cluster.nodes) assert.deepEqual(keys(row), ROW_KEYS, `${id} cluster row keys: ${JSON.stringify(row)}`);
      assertTimestamp(body.timestamp, `${id} /health timestamp`);
      assert.equal(body.status, 'ok', `${id} status`);
      assert.equal(body.nodeId, id, `${id} nodeId`);
      assert.equal(body.services.redis, 'connected', `${id} services.redis`);
      assert.deepEqual(body.services.websocket, { status: 'active', connections: 0, authenticatedUsers: 0 }, `${id} websocket`);
      assert.deepEqual(sortedCluster(body.cluster), expectedCluster(NODE_IDS, []), `${id} cluster`);
    }
    await expectStatsEqualCluster(expectedCluster(NODE_IDS, []));
  });

  itest(cluster, 'figures count authenticated connections per node and distinct users cluster-wide (5 sockets, 3 users → 1.67)', async () => {
    // A: tabs on n1 and n2; B: n3; C: n1 and n3.
    const placed = [
      ['n1', 'fig-a'],
      ['n2', 'fig-a'],
      ['n3', 'fig-b'],
      ['n1', 'fig-c'],
      ['n3', 'fig-c'],
    ];
    const sockets = [];
    for (const [node, user] of placed) sockets.push(await cluster.authed(node, user));
    const expected = expectedCluster(NODE_IDS, placed);
    assert.deepEqual(expected, {
      totalConnections: 5,
      authenticatedUsers: 3,
      averageConnectionsPerUser: 1.67,
      nodes: [
        { nodeId: 'n1', connections: 2, authenticatedUsers: 2 },
        { nodeId: 'n2', connections: 1, authenticatedUsers: 1 },
        { nodeId: 'n3', connections: 2, authenticatedUsers: 2 },
      ],
    });
    await cluster.expectCluster(expected);
    await expectStatsEqualCluster(expected);
    await expectWebsocket('n1', 2, 2);
    await expectWebsocket('n2', 1, 1);
    await expectWebsocket('n3', 2, 2);

    // Close A's tab on n2 and B: 3 sockets, 2 users (C twice, A once) → 1.5.
    sockets[1].close();
    sockets[2].close();
    const rest = [placed[0], placed[3], placed[4]];
    const expected2 = expectedCluster(NODE_IDS, rest);
    assert.equal(expected2.averageConnectionsPerUser, 1.5);
    await cluster.expectCluster(expected2);
    await expectStatsEqualCluster(expected2);
    await expectWebsocket('n2', 0, 0);
    await expectWebsocket('n3', 1, 1);

    for (const s of [sockets[0], sockets[3], sockets[4]]) s.close();
    await cluster.expectCluster(expectedCluster(NODE_IDS, []));
    await expectStatsEqualCluster(expectedCluster(NODE_IDS, []));
  });

  itest(cluster, 'one user on three nodes counts once in authenticatedUsers (3 connections, 1 user → 3)', async () => {
    const placed = NODE_IDS.map((n) => [n, 'fig-one']);
    const sockets = [];
    for (const [node, user] of placed) sockets.push(await cluster.authed(node, user));
    const expected = expectedCluster(NODE_IDS, placed);
    assert.equal(expected.authenticatedUsers, 1);
    assert.equal(expected.averageConnectionsPerUser, 3);
    await cluster.expectCluster(expected);
    await expectStatsEqualCluster(expected);
    for (const s of sockets) s.close();
    await cluster.expectCluster(expectedCluster(NODE_IDS, []));
  });

  itest(cluster, 'unauthenticated sockets count in the node\'s websocket.connections, not in the cluster totals', async () => {
    const anon = cluster.connect('n2', { label: 'anon' });
    await waitFor(anon, 'connect');
    const a = await cluster.authed('n2', 'fig-auth');
    await expectWebsocket('n2', 2, 1);
    const want = expectedCluster(NODE_IDS, [['n2', 'fig-auth']]);
    // Totals only: the rows' "connections" of a node holding an unauthenticated socket is not pinned here.
    for (const id of NODE_IDS) {
      await eventually(
        async () => {
          const c = await cluster.clusterOf(id);
          return c.totalConnections === 1 && c.authenticatedUsers === 1 && c.averageConnectionsPerUser === 1 ? c : false;
        },
        { message: `${id} cluster totals {1, 1, 1} with one anonymous socket on n2` },
      );
      const c = await cluster.clusterOf(id);
      assert.deepEqual(
        { totalConnections: c.totalConnections, authenticatedUsers: c.authenticatedUsers, averageConnectionsPerUser: c.averageConnectionsPerUser },
        { totalConnections: want.totalConnections, authenticatedUsers: want.authenticatedUsers, averageConnectionsPerUser: want.averageConnectionsPerUser },
        `${id} cluster totals`,
      );
      assert.deepEqual(c.nodes.map((r) => r.nodeId), NODE_IDS, `${id} cluster rows`);
    }
    anon.close();
    a.close();
    await cluster.expectCluster(expectedCluster(NODE_IDS, []));
  });
});

describe('presence is cluster-wide', () => {
  itest(cluster, 'a user with tabs on n1, n2, n3: every node answers connections 3, then 2, then 0', async () => {
    const user = 'pres-everywhere';
    const tabs = [];
    for (const n of NODE_IDS) tabs.push(await cluster.authed(n, user));
    await expectPresence(user, 3);
    tabs[0].close();
    await expectPresence(user, 2);
    tabs[1].close();
    tabs[2].close();
    await expectPresence(user, 0);
  });

  itest(cluster, 'a user on n3 only is present when asked on n1 and n2; an unknown user is absent everywhere', async () => {
    const s = await cluster.authed('n3', 'pres-n3');
    await expectPresence('pres-n3', 1);
    await expectPresence('pres-nobody', 0);
    s.close();
    await expectPresence('pres-n3', 0);
  });

  itest(cluster, 'a user disconnected by the server on another node leaves presence', async () => {
    const s = await cluster.authed('n2', 'pres-kick');
    await expectPresence('pres-kick', 1);
    const res = await cluster.api('n3', '/api/v1/users/pres-kick/disconnect', { method: 'POST' });
    assert.equal(res.status, 202, res.text);
    assert.equal((await waitForEntry(s, 'disconnect')).args[0], 'io server disconnect');
    await expectPresence('pres-kick', 0);
    await cluster.expectCluster(expectedCluster(NODE_IDS, []));
  });
});
