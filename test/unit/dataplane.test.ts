// The inside and outside paths against in-memory twins of the device and socket.
import { beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BulkFlows } from '../../src/dataplane/bulk-flows.js';
import { InsidePath } from '../../src/dataplane/inside.js';
import { OutsidePath } from '../../src/dataplane/outside.js';
import { DropCounters } from '../../src/dataplane/drops.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import type { PathSettings } from '../../src/dataplane/settings.js';
import type { PeerConfig } from '../../src/config/types.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { applyMutations, mutation } from '../support/mutate.js';
import { FakeIo } from './fake-io.js';
import { icmpEcho, ip, mac, tcp, tcpChecksumOk, vxlanFrame } from './packets.js';

const OUR_MAC = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
const AWS2 = { name: 'aws-2', publicIp: '203.0.113.20', port: 8472, subnet: parseCidr('10.244.2.0/24'), vtepMac: '0a:bb:00:00:02:00' };
const PEERS: PeerConfig[] = [AWS1, AWS2];

function settings(over: Partial<PathSettings> = {}): PathSettings {
  return {
    tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR_MAC), vtepIp: ip('10.244.100.0'),
    mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8, ...over,
  };
}

function rig(over: Partial<PathSettings> = {}) {
  const s = settings(over);
  const io = new FakeIo();
  const drops = new DropCounters();
  const peers = new PeerTable(PEERS);
  const bulk = new BulkFlows(); // shared by both paths, as in the data plane
  return { s, dev: io.device, udp: io.underlay, drops, peers, inside: new InsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }), outside: new OutsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }, () => 1000) };
}

describe('inside path (TUN)', () => {
  it('encapsulates toward the peer owning the destination, byte-exact', () => {
    const r = rig();
    const pkt = icmpEcho('10.244.100.10', '10.244.2.2');
    r.dev.inbox.push(pkt);
    expect(r.inside.pump()).toBe(1);
    expect(r.udp.sent).toHaveLength(1);
    const d = r.udp.sent[0];
    expect(d.addr).toBe(ip('203.0.113.20'));
    expect(d.port).toBe(8472);
    expect(d.data.equals(vxlanFrame(1, AWS2.vtepMac, OUR_MAC, pkt))).toBe(true);
    expect(r.peers.stat(1, 2)).toBe(1);
  });

  it('sends a whole batch in one call and counts packets with no peer', () => {
    const r = rig();
    for (let i = 0; i < 5; i++) r.dev.inbox.push(icmpEcho('10.244.100.10', '10.244.1.2', 1, i));
    r.dev.inbox.push(icmpEcho('10.244.100.10', '10.244.77.1'));
    r.dev.inbox.push(Buffer.from('6000000000000000', 'hex'));
    r.inside.pump();
    expect(r.udp.sent).toHaveLength(5);
    expect(r.drops.get('noPeer')).toBe(1);
    expect(r.drops.get('notIPv4')).toBe(1);
  });

  it('regression: a packet larger than the device MTU comes back truncated (-1) and is dropped as oversize, not forwarded', () => {
    const r = rig();
    r.dev.inbox.push(icmpEcho('10.244.100.10', '10.244.1.2', 1, 1, Buffer.alloc(1600)));
    r.dev.inbox.push(icmpEcho('10.244.100.10', '10.244.1.2'));
    expect(r.inside.pump()).toBe(2);
    expect(r.drops.get('oversize')).toBe(1);
    expect(r.udp.sent).toHaveLength(1);
  });

  it('regression: a datagram the socket refuses is an underlaySend drop, not counted as sent to its peer', () => {
    const r = rig();
    const to1 = icmpEcho('10.244.100.10', '10.244.1.2');
    const to2 = icmpEcho('10.244.100.10', '10.244.2.2', 1, 1, Buffer.alloc(100));
    r.dev.inbox.push(to1, to2, to1, to2, to2);
    r.udp.room = 3; // the socket fills up after three: the last two of the batch stay
    r.inside.pump();
    expect(r.udp.sent).toHaveLength(3);
    expect(r.drops.get('underlaySend')).toBe(2);
    const wire = (p: Buffer) => p.length + 22;
    expect([r.peers.stat(0, 2), r.peers.stat(0, 3)]).toEqual([2, 2 * wire(to1)]); // both of aws-1's left
    expect([r.peers.stat(1, 2), r.peers.stat(1, 3)]).toEqual([1, wire(to2)]); // one of aws-2's three
    // Room again: the next batch goes out whole and is counted whole.
    r.udp.room = Infinity;
    r.dev.inbox.push(to2);
    r.inside.pump();
    expect([r.peers.stat(1, 2), r.peers.stat(1, 3)]).toEqual([2, 2 * wire(to2)]);
    expect(r.drops.get('underlaySend')).toBe(2);
  });

  it('regression: a datagram the kernel rejects alone, before others that left, is taken back from its own peer, not from the batch\'s last', () => {
    const r = rig();
    const to1 = icmpEcho('10.244.100.10', '10.244.1.2', 1, 1, Buffer.alloc(300));
    const to2 = icmpEcho('10.244.100.10', '10.244.2.2');
    const wire = (p: Buffer) => p.length + 22;
    r.udp.rejects = (_addr, len) => len === wire(to1); // EMSGSIZE, say: the rest still goes
    r.dev.inbox.push(to1, to2, to2);
    r.inside.pump();
    expect(r.udp.sent.map((d) => d.addr)).toEqual([ip(AWS2.publicIp), ip(AWS2.publicIp)]);
    expect(r.drops.get('underlaySend')).toBe(1);
    expect([r.peers.stat(0, 2), r.peers.stat(0, 3)]).toEqual([0, 0]); // aws-1's one was refused
    expect([r.peers.stat(1, 2), r.peers.stat(1, 3)]).toEqual([2, 2 * wire(to2)]); // both of aws-2's left
  });

  it('clamps the MSS of outgoing SYNs', () => {
    const r = rig();
    const opt = Buffer.from([2, 4, 0x23, 0x28]); // MSS 9000
    r.dev.inbox.push(tcp('10.244.100.10', '10.244.1.2', 0x02, opt));
    r.inside.pump();
    const inner = r.udp.sent[0].data.subarray(22);
    expect(inner.readUInt16BE(42)).toBe(1410);
    expect(tcpChecksumOk(inner)).toBe(true);
  });
});

describe('outside path (TUN)', () => {
  let r: ReturnType<typeof rig>;
  const from1 = (data: Buffer, addr = ip('203.0.113.10'), port = 41234) => r.udp.inbox.push({ data, addr, port });
  beforeEach(() => {
    r = rig();
  });

  it('decapsulates a frame from a peer into the inner packet', () => {
    const pkt = icmpEcho('10.244.1.2', '10.244.100.10');
    from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, pkt));
    r.outside.pump();
    expect(r.dev.written).toHaveLength(1);
    expect(r.dev.written[0].equals(pkt)).toBe(true);
    expect(r.peers.stat(0, 0)).toBe(1);
    expect(r.peers.lastRx[0]).toBe(1000);
  });

  it('accepts any source port (the kernel hashes it per flow)', () => {
    for (const port of [8472, 32768, 60999]) from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')), undefined, port);
    r.outside.pump();
    expect(r.dev.written).toHaveLength(3);
  });

  it('drops and counts every kind of bad datagram, and still forwards the good one', () => {
    const good = icmpEcho('10.244.1.2', '10.244.100.10');
    const frame = () => vxlanFrame(1, OUR_MAC, AWS1.vtepMac, good);
    const flags = frame(); flags[0] = 0;
    const gpe = frame(); gpe[0] = 0x0c; // VXLAN-GPE's P flag: no extension of flannel's
    const v6 = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, good, 0x86dd);
    const trunc = frame().subarray(0, 30);
    const badLen = frame(); badLen.writeUInt16BE(1400, 22 + 2);
    from1(flags);
    from1(gpe);
    from1(vxlanFrame(2, OUR_MAC, AWS1.vtepMac, good));
    from1(frame(), ip('198.51.100.99'));
    from1(vxlanFrame(1, '0a:00:00:00:00:09', AWS1.vtepMac, good));
    from1(vxlanFrame(1, OUR_MAC, AWS2.vtepMac, good));
    from1(v6);
    from1(trunc);
    from1(badLen);
    from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.2.2', '10.244.100.10')));
    r.udp.inbox.push({ data: Buffer.alloc(20000), addr: ip('203.0.113.10'), port: 1 });
    from1(frame());
    r.outside.pump();
    r.outside.pump();
    expect(r.drops.snapshot()).toEqual({
      badFlags: 1, reservedBits: 1, wrongVni: 1, unknownSource: 1, notForUs: 1, foreignMac: 1,
      notIPv4: 1, short: 1, badIPv4: 1, spoofedSource: 1, oversize: 1,
    });
    expect(r.dev.written).toHaveLength(1);
  });

  it('forwards a frame with the Group Policy extension (a node with flannel\'s "GBP": true, for a marked packet) as any other', () => {
    const good = icmpEcho('10.244.1.2', '10.244.100.10');
    const gbp = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, good);
    gbp.set([0x88, 0x48, 0x02, 0x00], 0); // G and I; D and A; policy ID 0x0200
    from1(gbp);
    r.outside.pump();
    expect(r.drops.snapshot()).toEqual({});
    expect(r.dev.written).toHaveLength(1);
    expect(r.dev.written[0]!.equals(good)).toBe(true);
  });

  it('trims Ethernet padding off short inner packets', () => {
    const pkt = icmpEcho('10.244.1.2', '10.244.100.10', 1, 1, Buffer.alloc(0));
    from1(Buffer.concat([vxlanFrame(1, OUR_MAC, AWS1.vtepMac, pkt), Buffer.alloc(18)]));
    r.outside.pump();
    expect(r.dev.written[0].length).toBe(pkt.length);
  });

  it('counts device write failures', () => {
    r.dev.refuse = 1;
    from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')));
    r.outside.pump();
    expect(r.drops.get('deviceWrite')).toBe(1);
  });

  it('hands frames to our own VTEP address to the control plane when it asks for them', () => {
    let seen = -1;
    r.outside.hooks.onToVtep = (_b, _o, _l, p) => ((seen = p), true);
    from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.0', '10.244.100.0', 7, 7, undefined, 0)));
    r.outside.pump();
    expect(seen).toBe(0);
    expect(r.dev.written).toHaveLength(0);
  });

  it('passes STUN datagrams (magic cookie) to the STUN hook', () => {
    let got = 0;
    r.outside.hooks.onStun = () => (got++, true);
    const stun = Buffer.alloc(32);
    stun.writeUInt16BE(0x0101, 0);
    stun.writeUInt32BE(0x2112a442, 4);
    from1(stun, ip('203.0.113.1'), 3478);
    r.outside.pump();
    expect(got).toBe(1);
  });

  it('regression: strict, two peers behind one address (a port forwarded to each) are both accepted, each only with its own MAC', () => {
    const B = { ...AWS2, publicIp: AWS1.publicIp, port: 8473 };
    r.peers.update(B);
    from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')), undefined, 40000);
    from1(vxlanFrame(1, OUR_MAC, AWS2.vtepMac, icmpEcho('10.244.2.2', '10.244.100.10')), undefined, 40001);
    // aws-2's MAC with a source in aws-1's subnet: still a spoof, whichever peer it is taken for
    from1(vxlanFrame(1, OUR_MAC, AWS2.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')), undefined, 40001);
    r.outside.pump();
    expect(r.dev.written).toHaveLength(2);
    expect(r.drops.snapshot()).toEqual({ spoofedSource: 1 });
    expect(r.peers.stat(0, 0)).toBe(1);
    expect(r.peers.stat(1, 0)).toBe(1);
    // a third peer's MAC from that address is still foreign
    r.peers.update({ ...B, publicIp: '203.0.113.20', port: 8472 });
    from1(vxlanFrame(1, OUR_MAC, AWS2.vtepMac, icmpEcho('10.244.2.2', '10.244.100.10')));
    r.outside.pump();
    expect(r.drops.get('foreignMac')).toBe(1);
    expect(r.dev.written).toHaveLength(2);
  });

  it('loosens filtering when strictPeers is off', () => {
    r = rig({ strictPeers: false });
    from1(vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.2.2', '10.244.100.10')), ip('198.51.100.99'));
    r.outside.pump();
    expect(r.dev.written).toHaveLength(1);
  });

  it('never throws and never forwards garbage, whatever arrives', () => {
    // Frames as aws-1 and aws-2 send them (ICMP, TCP, a SYN whose MSS is clamped, sometimes a
    // source outside the peer's subnet, another VNI or MAC, an ARP frame), from their endpoints
    // or a stranger's; then some of their bytes changed; and pure random datagrams.
    const SENDERS = [AWS1.publicIp, AWS2.publicIp, '198.51.100.7'];
    const frame = fc
      .record({
        peer: fc.constantFrom(AWS1, AWS2),
        sender: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 }) }),
        subnet: fc.oneof({ weight: 6, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(AWS1.subnet, AWS2.subnet, parseCidr('10.244.100.0/24')) }),
        host: fc.integer({ min: 1, max: 254 }),
        kind: fc.constantFrom('icmp', 'tcp', 'syn'),
        mss: fc.integer({ min: 536, max: 9000 }),
        data: fc.uint8Array({ maxLength: 40 }),
        vni: fc.oneof({ weight: 8, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffff }) }),
        dstMac: fc.oneof({ weight: 8, arbitrary: fc.constant(OUR_MAC) }, { weight: 1, arbitrary: fc.constantFrom('ff:ff:ff:ff:ff:ff', AWS1.vtepMac) }),
        etherType: fc.oneof({ weight: 8, arbitrary: fc.constant(0x0800) }, { weight: 1, arbitrary: fc.constantFrom(0x0806, 0x86dd) }),
      })
      .map((f) => {
        const net = (f.subnet ?? f.peer.subnet).network;
        const src = [(net >>> 24) & 255, (net >>> 16) & 255, (net >>> 8) & 255, f.host].join('.');
        const payload = Buffer.from(f.data);
        const inner =
          f.kind === 'icmp' ? icmpEcho(src, '10.244.100.10', 1, f.host, payload)
          : f.kind === 'syn' ? tcp(src, '10.244.100.10', 0x02, Buffer.from([2, 4, f.mss >> 8, f.mss & 255]))
          : tcp(src, '10.244.100.10', 0x18, Buffer.alloc(0), payload);
        const data = vxlanFrame(f.vni, f.dstMac, f.peer.vtepMac, inner, f.etherType);
        return { data, from: f.sender < 0 ? f.peer.publicIp : SENDERS[f.sender] };
      });
    const datagram = fc.oneof(
      { weight: 4, arbitrary: fc.tuple(frame, fc.array(mutation(8 + 14 + 40), { maxLength: 3 })).map(([f, m]) => ({ data: applyMutations(f.data, m), from: f.from })) },
      { weight: 1, arbitrary: fc.record({ data: fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)), from: fc.constantFrom(...SENDERS) }) },
    );
    const peerAt = (addr: string) => PEERS.find((p) => p.publicIp === addr);
    let received = 0;
    let forwarded = 0;
    let clamped = 0;
    fc.assert(
      fc.property(fc.array(datagram, { maxLength: 20 }), (datagrams) => {
        const t = rig();
        for (const d of datagrams) t.udp.inbox.push({ data: Buffer.from(d.data), addr: ip(d.from), port: 8472 });
        while (t.outside.pump() > 0);
        // What may go through, worked out here the slow way: the inner IPv4 packet (up to its
        // total length) of a frame with our VNI and a VXLAN header a kernel VTEP with `gbp` takes, from a peer's endpoint,
        // to our MAC from that peer's MAC, whose source is in that peer's subnet.
        const want = datagrams.flatMap(({ data: d, from }) => {
          const peer = peerAt(from);
          if (!peer || d.length < 8 + 14 + 20) return [];
          // The I flag alone with zero bytes after it, or with the Group Policy extension's G flag and anything there.
          if (!((d[0] === 0x08 && (d[1] | d[2] | d[3]) === 0) || d[0] === 0x88) || d[7] || d.readUIntBE(4, 3) !== 1) return [];
          if (!d.subarray(8, 14).equals(mac(OUR_MAC)) || !d.subarray(14, 20).equals(mac(peer.vtepMac)) || d.readUInt16BE(20) !== 0x0800) return [];
          const p = d.subarray(22);
          const ihl = (p[0] & 0x0f) * 4;
          const total = p.readUInt16BE(2);
          if (p[0] >> 4 !== 4 || ihl < 20 || total < ihl || total > p.length) return [];
          if (((p.readUInt32BE(12) & peer.subnet.mask) >>> 0) !== peer.subnet.network) return [];
          return [p.subarray(0, total)];
        });
        received += datagrams.length;
        forwarded += t.dev.written.length;
        expect(t.dev.written.length).toBe(want.length);
        t.dev.written.forEach((got, i) => {
          if (got.equals(want[i])) return;
          // The one change allowed: the MSS of a SYN lowered to 1410, its checksum kept valid.
          expect(mssClampOf(want[i], got, 1410), `packet ${i}`).toBe(true);
          clamped++;
        });
      }),
      { numRuns: 1000 },
    );
    // Not vacuous: frames did get through, some of them clamped, and most datagrams did not.
    expect(forwarded).toBeGreaterThan(received / 20);
    expect(forwarded).toBeLessThan(received / 2);
    expect(clamped).toBeGreaterThan(0);
  });
});

/** Whether `got` is `orig` with the MSS option of a TCP SYN lowered to `mss` and nothing else
 *  changed but the TCP checksum, which must be as valid as it was. */
function mssClampOf(orig: Buffer, got: Buffer, mss: number): boolean {
  if (got.length !== orig.length || orig[9] !== 6) return false;
  const ihl = (orig[0] & 0x0f) * 4;
  const thl = (orig[ihl + 12] >> 4) * 4;
  if (!(orig[ihl + 13] & 0x02)) return false;
  const diff = [...got.keys()].filter((i) => got[i] !== orig[i] && i !== ihl + 16 && i !== ihl + 17);
  for (let at = ihl + 22; at + 2 <= ihl + thl && at + 2 <= orig.length; at++) {
    if (orig[at - 2] !== 2 || orig[at - 1] !== 4 || orig.readUInt16BE(at) <= mss || got.readUInt16BE(at) !== mss) continue;
    if (diff.every((i) => i === at || i === at + 1)) return tcpChecksumOk(got) === tcpChecksumOk(orig);
  }
  return false;
}

describe('TAP mode', () => {
  it('sends kernel-built frames to the peer owning the destination MAC, VXLAN header only', () => {
    const r = rig({ tap: true });
    const pkt = icmpEcho('10.244.100.10', '10.244.1.2');
    const frame = vxlanFrame(1, AWS1.vtepMac, OUR_MAC, pkt).subarray(8);
    r.dev.inbox.push(frame);
    const arp = Buffer.from(frame);
    arp.writeUInt16BE(0x0806, 12);
    r.dev.inbox.push(arp);
    r.inside.pump();
    expect(r.udp.sent).toHaveLength(1);
    expect(r.udp.sent[0].data.equals(vxlanFrame(1, AWS1.vtepMac, OUR_MAC, pkt))).toBe(true);
    expect(r.drops.get('notIPv4')).toBe(1);
  });

  it('writes whole inner Ethernet frames to the device', () => {
    const r = rig({ tap: true });
    const f = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10'));
    r.udp.inbox.push({ data: f, addr: ip('203.0.113.10'), port: 5555 });
    r.outside.pump();
    expect(r.dev.written[0].equals(f.subarray(8))).toBe(true);
  });
});
