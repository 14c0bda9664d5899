'use strict';
// Records what the official @socket.io/redis-emitter publishes and what
// notepack.io encodes, so adapter/wire_test.go checks the Go codec against the
// real Node packages without needing npm at test time.
//
//   cd adapter/testdata && npm ci && node gen-fixtures.js
//
// Writes emitter-fixtures.json ([{call, channel, hex, expect}]) and
// notepack-fixtures.json ([{name, uid, nsp, rooms, except, data, attachments, hex}]).
// "expect" and "data" are what a Node receiver sees: notepack.decode, then
// binaries replaced by socket.io placeholders, each data element through
// JSON.stringify.

const fs = require('fs');
const path = require('path');
const { Emitter } = require('@socket.io/redis-emitter');
const notepack = require('notepack.io'); // 3.0.1, what the emitter and redis-adapter v8 use
const legacy = require('notepack-legacy'); // 2.2.0, redis-adapter v7's dialect (ext type 0)

function isBinary(v) {
  return v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

function toBuffer(v) {
  return v instanceof ArrayBuffer ? Buffer.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

// Same walk as socket.io-parser's deconstructPacket.
function deconstruct(v, att) {
  if (isBinary(v)) {
    att.push(toBuffer(v).toString('hex'));
    return { _placeholder: true, num: att.length - 1 };
  }
  if (Array.isArray(v)) return v.map((x) => deconstruct(x, att));
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    const o = {};
    for (const k of Object.keys(v)) o[k] = deconstruct(v[k], att);
    return o;
  }
  return v;
}

// JSON of one element of an array, so undefined prints as null.
function elementJSON(v) {
  return JSON.stringify([v]).slice(1, -1);
}

function expectBroadcast(buf) {
  const [uid, packet, opts] = notepack.decode(buf);
  const attachments = [];
  const data = deconstruct(packet.data, attachments).map(elementJSON);
  return { uid, nsp: packet.nsp, rooms: opts.rooms, except: opts.except, data, attachments };
}

function record(call, parser, fn) {
  const calls = [];
  const client = {
    publish(channel, message) {
      calls.push({ channel, message });
      return Promise.resolve(1);
    },
  };
  fn(new Emitter(client, parser ? { parser } : undefined));
  if (calls.length !== 1) throw new Error(`${call}: ${calls.length} publishes`);
  const { channel, message } = calls[0];
  const buf = Buffer.isBuffer(message) ? message : Buffer.from(message, 'utf8');
  const expect = typeof message === 'string' ? JSON.parse(message) : expectBroadcast(buf);
  return { call, channel, hex: buf.toString('hex'), expect };
}

const emitterFixtures = [
  record('to("user:42").emit("new_message", {message:{id:"m1",text:"hi",z:1,a:2}, timestamp:"2024-01-01T00:00:00.000Z"})', null, (e) =>
    e.to('user:42').emit('new_message', { message: { id: 'm1', text: 'hi', z: 1, a: 2 }, timestamp: '2024-01-01T00:00:00.000Z' })),
  record('emit("broadcast_all", 1, "two", null, true, 3.5)', null, (e) =>
    e.emit('broadcast_all', 1, 'two', null, true, 3.5)),
  record('to("user:7").emit("bin", Buffer.from([1,2,3]), new Uint8Array([4,5]).buffer, {d: new Date(0), u: undefined})', null, (e) =>
    e.to('user:7').emit('bin', Buffer.from([1, 2, 3]), new Uint8Array([4, 5]).buffer, { d: new Date(0), u: undefined })),
  record('to("a").to("b").emit("two_rooms", {})', null, (e) =>
    e.to('a').to('b').emit('two_rooms', {})),
  record('in("user:42").disconnectSockets(true)', null, (e) =>
    e.in('user:42').disconnectSockets(true)),
  record('socketsJoin("x")', null, (e) =>
    e.socketsJoin('x')),
  // Extras: the protocol.md §4.2 emitter example, notepack 3 timestamps, and
  // legacy notepack 2 (ext type 0: undefined, Date, ArrayBuffer).
  record('to("user:42").emit("new_message", {id:1, text:"hi"})', null, (e) =>
    e.to('user:42').emit('new_message', { id: 1, text: 'hi' })),
  record('of("chat").except("banned").emit("dates", ...)', null, (e) =>
    e.of('chat').except('banned').emit('dates',
      new Date(Date.UTC(2024, 0, 1, 0, 0, 0, 123)), new Date(-1), new Date(Date.UTC(2500, 0, 1)),
      new Date(Date.UTC(20000, 0, 1)), [undefined, 1], { n: null })),
  record('legacy parser: to("user:7").emit("bin", Buffer.from([1,2,3]), new Uint8Array([4,5]).buffer, {d: new Date(0), u: undefined})', legacy, (e) =>
    e.to('user:7').emit('bin', Buffer.from([1, 2, 3]), new Uint8Array([4, 5]).buffer, { d: new Date(0), u: undefined })),
  record('legacy parser: emit("ext0", undefined, dates, typed arrays)', legacy, (e) =>
    e.emit('ext0', undefined, new Date(Date.UTC(2024, 0, 1)), new Date(-1), new Uint8Array(300),
      new Uint16Array([1, 2]), [undefined, new Date(Date.UTC(-1, 0, 1))])),
  record('except("s1").socketsLeave(["p","q"])', null, (e) =>
    e.except('s1').socketsLeave(['p', 'q'])),
  record('serverSideEmit("hello", {a:1})', null, (e) =>
    e.serverSideEmit('hello', { a: 1 })),
  record('disconnectSockets()', null, (e) =>
    e.disconnectSockets()),
];

// What the classic adapter publishes for a broadcast: [uid, packet, opts].
function adapterFixture(name, uid, nsp, rooms, except, data) {
  const hex = notepack.encode([uid, { type: 2, data, nsp }, { rooms, except, flags: {} }]).toString('hex');
  const attachments = [];
  const json = deconstruct(data, attachments).map(elementJSON);
  return { name, uid, nsp, rooms, except, data: json, attachments, hex };
}

const keys16 = {};
for (let i = 15; i >= 0; i--) keys16['k' + String(i).padStart(2, '0')] = i;

const notepackFixtures = [
  adapterFixture('golden', 'Xa9Qz1', '/', ['user:42'], [], ['new_message', { id: 1, text: 'hi' }]),
  adapterFixture('numbers', 'n0d3aa', '/', [], [], ['nums', 0, 127, 128, 255, 256, 65535, 65536, 4294967295,
    4294967296, 9007199254740991, -1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649,
    -9007199254740991, 0.1, -0.5, 5e-324, 123456.789, 1e-7, 0.000001, -1.5e-300]),
  // Not here: integral numbers of 2^64 and more (1e21), which notepack writes
  // as a corrupt uint64 and the Go codec as float64.
  adapterFixture('strings', 'n0d3aa', '/', ['r'], ['s'], ['strs', '', 'a'.repeat(31), 'b'.repeat(32),
    'c'.repeat(255), 'd'.repeat(256), 'héllo wörld 😀 日本', 'ctl \u0000\u001f "q" \\ / \n\t\u2028 <&>']),
  adapterFixture('objects', 'n0d3aa', '/chat', ['a', 'b'], [], ['objs',
    { z: 1, a: { y: [1, { c: null, b: false, a: true }], x: 's' }, m: [], o: {} }, keys16,
    Array.from({ length: 17 }, (_, i) => i * 1000)]),
  adapterFixture('binary', 'n0d3aa', '/', ['user:7'], [], ['bin', Buffer.from([1, 2, 3]),
    { file: Buffer.alloc(300, 7), name: 'f' }, [Buffer.alloc(0), 'x']]),
  adapterFixture('only_event', 'n0d3aa', '/', [], ['s1', 's2'], ['e']),
];

function write(name, value) {
  fs.writeFileSync(path.join(__dirname, name), JSON.stringify(value, null, 2) + '\n');
}
write('emitter-fixtures.json', emitterFixtures);
write('notepack-fixtures.json', notepackFixtures);
