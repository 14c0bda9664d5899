'use strict';

// HTTP long-polling in the cluster. A polling session is a series of HTTP
// requests that must all reach the node holding it; charts/nginx/hubnode.conf
// gives that affinity by hashing the client address (`hash $remote_addr
// consistent`). With it, polling and default-transport clients (polling,
// then upgrade) from distinct addresses work through nginx like WebSocket
// clients; without it (a second nginx, started here from a copy of the file
// with that one line removed: round robin), polling fails as it fails with
// Node: requests carrying a sid reach nodes that never saw it and get 400
// {"code":1,"message":"Session ID unknown"}.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe } = require('node:test');
const { Emitter } = require('@socket.io/redis-emitter');
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
  eventually,
  withoutTimestamp,
  httpCall,
  newSourceAddress,
  sleep,
} = require('./cluster');

const cluster = useCluster();

const NGINX_CONF_SRC = path.resolve(__dirname, '../../../../charts/nginx/hubnode.conf');
const AFFINITY_LINE = /^[ \t]*hash \$remote_addr consistent;[ \t]*\r?\n/m;
const UNKNOWN_SID = { code: 1, message: 'Session ID unknown' };
const POLLING = ['polling'];
const DEFAULT_TRANSPORTS = ['polling', 'websocket']; // socket.io-client's default order (the harness defaults to websocket only)

/** The transport a socket runs on now. */
const transportOf = (s) => s.io.engine?.transport?.name;

/** Waits until s runs on WebSocket (a default-transport client after its upgrade). */
async function expectUpgraded(s) {
  await eventually(() => transportOf(s) === 'websocket', {
    timeout: 5000,
    message: () => `${s.hubLabel} upgraded to websocket (transport ${transportOf(s)}; events: ${history(s)})`,
  });
}

/** A node other than id, chosen by k among the other two. */
function otherNode(id, k = 0) {
  const others = NODE_IDS.filter((n) => n !== id);
  return others[k % others.length];
}

/** Engine.IO polling URL of base (a node or nginx URL). */
const pollUrl = (base, sid) => `${base}/socket.io/?EIO=4&transport=polling${sid ? `&sid=${encodeURIComponent(sid)}` : ''}`;

/** A raw polling handshake on base: resolves the sid. */
async function rawHandshake(base, opts = {}) {
  const res = await httpCall(pollUrl(base), '', { key: null, ...opts });
  assert.equal(res.status, 200, `polling handshake on ${base}: ${res.status} ${res.text}`);
  assert.match(res.text, /^0\{/, `open packet: ${res.text}`);
  const open = JSON.parse(res.text.slice(1));
  assert.deepEqual(open.upgrades, ['websocket']);
  return open.sid;
}

/** A raw polling request with sid: GET, or POST of `body` (Engine.IO payload text). */
function rawPoll(base, sid, body, opts = {}) {
  return httpCall(pollUrl(base, sid), '', {
    key: null,
    ...(body === undefined ? {} : { method: 'POST', rawBody: body }),
    ...opts,
  });
}

function assertUnknownSid(res, label) {
  assert.equal(res.status, 400, `${label}: expected 400, got ${res.status} ${res.text}`);
  assert.deepEqual(res.body, UNKNOWN_SID, `${label}: body ${res.text}`);
}

describe('polling through nginx with client-address affinity', () => {
  itest(cluster, 'polling and default-transport clients from distinct addresses authenticate through nginx and receive emits posted on another node, exactly once', async (t) => {
    // One polling and one default-transport client on every node: new
    // addresses are drawn until each (node, kind) slot is filled, so every
    // node serves both kinds (which node an address maps to depends on the
    // hash ring, hence on this run's ports).
    const clients = []; // {s, user, home, kind, from}
    const open = new Set(NODE_IDS.flatMap((id) => [`${id}/polling`, `${id}/default`]));
    const skipped = [];
    for (let tries = 0; open.size > 0; tries++) {
      assert.ok(tries < 60, `no addresses for ${[...open].join(', ')} among 60 (skipped: ${skipped.join(', ')})`);
      const from = newSourceAddress();
      const home = await cluster.nodeFor(from);
      const kind = open.has(`${home}/polling`) ? 'polling' : open.has(`${home}/default`) ? 'default' : null;
      if (!kind) {
        skipped.push(`${from}→${home}`);
        continue;
      }
      open.delete(`${home}/${kind}`);
      const user = `pl-${kind}-${clients.length}`;
      const s = await cluster.authed('nginx', user, undefined, {
        from,
        transports: kind === 'polling' ? POLLING : DEFAULT_TRANSPORTS,
      });
      clients.push({ s, user, home, kind, from });
    }
    for (const c of clients) {
      if (c.kind === 'default') await expectUpgraded(c.s);
      else assert.equal(transportOf(c.s), 'polling', `${c.s.hubLabel} stays on polling`);
    }

    // Each client is on its address's node.
    const perNode = await cluster.connectionsPerNode();
    const expected = Object.fromEntries(NODE_IDS.map((id) => [id, clients.filter((c) => c.home === id).length]));
    t.diagnostic(`connections per node: ${JSON.stringify(perNode)} (clients: ${clients.map((c) => `${c.kind}@${c.from}→${c.home}`).join(', ')})`);
    assert.deepEqual(perNode, expected, 'connections per node vs the nodes the addresses map to');
    const stats = await cluster.api('nginx', '/api/v1/stats');
    assert.equal(stats.body?.totalConnections, clients.length, stats.text);

    // Emits posted on a node other than the client's own: a generic one and a typed one.
    for (const [k, c] of clients.entries()) {
      const via = otherNode(c.home, k);
      const res = await cluster.emit(via, c.user, 'cross', { to: c.user, via });
      assert.equal(res.status, 202, res.text);
      const typed = await cluster.api(otherNode(c.home, k + 1), `/api/v1/users/${c.user}/events/new_message`, {
        body: { message: { id: `m-${k}`, text: 'über ✓' }, conversation: { id: 'c1' } },
      });
      assert.equal(typed.status, 202, typed.text);
    }
    for (const [k, c] of clients.entries()) {
      assert.deepEqual(await waitFor(c.s, 'cross'), { to: c.user, via: otherNode(c.home, k) }, c.s.hubLabel);
      assert.deepEqual(withoutTimestamp(await waitFor(c.s, 'new_message'), 'new_message'), {
        message: { id: `m-${k}`, text: 'über ✓' },
        conversation: { id: 'c1' },
      });
    }
    await sleep(300); // duplicates, if any, arrive now
    for (const c of clients) {
      assert.equal(received(c.s, 'cross').length, 1, `${c.s.hubLabel}: ${history(c.s)}`);
      assert.equal(received(c.s, 'new_message').length, 1, `${c.s.hubLabel}: ${history(c.s)}`);
      assert.equal(received(c.s, 'disconnect').length, 0, `${c.s.hubLabel} stayed connected: ${history(c.s)}`);
    }
    for (const c of clients) if (c.kind === 'polling') assert.equal(transportOf(c.s), 'polling', c.s.hubLabel);
    for (const c of clients) c.s.close();
    await eventually(async () => (await cluster.clusterOf('n1')).totalConnections === 0, { message: 'cluster empty again' });
  });

  itest(cluster, 'a polling user receives cross-node emits like any other: tabs on polling (n1), websocket (n2) and upgraded (n3)', async () => {
    const user = 'pl-mixed';
    const tabs = {
      polling: await cluster.authed('n1', user, undefined, { transports: POLLING }),
      websocket: await cluster.authed('n2', user),
      upgraded: await cluster.authed('n3', user, undefined, { transports: DEFAULT_TRANSPORTS }),
    };
    await expectUpgraded(tabs.upgraded);
    assert.equal(transportOf(tabs.polling), 'polling');
    await cluster.expectCluster(cluster.expectedNow());
    const pres = await cluster.api('n2', `/api/v1/users/${user}/presence`);
    assert.deepEqual(pres.body, { userId: user, connected: true, connections: 3 });

    // 20 events posted on n3 arrive at every tab, in order, once.
    for (let i = 0; i < 20; i++) assert.equal((await cluster.emit('n3', user, 'seq', { i })).status, 202);
    // Typed events posted on n2 (the polling tab is on n1).
    const body = { unreadCounts: { whatsapp: 2 }, totalUnread: 2 };
    assert.equal((await cluster.api('n2', `/api/v1/users/${user}/events/unread_count_update`, { body })).status, 202);
    // The official Redis emitter, which talks to no node at all.
    const client = await cluster.redisClient();
    new Emitter(client).to(`user:${user}`).emit('from_emitter', { ok: true });

    for (const [name, s] of Object.entries(tabs)) {
      const got = [];
      for (let i = 0; i < 20; i++) got.push((await waitFor(s, 'seq')).i);
      assert.deepEqual(got, [...Array(20).keys()], `${name}: order`);
      assert.deepEqual(withoutTimestamp(await waitFor(s, 'unread_count_update')), body, name);
      assert.deepEqual(await waitFor(s, 'from_emitter'), { ok: true }, name);
    }
    await sleep(300);
    for (const [name, s] of Object.entries(tabs)) {
      assert.equal(received(s, 'seq').length, 20, `${name}: ${history(s)}`);
      assert.equal(received(s, 'from_emitter').length, 1, `${name}: ${history(s)}`);
      await expectNoEvent(s, 'unread_count_update', 0);
    }

    for (const s of Object.values(tabs)) s.close();
    await eventually(async () => (await cluster.api('n1', `/api/v1/users/${user}/presence`)).body?.connections === 0, {
      message: 'presence back to 0',
    });
  });

  itest(cluster, 'POST /users/{id}/disconnect on n3 reaches a polling tab on n1: disconnect "io server disconnect", as on websocket', async () => {
    const user = 'pl-kick';
    const tabs = {
      polling: await cluster.authed('n1', user, undefined, { transports: POLLING }),
      websocket: await cluster.authed('n2', user),
    };
    await sleep(100); // the polling tab's next GET is pending
    assert.equal((await cluster.api('n3', `/api/v1/users/${user}/disconnect`, { method: 'POST' })).status, 202);
    for (const s of Object.values(tabs)) await waitForEntry(s, 'disconnect', 3000);
    await sleep(200);
    for (const [name, s] of Object.entries(tabs)) {
      assert.deepEqual(received(s, 'disconnect').map((e) => e.args[0]), ['io server disconnect'], `${name}: disconnect reasons; events: ${history(s)}`);
    }
    await eventually(async () => (await cluster.api('n1', `/api/v1/users/${user}/presence`)).body?.connections === 0, {
      message: 'presence back to 0',
    });
  });

  itest(cluster, "a polling client through nginx with the guide's reconnect-and-authenticate code survives the drain of its node", { timeout: 40_000 }, async () => {
    await cluster.ensureAllNodes();
    const from = newSourceAddress();
    const home = await cluster.nodeFor(from);
    const token = makeToken('pl-roamer');
    const s = cluster.connect('nginx', {
      label: 'polling roamer',
      from,
      transports: POLLING,
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      timeout: 3000,
    });
    s.on('connect', () => s.emit('authenticate', { token }));
    await waitFor(s, 'connect', 5000);
    await waitFor(s, 'authenticated', 5000);
    await sleep(100); // its next GET is pending on the node

    const exit = cluster.termNode(home);
    assert.equal((await waitForEntry(s, 'disconnect', 5000)).args[0], 'transport close', history(s));
    const info = await exit;
    assert.deepEqual({ code: info.code, signal: info.signal }, { code: 0, signal: null }, `${home} exit after SIGTERM`);

    // nginx's hash moves the address to a live node; the session lives there.
    await waitFor(s, 'connect', 10_000);
    assert.deepEqual(await waitFor(s, 'authenticated', 5000), { userId: 'pl-roamer', email: 'pl-roamer@example.com' });
    const survivor = cluster.liveNodeIds().find((id) => id !== home);
    assert.equal((await cluster.emit(survivor, 'pl-roamer', 'found_you', { home })).status, 202);
    assert.deepEqual(await waitFor(s, 'found_you'), { home });
    assert.equal(transportOf(s), 'polling');
    s.close();
    await cluster.startNode(home);
    await cluster.expectCluster(cluster.expectedNow(), { timeout: 5000 });
  });
});

describe('polling without affinity (round robin) fails the way it fails with Node', () => {
  /** A second nginx whose hubnode.conf is the repository's minus the affinity line. */
  async function roundRobinNginx(t) {
    const original = fs.readFileSync(NGINX_CONF_SRC, 'utf8');
    assert.equal((original.match(new RegExp(AFFINITY_LINE.source, 'gm')) || []).length, 1, 'hubnode.conf has exactly one `hash $remote_addr consistent;` line');
    const conf = original.replace(AFFINITY_LINE, '');
    assert.equal(original.split('\n').length - conf.split('\n').length, 1, 'exactly one line removed');
    assert.doesNotMatch(conf, /^\s*(hash|ip_hash|sticky)\b/m, 'no other balancing directive left: round robin');
    const rr = await cluster.startExtraNginx('round-robin', conf);
    t.after(() => rr.stop());
    return rr;
  }

  itest(cluster, "a transports ['polling'] client through round robin gets connect_error (or a transport error), never authenticated", async (t) => {
    await cluster.ensureAllNodes();
    const rr = await roundRobinNginx(t);
    // WebSocket-only clients need no affinity: they still work through it.
    const ws = await cluster.authed(rr.url, 'pl-rr-ws');
    assert.equal((await cluster.emit('n1', 'pl-rr-ws', 'hi', 1)).status, 202);
    assert.equal(await waitFor(ws, 'hi'), 1);
    ws.close();

    for (let k = 0; k < 3; k++) {
      const s = cluster.connect(rr.url, { label: `rr polling ${k}`, transports: POLLING, from: newSourceAddress() });
      let responseText = null;
      const capture = (err) => {
        // The failed request's XHR, read before the client aborts it.
        responseText ??= err?.context?.responseText ?? err?.description?.context?.responseText ?? null;
      };
      s.on('connect_error', capture);
      s.on('disconnect', (_reason, desc) => capture(desc));
      s.on('connect', () => s.emit('authenticate', { token: makeToken('pl-rr-poll') }));
      const failed = await Promise.race([
        waitForEntry(s, 'connect_error', 5000).then((e) => ({ how: 'connect_error', err: e.args[0] })),
        waitForEntry(s, 'disconnect', 5000).then((e) => ({ how: 'disconnect', reason: e.args[0], err: e.args[1] })),
      ]);
      if (failed.how === 'connect_error') {
        assert.match(failed.err.message, /^xhr (poll|post) error$/, `connect_error: ${history(s)}`);
        assert.equal(failed.err.description, 400, `the failing request got 400: ${history(s)}`);
      } else {
        assert.equal(failed.reason, 'transport error', `disconnect reason: ${history(s)}`);
      }
      if (responseText !== null) assert.deepEqual(JSON.parse(responseText), UNKNOWN_SID, `answer of the failing request`);
      t.diagnostic(`round robin, polling client ${k}: ${history(s)}; failing answer ${responseText}`);
      await sleep(200);
      assert.equal(received(s, 'authenticated').length, 0, history(s));
      s.close();
    }
  });

  itest(cluster, 'a sid made on one node is unknown to the others: 400 {"code":1,"message":"Session ID unknown"}; round robin hits them, affinity does not', async (t) => {
    await cluster.ensureAllNodes();
    // Deterministically, node by node.
    for (const owner of NODE_IDS) {
      const sid = await rawHandshake(cluster.url(owner));
      for (const other of NODE_IDS.filter((id) => id !== owner)) {
        assertUnknownSid(await rawPoll(cluster.url(other), sid), `GET with ${owner}'s sid on ${other}`);
        assertUnknownSid(await rawPoll(cluster.url(other), sid, '40'), `POST with ${owner}'s sid on ${other}`);
      }
      // The owner knows it.
      const post = await rawPoll(cluster.url(owner), sid, '40');
      assert.equal(post.status, 200, `POST on the owner ${owner}: ${post.text}`);
      assert.equal(post.text, 'ok');
      const get = await rawPoll(cluster.url(owner), sid);
      assert.equal(get.status, 200, get.text);
      assert.match(get.text, /^40\{"sid":/, `CONNECT answer on ${owner}: ${get.text}`);
      assert.equal((await rawPoll(cluster.url(owner), sid, '1')).status, 200, 'close');
    }

    // Through round robin: of three consecutive requests of one session, the
    // two that go to the other nodes fail. (Nothing else uses this nginx now.)
    const rr = await roundRobinNginx(t);
    const sid = await rawHandshake(rr.url);
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await rawPoll(rr.url, sid, '6')); // noop packets
    const unknown = answers.filter((r) => r.status === 400);
    const ok = answers.filter((r) => r.status === 200);
    assert.equal(ok.length, 1, `one of 3 reaches the owner: ${answers.map((r) => `${r.status} ${r.text}`).join(' | ')}`);
    assert.equal(unknown.length, 2, `two of 3 reach other nodes: ${answers.map((r) => `${r.status} ${r.text}`).join(' | ')}`);
    for (const r of unknown) assertUnknownSid(r, 'through round robin');
    // Close it (round robin reaches the owner within three tries).
    for (let i = 0; i < 3; i++) if ((await rawPoll(rr.url, sid, '1')).status === 200) break;

    // Through the repository's nginx (affinity) from one address, every request reaches the owner.
    const from = newSourceAddress();
    const sid2 = await rawHandshake(cluster.url('nginx'), { from });
    for (let i = 0; i < 3; i++) {
      const r = await rawPoll(cluster.url('nginx'), sid2, '6', { from });
      assert.equal(r.status, 200, `request ${i} through the affinity nginx: ${r.status} ${r.text}`);
    }
    assert.equal((await rawPoll(cluster.url('nginx'), sid2, '1', { from })).status, 200);
    await eventually(async () => Object.values(await cluster.connectionsPerNode()).every((n) => n === 0), {
      message: 'raw sessions closed',
    });
  });
});
