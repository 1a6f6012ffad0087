// Scenarios for test/native/offload-io.test.ts, run in a child Node process INSIDE a network
// namespace of the test's own (`ip netns exec vxof-io-<pid> node offload-child.mjs <name>`),
// never in the root namespace. The addon is reached as the product reaches it, through
// nativeBinding() of the compiled dist/native/index.js. Prints one JSON line; every wait is
// bounded (10 s watchdog).
//
//   refuse        the kernel refuses an offload flag: tunOpen with it throws and leaves no
//                 device; with the real flags the device has a vnet header and TSO on
//   tcp           the kernel's own TCP through a TUN with offloads: we play the far end of a
//                 connection, get TSO super-packets (devRead with vnet headers) and cut them
//                 (_tsoSegment), and write segments that devWrite(vnet) joins into one
//                 super-packet the kernel accepts
//   udp-gso-gro   udpSend with vnet headers sends a super-packet as one UDP_SEGMENT message
//                 over lo; a socket with UDP_GRO receives it as one datagram (udpRecv with
//                 segs), one without as separate datagrams, byte-identical to _tsoSegment's
//   udp-write     UDP datagrams written with vnet headers (joined into GSO_UDP_L4
//                 super-packets where the kernel takes them) reach a socket byte for byte
//   udp-read      a local UDP_SEGMENT send into the device is read as one GSO_UDP_L4
//                 super-packet (where the kernel has it) and cut back into its datagrams
//   gso-refused   the kernel refuses UDP_SEGMENT (segments above the route MTU): the same
//                 datagrams go out one by one, and UDP_SEGMENT is not asked for again
//   send-thread   udpSend through the sender thread: batches of super-packets and plain
//                 datagrams, the JS buffer overwritten after every call, all arrive in
//                 order byte for byte; a lone datagram goes inline; refused datagrams are
//                 counted by udpSendLost; close waits for what the thread holds
//   send-pass     with the sender thread holding batches (_senderHold): a datagram passes
//                 them when its flow is in none of them (ICMP, UDP, TCP alike), and waits
//                 when it is; a TCP super-packet never passes; with every batch taken the
//                 hand-over waits (a hold that ends by itself), counted in offloadStats;
//                 with nothing held, a datagram leaves before the super-packets of its call
//   send-order    property: any mix of super-packets and datagrams of four flows, held or
//                 not, arrives complete and in order per flow
//   udp-group     an underlay socket group (SO_REUSEPORT): port exclusive, reads in turn
//   udp-drops     udpDrops: the kernel's drop count of each member of a group that one
//                 source overflowed, and of a plain socket
//   send-full     the socket fills up (a veth behind an 8 kbit/s tbf, a small send buffer)
//                 while datagrams pass held TCP, and in a call's first pass: udpSend
//                 counts exactly what the kernel took, the TCP still queued (or not yet
//                 cut) in the call included as not sent
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import fc from 'fast-check';
import { nativeBinding, TUN_F_CSUM, TUN_F_TSO4 } from '../../dist/native/index.js';
import { sleep, until } from './wait.mjs';

const n = nativeBinding();

setTimeout(() => {
  console.log(JSON.stringify({ error: 'timeout', partial }));
  process.exit(3);
}, 10_000).unref();
let partial = {};

const sh = (cmd, ...args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ip4 = (s) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);

/** After exactly what was expected has arrived: a short while for more to show, if any comes. */
const SETTLE_MS = 50;

/** Receives from UDP socket fd into slots of `slot` bytes until done(got) holds, then once more
 *  after SETTLE_MS; got: every datagram, with its UDP GRO segment size. */
async function receive(fd, slot, done, what) {
  const rbuf = Buffer.alloc(slot * 64);
  const lens = new Int32Array(64);
  const segs = new Int32Array(64);
  const got = [];
  const take = () => {
    const c = n.udpRecv(fd, rbuf, slot, 0, 64, lens, new Uint32Array(64), new Uint16Array(64), segs);
    for (let i = 0; i < c; i++) got.push({ data: Buffer.from(rbuf.subarray(i * slot, i * slot + lens[i])), seg: segs[i] });
    return c;
  };
  await until(() => (take(), done(got)), what);
  await sleep(SETTLE_MS);
  while (take() > 0);
  return got;
}

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const u16 = (b, o) => (LE ? b[o] | (b[o + 1] << 8) : (b[o] << 8) | b[o + 1]);

function caught(f) {
  try {
    f();
    return { threw: false };
  } catch (e) {
    return { threw: true, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message };
  }
}

function sum(buf, start, end, init = 0) {
  let s = init;
  for (let i = start; i < end; i += 2) s += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
const ipOk = (p) => sum(p, 0, (p[0] & 15) * 4) === 0xffff;
function tcpOk(p) {
  const ihl = (p[0] & 15) * 4;
  const l4 = p.readUInt16BE(2) - ihl;
  return sum(p, ihl, ihl + l4, sum(p, 12, 20) + 6 + l4) === 0xffff;
}

/** A VXLAN frame (VNI 1): inner Ethernet, an IPv4 header of `proto` and `len` bytes of
 *  `tag`. Only what the sender thread looks at (EtherType, protocol) has to be right. */
function vxlanFrame(proto, tag, len = 60) {
  const f = Buffer.alloc(8 + 14 + 20 + len, tag);
  f.fill(0, 0, 42);
  f[0] = 0x08;
  f[6] = 1; // VNI 1
  f.writeUInt16BE(0x0800, 20);
  f[22] = 0x45;
  f.writeUInt16BE(20 + len, 24);
  f[30] = 64;
  f[31] = proto;
  return f;
}

/** The 22 bytes udpSend's `encap` covers: a VXLAN header (VNI 1) and an inner Ethernet header
 *  of `etherType`. */
function vxlanEncap(etherType = 0x0800) {
  const e = Buffer.alloc(22);
  e[0] = 0x08;
  e[6] = 1;
  e.writeUInt16BE(etherType, 20);
  return e;
}

/** Virtio headers for `count` packets: GSO_TCPV4 with gso_size 1398 for the ones `isSuper`
 *  picks (the first by default), none for the rest; 10 bytes each, host byte order. */
function vnetHeaders(count, isSuper = (i) => i === 0) {
  const v = Buffer.alloc(10 * count);
  for (let i = 0; i < count; i++) {
    if (!isSuper(i)) continue;
    v[10 * i + 1] = 1; // GSO_TCPV4
    v[10 * i + (LE ? 4 : 5)] = 1398 & 0xff;
    v[10 * i + (LE ? 5 : 4)] = 1398 >> 8;
  }
  return v;
}

/** One udpSend of `frames` (each 22 bytes of encap, then the packet) with virtio headers
 *  `vnet` (frame i's at 10 * i), to `addr` and port portOf(i). */
function sendFrames(fd, frames, vnet, addr, portOf) {
  const offs = new Int32Array(frames.length);
  for (let i = 1; i < frames.length; i++) offs[i] = offs[i - 1] + frames[i - 1].length;
  const k = frames.length;
  return n.udpSend(fd, Buffer.concat(frames), offs, Int32Array.from(frames, (f) => f.length), new Uint32Array(k).fill(addr),
    Uint16Array.from(frames, (_, i) => portOf(i)), k, vnet, Int32Array.from(frames, (_, i) => i), 22);
}

/** A function that returns what has arrived on socket `rx` so far (up to 64 datagrams of
 *  up to 2 KB), each as its own Buffer. */
function receiverOf(rx) {
  const slot = 2048;
  const rbuf = Buffer.alloc(slot * 64);
  const rl = new Int32Array(64);
  return () => {
    const c = n.udpRecv(rx, rbuf, slot, 0, 64, rl, new Uint32Array(64), new Uint16Array(64), null);
    return Array.from({ length: Math.max(c, 0) }, (_, i) => Buffer.from(rbuf.subarray(i * slot, i * slot + rl[i])));
  };
}

/** A TCP/IPv4 packet with full checksums. */
function tcp({ src, dst, sport, dport, seq, ack, flags, win = 65535, options = Buffer.alloc(0), payload = Buffer.alloc(0), id = 1, tos = 0 }) {
  const thl = 20 + options.length;
  const p = Buffer.alloc(20 + thl + payload.length);
  p[0] = 0x45;
  p[1] = tos;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(id, 4);
  p.writeUInt16BE(0x4000, 6);
  p[8] = 64;
  p[9] = 6;
  p.writeUInt32BE(ip4(src), 12);
  p.writeUInt32BE(ip4(dst), 16);
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(dport, 22);
  p.writeUInt32BE(seq >>> 0, 24);
  p.writeUInt32BE(ack >>> 0, 28);
  p[32] = (thl / 4) << 4;
  p[33] = flags;
  p.writeUInt16BE(win, 34);
  options.copy(p, 40);
  payload.copy(p, 20 + thl);
  p.writeUInt16BE(~sum(p, 0, 20) & 0xffff, 10);
  p.writeUInt16BE(~sum(p, 20, p.length, sum(p, 12, 20) + 6 + (p.length - 20)) & 0xffff, 36);
  return p;
}

function tunUp(name, cidr, mtu = 1500) {
  sh('ip', 'link', 'set', 'dev', name, 'mtu', String(mtu), 'up');
  sh('ip', 'addr', 'add', cidr, 'dev', name);
}

/** How the reads with vnet headers laid out their packets: each call's packets packed behind
 *  32 bytes of headroom at 64-byte boundaries, as devRead promises. */
const layout = { calls: 0, packets: 0, packedOk: true };

/** Reads the vnet device until `done()` or the time is up; calls `each(pkt, vnet)` per packet. */
async function readUntil(fd, each, done, ms = 3000) {
  const buf = Buffer.alloc(9 * 65536);
  const offs = new Int32Array(64);
  const lens = new Int32Array(64);
  const vnet = Buffer.alloc(640);
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) {
    const c = n.devRead(fd, buf, 32, 65535, 64, offs, lens, vnet);
    if (c > 0) layout.calls++;
    for (let i = 0, pos = 0; i < c; i++) {
      layout.packets++;
      if (offs[i] !== pos + 32) layout.packedOk = false;
      if (lens[i] >= 0) pos = (offs[i] + lens[i] + 63) & ~63;
      const v = vnet.subarray(i * 10, i * 10 + 10);
      each(Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])), {
        flags: v[0], gsoType: v[1], hdrLen: u16(v, 2), gsoSize: u16(v, 4), csumStart: u16(v, 6), csumOffset: u16(v, 8), raw: Buffer.from(v),
      });
    }
    if (c === 0) await sleep(5);
  }
}

/** The wire datagrams of one packet read with header `raw` (no encap), via _tsoSegment. */
function segments(pkt, raw) {
  const out = Buffer.alloc(4 << 20);
  const oo = new Int32Array(2048);
  const ol = new Int32Array(2048);
  const c = n._tsoSegment(pkt, 0, pkt.length, raw, 0, 0, out, oo, ol);
  return Array.from({ length: Math.max(c, 0) }, (_, i) => Buffer.from(out.subarray(oo[i], oo[i] + ol[i])));
}

const scenarios = {
  async refuse() {
    const r = {};
    r.unknownFlag = caught(() => n.tunOpen('vxo0', false, 0x40000000));
    r.linkAfterRefusal = caught(() => sh('ip', 'link', 'show', 'dev', 'vxo0'));
    // The gateway's fallback: the plain device of the same name, right after the refusal.
    const plain = n.tunOpen('vxo0', false, 0);
    r.plainAfter = plain.name;
    r.plainLink = sh('ip', '-d', 'link', 'show', 'dev', 'vxo0');
    n.close(plain.fd);
    const t = n.tunOpen('vxo0', false, TUN_F_CSUM | TUN_F_TSO4);
    r.name = t.name;
    r.link = sh('ip', '-d', 'link', 'show', 'dev', 'vxo0');
    r.features = sh('ethtool', '-k', 'vxo0'); // ethtool is required: without it the check would not run
    n.close(t.fd);
    r.afterClose = caught(() => sh('ip', 'link', 'show', 'dev', 'vxo0'));
    return r;
  },

  async tcp() {
    const r = { superPackets: 0, dataPackets: 0, segs: 0, allChecksumsOk: true, seqOk: true };
    const tun = n.tunOpen('vxo0', false, TUN_F_CSUM | TUN_F_TSO4);
    tunUp('vxo0', '10.77.0.1/24');
    const data = Buffer.alloc(200_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;

    const sock = net.connect({ host: '10.77.0.2', port: 5001, localAddress: '10.77.0.1' });
    const got = [];
    sock.on('data', (b) => got.push(b));
    sock.on('error', () => undefined);
    let syn;
    await readUntil(tun.fd, (p) => { if (p[9] === 6 && p[33] === 0x02) syn = p; }, () => syn !== undefined);
    if (!syn) return { error: 'no SYN' };
    const sport = syn.readUInt16BE(20);
    const isn = syn.readUInt32BE(24);
    const ours = 0x10000000;
    const peer = { src: '10.77.0.2', dst: '10.77.0.1', sport: 5001, dport: sport };
    // SYN-ACK: MSS 1400, window scale 7, so the kernel may send big flights at once.
    const synack = tcp({ ...peer, seq: ours, ack: isn + 1, flags: 0x12, options: Buffer.from('020405780103030700000000', 'hex').subarray(0, 8) });
    const wbuf = Buffer.alloc(70_000);
    const w = (pkts) => {
      let at = 0;
      const offs = new Int32Array(pkts.length);
      const lens = new Int32Array(pkts.length);
      pkts.forEach((p, i) => { p.copy(wbuf, at); offs[i] = at; lens[i] = p.length; at += p.length + 64; });
      return n.devWrite(tun.fd, wbuf, offs, lens, pkts.length, true);
    };
    r.synackWritten = w([synack]);
    await new Promise((res) => (sock.connecting ? sock.once('connect', res) : res()));
    sock.write(data);

    // The kernel sends its first flight; as TSO is on, as super-packets. Cut them and check.
    let next = (isn + 1) >>> 0;
    const payload = [];
    await readUntil(
      tun.fd,
      (p, v) => {
        if (p[9] !== 6) return;
        const hl = 20 + (p[32] >> 4) * 4;
        if (p.length === hl) return; // pure ACK
        r.dataPackets++;
        if (v.gsoType === 1) {
          r.superPackets++;
          r.gsoSize = v.gsoSize;
          r.csumStart = v.csumStart;
          r.csumOffset = v.csumOffset;
          r.needsCsum = (v.flags & 1) === 1;
        }
        for (const s of segments(p, v.raw)) {
          r.segs++;
          if (!ipOk(s) || !tcpOk(s)) r.allChecksumsOk = false;
          if (s.readUInt32BE(24) !== next) r.seqOk = false;
          const shl = 20 + (s[32] >> 4) * 4;
          next = (next + s.length - shl) >>> 0;
          payload.push(s.subarray(shl));
          r.maxSegment = Math.max(r.maxSegment ?? 0, s.length);
        }
      },
      () => r.superPackets > 0 && r.dataPackets >= 2,
      3000,
    );
    const flight = Buffer.concat(payload);
    r.flightBytes = flight.length;
    r.flightMatches = flight.equals(data.subarray(0, flight.length));

    // The other way: 6 in-order segments in one devWrite(vnet) call, joined into one write.
    const before = n.offloadStats();
    const back = Buffer.alloc(5 * 1000 + 300);
    for (let i = 0; i < back.length; i++) back[i] = (i * 13) & 0xff;
    const segsOut = [];
    for (let k = 0, seq = ours + 1; k * 1000 < back.length; k++) {
      const chunk = back.subarray(k * 1000, Math.min(back.length, (k + 1) * 1000));
      segsOut.push(tcp({ ...peer, seq, ack: isn + 1, flags: 0x10 | (k === 5 ? 0x08 : 0), payload: chunk, id: 50 + k }));
      seq += chunk.length;
    }
    r.backWritten = w(segsOut);
    const after = n.offloadStats();
    r.coalescedWrites = after.coalescedWrites - before.coalescedWrites;
    r.coalescedSegments = after.coalescedSegments - before.coalescedSegments;
    const end = Date.now() + 3000;
    while (Buffer.concat(got).length < back.length && Date.now() < end) await sleep(10);
    r.backReceived = Buffer.concat(got).equals(back);
    r.layout = layout;
    sock.destroy();
    n.close(tun.fd);
    return r;
  },

  async 'udp-gso-gro'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const a = n.udpOpen(ip4('127.0.0.1'), 7001, 1 << 20);
    const g = n.udpOpen(ip4('127.0.0.1'), 7002, 4 << 20);
    const p = n.udpOpen(ip4('127.0.0.1'), 7003, 4 << 20);
    n.udpSetGro(g, true);
    r.groBadFd = caught(() => n.udpSetGro(999, true));

    // A 20 000-byte TCP super-packet behind 22 bytes of encap, as the inside path hands it.
    const encap = Buffer.alloc(22, 0x5a);
    const pkt = tcp({ src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2, seq: 1, ack: 1, flags: 0x18, payload: Buffer.alloc(20_000, 0x61) });
    const buf = Buffer.concat([Buffer.alloc(10), encap, pkt]);
    const vnet = vnetHeaders(1);
    const expected = (() => {
      const out = Buffer.alloc(1 << 20);
      const oo = new Int32Array(64);
      const ol = new Int32Array(64);
      const c = n._tsoSegment(Buffer.from(buf), 10, buf.length - 10, vnet, 0, 22, out, oo, ol);
      return Array.from({ length: c }, (_, i) => Buffer.from(out.subarray(oo[i], oo[i] + ol[i])));
    })();
    r.expectedCount = expected.length;
    const before = n.offloadStats();
    const send = (port) => n.udpSend(a, buf, new Int32Array([10]), new Int32Array([buf.length - 10]), new Uint32Array([ip4('127.0.0.1')]), new Uint16Array([port]), 1, vnet, new Int32Array([0]), 22);
    r.sentGro = send(7002);
    r.sentPlain = send(7003);
    r.gsoMessages = n.offloadStats().gsoMessages - before.gsoMessages;
    const whole = Buffer.concat(expected);
    const bytes = (got) => got.reduce((a, d) => a + d.data.length, 0);
    const gro = await receive(g, 65536, (got) => bytes(got) >= whole.length, 'the datagrams on the UDP_GRO socket');
    r.groDatagrams = gro.length;
    r.groSeg = gro[0].seg;
    r.groLen = gro[0].data.length;
    r.groBytesMatch = gro.length === 1 && gro[0].data.equals(whole);
    const plain = await receive(p, 65536, (got) => got.length >= expected.length, 'the datagrams on the plain socket');
    r.plainDatagrams = plain.length;
    r.plainSegs = plain.map((d) => d.seg);
    r.plainMatch = plain.length === expected.length && expected.every((e, i) => plain[i].data.equals(e));
    return r;
  },

  /** UDP datagrams written to a TUN with offloads (devWrite with vnet headers): where the
   *  kernel takes GSO_UDP_L4 writes (usoWrite), those of one flow go as one super-packet; a
   *  UDP socket behind the device gets every datagram, byte for byte and in order, either way. */
  async 'udp-write'() {
    const r = {};
    const tun = n.tunOpen('vxo8', false, TUN_F_CSUM | TUN_F_TSO4);
    tunUp('vxo8', '10.79.0.1/24');
    r.usoWrite = n.offloadStats().usoWrite;
    const sock = dgram.createSocket('udp4');
    const got = { 5001: [], 5002: [] };
    sock.on('message', (m, rinfo) => got[rinfo.port]?.push(m));
    await new Promise((res) => sock.bind(6000, '10.79.0.1', res));
    // Flow A: 20 datagrams of 100 bytes and a last of 37, without a checksum every third;
    // flow B: 5 of 64 between them.
    const udp = (sport, payload, id, csum) => {
      const u = Buffer.alloc(8 + payload.length);
      u.writeUInt16BE(sport, 0);
      u.writeUInt16BE(6000, 2);
      u.writeUInt16BE(u.length, 4);
      payload.copy(u, 8);
      const ip = Buffer.alloc(20);
      ip[0] = 0x45;
      ip.writeUInt16BE(20 + u.length, 2);
      ip.writeUInt16BE(id, 4);
      ip.writeUInt16BE(0x4000, 6);
      ip[8] = 64;
      ip[9] = 17;
      Buffer.from([10, 79, 0, 2, 10, 79, 0, 1]).copy(ip, 12);
      ip.writeUInt16BE(~sum(ip, 0, 20) & 0xffff, 10);
      const pkt = Buffer.concat([ip, u]);
      if (csum) pkt.writeUInt16BE(~sum(pkt, 20, pkt.length, sum(pkt, 12, 20) + 17 + u.length) & 0xffff || 0xffff, 26);
      return pkt;
    };
    const sent = { 5001: [], 5002: [] };
    const pkts = [];
    for (let i = 0; i < 21; i++) {
      const pay = Buffer.alloc(i === 20 ? 37 : 100, i + 1);
      sent[5001].push(pay);
      pkts.push(udp(5001, pay, 100 + i, i % 3 !== 0));
      if (i % 4 === 1) {
        const b = Buffer.alloc(64, 0xb0 + i);
        sent[5002].push(b);
        pkts.push(udp(5002, b, 900 + i, true));
      }
    }
    const wbuf = Buffer.alloc(70_000);
    const offs = new Int32Array(pkts.length);
    const lens = new Int32Array(pkts.length);
    let at = 0;
    pkts.forEach((p, i) => { p.copy(wbuf, at); offs[i] = at; lens[i] = p.length; at += p.length + 64; });
    const before = n.offloadStats();
    r.written = n.devWrite(tun.fd, wbuf, offs, lens, pkts.length, true);
    r.packets = pkts.length;
    const after = n.offloadStats();
    r.coalescedWrites = after.coalescedWrites - before.coalescedWrites;
    r.coalescedSegments = after.coalescedSegments - before.coalescedSegments;
    const end = Date.now() + 3000;
    while (got[5001].length + got[5002].length < pkts.length && Date.now() < end) await sleep(10);
    r.receivedA = got[5001].length;
    r.receivedB = got[5002].length;
    r.matchA = got[5001].length === sent[5001].length && got[5001].every((m, i) => m.equals(sent[5001][i]));
    r.matchB = got[5002].length === sent[5002].length && got[5002].every((m, i) => m.equals(sent[5002][i]));
    sock.close();
    n.close(tun.fd);
    return r;
  },

  /** A local UDP_SEGMENT send routed into a TUN with offloads: where the kernel has USO for
   *  TUN (usoWrite), devRead hands it over as one GSO_UDP_L4 super-packet, and udpSend with
   *  vnet headers cuts it into the same datagrams, which a socket gets byte for byte. */
  async 'udp-read'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const tun = n.tunOpen('vxoa', false, TUN_F_CSUM | TUN_F_TSO4);
    tunUp('vxoa', '10.80.0.1/24');
    r.usoWrite = n.offloadStats().usoWrite;
    // The sender: ten datagrams of 1200 bytes and one of 500 to 10.80.0.2 (behind the device),
    // from the addon's own plain udpSend, which joins a run of one size into one UDP_SEGMENT
    // message (the last may be shorter), as a QUIC stack sends.
    const tx = n.udpOpen(ip4('10.80.0.1'), 4433, 1 << 20);
    const sizes = [...Array(10).fill(1200), 500];
    const pays = sizes.map((len, i) => Buffer.alloc(len, 0x30 + i));
    const sbuf = Buffer.concat(pays);
    const soffs = new Int32Array(sizes.length);
    sizes.reduce((at, len, i) => ((soffs[i] = at), at + len), 0);
    r.sent = n.udpSend(tx, sbuf, soffs, Int32Array.from(sizes), new Uint32Array(sizes.length).fill(ip4('10.80.0.2')), new Uint16Array(sizes.length).fill(6000), sizes.length, null, null, 0);
    const read = [];
    await readUntil(tun.fd, (p, v) => { if (p[9] === 17) read.push({ p, v }); }, () => read.reduce((a, x) => a + x.p.length - 28, 0) >= sbuf.length);
    r.reads = read.length;
    r.gsoTypes = read.map((x) => x.v.gsoType);
    r.gsoSize = read[0]?.v.gsoSize;
    // Cut what was read the way the inside path sends it (22 bytes of encap in front), to a
    // plain socket on lo: one datagram per original, each a complete IPv4/UDP packet.
    const rx = n.udpOpen(ip4('127.0.0.1'), 7010, 4 << 20);
    const out = n.udpOpen(ip4('127.0.0.1'), 7011, 1 << 20);
    const before = n.offloadStats();
    for (const { p, v } of read) {
      const buf = Buffer.concat([Buffer.alloc(22, 0x5a), p]);
      n.udpSend(out, buf, new Int32Array([0]), new Int32Array([buf.length]), new Uint32Array([ip4('127.0.0.1')]), new Uint16Array([7010]), 1, v.raw, new Int32Array([0]), 22);
    }
    const after = n.offloadStats();
    r.usoPackets = after.usoPackets - before.usoPackets;
    r.usoSegments = after.usoSegments - before.usoSegments;
    const dgrams = (await receive(rx, 2048, (got) => got.length >= pays.length, 'the cut datagrams')).map((d) => d.data.subarray(22));
    const c = dgrams.length;
    r.received = c;
    r.checksumsOk = dgrams.every((d) => sum(d, 0, 20) === 0xffff && sum(d, 20, d.length, sum(d, 12, 20) + 17 + d.length - 20) === 0xffff);
    r.idsCountUp = dgrams.every((d, i) => d.readUInt16BE(4) === ((dgrams[0].readUInt16BE(4) + i) & 0xffff));
    r.payloadsMatch = c === pays.length && dgrams.every((d, i) => d.readUInt16BE(24) === 8 + pays[i].length && d.subarray(28).equals(pays[i]));
    // devRead's `segments` budget: four sends of 64 datagrams of 64 B wait in the device; with a
    // budget of 128 a read takes two of them (65 datagrams each, as vnetWireSegments counts
    // 4 124 bytes at 64), without one it takes all four.
    const small = Buffer.alloc(64 * 64, 0x77);
    const soffs64 = Int32Array.from({ length: 64 }, (_, i) => i * 64);
    const send4 = () => { for (let k = 0; k < 4; k++) n.udpSend(tx, small, soffs64, new Int32Array(64).fill(64), new Uint32Array(64).fill(ip4('10.80.0.2')), new Uint16Array(64).fill(6000), 64, null, null, 0); };
    const rbuf2 = Buffer.alloc(9 * 65536);
    const o2 = new Int32Array(64);
    const l2 = new Int32Array(64);
    const v2 = Buffer.alloc(640);
    const readUdp = (segments) => {
      const end = Date.now() + 2000;
      let c = 0;
      while (c === 0 && Date.now() < end) c = n.devRead(tun.fd, rbuf2, 32, 65535, 64, o2, l2, v2, false, segments);
      return c;
    };
    // Four sends are waiting in the device once the device's qdisc has passed all their
    // datagrams on (it counts a GSO packet by its segments) and holds none back.
    const qdisc = () => {
      const m = /Sent \d+ bytes (\d+) pkt[\s\S]*backlog \S+ (\d+)p/.exec(sh('tc', '-s', 'qdisc', 'show', 'dev', 'vxoa'));
      return { sent: Number(m[1]), backlog: Number(m[2]) };
    };
    const sent4 = async () => {
      const from = qdisc().sent;
      send4();
      await until(() => {
        const q = qdisc();
        return q.sent - from >= 4 * 64 && q.backlog === 0;
      }, 'the four sends in the device');
    };
    await sent4();
    r.budgetReads = [readUdp(128), readUdp(128)];
    await sent4();
    r.unbudgetedRead = readUdp(0);
    [tx, rx, out].forEach((fd) => n.close(fd));
    n.close(tun.fd);
    return r;
  },

  /** The outer ECN field of what udpSend sends (IP_TOS per message), as the kernel's vxlan
   *  sets it: the inner IPv4 or IPv6 ECN field copied out, CE as ECT(0), never the DSCP;
   *  Not-ECT for anything else. Datagrams of different outer ECN are not joined into one
   *  UDP_SEGMENT message; every segment of a super-packet carries its ECN; the sender thread's
   *  batches too, and what passes the batches it holds (the express set, from the first pass
   *  or the second). Each datagram is told apart by its last byte (a tag). */
  async 'ecn-send'() {
    const LO = ip4('127.0.0.1');
    const rx = n.udpOpen(LO, 7111, 1 << 22);
    const tx = n.udpOpen(LO, 7112, 1 << 22);
    const slot = 2048;
    const rbuf = Buffer.alloc(slot * 64);
    const lens = new Int32Array(64);
    const ecn = new Uint8Array(64);
    const got = [];
    const take = () => {
      const c = n.udpRecv(rx, rbuf, slot, 0, 64, lens, new Uint32Array(64), new Uint16Array(64), null, ecn);
      for (let i = 0; i < c; i++) got.push({ data: Buffer.from(rbuf.subarray(i * slot, i * slot + lens[i])), ecn: ecn[i] });
    };
    const collect = async (count, what) => {
      got.length = 0;
      await until(() => (take(), got.length >= count), what, 3000);
      await sleep(SETTLE_MS);
      take();
      return got.slice();
    };
    const plainSend = (frames) => {
      const offs = new Int32Array(frames.length);
      for (let i = 1; i < frames.length; i++) offs[i] = offs[i - 1] + frames[i - 1].length;
      return n.udpSend(tx, Buffer.concat(frames), offs, Int32Array.from(frames, (f) => f.length),
        new Uint32Array(frames.length).fill(LO), new Uint16Array(frames.length).fill(7111), frames.length, null, null, 0);
    };
    // A frame of `len` bytes after the encap, tagged at byte 22 + hdr (the inner payload).
    const v4 = (tos, tag, len) => { const f = vxlanFrame(17, tag, len); f[23] = tos; return f; };
    const v6 = (tc, tag, len) => {
      const f = Buffer.alloc(22 + 40 + len, tag);
      vxlanEncap(0x86dd).copy(f);
      f.fill(0, 22, 62);
      f[22] = 0x60 | (tc >> 4);
      f[23] = (tc & 0x0f) << 4;
      f.writeUInt16BE(len, 26);
      f[28] = 17;
      return f;
    };
    const tagOf = (d) => d[d.length - 1];
    const r = {};

    // 1. One datagram per ECN case; growing lengths, so that none joins the one before it.
    //    The shortest datagrams with an inner field: one byte short of it (23 bytes, tagged in
    //    its last byte) and just long enough (24: its last byte is the TOS, AF11 + ECT(1)).
    const upTo = (len, tag) => { const f = vxlanFrame(17, 0).subarray(0, len); f[len - 1] = tag; return f; };
    const cases = [
      ['23 bytes', upTo(23, 0x2a)], ['24 bytes, AF11 + ECT(1)', upTo(24, 0x29)],
      ['v4 Not-ECT', v4(0x00, 1, 40)], ['v4 ECT(1)', v4(0x01, 2, 41)], ['v4 ECT(0)', v4(0x02, 3, 42)], ['v4 CE', v4(0x03, 4, 43)],
      ['v4 DSCP EF + ECT(1)', v4(0xb9, 5, 44)], ['v6 ECT(0)', v6(0x02, 6, 45)], ['v6 CE, DSCP CS1', v6(0x23, 7, 46)],
      ['ARP', (() => { const f = Buffer.alloc(22 + 28 + 47, 8); vxlanEncap(0x0806).copy(f); f[23] = 3; return f; })()],
      // A STUN request's first two bits are 0 where VXLAN has its I flag: not a frame to look into.
      ['STUN', (() => { const f = v4(0x03, 9, 48); f[0] = 0x00; f[1] = 0x01; return f; })()],
    ];
    r.sentCases = plainSend(cases.map(([, f]) => f));
    const one = await collect(cases.length, 'one datagram per case');
    r.cases = Object.fromEntries(cases.map(([name, f]) => [name, one.find((d) => tagOf(d.data) === tagOf(f))?.ecn ?? 'missing']));

    // 2. Six of one size to one peer: joined only while the outer ECN stays the same.
    const s0 = n.offloadStats();
    const run = [2, 2, 0, 0, 3, 3].map((tos, i) => v4(tos, 20 + i, 100));
    r.sentRun = plainSend(run);
    r.runMessages = n.offloadStats().gsoMessages - s0.gsoMessages;
    const joined = await collect(run.length, 'the six of one size');
    r.run = run.map((f) => joined.find((d) => tagOf(d.data) === tagOf(f))?.ecn ?? 'missing');

    // 3. A TCP super-packet with ECT(0) inside, beside a plain ECT(1) datagram, read with
    //    offloads (vnet): every segment goes ECT(0). Without and with the sender thread.
    const sup = tcp({ src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(12_000, 0x63), tos: 2 });
    const small = tcp({ src: '10.244.100.10', dst: '10.244.1.3', sport: 3, dport: 4, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(10, 0x64), tos: 1 });
    const frames = [Buffer.concat([vxlanEncap(), sup]), Buffer.concat([vxlanEncap(), small])];
    const segCount = segments(sup, vnetHeaders(1)).length;
    r.superSegments = segCount;
    for (const thread of [false, true]) {
      n.udpSendThread(thread);
      const sent = sendFrames(tx, frames, vnetHeaders(2), LO, () => 7111);
      const out = await collect(segCount + 1, `the super-packet's segments (thread ${thread})`);
      n.udpSendThread(false);
      r[thread ? 'thread' : 'inline'] = {
        sent,
        segmentEcn: [...new Set(out.filter((d) => d.data.length > 200).map((d) => d.ecn))],
        segments: out.filter((d) => d.data.length > 200).length,
        plainEcn: out.filter((d) => d.data.length <= 200).map((d) => d.ecn),
      };
    }

    // 4. The sender thread holds a batch (a super-packet, Not-ECT inside). What passes it goes
    //    from the express set, joined there by the same rule: a plain udpSend of four of one
    //    size, ECT(1) ECT(1) ECT(0) CE, leaves as [1 1] [2 2] (CE as ECT(0) joins ECT(0)),
    //    the second pass's express path. Then a call with a super-packet of another flow (ECT(1)
    //    inside) and a CE datagram beside it: the datagram leaves at once (send_early) as
    //    ECT(0); the segments, ECT(1), once the thread is let go. (offloadStats waits for the
    //    thread, which ends a hold: read before and after.)
    n.udpSendThread(true);
    const p0 = n.offloadStats();
    n._senderHold(true);
    const held = tcp({ src: '10.244.100.10', dst: '10.244.1.4', sport: 5, dport: 6, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(12_000, 0x65) });
    const second = tcp({ src: '10.244.100.10', dst: '10.244.1.5', sport: 7, dport: 8, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(12_000, 0x66), tos: 1 });
    const beside = tcp({ src: '10.244.100.10', dst: '10.244.1.6', sport: 9, dport: 10, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(10, 0x67), tos: 3 });
    r.heldSent = sendFrames(tx, [Buffer.concat([vxlanEncap(), held])], vnetHeaders(1), LO, () => 7111);
    const four = [1, 1, 2, 3].map((tos, i) => v4(tos, 0x40 + i, 100));
    r.passSent = plainSend(four);
    const passed = await collect(four.length, 'the four that pass the held batch');
    r.pass = { ecn: four.map((f) => passed.find((d) => tagOf(d.data) === tagOf(f))?.ecn ?? 'missing'), count: passed.length };
    r.earlySent = sendFrames(tx, [Buffer.concat([vxlanEncap(), second]), Buffer.concat([vxlanEncap(), beside])], vnetHeaders(2), LO, () => 7111);
    r.early = (await collect(1, 'the CE datagram beside the super-packet')).map((d) => ({ tag: tagOf(d.data), ecn: d.ecn }));
    n._senderHold(false);
    const segsOf = (pkt) => segments(pkt, vnetHeaders(1)).length;
    const after = await collect(segsOf(held) + segsOf(second), 'the held segments');
    const ecnOf = (tag) => [...new Set(after.filter((d) => tagOf(d.data) === tag).map((d) => d.ecn))];
    r.afterHold = { count: after.length, want: segsOf(held) + segsOf(second), held: ecnOf(0x65), second: ecnOf(0x66) };
    const p1 = n.offloadStats();
    // passed the held batch: the four and the CE datagram; UDP_SEGMENT messages: the four's
    // two, and one per super-packet
    r.counted = { passed: p1.sendPassed - p0.sendPassed, messages: p1.gsoMessages - p0.gsoMessages };
    n.udpSendThread(false);
    n.close(rx);
    n.close(tx);
    return r;
  },

  /** UDP_SEGMENT refused (segments larger than the route's MTU: EINVAL): the message goes out
   *  again one datagram per segment, and later sends no longer ask for it. */
  async 'gso-refused'() {
    const r = {};
    const tun = n.tunOpen('vxo9', false, 0);
    tunUp('vxo9', '10.78.0.1/24', 1000);
    const a = n.udpOpen(ip4('10.78.0.1'), 7001, 1 << 20);
    // ECT(1) inside: the datagrams sent one by one keep the outer ECN field (IP_TOS) too.
    const pkt = tcp({ src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(5000, 0x62), tos: 1 });
    const buf = Buffer.concat([vxlanEncap(), pkt]);
    const vnet = vnetHeaders(1);
    const send = () => n.udpSend(a, buf, new Int32Array([0]), new Int32Array([buf.length]), new Uint32Array([ip4('10.78.0.2')]), new Uint16Array([9]), 1, vnet, new Int32Array([0]), 22);
    const s0 = n.offloadStats();
    r.sent1 = send();
    const s1 = n.offloadStats();
    r.sent2 = send();
    const s2 = n.offloadStats();
    r.refused = s1.gsoRefused - s0.gsoRefused;
    r.gsoOff = s2.gsoOff;
    r.gsoMessages = s2.gsoMessages - s0.gsoMessages;
    // What reached the device: IPv4 fragments of 4 datagrams per send (1460+28 > 1000).
    const rbuf = Buffer.alloc(2048 * 64);
    const offs = new Int32Array(64);
    const lens = new Int32Array(64);
    let frags = 0;
    let firsts = 0;
    const ecns = new Set();
    const end = Date.now() + 2000;
    while (firsts < 8 && Date.now() < end) {
      const c = n.devRead(tun.fd, rbuf, 0, 2048, 64, offs, lens, null);
      for (let i = 0; i < c; i++) {
        const p = rbuf.subarray(offs[i], offs[i] + lens[i]);
        if (p[9] !== 17) continue;
        frags++;
        ecns.add(p[1] & 3);
        if ((p.readUInt16BE(6) & 0x1fff) === 0) firsts++;
      }
      if (c === 0) await sleep(5);
    }
    r.datagrams = firsts;
    r.fragments = frags;
    r.outerEcn = [...ecns];
    return r;
  },

  /** The sender thread (udpSendThread): what udpSend hands over must survive the caller
   *  reusing its buffer at once, leave in the order it was handed over, and be counted when
   *  the kernel refuses it. */
  async 'send-thread'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const a = n.udpOpen(ip4('127.0.0.1'), 7101, 4 << 20);
    const rx = n.udpOpen(ip4('127.0.0.1'), 7102, 32 << 20);
    r.started = n.udpSendThread(true);
    r.startedAgain = n.udpSendThread(true); // already running: no second thread
    const lo = ip4('127.0.0.1');
    const ENC = 22;
    const superLen = ENC + 40 + 12_000; // 9 segments of 1398 bytes (the last shorter)
    const plainLen = ENC + 40 + 100;
    const buf = Buffer.alloc(10 + superLen + 3 * plainLen);
    const vnet = vnetHeaders(2); // [0]: GSO_TCPV4, [1]: none
    const offs = new Int32Array([10, 10 + superLen, 10 + superLen + plainLen, 10 + superLen + 2 * plainLen]);
    const lens = new Int32Array([superLen, plainLen, plainLen, plainLen]);
    const addrs = new Uint32Array(4).fill(lo);
    const ports = new Uint16Array(4).fill(7102);
    const vidx = new Int32Array([0, 1, 1, 1]);
    const fill = (k) => {
      const p = tcp({ src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2, seq: k * 12_000, ack: 1, flags: 0x10, payload: Buffer.alloc(12_000, k & 0xff) });
      Buffer.alloc(ENC, 0x5a).copy(buf, 10);
      p.copy(buf, 10 + ENC);
      for (let j = 0; j < 3; j++) {
        const q = tcp({ src: '10.244.100.10', dst: '10.244.1.2', sport: 3, dport: 4, seq: k * 3 + j, ack: 1, flags: 0x18, payload: Buffer.alloc(100, (k * 3 + j) & 0xff) });
        Buffer.alloc(ENC, 0x5b).copy(buf, offs[1 + j]);
        q.copy(buf, offs[1 + j] + ENC);
      }
    };
    // What each call must put on the wire: _tsoSegment's segments, then the plain datagrams.
    const wire = (k) => {
      fill(k);
      const out = Buffer.alloc(1 << 16);
      const oo = new Int32Array(64);
      const ol = new Int32Array(64);
      const c = n._tsoSegment(Buffer.from(buf), 10, superLen, vnet, 0, ENC, out, oo, ol);
      const segs = Array.from({ length: c }, (_, i) => Buffer.from(out.subarray(oo[i], oo[i] + ol[i])));
      return [...segs, ...[0, 1, 2].map((j) => Buffer.from(buf.subarray(offs[1 + j], offs[1 + j] + plainLen)))];
    };
    const single = Buffer.alloc(10 + plainLen);
    const sendSingle = (k) => {
      single.fill(0x70 + k);
      return n.udpSend(a, single, new Int32Array([10]), new Int32Array([plainLen]), new Uint32Array([lo]), new Uint16Array([7102]), 1, null, null, 0);
    };

    const calls = 40;
    const expected = [];
    const before = n.offloadStats();
    r.accepted = 0;
    for (let k = 0; k < calls; k++) {
      expected.push(...wire(k));
      fill(k);
      r.accepted += n.udpSend(a, buf, offs, lens, addrs, ports, 4, vnet, vidx, 0 + ENC);
      buf.fill(0xee); // the next batch reuses the buffer at once
      if (k % 10 === 9) {
        // A lone datagram right behind a batch: queued behind it when the thread is still
        // busy, sent at once when idle; either way it must not overtake.
        r.accepted += sendSingle(k);
        expected.push(Buffer.from(single.subarray(10)));
        single.fill(0xdd);
      }
    }
    const mid = n.offloadStats();
    r.handed = mid.sendHanded - before.sendHanded;
    r.sendThreadStat = mid.sendThread;
    r.expectedCount = expected.length;
    r.expectedAccepted = calls * 4 + calls / 10;

    // Receive everything (bounded): order and bytes.
    const slot = 2048;
    const rbuf = Buffer.alloc(slot * 256);
    const rl = new Int32Array(256);
    const ra = new Uint32Array(256);
    const rp = new Uint16Array(256);
    const got = [];
    for (let tries = 0; got.length < expected.length && tries < 200; tries++) {
      const c = n.udpRecv(rx, rbuf, slot, 0, 256, rl, ra, rp, null);
      for (let i = 0; i < c; i++) got.push(Buffer.from(rbuf.subarray(i * slot, i * slot + rl[i])));
      if (c <= 0) await sleep(10);
    }
    r.received = got.length;
    r.firstMismatch = expected.findIndex((e, i) => !got[i] || !got[i].equals(e));

    // Idle: a lone datagram is sent on the JS thread.
    const i0 = n.offloadStats().sendInline;
    r.idleSingle = sendSingle(9);
    r.inlineAfterIdle = n.offloadStats().sendInline - i0;

    // Refused by the kernel (broadcast without SO_BROADCAST: EACCES) after the hand-over.
    n.udpSendLost(); // start from 0
    const bc = ip4('255.255.255.255');
    r.refusedAccepted = n.udpSend(a, buf, offs.subarray(1), lens.subarray(1), new Uint32Array(3).fill(bc), new Uint16Array(3).fill(7102), 3, null, null, 0);
    r.lost = n.udpSendLost();
    r.lostAgain = n.udpSendLost();
    r.lastErrorCode = n.lastError().code;
    // A lone datagram sent at once (the thread is idle) reports its failure itself.
    r.loneRefused = n.udpSend(a, buf, offs.subarray(1, 2), lens.subarray(1, 2), Uint32Array.of(bc), Uint16Array.of(7102), 1, null, null, 0);
    r.loneLost = n.udpSendLost();

    // close() waits for what the thread holds: a batch handed over just before is delivered.
    fill(99);
    const tail = wire(99);
    fill(99);
    n.udpSend(a, buf, offs, lens, addrs, ports, 4, vnet, vidx, ENC);
    n.close(a);
    const got2 = [];
    for (let tries = 0; got2.length < tail.length + 1 && tries < 50; tries++) {
      const c = n.udpRecv(rx, rbuf, slot, 0, 256, rl, ra, rp, null);
      for (let i = 0; i < c; i++) got2.push(Buffer.from(rbuf.subarray(i * slot, i * slot + rl[i])));
      if (c <= 0) await sleep(10);
    }
    // got2[0] is the idle single; then the batch sent right before close.
    r.afterClose = got2.length;
    r.tailMatch = got2.length === tail.length + 1 && tail.every((e, i) => got2[i + 1].equals(e));

    r.stopped = n.udpSendThread(false);
    r.statAfterStop = n.offloadStats().sendThread;
    // Without the thread, udpSend sends on the JS thread again.
    const b = n.udpOpen(ip4('127.0.0.1'), 7103, 1 << 20);
    const h0 = n.offloadStats().sendHanded;
    fill(5);
    r.plainAgain = n.udpSend(b, buf, offs, lens, addrs, ports, 4, vnet, vidx, ENC);
    r.handedAfterStop = n.offloadStats().sendHanded - h0;
    n.close(b);
    n.close(rx);
    return r;
  },

  /** Which datagrams may pass what the sender thread holds (sender.c sender_may_pass). */
  async 'send-pass'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const lo = ip4('127.0.0.1');
    const a = n.udpOpen(lo, 7201, 4 << 20);
    const rx = n.udpOpen(lo, 7202, 32 << 20);
    n.udpSendThread(true);
    const sendOne = (f) => n.udpSend(a, f, Int32Array.of(0), Int32Array.of(f.length), Uint32Array.of(lo), Uint16Array.of(7202), 1, null, null, 0);
    const sendMany = (fs) => {
      const buf = Buffer.concat(fs);
      const offs = new Int32Array(fs.length);
      let o = 0;
      fs.forEach((f, i) => {
        offs[i] = o;
        o += f.length;
      });
      return n.udpSend(a, buf, offs, Int32Array.from(fs, (f) => f.length), new Uint32Array(fs.length).fill(lo), new Uint16Array(fs.length).fill(7202), fs.length, null, null, 0);
    };
    // One call: a 20 000-byte TCP super-packet of `flow` (payload bytes `fill`, 15 segments),
    // then the plain datagrams `rest`, each with its own virtio header.
    const superThen = (flow, fill, rest) => {
      const pkt = tcp({ ...flow, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(20_000, fill) });
      const frames = [Buffer.concat([vxlanFrame(6, 0).subarray(0, 22), pkt]), ...rest];
      return sendFrames(a, frames, vnetHeaders(frames.length), lo, () => 7202);
    };
    // A 20 000-byte TCP super-packet behind 22 bytes of encap: 15 segments, TCP alone.
    const superBatch = () => superThen({ src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2 }, 0x61, []);
    const recvNow = receiverOf(rx);
    const recvAll = async (want) => {
      const got = [];
      for (let tries = 0; got.length < want && tries < 100; tries++) {
        got.push(...recvNow());
        if (got.length < want) await sleep(10);
      }
      return got;
    };
    const kind = (d) => (d.length > 31 ? d[31] : -1); // 1 ICMP, 6 TCP, 17 UDP

    // The flow of the super-packets: a TCP datagram of it (a pure ACK, say) is in their flow.
    const bulk = { src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2 };
    const inFlow = (f, { src, dst, sport, dport }) => {
      f.writeUInt32BE(ip4(src), 34);
      f.writeUInt32BE(ip4(dst), 38);
      f.writeUInt16BE(sport, 42);
      f.writeUInt16BE(dport, 44);
      return f;
    };
    // Lets the thread go and receives what it held: how many, and the last one's tag.
    const release = async (want) => {
      n._senderHold(false);
      const got = await recvAll(want);
      const last = got[got.length - 1];
      return { count: got.length, lastTag: last ? last[last.length - 1] : -1, passed: n.offloadStats().sendPassed };
    };
    const tags = (ds) => ds.map((d) => d[d.length - 1]);

    // 1. A lone ICMP echo passes a held batch of TCP: it is on the wire before udpSend returns.
    n._senderHold(true);
    r.superHanded = superBatch();
    r.icmpAccepted = sendOne(vxlanFrame(1, 0x11));
    r.whileHeld1 = recvNow().map(kind);
    n._senderHold(false);
    r.after1 = (await recvAll(15)).map(kind);
    r.passed1 = n.offloadStats().sendPassed;

    // 2. Held: a UDP datagram and a TCP one. Of a batch with an ICMP echo and one more datagram
    //    of each held flow, the echo leaves at once, the two wait behind their flows.
    n._senderHold(true);
    const udpFlow = { src: '10.244.100.7', dst: '10.244.2.9', sport: 5353, dport: 53 };
    const tcpFlow = { src: '10.244.100.7', dst: '10.244.2.9', sport: 40000, dport: 22 };
    r.mixedHanded = sendMany([inFlow(vxlanFrame(17, 0x22, 80), udpFlow), inFlow(vxlanFrame(6, 0x23, 100), tcpFlow)]);
    r.batch2Accepted = sendMany([vxlanFrame(1, 0x24), inFlow(vxlanFrame(17, 0x26, 80), udpFlow), inFlow(vxlanFrame(6, 0x27, 100), tcpFlow)]);
    r.whileHeld2 = tags(recvNow());
    n._senderHold(false);
    r.after2 = tags(await recvAll(4));
    r.passed2 = n.offloadStats().sendPassed;

    // 3. Held: bulk TCP. A lone TCP datagram of its flow waits; one of another flow (a
    //    keystroke of an interactive session) leaves at once.
    n._senderHold(true);
    superBatch();
    sendOne(inFlow(vxlanFrame(6, 0x33), bulk));
    sendOne(inFlow(vxlanFrame(6, 0x34), tcpFlow));
    r.whileHeld3 = tags(recvNow());
    r.after3 = await release(16);

    // 4. A batch read with bulk TCP held: its ICMP and UDP go at once, its datagram of the bulk flow waits.
    n._senderHold(true);
    superBatch();
    r.mixAccepted = sendMany([vxlanFrame(1, 0x41), inFlow(vxlanFrame(6, 0x42, 100), bulk), vxlanFrame(17, 0x43, 90)]);
    r.whileHeld4 = tags(recvNow());
    r.after4 = await release(16);

    // 5. Held: bulk TCP. One call with a super-packet of a second flow, then a datagram of
    //    that flow, then an ICMP echo: the datagram stays behind its flow's segments queued
    //    just before it in the same call; the echo leaves at once.
    n._senderHold(true);
    superBatch();
    {
      const second = { src: '10.244.100.11', dst: '10.244.1.2', sport: 3, dport: 4 };
      r.secondAccepted = superThen(second, 0x62, [inFlow(vxlanFrame(6, 0x52), second), vxlanFrame(1, 0x53)]);
    }
    r.whileHeld5 = tags(recvNow());
    {
      n._senderHold(false);
      const got = await recvAll(31);
      r.after5 = { count: got.length, secondFlowTags: got.slice(15).map((d) => d[d.length - 1]) };
    }

    // 6. Every batch taken: the thread holds seven, and the eighth hand-over waits for one to
    //    come back, here until a 50 ms hold ends by itself. offloadStats counts that wait
    //    and its time; the seven hand-overs before it waited for nothing.
    {
      const before = n.offloadStats();
      const t0 = performance.now();
      n._senderHold(true, 50);
      for (let i = 0; i < 8; i++) superBatch();
      const elapsed = performance.now() - t0;
      const s = n.offloadStats();
      const got = await recvAll(8 * 15);
      r.wait6 = { waits: s.sendWaits - before.sendWaits, ms: s.sendWaitMs - before.sendWaitMs, elapsed, received: got.length };
    }
    // 7. Nothing held. One call with a super-packet of a third flow, a datagram of that flow
    //    and an ICMP echo: the echo is sent first, before the super-packet is cut and handed
    //    over (tso.c send_early); the datagram stays behind its flow's segments.
    {
      const third = { src: '10.244.100.12', dst: '10.244.1.2', sport: 5, dport: 6 };
      const before = n.offloadStats();
      r.earlyAccepted = superThen(third, 0x73, [inFlow(vxlanFrame(6, 0x72), third), vxlanFrame(1, 0x71)]);
      const got = await recvAll(17);
      const after = n.offloadStats();
      r.early7 = { tags: got.map((d) => d[d.length - 1]), passed: after.sendPassed - before.sendPassed, handed: after.sendHanded - before.sendHanded };
    }
    n.udpSendThread(false);
    n.close(a);
    n.close(rx);
    return r;
  },

  /** Property (fast-check, fixed seed): any mix of super-packets and datagrams of four flows,
   *  in calls made while the thread holds batches or not: every packet arrives once, and
   *  each flow's in the order they were sent (the first pass, the express set and the
   *  thread's batches together never reorder a flow). */
  async 'send-order'() {
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const lo = ip4('127.0.0.1');
    const a = n.udpOpen(lo, 7211, 4 << 20);
    const rx = n.udpOpen(lo, 7212, 64 << 20);
    n.udpSendThread(true);
    const flows = [
      { proto: 6, src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2 },
      { proto: 6, src: '10.244.100.11', dst: '10.244.1.2', sport: 3, dport: 4 },
      { proto: 17, src: '10.244.100.12', dst: '10.244.2.9', sport: 5353, dport: 53 },
      { proto: 1, src: '10.244.100.13', dst: '10.244.1.2' },
    ];
    // A super-packet of 5 000 bytes: 4 segments, each ending in the tag like a datagram.
    const frame = (f, big, tag) => {
      if (big) {
        const pkt = tcp({ ...f, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(5000, tag) });
        return Buffer.concat([vxlanFrame(6, 0).subarray(0, 22), pkt]);
      }
      const d = vxlanFrame(f.proto, tag, 100);
      d.writeUInt32BE(ip4(f.src), 34);
      d.writeUInt32BE(ip4(f.dst), 38);
      if (f.proto !== 1) {
        d.writeUInt16BE(f.sport, 42);
        d.writeUInt16BE(f.dport, 44);
      }
      return d;
    };
    const flowOf = (d) => flows.findIndex((f) => d[31] === f.proto && d.readUInt32BE(34) === ip4(f.src) && (f.proto === 1 || d.readUInt16BE(42) === f.sport));
    const recvNow = receiverOf(rx);
    const call = fc.record({
      hold: fc.boolean(),
      pkts: fc.array(fc.record({ flow: fc.integer({ min: 0, max: flows.length - 1 }), big: fc.boolean() }), { minLength: 1, maxLength: 5 }),
    });
    let runs = 0;
    let failure = null;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(call, { minLength: 1, maxLength: 8 }), async (calls) => {
          runs++;
          const tags = flows.map(() => 0);
          let want = 0;
          for (const c of calls) {
            // A hold that ends by itself: a hand-over that finds every batch taken waits for it.
            n._senderHold(c.hold, c.hold ? 20 : undefined);
            const pkts = c.pkts.map((p) => ({ ...p, big: p.big && flows[p.flow].proto === 6 }));
            const frames = pkts.map((p) => frame(flows[p.flow], p.big, ++tags[p.flow]));
            const k = frames.length;
            const sent = sendFrames(a, frames, vnetHeaders(k, (i) => pkts[i].big), lo, () => 7212);
            if (sent !== k) throw new Error(`udpSend took ${sent} of ${k}`);
            want += pkts.reduce((t, p) => t + (p.big ? 4 : 1), 0);
          }
          n._senderHold(false);
          n.offloadStats(); // waits until the thread has sent everything
          const got = [];
          for (let tries = 0; got.length < want && tries < 100; tries++) {
            got.push(...recvNow());
            if (got.length < want) await sleep(5);
          }
          got.push(...recvNow()); // nothing more may come
          if (got.length !== want) throw new Error(`received ${got.length} of ${want}`);
          const last = flows.map(() => 0);
          for (const d of got) {
            const f = flowOf(d);
            const tag = d[d.length - 1];
            if (f < 0) throw new Error('a datagram of no flow sent');
            if (tag < last[f]) throw new Error(`flow ${f}: tag ${tag} after ${last[f]}`);
            last[f] = tag;
          }
        }),
        { seed: 20261204, numRuns: 60 },
      );
    } catch (e) {
      failure = String(e.message).slice(0, 2000);
    }
    const s = n.offloadStats();
    n.udpSendThread(false);
    n.close(a);
    n.close(rx);
    return { runs, failure, passed: s.sendPassed, handed: s.sendHanded };
  },

  /** An underlay socket group (udpOpen with sockets > 1): a second bind of the port fails as
   *  it did with one socket; the ready members are read in turn, so datagrams from other
   *  source ports come within the first batches although one source's 600 were queued first,
   *  where one socket returns them after those; everything arrives once, each source in
   *  order; sends leave from the group's port; close frees the port. */
  async 'udp-group'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const lo = ip4('127.0.0.1');
    const errorOf = (f) => {
      try {
        f();
        return null;
      } catch (e) {
        return e.code;
      }
    };
    const slot = 256;
    const rbuf = Buffer.alloc(slot * 16);
    const rl = new Int32Array(16);
    const ra = new Uint32Array(16);
    const rp = new Uint16Array(16);
    // Bytes queued in the port's sockets (/proc/net/udp rx_queue): on a busy machine the
    // loopback's softirq may deliver the last sends after udpSend returned.
    const queued = () =>
      sh('cat', '/proc/net/udp')
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .filter((f) => f[1] === '0100007F:1CE8')
        .reduce((a, f) => a + parseInt(f[4].split(':')[1], 16), 0);
    const run = async (sockets) => {
      const g = n.udpOpen(lo, 7400, 1 << 20, sockets);
      const out = { secondPlain: errorOf(() => n.udpOpen(lo, 7400, 0)), secondGroup: errorOf(() => n.udpOpen(lo, 7400, 0, 4)) };
      const bulk = n.udpOpen(lo, 7500, 1 << 20);
      const others = Array.from({ length: 12 }, (_, i) => n.udpOpen(lo, 7501 + i, 0));
      const send = (fd, tag) => {
        const d = Buffer.alloc(40, tag & 0xff);
        d.writeUInt16BE(tag, 0);
        n.udpSend(fd, d, Int32Array.of(0), Int32Array.of(40), Uint32Array.of(lo), Uint16Array.of(7400), 1, null, null, 0);
      };
      for (let i = 0; i < 600; i++) send(bulk, i);
      others.forEach((fd, i) => send(fd, 1000 + i));
      for (let last = -1, t = 0; t < 150; t++) {
        const q = queued();
        if (q > 0 && q === last) break; // everything sent is in the sockets
        last = q;
        await sleep(20);
      }
      const got = [];
      let first = null;
      for (let tries = 0; tries < 200 && got.length < 612; tries++) {
        const c = n.udpRecv(g, rbuf, slot, 0, 16, rl, ra, rp, null);
        const batch = Array.from({ length: c }, (_, i) => ({ port: rp[i], tag: rbuf.readUInt16BE(i * slot) }));
        if (first === null && c > 0) first = batch;
        got.push(...batch);
      }
      out.firstBatch = first.length;
      // Where the 12 datagrams from the other sources came in the reading order: early, or
      // after all 600 (those the kernel put in the same member as the 600, behind them).
      const at = got.map((d, i) => (d.port !== 7500 ? i : -1)).filter((i) => i >= 0);
      out.othersEarly = at.filter((i) => i < 5 * 16).length;
      out.othersAfterBulk = at.filter((i) => i >= 600).length;
      out.received = got.length;
      out.bulkInOrder = got.filter((d) => d.port === 7500).every((d, i) => d.tag === i);
      out.othersOnce = new Set(got.filter((d) => d.port !== 7500).map((d) => d.tag)).size;
      // A send through the group leaves from its port.
      n.udpSend(g, Buffer.alloc(8, 1), Int32Array.of(0), Int32Array.of(8), Uint32Array.of(lo), Uint16Array.of(7500), 1, null, null, 0);
      const c = n.udpRecv(bulk, rbuf, slot, 0, 16, rl, ra, rp, null);
      out.replyFrom = c === 1 ? rp[0] : -c;
      n.udpSetGro(g, true); // every member, or it throws
      n.close(g);
      out.rebindAfterClose = errorOf(() => n.close(n.udpOpen(lo, 7400, 0)));
      n.close(bulk);
      others.forEach((fd) => n.close(fd));
      return out;
    };
    r.group = await run(4);
    r.single = await run(1);
    return r;
  },

  /** The kernel's drops at a socket group (udpDrops): one source overflows the member the
   *  kernel hashes it to; what the sockets did not take is what udpDrops counts, in that one
   *  member, and a plain socket reports one count. Fewer datagrams than the loopback's backlog
   *  (netdev_max_backlog, 1000) holds, so none is lost before the sockets. */
  async 'udp-drops'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    const lo = ip4('127.0.0.1');
    const SENT = 300;
    const slot = 256;
    const rbuf = Buffer.alloc(slot * 64);
    const rl = new Int32Array(64);
    const ra = new Uint32Array(64);
    const rp = new Uint16Array(64);
    const run = async (sockets, port) => {
      const g = n.udpOpen(lo, port, 16384, sockets); // a small buffer: a few dozen datagrams
      const src = n.udpOpen(lo, port + 1, 0);
      const out = { before: n.udpDrops(g) };
      const d = Buffer.alloc(40, 7);
      for (let i = 0; i < SENT; i++) n.udpSend(src, d, Int32Array.of(0), Int32Array.of(40), Uint32Array.of(lo), Uint16Array.of(port), 1, null, null, 0);
      // Every send is delivered or dropped once the loopback's softirq has run: wait until the
      // count of both stops moving.
      let received = 0;
      for (let last = -1, t = 0; t < 100; t++) {
        for (let c; (c = n.udpRecv(g, rbuf, slot, 0, 64, rl, ra, rp, null)) > 0; ) received += c;
        const dropped = n.udpDrops(g).reduce((a, b) => a + b, 0);
        if (received + dropped === SENT && dropped === last) break;
        last = dropped;
        await sleep(20);
      }
      out.after = n.udpDrops(g);
      out.received = received;
      out.sent = SENT;
      n.close(g);
      n.close(src);
      return out;
    };
    r.group = await run(4, 7600);
    r.single = await run(1, 7610);
    return r;
  },

  /** A socket that fills up while datagrams pass held TCP, and again in a call's first pass
   *  (send_early): what udpSend counts as sent is what the kernel took (the TCP of the same
   *  call, still queued or not yet cut when the send stopped, counts as not sent). */
  async 'send-full'() {
    const r = {};
    sh('ip', 'link', 'set', 'dev', 'lo', 'up');
    // No IPv6 here: its neighbour discovery would send through the qdisc counted below.
    sh('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    sh('ip', 'link', 'add', 'vxf0', 'type', 'veth', 'peer', 'name', 'vxf1');
    sh('ip', 'addr', 'add', '10.9.0.1/24', 'dev', 'vxf0');
    sh('ip', 'link', 'set', 'vxf0', 'up');
    sh('ip', 'link', 'set', 'vxf1', 'up');
    sh('ip', 'neigh', 'add', '10.9.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'vxf0');
    // 8 kbit/s: the qdisc holds nearly everything, charged to the sender's small buffer.
    sh('tc', 'qdisc', 'add', 'dev', 'vxf0', 'root', 'tbf', 'rate', '8kbit', 'burst', '1600', 'limit', '1000000');
    const qdiscPackets = () => {
      const m = /Sent \d+ bytes (\d+) pkt[\s\S]*backlog \S+ (\d+)p/.exec(sh('tc', '-s', 'qdisc', 'show', 'dev', 'vxf0'));
      return Number(m[1]) + Number(m[2]);
    };
    const far = ip4('10.9.0.2');
    const a = n.udpOpen(ip4('10.9.0.1'), 7301, 4096);
    n.udpSendThread(true);
    // Held by the thread: two TCP datagrams (a lone one would go at once; held TCP lets the
    // datagrams of other flows pass).
    n._senderHold(true);
    const tcpFrames = Buffer.concat([vxlanFrame(6, 0x77, 100), vxlanFrame(6, 0x77, 100)]);
    r.heldHanded = n.udpSend(a, tcpFrames, Int32Array.of(0, tcpFrames.length / 2), Int32Array.of(tcpFrames.length / 2, tcpFrames.length / 2), Uint32Array.of(far, far), Uint16Array.of(9000, 9001), 2, null, null, 0);
    // One call: a TCP datagram (queued for the thread), then 300 ICMP ones to alternating
    // ports (300 messages: the express set fills at 256 and is sent mid-call, into a full socket).
    const frames = [vxlanFrame(6, 0x77, 100), ...Array.from({ length: 300 }, () => vxlanFrame(1, 0x77))];
    const buf = Buffer.concat(frames);
    const offs = new Int32Array(frames.length);
    frames.forEach((f, i) => (offs[i] = i === 0 ? 0 : offs[i - 1] + frames[i - 1].length));
    const ports = Uint16Array.from(frames, (_, i) => 9000 + (i % 2));
    const before = qdiscPackets();
    r.sent = n.udpSend(a, buf, offs, Int32Array.from(frames, (f) => f.length), new Uint32Array(frames.length).fill(far), ports, frames.length, null, null, 0);
    r.tookByKernel = qdiscPackets() - before; // the held TCP is still held: this call's sends alone
    r.total = frames.length;
    r.passed = n.offloadStats().sendPassed; // (this lets the thread go)
    // The same in udpSend's first pass (tso.c send_early): with virtio headers, a TCP
    // super-packet and then 300 ICMP datagrams, into a second socket that fills up the same
    // way. The datagrams leave before the super-packet is cut; once the socket is full,
    // neither the rest of them nor the super-packet's segments are counted as sent.
    {
      const b = n.udpOpen(ip4('10.9.0.1'), 7302, 4096);
      const pkt = tcp({ src: '10.244.100.10', dst: '10.244.1.2', sport: 1, dport: 2, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(20_000, 0x61) });
      const early = [Buffer.concat([vxlanFrame(6, 0).subarray(0, 22), pkt]), ...Array.from({ length: 300 }, () => vxlanFrame(1, 0x78))];
      const at = qdiscPackets();
      const sent = sendFrames(b, early, vnetHeaders(early.length), far, (i) => 9000 + (i % 2));
      const s = n.offloadStats();
      r.early = { sent, tookByKernel: qdiscPackets() - at, passed: s.sendPassed - r.passed, total: early.length };
      n.close(b);
    }
    n.udpSendThread(false);
    n.close(a);
    return r;
  },
};


const name = process.argv[2];
const result = await scenarios[name]();
console.log(JSON.stringify(result));
process.exit(0);
