// The codecs and the data plane's two paths on the target architecture (scripts/arm-test
// runs this on the official ARM Node 20 under qemu-user; it runs on any Node >= 20 too):
// the frames the Linux kernel's vxlan driver emitted (test/fixtures/kernel-vxlan) are
// accepted and decapsulated, and re-encapsulated byte for byte, through InsidePath and
// OutsidePath with in-memory I/O (FakeIo below, the plain-JS twin of test/unit/fake-io.ts),
// as test/unit/golden.test.ts does under vitest. Prints "N passed, N failed"; exit 1 on failure.
//   node test/arm/codecs.mjs        (from a tree with dist/ built)
import { readFileSync } from 'node:fs';
import { BulkFlows } from '../../dist/dataplane/bulk-flows.js';
import { InsidePath } from '../../dist/dataplane/inside.js';
import { OutsidePath } from '../../dist/dataplane/outside.js';
import { DropCounters } from '../../dist/dataplane/drops.js';
import { PeerTable } from '../../dist/dataplane/peers.js';
import { checkVxlanHeader, readVni, VxlanVerdict } from '../../dist/proto/vxlan.js';
import { internetChecksum, ipv4PacketLength, foldChecksum, onesSum } from '../../dist/proto/ipv4.js';
import { clampTcpMss } from '../../dist/proto/tcpmss.js';
import { parseCidr } from '../../dist/util/ipv4.js';

const frames = JSON.parse(readFileSync(new URL('../fixtures/kernel-vxlan/frames.json', import.meta.url), 'utf8'));
const wireOf = (name) => {
  const f = frames.find((x) => x.name === name);
  if (!f) throw new Error(`fixture ${name} missing`);
  return Buffer.from(f.udpPayloadHex, 'hex');
};
const ip = (s) => s.split('.').reduce((a, o) => ((a << 8) | Number(o)) >>> 0, 0);
const mac = (s) => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
const macText = (b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

// ------------------------------------------------------------------ in-memory I/O
// The plain-JS copy of test/unit/fake-io.ts (FakeIo): the data plane's part of the native
// binding (devRead, devWrite, udpRecv, udpSend, pollStart, pollStop) over fds
// { device, underlay }, honouring the addon's batch contract: device reads packed at 64-byte
// boundaries behind the headroom while headroom + room bytes are left, receives in fixed
// slots, a packet too large for its room reported as length -1. Keep the two in step.
class FakeDevice {
  inbox = []; // packets the "kernel" will hand us on read: Buffer, or { pkt, vnet } with offloads
  writes = []; // { data, vnet }
  refuse = 0; // how many of the next writes the kernel refuses
  get written() {
    return this.writes.map((w) => w.data);
  }
}
class FakeUnderlay {
  inbox = []; // { data, addr, port, seg? }
  sent = []; // { data, addr, port, vnet, encap }
}
class FakeIo {
  device = new FakeDevice();
  underlay = new FakeUnderlay();
  fds = { device: 3, underlay: 4 };
  polls = [];

  devRead(fd, buf, headroom, room, max, offs, lens, vnet, look = false) {
    this.expectFd(fd, this.fds.device);
    if (look) return 0; // one queue, as the addon's plain fd: a look never reads it
    let n = 0;
    let pos = 0;
    while (n < max && this.device.inbox.length > 0 && pos + headroom + room <= buf.length) {
      const item = this.device.inbox.shift();
      const pkt = Buffer.isBuffer(item) ? item : item.pkt;
      if (vnet) {
        if (Buffer.isBuffer(item)) throw new Error('a device read with offloads needs { pkt, vnet } in the inbox');
        item.vnet.copy(vnet, 10 * n);
      }
      offs[n] = pos + headroom;
      if (pkt.length > room) {
        lens[n++] = -1; // truncated, as the addon reports it; the space is reused
        continue;
      }
      pkt.copy(buf, offs[n]);
      lens[n] = pkt.length;
      pos = (offs[n] + pkt.length + 63) & ~63;
      n++;
    }
    return n;
  }

  devWrite(fd, buf, offs, lens, n, vnet) {
    this.expectFd(fd, this.fds.device);
    let ok = 0;
    for (let i = 0; i < n; i++) {
      if (this.device.refuse > 0) {
        this.device.refuse--;
        continue;
      }
      this.device.writes.push({ data: Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])), vnet });
      ok++;
    }
    return ok;
  }

  udpRecv(fd, buf, slot, headroom, max, lens, addrs, ports, segs) {
    this.expectFd(fd, this.fds.underlay);
    let n = 0;
    while (n < max && this.underlay.inbox.length > 0) {
      const d = this.underlay.inbox.shift();
      if (d.data.length > slot - headroom) {
        lens[n] = -1;
      } else {
        d.data.copy(buf, n * slot + headroom);
        lens[n] = d.data.length;
      }
      addrs[n] = d.addr;
      ports[n] = d.port;
      if (segs) segs[n] = d.seg ?? 0;
      n++;
    }
    return n;
  }

  udpSend(fd, buf, offs, lens, addrs, ports, n, vnet, vnetIdx, encap) {
    this.expectFd(fd, this.fds.underlay);
    for (let i = 0; i < n; i++) {
      this.underlay.sent.push({
        data: Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])),
        addr: addrs[i],
        port: ports[i],
        vnet: vnet && vnetIdx ? Buffer.from(vnet.subarray(10 * vnetIdx[i], 10 * vnetIdx[i] + 10)) : null,
        encap,
      });
    }
    return n;
  }

  pollStart(fd, cb) {
    this.polls.push({ fd, cb });
    return { fd };
  }

  pollStop(h) {
    const i = this.polls.findIndex((p) => p.fd === h.fd);
    if (i >= 0) this.polls.splice(i, 1);
  }

  expectFd(got, want) {
    if (got !== want) throw new Error(`fake io: fd ${got} used where ${want} was expected`);
  }
}

// ------------------------------------------------------------------ a tiny runner
let passed = 0;
let failed = 0;
function test(name, fn) {
  try {
    fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${e && e.stack ? e.stack.split('\n').slice(0, 3).join('\n     ') : e}`);
  }
}
function eq(a, b, what = '') {
  if (a !== b) throw new Error(`${what} expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}

// The lab's leases: the gateway site (us) and aws1 (as test/unit/golden.test.ts).
const GW_MAC = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
function rig(mssClamp) {
  const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(GW_MAC), vtepIp: ip('10.244.100.0'), mssClamp, maxMss: 1410, strictPeers: true, batch: 8 };
  const io = new FakeIo();
  const drops = new DropCounters();
  const peers = new PeerTable([AWS1]);
  const bulk = new BulkFlows(); // shared by both paths, as in the data plane
  return {
    dev: io.device,
    udp: io.underlay,
    drops,
    inside: new InsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }),
    outside: new OutsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }, () => 1000),
  };
}

console.log(`codecs on ${process.arch}, Node ${process.version}, ${frames.length} kernel frames`);

test('the fixture has the frames the tests need', () => {
  for (const n of ['icmp-echo-request', 'icmp-echo-reply', 'tcp-syn-mss', 'udp-1400']) wireOf(n);
});

for (const f of frames) {
  test(`${f.name}: VXLAN header valid, VNI 1, inner IPv4 length and header checksum right`, () => {
    const wire = Buffer.from(f.udpPayloadHex, 'hex');
    eq(checkVxlanHeader(wire, 0, 1), VxlanVerdict.ok, 'verdict');
    eq(readVni(wire, 0), 1, 'vni');
    eq(checkVxlanHeader(wire, 0, 2), VxlanVerdict.wrongVni, 'other vni');
    const inner = 8 + 14;
    eq(ipv4PacketLength(wire, inner, wire.length - inner), wire.length - inner, 'inner length');
    eq(internetChecksum(wire, inner, (wire[inner] & 0x0f) * 4), 0, 'ipv4 header checksum');
  });
}

for (const name of ['icmp-echo-request', 'tcp-syn-mss', 'udp-1400']) {
  test(`accepts the kernel's ${name} and delivers its inner packet unchanged`, () => {
    const r = rig(true);
    const wire = wireOf(name);
    r.udp.inbox.push({ data: wire, addr: ip('203.0.113.10'), port: 40000 });
    r.outside.pump();
    eq(r.drops.total(), 0, 'drops');
    eq(r.dev.written.length, 1, 'delivered');
    eq(r.dev.written[0].toString('hex'), wire.subarray(22).toString('hex'), 'inner');
  });
}

test("sends for an inner packet exactly the bytes the kernel's flannel.1 sent for it", () => {
  const r = rig(true);
  const kernel = wireOf('icmp-echo-reply');
  r.dev.inbox.push(Buffer.from(kernel.subarray(22)));
  r.inside.pump();
  eq(r.udp.sent.length, 1, 'sent');
  eq(r.udp.sent[0].data.toString('hex'), kernel.toString('hex'), 'wire');
  eq(r.udp.sent[0].addr, ip('203.0.113.10'), 'addr');
  eq(r.udp.sent[0].port, 8472, 'port');
});

test('sends a batch of packets read packed in one buffer, each byte-exact', () => {
  const r = rig(true);
  const kernel = wireOf('icmp-echo-reply');
  for (let i = 0; i < 3; i++) r.dev.inbox.push(Buffer.from(kernel.subarray(22)));
  eq(r.inside.pump(), 3, 'read');
  eq(r.udp.sent.length, 3, 'sent');
  for (const d of r.udp.sent) eq(d.data.toString('hex'), kernel.toString('hex'), 'wire');
});

test('re-encapsulates every kernel frame byte-exact when it is ours to send', () => {
  for (const name of ['icmp-echo-request', 'tcp-syn-mss', 'udp-1400']) {
    const wire = wireOf(name);
    const dst = macText(wire.subarray(8, 14));
    const src = macText(wire.subarray(14, 20));
    const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(src), vtepIp: ip('10.244.1.0'), mssClamp: false, maxMss: 1410, strictPeers: true, batch: 8 };
    const io = new FakeIo();
    const peers = new PeerTable([{ name: 'gw', publicIp: '198.51.100.2', port: 8472, subnet: parseCidr('10.244.100.0/24'), vtepMac: dst }]);
    io.device.inbox.push(Buffer.from(wire.subarray(22)));
    new InsidePath({ settings: s, io, fds: io.fds, drops: new DropCounters(), peers, bulk: new BulkFlows() }).pump();
    eq(io.underlay.sent.length, 1, `${name} sent`);
    eq(io.underlay.sent[0].data.toString('hex'), wire.toString('hex'), name);
  }
});

test('drops frames the kernel would drop, counted by reason', () => {
  const r = rig(true);
  const good = wireOf('icmp-echo-request');
  const reserved = Buffer.from(good);
  reserved[7] = 1;
  const vni = Buffer.from(good);
  vni[6] = 2;
  r.udp.inbox.push({ data: reserved, addr: ip('203.0.113.10'), port: 40000 });
  r.udp.inbox.push({ data: vni, addr: ip('203.0.113.10'), port: 40000 });
  r.udp.inbox.push({ data: good.subarray(0, 20), addr: ip('203.0.113.10'), port: 40000 });
  r.udp.inbox.push({ data: good, addr: ip('198.51.100.99'), port: 40000 });
  r.outside.pump();
  eq(r.dev.written.length, 0, 'delivered');
  const d = r.drops.snapshot();
  eq(JSON.stringify(d), JSON.stringify({ short: 1, reservedBits: 1, wrongVni: 1, unknownSource: 1 }), 'drops');
});

test('clamps the MSS of the kernel SYN and keeps its TCP checksum valid', () => {
  const inner = Buffer.from(wireOf('tcp-syn-mss').subarray(22));
  const ihl = (inner[0] & 0x0f) * 4;
  const tcpLen = inner.readUInt16BE(2) - ihl;
  const tcpSumOk = (p) => foldChecksum(onesSum(p, ihl, tcpLen, onesSum(p, 12, 8) + p[9] + tcpLen)) === 0;
  eq(tcpSumOk(inner), true, 'checksum before');
  const old = clampTcpMss(inner, 0, inner.length, 1200);
  if (!(old > 1200)) throw new Error(`expected a larger MSS in the fixture, got ${old}`);
  eq(tcpSumOk(inner), true, 'checksum after');
  eq(clampTcpMss(inner, 0, inner.length, 1200), 0, 'second clamp');
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
