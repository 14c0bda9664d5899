'use strict';

// Redis crash without persistence (kill -9, then started empty on the same
// port) while clients stay connected: the nodes refuse emits and readiness
// while it is down, and by themselves resume delivery and restore their
// presence once it is back.

const assert = require('node:assert/strict');
const { isDeepStrictEqual } = require('node:util');
const { describe } = require('node:test');
const {
  NODE_IDS,
  useCluster,
  itest,
  waitFor,
  received,
  history,
  eventually,
  sortedCluster,
  report,
  sleep,
} = require('./cluster');

const cluster = useCluster();

const RECOVER_LIMIT_MS = 5_000;
const RECOVER_GOAL_MS = 2_000;
const DETECT_LIMIT_MS = 5_000;

/** Sockets a test made: rr-a on n1 and n3, rr-b on n2, rr-c on n3. */
async function clients(prefix) {
  return {
    a1: await cluster.authed('n1', `${prefix}-a`),
    a3: await cluster.authed('n3', `${prefix}-a`),
    b: await cluster.authed('n2', `${prefix}-b`),
    c: await cluster.authed('n3', `${prefix}-c`),
  };
}

/** Cross-node paths: [source node, user, sockets that must receive]. */
function paths(prefix, s) {
  return [
    ['n1', `${prefix}-b`, [s.b]],
    ['n2', `${prefix}-c`, [s.c]],
    ['n2', `${prefix}-a`, [s.a1, s.a3]],
  ];
}

/** /health/ready status of every node ({n1: 200, …}). */
async function readyStates() {
  const out = {};
  await Promise.all(
    NODE_IDS.map(async (id) => {
      try {
        out[id] = (await cluster.api(id, '/health/ready', { key: null, timeout: 1000 })).status;
      } catch (err) {
        out[id] = err.cause?.code || err.message;
      }
    }),
  );
  return out;
}

/**
 * Emits on each path until its sockets receive it; resolves the ms (since
 * t0) at which every path delivered, and the emits answered 202 whose event
 * never arrived.
 */
async function pollDelivery(prefix, s, t0, limitMs, label) {
  const pending = paths(prefix, s).map(([src, user, socks]) => ({ src, user, socks, done: false }));
  const silentLoss = [];
  let seq = 0;
  while (pending.some((p) => !p.done)) {
    if (Date.now() - t0 > limitMs + 1000) break;
    for (const p of pending.filter((q) => !q.done)) {
      seq += 1;
      const event = `${label}_probe`;
      const readyBefore = await readyStates();
      let res;
      const sentAt = Date.now();
      try {
        res = await cluster.emit(p.src, p.user, event, { seq });
      } catch (err) {
        res = { status: `error ${err.message}` };
      }
      if (res.status !== 202) continue;
      const allGot = await Promise.all(
        p.socks.map((sock) =>
          eventually(() => received(sock, event).some((e) => e.args[0]?.seq === seq), { timeout: 300, interval: 10 })
            .then(() => true)
            .catch(() => false),
        ),
      );
      if (allGot.every(Boolean)) {
        p.done = true;
        p.at = Date.now() - t0;
      } else {
        // Whether the nodes claimed readiness just before an accepted emit went nowhere.
        silentLoss.push({ src: p.src, user: p.user, seq, sentAt: sentAt - t0, readyBefore });
      }
    }
    if (pending.some((p) => !p.done)) await sleep(50);
  }
  const notDone = pending.filter((p) => !p.done).map((p) => `${p.src}→${p.user}`);
  return { ms: notDone.length ? null : Math.max(...pending.map((p) => p.at)), notDone, silentLoss, pending };
}

/** Polls until every node's /health/ready is 200; resolves per-node ms since t0 (null when not within limit). */
async function pollReady(t0, limitMs) {
  const at = {};
  while (Date.now() - t0 <= limitMs + 1000 && NODE_IDS.some((id) => at[id] === undefined)) {
    await Promise.all(
      NODE_IDS.filter((id) => at[id] === undefined).map(async (id) => {
        try {
          const res = await cluster.api(id, '/health/ready', { key: null, timeout: 1000 });
          if (res.status === 200) at[id] = Date.now() - t0;
        } catch {
          // not yet
        }
      }),
    );
    await sleep(25);
  }
  return at;
}

/** Polls until every node's /health says redis connected and cluster == the truth; resolves ms since t0 or null. */
async function pollFigures(t0, limitMs) {
  const expected = cluster.expectedNow();
  const last = {};
  while (Date.now() - t0 <= limitMs + 1000) {
    let ok = true;
    for (const id of NODE_IDS) {
      try {
        const res = await cluster.health(id);
        last[id] = { status: res.status, redis: res.body?.services?.redis, cluster: sortedCluster(res.body?.cluster) };
        if (res.status !== 200 || res.body.services.redis !== 'connected' || !isDeepStrictEqual(last[id].cluster, expected)) ok = false;
      } catch (err) {
        last[id] = `error: ${err.message}`;
        ok = false;
      }
    }
    if (ok) return { ms: Date.now() - t0, expected, last };
    await sleep(50);
  }
  return { ms: null, expected, last };
}

function fmt(ms) {
  return ms === null || ms === undefined ? `NOT within ${RECOVER_LIMIT_MS} ms` : `${ms} ms${ms <= RECOVER_GOAL_MS ? '' : ` (above the ${RECOVER_GOAL_MS} ms goal)`}`;
}

/** After recovery: 3 emits on every path, each received exactly once by each socket. */
async function assertDeliveryExactlyOnce(prefix, s) {
  for (const [src, user, socks] of paths(prefix, s)) {
    for (let k = 0; k < 3; k++) {
      const res = await cluster.emit(src, user, 'after_recovery', { src, k });
      assert.equal(res.status, 202, `${src}→${user}: ${res.text}`);
    }
    for (const sock of socks) for (let k = 0; k < 3; k++) assert.deepEqual(await waitFor(sock, 'after_recovery'), { src, k });
  }
  await sleep(300);
  for (const sock of Object.values(s)) assert.equal(received(sock, 'after_recovery').length, 3, history(sock));
}

describe('Redis restart (kill -9, started empty on the same port)', () => {
  itest(cluster, 'while down: emit 503, /health/ready 503, redis "disconnected"; back within 5 s: ready, delivery and figures restored', { timeout: 60_000 }, async (t) => {
    const s = await clients('rr');
    await cluster.expectCluster(cluster.expectedNow());
    assert.equal((await cluster.emit('n1', 'rr-b', 'before', 1)).status, 202);
    assert.equal(await waitFor(s.b, 'before'), 1);

    const killedAt = Date.now();
    await cluster.killRedis();
    let emitsMs;
    const emitLatency = [];

    // Readiness and /health follow: polled from the kill on, in parallel with the emits below.
    const detected = {};
    const detectMs = {};
    const detection = Promise.all(
      NODE_IDS.map((id) =>
        eventually(
          async () => {
            const ready = await cluster.api(id, '/health/ready', { key: null, timeout: 2000 });
            const h = await cluster.health(id);
            detected[id] = { ready: ready.status, health: h.status, status: h.body?.status, redis: h.body?.services?.redis };
            const ok = ready.status === 503 && h.body?.services?.redis === 'disconnected';
            if (ok) detectMs[id] = Date.now() - killedAt;
            return ok;
          },
          {
            timeout: DETECT_LIMIT_MS,
            interval: 50,
            message: () => `${id}: /health/ready 503 and services.redis "disconnected" with Redis down (last ${JSON.stringify(detected[id])})`,
          },
        ),
      ),
    );

    detection.catch(() => {}); // awaited below; no unhandled rejection if an emit check fails first

    // Every node refuses an emit it cannot spread (never a silent 202).
    for (const [src, user] of [
      ['n1', 'rr-b'],
      ['n2', 'rr-c'],
      ['n3', 'rr-b'],
    ]) {
      const sentAt = Date.now();
      const res = await cluster.emit(src, user, 'during_outage', { src });
      emitLatency.push([src, Date.now() - sentAt]);
      assert.equal(res.status, 503, `POST /api/v1/emit on ${src} with Redis down: ${res.status} ${res.text}`);
      assert.equal(typeof res.body?.error, 'string', `503 body is {"error": …}: ${res.text}`);
      const typedAt = Date.now();
      const typed = await cluster.api(src, `/api/v1/users/${user}/events/new_message`, { body: { message: { id: 'x' } } });
      emitLatency.push([`${src} typed`, Date.now() - typedAt]);
      assert.equal(typed.status, 503, `typed new_message on ${src} with Redis down: ${typed.status} ${typed.text}`);
    }
    emitsMs = Date.now() - killedAt;

    await detection;
    report(t, `Redis down: ready 503 and redis "disconnected" after kill -9 (ms per node: ${JSON.stringify(detectMs)}); POST /emit and typed emits answered 503 (latency per emit: ${JSON.stringify(emitLatency)}; all 6 done ${emitsMs} ms after the kill)`);
    for (const id of NODE_IDS) {
      const h = await cluster.health(id);
      assert.equal(h.body.services.redis, 'disconnected', `${id} services.redis`);
      assert.equal(h.body.nodeId, id);
      // README: /health is 503 with status "degraded" when the node should take no traffic.
      assert.equal(h.status, 503, `${id} /health HTTP status with Redis down: ${h.text}`);
      assert.equal(h.body.status, 'degraded', `${id} /health status with Redis down: ${h.text}`);
    }

    // Keep it down a little longer; clients stay connected meanwhile.
    await sleep(Math.max(0, 1500 - (Date.now() - killedAt)));
    for (const [name, sock] of Object.entries(s)) {
      assert.equal(sock.connected, true, `${name} still connected with Redis down: ${history(sock)}`);
    }

    await cluster.startRedis();
    const t0 = Date.now();
    report(t, `Redis was down for ${t0 - killedAt} ms`);

    const readyAt = await pollReady(t0, RECOVER_LIMIT_MS);
    const readyMs = NODE_IDS.every((id) => readyAt[id] !== undefined) ? Math.max(...NODE_IDS.map((id) => readyAt[id])) : null;
    report(t, `after Redis restart: /health/ready 200 on every node in ${fmt(readyMs)} (per node ${JSON.stringify(readyAt)})`);

    const delivery = await pollDelivery('rr', s, t0, RECOVER_LIMIT_MS, 'rr');
    report(
      t,
      `after Redis restart: cross-node delivery on every path in ${fmt(delivery.ms)} ` +
        `(per path ${JSON.stringify(delivery.pending.map((p) => [`${p.src}→${p.user}`, p.at ?? null]))}); ` +
        `emits answered 202 but not delivered meanwhile: ${JSON.stringify(delivery.silentLoss)}`,
    );

    const figures = await pollFigures(t0, RECOVER_LIMIT_MS);
    report(t, `after Redis restart: /health cluster figures equal the true counts on every node in ${fmt(figures.ms)}`);

    assert.ok(readyMs !== null && readyMs <= RECOVER_LIMIT_MS, `/health/ready not 200 on every node within ${RECOVER_LIMIT_MS} ms: ${JSON.stringify(readyAt)}`);
    assert.ok(delivery.ms !== null && delivery.ms <= RECOVER_LIMIT_MS, `cross-node delivery not back within ${RECOVER_LIMIT_MS} ms on: ${delivery.notDone.join(', ')}`);
    assert.ok(
      figures.ms !== null && figures.ms <= RECOVER_LIMIT_MS,
      `cluster figures not restored within ${RECOVER_LIMIT_MS} ms; expected ${JSON.stringify(figures.expected)}; last ${JSON.stringify(figures.last)}`,
    );

    // Nobody was disconnected by the outage; delivery is exact again; presence restored.
    for (const [name, sock] of Object.entries(s)) {
      assert.equal(received(sock, 'disconnect').length, 0, `${name} was disconnected: ${history(sock)}`);
    }
    await assertDeliveryExactlyOnce('rr', s);
    for (const id of NODE_IDS) {
      const r = await cluster.api(id, '/api/v1/users/rr-a/presence');
      assert.deepEqual(r.body, { userId: 'rr-a', connected: true, connections: 2 }, `presence of rr-a on ${id}`);
    }
  });

  itest(cluster, 'kill -9 and immediate restart: the nodes notice, restore presence and delivery within 5 s', { timeout: 40_000 }, async (t) => {
    const s = await clients('rq');
    await cluster.expectCluster(cluster.expectedNow());
    await cluster.restartRedis(0);
    const t0 = Date.now();

    const delivery = await pollDelivery('rq', s, t0, RECOVER_LIMIT_MS, 'rq');
    report(t, `immediate Redis restart: cross-node delivery back in ${fmt(delivery.ms)}; 202-but-lost emits: ${JSON.stringify(delivery.silentLoss)}`);
    const figures = await pollFigures(t0, RECOVER_LIMIT_MS);
    report(t, `immediate Redis restart: cluster figures restored in ${fmt(figures.ms)}`);
    const readyAt = await pollReady(Date.now(), 1000);
    assert.deepEqual(Object.keys(readyAt).sort(), NODE_IDS, `every node ready: ${JSON.stringify(readyAt)}`);

    assert.ok(delivery.ms !== null && delivery.ms <= RECOVER_LIMIT_MS, `cross-node delivery not back within ${RECOVER_LIMIT_MS} ms on: ${delivery.notDone.join(', ')}`);
    assert.ok(
      figures.ms !== null && figures.ms <= RECOVER_LIMIT_MS,
      `cluster figures not restored within ${RECOVER_LIMIT_MS} ms; expected ${JSON.stringify(figures.expected)}; last ${JSON.stringify(figures.last)}`,
    );
    for (const [name, sock] of Object.entries(s)) {
      assert.equal(received(sock, 'disconnect').length, 0, `${name} was disconnected: ${history(sock)}`);
    }
    await assertDeliveryExactlyOnce('rq', s);
  });
});
