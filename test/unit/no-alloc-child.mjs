// Child of no-alloc.test.ts: runs the compiled data plane (dist/, what ships) against an I/O
// twin that allocates nothing, and prints how many bytes the young generation grew by
// while each direction moved its packets. V8 bump-allocates young objects, so between two
// scavenges that growth is exactly what was allocated; run with large semi-spaces so that
// no scavenge falls into a measured stretch (one that does is measured again).
// scripts/bench-js times the same rig (`rig`).
import { getHeapSpaceStatistics } from 'node:v8';
import { pathToFileURL } from 'node:url';
import { Dataplane } from '../../dist/dataplane/dataplane.js';
import { PeerTable } from '../../dist/dataplane/peers.js';
import { Logger } from '../../dist/util/log.js';
import { parseCidr } from '../../dist/util/ipv4.js';

const BATCH = 64;
const WAKEUPS = 8;
const ipn = (s) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);
const mac = (s) => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));

function ipv4(src, dst, proto, payload) {
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b[8] = 64;
  b[9] = proto;
  b.writeUInt32BE(ipn(src), 12);
  b.writeUInt32BE(ipn(dst), 16);
  payload.copy(b, 20);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  b.writeUInt16BE(~sum & 0xffff, 10);
  return b;
}
const icmp = (src, dst) => ipv4(src, dst, 1, Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 1, 0, 1]), Buffer.alloc(56, 0xab)]));
/** A TCP ACK with 100 bytes of data (the MSS clamp looks at it and leaves it alone). */
const tcpAck = (src, dst) => {
  const t = Buffer.alloc(120);
  t.writeUInt16BE(40000, 0);
  t.writeUInt16BE(5201, 2);
  t[12] = 5 << 4;
  t[13] = 0x10;
  return ipv4(src, dst, 6, t);
};
const eth = (dst, src, inner) => Buffer.concat([mac(dst), mac(src), Buffer.from([8, 0]), inner]);
const vxlan = (dst, src, inner) => Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 0, 1, 0]), eth(dst, src, inner)]);

const OUR = '0e:5c:aa:00:00:64';

/** Replays the same packets for ever; keeps nothing of what is sent or written. */
class ReplayIo {
  constructor(dev, udp) {
    this.dev = dev.map((b) => new Uint8Array(b));
    this.udp = udp.map((d) => new Uint8Array(d.data));
    this.udpAddr = udp.map((d) => d.addr);
    this.callbacks = [];
    this.sent = 0;
    this.written = 0;
    /** Packets and datagrams handed out by devRead and udpRecv (scripts/bench-js divides by it). */
    this.read = 0;
  }
  devRead(_fd, buf, headroom, _room, max, offs, lens, vnet, look) {
    if (look) return 0; // one queue, as the addon's plain fd: a look never reads it
    let pos = 0;
    for (let n = 0; n < max; n++) {
      const p = this.dev[n % this.dev.length];
      offs[n] = pos + headroom;
      buf.set(p, offs[n]);
      lens[n] = p.length;
      pos = (offs[n] + p.length + 63) & ~63;
    }
    if (vnet) vnet.fill(0); // no offload asked for: plain packets
    this.read += max;
    return max;
  }
  devWrite(_fd, _buf, _offs, _lens, n) {
    this.written += n;
    return n;
  }
  udpRecv(_fd, buf, slot, headroom, max, lens, addrs, ports, segs) {
    for (let n = 0; n < max; n++) {
      const k = n % this.udp.length;
      buf.set(this.udp[k], n * slot + headroom);
      lens[n] = this.udp[k].length;
      addrs[n] = this.udpAddr[k];
      ports[n] = 8472;
      if (segs) segs[n] = 0;
    }
    this.read += max;
    return max;
  }
  udpSend(_fd, _buf, _offs, _lens, _addrs, _ports, n) {
    this.sent += n;
    return n;
  }
  pollStart(_fd, cb) {
    this.callbacks.push(cb);
    return {};
  }
  pollStop() {}
}

const youngUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_used_size;

function allocatedBy(run) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const before = youngUsed();
    run();
    const after = youngUsed();
    if (after >= before) return after - before;
  }
  return null; // a scavenge in every run: far too much allocated
}

/**
 * The data plane with two peers on `mode` ('tun', 'tun-offload', 'tap') over the replaying
 * I/O; `net` is the overlay's first two octets. Returns the two polls' callbacks.
 */
export function rig(mode, net = '192.168') {
  const tap = mode === 'tap';
  const offload = mode === 'tun-offload';
  // Public addresses above 2^31 and, by default, an overlay in 192.168/16: the values V8 would box.
  const PEERS = [
    { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr(`${net}.1.0/24`), vtepMac: '0a:bb:00:00:01:00' },
    { name: 'aws-2', publicIp: '198.51.100.20', port: 8472, subnet: parseCidr(`${net}.2.0/24`), vtepMac: '0a:bb:00:00:02:00' },
  ];
  const SITE = `${net}.100.10`;
  const inner = [icmp(SITE, `${net}.1.2`), tcpAck(SITE, `${net}.2.7`), icmp(SITE, `${net}.77.1`)];
  const dev = tap ? [eth(PEERS[0].vtepMac, OUR, inner[0]), eth(PEERS[1].vtepMac, OUR, inner[1]), eth('0a:bb:00:00:77:00', OUR, inner[2])] : inner;
  const udp = [
    { data: vxlan(OUR, PEERS[0].vtepMac, icmp(`${net}.1.2`, SITE)), addr: ipn(PEERS[0].publicIp) },
    { data: vxlan(OUR, PEERS[1].vtepMac, tcpAck(`${net}.2.7`, SITE)), addr: ipn(PEERS[1].publicIp) },
    { data: vxlan(OUR, PEERS[1].vtepMac, icmp(`${net}.9.9`, SITE)), addr: ipn(PEERS[1].publicIp) }, // spoofed source
  ];
  const io = new ReplayIo(dev, udp);
  const settings = {
    tap, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ipn(`${net}.100.0`), mssClamp: true, maxMss: 1410,
    strictPeers: true, batch: BATCH, vnetHdr: offload, udpGro: offload,
  };
  const clock = { now: () => Date.now(), monotonic: () => performance.now() };
  const dp = new Dataplane(settings, io, { device: 3, underlay: 4 }, new PeerTable(PEERS), new Logger('error', true), clock);
  dp.start();
  const [device, underlay] = io.callbacks;
  return { io, dp, settings, device, underlay };
}

const wake = (cb, times) => {
  for (let i = 0; i < times; i++) cb(null);
};

function measure(mode) {
  const { io, dp, settings, device, underlay } = rig(mode);
  // Warm up: V8's tiers allocate (feedback, code) while a function gets hot, once.
  wake(device, 500);
  wake(underlay, 500);
  const sent0 = io.sent;
  const inside = allocatedBy(() => wake(device, WAKEUPS));
  const sent = io.sent - sent0;
  const written0 = io.written;
  const outside = allocatedBy(() => wake(underlay, WAKEUPS));
  const written = io.written - written0;
  // The measure itself: one small view per packet must show.
  const keep = [];
  const control = allocatedBy(() => {
    for (let i = 0; i < WAKEUPS * 8 * BATCH; i++) keep[i & 7] = new Uint8Array(settings.vtepMac.buffer, 0, 6);
  });
  return { mode, inside, outside, control, sent, written, drops: { noPeer: dp.drops.get('noPeer'), spoofedSource: dp.drops.get('spoofedSource') } };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const modes = ['tun', 'tun-offload', 'tap'];
  process.stdout.write(JSON.stringify(modes.map(measure)) + '\n');
}
