// The native addon on the target architecture (scripts/arm-test runs this on the official ARM
// Node 20 under qemu-user, inside a throwaway network namespace where it made the
// persistent TUN device vxarm0 10.99.0.1/24; it runs on x86 the same way), reached as the
// product reaches it: nativeBinding() of the compiled dist/native/index.js. Checks what
// needs no privileges beyond that namespace: batched UDP on loopback (udpOpen, udpSend,
// udpRecv, pollStart/pollStop), errors shaped like Node's, unixDgramSend, and TUN
// read/write with the kernel answering pings, read packed into one buffer, and the kernel's
// netlink notices (netlinkOpen/netlinkRead).
// Prints "N passed, N failed".
//   node test/arm/addon.mjs
import { execFileSync } from 'node:child_process';
import { nativeAddonPath, nativeBinding } from '../../dist/native/index.js';
import { internetChecksum } from '../../dist/proto/ipv4.js';

let passed = 0;
let failed = 0;
let skipped = 0;
async function test(name, fn) {
  try {
    const r = await fn();
    if (r === 'skip') {
      skipped++;
      return;
    }
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${e && e.stack ? e.stack.split('\n').slice(0, 4).join('\n     ') : e}`);
  }
}
function eq(a, b, what = '') {
  if (a !== b) throw new Error(`${what} expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}
function throwsLike(fn, props, what) {
  try {
    fn();
  } catch (e) {
    for (const [k, v] of Object.entries(props)) {
      const got = k === 'name' ? e.constructor.name : e[k];
      if (got !== v) throw new Error(`${what}: ${k} expected ${JSON.stringify(v)}, got ${JSON.stringify(got)} (${e.message})`);
    }
    return e;
  }
  throw new Error(`${what}: did not throw`);
}
const LOOPBACK = 0x7f000001;
const PORT_A = 48472;
const PORT_B = 48473;

console.log(`addon on ${process.arch}, Node ${process.version}: ${nativeAddonPath()}`);
const native = nativeBinding();

await test('loads once and has every call of NativeBinding', () => {
  eq(nativeBinding(), native, 'same binding');
  const calls = [
    'tunOpen', 'devRead', 'devWrite', 'udpOpen', 'udpSetGro', 'udpRecv', 'udpSend', 'udpSendFailed', 'udpCheckOffloads', 'udpDrops', 'unixDgramSend',
    'udpSendThread', 'udpSendLost',
    'pollStart', 'pollStop', 'close', 'lastError', 'offloadStats', 'releasePages', 'clockState', 'passwordCheck', 'passwordHash', 'netlinkOpen', 'netlinkRead',
    '_pollCounts', '_tsoSegment', '_groCoalesce', '_senderHold',
  ];
  eq(Object.keys(native).sort().join(), [...calls].sort().join(), 'calls');
  for (const f of calls) eq(typeof native[f], 'function', f);
  const e = native.lastError();
  eq(JSON.stringify(e), JSON.stringify({ errno: 0, code: '', count: 0 }), 'lastError');
});

await test('releasePages checks its ranges before any madvise (the madvise itself is tested natively)', () => {
  eq(native.releasePages(new Float64Array(0)), 0, 'no range');
  throwsLike(() => native.releasePages(new Float64Array([4097, 4096])), { name: 'RangeError' }, 'misaligned');
});

await test("clockState reads the host kernel's clock sync through the emulator's struct timex (32-bit longs on armhf)", () => {
  const before = native.clockState();
  // The host's libc, natively (an x86-64 python3 under the emulated process's execve).
  const host = execFileSync('python3', ['-c', [
    'import ctypes',
    'class T(ctypes.Structure): _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long), ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int), ("rest", ctypes.c_char * 256)]',
    't = T(); r = ctypes.CDLL(None).adjtimex(ctypes.byref(t)); print(r, t.status, t.maxerror)',
  ].join('\n')], { encoding: 'utf8' }).trim().split(' ').map(Number);
  const after = native.clockState();
  eq([before, after].some((c) => c.state === host[0] && c.status === host[1]), true, `state and status as the host's ${host} (${JSON.stringify(after)})`);
  eq(Math.abs(after.maxErrorUs - host[2]) < 1_000_000, true, `maxErrorUs near the host's ${host[2]}: ${after.maxErrorUs}`);
});

await test("passwordHash/passwordCheck: bcrypt by the target's libcrypt (dlopen), a hash of htpasswd's checked", async () => {
  // Made on the host by Apache's htpasswd (its own bcrypt, not libxcrypt): `htpasswd -nbB -C 4 u 'pässwort 72'`.
  const apache = '$2y$04$iSwItXcn/GE30SreqEpyZOiQag4oyaik33zQrTD.cgvcBoIz2gDdW';
  eq(await native.passwordCheck('pässwort 72', apache), true, "htpasswd's hash");
  eq(await native.passwordCheck('pässwort 73', apache), false, 'another password');
  const ours = await native.passwordHash('metrics scraper', 4);
  eq(/^\$2b\$04\$[./A-Za-z0-9]{53}$/.test(ours), true, `a bcrypt hash of cost 4: ${ours}`);
  eq(await native.passwordCheck('metrics scraper', ours), true, 'our own hash');
  eq(ours === (await native.passwordHash('metrics scraper', 4)), false, 'a new salt each time');
});

const a = native.udpOpen(LOOPBACK, PORT_A, 1 << 20);
const b = native.udpOpen(LOOPBACK, PORT_B, 1 << 20);

await test('udpSend/udpRecv move a batch of datagrams byte-exact, with sender address and port', () => {
  const sizes = [1, 100, 1450, 9000];
  const buf = Buffer.alloc(16384);
  const offs = new Int32Array(sizes.length);
  const lens = new Int32Array(sizes.length);
  const addrs = new Uint32Array(sizes.length).fill(LOOPBACK);
  const ports = new Uint16Array(sizes.length).fill(PORT_B);
  let off = 0;
  sizes.forEach((n, i) => {
    for (let j = 0; j < n; j++) buf[off + j] = (i * 31 + j) & 0xff;
    offs[i] = off;
    lens[i] = n;
    off += n;
  });
  eq(native.udpSend(a, buf, offs, lens, addrs, ports, sizes.length, null, null, 0), sizes.length, 'sent');

  const slot = 9216 + 64;
  const rbuf = Buffer.alloc(slot * 8);
  const rl = new Int32Array(8);
  const ra = new Uint32Array(8);
  const rp = new Uint16Array(8);
  eq(native.udpRecv(b, rbuf, slot, 64, 8, rl, ra, rp, null), sizes.length, 'received');
  sizes.forEach((n, i) => {
    eq(rl[i], n, `len ${i}`);
    eq(ra[i], LOOPBACK, `addr ${i}`);
    eq(rp[i], PORT_A, `port ${i}`);
    eq(Buffer.compare(rbuf.subarray(i * slot + 64, i * slot + 64 + n), buf.subarray(offs[i], offs[i] + n)), 0, `bytes ${i}`);
  });
  eq(native.udpRecv(b, rbuf, slot, 64, 8, rl, ra, rp, null), 0, 'nothing more');
});

await test('udpDrops: one count per socket, -1 where the syscall layer does not say (qemu-user has no SO_MEMINFO)', () => {
  const d = native.udpDrops(b);
  eq(Array.isArray(d) && d.length, 1, 'one socket, one count');
  eq(d[0] === -1 || d[0] === 0, true, `nothing dropped, or unknown: ${d[0]}`);
  console.log(`udpDrops on ${process.arch} here: ${JSON.stringify(d)}`);
});

await test('the sender thread sends batches in order though the buffer is reused at once, and stops', async () => {
  eq(native.udpSendThread(true), true, 'started');
  const buf = Buffer.alloc(4 * 300);
  const offs = Int32Array.of(0, 300, 600, 900);
  const lens = Int32Array.of(300, 300, 300, 200);
  const expected = [];
  for (let k = 0; k < 6; k++) {
    for (let i = 0; i < buf.length; i++) buf[i] = (k * 7 + i) & 0xff;
    for (let i = 0; i < 4; i++) expected.push(Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])));
    eq(native.udpSend(a, buf, offs, lens, new Uint32Array(4).fill(LOOPBACK), new Uint16Array(4).fill(PORT_B), 4, null, null, 0), 4, `handed ${k}`);
    buf.fill(0xee);
  }
  eq(native.udpSendLost(), 0, 'none lost');
  const slot = 512;
  const rbuf = Buffer.alloc(slot * 32);
  const rl = new Int32Array(32);
  const got = [];
  for (let tries = 0; got.length < expected.length && tries < 100; tries++) {
    const c = native.udpRecv(b, rbuf, slot, 0, 32, rl, new Uint32Array(32), new Uint16Array(32), null);
    for (let i = 0; i < c; i++) got.push(Buffer.from(rbuf.subarray(i * slot, i * slot + rl[i])));
    if (c === 0) await new Promise((r) => setTimeout(r, 10));
  }
  eq(got.length, expected.length, 'received');
  expected.forEach((e, i) => eq(Buffer.compare(got[i], e), 0, `datagram ${i}`));
  eq(native.offloadStats().sendThread, 1, 'stats');
  eq(native.udpSendThread(false), false, 'stopped');
});

await test("udpSend's outer ECN field (IP_TOS control message) and udpRecv's ecn survive the syscall layer", () => {
  // Three VXLAN frames of one size whose inner IPv4 TOS is ECT(0), CE and Not-ECT: the outer
  // field is the inner one with CE as ECT(0), so the first two join one UDP_SEGMENT message
  // and the third goes in a message of its own.
  const frame = (tos) => {
    const f = Buffer.alloc(22 + 20 + 8 + 16, 0x61);
    f.fill(0, 0, 50);
    f[0] = 0x08;
    f[6] = 1;
    f.writeUInt16BE(0x0800, 20);
    f[22] = 0x45;
    f[23] = tos;
    f.writeUInt16BE(44, 24);
    f[31] = 17;
    return f;
  };
  const buf = Buffer.concat([frame(2), frame(3), frame(0)]);
  const n = 3;
  const len = buf.length / n;
  eq(native.udpSend(a, buf, Int32Array.from({ length: n }, (_, i) => i * len), new Int32Array(n).fill(len), new Uint32Array(n).fill(LOOPBACK), new Uint16Array(n).fill(PORT_B), n, null, null, 0), n, 'sent');
  const ecn = new Uint8Array(4).fill(0xee);
  const rl = new Int32Array(4);
  eq(native.udpRecv(b, Buffer.alloc(4 * 256), 256, 0, 4, rl, new Uint32Array(4), new Uint16Array(4), null, ecn), n, 'received');
  eq(JSON.stringify(Array.from(ecn.subarray(0, n))), JSON.stringify([2, 2, 0]), 'outer ECN');
});

await test('udpRecv marks a datagram larger than its slot as truncated (-1)', () => {
  const buf = Buffer.alloc(600, 7);
  native.udpSend(a, buf, Int32Array.of(0), Int32Array.of(600), Uint32Array.of(LOOPBACK), Uint16Array.of(PORT_B), 1, null, null, 0);
  const rl = new Int32Array(1);
  eq(native.udpRecv(b, Buffer.alloc(512), 512, 0, 1, rl, new Uint32Array(1), new Uint16Array(1), null), 1, 'count');
  eq(rl[0], -1, 'len');
});

await test('pollStart calls back on Node\'s loop when the socket is readable; pollStop ends it', async () => {
  let calls = 0;
  const rbuf = Buffer.alloc(2048);
  const rl = new Int32Array(1);
  const got = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no poll callback within 10 s')), 10_000);
    const h = native.pollStart(b, (err) => {
      calls++;
      if (err) return reject(err);
      const n = native.udpRecv(b, rbuf, 2048, 0, 1, rl, new Uint32Array(1), new Uint16Array(1), null);
      native.pollStop(h);
      clearTimeout(t);
      resolve(n);
    });
  });
  const msg = Buffer.from('hello from the emulated loop');
  native.udpSend(a, msg, Int32Array.of(0), Int32Array.of(msg.length), Uint32Array.of(LOOPBACK), Uint16Array.of(PORT_B), 1, null, null, 0);
  eq(await got, 1, 'received in callback');
  eq(rbuf.subarray(0, rl[0]).toString(), msg.toString(), 'payload');
  eq(calls, 1, 'calls');
});

await test('setup failures throw Node-style system errors (code, errno, syscall)', () => {
  const e = throwsLike(() => native.udpOpen(LOOPBACK, PORT_A, 0), { code: 'EADDRINUSE', errno: 98, syscall: 'bind' }, 'bind twice');
  eq(e.message, 'bind 127.0.0.1:48472: address already in use (EADDRINUSE)', 'message');
  throwsLike(() => native.udpOpen('127.0.0.1', PORT_A, 0), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }, 'string address');
  throwsLike(() => native.udpOpen(LOOPBACK, 70000, 0), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, 'port');
  throwsLike(
    () => native.udpRecv(b, Buffer.alloc(100), 64, 0, 4, new Int32Array(4), new Uint32Array(4), new Uint16Array(4), null),
    { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' },
    'slots outside the buffer',
  );
  throwsLike(
    () => native.devRead(987654, Buffer.alloc(100), 0, 65536, 1, new Int32Array(1), new Int32Array(1), null),
    { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' },
    'room over 65535',
  );
  throwsLike(
    () => native.udpSend(a, Buffer.alloc(100), Int32Array.of(0), Int32Array.of(50), Uint32Array.of(LOOPBACK), Uint16Array.of(PORT_B), 1, Buffer.alloc(10), null, 22),
    { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' },
    'vnet without vnetIdx',
  );
  throwsLike(() => native.close(987654), { code: 'EBADF', errno: 9, syscall: 'close' }, 'close a bad fd');
});

await test('unixDgramSend reports a missing socket as ENOENT and an unbound abstract name as ECONNREFUSED', () => {
  const e = throwsLike(() => native.unixDgramSend('/nonexistent/notify', Buffer.from('READY=1')), { code: 'ENOENT', errno: 2, syscall: 'sendto' }, 'path');
  eq(e.message, 'sendto /nonexistent/notify: no such file or directory (ENOENT)', 'message');
  throwsLike(() => native.unixDgramSend('@vxedge-arm-nobody', Buffer.from('READY=1')), { code: 'ECONNREFUSED', syscall: 'sendto' }, 'abstract');
  throwsLike(() => native.unixDgramSend('/x'.repeat(60), Buffer.from('x')), { name: 'RangeError' }, 'long path');
});

/** Attaches to vxarm0 (made by scripts/arm-test); null when that may be skipped here. */
function openArmTun() {
  try {
    return native.tunOpen('vxarm0', false, 0);
  } catch (e) {
    if (process.env.VXEDGE_ARM_TUN !== 'optional') throw e;
    console.log(`skip TUN: ${e.message}`);
    return null;
  }
}

/** 10.99.0.2 -> 10.99.0.1 (the device's address), ICMP echo request, id 0x5678, `data` bytes. */
function echoRequest(seq, data) {
  const pkt = Buffer.alloc(20 + 8 + data);
  pkt[0] = 0x45;
  pkt.writeUInt16BE(pkt.length, 2);
  pkt.writeUInt16BE(0x4000, 6);
  pkt[8] = 64;
  pkt[9] = 1;
  pkt.writeUInt32BE(0x0a630002, 12);
  pkt.writeUInt32BE(0x0a630001, 16);
  pkt.writeUInt16BE(internetChecksum(pkt, 0, 20), 10);
  pkt[20] = 8;
  pkt.writeUInt16BE(0x5678, 24);
  pkt.writeUInt16BE(seq, 26);
  for (let i = 0; i < data; i++) pkt[28 + i] = (seq + i) & 0xff;
  pkt.writeUInt16BE(internetChecksum(pkt, 20, 8 + data), 22);
  return pkt;
}

/**
 * Polls the TUN and reads it into `buf` (filled with 0xaa before each read) with devRead,
 * until `want` echo replies came; resolves them (by seq) and every read's offsets/lengths
 * and whether anything outside its packets was written.
 */
function readEchoReplies(tun, buf, headroom, room, want) {
  const offs = new Int32Array(8);
  const lens = new Int32Array(8);
  const replies = new Map();
  const reads = [];
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${replies.size} of ${want} echo replies from the kernel within 10 s`)), 10_000);
    const h = native.pollStart(tun.fd, (err) => {
      if (err) return reject(err);
      buf.fill(0xaa);
      const n = native.devRead(tun.fd, buf, headroom, room, 8, offs, lens, null);
      const read = { offs: Array.from(offs.subarray(0, n)), lens: Array.from(lens.subarray(0, n)), outsideUntouched: true };
      reads.push(read);
      let end = 0;
      for (let i = 0; i < n; i++) {
        for (let k = end; k < offs[i]; k++) if (buf[k] !== 0xaa) read.outsideUntouched = false;
        end = offs[i] + lens[i];
        const p = buf.subarray(offs[i], end);
        // Skip IPv6 chatter (router solicitations) the kernel may send first.
        if (p[0] >> 4 === 4 && p[9] === 1 && p[20] === 0 && p.readUInt16BE(24) === 0x5678) replies.set(p.readUInt16BE(26), Buffer.from(p));
      }
      for (let k = end; k < buf.length; k++) if (buf[k] !== 0xaa) read.outsideUntouched = false;
      if (replies.size >= want) {
        native.pollStop(h);
        clearTimeout(t);
        resolve({ replies, reads });
      }
    });
  });
}

await test('TUN: the kernel answers an echo request written to vxarm0 (devWrite, pollStart, devRead)', async () => {
  const tun = openArmTun();
  if (!tun) return 'skip';
  try {
    eq(tun.name, 'vxarm0', 'name');
    const pkt = echoRequest(1, 32);
    const reply = readEchoReplies(tun, Buffer.alloc(8 * 2048), 32, 1500, 1);
    eq(native.devWrite(tun.fd, pkt, Int32Array.of(0), Int32Array.of(pkt.length), 1, false), 1, 'written');
    const r = (await reply).replies.get(1);
    eq(r.readUInt32BE(12), 0x0a630001, 'reply src');
    eq(r.readUInt32BE(16), 0x0a630002, 'reply dst');
    eq(internetChecksum(r, 0, 20), 0, 'reply header checksum');
    eq(Buffer.compare(r.subarray(28), pkt.subarray(28)), 0, 'echoed payload');
  } finally {
    native.close(tun.fd);
  }
});

await test('TUN: devRead packs packets at 64-byte boundaries behind the headroom, and stops when the buffer is full', async () => {
  const tun = openArmTun();
  if (!tun) return 'skip';
  try {
    // 4 requests in one write; replies of 60..63 bytes take 128 bytes each behind 32 of
    // headroom, so this buffer holds 2 per read however many are waiting.
    const reqs = [0, 1, 2, 3].map((i) => echoRequest(10 + i, 32 + i));
    const wbuf = Buffer.concat(reqs);
    const woffs = Int32Array.from(reqs, (_, i) => reqs.slice(0, i).reduce((a, q) => a + q.length, 0));
    const wlens = Int32Array.from(reqs, (q) => q.length);
    const HEAD = 32;
    const ROOM = 1500;
    const bufLen = 128 + HEAD + ROOM;
    const got = readEchoReplies(tun, Buffer.alloc(bufLen), HEAD, ROOM, 4);
    eq(native.devWrite(tun.fd, wbuf, woffs, wlens, 4, false), 4, 'written');
    const { replies, reads } = await got;
    reqs.forEach((q, i) => eq(Buffer.compare(replies.get(10 + i).subarray(28), q.subarray(28)), 0, `reply ${i}`));
    for (const rd of reads) {
      let pos = 0;
      rd.offs.forEach((at, i) => {
        eq(at, pos + HEAD, `offset of packet ${i} of [${rd.offs}] (lengths [${rd.lens}])`);
        // Read only while headroom + room bytes were left for it.
        if (at + ROOM > bufLen) throw new Error(`packet ${i} at ${at} was read with less than ${ROOM} bytes of room left`);
        pos = (at + rd.lens[i] + 63) & ~63;
      });
      eq(rd.outsideUntouched, true, 'nothing written outside the packets');
    }
  } finally {
    native.close(tun.fd);
  }
});

await test("netlinkRead: the kernel's notices of the device's address and its routes survive the syscall layer", async () => {
  // The running checks repair at these notices (control/kernel-events.ts); an emulator that
  // did not pass netlink through would leave them to the 30 s refresh.
  const tun = openArmTun();
  if (!tun) return 'skip';
  const fd = native.netlinkOpen();
  let bits = 0;
  const h = native.pollStart(fd, (err) => {
    if (err) throw err;
    bits |= native.netlinkRead(fd, 'vxarm0', 'lo');
  });
  const until = async (want, what) => {
    for (let i = 0; i < 400 && (bits & want) !== want; i++) await new Promise((r) => setTimeout(r, 5));
    eq(bits & want, want, what);
  };
  try {
    execFileSync('ip', ['addr', 'add', '10.99.7.1/32', 'dev', 'vxarm0']);
    await until(2, 'NETLINK_ADDRESS for an address added to vxarm0');
    execFileSync('ip', ['route', 'add', '10.99.8.0/24', 'dev', 'vxarm0']);
    execFileSync('ip', ['route', 'del', '10.99.8.0/24', 'dev', 'vxarm0']);
    await until(4, 'NETLINK_ROUTE_GONE for a route through vxarm0 deleted');
  } finally {
    native.pollStop(h);
    native.close(fd);
    try {
      execFileSync('ip', ['addr', 'del', '10.99.7.1/32', 'dev', 'vxarm0']);
    } catch {
      // gone with the device
    }
    native.close(tun.fd);
  }
});

native.close(a);
native.close(b);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
