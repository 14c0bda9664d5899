'use strict';

// Health endpoints.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { setup, itest, waitFor, assertTimestamp, eventually, pick, assertExactKeys } = require('./helpers');

// The documented /health body (timestamp checked separately).
const SHAPE = {
  status: 1,
  timestamp: 1,
  nodeId: 1,
  services: { redis: 1, websocket: { status: 1, connections: 1, authenticatedUsers: 1 } },
};

async function health(ctx) {
  const res = await ctx.api('/health', { key: null });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers.get('content-type') || '', /^application\/json/);
  return res.body;
}

describe('health', () => {
  itest('GET /health with no sockets → ok, redis disabled, websocket active with 0/0', async (t) => {
    const ctx = await setup(t, { NODE_ID: 'health-node-1' });
    const body = await health(ctx);
    assertTimestamp(body.timestamp, 'health.timestamp');
    const { timestamp, ...rest } = pick(body, SHAPE);
    assert.deepEqual(rest, {
      status: 'ok',
      nodeId: 'health-node-1',
      services: { redis: 'disabled', websocket: { status: 'active', connections: 0, authenticatedUsers: 0 } },
    });
  });

  itest('GET /health body has exactly the documented keys', async (t) => {
    const ctx = await setup(t);
    await ctx.authed('h-shape');
    const body = await health(ctx);
    assertExactKeys(body, SHAPE, '/health body');
  });

  itest('GET /health counts open sockets and distinct authenticated users', async (t) => {
    const ctx = await setup(t);
    await ctx.authed('h-a');
    await ctx.authed('h-a');
    await ctx.authed('h-b');
    const anon = ctx.connect();
    await waitFor(anon, 'connect');
    const body = await health(ctx);
    assertTimestamp(body.timestamp, 'health.timestamp');
    assert.equal(body.status, 'ok');
    assert.deepEqual(pick(body, SHAPE).services, {
      redis: 'disabled',
      websocket: { status: 'active', connections: 4, authenticatedUsers: 2 },
    });

    anon.close();
    await eventually(async () => (await health(ctx)).services.websocket.connections === 3, {
      message: '/health connections == 3 after closing the unauthenticated socket',
    });
    assert.deepEqual(pick(await health(ctx), SHAPE).services.websocket, { status: 'active', connections: 3, authenticatedUsers: 2 });
  });

  itest('GET /health needs no API key and ignores a wrong one', async (t) => {
    const ctx = await setup(t);
    const res = await ctx.api('/health', { key: 'wrong' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.status, 'ok');
  });

  for (const p of ['/health/live', '/health/ready']) {
    itest(`GET ${p} → 200 without API key`, async (t) => {
      const ctx = await setup(t);
      const res = await ctx.api(p, { key: null });
      assert.equal(res.status, 200, res.text);
    });
  }

  itest('health endpoints answer while started without API_KEY', async (t) => {
    const ctx = await setup(t, { API_KEY: '' });
    for (const p of ['/health', '/health/live', '/health/ready']) {
      const res = await ctx.api(p, { key: null });
      assert.equal(res.status, 200, `${p}: ${res.text}`);
    }
  });
});
