'use strict';

// Through real nginx with charts/nginx/hubnode.conf (round robin, no
// affinity): WebSocket clients spread over the nodes and each receives its
// own events wherever the emit is posted.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { NODE_IDS, useCluster, itest, waitFor, received, history, namesSince, sleep, eventually } = require('./cluster');

const cluster = useCluster();

describe('through nginx', () => {
  itest(cluster, '12 clients through nginx spread over the three nodes and each receives only its own events', async (t) => {
    const N = 12;
    const sockets = [];
    for (let i = 0; i < N; i++) sockets.push(await cluster.authed('nginx', `ngx-${i}`));

    const perNode = {};
    for (const id of NODE_IDS) perNode[id] = (await cluster.healthOk(id)).services.websocket.connections;
    t.diagnostic(`connections per node after ${N} clients through nginx: ${JSON.stringify(perNode)}`);
    for (const id of NODE_IDS) assert.ok(perNode[id] > 0, `${id} holds no connection: ${JSON.stringify(perNode)}`);
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

  itest(cluster, 'a user with several tabs through nginx receives each event once per tab', async () => {
    const tabs = [];
    for (let i = 0; i < 6; i++) tabs.push(await cluster.authed('nginx', 'ngx-tabs'));
    const perNode = {};
    for (const id of NODE_IDS) perNode[id] = (await cluster.healthOk(id)).services.websocket.connections;
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
