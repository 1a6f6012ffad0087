// The TypeScript side of the offload paths, against in-memory twins: what the inside path
// decides once per super-packet (route, headers, MSS clamp, counters) before the addon cuts it,
// how the outside path splits UDP GRO datagrams into frames and checks each, and the
// start-up choice between the offload and the plain device (with the refusal path).
import { describe, expect, it } from 'vitest';
import { BulkFlows } from '../../src/dataplane/bulk-flows.js';
import { INSIDE_VNET_SEGMENTS, InsidePath } from '../../src/dataplane/inside.js';
import { OutsidePath } from '../../src/dataplane/outside.js';
import { DropCounters } from '../../src/dataplane/drops.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import type { PathSettings } from '../../src/dataplane/settings.js';
import { TUN_OFFLOADS, enableUdpGro, openDevice } from '../../src/dataplane/open.js';
import type { NativeBinding } from '../../src/native/index.js';
import { clampTcpMss } from '../../src/proto/tcpmss.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, VNET_HDR_LEN, writeVnetHeader } from '../../src/proto/vnet.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { FakeIo } from './fake-io.js';
import { icmpEcho, ip, ipv4, mac, tcp, tcpChecksumOk, vxlanFrame } from './packets.js';

const OUR_MAC = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
const AWS2 = { name: 'aws-2', publicIp: '203.0.113.20', port: 8472, subnet: parseCidr('10.244.2.0/24'), vtepMac: '0a:bb:00:00:02:00' };

function settings(over: Partial<PathSettings> = {}): PathSettings {
  return {
    tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR_MAC), vtepIp: ip('10.244.100.0'),
    mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8, ...over,
  };
}

function rig(over: Partial<PathSettings> = {}) {
  const s = settings({ vnetHdr: true, udpGro: true, ...over });
  const io = new FakeIo();
  const drops = new DropCounters();
  const peers = new PeerTable([AWS1, AWS2]);
  const bulk = new BulkFlows(); // shared by both paths, as in the data plane
  return { s, io, bulk, dev: io.device, udp: io.underlay, drops, peers, inside: new InsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }), outside: new OutsidePath({ settings: s, io, fds: io.fds, drops, peers, bulk }, () => 1000) };
}

function vnetHeader(h: Parameters<typeof writeVnetHeader>[2]): Buffer {
  const b = Buffer.alloc(VNET_HDR_LEN);
  writeVnetHeader(b, 0, h);
  return b;
}

const TS = Buffer.from('0101080a0001e2400000abcd', 'hex');

/** A UDP/IPv4 packet (its checksum does not matter here: the addon completes it). */
function ip4udp(src: string, dst: string, sport: number, dport: number, payload: Buffer): Buffer {
  const u = Buffer.alloc(8 + payload.length);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(u.length & 0xffff, 4);
  payload.copy(u, 8);
  return ipv4(src, dst, 17, u);
}

describe('inside path with offloads', () => {
  it('routes a super-packet once, writes the headers in front and counts every segment', () => {
    const r = rig();
    const big = tcp('10.244.100.10', '10.244.2.2', 0x18, TS, Buffer.alloc(10_000, 7));
    const h = vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: 1398, csumStart: 20, csumOffset: 16 });
    const ping = icmpEcho('10.244.100.10', '10.244.1.2');
    r.dev.inbox.push({ pkt: big, vnet: h }, { pkt: icmpEcho('10.244.100.10', '10.244.77.1'), vnet: vnetHeader({}) }, { pkt: ping, vnet: vnetHeader({}) });
    expect(r.inside.pump()).toBe(3);
    expect(r.udp.sent).toHaveLength(2);
    const [a, b] = r.udp.sent;
    expect(a).toMatchObject({ addr: ip('203.0.113.20'), port: 8472, encap: 22 });
    expect(a.data.equals(vxlanFrame(1, AWS2.vtepMac, OUR_MAC, big))).toBe(true);
    expect(a.vnet!.equals(h)).toBe(true); // the addon gets the packet's own header
    expect(b.data.equals(vxlanFrame(1, AWS1.vtepMac, OUR_MAC, ping))).toBe(true);
    expect(r.drops.get('noPeer')).toBe(1);
    // 10 000 bytes at 1398 per segment: 8 datagrams, each with its own headers.
    expect(r.peers.stat(1, 2)).toBe(8);
    expect(r.peers.stat(1, 3)).toBe(big.length + 8 * 22 + 7 * 52);
  });

  it('regression: a super-packet the socket refuses takes all of its datagrams and bytes back from the peer\'s tx', () => {
    const r = rig();
    const big = tcp('10.244.100.10', '10.244.2.2', 0x18, TS, Buffer.alloc(10_000, 7));
    const h = vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: 1398, csumStart: 20, csumOffset: 16 });
    const ping = icmpEcho('10.244.100.10', '10.244.2.2');
    r.dev.inbox.push({ pkt: ping, vnet: vnetHeader({}) }, { pkt: big, vnet: h });
    r.udp.room = 1;
    expect(r.inside.pump()).toBe(2);
    expect(r.drops.get('underlaySend')).toBe(1);
    expect([r.peers.stat(1, 2), r.peers.stat(1, 3)]).toEqual([1, ping.length + 22]); // the ping alone
  });

  it('regression: a super-packet refused while a ping of its batch left (the sender thread sends that first) is what is taken back', () => {
    const r = rig();
    const big = tcp('10.244.100.10', '10.244.2.2', 0x18, TS, Buffer.alloc(10_000, 7));
    const h = vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: 1398, csumStart: 20, csumOffset: 16 });
    const ping = icmpEcho('10.244.100.10', '10.244.2.2');
    r.dev.inbox.push({ pkt: big, vnet: h }, { pkt: ping, vnet: vnetHeader({}) });
    r.udp.rejects = (_addr, len) => len === big.length + 22; // tso.c send_early: the ping left, the segments did not
    expect(r.inside.pump()).toBe(2);
    expect(r.drops.get('underlaySend')).toBe(1);
    expect([r.peers.stat(1, 2), r.peers.stat(1, 3)]).toEqual([1, ping.length + 22]); // the ping alone
  });

  it('routes a UDP super-packet (GSO_UDP_L4) the same way and counts its datagrams, without marking a flow as uploading', () => {
    const r = rig();
    const payload = 5 * 1200 + 300;
    const big = ip4udp('10.244.100.10', '10.244.2.2', 4433, 6000, Buffer.alloc(payload, 9));
    const h = vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_UDP_L4, hdrLen: 28, gsoSize: 1200, csumStart: 20, csumOffset: 6 });
    r.dev.inbox.push({ pkt: big, vnet: h });
    expect(r.inside.pump()).toBe(1);
    expect(r.udp.sent).toHaveLength(1);
    expect(r.udp.sent[0]).toMatchObject({ addr: ip('203.0.113.20'), port: 8472, encap: 22 });
    expect(r.udp.sent[0].data.equals(vxlanFrame(1, AWS2.vtepMac, OUR_MAC, big))).toBe(true);
    expect(r.udp.sent[0].vnet!.equals(h)).toBe(true);
    expect(r.peers.stat(1, 2)).toBe(6);
    expect(r.peers.stat(1, 3)).toBe(big.length + 6 * 22 + 5 * 28);
    // Only TCP super-packets hold their flow's reverse (the ACKs) in the outside path's look.
    const reverse = ip4udp('10.244.2.2', '10.244.100.10', 6000, 4433, Buffer.alloc(8));
    const other = tcp('10.244.100.10', '10.244.2.2', 0x10, TS, Buffer.alloc(0));
    r.bulk.markReverse(other, 0, other.length); // something else is marked
    expect(r.bulk.has(reverse, 0, reverse.length)).toBe(false);
    // GSO_UDP_L4 on a packet that is not UDP, or one too short for its header, is dropped.
    r.dev.inbox.push({ pkt: icmpEcho('10.244.100.10', '10.244.1.2'), vnet: h });
    r.inside.pump();
    expect(r.drops.get('badIPv4')).toBe(1);
  });

  it('stops a read at INSIDE_VNET_SEGMENTS datagrams on the wire and says "full batch", so a read of small UDP super-packets stays short', () => {
    const r = rig({ batch: 64 });
    // 64 datagrams of 64 B each: 4 124 bytes, counted as ceil(4 124 / 64) = 65 datagrams.
    const big = ip4udp('10.244.100.10', '10.244.2.2', 4433, 6000, Buffer.alloc(64 * 64, 3));
    const h = vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_UDP_L4, hdrLen: 28, gsoSize: 64, csumStart: 20, csumOffset: 6 });
    for (let i = 0; i < 5; i++) r.dev.inbox.push({ pkt: big, vnet: h });
    expect(INSIDE_VNET_SEGMENTS).toBe(128);
    expect(r.inside.pump()).toBe(64); // 2 read (130 >= 128): full, read on
    expect(r.udp.sent).toHaveLength(2);
    expect(r.inside.pump()).toBe(64);
    expect(r.udp.sent).toHaveLength(4);
    expect(r.inside.pump()).toBe(1); // the last one: drained
    expect(r.udp.sent).toHaveLength(5);
    // Plain packets count one each: a batch of them is not cut short.
    for (let i = 0; i < 70; i++) r.dev.inbox.push({ pkt: icmpEcho('10.244.100.10', '10.244.1.2', 1, i), vnet: vnetHeader({}) });
    expect(r.inside.pump()).toBe(64);
    expect(r.udp.sent).toHaveLength(5 + 64);
  });

  it('counts ceil(payload / gso_size) segments, for whole multiples of it and one byte either side', () => {
    for (const gsoSize of [536, 1398, 1410]) {
      for (const payload of [1, gsoSize - 1, gsoSize, gsoSize + 1, 7 * gsoSize - 1, 7 * gsoSize, 7 * gsoSize + 1, 46 * gsoSize]) {
        const r = rig();
        const big = tcp('10.244.100.10', '10.244.2.2', 0x18, TS, Buffer.alloc(payload, 7));
        r.dev.inbox.push({ pkt: big, vnet: vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize, csumStart: 20, csumOffset: 16 }) });
        expect(r.inside.pump()).toBe(1);
        const segs = Math.ceil(payload / gsoSize);
        expect([payload, gsoSize, r.peers.stat(1, 2)]).toEqual([payload, gsoSize, segs]);
        expect(r.peers.stat(1, 3)).toBe(big.length + segs * 22 + (segs - 1) * 52);
      }
    }
  });

  it('clamps the MSS of a SYN whose checksum is still partial without touching the checksum field', () => {
    const r = rig();
    const syn = tcp('10.244.100.10', '10.244.1.2', 0x02, Buffer.from([2, 4, 0x23, 0x28]));
    syn.writeUInt16BE(0x1234, 36); // a pseudo-header sum, not a checksum
    r.dev.inbox.push({ pkt: syn, vnet: vnetHeader({ flags: VNET_F_NEEDS_CSUM, csumStart: 20, csumOffset: 16 }) });
    r.inside.pump();
    const inner = r.udp.sent[0].data.subarray(22);
    expect(inner.readUInt16BE(42)).toBe(1410);
    expect(inner.readUInt16BE(36)).toBe(0x1234);
    // With a complete checksum the clamp updates it, as before.
    const full = tcp('10.244.100.10', '10.244.1.2', 0x02, Buffer.from([2, 4, 0x23, 0x28]));
    clampTcpMss(full, 0, full.length, 1410, false);
    expect(tcpChecksumOk(full)).toBe(true);
  });

  it('drops a super-packet whose metadata makes no sense', () => {
    const r = rig();
    const udp = icmpEcho('10.244.100.10', '10.244.1.2');
    r.dev.inbox.push({ pkt: udp, vnet: vnetHeader({ gsoType: VNET_GSO_TCPV4, gsoSize: 1398 }) });
    const t = tcp('10.244.100.10', '10.244.1.2', 0x10, TS, Buffer.alloc(3000));
    r.dev.inbox.push({ pkt: t, vnet: vnetHeader({ gsoType: VNET_GSO_TCPV4, gsoSize: 0 }) });
    r.inside.pump();
    expect(r.udp.sent).toHaveLength(0);
    expect(r.drops.get('badIPv4')).toBe(2);
  });

  it('says "full batch" when the read stopped for want of room, so the data plane reads on', () => {
    const r = rig({ batch: 64 });
    const big = tcp('10.244.100.10', '10.244.1.2', 0x10, TS, Buffer.alloc(60_000));
    const h = vnetHeader({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: 1398, csumStart: 20, csumOffset: 16 });
    for (let i = 0; i < 12; i++) r.dev.inbox.push({ pkt: big, vnet: h });
    expect(r.inside.pump()).toBe(64);
    expect(r.udp.sent.length).toBeGreaterThan(0);
    expect(r.udp.sent.length).toBeLessThan(12);
  });

  it('refuses offloads on a TAP device, and asks the device write to coalesce only with them', () => {
    const s = settings({ vnetHdr: true });
    const io = new FakeIo();
    expect(() => new InsidePath({ settings: { ...s, tap: true }, io, fds: io.fds, drops: new DropCounters(), peers: new PeerTable([AWS1]), bulk: new BulkFlows() })).toThrow(/TUN/);
    const r = rig();
    const plain = rig({ vnetHdr: false, udpGro: false });
    for (const x of [r, plain]) {
      x.udp.inbox.push({ data: vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')), addr: ip('203.0.113.10'), port: 1, seg: 0 });
      x.outside.pump();
    }
    expect(r.dev.writes.map((w) => w.vnet)).toEqual([true]);
    expect(plain.dev.writes.map((w) => w.vnet)).toEqual([false]);
  });
});

describe('outside path with UDP GRO', () => {
  it('splits a coalesced datagram into frames and checks each on its own', () => {
    const r = rig();
    const frames = [0, 1, 2, 3].map((i) => vxlanFrame(1, OUR_MAC, AWS1.vtepMac, tcp('10.244.1.2', '10.244.100.10', 0x10, TS, Buffer.alloc(1000, i))));
    const bad = Buffer.from(frames[2]);
    bad[4] = 9; // wrong VNI
    const last = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, tcp('10.244.1.2', '10.244.100.10', 0x18, TS, Buffer.alloc(10, 9)));
    const seg = frames[0].length;
    r.udp.inbox.push({ data: Buffer.concat([frames[0], frames[1], bad, frames[3], last]), addr: ip('203.0.113.10'), port: 40000, seg });
    r.udp.inbox.push({ data: frames[0], addr: ip('203.0.113.10'), port: 40000, seg: 0 });
    expect(r.outside.pump()).toBe(2);
    expect(r.drops.snapshot()).toEqual({ wrongVni: 1 });
    expect(r.dev.written.map((p) => p.length)).toEqual([1052, 1052, 1052, 62, 1052]);
    expect(r.dev.written[3].equals(last.subarray(22))).toBe(true);
    expect(r.peers.stat(0, 0)).toBe(5);
  });

  it('a coalesced datagram from an unknown sender is dropped frame by frame', () => {
    const r = rig();
    const f = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10'));
    r.udp.inbox.push({ data: Buffer.concat([f, f, f]), addr: ip('198.51.100.99'), port: 1, seg: f.length });
    r.outside.pump();
    expect(r.drops.get('unknownSource')).toBe(3);
    expect(r.dev.written).toHaveLength(0);
  });

  it('keeps dropping datagrams over 9216 bytes as oversize, though the GRO slot holds 64 KB', () => {
    const r = rig();
    r.udp.inbox.push({ data: Buffer.alloc(20_000), addr: ip('203.0.113.10'), port: 1, seg: 0 });
    r.outside.pump();
    expect(r.drops.get('oversize')).toBe(1);
  });

  it('writes to the device in several calls when the frames outnumber one write batch', () => {
    const r = rig({ batch: 64 });
    const writes: number[] = [];
    const devWrite = r.io.devWrite.bind(r.io);
    r.io.devWrite = (fd, buf, offs, lens, n, vnet) => (writes.push(n), devWrite(fd, buf, offs, lens, n, vnet));
    const f = vxlanFrame(1, OUR_MAC, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10', 1, 1, Buffer.alloc(8)));
    // 16 datagrams (half a receive with UDP GRO) of 70 frames: more than the 1024 one write takes.
    for (let i = 0; i < 16; i++) r.udp.inbox.push({ data: Buffer.concat(Array(70).fill(f)), addr: ip('203.0.113.10'), port: 1, seg: f.length });
    expect(r.outside.pump()).toBe(16);
    expect(r.outside.batch).toBe(32);
    expect(writes).toEqual([1024, 96]);
    expect(r.dev.written).toHaveLength(1120);
  });
});

describe('choosing the offload path and the queues at start-up', () => {
  const handle = { fd: 7, name: 'flannel.1', queues: 1 };
  /** refuse: the kernel refuses offloads; refuseQueues: it refuses more than one queue. */
  const opener = (refuse: boolean, calls: string[], refuseQueues = false): Pick<NativeBinding, 'tunOpen'> => ({
    tunOpen: (name, tap, offloads, queues = 1) => {
      calls.push(`${offloads === 0 ? 'plain' : `vnet`} ${name} ${tap ? 'tap' : offloads || 'tun'} q${queues}`);
      if (queues > 1 && refuseQueues) throw Object.assign(new Error('ioctl(TUNSETIFF) tun multi_queue flannel.1: invalid argument (EINVAL)'), { code: 'EINVAL' });
      if (offloads !== 0 && refuse) throw Object.assign(new Error('ioctl(TUNSETOFFLOAD 0x3) flannel.1: invalid argument (EINVAL)'), { code: 'EINVAL' });
      return { ...handle, queues };
    },
  });

  it('TUN with offloads when the kernel agrees', () => {
    const calls: string[] = [];
    expect(openDevice(opener(false, calls), 'flannel.1', 'tun', true)).toEqual({ tun: handle, vnetHdr: true, offloadOff: null, queuesOff: null });
    expect(calls).toEqual([`vnet flannel.1 ${TUN_OFFLOADS} q1`]);
    expect(TUN_OFFLOADS).toBe(0x03); // TUN_F_CSUM | TUN_F_TSO4
  });

  it('falls back to the plain TUN, saying why, when the kernel refuses', () => {
    const calls: string[] = [];
    const d = openDevice(opener(true, calls), 'flannel.1', 'tun', true);
    expect(d.vnetHdr).toBe(false);
    expect(d.offloadOff).toMatch(/refused TUN offloads: .*EINVAL/);
    expect(calls).toEqual(['vnet flannel.1 3 q1', 'plain flannel.1 tun q1']);
  });

  it('plain when offloads are off, and always plain in TAP mode', () => {
    const calls: string[] = [];
    expect(openDevice(opener(false, calls), 'flannel.1', 'tun', false)).toEqual({ tun: handle, vnetHdr: false, offloadOff: null, queuesOff: null });
    expect(openDevice(opener(false, calls), 'flannel.1', 'tap', true).vnetHdr).toBe(false);
    expect(calls).toEqual(['plain flannel.1 tun q1', 'plain flannel.1 tap q1']);
  });

  it('asks for the configured queues; one queue, saying why, when the kernel refuses more', () => {
    const calls: string[] = [];
    const d = openDevice(opener(false, calls), 'flannel.1', 'tun', true, 8);
    expect(d).toEqual({ tun: { ...handle, queues: 8 }, vnetHdr: true, offloadOff: null, queuesOff: null });
    const refused = openDevice(opener(false, calls, true), 'flannel.1', 'tap', false, 4);
    expect(refused.tun.queues).toBe(1);
    expect(refused.queuesOff).toMatch(/refused 4 device queues: .*multi_queue.*EINVAL/);
    // Offloads refused as well: the plain device is asked for the queues again, and the
    // reason for one queue is the plain attempt's own.
    const both = openDevice(opener(true, calls, true), 'flannel.1', 'tun', true, 2);
    expect(both).toMatchObject({ vnetHdr: false, tun: { queues: 1 }, queuesOff: expect.stringMatching(/refused 2 device queues/) });
    expect(both.offloadOff).toMatch(/refused TUN offloads: .*TUNSETOFFLOAD/);
    expect(calls).toEqual([
      'vnet flannel.1 3 q8',
      'plain flannel.1 tap q4', 'plain flannel.1 tap q1',
      'vnet flannel.1 3 q2', 'vnet flannel.1 3 q1', 'plain flannel.1 tun q2', 'plain flannel.1 tun q1',
    ]);
  });

  it('UDP GRO: on, or off with the reason', () => {
    expect(enableUdpGro({ udpSetGro: () => undefined }, 3)).toBeNull();
    expect(enableUdpGro({ udpSetGro: () => {
      throw new Error('setsockopt(UDP_GRO) fd 3: protocol not available (ENOPROTOOPT)');
    } }, 3)).toMatch(/refused UDP_GRO: .*ENOPROTOOPT/);
  });
});
