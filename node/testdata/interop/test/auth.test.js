'use strict';

// Authentication: the guide's flow (connect → emit authenticate →
// authenticated), acks, every refusal, the auth timeout, tokens in the
// CONNECT auth, and events before authentication.

const assert = require('node:assert/strict');
const { generateKeyPairSync } = require('node:crypto');
const { describe } = require('node:test');
const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');
const {
  JWT_SECRET,
  setup,
  itest,
  makeToken,
  makeNoneToken,
  waitFor,
  waitForEntry,
  expectNoEvent,
  emitWithAck,
  assertTimestamp,
  withoutTimestamp,
  history,
  received,
  sleep,
} = require('./helpers');

const nowSec = () => Math.floor(Date.now() / 1000);

/** Invalid tokens: each must give "Invalid token". */
function invalidTokens() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    'bad signature (other secret)': makeToken('u-bad-sig', 'a@example.com', {
      secret: 'some-other-secret-0123456789abcdef',
    }),
    'bad signature (tampered payload)': (() => {
      const [h, , s] = makeToken('u-tamper', 'a@example.com').split('.');
      const p = Buffer.from(JSON.stringify({ sub: 'admin', email: 'x@example.com', exp: nowSec() + 3600 })).toString(
        'base64url',
      );
      return `${h}.${p}.${s}`;
    })(),
    garbage: 'this-is-not-a-jwt',
    'three garbage segments': 'abc.def.ghi',
    'wrong algorithm HS512 (same secret)': makeToken('u-hs512', 'a@example.com', { algorithm: 'HS512' }),
    'wrong algorithm HS384 (same secret)': makeToken('u-hs384', 'a@example.com', { algorithm: 'HS384' }),
    'wrong algorithm RS256': jwt.sign({ sub: 'u-rs256', email: 'a@example.com' }, privateKey, {
      algorithm: 'RS256',
      expiresIn: '1h',
    }),
    'alg none (unsigned)': makeNoneToken('u-none', 'a@example.com'),
    'missing exp': makeToken('u-noexp', 'a@example.com', { noExp: true }),
    'missing sub': makeToken(undefined, 'a@example.com'),
  };
}

/**
 * Emits authenticate with payload (and an ack when withAck), then expects
 * auth_error {message}, the ack {ok:false, error: message}, and a
 * disconnect "io server disconnect" after the auth_error.
 */
async function expectRefusal(ctx, args, message, { withAck = false } = {}) {
  const s = ctx.connect();
  await waitFor(s, 'connect');
  let ackPromise;
  if (withAck) ackPromise = emitWithAck(s, 'authenticate', ...args);
  else s.emit('authenticate', ...args);

  const authError = await waitForEntry(s, 'auth_error');
  assert.deepEqual(authError.args[0], { message }, `auth_error payload; events: ${history(s)}`);
  if (withAck) {
    assert.deepEqual(await ackPromise, { ok: false, error: message }, 'ack of a refused authenticate');
  }
  const disc = await waitForEntry(s, 'disconnect');
  assert.equal(disc.args[0], 'io server disconnect', `disconnect reason; events: ${history(s)}`);
  assert.ok(authError.seq < disc.seq, `auth_error must come before the disconnect; events: ${history(s)}`);
  assert.equal(s.connected, false);
  assert.equal(received(s, 'authenticated').length, 0, `no authenticated expected; events: ${history(s)}`);
}

describe('authenticate event (the guide flow)', () => {
  itest("guide snippet: io(url, {transports: ['websocket','polling']}), emit authenticate on connect → authenticated", async (t) => {
    const ctx = await setup(t);
    const token = makeToken('user-guide-1', 'guide@example.com');

    // The client code of the integration guide, verbatim apart from the URL.
    const socket = io(ctx.url, { transports: ['websocket', 'polling'] });
    ctx.track(socket);
    socket.on('connect', () => {
      socket.emit('authenticate', { token });
    });
    const authenticated = new Promise((resolve) => socket.on('authenticated', resolve));

    const data = await waitFor(socket, 'authenticated');
    assert.deepEqual(data, { userId: 'user-guide-1', email: 'guide@example.com' });
    assert.deepEqual(await authenticated, { userId: 'user-guide-1', email: 'guide@example.com' });
    assert.equal(socket.io.engine.transport.name, 'websocket', 'the guide options must start (and stay) on websocket');
    assert.equal(socket.connected, true);
  });

  itest("transports ['websocket'] only: connect → authenticate → authenticated exactly {userId, email}", async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('authenticate', { token: makeToken('user-a', 'a@example.com') });
    const data = await waitFor(s, 'authenticated');
    assert.deepEqual(data, { userId: 'user-a', email: 'a@example.com' });
    await expectNoEvent(s, 'disconnect', 200);
    assert.equal(s.connected, true);
  });

  itest('token without email claim → authenticated with email ""', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('authenticate', { token: makeToken('user-no-email', undefined) });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-no-email', email: '' });
  });

  itest('emitWithAck(authenticate) resolves {ok: true, userId, email} and authenticated is emitted', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    const ack = await emitWithAck(s, 'authenticate', { token: makeToken('user-ack', 'ack@example.com') });
    assert.deepEqual(ack, { ok: true, userId: 'user-ack', email: 'ack@example.com' });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-ack', email: 'ack@example.com' });
  });

  itest('emitWithAck(authenticate) without email claim → ack email ""', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    const ack = await emitWithAck(s, 'authenticate', { token: makeToken('user-ack2', undefined) });
    assert.deepEqual(ack, { ok: true, userId: 'user-ack2', email: '' });
  });
});

describe('invalid tokens → auth_error "Invalid token" then io server disconnect', () => {
  const tokens = invalidTokens();
  for (const [name, token] of Object.entries(tokens)) {
    itest(`${name}`, async (t) => {
      const ctx = await setup(t);
      await expectRefusal(ctx, [{ token }], 'Invalid token');
    });
  }
  for (const name of ['bad signature (other secret)', 'garbage', 'wrong algorithm HS512 (same secret)', 'missing exp', 'missing sub']) {
    itest(`${name}, with ack → ack {ok:false, error:"Invalid token"}`, async (t) => {
      const ctx = await setup(t);
      await expectRefusal(ctx, [{ token: tokens[name] }], 'Invalid token', { withAck: true });
    });
  }
});

describe('expired token → auth_error "Token expired" then io server disconnect', () => {
  const expired = () => makeToken('user-expired', 'e@example.com', { exp: nowSec() - 3600 });
  itest('expired one hour ago', async (t) => {
    const ctx = await setup(t);
    await expectRefusal(ctx, [{ token: expired() }], 'Token expired');
  });
  itest('expired, with ack → ack {ok:false, error:"Token expired"}', async (t) => {
    const ctx = await setup(t);
    await expectRefusal(ctx, [{ token: expired() }], 'Token expired', { withAck: true });
  });
});

describe('missing token or non-object payload → auth_error "Token required"', () => {
  const cases = {
    'empty object {}': [{}],
    'empty token {token: ""}': [{ token: '' }],
    'token null': [{ token: null }],
    'string payload': ['just-a-string'],
    'number payload': [42],
    'null payload': [null],
    'no payload at all': [],
  };
  for (const [name, args] of Object.entries(cases)) {
    itest(name, async (t) => {
      const ctx = await setup(t);
      await expectRefusal(ctx, args, 'Token required');
    });
  }
  itest('{} with ack → ack {ok:false, error:"Token required"}', async (t) => {
    const ctx = await setup(t);
    await expectRefusal(ctx, [{}], 'Token required', { withAck: true });
  });
  itest('string payload with ack → ack {ok:false, error:"Token required"}', async (t) => {
    const ctx = await setup(t);
    await expectRefusal(ctx, ['just-a-string'], 'Token required', { withAck: true });
  });
});

describe('authentication timeout', () => {
  for (const value of ['300ms', '300']) {
    itest(`AUTH_TIMEOUT=${value}: no authenticate → auth_error "Authentication timeout" then io server disconnect`, async (t) => {
      const ctx = await setup(t, { AUTH_TIMEOUT: value });
      const s = ctx.connect();
      await waitFor(s, 'connect');
      const connectedAt = Date.now();
      const authError = await waitForEntry(s, 'auth_error', 3000);
      assert.deepEqual(authError.args[0], { message: 'Authentication timeout' });
      const elapsed = authError.at - connectedAt;
      assert.ok(elapsed >= 200, `auth_error came after ${elapsed} ms, before the 300 ms timeout`);
      assert.ok(elapsed < 2500, `auth_error came after ${elapsed} ms, long after the 300 ms timeout`);
      const disc = await waitForEntry(s, 'disconnect');
      assert.equal(disc.args[0], 'io server disconnect');
      assert.ok(authError.seq < disc.seq, `auth_error before disconnect; events: ${history(s)}`);
    });
  }

  itest('AUTH_TIMEOUT=300ms: an authenticated socket stays connected past the timeout', async (t) => {
    const ctx = await setup(t, { AUTH_TIMEOUT: '300ms' });
    const s = await ctx.authed('user-stays');
    await sleep(700);
    assert.equal(received(s, 'auth_error').length, 0, `unexpected auth_error; events: ${history(s)}`);
    assert.equal(received(s, 'disconnect').length, 0, `unexpected disconnect; events: ${history(s)}`);
    assert.equal(s.connected, true);
  });

  itest('AUTH_TIMEOUT=300ms: an event before authentication does not stop the timeout', async (t) => {
    const ctx = await setup(t, { AUTH_TIMEOUT: '300ms' });
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('send_message', { text: 'hi' });
    await waitFor(s, 'error');
    assert.deepEqual(await waitFor(s, 'auth_error', 3000), { message: 'Authentication timeout' });
    assert.equal(await waitFor(s, 'disconnect'), 'io server disconnect');
  });
});

describe('token in the CONNECT auth', () => {
  itest('valid token in auth → connect then authenticated {userId, email}, without emitting authenticate', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect({ auth: { token: makeToken('user-hs', 'hs@example.com') } });
    const conn = await waitForEntry(s, 'connect');
    const auth = await waitForEntry(s, 'authenticated');
    assert.deepEqual(auth.args[0], { userId: 'user-hs', email: 'hs@example.com' });
    assert.ok(conn.seq < auth.seq, `connect must come before authenticated; events: ${history(s)}`);
    assert.equal(received(s, 'connect_error').length, 0);
  });

  itest('valid token in auth: the socket is in the user room (API emit reaches it)', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect({ auth: { token: makeToken('user-hs-room', 'r@example.com') } });
    await waitFor(s, 'authenticated');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'user-hs-room', event: 'ping_me', data: { n: 1 } } });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await waitFor(s, 'ping_me'), { n: 1 });
  });

  itest('valid token in auth: no auth timeout afterwards (AUTH_TIMEOUT=300ms)', async (t) => {
    const ctx = await setup(t, { AUTH_TIMEOUT: '300ms' });
    const s = ctx.connect({ auth: { token: makeToken('user-hs-to', 'to@example.com') } });
    await waitFor(s, 'authenticated');
    await sleep(600);
    assert.equal(s.connected, true, `events: ${history(s)}`);
    assert.equal(received(s, 'auth_error').length, 0, `events: ${history(s)}`);
  });

  itest('valid token in auth, without email → authenticated email ""', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect({ auth: { token: makeToken('user-hs-ne', undefined) } });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-hs-ne', email: '' });
  });

  itest('CONNECT auth without a token (auth: {}) → plain connect; authenticate event still works', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect({ auth: {} });
    await waitFor(s, 'connect');
    await expectNoEvent(s, 'authenticated', 200);
    s.emit('authenticate', { token: makeToken('user-empty-auth', 'ea@example.com') });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-empty-auth', email: 'ea@example.com' });
  });

  const refusals = {
    'bad signature': [makeToken('u', 'u@example.com', { secret: 'another-secret-0123456789abcdefgh' }), 'Invalid token'],
    garbage: ['garbage', 'Invalid token'],
    'wrong algorithm HS512': [makeToken('u', 'u@example.com', { algorithm: 'HS512' }), 'Invalid token'],
    'missing exp': [makeToken('u', 'u@example.com', { noExp: true }), 'Invalid token'],
    'missing sub': [makeToken(undefined, 'u@example.com'), 'Invalid token'],
    expired: [makeToken('u', 'u@example.com', { exp: nowSec() - 3600 }), 'Token expired'],
  };
  for (const [name, [token, message]] of Object.entries(refusals)) {
    itest(`${name} token in auth → connect_error "${message}" and no connect`, async (t) => {
      const ctx = await setup(t);
      const s = ctx.connect({ auth: { token } });
      const err = await waitFor(s, 'connect_error');
      assert.ok(err instanceof Error);
      assert.equal(err.message, message, `connect_error message; events: ${history(s)}`);
      await expectNoEvent(s, 'connect', 250);
      assert.equal(s.connected, false);
      assert.equal(received(s, 'authenticated').length, 0);
    });
  }
});

describe('events before authentication', () => {
  itest('other event before authenticate → error {error:"Not authenticated", code:"UNAUTHENTICATED", timestamp}, no disconnect', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('send_message', { conversationId: 'c1', text: 'hello' });
    const err = await waitFor(s, 'error');
    assert.deepEqual(withoutTimestamp(err, 'error'), { error: 'Not authenticated', code: 'UNAUTHENTICATED' });
    await expectNoEvent(s, 'disconnect', 300);
    assert.equal(s.connected, true);

    // The socket can still authenticate afterwards.
    s.emit('authenticate', { token: makeToken('user-late', 'late@example.com') });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-late', email: 'late@example.com' });
  });

  itest('event without payload before authenticate → error UNAUTHENTICATED', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('mark_read');
    const err = await waitFor(s, 'error');
    assert.deepEqual(withoutTimestamp(err, 'error'), { error: 'Not authenticated', code: 'UNAUTHENTICATED' });
    assert.equal(s.connected, true);
  });

  itest('other event with ack before authenticate → ack {ok:false, error:"Not authenticated"}, no disconnect', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    const ack = await emitWithAck(s, 'send_message', { text: 'hello' });
    assert.deepEqual(ack, { ok: false, error: 'Not authenticated' });
    await expectNoEvent(s, 'disconnect', 300);
    assert.equal(s.connected, true);
  });

  itest('several events before authentication → one error each, socket stays connected', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    for (let i = 0; i < 3; i++) s.emit(`evt_${i}`, i);
    for (let i = 0; i < 3; i++) {
      const err = await waitFor(s, 'error');
      assert.equal(err.code, 'UNAUTHENTICATED');
      assertTimestamp(err.timestamp);
    }
    assert.equal(s.connected, true);
  });
});

describe('after authentication', () => {
  itest('unknown event → error {error:"Unknown event: <name>", code:"UNKNOWN_EVENT", timestamp}, no disconnect', async (t) => {
    const ctx = await setup(t);
    const s = await ctx.authed('user-unknown');
    s.emit('definitely_not_an_event', { a: 1 });
    const err = await waitFor(s, 'error');
    assert.deepEqual(withoutTimestamp(err, 'error'), {
      error: 'Unknown event: definitely_not_an_event',
      code: 'UNKNOWN_EVENT',
    });
    await expectNoEvent(s, 'disconnect', 300);
    assert.equal(s.connected, true);
  });
});

describe('JWT_ISSUER / JWT_AUDIENCE', () => {
  const env = { JWT_ISSUER: 'https://auth.example.com', JWT_AUDIENCE: 'hubnode' };
  itest('matching iss and aud → authenticated', async (t) => {
    const ctx = await setup(t, env);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('authenticate', {
      token: makeToken('user-iss', 'iss@example.com', { extra: { iss: env.JWT_ISSUER, aud: env.JWT_AUDIENCE } }),
    });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-iss', email: 'iss@example.com' });
  });
  itest('wrong iss → Invalid token', async (t) => {
    const ctx = await setup(t, env);
    const token = makeToken('user-iss', 'iss@example.com', { extra: { iss: 'https://evil.example', aud: 'hubnode' } });
    await expectRefusal(ctx, [{ token }], 'Invalid token');
  });
  itest('missing aud → Invalid token', async (t) => {
    const ctx = await setup(t, env);
    const token = makeToken('user-iss', 'iss@example.com', { extra: { iss: env.JWT_ISSUER } });
    await expectRefusal(ctx, [{ token }], 'Invalid token');
  });
  itest('without JWT_ISSUER/JWT_AUDIENCE any iss/aud is accepted', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    s.emit('authenticate', {
      token: makeToken('user-any-iss', 'x@example.com', { extra: { iss: 'whoever', aud: 'whatever' } }),
    });
    assert.deepEqual(await waitFor(s, 'authenticated'), { userId: 'user-any-iss', email: 'x@example.com' });
  });
});

// Guard against a silent mistake in this file's token fixtures.
itest('fixtures: valid test tokens verify with the test secret', async () => {
  const decoded = jwt.verify(makeToken('u1', 'e@example.com'), JWT_SECRET, { algorithms: ['HS256'] });
  assert.equal(decoded.sub, 'u1');
  assert.equal(decoded.email, 'e@example.com');
  assert.ok(decoded.exp > nowSec());
});
