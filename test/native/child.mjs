// Scenarios for test/native/addon.test.ts. Each runs in a fresh child Node process that the
// test starts INSIDE a network namespace of its own (`ip netns exec vxn-nat-...`), so devices,
// addresses and routes made here never touch the root namespace. The child reaches the addon
// as the product does, through nativeBinding() of the compiled dist/native/index.js, and
// prints one JSON line with what it saw; the test asserts on it.
//
//   node [--expose-gc] test/native/child.mjs <scenario>
//
// Every wait is bounded: a watchdog prints {"error":"timeout"} and exits 3 after 15 s.

import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, openSync, closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsyncLocalStorage, createHook, executionAsyncId } from 'node:async_hooks';
import { nativeAddonPath, nativeBinding, TUN_F_CSUM } from '../../dist/native/index.js';
import { sleep, until } from './wait.mjs';

const n = nativeBinding();

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ error: 'timeout', partial }));
  process.exit(3);
}, 15_000);
watchdog.unref();
let partial = {};

// ------------------------------------------------------------------ helpers

const sh = (cmd, ...args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ip4 = (s) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);
const ipStr = (a) => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');

/** After something that must happen exactly once has happened: a short while for a second time
 *  to show, if there is one (a level-triggered poll fires again within a loop turn or two). */
const SETTLE_MS = 100;

/** /proc/self/fdinfo flags of fd (octal in the file). */
function fdFlags(fd) {
  const m = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return parseInt(m[1], 8);
}

/** A captured error, as plain JSON. */
function caught(f) {
  try {
    f();
    return { threw: false };
  } catch (e) {
    return { threw: true, name: e.name, message: e.message, code: e.code, errno: e.errno, syscall: e.syscall, isError: e instanceof Error };
  }
}

function csum(buf, start, end, init = 0) {
  let sum = init;
  for (let i = start; i < end; i += 2) sum += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Write an IPv4 packet (header + payload of protocol proto) at buf[off]; returns its length. */
function ipv4(buf, off, src, dst, proto, payload) {
  const len = 20 + payload.length;
  buf.fill(0, off, off + 20);
  buf[off] = 0x45;
  buf.writeUInt16BE(len, off + 2);
  buf.writeUInt16BE(0x4000, off + 6); // DF
  buf[off + 8] = 64;
  buf[off + 9] = proto;
  buf.writeUInt32BE(src, off + 12);
  buf.writeUInt32BE(dst, off + 16);
  buf.writeUInt16BE(csum(buf, off, off + 20), off + 10);
  payload.copy(buf, off + 20);
  return len;
}

/** A UDP header + data, checksum 0 (none, allowed for IPv4). */
function udp(sport, dport, data) {
  const b = Buffer.alloc(8 + data.length);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt16BE(b.length, 4);
  data.copy(b, 8);
  return b;
}

function icmpEcho(type, id, seq, data) {
  const b = Buffer.alloc(8 + data.length);
  b[0] = type;
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(seq, 6);
  data.copy(b, 8);
  b.writeUInt16BE(csum(b, 0, b.length), 2);
  return b;
}

/** A TCP segment (ACK, or `flags`) from src:sport to dst:dport with `data`, its checksum
 *  right (the kernel answers a wrong one with nothing). */
function tcp(src, dst, sport, dport, data, flags = 0x10) {
  const b = Buffer.alloc(20 + data.length);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt32BE(1000, 4);
  b.writeUInt32BE(2000, 8);
  b[12] = 5 << 4;
  b[13] = flags;
  b.writeUInt16BE(65535, 14);
  data.copy(b, 20);
  const pseudo = Buffer.alloc(12);
  pseudo.writeUInt32BE(src, 0);
  pseudo.writeUInt32BE(dst, 4);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(b.length, 10);
  b.writeUInt16BE(csum(Buffer.concat([pseudo, b]), 0, 12 + b.length), 16);
  return b;
}

/** Poll fd until `done()` or `ms` elapse; onReadable runs the batch call. Resolves wakeups. */
function pollUntil(fd, onReadable, done, ms = 5000) {
  return new Promise((resolve) => {
    let wakeups = 0;
    const timer = setTimeout(() => {
      n.pollStop(h);
      resolve({ wakeups, timedOut: true });
    }, ms);
    const h = n.pollStart(fd, () => {
      wakeups++;
      onReadable();
      if (done()) {
        clearTimeout(timer);
        n.pollStop(h);
        resolve({ wakeups, timedOut: false });
      }
    });
  });
}

/** Receive `want` datagrams on fd (bounded in time); returns them with sender and length. */
async function recvAll(fd, want, { slot = 2048, headroom = 0, max = 256, ms = 5000 } = {}) {
  const buf = Buffer.alloc(slot * max, 0xaa);
  const lens = new Int32Array(max);
  const addrs = new Uint32Array(max);
  const ports = new Uint16Array(max);
  const got = [];
  const calls = [];
  let headroomOk = true;
  const res = await pollUntil(
    fd,
    () => {
      buf.fill(0xaa);
      const c = n.udpRecv(fd, buf, slot, headroom, max, lens, addrs, ports, null);
      calls.push(c);
      for (let i = 0; i < c; i++) {
        for (let k = i * slot; k < i * slot + headroom; k++) if (buf[k] !== 0xaa) headroomOk = false;
        const at = i * slot + headroom;
        got.push({
          len: lens[i],
          addr: addrs[i],
          port: ports[i],
          data: lens[i] >= 0 ? Buffer.from(buf.subarray(at, at + lens[i])) : null,
        });
      }
    },
    () => got.length >= want,
    ms,
  );
  return { got, calls, headroomOk, ...res };
}

/** Send datagrams (array of Buffers) from fd to addr:port with one udpSend; offsets get gaps. */
function sendAll(fd, datas, addr, port) {
  const offs = new Int32Array(datas.length);
  const lens = new Int32Array(datas.length);
  let total = 0;
  for (const d of datas) total += d.length + 5;
  const buf = Buffer.alloc(total + 3);
  let at = 3;
  datas.forEach((d, i) => {
    d.copy(buf, at);
    offs[i] = at;
    lens[i] = d.length;
    at += d.length + 5;
  });
  const addrs = new Uint32Array(datas.length).fill(addr);
  const ports = new Uint16Array(datas.length).fill(port);
  return n.udpSend(fd, buf, offs, lens, addrs, ports, datas.length, null, null, 0);
}

/** One devRead into buf (no virtio header); where the packets landed and their lengths. */
function devReadBatch(fd, buf, headroom, room, max) {
  const offs = new Int32Array(max);
  const lens = new Int32Array(max);
  const c = n.devRead(fd, buf, headroom, room, max, offs, lens, null);
  return { offs: Array.from(offs.subarray(0, c)), lens: Array.from(lens.subarray(0, c)) };
}

/** buf[from .. to) still holds the 0xaa it was filled with. */
function untouched(buf, from, to) {
  for (let k = from; k < to; k++) if (buf[k] !== 0xaa) return false;
  return true;
}

function tunUp(name, cidr) {
  sh('sysctl', '-qw', `net.ipv6.conf.${name}.disable_ipv6=1`); // no RS/MLD noise on the device
  sh('ip', 'addr', 'add', cidr, 'dev', name);
  sh('ip', 'link', 'set', name, 'up');
}

// --------------------------------------------------------------- scenarios

const scenarios = {
  /** 1. TUN/TAP open: names, device type, fd flags; device gone after close. */
  'tun-open'() {
    const tun = n.tunOpen('vxt%d', false, 0);
    const tap = n.tunOpen('vxp0', true, 0);
    const auto = n.tunOpen('', true, 0);
    const r = {
      addon: nativeAddonPath(),
      sameBinding: nativeBinding() === n,
      tun: { ...tun, flags: fdFlags(tun.fd), link: sh('ip', '-d', 'link', 'show', tun.name) },
      tap: { ...tap, flags: fdFlags(tap.fd), link: sh('ip', '-d', 'link', 'show', tap.name) },
      auto: { name: auto.name },
    };
    for (const t of [tun, tap, auto]) n.close(t.fd);
    r.afterClose = sh('ip', '-o', 'link', 'show');
    return r;
  },

  /** 2. TUN batching: UDP to a routed address comes out of the TUN as one batch, packed in
   *  one buffer; devWrite of crafted packets reaches a socket, and an ICMP echo request is
   *  answered; a packet larger than the room is flagged, and its space reused. */
  async 'tun-io'() {
    const HEAD = 64;
    const ROOM = 1500;
    const tun = n.tunOpen('vxr0', false, 0);
    tunUp('vxr0', '10.99.0.1/24');
    const tx = n.udpOpen(ip4('10.99.0.1'), 6666, 0);
    const rx = n.udpOpen(ip4('10.99.0.1'), 5555, 1 << 20);

    // 8 datagrams to 10.99.0.2:9999, routed into the TUN, in one sendmmsg.
    const datas = Array.from({ length: 8 }, (_, i) => Buffer.alloc(20 + i * 100, 0x30 + i));
    const sent = sendAll(tx, datas, ip4('10.99.0.2'), 9999);

    const buf = Buffer.alloc(64 * 2048, 0xaa);
    const pkts = [];
    const reads = [];
    let headroomOk = true;
    let tailOk = true;
    const res = await pollUntil(
      tun.fd,
      () => {
        buf.fill(0xaa);
        const rd = devReadBatch(tun.fd, buf, HEAD, ROOM, 64);
        reads.push(rd);
        // Outside the packets nothing is written: not the headroom in front of each, nor
        // the gap up to the next one's headroom (or the end of the buffer).
        rd.offs.forEach((at, i) => {
          if (!untouched(buf, at - HEAD, at)) headroomOk = false;
          const next = i + 1 < rd.offs.length ? rd.offs[i + 1] - HEAD : buf.length;
          if (!untouched(buf, at + rd.lens[i], next)) tailOk = false;
          const p = buf.subarray(at, at + rd.lens[i]);
          pkts.push({
            len: rd.lens[i],
            ver: p[0] >> 4,
            proto: p[9],
            src: ipStr(p.readUInt32BE(12)),
            dst: ipStr(p.readUInt32BE(16)),
            sport: p.readUInt16BE(20),
            dport: p.readUInt16BE(22),
            payloadOk: p[9] === 17 && p.subarray(28).equals(datas[pkts.filter((q) => q.proto === 17).length] ?? Buffer.alloc(0)),
          });
        });
      },
      () => pkts.filter((p) => p.proto === 17).length >= 8,
    );

    // devWrite: [UDP, junk (not IP), UDP, ICMP echo request] with gaps and headroom.
    const wbuf = Buffer.alloc(4096, 0xee);
    const offs = new Int32Array(4);
    const wlens = new Int32Array(4);
    const src = ip4('10.99.0.2');
    const dst = ip4('10.99.0.1');
    offs[0] = 64;
    wlens[0] = ipv4(wbuf, 64, src, dst, 17, udp(7777, 5555, Buffer.from('first via devWrite')));
    offs[1] = 400;
    wlens[1] = 40;
    wbuf.fill(0, 400, 440); // version nibble 0: the TUN rejects it with EINVAL
    offs[2] = 1000;
    wlens[2] = ipv4(wbuf, 1000, src, dst, 17, udp(7777, 5555, Buffer.from('second via devWrite')));
    offs[3] = 2000;
    wlens[3] = ipv4(wbuf, 2000, src, dst, 1, icmpEcho(8, 0x1234, 7, Buffer.from('echo-data-0123456789')));
    const errBefore = n.lastError();
    const written = n.devWrite(tun.fd, wbuf, offs, wlens, 4, false);
    const errAfter = n.lastError();
    const delivered = await recvAll(rx, 2);

    const replies = [];
    const rbuf = Buffer.alloc(8 * 2048);
    await pollUntil(
      tun.fd,
      () => {
        const rd = devReadBatch(tun.fd, rbuf, 0, ROOM, 8);
        rd.offs.forEach((at, i) => {
          const p = rbuf.subarray(at, at + rd.lens[i]);
          if (p[9] !== 1) return;
          replies.push({
            src: ipStr(p.readUInt32BE(12)),
            dst: ipStr(p.readUInt32BE(16)),
            type: p[20],
            id: p.readUInt16BE(24),
            seq: p.readUInt16BE(26),
            data: p.subarray(28).toString(),
          });
        });
      },
      () => replies.length >= 1,
    );
    // A packet larger than the room is flagged -1 (the kernel would truncate it silently)
    // and its space is reused: the buffer holds one packet of room 200 behind its headroom,
    // so the 10-byte one can only be read in the same call if it lands where the big one did.
    const sentBig = sendAll(tx, [Buffer.alloc(1000, 1), Buffer.alloc(10, 2)], ip4('10.99.0.2'), 9999);
    const trunc = [];
    const tbuf = Buffer.alloc(64 + 200);
    await pollUntil(
      tun.fd,
      () => trunc.push(devReadBatch(tun.fd, tbuf, 64, 200, 2)),
      () => trunc.flatMap((rd) => rd.lens).length >= 2,
    );
    for (const fd of [tx, rx, tun.fd]) n.close(fd);
    return {
      sentBig,
      trunc,
      sent,
      reads,
      wakeups: res.wakeups,
      timedOut: res.timedOut,
      headroomOk,
      tailOk,
      pkts,
      written,
      errBefore,
      errAfter,
      delivered: delivered.got.map((g) => ({ addr: ipStr(g.addr), port: g.port, len: g.len, text: g.data.toString() })),
      replies,
    };
  },

  /** 2a. devRead packs a batch into the buffer and stops when it cannot hold another packet
   *  of `room` bytes: 6 packets of 100..105 bytes, each taking 192 bytes (32 of headroom,
   *  the packet, up to the next 64-byte boundary); the buffer holds 3. */
  async 'tun-packed'() {
    const HEAD = 32;
    const ROOM = 1500;
    const tun = n.tunOpen('vxk0', false, 0);
    tunUp('vxk0', '10.97.0.1/24');
    const tx = n.udpOpen(ip4('10.97.0.1'), 6668, 0);
    const datas = Array.from({ length: 6 }, (_, i) => Buffer.alloc(72 + i, 0x40 + i));
    const sent = sendAll(tx, datas, ip4('10.97.0.2'), 9997);
    const bufLen = 2 * 192 + HEAD + ROOM;
    const buf = Buffer.alloc(bufLen);
    let tooSmall;
    const reads = [];
    await pollUntil(
      tun.fd,
      () => {
        // Less than headroom + room bytes: nothing is read, nothing is lost.
        tooSmall ??= devReadBatch(tun.fd, Buffer.alloc(HEAD + ROOM - 1), HEAD, ROOM, 6);
        const rd = devReadBatch(tun.fd, buf, HEAD, ROOM, 6);
        reads.push({ ...rd, marks: rd.offs.map((at) => buf[at + 28]) }); // the datagram's fill byte
      },
      () => reads.flatMap((rd) => rd.lens).length >= 6,
    );
    const after = devReadBatch(tun.fd, buf, HEAD, ROOM, 6);
    n.close(tx);
    n.close(tun.fd);
    return { sent, bufLen, tooSmall, reads, after };
  },

  /** 2b. TAP: frames carry Ethernet headers both ways. */
  async 'tap-io'() {
    const tap = n.tunOpen('vxa0', true, 0);
    tunUp('vxa0', '10.98.0.1/24');
    sh('ip', 'neigh', 'replace', '10.98.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'vxa0', 'nud', 'permanent');
    const mac = readFileSync('/sys/class/net/vxa0/address', 'utf8').trim();
    const tx = n.udpOpen(ip4('10.98.0.1'), 6667, 0);
    const rx = n.udpOpen(ip4('10.98.0.1'), 5556, 0);
    const sent = sendAll(tx, [Buffer.from('a'), Buffer.from('bb'), Buffer.from('ccc')], ip4('10.98.0.2'), 9998);

    const buf = Buffer.alloc(16 * 1600);
    const frames = [];
    await pollUntil(
      tap.fd,
      () => {
        const rd = devReadBatch(tap.fd, buf, 14, 1514, 16); // headroom 14: room for an outer header
        rd.offs.forEach((at, i) => {
          const f = buf.subarray(at, at + rd.lens[i]);
          frames.push({
            len: rd.lens[i],
            dstMac: [...f.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':'),
            ethertype: f.readUInt16BE(12),
            proto: f[14 + 9],
            dport: f.readUInt16BE(14 + 22),
          });
        });
      },
      () => frames.filter((f) => f.ethertype === 0x0800 && f.dport === 9998).length >= 3,
    );

    // One frame in: Ethernet to the TAP's MAC, IPv4/UDP to 10.98.0.1:5556; plus a runt.
    const w = Buffer.alloc(256);
    Buffer.from(mac.split(':').map((x) => parseInt(x, 16))).copy(w, 0);
    Buffer.from([2, 0, 0, 0, 0, 2]).copy(w, 6);
    w.writeUInt16BE(0x0800, 12);
    const l = 14 + ipv4(w, 14, ip4('10.98.0.2'), ip4('10.98.0.1'), 17, udp(7778, 5556, Buffer.from('frame via devWrite')));
    const written = n.devWrite(tap.fd, w, new Int32Array([0, 0]), new Int32Array([5, l]), 2, false);
    const delivered = await recvAll(rx, 1);
    for (const fd of [tx, rx, tap.fd]) n.close(fd);
    return {
      sent,
      mac,
      frames,
      written,
      lastError: n.lastError(),
      delivered: delivered.got.map((g) => ({ addr: ipStr(g.addr), port: g.port, text: g.data.toString() })),
    };
  },

  /** 3. UDP batches on loopback: 100 varied datagrams, truncation, >1024 chunking, skips. */
  async udp() {
    const LO = ip4('127.0.0.1');
    const a = n.udpOpen(LO, 40001, 4 << 20);
    const b = n.udpOpen(LO, 40002, 4 << 20);
    const skmem = sh('ss', '-uanm', 'sport = :40002');

    // 100 datagrams, sizes 0..1399, distinct contents.
    const datas = Array.from({ length: 100 }, (_, i) => {
      const d = Buffer.alloc((i * 137) % 1400);
      for (let k = 0; k < d.length; k++) d[k] = (i * 31 + k * 7) & 255;
      return d;
    });
    const sent100 = sendAll(a, datas, LO, 40002);
    const r100 = await recvAll(b, 100, { slot: 2048, headroom: 64, max: 128 });
    const mismatches = r100.got
      .map((g, i) => (g.len === datas[i].length && g.data.equals(datas[i]) && g.addr === LO && g.port === 40001 ? -1 : i))
      .filter((i) => i >= 0);

    // Truncation: room = 264 - 64 = 200 bytes.
    const sizes = [100, 300, 50, 1000, 199, 200, 201];
    const sentT = sendAll(a, sizes.map((s) => Buffer.alloc(s, 1)), LO, 40002);
    const rT = await recvAll(b, sizes.length, { slot: 264, headroom: 64, max: 16 });

    // More than one sendmmsg/recvmmsg chunk (1024): 1500 small datagrams.
    const many = Array.from({ length: 1500 }, (_, i) => {
      const d = Buffer.alloc(8);
      d.writeUInt32BE(i, 0);
      return d;
    });
    const sentMany = sendAll(a, many, LO, 40002);
    const rMany = await recvAll(b, 1500, { slot: 64, max: 2000 });
    const inOrder = rMany.got.every((g, i) => g.len === 8 && g.data.readUInt32BE(0) === i);

    // A datagram to port 0 (EINVAL) in the middle is skipped, the rest go out.
    const errBefore = n.lastError();
    const five = [0, 1, 2, 3, 4].map((i) => Buffer.from(`skip-test-${i}`));
    const offs = new Int32Array(5);
    const lens = new Int32Array(5);
    const sbuf = Buffer.concat(five);
    five.reduce((at, d, i) => ((offs[i] = at), (lens[i] = d.length), at + d.length), 0);
    const ports = new Uint16Array([40002, 40002, 0, 40002, 40002]);
    const sentSkip = n.udpSend(a, sbuf, offs, lens, new Uint32Array(5).fill(LO), ports, 5, null, null, 0);
    // Which one: not the last, as a count alone would suggest.
    const failedSkip = new Uint8Array(7).fill(9);
    const failedN = n.udpSendFailed(failedSkip);
    const errAfter = n.lastError();
    const rSkip = await recvAll(b, 4);

    n.close(a);
    n.close(b);
    return {
      skmem,
      sent100,
      got100: r100.got.length,
      calls100: r100.calls,
      headroomOk: r100.headroomOk,
      mismatches,
      sentT,
      truncLens: rT.got.map((g) => g.len),
      sentMany,
      gotMany: rMany.got.length,
      callsMany: rMany.calls,
      inOrder,
      sentSkip,
      failedN,
      failedSkip: [...failedSkip],
      errBefore,
      errAfter,
      skipTexts: rSkip.got.map((g) => g.data.toString()),
    };
  },

  /** 4. Errors: system errors carry code/errno/syscall; bad arguments throw, never crash. */
  /** Consecutive datagrams of one size to one peer leave as one UDP_SEGMENT message each run,
   *  and arrive as the same datagrams, in order. */
  async 'udp-join'() {
    const LO = ip4('127.0.0.1');
    const a = n.udpOpen(LO, 0, 0);
    const b = n.udpOpen(LO, 7101, 0);
    const c = n.udpOpen(LO, 7102, 0);
    const payload = (tag, i, len) => Buffer.concat([Buffer.from(`${tag}-${String(i).padStart(3, '0')}`), Buffer.alloc(len - 7, i)]);
    // 20 of 114 bytes (a VXLAN-encapsulated 64-byte datagram) and a shorter last one to b,
    // 3 to c, then 5 more of 114 to b, one larger (starts a new message), and 70 (over 64 segments).
    const runs = [
      ...Array.from({ length: 20 }, (_, i) => ['b', payload('b', i, 114)]),
      ['b', payload('b', 20, 60)],
      ...Array.from({ length: 3 }, (_, i) => ['c', payload('c', i, 114)]),
      ...Array.from({ length: 5 }, (_, i) => ['b', payload('b', 21 + i, 114)]),
      ['b', payload('b', 26, 200)],
      ...Array.from({ length: 70 }, (_, i) => ['b', payload('b', 27 + i, 114)]),
    ];
    const offs = new Int32Array(runs.length);
    const lens = new Int32Array(runs.length);
    const addrs = new Uint32Array(runs.length).fill(LO);
    const ports = new Uint16Array(runs.length);
    const buf = Buffer.alloc(runs.length * 256);
    runs.forEach(([to, d], i) => {
      d.copy(buf, i * 256);
      offs[i] = i * 256;
      lens[i] = d.length;
      ports[i] = to === 'b' ? 7101 : 7102;
    });
    const before = n.offloadStats().gsoMessages;
    const sent = n.udpSend(a, buf, offs, lens, addrs, ports, runs.length, null, null, 0);
    const messages = n.offloadStats().gsoMessages - before;
    const wantB = runs.filter(([to]) => to === 'b').map(([, d]) => d);
    const wantC = runs.filter(([to]) => to === 'c').map(([, d]) => d);
    const gotB = await recvAll(b, wantB.length);
    const gotC = await recvAll(c, wantC.length);
    const same = (got, want) => got.length === want.length && got.every((g, i) => g.data.equals(want[i]));
    for (const fd of [a, b, c]) n.close(fd);
    return { sent, total: runs.length, messages, bOk: same(gotB.got, wantB), cOk: same(gotC.got, wantC), gotB: gotB.got.length, gotC: gotC.got.length };
  },

  // udpRecv's ecn: each datagram's outer ECN field (IP_RECVTOS), sent by Python with each of
  // the four values as IP_TOS (DSCP 46 beside it: only the low two bits are reported).
  async 'udp-ecn'() {
    const LO = ip4('127.0.0.1');
    const b = n.udpOpen(LO, 7103, 0, 2); // a group of two: both members report it
    sh('python3', '-c', [
      'import socket',
      'for tos in (0, 1, 2, 3, 0xb8 | 3):',
      '  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      '  s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)',
      '  s.sendto(b"ecn-%d" % tos, ("127.0.0.1", 7103))',
    ].join('\n'));
    const max = 8;
    const buf = Buffer.alloc(256 * max);
    const lens = new Int32Array(max);
    const addrs = new Uint32Array(max);
    const ports = new Uint16Array(max);
    const ecn = new Uint8Array(max).fill(0xee);
    const got = [];
    const res = await pollUntil(b, () => {
      const c = n.udpRecv(b, buf, 256, 0, max, lens, addrs, ports, null, ecn);
      for (let i = 0; i < c; i++) got.push({ text: buf.toString('latin1', i * 256, i * 256 + lens[i]), ecn: ecn[i] });
    }, () => got.length >= 5);
    const short = caught(() => n.udpRecv(b, buf, 256, 0, max, lens, addrs, ports, null, new Uint8Array(2)));
    const wrongType = caught(() => n.udpRecv(b, buf, 256, 0, max, lens, addrs, ports, null, new Int32Array(max)));
    n.close(b);
    got.sort((x, y) => x.text.localeCompare(y.text));
    return { timedOut: res.timedOut, got, short, wrongType };
  },

  errors() {
    const LO = ip4('127.0.0.1');
    const a = n.udpOpen(LO, 40010, 0);
    const r = {};
    r.addrInUse = caught(() => n.udpOpen(LO, 40010, 0));
    r.addrInUseAny = caught(() => n.udpOpen(0, 40010, 0));
    r.badAddr = caught(() => n.udpOpen(ip4('203.0.113.2'), 8472, 0)); // not local here
    r.longName = caught(() => n.tunOpen('x'.repeat(16), false, 0));
    r.badName = caught(() => n.tunOpen('bad name', false, 0));
    r.tapOffloads = caught(() => n.tunOpen('vxe1', true, TUN_F_CSUM));
    r.offloadsNeg = caught(() => n.tunOpen('vxe1', false, -1));
    r.queuesZero = caught(() => n.tunOpen('vxe1', false, 0, 0));
    r.queuesMany = caught(() => n.tunOpen('vxe1', false, 0, 17));
    const t = n.tunOpen('vxe0', false, 0);
    r.busy = caught(() => n.tunOpen('vxe0', false, 0));
    r.busyOffloads = caught(() => n.tunOpen('vxe0', false, TUN_F_CSUM));
    r.wrongType = caught(() => n.tunOpen('vxe0', true, 0));

    const buf = Buffer.alloc(1000);
    const i32 = (...v) => new Int32Array(v);
    const read = (fd, b, headroom, room, max, offs, lens, vnet = null) =>
      caught(() => n.devRead(fd, b, headroom, room, max, offs, lens, vnet));
    r.readRoomBig = read(t.fd, buf, 0, 65536, 1, i32(0), i32(0));
    r.readRoomZero = read(t.fd, buf, 0, 0, 1, i32(0), i32(0));
    r.readHeadroom = read(t.fd, buf, 4097, 100, 1, i32(0), i32(0));
    r.readMaxOffs = read(t.fd, buf, 0, 100, 5, new Int32Array(4), new Int32Array(5));
    r.readMaxLens = read(t.fd, buf, 0, 100, 5, new Int32Array(5), new Int32Array(4));
    r.readMaxVnet = read(t.fd, buf, 0, 100, 4, new Int32Array(4), new Int32Array(4), Buffer.alloc(39)); // 3 headers
    r.readFdType = read('3', buf, 0, 100, 1, i32(0), i32(0));
    r.readBufType = read(t.fd, new Int32Array(250), 0, 100, 1, i32(0), i32(0));
    r.readOffsType = read(t.fd, buf, 0, 100, 1, new Uint32Array(1), i32(0));
    r.readLensType = read(t.fd, buf, 0, 100, 1, i32(0), new Uint32Array(1));
    r.readVnetType = read(t.fd, buf, 0, 100, 1, i32(0), i32(0), new Int32Array(10));
    r.readFraction = read(t.fd, buf, 0, 100.5, 1, i32(0), i32(0));
    r.fewArgs = caught(() => n.devRead(t.fd, buf));
    r.writeEnd = caught(() => n.devWrite(t.fd, buf, i32(0, 990), i32(10, 11), 2, false));
    r.writeNeg = caught(() => n.devWrite(t.fd, buf, i32(-1), i32(10), 1, false));
    r.writeN = caught(() => n.devWrite(t.fd, buf, i32(0), i32(10, 10), 2, false));
    r.writeNVnet = caught(() => n.devWrite(t.fd, buf, new Int32Array(4097), new Int32Array(4097), 4097, true));
    r.writeVnetType = caught(() => n.devWrite(t.fd, buf, i32(0), i32(10), 1, 1));
    const send = (fd, offs, lens, addrs, ports, count, vnet = null, vnetIdx = null, encap = 0) =>
      caught(() => n.udpSend(fd, buf, offs, lens, addrs, ports, count, vnet, vnetIdx, encap));
    r.sendEnd = send(a, i32(999), i32(2), new Uint32Array(1), new Uint16Array(1), 1);
    r.sendNPorts = send(a, i32(0, 1), i32(1, 1), new Uint32Array(2), new Uint16Array(1), 2);
    r.sendEncap = send(a, i32(0), i32(100), new Uint32Array(1), new Uint16Array(1), 1, Buffer.alloc(10), i32(0), 65);
    r.sendNVnetIdx = send(a, i32(0, 0), i32(50, 50), new Uint32Array(2), new Uint16Array(2), 2, Buffer.alloc(20), i32(0));
    r.sendVnetAlone = send(a, i32(0), i32(50), new Uint32Array(1), new Uint16Array(1), 1, Buffer.alloc(10), null, 22);
    r.sendVnetIdxAlone = send(a, i32(0), i32(50), new Uint32Array(1), new Uint16Array(1), 1, null, i32(0), 22);
    const recv = (slot, max, lens, addrs, ports, segs = null) => caught(() => n.udpRecv(a, buf, slot, 0, max, lens, addrs, ports, segs));
    r.recvMaxPorts = recv(100, 5, new Int32Array(5), new Uint32Array(5), new Uint16Array(4));
    r.recvMaxSegs = recv(100, 5, new Int32Array(5), new Uint32Array(5), new Uint16Array(5), new Int32Array(4));
    r.recvSlots = recv(300, 4, new Int32Array(4), new Uint32Array(4), new Uint16Array(4));
    r.recvSegsType = recv(100, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1), new Uint32Array(1));
    r.sendOnTun = send(t.fd, i32(0), i32(1), new Uint32Array([LO]), new Uint16Array([1]), 1);
    r.pollNotFn = caught(() => n.pollStart(a, 'nope'));
    r.pollStopBad = caught(() => n.pollStop({ fd: a }));
    const h = n.pollStart(a, () => {});
    r.pollTwice = caught(() => n.pollStart(a, () => {}));
    n.pollStop(h);
    const dir = mkdtempSync(join(tmpdir(), 'vxn-'));
    const ffd = openSync(join(dir, 'file'), 'w');
    r.pollFile = caught(() => n.pollStart(ffd, () => {}));
    closeSync(ffd);
    rmSync(dir, { recursive: true });
    n.close(t.fd);
    r.readClosed = read(t.fd, buf, 0, 100, 1, i32(0), i32(0));
    r.writeClosed = caught(() => n.devWrite(t.fd, buf, i32(0), i32(20), 1, false));
    r.closeTwice = caught(() => n.close(t.fd));
    r.zeroMax = n.devRead(a, buf, 0, 100, 0, i32(), i32(), null);
    n.close(a);
    r.alive = true;
    return r;
  },

  /** 5. pollStop inside the callback, restart inside it, 1000 start/stop cycles, async context. */
  async poll() {
    const LO = ip4('127.0.0.1');
    const a = n.udpOpen(LO, 40020, 0);
    const b = n.udpOpen(LO, 40021, 0);
    const c = n.udpOpen(LO, 40022, 0);
    const r = {};

    // Stop inside the callback without reading: a level-triggered poll would fire again.
    sendAll(a, [Buffer.from('x')], LO, 40021);
    let calls = 0;
    let innerStop;
    const h1 = n.pollStart(b, () => {
      calls++;
      n.pollStop(h1);
      innerStop = caught(() => n.pollStop(h1)); // idempotent
    });
    await until(() => calls > 0, 'the callback');
    await sleep(SETTLE_MS);
    r.stopInside = { calls, innerStop, counts: n._pollCounts() };

    // Stop and restart on the same fd from inside the callback, then read.
    let restarted = 0;
    let h2 = n.pollStart(b, () => {
      n.pollStop(h2);
      h2 = n.pollStart(b, () => {
        restarted++;
        n.udpRecv(b, Buffer.alloc(64), 64, 0, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1), null);
        n.pollStop(h2);
      });
    });
    await until(() => restarted > 0, 'the restarted poll\'s callback');
    await sleep(SETTLE_MS);
    r.restart = { restarted, counts: n._pollCounts() };

    // 1000 start/stop cycles, then 100 cycles that stop from inside the callback.
    const gc = globalThis.gc;
    const settle = async () => {
      for (let i = 0; i < 5; i++) {
        gc();
        await new Promise((res) => setImmediate(res));
        await sleep(10);
      }
    };
    await settle();
    const baseline = n._pollCounts();
    const rss0 = process.memoryUsage().rss;
    for (let i = 0; i < 1000; i++) n.pollStop(n.pollStart(b, () => {}));
    let inner = 0;
    for (let i = 0; i < 100; i++) {
      sendAll(a, [Buffer.from('y')], LO, 40021);
      await new Promise((resolve) => {
        const h = n.pollStart(b, () => {
          inner++;
          n.udpRecv(b, Buffer.alloc(64), 64, 0, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1), null);
          n.pollStop(h);
          resolve();
        });
      });
    }
    r.cycles = { inner, baseline, before: n._pollCounts() };
    await settle();
    r.cycles.after = n._pollCounts();
    r.cycles.rssGrowth = process.memoryUsage().rss - rss0;

    // close(fd) stops a poll on it; pollStop afterwards is a no-op.
    const d = n.udpOpen(LO, 40023, 0);
    const hd = n.pollStart(d, () => {});
    n.close(d);
    r.closeStops = { counts: n._pollCounts(), stopAfter: caught(() => n.pollStop(hd)) };

    // Async context: microtasks run after each callback (before the next one in the same
    // loop turn), AsyncLocalStorage propagates, async_hooks sees the resource type.
    const types = [];
    const hook = createHook({
      init(id, type) {
        if (type === 'VXEDGE_POLL') types.push(type);
      },
    }).enable();
    const als = new AsyncLocalStorage();
    sendAll(a, [Buffer.from('b')], LO, 40021);
    sendAll(a, [Buffer.from('c')], LO, 40022);
    await sleep(50); // both fds readable before either poll starts: one epoll_wait reports both
    const order = [];
    const micro = {};
    const ctx = await new Promise((resolve) => {
      const seen = {};
      const start = (fd, name) =>
        als.run({ name }, () => {
          const h = n.pollStart(fd, () => {
            n.pollStop(h);
            n.udpRecv(fd, Buffer.alloc(64), 64, 0, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1), null);
            order.push(name);
            seen[name] = {
              store: als.getStore()?.name,
              asyncId: executionAsyncId(),
              otherMicrotaskRan: Object.keys(micro).length > 0,
            };
            queueMicrotask(() => {
              micro[name] = true;
            });
            if (Object.keys(seen).length === 2) setImmediate(() => resolve(seen));
          });
        });
      start(b, 'b');
      start(c, 'c');
    });
    hook.disable();
    r.context = { order, seen: ctx, types };

    for (const fd of [a, b, c]) n.close(fd);
    r.final = n._pollCounts();
    return r;
  },

  /** An exception thrown by the callback reaches process 'uncaughtException'. */
  async 'throw-handled'() {
    const LO = ip4('127.0.0.1');
    const a = n.udpOpen(LO, 40030, 0);
    const b = n.udpOpen(LO, 40031, 0);
    const seen = [];
    process.on('uncaughtException', (e) => seen.push(e.message));
    sendAll(a, [Buffer.from('x')], LO, 40031);
    let tick = false;
    const h = n.pollStart(b, () => {
      n.pollStop(h);
      process.nextTick(() => {
        tick = true;
      });
      throw new Error('boom-from-poll');
    });
    await until(() => seen.length > 0 && tick, 'the uncaught exception and the tick after it');
    await sleep(SETTLE_MS);
    n.close(a);
    n.close(b);
    return { seen, alive: true, tickRan: tick };
  },

  /** Without a handler, the exception ends the process like any uncaught one (exit 1). */
  'throw-unhandled'() {
    const LO = ip4('127.0.0.1');
    const a = n.udpOpen(LO, 40032, 0);
    const b = n.udpOpen(LO, 40033, 0);
    sendAll(a, [Buffer.from('x')], LO, 40033);
    n.pollStart(b, () => {
      throw new Error('boom-unhandled');
    });
    return undefined; // no JSON: the process must die from the exception
  },

  /** A TUN deleted under a poll: the callback gets an Error, reads then throw EBADFD. */
  /** Multi-queue TUN: a flow that fills its queue does not hold back the others, each
   *  flow stays in order, writes reach the stack, and close removes the device with every
   *  queue. The same traffic through one queue is the control. */
  async 'tun-multiqueue'() {
    const fdCount = () => readdirSync('/proc/self/fd').length;
    const fdsBefore = fdCount();
    const run = async (queues, name, net) => {
      const t = n.tunOpen(name, false, 0, queues);
      tunUp(name, `${net}.1/24`);
      const local = ip4(`${net}.1`);
      const remote = ip4(`${net}.2`);
      const ports = [7000, 7101, 7102, 7103, 7104, 7105, 7106, 7107, 7108];
      const socks = ports.map((p) => n.udpOpen(local, p, 0));
      // One reply per flow first: the kernel keeps a flow on the queue its packets were
      // written to, so from here on the queues are devWrite's choice, not chance.
      const wbuf = Buffer.alloc(ports.length * 128);
      const offs = new Int32Array(ports.length);
      const lens = new Int32Array(ports.length);
      ports.forEach((p, i) => {
        offs[i] = i * 128;
        lens[i] = ipv4(wbuf, i * 128, remote, local, 17, udp(9999, p, Buffer.from('reply')));
      });
      const written = n.devWrite(t.fd, wbuf, offs, lens, ports.length, false);
      const replies = await Promise.all(socks.map((fd) => recvAll(fd, 1, { max: 4, ms: 3000 })));
      // Not IP and too short for an IPv4 header: the queue hash must not read past it; the
      // kernel refuses it (version 0: EINVAL) and the error is counted, not thrown.
      const errorsBefore = n.lastError().count;
      const junkWritten = n.devWrite(t.fd, Buffer.from([0, 0, 0]), Int32Array.of(0), Int32Array.of(3), 1, false);
      const junkCounted = n.lastError().count - errorsBefore;
      // 40 datagrams of the bulk flow (port 7000), then one of each other flow.
      sendAll(socks[0], Array.from({ length: 40 }, (_, i) => Buffer.from(`bulk ${i}`)), remote, 9999);
      socks.slice(1).forEach((fd, i) => sendAll(fd, [Buffer.from(`small ${i}`)], remote, 9999));
      const batches = [];
      const buf = Buffer.alloc(8 * 2048);
      const total = () => batches.reduce((a, b) => a + b.length, 0);
      const res = await pollUntil(t.fd, () => {
        const rd = devReadBatch(t.fd, buf, 0, 1500, 8);
        batches.push(rd.offs.map((at, i) => buf.subarray(at + 28, at + rd.lens[i]).toString()).filter((x) => /^(bulk|small) /.test(x)));
      }, () => total() >= 48);
      for (const fd of socks) n.close(fd);
      n.close(t.fd);
      let gone = false;
      try {
        sh('ip', 'link', 'show', name);
      } catch {
        gone = true;
      }
      return { queues: t.queues, written, junkWritten, junkCounted, repliesDelivered: replies.every((r) => r.got.length === 1), batches, timedOut: res.timedOut, gone };
    };
    const multi = await run(4, 'vxq0', '10.97.0');
    const single = await run(1, 'vxq1', '10.97.1');
    return { multi, single, fdsLeaked: fdCount() - fdsBefore };
  },

  /** devRead's look: a queue that devWrite wrote bulk TCP to holds that download's ACKs and
   *  is left to the next full read; what the other queues hold is read at once. The bulk
   *  write is a 600-byte TCP segment to a closed port, so the kernel's answer (a RST, in the
   *  place of the ACKs) comes back on that flow's queue, as a download's ACKs do. */
  async 'tun-look'() {
    const t = n.tunOpen('vxl0', false, 0, 4);
    tunUp('vxl0', '10.97.2.1/24');
    const local = ip4('10.97.2.1');
    const remote = ip4('10.97.2.2');
    const ports = [7101, 7102, 7103, 7104, 7105, 7106, 7107, 7108];
    const socks = ports.map((p) => n.udpOpen(local, p, 0));
    const stats = () => {
      const o = n.offloadStats();
      return { reads: o.lookReads, left: o.lookLeft };
    };
    const write = (pkts) => {
      const wbuf = Buffer.alloc(pkts.length * 2048);
      const offs = new Int32Array(pkts.length);
      const lens = new Int32Array(pkts.length);
      pkts.forEach(([proto, payload], i) => {
        offs[i] = i * 2048;
        lens[i] = ipv4(wbuf, i * 2048, remote, local, proto, payload);
      });
      return n.devWrite(t.fd, wbuf, offs, lens, pkts.length, false);
    };
    // What a read returned: 'rst' for the kernel's answer to the bulk flow, 'small N' for a
    // datagram of small flow N.
    const buf = Buffer.alloc(16 * 2048);
    const read = (look) => {
      const offs = new Int32Array(16);
      const lens = new Int32Array(16);
      const c = n.devRead(t.fd, buf, 0, 1500, 16, offs, lens, null, look);
      const got = [];
      for (let i = 0; i < c; i++) {
        const at = offs[i];
        if (buf[at + 9] === 6) got.push(buf[at + 33] & 0x04 ? 'rst' : 'tcp');
        else if (buf[at + 9] === 17) got.push(buf.subarray(at + 28, at + lens[i]).toString());
      }
      return got;
    };
    const drainLook = () => {
      const all = [];
      for (let got = read(true); got.length > 0; got = read(true)) all.push(...got);
      return all;
    };
    // One packet per flow first, so that each flow's queue is devWrite's choice: the kernel
    // learns a flow's queue only once the write that carried it returns, so the answer to
    // that first packet itself (the bulk flow's first RST) may take another queue. A 20-byte
    // TCP segment marks nothing.
    const setup = write([...ports.map((p) => [17, udp(9999, p, Buffer.from('reply'))]), [6, tcp(remote, local, 9999, 7000, Buffer.alloc(0))]]);
    await Promise.all(socks.map((fd) => recvAll(fd, 1, { max: 4, ms: 3000 })));
    let first = [];
    const res0 = await pollUntil(t.fd, () => first.push(...read(false)), () => first.includes('rst'), 3000);

    const s0 = stats();
    const bulkWritten = write([[6, tcp(remote, local, 9999, 7000, Buffer.alloc(600, 1))]]);
    socks.forEach((fd, i) => sendAll(fd, [Buffer.from(`small ${i}`)], remote, 9999));
    // Everything above was queued on the device inside those calls; wait for readability
    // anyway (bounded), then look until a look finds nothing.
    let look = [];
    const res = await pollUntil(t.fd, () => look.push(...drainLook()), () => look.length > 0, 3000);
    const s1 = stats();
    const full = [];
    for (let got = read(false); got.length > 0; got = read(false)) full.push(...got);
    // After the full read the mark is gone, and a small TCP write (an ACK) sets none: its
    // RST is read by a look.
    const ackWritten = write([[6, tcp(remote, local, 9999, 7000, Buffer.alloc(0))]]);
    let after = [];
    const res2 = await pollUntil(t.fd, () => after.push(...drainLook()), () => after.length > 0, 3000);
    const s2 = stats();
    // A plain (one-queue) device is never read by a look.
    const one = n.tunOpen('vxl1', false, 0, 1);
    tunUp('vxl1', '10.97.3.1/24');
    const s3 = n.udpOpen(ip4('10.97.3.1'), 7200, 0);
    sendAll(s3, [Buffer.from('plain')], ip4('10.97.3.2'), 9999);
    const plainLook = n.devRead(one.fd, buf, 0, 1500, 16, new Int32Array(16), new Int32Array(16), null, true);
    const plainFull = n.devRead(one.fd, buf, 0, 1500, 16, new Int32Array(16), new Int32Array(16), null, false);
    for (const fd of [...socks, s3, one.fd, t.fd]) n.close(fd);
    return {
      setup, bulkWritten, ackWritten, look, full, after, plainLook, plainFull,
      timedOut: res0.timedOut || res.timedOut || res2.timedOut,
      first: { reads: s1.reads - s0.reads, left: s1.left - s0.left },
      second: { reads: s2.reads - s1.reads, left: s2.left - s1.left },
    };
  },

  /** A multi-queue TUN deleted under the poll: libuv sees the epoll fd readable, the read
   *  throws EBADFD (the data plane then stops the poll). */
  async 'tun-gone-multiqueue'() {
    const t = n.tunOpen('vxg1', false, 0, 2);
    const reads = [];
    const h = n.pollStart(t.fd, (err) => {
      reads.push(err ? { pollErr: err.code } : caught(() => n.devRead(t.fd, Buffer.alloc(100), 0, 100, 1, new Int32Array(1), new Int32Array(1), null)));
      n.pollStop(h);
    });
    sh('ip', 'link', 'del', 'vxg1');
    for (let i = 0; i < 100 && reads.length === 0; i++) await sleep(10);
    n.close(t.fd);
    return { queues: t.queues, reads };
  },

  // The kernel's notices, as the running checks get them: what concerns the two interfaces
  // named (the "device" vxnl0, the "underlay" vxnl1) and nothing else (vxnl2).
  async netlink() {
    const tun = n.tunOpen('vxnl0', false, 0); // the device as vxedge makes it
    for (const d of ['vxnl1', 'vxnl2']) sh('ip', 'link', 'add', d, 'type', 'veth', 'peer', 'name', `${d}p`);
    const fd = n.netlinkOpen();
    const flags = fdFlags(fd);
    let mask = 0;
    let reads = 0;
    const read = () => {
      reads++;
      mask |= n.netlinkRead(fd, 'vxnl0', 'vxnl1');
    };
    // An overflow is an error on the socket, which libuv reports as a poll error and stops
    // the poll for: the read takes the error (NETLINK_LOST), and the poll starts again, as
    // control/kernel-events.ts does.
    let pollErrors = 0;
    const onReadable = (err) => {
      if (err) {
        pollErrors++;
        n.pollStop(h);
        read();
        h = n.pollStart(fd, onReadable);
      } else {
        read();
      }
    };
    let h = n.pollStart(fd, onReadable);
    /** The bits the notices of `cmds` raised: waits for `want` bits, or SETTLE_MS when none are wanted. */
    const after = async (want, ...cmds) => {
      await sleep(SETTLE_MS); // what came before is read
      mask = 0;
      for (const c of cmds) sh('ip', ...c);
      if (want === 0) await sleep(SETTLE_MS);
      else await until(() => (mask & want) === want, `netlink bits ${want}`, 2000).catch(() => undefined);
      return mask;
    };
    const steps = {
      otherUp: await after(0, ['link', 'set', 'vxnl2', 'up'], ['addr', 'add', '10.99.2.1/24', 'dev', 'vxnl2']),
      otherRouteGone: await after(0, ['route', 'add', '10.244.9.0/24', 'dev', 'vxnl2'], ['route', 'del', '10.244.9.0/24', 'dev', 'vxnl2']),
      deviceUp: await after(1, ['link', 'set', 'vxnl0', 'up']),
      routeAdded: await after(0, ['route', 'add', '10.244.1.0/24', 'dev', 'vxnl0']),
      routeDeleted: await after(4, ['route', 'del', '10.244.1.0/24', 'dev', 'vxnl0']),
      underlayUp: await after(1, ['link', 'set', 'vxnl1', 'up']),
      underlayAddr: await after(2, ['addr', 'add', '192.0.2.10/24', 'dev', 'vxnl1']),
      defaultAdded: await after(32, ['route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'vxnl1']),
      defaultReplaced: await after(32, ['route', 'replace', 'default', 'via', '192.0.2.254', 'dev', 'vxnl1']),
      defaultGone: await after(32, ['route', 'del', 'default', 'via', '192.0.2.254', 'dev', 'vxnl1']),
      otherTableDefault: await after(0, ['route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'vxnl1', 'table', '100'], ['route', 'del', 'default', 'via', '192.0.2.1', 'dev', 'vxnl1', 'table', '100']),
      underlayAddrGone: await after(2, ['addr', 'del', '192.0.2.10/24', 'dev', 'vxnl1']),
      deviceDown: await after(1, ['link', 'set', 'vxnl0', 'down']),
      underlayGone: await after(1, ['link', 'del', 'vxnl1']),
    };
    // A storm while nobody reads: the socket overflows, and the read says so (and drains in
    // bounded reads: the poll fires again for the rest).
    n.pollStop(h);
    sh('ip', 'link', 'set', 'vxnl0', 'up');
    const batch = [];
    for (let i = 0; i < 3000; i++) batch.push(`route add 10.250.${i >> 8}.${i & 255}/32 dev vxnl0`);
    execFileSync('ip', ['-batch', '-'], { input: batch.join('\n') });
    mask = 0;
    reads = 0;
    pollErrors = 0;
    h = n.pollStart(fd, onReadable);
    await until(() => reads > 0, 'a read after the storm', 2000).catch(() => undefined);
    await sleep(SETTLE_MS);
    const storm = { mask, reads, pollErrors };
    // And the socket works on after it.
    const afterStorm = await after(4, ['route', 'del', '10.250.0.1/32', 'dev', 'vxnl0']);
    n.pollStop(h);
    const badArgs = caught(() => n.netlinkRead(fd, 'vxnl0', 'a-name-much-too-long-for-ifnamsiz'));
    n.close(fd);
    const closed = caught(() => n.netlinkRead(fd, 'vxnl0', 'vxnl1'));
    n.close(tun.fd);

    // TAP mode: the neighbour group too. A permanent neighbour going in wakes nothing; deleted,
    // or replaced by a non-permanent one, it does. Without the group, nothing of neighbours.
    const neigh = {};
    for (const withGroup of [true, false]) {
      const tap = n.tunOpen('vxnl3', true, 0);
      sh('ip', 'link', 'set', 'vxnl3', 'up');
      const nfd = withGroup ? n.netlinkOpen(true) : n.netlinkOpen();
      let m = 0;
      const nh = n.pollStart(nfd, () => (m |= n.netlinkRead(nfd, 'vxnl3', 'vxnl2')));
      const bits = async (want, ...cmds) => {
        await sleep(SETTLE_MS);
        m = 0;
        for (const c of cmds) sh('ip', ...c);
        if (want === 0) await sleep(SETTLE_MS);
        else await until(() => (m & want) === want, `neighbour bits ${want}`, 2000).catch(() => undefined);
        return m;
      };
      const add = ['neigh', 'replace', '10.244.5.0', 'lladdr', '0e:00:00:00:00:05', 'dev', 'vxnl3', 'nud', 'permanent'];
      neigh[withGroup ? 'withGroup' : 'without'] = {
        added: await bits(0, add),
        deleted: await bits(withGroup ? 16 : 0, ['neigh', 'del', '10.244.5.0', 'dev', 'vxnl3']),
        madeStale: await bits(withGroup ? 16 : 0, add, ['neigh', 'replace', '10.244.5.0', 'lladdr', '0e:00:00:00:00:05', 'dev', 'vxnl3', 'nud', 'stale']),
        otherDevice: await bits(0, ['neigh', 'replace', '10.99.2.9', 'lladdr', '0e:00:00:00:00:09', 'dev', 'vxnl2', 'nud', 'permanent'], ['neigh', 'del', '10.99.2.9', 'dev', 'vxnl2']),
      };
      n.pollStop(nh);
      n.close(nfd);
      n.close(tap.fd);
    }
    return { flags, steps, storm, afterStorm, badArgs, closed, neigh };
  },

  async 'tun-gone'() {
    const t = n.tunOpen('vxg0', false, 0);
    const errs = [];
    const h = n.pollStart(t.fd, (err) => {
      errs.push(err ? { message: err.message, code: err.code, errno: err.errno, syscall: err.syscall } : null);
      n.pollStop(h);
    });
    sh('ip', 'link', 'del', 'vxg0');
    for (let i = 0; i < 100 && errs.length === 0; i++) await sleep(10);
    const read = caught(() => n.devRead(t.fd, Buffer.alloc(100), 0, 100, 1, new Int32Array(1), new Int32Array(1), null));
    n.close(t.fd);
    return { errs, read };
  },
};

const name = process.argv[2];
const scenario = scenarios[name];
if (!scenario) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const result = await scenario();
if (result !== undefined) {
  console.log(JSON.stringify(result));
  process.exit(0);
}
