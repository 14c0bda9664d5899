'use strict';

// The official @socket.io/redis-emitter (5.1.0, on node-redis 4.7.1 as its
// documentation shows) drives the cluster through the classic
// @socket.io/redis-adapter wire format, default key "socket.io".

const assert = require('node:assert/strict');
const { describe } = require('node:test');
const { Emitter } = require('@socket.io/redis-emitter');
const {
  NODE_IDS,
  useCluster,
  itest,
  waitFor,
  waitForEntry,
  expectNoEvent,
  received,
  history,
  namesSince,
  eventually,
  sleep,
} = require('./cluster');

const cluster = useCluster();
let emitterPromise;

/** The file's one Emitter, made on first use (once the cluster runs). */
function getEmitter() {
  // As in the emitter's README: createClient({url}) from "redis", then new Emitter(client).
  emitterPromise ??= cluster.redisClient().then((client) => new Emitter(client));
  return emitterPromise;
}

const PAYLOAD = {
  message: { id: 'em-1', text: 'from the emitter ✓', attachments: [{ kind: 'image', size: 12 }], meta: null },
  conversation: { id: 'c-em', platform: 'telegram', unread: 0 },
  timestamp: '2026-01-02T03:04:05.678Z',
};

describe('@socket.io/redis-emitter', () => {
  itest(cluster, 'emitter.to("user:42").emit("new_message", …) reaches user 42 on every node exactly once, with the exact payload', async () => {
    const emitter = await getEmitter();
    const tabs = {};
    for (const n of NODE_IDS) tabs[n] = await cluster.authed(n, '42');
    const others = {};
    for (const n of NODE_IDS) others[n] = await cluster.authed(n, '43');
    const before = Object.fromEntries(NODE_IDS.map((n) => [n, received(others[n]).length]));

    emitter.to('user:42').emit('new_message', PAYLOAD);
    for (const n of NODE_IDS) assert.deepEqual(await waitFor(tabs[n], 'new_message'), PAYLOAD, `user 42 on ${n}`);

    // Negative check: a marker to 43 afterwards; 43 sees only the marker.
    emitter.to('user:43').emit('marker', { for: 43 });
    for (const n of NODE_IDS) assert.deepEqual(await waitFor(others[n], 'marker'), { for: 43 });
    await sleep(300);
    for (const n of NODE_IDS) {
      assert.deepEqual(namesSince(others[n], before[n]), ['marker'], `user 43 on ${n}: ${history(others[n])}`);
      await expectNoEvent(tabs[n], 'new_message', 0);
      assert.equal(received(tabs[n], 'marker').length, 0, `user 42 on ${n} got 43's marker`);
    }
    for (const s of [...Object.values(tabs), ...Object.values(others)]) s.close();
  });

  itest(cluster, 'emitter events with several kinds of payload arrive unchanged on every node', async () => {
    const emitter = await getEmitter();
    const tabs = {};
    for (const n of NODE_IDS) tabs[n] = await cluster.authed(n, 'em-kinds');
    const values = [{ nested: { deep: [1, 2, { x: 'ü' }] } }, 'text', 12.5, [1, 'a'], null, true];
    for (const [i, v] of values.entries()) emitter.to('user:em-kinds').emit(`k${i}`, v);
    for (const n of NODE_IDS) {
      for (const [i, v] of values.entries()) assert.deepEqual(await waitFor(tabs[n], `k${i}`), v, `k${i} on ${n}`);
    }
    for (const s of Object.values(tabs)) s.close();
  });

  itest(cluster, 'emitter.in("user:42").disconnectSockets(true) disconnects user 42 on every node ("io server disconnect"); 43 stays', async () => {
    const emitter = await getEmitter();
    const tabs = {};
    for (const n of NODE_IDS) tabs[n] = await cluster.authed(n, '42');
    const other = await cluster.authed('n2', '43');
    await cluster.expectCluster(cluster.expectedNow());

    emitter.in('user:42').disconnectSockets(true);
    for (const n of NODE_IDS) {
      const d = await waitForEntry(tabs[n], 'disconnect', 3000);
      assert.equal(d.args[0], 'io server disconnect', `user 42 on ${n}: ${history(tabs[n])}`);
    }
    await expectNoEvent(other, 'disconnect', 300);
    assert.equal(other.connected, true);
    emitter.to('user:43').emit('still_here', 1);
    assert.equal(await waitFor(other, 'still_here'), 1);

    // Presence and figures follow.
    await cluster.expectCluster(cluster.expectedNow());
    assert.ok(cluster.livePairs().some(([, u]) => u === '43') && !cluster.livePairs().some(([, u]) => u === '42'));
    for (const id of NODE_IDS) {
      const r = await cluster.api(id, '/api/v1/users/42/presence');
      assert.deepEqual(r.body, { userId: '42', connected: false, connections: 0 }, `presence of 42 on ${id}`);
    }
    other.close();
  });

  itest(cluster, 'emitter.emit("broadcast_all", …) with no room reaches every authenticated socket on every node, once', async () => {
    const emitter = await getEmitter();
    const sockets = [];
    for (const [n, u] of [
      ['n1', 'all-a'],
      ['n2', 'all-a'],
      ['n2', 'all-b'],
      ['n3', 'all-c'],
      ['n3', 'all-d'],
      ['n1', 'all-d'],
    ]) {
      sockets.push(await cluster.authed(n, u));
    }
    const payload = { notice: 'maintenance at 02:00', severity: 'info', list: [1, 2] };
    emitter.emit('broadcast_all', payload);
    for (const s of sockets) assert.deepEqual(await waitFor(s, 'broadcast_all'), payload, `${s.hubLabel}: ${history(s)}`);
    await sleep(300);
    for (const s of sockets) assert.equal(received(s, 'broadcast_all').length, 1, `${s.hubLabel} once: ${history(s)}`);
    for (const s of sockets) s.close();
  });

  itest(cluster, 'emitter events with several arguments and binary attachments arrive intact on every node', async () => {
    const emitter = await getEmitter();
    const tabs = {};
    for (const n of NODE_IDS) tabs[n] = await cluster.authed(n, 'em-bin');
    const bytes = Buffer.from([0, 1, 2, 127, 128, 254, 255]);
    emitter.to('user:em-bin').emit('two_args', { a: 1 }, 'second');
    emitter.to('user:em-bin').emit('with_binary', { name: 'file.bin', data: bytes });
    for (const n of NODE_IDS) {
      const two = await waitForEntry(tabs[n], 'two_args');
      assert.deepEqual(two.args, [{ a: 1 }, 'second'], `two_args on ${n}`);
      const bin = await waitFor(tabs[n], 'with_binary');
      assert.equal(bin.name, 'file.bin', `with_binary on ${n}: ${history(tabs[n])}`);
      assert.ok(Buffer.isBuffer(bin.data) || bin.data instanceof ArrayBuffer, `with_binary.data on ${n} is binary: ${history(tabs[n])}`);
      assert.deepEqual([...new Uint8Array(bin.data)], [...bytes], `with_binary bytes on ${n}`);
    }
    for (const s of Object.values(tabs)) s.close();
  });

  itest(cluster, 'emitter.except(…) is honoured: a broadcast except user 43, and to(42).except(42), skip those sockets on every node', async () => {
    const emitter = await getEmitter();
    const a = {};
    const b = {};
    for (const n of NODE_IDS) {
      a[n] = await cluster.authed(n, 'ex-42');
      b[n] = await cluster.authed(n, 'ex-43');
    }
    const before = Object.fromEntries(NODE_IDS.map((n) => [n, received(b[n]).length]));
    const beforeA = Object.fromEntries(NODE_IDS.map((n) => [n, received(a[n]).length]));
    emitter.except('user:ex-43').emit('all_but_43', { x: 1 });
    emitter.to('user:ex-42').except('user:ex-42').emit('to_nobody', { x: 2 });
    emitter.to('user:ex-43').emit('marker', 43);
    emitter.to('user:ex-42').emit('marker', 42);
    for (const n of NODE_IDS) {
      assert.deepEqual(await waitFor(a[n], 'all_but_43'), { x: 1 }, `ex-42 on ${n}`);
      assert.equal(await waitFor(a[n], 'marker'), 42);
      assert.equal(await waitFor(b[n], 'marker'), 43);
    }
    await sleep(300);
    for (const n of NODE_IDS) {
      assert.deepEqual(namesSince(b[n], before[n]), ['marker'], `user ex-43 on ${n} must see only its marker: ${history(b[n])}`);
      assert.deepEqual(namesSince(a[n], beforeA[n]), ['all_but_43', 'marker'], `user ex-42 on ${n}: ${history(a[n])}`);
    }
    for (const s of [...Object.values(a), ...Object.values(b)]) s.close();
  });

  itest(cluster, 'emitter to a room with no member anywhere is harmless; the cluster still delivers afterwards', async () => {
    const emitter = await getEmitter();
    const s = await cluster.authed('n3', 'em-after');
    emitter.to('user:nobody-here').emit('lost', 1);
    emitter.to('user:em-after').emit('after', 2);
    assert.equal(await waitFor(s, 'after'), 2);
    await eventually(async () => (await cluster.healthOk('n1')).status === 'ok', { message: 'n1 healthy' });
    s.close();
  });
});
