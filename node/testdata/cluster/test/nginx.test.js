'use strict';

// Through real nginx with charts/nginx/hubnode.conf, whose upstream hashes
// the client address (`hash $remote_addr consistent`, the affinity HTTP
// long-polling needs): clients from different addresses spread over the
// nodes, every client of one address lands on one node, and each receives
// its own events wherever the emit is posted. Clients here look like
// different machines by connecting from distinct loopback addresses
// (127.0.0.2, 127.0.0.3, …: cluster.connect's `from`).

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const {
  NODE_IDS,
  useCluster,
  itest,
  waitFor,
  received,
  history,
  namesSince,
  sleep,
  eventually,
  newSourceAddress,
} = require('./cluster');

const cluster = useCluster();

describe('through nginx', () => {
  itest(cluster, '12 clients from 12 addresses through nginx spread over the nodes, each on the node its address maps to', async (t) => {
    const N = 12;
    const sockets = [];
    const home = []; // the node nginx sends each client's address to
    for (let i = 0; i < N; i++) {
      const from = newSourceAddress();
      home.push(await cluster.nodeFor(from));
      sockets.push(await cluster.authed('nginx', `ngx-${i}`, undefined, { from }));
    }

    const perNode = await cluster.connectionsPerNode();
    t.diagnostic(`connections per node after ${N} clients from ${N} addresses through nginx: ${JSON.stringify(perNode)}`);
    // Affinity: each client is on the node its address maps to.
    const expected = Object.fromEntries(NODE_IDS.map((id) => [id, home.filter((h) => h === id).length]));
    assert.deepEqual(perNode, expected, `connections per node vs the nodes the 12 addresses map to (${JSON.stringify(home)})`);
    // Spread: the addresses do not all map to one node (12 of them over 3
    // nodes; the hash ring depends on the run's ports, so all three is likely,
    // not certain).
    const used = NODE_IDS.filter((id) => perNode[id] > 0);
    assert.ok(used.length >= 2, `clients spread over at least 2 nodes: ${JSON.stringify(perNode)}`);
    assert.equal(Object.values(perNode).reduce((a, b) => a + b, 0), N, `connections per node sum to ${N}: ${JSON.stringify(perNode)}`);

    // Cluster rows agree with each node's own count (every socket here is authenticated, one per user).
    await cluster.expectCluster({
      totalConnections: N,
      authenticatedUsers: N,
      averageConnectionsPerUser: 1,
      nodes: NODE_IDS.map((id) => ({ nodeId: id, connections: perNode[id], authenticatedUsers: perNode[id] })),
    });

    // Every user gets one event, posted on a node chosen round robin (or nginx).
    const sources = [...NODE_IDS, 'nginx'];
    for (let i = 0; i < N; i++) {
      const res = await cluster.emit(sources[i % sources.length], `ngx-${i}`, 'own_event', { i, to: `ngx-${i}` });
      assert.equal(res.status, 202, res.text);
    }
    for (let i = 0; i < N; i++) assert.deepEqual(await waitFor(sockets[i], 'own_event'), { i, to: `ngx-${i}` });
    await sleep(300);
    for (let i = 0; i < N; i++) {
      assert.deepEqual(namesSince(sockets[i], 0), ['authenticated', 'own_event'], `ngx-${i}: ${history(sockets[i])}`);
      assert.equal(received(sockets[i], 'own_event').length, 1);
    }
    for (const s of sockets) s.close();
    await eventually(async () => (await cluster.clusterOf('n2')).totalConnections === 0, { message: 'cluster empty again' });
  });

  itest(cluster, 'a user with tabs on several devices (addresses) through nginx receives each event once per tab', async () => {
    const tabs = [];
    for (let i = 0; i < 6; i++) tabs.push(await cluster.authed('nginx', 'ngx-tabs', undefined, { from: newSourceAddress() }));
    const perNode = await cluster.connectionsPerNode();
    assert.ok(Object.values(perNode).filter((v) => v > 0).length >= 2, `tabs spread over nodes: ${JSON.stringify(perNode)}`);
    for (let k = 0; k < 3; k++) {
      const res = await cluster.api('nginx', '/api/v1/users/ngx-tabs/events/unread_count_update', {
        body: { unreadCounts: { whatsapp: k }, totalUnread: k },
      });
      assert.equal(res.status, 202, res.text);
    }
    for (const s of tabs) for (let k = 0; k < 3; k++) assert.equal((await waitFor(s, 'unread_count_update')).totalUnread, k);
    await sleep(300);
    for (const s of tabs) assert.equal(received(s, 'unread_count_update').length, 3, history(s));
    const pres = await cluster.api('nginx', '/api/v1/users/ngx-tabs/presence');
    assert.deepEqual(pres.body, { userId: 'ngx-tabs', connected: true, connections: 6 });
    for (const s of tabs) s.close();
  });

  itest(cluster, 'affinity: every connection and request from one address lands on the same node', async () => {
    const a = newSourceAddress();
    const b = newSourceAddress();
    const homeA = await cluster.nodeFor(a);
    for (let i = 0; i < 5; i++) assert.equal(await cluster.nodeFor(a), homeA, `request ${i} from ${a}`);
    const before = await cluster.connectionsPerNode();
    const sockets = [];
    for (let i = 0; i < 4; i++) sockets.push(await cluster.authed('nginx', 'ngx-same-addr', undefined, { from: a }));
    const after = await cluster.connectionsPerNode();
    const grown = Object.fromEntries(NODE_IDS.map((id) => [id, after[id] - before[id]]));
    assert.deepEqual(
      grown,
      Object.fromEntries(NODE_IDS.map((id) => [id, id === homeA ? 4 : 0])),
      `4 clients from ${a} all on ${homeA}: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`,
    );
    // Another address is as sticky (whichever node it maps to).
    const homeB = await cluster.nodeFor(b);
    const sb = await cluster.authed('nginx', 'ngx-other-addr', undefined, { from: b });
    assert.equal((await cluster.connectionsPerNode())[homeB], after[homeB] + 1, `the client from ${b} is on ${homeB}`);
    assert.equal((await cluster.emit('n1', 'ngx-same-addr', 'sticky', 1)).status, 202);
    for (const s of sockets) assert.equal(await waitFor(s, 'sticky'), 1);
    for (const s of [...sockets, sb]) s.close();
    await eventually(async () => (await cluster.clusterOf('n1')).totalConnections === 0, { message: 'cluster empty again' });
  });

  itest(cluster, 'the HTTP API and /health answer through nginx with cluster-wide figures', async () => {
    const a = await cluster.authed('n1', 'ngx-api-a');
    const b = await cluster.authed('n3', 'ngx-api-b');
    await eventually(async () => (await cluster.api('nginx', '/api/v1/stats')).body?.totalConnections === 2, {
      message: 'stats through nginx totalConnections == 2',
    });
    for (let i = 0; i < 3; i++) {
      const h = await cluster.health('nginx');
      assert.equal(h.status, 200, h.text);
      assert.equal(h.body.services.redis, 'connected');
      assert.equal(h.body.cluster.totalConnections, 2, h.text);
      assert.equal(h.body.cluster.nodes.length, 3, h.text);
    }
    a.close();
    b.close();
  });
});
