'use strict';

// Server → client events pushed through the HTTP API: the generic
// /api/v1/emit and each typed endpoint, with exact payloads.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { setup, itest, waitFor, withoutTimestamp, history, received, expectNoEvent } = require('./helpers');

describe('POST /api/v1/emit delivers to the user', () => {
  itest('single object → 202 {accepted:1}; data arrives exactly as sent', async (t) => {
    const ctx = await setup(t);
    const s = await ctx.authed('user-emit-1');
    const data = {
      id: 'msg_01HZX',
      text: 'héllo wörld ✓ 🎉',
      count: 42,
      ratio: 0.125,
      big: 9007199254740991,
      neg: -7,
      flag: true,
      off: false,
      nothing: null,
      empty: {},
      list: [1, 'two', { three: 3 }, [4], null],
      nested: { a: { b: { c: ['deep', { d: 'e' }] } } },
      'key with spaces': 'ok',
      html: '<b>&amp;</b>',
      quote: 'he said "hi"\n\ttab',
    };
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'user-emit-1', event: 'custom_event', data } });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 1 });
    assert.deepEqual(await waitFor(s, 'custom_event'), data);
  });

  itest('object data is untouched: no timestamp or other field added', async (t) => {
    const ctx = await setup(t);
    const s = await ctx.authed('user-emit-untouched');
    const data = { message: { id: 'm1' } };
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'user-emit-untouched', event: 'new_message', data } });
    assert.equal(res.status, 202, res.text);
    const got = await waitFor(s, 'new_message');
    assert.deepEqual(got, { message: { id: 'm1' } });
    assert.equal('timestamp' in got, false);
  });

  itest('array of two items → 202 {accepted:2}; each user gets its own event', async (t) => {
    const ctx = await setup(t);
    const a = await ctx.authed('user-arr-a');
    const b = await ctx.authed('user-arr-b');
    const res = await ctx.api('/api/v1/emit', {
      body: [
        { userId: 'user-arr-a', event: 'evt_a', data: { for: 'a' } },
        { userId: 'user-arr-b', event: 'evt_b', data: { for: 'b', n: [1, 2] } },
      ],
    });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 2 });
    assert.deepEqual(await waitFor(a, 'evt_a'), { for: 'a' });
    assert.deepEqual(await waitFor(b, 'evt_b'), { for: 'b', n: [1, 2] });
    await expectNoEvent(a, 'evt_b', 150);
    assert.equal(received(b, 'evt_a').length, 0, `b got a's event; events: ${history(b)}`);
  });

  itest('array of three items for one user → 202 {accepted:3}; all arrive in order', async (t) => {
    const ctx = await setup(t);
    const s = await ctx.authed('user-arr-order');
    const items = [1, 2, 3].map((n) => ({ userId: 'user-arr-order', event: 'seq', data: { n } }));
    const res = await ctx.api('/api/v1/emit', { body: items });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 3 });
    for (const n of [1, 2, 3]) assert.deepEqual(await waitFor(s, 'seq'), { n });
  });

  const scalars = {
    string: 'plain string',
    number: 3.5,
    zero: 0,
    'boolean false': false,
    array: [1, { a: 'b' }, 'c'],
    'empty array': [],
    null: null,
  };
  for (const [name, data] of Object.entries(scalars)) {
    itest(`data of type ${name} arrives exactly as sent`, async (t) => {
      const ctx = await setup(t);
      const s = await ctx.authed('user-scalar');
      const res = await ctx.api('/api/v1/emit', { body: { userId: 'user-scalar', event: 'scalar_evt', data } });
      assert.equal(res.status, 202, res.text);
      assert.deepEqual(res.body, { accepted: 1 });
      const entry = await waitFor(s, 'scalar_evt');
      assert.deepEqual(entry, data);
    });
  }

  itest('a large payload (200 KB string) arrives intact', async (t) => {
    const ctx = await setup(t);
    const s = await ctx.authed('user-big');
    const data = { blob: 'x'.repeat(200_000), tail: 'end' };
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'user-big', event: 'big_evt', data } });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await waitFor(s, 'big_evt'), data);
  });

  itest('emit to a user with no socket is accepted (202 {accepted:1})', async (t) => {
    const ctx = await setup(t);
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'nobody-here', event: 'x', data: {} } });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 1 });
  });

  itest('an unauthenticated socket receives nothing from the API', async (t) => {
    const ctx = await setup(t);
    const s = ctx.connect();
    await waitFor(s, 'connect');
    const res = await ctx.api('/api/v1/emit', { body: { userId: 'user-unauth', event: 'x_evt', data: {} } });
    assert.equal(res.status, 202, res.text);
    await expectNoEvent(s, 'x_evt', 300);
  });
});

describe('typed endpoints POST /api/v1/users/{userId}/events/{event}', () => {
  const typed = (ctx, userId, event, body) =>
    ctx.api(`/api/v1/users/${encodeURIComponent(userId)}/events/${event}`, { body });

  async function sendTyped(t, userId, event, body) {
    const ctx = await setup(t);
    const s = await ctx.authed(userId);
    const res = await typed(ctx, userId, event, body);
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 1 });
    const payload = await waitFor(s, event);
    return { ctx, s, payload };
  }

  itest('new_message with conversation → {message, conversation, timestamp}', async (t) => {
    const message = {
      id: 'msg-1',
      conversationId: 'conv-1',
      content: 'Hello there',
      sender: { id: 'contact-9', name: 'Ann' },
      platform: 'whatsapp',
      attachments: [],
      createdAt: '2026-01-02T03:04:05.678Z',
    };
    const conversation = { id: 'conv-1', title: 'Ann', unread: 3, participants: ['a', 'b'] };
    const { payload } = await sendTyped(t, 'user-nm', 'new_message', { message, conversation });
    assert.deepEqual(withoutTimestamp(payload, 'new_message'), { message, conversation });
  });

  itest('new_message without conversation → {message, timestamp}, no conversation key', async (t) => {
    const message = { id: 'msg-2', content: 'solo' };
    const { payload } = await sendTyped(t, 'user-nm2', 'new_message', { message });
    assert.equal('conversation' in payload, false, `conversation key must be absent: ${JSON.stringify(payload)}`);
    assert.deepEqual(withoutTimestamp(payload, 'new_message'), { message });
  });

  for (const status of ['read', 'delivered']) {
    itest(`message_status_update status "${status}" → {messageId, conversationId, status, timestamp}`, async (t) => {
      const body = { messageId: 'msg-7', conversationId: 'conv-3', status };
      const { payload } = await sendTyped(t, 'user-msu', 'message_status_update', body);
      assert.deepEqual(withoutTimestamp(payload, 'message_status_update'), body);
    });
  }

  itest('unread_count_update → {unreadCounts, totalUnread, timestamp}', async (t) => {
    const body = { unreadCounts: { whatsapp: 3, telegram: 0, email: 12 }, totalUnread: 15 };
    const { payload } = await sendTyped(t, 'user-ucu', 'unread_count_update', body);
    assert.deepEqual(withoutTimestamp(payload, 'unread_count_update'), body);
  });

  itest('unread_count_update with zero totals → exact payload', async (t) => {
    const body = { unreadCounts: {}, totalUnread: 0 };
    const { payload } = await sendTyped(t, 'user-ucu0', 'unread_count_update', body);
    assert.deepEqual(withoutTimestamp(payload, 'unread_count_update'), body);
  });

  itest('conversation_update → {conversation, timestamp}', async (t) => {
    const conversation = { id: 'conv-5', title: 'Team', archived: false, lastMessage: { id: 'm9', text: 'ok' } };
    const { payload } = await sendTyped(t, 'user-cu', 'conversation_update', { conversation });
    assert.deepEqual(withoutTimestamp(payload, 'conversation_update'), { conversation });
  });

  itest('error with code → {error, code, timestamp}', async (t) => {
    const body = { error: 'Sync failed for WhatsApp', code: 'SYNC_FAILED' };
    const { payload } = await sendTyped(t, 'user-err', 'error', body);
    assert.deepEqual(withoutTimestamp(payload, 'error'), body);
  });

  itest('error without code → {error, timestamp}, no code key', async (t) => {
    const { payload } = await sendTyped(t, 'user-err2', 'error', { error: 'Something broke' });
    assert.equal('code' in payload, false, `code key must be absent: ${JSON.stringify(payload)}`);
    assert.deepEqual(withoutTimestamp(payload, 'error'), { error: 'Something broke' });
  });

  itest('typed event reaches both sockets of the user, and only that user', async (t) => {
    const ctx = await setup(t);
    const a1 = await ctx.authed('user-typed-a');
    const a2 = await ctx.authed('user-typed-a');
    const b = await ctx.authed('user-typed-b');
    const body = { conversation: { id: 'c-77' } };
    const res = await typed(ctx, 'user-typed-a', 'conversation_update', body);
    assert.equal(res.status, 202, res.text);
    const p1 = await waitFor(a1, 'conversation_update');
    const p2 = await waitFor(a2, 'conversation_update');
    assert.deepEqual(withoutTimestamp(p1), body);
    assert.deepEqual(p2, p1, 'both tabs get the same payload');
    await expectNoEvent(b, 'conversation_update', 200);
  });

  itest('user id with URL-escaped characters is routed to the right user', async (t) => {
    const userId = 'auth0|user 42';
    const ctx = await setup(t);
    const s = await ctx.authed(userId);
    const body = { messageId: 'm', conversationId: 'c', status: 'read' };
    const res = await typed(ctx, userId, 'message_status_update', body);
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(withoutTimestamp(await waitFor(s, 'message_status_update')), body);
  });
});
