'use strict';

// Graceful shutdown on SIGTERM.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { setup, itest, waitFor, waitForEntry, history } = require('./helpers');

describe('SIGTERM', () => {
  itest('connected clients get disconnect "transport close" and the process exits 0', async (t) => {
    const ctx = await setup(t);
    const a1 = await ctx.authed('sd-a');
    const a2 = await ctx.authed('sd-a');
    const b = await ctx.authed('sd-b');
    const anon = ctx.connect();
    await waitFor(anon, 'connect');

    const started = Date.now();
    const exit = await ctx.stop();
    const took = Date.now() - started;

    for (const [name, s] of Object.entries({ a1, a2, b, anon })) {
      const disc = await waitForEntry(s, 'disconnect', 3000);
      assert.equal(disc.args[0], 'transport close', `${name}: disconnect reason; events: ${history(s)}`);
    }
    assert.deepEqual(
      { code: exit.code, signal: exit.signal },
      { code: 0, signal: null },
      `exit after SIGTERM; output:\n${ctx.server.output()}`,
    );
    assert.ok(took < 5000, `shutdown took ${took} ms (SIGKILL fallback hit?)`);
  });

  itest('with no clients the process exits 0 promptly', async (t) => {
    const ctx = await setup(t);
    const started = Date.now();
    const exit = await ctx.stop();
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.ok(Date.now() - started < 3000, 'shutdown with no clients took too long');
  });

  itest('a client mid-authentication gets "transport close" too', async (t) => {
    const ctx = await setup(t, { AUTH_TIMEOUT: '10s' });
    const s = ctx.connect();
    await waitFor(s, 'connect');
    const exit = await ctx.stop();
    assert.equal((await waitForEntry(s, 'disconnect', 3000)).args[0], 'transport close', history(s));
    assert.equal(exit.code, 0);
  });
});
