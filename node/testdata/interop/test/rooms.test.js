'use strict';

// Rooms: every socket of a user gets the user's events; no socket ever gets
// another user's events.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { setup, itest, makeToken, waitFor, received, history, expectNoEvent } = require('./helpers');

const emit = (ctx, userId, event, data) => ctx.api('/api/v1/emit', { body: { userId, event, data } });

/** Events on socket after index `from`, as names (server events only). */
function namesSince(socket, from) {
  return received(socket)
    .slice(from)
    .map((e) => e.event);
}

describe('two tabs of one user', () => {
  itest('both sockets receive every event, in order', async (t) => {
    const ctx = await setup(t);
    const tab1 = await ctx.authed('user-tabs', 'tabs@example.com');
    const tab2 = await ctx.authed('user-tabs', 'tabs@example.com');
    for (let i = 1; i <= 3; i++) {
      const res = await emit(ctx, 'user-tabs', 'tick', { i });
      assert.equal(res.status, 202, res.text);
    }
    for (const tab of [tab1, tab2]) {
      for (let i = 1; i <= 3; i++) assert.deepEqual(await waitFor(tab, 'tick'), { i });
    }
  });

  itest('one tab authenticated by CONNECT auth, the other by the authenticate event: both receive', async (t) => {
    const ctx = await setup(t);
    const tab1 = ctx.connect({ auth: { token: makeToken('user-mixed', 'm@example.com') } });
    await waitFor(tab1, 'authenticated');
    const tab2 = await ctx.authed('user-mixed', 'm@example.com');
    const res = await emit(ctx, 'user-mixed', 'hello', { x: 1 });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await waitFor(tab1, 'hello'), { x: 1 });
    assert.deepEqual(await waitFor(tab2, 'hello'), { x: 1 });
  });

  itest('closing one tab leaves the other receiving', async (t) => {
    const ctx = await setup(t);
    const tab1 = await ctx.authed('user-close-one');
    const tab2 = await ctx.authed('user-close-one');
    tab1.close();
    await new Promise((r) => setTimeout(r, 100));
    const res = await emit(ctx, 'user-close-one', 'after_close', 'still here');
    assert.equal(res.status, 202, res.text);
    assert.equal(await waitFor(tab2, 'after_close'), 'still here');
  });

  itest('a new tab joining later receives later events', async (t) => {
    const ctx = await setup(t);
    const tab1 = await ctx.authed('user-late-tab');
    await emit(ctx, 'user-late-tab', 'first', 1);
    assert.equal(await waitFor(tab1, 'first'), 1);
    const tab2 = await ctx.authed('user-late-tab');
    await emit(ctx, 'user-late-tab', 'second', 2);
    assert.equal(await waitFor(tab1, 'second'), 2);
    assert.equal(await waitFor(tab2, 'second'), 2);
    assert.equal(received(tab2, 'first').length, 0, 'no replay of earlier events to a new tab');
  });
});

describe('isolation between users', () => {
  itest('an event for B never reaches A (negative check with a marker)', async (t) => {
    const ctx = await setup(t);
    const a = await ctx.authed('iso-a');
    const b = await ctx.authed('iso-b');
    const aBefore = received(a).length;

    let res = await emit(ctx, 'iso-b', 'secret_for_b', { secret: 42 });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await waitFor(b, 'secret_for_b'), { secret: 42 });

    res = await emit(ctx, 'iso-a', 'marker', { m: 'a' });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await waitFor(a, 'marker'), { m: 'a' });
    assert.deepEqual(namesSince(a, aBefore), ['marker'], `A must receive only the marker; events: ${history(a)}`);
    await expectNoEvent(b, 'marker', 150);
  });

  itest('typed events are isolated too (negative check with a marker)', async (t) => {
    const ctx = await setup(t);
    const a = await ctx.authed('iso-typed-a');
    const b = await ctx.authed('iso-typed-b');
    const aBefore = received(a).length;
    const typed = [
      ['new_message', { message: { id: 'm' } }],
      ['message_status_update', { messageId: 'm', conversationId: 'c', status: 'read' }],
      ['unread_count_update', { unreadCounts: { x: 1 }, totalUnread: 1 }],
      ['conversation_update', { conversation: { id: 'c' } }],
      ['error', { error: 'for b only' }],
    ];
    for (const [event, body] of typed) {
      const res = await ctx.api(`/api/v1/users/iso-typed-b/events/${event}`, { body });
      assert.equal(res.status, 202, res.text);
      await waitFor(b, event);
    }
    await emit(ctx, 'iso-typed-a', 'marker', null);
    await waitFor(a, 'marker');
    assert.deepEqual(namesSince(a, aBefore), ['marker'], `A must receive only the marker; events: ${history(a)}`);
  });

  itest('user ids are matched exactly (no prefix or case folding)', async (t) => {
    const ctx = await setup(t);
    const exact = await ctx.authed('user-1');
    const longer = await ctx.authed('user-10');
    const upper = await ctx.authed('USER-1');
    const before = [exact, longer, upper].map((s) => received(s).length);
    const res = await emit(ctx, 'user-1', 'only_user_1', {});
    assert.equal(res.status, 202, res.text);
    await waitFor(exact, 'only_user_1');
    await emit(ctx, 'user-10', 'marker', {});
    await emit(ctx, 'USER-1', 'marker', {});
    await waitFor(longer, 'marker');
    await waitFor(upper, 'marker');
    assert.deepEqual(namesSince(longer, before[1]), ['marker'], history(longer));
    assert.deepEqual(namesSince(upper, before[2]), ['marker'], history(upper));
  });

  itest('an unauthenticated socket gets none of the users\' events', async (t) => {
    const ctx = await setup(t);
    const a = await ctx.authed('iso-anon-a');
    const anon = ctx.connect();
    await waitFor(anon, 'connect');
    await emit(ctx, 'iso-anon-a', 'for_a', 1);
    await waitFor(a, 'for_a');
    await expectNoEvent(anon, 'for_a', 200);
    assert.deepEqual(namesSince(anon, 0), ['connect'], history(anon));
  });
});
