'use strict';

// Engine.IO level: handshake values from PING_INTERVAL, PING_TIMEOUT and
// MAX_PAYLOAD, and heartbeats with the real client.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { setup, itest, waitFor, withTimeout, sleep, history, received } = require('./helpers');

/** Connects and resolves with the Engine.IO handshake object the client got. */
async function handshakeOf(ctx) {
  const s = ctx.connect();
  const hs = withTimeout(
    new Promise((resolve) => s.io.engine.once('handshake', resolve)),
    3000,
    'no Engine.IO handshake within 3000 ms',
  );
  await waitFor(s, 'connect');
  return { s, hs: await hs };
}

describe('Engine.IO handshake and heartbeat', () => {
  itest('handshake carries sid, upgrades [], and the configured pingInterval/pingTimeout/maxPayload', async (t) => {
    const ctx = await setup(t, { PING_INTERVAL: '1500ms', PING_TIMEOUT: '1200', MAX_PAYLOAD: '65536' });
    const { s, hs } = await handshakeOf(ctx);
    assert.equal(typeof hs.sid, 'string');
    assert.ok(hs.sid.length > 0);
    assert.deepEqual(hs.upgrades, [], 'a websocket connection offers no upgrades');
    assert.equal(hs.pingInterval, 1500);
    assert.equal(hs.pingTimeout, 1200);
    assert.equal(hs.maxPayload, 65536);
    assert.equal(s.io.engine.transport.name, 'websocket');
  });

  itest('short PING_INTERVAL: the client answers pings and stays connected (and authenticated)', async (t) => {
    const ctx = await setup(t, { PING_INTERVAL: '100ms', PING_TIMEOUT: '300ms' });
    const s = await ctx.authed('hb-user');
    let pings = 0;
    s.io.on('ping', () => pings++);
    await sleep(1000);
    assert.ok(pings >= 5, `expected at least 5 pings in 1 s with PING_INTERVAL=100ms, got ${pings}`);
    assert.equal(s.connected, true, `events: ${history(s)}`);
    assert.equal(received(s, 'disconnect').length, 0, `events: ${history(s)}`);
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'hb-user', event: 'still', data: 1 } });
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(s, 'still'), 1);
  });

  itest('socket.id is set on connect and differs between sockets', async (t) => {
    const ctx = await setup(t);
    const a = ctx.connect();
    const b = ctx.connect();
    await waitFor(a, 'connect');
    await waitFor(b, 'connect');
    assert.equal(typeof a.id, 'string');
    assert.ok(a.id.length > 0);
    assert.notEqual(a.id, b.id);
  });

  itest('starts and serves with NODE_ID, LOG_LEVEL=debug and LOG_FORMAT=console', async (t) => {
    const ctx = await setup(t, { NODE_ID: 'interop-node-1', LOG_LEVEL: 'debug', LOG_FORMAT: 'console' });
    const s = await ctx.authed('log-user');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'log-user', event: 'x', data: 'y' } });
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(s, 'x'), 'y');
  });

  itest('starts with LOG_FORMAT=json and LOG_LEVEL=error', async (t) => {
    const ctx = await setup(t, { LOG_LEVEL: 'error', LOG_FORMAT: 'json' });
    await ctx.authed('log-user-2');
  });
});
