// ECN across the tunnel on receive (RFC 6040, as the kernel's INET_ECN_decapsulate): the
// codec against the kernel's table, the header checksum after the patch, and the outside
// path with the outer header's ECN field as udpRecv reports it.
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { BulkFlows } from '../../src/dataplane/bulk-flows.js';
import { DropCounters } from '../../src/dataplane/drops.js';
import { OutsidePath } from '../../src/dataplane/outside.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import type { PathSettings } from '../../src/dataplane/settings.js';
import { ECN_CE, ECN_ECT0, ECN_ECT1, ECN_NOT_ECT, decapsulateEcn } from '../../src/proto/ecn.js';
import { internetChecksum } from '../../src/proto/ipv4.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { FakeIo } from './fake-io.js';
import { icmpEcho, ip, ipv4, mac, vxlanFrame } from './packets.js';

const OUR_MAC = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };

/** The kernel's decision (include/net/inet_ecn.h): [drop, inner ECN after]. */
function kernel(outer: number, inner: number): [boolean, number] {
  if (inner === ECN_NOT_ECT) return [outer === ECN_CE, inner];
  if (outer === ECN_CE) return [false, ECN_CE];
  if (outer === ECN_ECT1 && inner === ECN_ECT0) return [false, ECN_ECT1];
  return [false, inner];
}

const withTos = (tos: number, opts: { options?: number } = {}) => {
  const hdr = ipv4('10.244.1.2', '10.244.100.10', 17, Buffer.alloc(12, 7));
  const ihl = 5 + (opts.options ?? 0);
  const b = Buffer.alloc(hdr.length + 4 * (ihl - 5));
  hdr.copy(b, 0, 0, 20);
  hdr.copy(b, 4 * ihl, 20);
  b[0] = 0x40 | ihl;
  b[1] = tos;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(0, 10);
  b.writeUInt16BE(internetChecksum(b, 0, 4 * ihl), 10);
  return b;
};

describe('decapsulateEcn', () => {
  it('does what the kernel does for each of the 16 pairs', () => {
    for (let outer = 0; outer < 4; outer++) {
      for (let inner = 0; inner < 4; inner++) {
        const p = withTos(0xb8 | inner); // DSCP EF: only the ECN bits may change
        const [drop, after] = kernel(outer, inner);
        expect(decapsulateEcn(p, 0, outer), `outer ${outer} inner ${inner}`).toBe(!drop);
        expect(p[1], `outer ${outer} inner ${inner}`).toBe(0xb8 | after);
        expect(internetChecksum(p, 0, 20), 'header checksum').toBe(0);
      }
    }
  });

  it('property: any header (TOS, options, fields) keeps a valid checksum and every byte but the ECN bits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 10 }), fc.uint8Array({ minLength: 60, maxLength: 60 }), (tos, outer, options, noise) => {
        const p = withTos(tos, { options });
        const ihl = 4 * (5 + options);
        Buffer.from(noise).copy(p, 20, 0, ihl - 20); // options: any bytes
        p[4] = noise[0]; // identification
        p[8] = noise[1]; // TTL
        p.writeUInt16BE(0, 10);
        p.writeUInt16BE(internetChecksum(p, 0, ihl), 10);
        const before = Buffer.from(p);
        const kept = decapsulateEcn(p, 0, outer);
        expect(kept).toBe(!kernel(outer, tos & 3)[0]);
        expect(p[1] & 0xfc).toBe(tos & 0xfc);
        expect(p[1] & 3).toBe(kernel(outer, tos & 3)[1]);
        expect(internetChecksum(p, 0, ihl)).toBe(0);
        for (let k = 0; k < p.length; k++) if (k !== 1 && k !== 10 && k !== 11) expect(p[k]).toBe(before[k]);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('outside path: the outer ECN field', () => {
  let io: FakeIo;
  let drops: DropCounters;
  let outside: OutsidePath;
  beforeEach(() => {
    io = new FakeIo();
    drops = new DropCounters();
    const s: PathSettings = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR_MAC), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8 };
    outside = new OutsidePath({ settings: s, io, fds: io.fds, drops, peers: new PeerTable([AWS1]), bulk: new BulkFlows() }, () => 1000);
  });
  const from = (inner: Buffer, ecn: number) => io.underlay.inbox.push({ data: vxlanFrame(1, OUR_MAC, AWS1.vtepMac, inner), addr: ip(AWS1.publicIp), port: 40000, ecn });

  it('CE on the outer header marks an ECN-capable inner packet CE (checksum patched), and drops a Not-ECT one', () => {
    from(withTos(ECN_ECT0), ECN_CE);
    from(withTos(ECN_NOT_ECT), ECN_CE);
    from(withTos(ECN_ECT1), ECN_ECT1);
    from(withTos(ECN_NOT_ECT), ECN_ECT0); // the kernel logs this one and forwards it
    from(withTos(ECN_ECT0), ECN_NOT_ECT);
    outside.pump();
    expect(io.device.written.map((p) => p[1] & 3)).toEqual([ECN_CE, ECN_ECT1, ECN_NOT_ECT, ECN_ECT0]);
    for (const p of io.device.written) expect(internetChecksum(p, 0, 20)).toBe(0);
    expect(drops.snapshot()).toEqual({ ceNotEct: 1 });
  });

  it('outer ECT(1) makes an inner ECT(0) ECT(1), as the kernel does for L4S', () => {
    from(withTos(ECN_ECT0), ECN_ECT1);
    outside.pump();
    expect(io.device.written[0][1] & 3).toBe(ECN_ECT1);
  });

  it('a coalesced datagram (UDP GRO) marks each of its frames', () => {
    const a = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10'));
    a[22 + 1] = ECN_ECT0;
    a.writeUInt16BE(0, 22 + 10);
    a.writeUInt16BE(internetChecksum(a, 22, 20), 22 + 10);
    const gro = Buffer.concat([a, a, a]);
    const s: PathSettings = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR_MAC), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8, udpGro: true };
    outside = new OutsidePath({ settings: s, io, fds: io.fds, drops, peers: new PeerTable([AWS1]), bulk: new BulkFlows() }, () => 1000);
    io.underlay.inbox.push({ data: gro, addr: ip(AWS1.publicIp), port: 40000, seg: a.length, ecn: ECN_CE });
    outside.pump();
    expect(io.device.written.map((p) => p[1] & 3)).toEqual([ECN_CE, ECN_CE, ECN_CE]);
  });
});
