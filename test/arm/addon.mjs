// The native addon on the target architecture (scripts/arm-test runs this on Debian's ARM
// Node 18 under qemu-user, inside a throwaway network namespace where it made the
// persistent TUN device vxarm0 10.99.0.1/24; it runs on x86 the same way). Checks what
// needs no privileges beyond that namespace: batched UDP on loopback (udpOpen, udpSend,
// udpRecv, pollStart/pollStop), errors shaped like Node's, unixDgramSend, and TUN
// read/write with the kernel answering a ping. Prints "N passed, N failed".
//   node test/arm/addon.mjs
import * as native from '../../dist/native/index.js';
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

console.log(`addon on ${process.arch}, Node ${process.version}: ${native.nativeAddonPath()}`);

await test('loads and exports every function', () => {
  for (const f of ['tunOpen', 'udpOpen', 'close', 'devRead', 'devWrite', 'udpRecv', 'udpSend', 'pollStart', 'pollStop', 'lastError', 'unixDgramSend']) {
    eq(typeof native[f], 'function', f);
  }
  const e = native.lastError();
  eq(JSON.stringify(e), JSON.stringify({ errno: 0, code: '', count: 0 }), 'lastError');
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
  eq(native.udpSend(a, buf, offs, lens, addrs, ports, sizes.length), sizes.length, 'sent');

  const slot = 9216 + 64;
  const rbuf = Buffer.alloc(slot * 8);
  const rl = new Int32Array(8);
  const ra = new Uint32Array(8);
  const rp = new Uint16Array(8);
  eq(native.udpRecv(b, rbuf, slot, 64, 8, rl, ra, rp), sizes.length, 'received');
  sizes.forEach((n, i) => {
    eq(rl[i], n, `len ${i}`);
    eq(ra[i], LOOPBACK, `addr ${i}`);
    eq(rp[i], PORT_A, `port ${i}`);
    eq(Buffer.compare(rbuf.subarray(i * slot + 64, i * slot + 64 + n), buf.subarray(offs[i], offs[i] + n)), 0, `bytes ${i}`);
  });
  eq(native.udpRecv(b, rbuf, slot, 64, 8, rl, ra, rp), 0, 'nothing more');
});

await test('udpRecv marks a datagram larger than its slot as truncated (-1)', () => {
  const buf = Buffer.alloc(600, 7);
  native.udpSend(a, buf, Int32Array.of(0), Int32Array.of(600), Uint32Array.of(LOOPBACK), Uint16Array.of(PORT_B), 1);
  const rl = new Int32Array(1);
  eq(native.udpRecv(b, Buffer.alloc(512), 512, 0, 1, rl, new Uint32Array(1), new Uint16Array(1)), 1, 'count');
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
      const n = native.udpRecv(b, rbuf, 2048, 0, 1, rl, new Uint32Array(1), new Uint16Array(1));
      native.pollStop(h);
      clearTimeout(t);
      resolve(n);
    });
  });
  const msg = Buffer.from('hello from the emulated loop');
  native.udpSend(a, msg, Int32Array.of(0), Int32Array.of(msg.length), Uint32Array.of(LOOPBACK), Uint16Array.of(PORT_B), 1);
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
    () => native.udpRecv(b, Buffer.alloc(100), 64, 0, 4, new Int32Array(4), new Uint32Array(4), new Uint16Array(4)),
    { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' },
    'slots outside the buffer',
  );
  throwsLike(() => native.close(987654), { code: 'EBADF', errno: 9, syscall: 'close' }, 'close a bad fd');
});

await test('unixDgramSend reports a missing socket as ENOENT and an unbound abstract name as ECONNREFUSED', () => {
  const e = throwsLike(() => native.unixDgramSend('/nonexistent/notify', Buffer.from('READY=1')), { code: 'ENOENT', errno: 2, syscall: 'sendto' }, 'path');
  eq(e.message, 'sendto /nonexistent/notify: no such file or directory (ENOENT)', 'message');
  throwsLike(() => native.unixDgramSend('@vxedge-arm-nobody', Buffer.from('READY=1')), { code: 'ECONNREFUSED', syscall: 'sendto' }, 'abstract');
  throwsLike(() => native.unixDgramSend('/x'.repeat(60), Buffer.from('x')), { name: 'RangeError' }, 'long path');
});

await test('TUN: the kernel answers an echo request written to vxarm0 (devWrite, pollStart, devRead)', async () => {
  let tun;
  try {
    tun = native.tunOpen('vxarm0', false);
  } catch (e) {
    if (process.env.VXEDGE_ARM_TUN !== 'optional') throw e;
    console.log(`skip TUN: ${e.message}`);
    return 'skip';
  }
  try {
    eq(tun.name, 'vxarm0', 'name');
    // 10.99.0.2 -> 10.99.0.1 (the device's address), ICMP echo request, id 0x5678 seq 1.
    const pkt = Buffer.alloc(20 + 8 + 32);
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
    pkt.writeUInt16BE(1, 26);
    for (let i = 0; i < 32; i++) pkt[28 + i] = i;
    pkt.writeUInt16BE(internetChecksum(pkt, 20, 40), 22);

    const slot = 2048;
    const rbuf = Buffer.alloc(slot * 8);
    const rl = new Int32Array(8);
    const reply = new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no echo reply from the kernel within 10 s')), 10_000);
      const h = native.pollStart(tun.fd, (err) => {
        if (err) return reject(err);
        const n = native.devRead(tun.fd, rbuf, slot, 32, 8, rl);
        for (let i = 0; i < n; i++) {
          const p = rbuf.subarray(i * slot + 32, i * slot + 32 + rl[i]);
          // Skip IPv6 chatter (router solicitations) the kernel may send first.
          if (p[0] >> 4 === 4 && p[9] === 1 && p[20] === 0 && p.readUInt16BE(24) === 0x5678) {
            native.pollStop(h);
            clearTimeout(t);
            resolve(Buffer.from(p));
          }
        }
      });
    });
    eq(native.devWrite(tun.fd, pkt, Int32Array.of(0), Int32Array.of(pkt.length), 1), 1, 'written');
    const r = await reply;
    eq(r.readUInt32BE(12), 0x0a630001, 'reply src');
    eq(r.readUInt32BE(16), 0x0a630002, 'reply dst');
    eq(internetChecksum(r, 0, 20), 0, 'reply header checksum');
    eq(Buffer.compare(r.subarray(28), pkt.subarray(28)), 0, 'echoed payload');
  } finally {
    native.close(tun.fd);
  }
});

native.close(a);
native.close(b);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
