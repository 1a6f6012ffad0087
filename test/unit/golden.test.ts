// Byte-exact interop against frames the Linux kernel's vxlan driver emitted in the lab
// (test/fixtures/kernel-vxlan, captured by scripts/capture-fixtures): what the kernel
// sends, vxedge accepts and decapsulates to the same inner packet; what the kernel
// would send for an inner packet, vxedge sends byte for byte.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { BulkFlows } from '../../src/dataplane/bulk-flows.js';
import { InsidePath } from '../../src/dataplane/inside.js';
import { OutsidePath } from '../../src/dataplane/outside.js';
import { DropCounters } from '../../src/dataplane/drops.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { FakeIo } from './fake-io.js';
import { ip, mac } from './packets.js';

interface Frame { name: string; outerSrc: string; outerDst: string; srcPort: number; dstPort: number; udpPayloadHex: string }
const frames = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'kernel-vxlan', 'frames.json'), 'utf8')) as Frame[];
const byName = (n: string) => {
  const f = frames.find((x) => x.name === n);
  if (!f) throw new Error(`fixture ${n} missing`);
  return Buffer.from(f.udpPayloadHex, 'hex');
};

// The lab's leases: the gateway site (us) and aws1.
const GW_MAC = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };

function rig(mssClamp: boolean) {
  const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(GW_MAC), vtepIp: ip('10.244.100.0'), mssClamp, maxMss: 1410, strictPeers: true, batch: 8 };
  const io = new FakeIo();
  const dev = io.device;
  const udp = io.underlay;
  const drops = new DropCounters();
  const peers = new PeerTable([AWS1]);
  const bulk = new BulkFlows(); // shared by both paths, as in the data plane
  return { dev, udp, drops, inside: new InsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }), outside: new OutsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }, () => 1000) };
}

describe('golden frames from the kernel', () => {
  it('has the frames it needs', () => {
    expect(frames.map((f) => f.name)).toEqual(expect.arrayContaining(['icmp-echo-request', 'icmp-echo-reply', 'tcp-syn-mss', 'udp-1400']));
  });

  for (const name of ['icmp-echo-request', 'tcp-syn-mss', 'udp-1400']) {
    it(`accepts the kernel's ${name} and delivers its inner packet unchanged`, () => {
      const r = rig(true);
      const wire = byName(name);
      r.udp.inbox.push({ data: wire, addr: ip('203.0.113.10'), port: 40000 });
      r.outside.pump();
      expect(r.drops.total()).toBe(0);
      expect(r.dev.written).toHaveLength(1);
      expect(r.dev.written[0].equals(wire.subarray(22))).toBe(true);
    });
  }

  it("sends for an inner packet exactly the bytes the kernel's flannel.1 sent for it", () => {
    // icmp-echo-reply was emitted by a kernel flannel.1 with our lease (MAC 0e:5c:aa:00:00:64, VNI 1) toward aws1.
    const r = rig(true);
    const kernel = byName('icmp-echo-reply');
    r.dev.inbox.push(Buffer.from(kernel.subarray(22)));
    r.inside.pump();
    expect(r.udp.sent).toHaveLength(1);
    expect(r.udp.sent[0].data.toString('hex')).toBe(kernel.toString('hex'));
    expect(r.udp.sent[0].addr).toBe(ip('203.0.113.10'));
    expect(r.udp.sent[0].port).toBe(8472);
  });

  it('re-encapsulates every kernel frame byte-exact when it is ours to send', () => {
    // Swap the roles: as if aws1 were our peer's lease with MACs reversed.
    for (const name of ['icmp-echo-request', 'tcp-syn-mss', 'udp-1400']) {
      const wire = byName(name);
      const dst = wire.subarray(8, 14).toString('hex').match(/../g)!.join(':');
      const src = wire.subarray(14, 20).toString('hex').match(/../g)!.join(':');
      const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(src), vtepIp: ip('10.244.1.0'), mssClamp: false, maxMss: 1410, strictPeers: true, batch: 8 };
      const io = new FakeIo();
      const dev = io.device;
      const udp = io.underlay;
      const peers = new PeerTable([{ name: 'gw', publicIp: '198.51.100.2', port: 8472, subnet: parseCidr('10.244.100.0/24'), vtepMac: dst }]);
      dev.inbox.push(Buffer.from(wire.subarray(22)));
      new InsidePath({ settings: s, io, fds: io.fds, drops: new DropCounters(), peers, bulk: new BulkFlows() }).pump();
      expect(udp.sent[0].data.equals(wire), name).toBe(true);
    }
  });
});
