'use strict';

// Origin checks on the WebSocket upgrade.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { setup, itest, waitFor, expectNoEvent, history, received, makeToken } = require('./helpers');

async function expectRefused(ctx, origin, opts = {}) {
  const s = ctx.connect({ extraHeaders: { origin }, ...opts });
  const err = await waitFor(s, 'connect_error');
  assert.ok(err instanceof Error, `connect_error for origin ${origin}`);
  await expectNoEvent(s, 'connect', 200);
  assert.equal(s.connected, false);
  return s;
}

async function expectAccepted(ctx, origin) {
  const s = ctx.connect({ extraHeaders: { origin } });
  await waitFor(s, 'connect');
  assert.equal(received(s, 'connect_error').length, 0, history(s));
  s.emit('authenticate', { token: makeToken('origin-user', 'o@example.com') });
  assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'origin-user', email: 'o@example.com' });
  return s;
}

describe('Origin of the WebSocket upgrade', () => {
  itest('Origin http://evil.example (not in FRONTEND_URL) → connect_error, no connect', async (t) => {
    const ctx = await setup(t);
    await expectRefused(ctx, 'http://evil.example');
    const h = await ctx.api('/health', { key: null });
    assert.equal(h.body?.services?.websocket?.connections, 0, `refused upgrade must not count: ${h.text}`);
  });

  itest("refused origin also with the guide's transports ['websocket','polling'] → connect_error", async (t) => {
    const ctx = await setup(t);
    await expectRefused(ctx, 'http://evil.example', { transports: ['websocket', 'polling'] });
  });

  itest('Origin http://localhost:5173 (FRONTEND_URL) → connects and authenticates', async (t) => {
    const ctx = await setup(t);
    await expectAccepted(ctx, 'http://localhost:5173');
  });

  itest('no Origin header (plain Node client) → connects', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
  });

  const lookalikes = [
    'http://localhost:5174', // other port
    'https://localhost:5173', // other scheme
    'http://localhost', // no port
    'http://localhost:5173.evil.example', // suffix trick
    'http://evil.localhost:5173', // subdomain
    'null', // sandboxed iframe / file://
  ];
  for (const origin of lookalikes) {
    itest(`look-alike origin ${origin} → connect_error`, async (t) => {
      const ctx = await setup(t);
      await expectRefused(ctx, origin);
    });
  }

  itest('FRONTEND_URL with a comma list: each listed origin connects, others are refused', async (t) => {
    const ctx = await setup(t, { FRONTEND_URL: 'http://localhost:5173,https://app.example.com' });
    await expectAccepted(ctx, 'http://localhost:5173');
    await expectAccepted(ctx, 'https://app.example.com');
    await expectRefused(ctx, 'http://app.example.com');
    await expectRefused(ctx, 'http://evil.example');
  });

  itest('the server keeps serving after refusing an origin', async (t) => {
    const ctx = await setup(t);
    await expectRefused(ctx, 'http://evil.example');
    await expectRefused(ctx, 'http://evil.example');
    await expectAccepted(ctx, 'http://localhost:5173');
  });
});
