'use strict';

// The HTTP API: API key checks, validation errors, presence, stats,
// disconnect, and the OpenAPI document.

const assert = require('node:assert/strict');
const { describe, before, after } = require('node:test');
const {
  API_KEY,
  startServer,
  dumpLogs,
  setup,
  itest,
  api,
  assertApiError,
  waitFor,
  waitForEntry,
  expectNoEvent,
  eventually,
  history,
  pick,
  assertExactKeys,
} = require('./helpers');

const STATS_SHAPE = { totalConnections: 1, authenticatedUsers: 1, averageConnectionsPerUser: 1 };
const STATS_KEYS = { ...STATS_SHAPE, nodes: 1 };
const PRESENCE_SHAPE = { userId: 1, connected: 1, connections: 1 };

const RESERVED = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'];

const TYPED_OK = {
  new_message: { message: { id: 'm1' } },
  message_status_update: { messageId: 'm1', conversationId: 'c1', status: 'read' },
  unread_count_update: { unreadCounts: { whatsapp: 1 }, totalUnread: 1 },
  conversation_update: { conversation: { id: 'c1' } },
  error: { error: 'boom' },
};

// One shared server for the stateless error checks (no sockets involved).
describe('HTTP API errors (shared server)', () => {
  let srv;
  let failed = false;
  before(async () => {
    srv = await startServer();
  });
  after(async () => {
    if (srv) {
      if (failed) dumpLogs(srv, 'a test in "HTTP API errors" failed');
      await srv.stop();
    }
  });
  const call = (pathname, opts) => api(srv.url, pathname, opts);
  const check = (name, fn) =>
    itest(name, async () => {
      try {
        await fn();
      } catch (err) {
        failed = true;
        throw err;
      }
    });

  const endpoints = [
    ['POST /api/v1/emit', '/api/v1/emit', { body: { userId: 'u', event: 'e', data: {} } }],
    ['POST typed new_message', '/api/v1/users/u/events/new_message', { body: TYPED_OK.new_message }],
    ['POST users/{id}/disconnect', '/api/v1/users/u/disconnect', { method: 'POST' }],
    ['GET users/{id}/presence', '/api/v1/users/u/presence', {}],
    ['GET stats', '/api/v1/stats', {}],
  ];

  for (const [name, pathname, opts] of endpoints) {
    check(`${name}: no Authorization header → 401 JSON error`, async () => {
      assertApiError(await call(pathname, { ...opts, key: null }), 401, name);
    });
    check(`${name}: wrong API key → 401 JSON error`, async () => {
      assertApiError(await call(pathname, { ...opts, key: 'wrong-key-0123456789abcdef012345' }), 401, name);
    });
  }

  check('API key as a prefix or with a suffix → 401', async () => {
    assertApiError(await call('/api/v1/stats', { key: API_KEY.slice(0, -1) }), 401, 'prefix');
    assertApiError(await call('/api/v1/stats', { key: `${API_KEY}x` }), 401, 'suffix');
  });

  check('API key without the Bearer scheme → 401', async () => {
    assertApiError(await call('/api/v1/stats', { key: null, headers: { authorization: API_KEY } }), 401, 'bare key');
    assertApiError(
      await call('/api/v1/stats', { key: null, headers: { authorization: `Basic ${API_KEY}` } }),
      401,
      'Basic scheme',
    );
  });

  check('valid API key → GET /api/v1/stats 200', async () => {
    const res = await call('/api/v1/stats');
    assert.equal(res.status, 200, res.text);
  });

  for (const event of RESERVED) {
    check(`emit with reserved event "${event}" → 400`, async () => {
      assertApiError(await call('/api/v1/emit', { body: { userId: 'u', event, data: {} } }), 400, event);
    });
  }

  check('emit with a reserved event inside an array → 400', async () => {
    const res = await call('/api/v1/emit', {
      body: [
        { userId: 'u', event: 'fine', data: {} },
        { userId: 'u', event: 'disconnect', data: {} },
      ],
    });
    assertApiError(res, 400, 'array with reserved');
  });

  const badEmits = {
    'missing userId': { event: 'e', data: {} },
    'missing event': { userId: 'u', data: {} },
    'empty userId': { userId: '', event: 'e', data: {} },
    'empty event': { userId: 'u', event: '', data: {} },
    'missing both': { data: {} },
    'array item missing userId': [{ userId: 'u', event: 'e', data: {} }, { event: 'e', data: {} }],
  };
  for (const [name, body] of Object.entries(badEmits)) {
    check(`emit ${name} → 400`, async () => {
      assertApiError(await call('/api/v1/emit', { body }), 400, name);
    });
  }

  const nonJson = {
    'plain text': 'hello',
    'truncated JSON': '{"userId": "u", "event": ',
    'empty body': '',
  };
  for (const [name, rawBody] of Object.entries(nonJson)) {
    check(`emit with non-JSON body (${name}) → 400`, async () => {
      assertApiError(await call('/api/v1/emit', { method: 'POST', rawBody }), 400, name);
    });
  }

  const typedBad = [
    ['new_message', 'message is a string', { message: 'hello' }],
    ['new_message', 'message missing', { conversation: { id: 'c' } }],
    ['new_message', 'message is an array', { message: [1, 2] }],
    ['new_message', 'message is null', { message: null }],
    ['message_status_update', 'status "sent"', { messageId: 'm', conversationId: 'c', status: 'sent' }],
    ['message_status_update', 'status "READ" (case)', { messageId: 'm', conversationId: 'c', status: 'READ' }],
    ['message_status_update', 'status missing', { messageId: 'm', conversationId: 'c' }],
    ['unread_count_update', 'negative totalUnread', { unreadCounts: { whatsapp: 1 }, totalUnread: -1 }],
    ['unread_count_update', 'non-integer totalUnread', { unreadCounts: { whatsapp: 1 }, totalUnread: 1.5 }],
    ['unread_count_update', 'string totalUnread', { unreadCounts: { whatsapp: 1 }, totalUnread: '3' }],
    ['conversation_update', 'conversation is a string', { conversation: 'c1' }],
    ['conversation_update', 'conversation missing', {}],
  ];
  for (const [event, name, body] of typedBad) {
    check(`typed ${event}: ${name} → 400`, async () => {
      assertApiError(await call(`/api/v1/users/u/events/${event}`, { body }), 400, `${event} ${name}`);
    });
  }

  for (const event of Object.keys(TYPED_OK)) {
    check(`typed ${event}: non-JSON body → 400`, async () => {
      assertApiError(await call(`/api/v1/users/u/events/${event}`, { method: 'POST', rawBody: 'nope' }), 400, event);
    });
  }

  for (const event of ['unknown_event', 'connect', 'authenticated']) {
    check(`typed endpoint with unknown event name "${event}" → 404`, async () => {
      const res = await call(`/api/v1/users/u/events/${event}`, { body: { anything: 1 } });
      assertApiError(res, 404, event);
    });
  }

  check('GET /api/v1/openapi.yaml without API key → 200 text with "openapi: 3"', async () => {
    const res = await call('/api/v1/openapi.yaml', { key: null });
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.match(res.text, /openapi: 3/);
  });

  check('presence of a user with no socket → {userId, connected:false, connections:0}', async () => {
    const res = await call('/api/v1/users/ghost-user/presence');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(pick(res.body, PRESENCE_SHAPE), { userId: 'ghost-user', connected: false, connections: 0 });
  });

  check('stats with no sockets → {totalConnections:0, authenticatedUsers:0, averageConnectionsPerUser:0}', async () => {
    const res = await call('/api/v1/stats');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(pick(res.body, STATS_SHAPE), { totalConnections: 0, authenticatedUsers: 0, averageConnectionsPerUser: 0 });
  });

  check('stats body has exactly the documented keys {totalConnections, authenticatedUsers, averageConnectionsPerUser, nodes}', async () => {
    const res = await call('/api/v1/stats');
    assert.equal(res.status, 200, res.text);
    assertExactKeys(res.body, STATS_KEYS, 'stats body');
    assert.equal(res.body.nodes.length, 1, 'one node row on a single node');
    assert.deepEqual(Object.keys(res.body.nodes[0]).sort(), ['authenticatedUsers', 'connections', 'nodeId']);
    assert.equal(res.body.nodes[0].connections, res.body.totalConnections);
    assert.equal(res.body.nodes[0].authenticatedUsers, res.body.authenticatedUsers);
  });

  check('presence body has exactly the documented keys {userId, connected, connections}', async () => {
    const res = await call('/api/v1/users/someone/presence');
    assert.equal(res.status, 200, res.text);
    assertExactKeys(res.body, PRESENCE_SHAPE, 'presence body');
  });

  check('POST /api/v1/users/{id}/disconnect for a user with no socket → 202', async () => {
    const res = await call('/api/v1/users/ghost-user/disconnect', { method: 'POST' });
    assert.equal(res.status, 202, res.text);
  });
});

describe('server started without API_KEY', () => {
  const calls = [
    ['POST /api/v1/emit', '/api/v1/emit', { body: { userId: 'u', event: 'e', data: {} } }],
    ['POST typed', '/api/v1/users/u/events/error', { body: { error: 'x' } }],
    ['POST disconnect', '/api/v1/users/u/disconnect', { method: 'POST' }],
    ['GET presence', '/api/v1/users/u/presence', {}],
    ['GET stats', '/api/v1/stats', {}],
  ];
  itest('every /api/v1 call answers 503 (with or without an Authorization header)', async (t) => {
    const ctx = await setup(t, { API_KEY: '' });
    for (const [name, pathname, opts] of calls) {
      assertApiError(await ctx.api(pathname, { ...opts, key: null }), 503, `${name} without key`);
      assertApiError(await ctx.api(pathname, opts), 503, `${name} with the usual key`);
      assertApiError(await ctx.api(pathname, { ...opts, key: '' }), 503, `${name} with "Bearer "`);
    }
  });
  itest('sockets still work without API_KEY (authenticate → authenticated)', async (t) => {
    const ctx = await setup(t, { API_KEY: '' });
    await ctx.authed('user-nokey');
  });
});

describe('presence, stats and disconnect with sockets', () => {
  itest('presence counts the sockets of a user and drops to 0 when they close', async (t) => {
    const ctx = await setup(t);
    const a1 = await ctx.authed('user-pres');
    const a2 = await ctx.authed('user-pres');
    let res = await ctx.api('/api/v1/users/user-pres/presence');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(pick(res.body, PRESENCE_SHAPE), { userId: 'user-pres', connected: true, connections: 2 });

    a1.close();
    await eventually(
      async () => {
        const r = await ctx.api('/api/v1/users/user-pres/presence');
        return r.body?.connections === 1 ? r : false;
      },
      { message: 'presence connections == 1 after closing one tab' },
    );
    res = await ctx.api('/api/v1/users/user-pres/presence');
    assert.deepEqual(pick(res.body, PRESENCE_SHAPE), { userId: 'user-pres', connected: true, connections: 1 });

    a2.close();
    await eventually(
      async () => {
        const r = await ctx.api('/api/v1/users/user-pres/presence');
        return r.body?.connections === 0;
      },
      { message: 'presence connections == 0 after closing both tabs' },
    );
    res = await ctx.api('/api/v1/users/user-pres/presence');
    assert.deepEqual(pick(res.body, PRESENCE_SHAPE), { userId: 'user-pres', connected: false, connections: 0 });
  });

  itest('presence ignores sockets that have not authenticated', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    const res = await ctx.api('/api/v1/users/user-pending/presence');
    assert.deepEqual(pick(res.body, PRESENCE_SHAPE), { userId: 'user-pending', connected: false, connections: 0 });
  });

  itest('stats: 3 users with 4 authenticated sockets (+1 unauthenticated) → 4, 3, 1.33', async (t) => {
    const ctx = await setup(t);
    await ctx.authed('stats-a');
    await ctx.authed('stats-a');
    await ctx.authed('stats-b');
    const c = await ctx.authed('stats-c');
    const anon = ctx.connect();
    await waitFor(anon, 'connect');
    let res = await ctx.api('/api/v1/stats');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(pick(res.body, STATS_SHAPE), { totalConnections: 4, authenticatedUsers: 3, averageConnectionsPerUser: 1.33 });

    c.close();
    await eventually(async () => (await ctx.api('/api/v1/stats')).body?.totalConnections === 3, {
      message: 'stats totalConnections == 3',
    });
    res = await ctx.api('/api/v1/stats');
    assert.deepEqual(pick(res.body, STATS_SHAPE), { totalConnections: 3, authenticatedUsers: 2, averageConnectionsPerUser: 1.5 });
  });

  itest('stats: 2 users with 3 sockets each minus one → average 2.5; 1 user 2 sockets → 2', async (t) => {
    const ctx = await setup(t);
    const a1 = await ctx.authed('avg-a');
    await ctx.authed('avg-a');
    await ctx.authed('avg-b');
    await ctx.authed('avg-b');
    await ctx.authed('avg-b');
    let res = await ctx.api('/api/v1/stats');
    assert.deepEqual(pick(res.body, STATS_SHAPE), { totalConnections: 5, authenticatedUsers: 2, averageConnectionsPerUser: 2.5 });
    a1.close();
    await eventually(async () => (await ctx.api('/api/v1/stats')).body?.totalConnections === 4, {
      message: 'stats totalConnections == 4',
    });
    res = await ctx.api('/api/v1/stats');
    assert.deepEqual(pick(res.body, STATS_SHAPE), { totalConnections: 4, authenticatedUsers: 2, averageConnectionsPerUser: 2 });
  });

  itest('stats: 3 users, 5 sockets → average 1.67 (rounded, not truncated)', async (t) => {
    const ctx = await setup(t);
    for (const u of ['r-a', 'r-a', 'r-a', 'r-b', 'r-c']) await ctx.authed(u);
    const res = await ctx.api('/api/v1/stats');
    assert.deepEqual(pick(res.body, STATS_SHAPE), { totalConnections: 5, authenticatedUsers: 3, averageConnectionsPerUser: 1.67 });
  });

  itest('POST /api/v1/users/{id}/disconnect → 202; every socket of the user gets "io server disconnect", others stay', async (t) => {
    const ctx = await setup(t);
    const a1 = await ctx.authed('user-kick');
    const a2 = await ctx.authed('user-kick');
    const b = await ctx.authed('user-stay');
    const res = await ctx.api('/api/v1/users/user-kick/disconnect', { method: 'POST' });
    assert.equal(res.status, 202, res.text);
    assert.equal((await waitForEntry(a1, 'disconnect')).args[0], 'io server disconnect', history(a1));
    assert.equal((await waitForEntry(a2, 'disconnect')).args[0], 'io server disconnect', history(a2));
    await expectNoEvent(b, 'disconnect', 300);
    assert.equal(b.connected, true);

    await eventually(async () => (await ctx.api('/api/v1/users/user-kick/presence')).body?.connected === false, {
      message: 'kicked user no longer present',
    });
    const stay = await ctx.api('/api/v1/users/user-stay/presence');
    assert.deepEqual(pick(stay.body, PRESENCE_SHAPE), { userId: 'user-stay', connected: true, connections: 1 });
  });
});
