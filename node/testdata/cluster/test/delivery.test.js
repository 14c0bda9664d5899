'use strict';

// Cross-node delivery: the HTTP API of one node reaches a user's sockets on
// every node, exactly once per socket, and never another user's sockets.

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const {
  NODE_IDS,
  useCluster,
  itest,
  makeToken,
  waitFor,
  waitForEntry,
  expectNoEvent,
  received,
  history,
  namesSince,
  eventually,
  withoutTimestamp,
  sleep,
} = require('./cluster');

const cluster = useCluster();

// A payload with every JSON type, nesting and non-ASCII text.
const RICH = {
  id: 'm-1',
  text: 'héllo wörld ✓ 日本語 🙂 "quoted" \\ back\nslash',
  n: 42,
  f: -1.5e-7,
  big: 9007199254740991,
  ok: true,
  no: false,
  nil: null,
  list: [1, 'two', { three: [3] }, [], {}],
  nested: { a: { b: { c: 'deep' } } },
};

describe('POST /api/v1/emit across nodes', () => {
  itest(cluster, 'emit posted on n1 reaches a user on n2 with the exact payload', async () => {
    const b = await cluster.authed('n2', 'x-emit');
    const res = await cluster.emit('n1', 'x-emit', 'custom_event', RICH);
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 1 });
    assert.deepEqual(await waitFor(b, 'custom_event'), RICH);
  });

  itest(cluster, 'scalar, string, array and null payloads arrive unchanged across nodes', async () => {
    const s = await cluster.authed('n3', 'x-scalars');
    const values = [0, 7.25, 'plain', '', [1, [2]], null, true, { '': 'empty key' }];
    for (const [i, v] of values.entries()) {
      const res = await cluster.emit('n1', 'x-scalars', `v${i}`, v);
      assert.equal(res.status, 202, res.text);
    }
    for (const [i, v] of values.entries()) assert.deepEqual(await waitFor(s, `v${i}`), v, `payload ${i}`);
  });

  itest(cluster, 'an array POST on n1 reaches users on n2 and n3', async () => {
    const b = await cluster.authed('n2', 'x-arr-b');
    const c = await cluster.authed('n3', 'x-arr-c');
    const res = await cluster.api('n1', '/api/v1/emit', {
      body: [
        { userId: 'x-arr-b', event: 'for_b', data: { to: 'b' } },
        { userId: 'x-arr-c', event: 'for_c', data: { to: 'c' } },
      ],
    });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 2 });
    assert.deepEqual(await waitFor(b, 'for_b'), { to: 'b' });
    assert.deepEqual(await waitFor(c, 'for_c'), { to: 'c' });
    assert.deepEqual(namesSince(b, 0), ['authenticated', 'for_b'], history(b));
    assert.deepEqual(namesSince(c, 0), ['authenticated', 'for_c'], history(c));
  });

  itest(cluster, 'events from one node to a user on another keep their order', async () => {
    const s = await cluster.authed('n2', 'x-order');
    for (let i = 0; i < 20; i++) {
      const res = await cluster.emit('n1', 'x-order', 'seq', { i });
      assert.equal(res.status, 202, res.text);
    }
    const got = [];
    for (let i = 0; i < 20; i++) got.push((await waitFor(s, 'seq')).i);
    assert.deepEqual(got, [...Array(20).keys()]);
  });
});

describe('typed endpoints across nodes', () => {
  const CASES = [
    [
      'new_message',
      { message: { id: 'm1', text: 'hi ✓', sender: { id: 'u9' }, attachments: [] }, conversation: { id: 'c1', platform: 'whatsapp' } },
    ],
    ['new_message', { message: { id: 'm2', text: 'no conversation' } }],
    ['message_status_update', { messageId: 'm1', conversationId: 'c1', status: 'read' }],
    ['message_status_update', { messageId: 'm1', conversationId: 'c1', status: 'delivered' }],
    ['unread_count_update', { unreadCounts: { whatsapp: 3, telegram: 0 }, totalUnread: 3 }],
    ['conversation_update', { conversation: { id: 'c1', title: 'Team', unread: 2, tags: ['a'] } }],
    ['error', { error: 'Sync failed', code: 'SYNC_FAILED' }],
    ['error', { error: 'no code' }],
  ];

  itest(cluster, 'each typed event posted on n1 reaches a user on n2 with the exact payload and a timestamp', async () => {
    const s = await cluster.authed('n2', 'x-typed');
    for (const [event, body] of CASES) {
      const res = await cluster.api('n1', `/api/v1/users/x-typed/events/${event}`, { body });
      assert.equal(res.status, 202, `${event}: ${res.text}`);
      assert.deepEqual(res.body, { accepted: 1 }, `${event} answer`);
      const got = await waitFor(s, event);
      assert.deepEqual(withoutTimestamp(got, event), body, `${event} payload on n2`);
    }
  });

  itest(cluster, 'typed events posted on n3 reach tabs on n1 and n2', async () => {
    const t1 = await cluster.authed('n1', 'x-typed2');
    const t2 = await cluster.authed('n2', 'x-typed2');
    for (const [event, body] of CASES) {
      const res = await cluster.api('n3', `/api/v1/users/x-typed2/events/${event}`, { body });
      assert.equal(res.status, 202, `${event}: ${res.text}`);
      const p1 = await waitFor(t1, event);
      const p2 = await waitFor(t2, event);
      assert.deepEqual(withoutTimestamp(p1, `${event} on n1`), body);
      assert.deepEqual(p2, p1, `${event}: both tabs get the same payload, timestamp included`);
    }
  });
});

describe('tabs on every node', () => {
  itest(cluster, 'a user with tabs on n1, n2 and n3 receives each event exactly once per tab, from every source node', async () => {
    const user = 'x-tabs';
    const tabs = {};
    for (const n of NODE_IDS) tabs[n] = await cluster.authed(n, user);
    const sent = [];
    for (const src of NODE_IDS) {
      for (let i = 0; i < 3; i++) {
        const data = { src, i };
        const res = await cluster.emit(src, user, 'tick', data);
        assert.equal(res.status, 202, res.text);
        sent.push(data);
      }
      const res = await cluster.api(src, `/api/v1/users/${user}/events/new_message`, { body: { message: { id: `typed-${src}` } } });
      assert.equal(res.status, 202, res.text);
    }
    // Markers last, then a quiet period for late duplicates.
    for (const src of NODE_IDS) assert.equal((await cluster.emit(src, user, 'marker', src)).status, 202);
    for (const n of NODE_IDS) for (let k = 0; k < 3; k++) await waitFor(tabs[n], 'marker');
    await sleep(400);

    const key = (d) => `${d.src}/${d.i}`;
    for (const n of NODE_IDS) {
      const ticks = received(tabs[n], 'tick').map((e) => key(e.args[0]));
      assert.deepEqual(ticks.slice().sort(), sent.map(key).sort(), `tab on ${n}: each tick exactly once; events: ${history(tabs[n])}`);
      // Per source node, order is kept.
      for (const src of NODE_IDS) {
        const fromSrc = received(tabs[n], 'tick').filter((e) => e.args[0].src === src).map((e) => e.args[0].i);
        assert.deepEqual(fromSrc, [0, 1, 2], `tab on ${n}: order of ticks from ${src}`);
      }
      const msgs = received(tabs[n], 'new_message').map((e) => e.args[0].message.id).sort();
      assert.deepEqual(msgs, NODE_IDS.map((src) => `typed-${src}`).sort(), `tab on ${n}: each new_message exactly once`);
      assert.equal(received(tabs[n], 'marker').length, 3, `tab on ${n}: each marker once; ${history(tabs[n])}`);
    }
  });

  itest(cluster, 'two tabs on the same remote node and one on the posting node: once each', async () => {
    const user = 'x-tabs2';
    const a = await cluster.authed('n1', user);
    const b1 = await cluster.authed('n3', user);
    const b2 = await cluster.authed('n3', user);
    const res = await cluster.emit('n1', user, 'once', { v: 1 });
    assert.equal(res.status, 202, res.text);
    for (const s of [a, b1, b2]) assert.deepEqual(await waitFor(s, 'once'), { v: 1 });
    for (const s of [a, b1, b2]) await expectNoEvent(s, 'once', 300);
  });
});

describe('isolation between users across nodes', () => {
  itest(cluster, 'an event for B (tabs on every node) never reaches A (tabs on every node): A sees only the marker', async () => {
    const as = {};
    const bs = {};
    for (const n of NODE_IDS) {
      as[n] = await cluster.authed(n, 'iso-a');
      bs[n] = await cluster.authed(n, 'iso-b');
    }
    const before = Object.fromEntries(NODE_IDS.map((n) => [n, received(as[n]).length]));

    for (const src of NODE_IDS) {
      let res = await cluster.emit(src, 'iso-b', 'secret_for_b', { secret: src });
      assert.equal(res.status, 202, res.text);
      res = await cluster.api(src, '/api/v1/users/iso-b/events/new_message', { body: { message: { id: `secret-${src}` } } });
      assert.equal(res.status, 202, res.text);
    }
    for (const n of NODE_IDS) {
      for (let k = 0; k < 3; k++) await waitFor(bs[n], 'secret_for_b');
      for (let k = 0; k < 3; k++) await waitFor(bs[n], 'new_message');
    }

    const res = await cluster.emit('n2', 'iso-a', 'marker', { m: 'a' });
    assert.equal(res.status, 202, res.text);
    for (const n of NODE_IDS) assert.deepEqual(await waitFor(as[n], 'marker'), { m: 'a' });
    await sleep(300);
    for (const n of NODE_IDS) {
      assert.deepEqual(namesSince(as[n], before[n]), ['marker'], `A on ${n} must see only the marker; events: ${history(as[n])}`);
      await expectNoEvent(bs[n], 'marker', 0);
    }
  });

  itest(cluster, 'user ids are matched exactly across nodes (no prefix or case folding)', async () => {
    const exact = await cluster.authed('n1', 'iso-user-1');
    const longer = await cluster.authed('n2', 'iso-user-10');
    const upper = await cluster.authed('n3', 'ISO-USER-1');
    const before = [longer, upper].map((s) => received(s).length);
    assert.equal((await cluster.emit('n3', 'iso-user-1', 'only_exact', {})).status, 202);
    await waitFor(exact, 'only_exact');
    assert.equal((await cluster.emit('n1', 'iso-user-10', 'marker', {})).status, 202);
    assert.equal((await cluster.emit('n1', 'ISO-USER-1', 'marker', {})).status, 202);
    await waitFor(longer, 'marker');
    await waitFor(upper, 'marker');
    assert.deepEqual(namesSince(longer, before[0]), ['marker'], history(longer));
    assert.deepEqual(namesSince(upper, before[1]), ['marker'], history(upper));
  });

  itest(cluster, 'an unauthenticated socket on another node gets none of the users\' events', async () => {
    const a = await cluster.authed('n1', 'iso-anon-a');
    const anon = cluster.connect('n2', { label: 'anon' });
    await waitFor(anon, 'connect');
    assert.equal((await cluster.emit('n3', 'iso-anon-a', 'for_a', 1)).status, 202);
    await waitFor(a, 'for_a');
    await expectNoEvent(anon, 'for_a', 300);
    assert.deepEqual(namesSince(anon, 0), [], history(anon));
  });
});

describe('authenticated only after the subscription is confirmed', () => {
  itest(cluster, '30 fresh users: connect to n2, authenticate, POST on n1 right after "authenticated": never missed', { timeout: 60_000 }, async () => {
    const misses = [];
    for (let i = 0; i < 30 && misses.length < 5; i++) {
      const user = `race-${i}-${Date.now()}`;
      const s = cluster.connect('n2', { label: user });
      await waitFor(s, 'connect', 5000);
      s.emit('authenticate', { token: makeToken(user) });
      await waitFor(s, 'authenticated', 5000);
      // Immediately: no await between seeing "authenticated" and posting.
      const res = await cluster.emit('n1', user, 'right_after', { i });
      assert.equal(res.status, 202, res.text);
      try {
        assert.deepEqual(await waitFor(s, 'right_after', 2000), { i });
      } catch (err) {
        misses.push(`${user}: ${err.message}`);
      }
      s.close();
    }
    assert.deepEqual(misses, [], `${misses.length} of the 30 emits (the loop stops at 5 misses) issued on n1 right after "authenticated" on n2 were missed`);
  });

  itest(cluster, '15 fresh users with CONNECT auth on n3, POST on n1 and n2 right after "authenticated": never missed', { timeout: 60_000 }, async () => {
    const misses = [];
    for (let i = 0; i < 15 && misses.length < 5; i++) {
      const user = `race-ca-${i}-${Date.now()}`;
      const s = cluster.connect('n3', { label: user, auth: { token: makeToken(user) } });
      await waitFor(s, 'authenticated', 5000);
      const src = i % 2 === 0 ? 'n1' : 'n2';
      const res = await cluster.emit(src, user, 'right_after', { i });
      assert.equal(res.status, 202, res.text);
      try {
        assert.deepEqual(await waitFor(s, 'right_after', 2000), { i });
      } catch (err) {
        misses.push(`${user} (posted on ${src}): ${err.message}`);
      }
      s.close();
    }
    assert.deepEqual(misses, [], `${misses.length} of the 15 emits were missed (the loop stops at 5 misses)`);
  });

  itest(cluster, 'a second tab of an already subscribed user on another node also gets the first emit after "authenticated"', async () => {
    const first = await cluster.authed('n1', 'race-second-tab');
    const misses = [];
    for (let i = 0; i < 10; i++) {
      const tab = cluster.connect(NODE_IDS[1 + (i % 2)], { label: `tab${i}` });
      await waitFor(tab, 'connect');
      tab.emit('authenticate', { token: makeToken('race-second-tab') });
      await waitFor(tab, 'authenticated');
      assert.equal((await cluster.emit('n1', 'race-second-tab', 'hello_tab', { i })).status, 202);
      try {
        assert.deepEqual(await waitFor(tab, 'hello_tab', 2000), { i });
      } catch (err) {
        misses.push(err.message);
      }
      assert.deepEqual(await waitFor(first, 'hello_tab'), { i });
      tab.close();
    }
    assert.deepEqual(misses, []);
  });
});

describe('disconnect across nodes', () => {
  itest(cluster, 'POST /api/v1/users/{id}/disconnect on n1 disconnects the user on every node; others stay', async () => {
    const tabs = {};
    for (const n of NODE_IDS) tabs[n] = await cluster.authed(n, 'kick-me');
    const stay = {};
    for (const n of NODE_IDS) stay[n] = await cluster.authed(n, 'kick-stay');

    const res = await cluster.api('n1', '/api/v1/users/kick-me/disconnect', { method: 'POST' });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { userId: 'kick-me' });
    for (const n of NODE_IDS) {
      const d = await waitForEntry(tabs[n], 'disconnect', 3000);
      assert.equal(d.args[0], 'io server disconnect', `tab on ${n}; events: ${history(tabs[n])}`);
    }
    for (const n of NODE_IDS) {
      await expectNoEvent(stay[n], 'disconnect', n === 'n1' ? 300 : 0);
      assert.equal(stay[n].connected, true, `kick-stay on ${n} still connected`);
    }
    assert.equal((await cluster.emit('n2', 'kick-stay', 'still_here', 1)).status, 202);
    for (const n of NODE_IDS) assert.equal(await waitFor(stay[n], 'still_here'), 1);

    for (const id of NODE_IDS) {
      await eventually(
        async () => {
          const r = await cluster.api(id, '/api/v1/users/kick-me/presence');
          return r.body?.connected === false && r.body?.connections === 0;
        },
        { message: `presence of kick-me on ${id} == {connected:false, connections:0}` },
      );
    }
  });
});
