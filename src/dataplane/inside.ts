// Inside: packets the site's kernel routed into our device, on their way to a peer.
//
//  1. One read call takes a batch of packets from the device, packed into one Buffer,
//     each with headroom in front.
//  2. Each packet is checked (IPv4, sane lengths), routed to the peer whose subnet
//     holds its destination (TUN) or whose VTEP MAC it is addressed to (TAP), and its
//     TCP MSS clamped if it is a SYN.
//  3. The inner Ethernet header (TUN only) and the VXLAN header are written into the
//     headroom, in place.
//  4. One send call hands the whole batch to the underlay socket (sendmmsg).
//
// With offloads (TUN, settings.vnetHdr) step 1 reads each packet with a virtio_net_hdr,
// and a packet may be a TCP super-packet of up to 64 KB that the site's kernel did not
// segment, or (Linux 6.2+) a UDP one: a flow's datagrams joined by GRO on the LAN
// interface, or a local UDP_SEGMENT send. Steps 2 and 3 are the same, once per super-packet; in
// step 4 the addon completes partial checksums and cuts super-packets into MTU-sized
// segments, each behind a copy of the headers, sent with UDP_SEGMENT (tso.c: that loop
// touches every byte, so it is C: src/native/tso.c).

import { clampTcpMss } from '../proto/tcpmss.js';
import { ETHERTYPE_IPV4, readEtherType, writeEthernetHeader } from '../proto/ethernet.js';
import { IPPROTO_TCP, IPPROTO_UDP, ipv4Dst, ipv4PacketLength } from '../proto/ipv4.js';
import { ENCAP_LEN, ETH_HEADER_LEN, VXLAN_HEADER_LEN, writeVxlanHeader } from '../proto/vxlan.js';
import { VNET_HDR_LEN, VNET_GSO_NONE, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, readVnetU16, vnetWireSegments } from '../proto/vnet.js';
import { isBulkTcp } from './bulk-flows.js';
import { Drop } from './drops.js';
import { Batch } from './io.js';
import { PacketPath, type PathContext } from './path.js';

/** Room in front of every slot for VXLAN + inner Ethernet, rounded up for alignment. */
export const INSIDE_HEADROOM = 32;
/** The largest IPv4 packet, hence the largest TCP super-packet a read can return. */
const MAX_IP_PACKET = 65535;
/** Read buffer with offloads: room for 2-3 super-packets or a batch of MTU-sized packets. Small
 *  on purpose: a read of 8 took ~1 ms to send in the lab, and what waits for the other path
 *  (an answer to let through, docs/dataplane.md "Batching and sizes") waits about one send. */
export const INSIDE_VNET_BUFFER = 3 * 65536;
/** With offloads, a read also stops once its packets make this many datagrams on the wire
 *  (a super-packet counts its segments): about what 3 TCP super-packets make. A UDP
 *  super-packet of small datagrams holds 64 of them in 5 KB, and a read of 3 x 64 KB of those
 *  (2 700 datagrams) kept the loop, and what waits for it, 20 times as long
 *  (docs/dataplane.md "UDP super-packets from the site"). */
export const INSIDE_VNET_SEGMENTS = 128;

export class InsidePath extends PacketPath {
  private readonly buf: Buffer;
  /** Where each packet landed and how long it is (-1: truncated). */
  private readonly offs: Int32Array;
  private readonly lens: Int32Array;
  private readonly out: Batch;
  /** For each packet of `out`: its peer, and the bytes and datagrams counted to that peer's
   *  tx when it was queued, to be taken back when udpSend refuses it (uncountRefused). */
  private readonly outPeer: Int32Array;
  private readonly outBytes: Int32Array;
  private readonly outSegs: Int32Array;
  /** udpSendFailed's answer: which packets of `out` did not go out. */
  private readonly outFailed: Uint8Array;
  /** The largest packet one read may return: 64 KB with offloads, else MTU (+ Ethernet on TAP). */
  private readonly room: number;
  /** Offloads only: each packet's virtio_net_hdr, and for each packet of `out` the index of its header. */
  private readonly vnet: Buffer | null;
  private readonly vnetIdx: Int32Array | null;
  /** Packets per read call: a pump that returns this many says "read on". */
  readonly batch: number;

  constructor(c: PathContext) {
    super(c);
    const s = c.settings;
    this.batch = s.batch;
    this.offs = new Int32Array(s.batch);
    this.lens = new Int32Array(s.batch);
    this.out = new Batch(s.batch);
    this.outPeer = new Int32Array(s.batch);
    this.outBytes = new Int32Array(s.batch);
    this.outSegs = new Int32Array(s.batch);
    this.outFailed = new Uint8Array(s.batch);
    if (s.vnetHdr) {
      if (s.tap) throw new Error('offloads need a TUN device');
      this.room = MAX_IP_PACKET;
      this.buf = Buffer.alloc(INSIDE_VNET_BUFFER);
      this.vnet = Buffer.alloc(VNET_HDR_LEN * s.batch);
      this.vnetIdx = new Int32Array(s.batch);
    } else {
      this.room = s.mtu + ETH_HEADER_LEN;
      this.buf = Buffer.alloc(align64(INSIDE_HEADROOM + this.room) * s.batch);
      this.vnet = null;
      this.vnetIdx = null;
    }
  }

  /** Moves one batch from the device to the underlay; returns how many packets were read
   *  (the batch size when the read stopped for want of room, so that the caller reads on). */
  pump(): number {
    return this.move(false);
  }

  /** One batch from the queues of the device that hold no ACKs of a download in progress
   *  (the addon knows them: the queues it has written bulk TCP to since the last pump), for
   *  a look while the underlay drains; the rest waits for the device's own turn. */
  look(): number {
    return this.move(true);
  }

  private move(look: boolean): number {
    const { buf, offs, lens, out, s } = this;
    const n = this.io.devRead(this.fds.device, buf, INSIDE_HEADROOM, this.room, s.batch, offs, lens, this.vnet, look, INSIDE_VNET_SEGMENTS);
    out.n = 0;
    for (let i = 0; i < n; i++) {
      // Larger than the device MTU (or 64 KB): the read truncated it; never forward half a packet.
      if (lens[i] < 0) this.drops.add(Drop.oversize);
      else if (this.vnet) this.encapVnet(i, offs[i], lens[i]);
      else if (s.tap) this.encapFrame(offs[i], lens[i]);
      else this.encapPacket(offs[i], lens[i]);
    }
    if (out.n > 0) {
      const sent = this.io.udpSend(this.fds.underlay, buf, out.offs, out.lens, out.addrs, out.ports, out.n, this.vnet, this.vnetIdx, ENCAP_LEN);
      if (sent < out.n) {
        this.drops.add(Drop.underlaySend, out.n - sent);
        this.uncountRefused();
      }
    }
    if (n > 0 && n < s.batch && (offs[n - 1] + Math.max(lens[n - 1], 0) + 64 + INSIDE_HEADROOM + this.room > buf.length || this.wireSegments(n) >= INSIDE_VNET_SEGMENTS)) {
      return s.batch;
    }
    return n;
  }

  /**
   * A refused datagram did not leave: it is an `underlaySend` drop, and no longer counted as
   * sent to its peer. The tx counters were bumped as each packet was queued (no second pass
   * over a batch that went out whole, the common case); here, off that path, the packets
   * udpSendFailed names are taken back. udpSend says how many went out, not which, and the
   * refused ones are not always the last: a datagram the kernel rejects alone (EMSGSIZE,
   * EACCES) may sit before others that left, and with the sender thread and offloads a ping
   * read with an upload leaves before the upload's super-packets are cut (tso.c send_early),
   * so a super-packet refused before it would have been taken back as the ping. A
   * super-packet counts as refused unless all of its segments left. With the sender thread,
   * udpSend counts what it sent itself or handed to the thread; what the thread fails to send
   * later is an `underlaySend` drop (Dataplane.collectLosses) but stays in the peer's tx:
   * that loss is known only as a count, for no peer (docs/dataplane.md "Peer tx counters").
   */
  private uncountRefused(): void {
    const { out, peers, outFailed } = this;
    const n = Math.min(this.io.udpSendFailed(outFailed), out.n);
    for (let k = 0; k < n; k++) if (outFailed[k] !== 0) peers.countTx(this.outPeer[k], -this.outBytes[k], -this.outSegs[k]);
  }

  /** Counts the packet just pushed to `out` to peer p's tx (`segs` datagrams, `wire` bytes on
   *  the wire) and remembers it, in case udpSend refuses it. */
  private countQueued(p: number, wire: number, segs: number): void {
    const k = this.out.n - 1;
    this.outPeer[k] = p;
    this.outBytes[k] = wire;
    this.outSegs[k] = segs;
    this.peers.countTx(p, wire, segs);
  }

  /** The datagrams the n packets just read make on the wire, counted as devRead counts them
   *  against INSIDE_VNET_SEGMENTS (truncated ones not at all); 0 without offloads. Asked only
   *  of a read that ended short, to tell a stop for that budget from a drained device. */
  private wireSegments(n: number): number {
    const { vnet, lens } = this;
    let w = 0;
    for (let i = 0; vnet && i < n; i++) if (lens[i] >= 0) w += vnetWireSegments(vnet, i * VNET_HDR_LEN, lens[i]);
    return w;
  }

  /** TUN with offloads: packet i at `off`, maybe a TCP or UDP super-packet; routed and
   *  encapsulated once, segmented by the addon. */
  private encapVnet(i: number, off: number, len: number): void {
    const { buf, s, peers } = this;
    const vnet = this.vnet!;
    const ipLen = ipv4PacketLength(buf, off, len);
    if (ipLen < 0) {
      this.drops.add(buf[off] >>> 4 !== 4 ? Drop.notIPv4 : Drop.badIPv4);
      return;
    }
    const p = peers.route(ipv4Dst(buf, off));
    if (p < 0) {
      this.drops.add(Drop.noPeer);
      return;
    }
    const h = i * VNET_HDR_LEN;
    const gsoType = vnet[h + 1] & 0x7f; // without the ECN bit
    let segs = 1;
    let wire = ipLen + ENCAP_LEN;
    if (gsoType === VNET_GSO_NONE) {
      // A SYN is never a super-packet; its checksum may still be partial.
      if (s.mssClamp) clampTcpMss(buf, off, ipLen, s.maxMss, (vnet[h] & VNET_F_NEEDS_CSUM) !== 0);
      if (isBulkTcp(buf, off, ipLen, s.mtu)) this.bulk.markReverse(buf, off, ipLen);
    } else {
      const hdrLen =
        gsoType === VNET_GSO_TCPV4 ? tcpHeadersLength(buf, off, ipLen) : gsoType === VNET_GSO_UDP_L4 ? udpHeadersLength(buf, off, ipLen) : -1;
      const gsoSize = readVnetU16(vnet, h + 4);
      if (hdrLen < 0 || gsoSize === 0) {
        this.drops.add(Drop.badIPv4); // metadata the kernel should never send us
        return;
      }
      // ceil(payload / gsoSize) in integers: a stream's first super-packets are often whole
      // multiples of the MSS, and a plain division then optimises to an exact Int32 divide
      // that deoptimises ("lost precision") at the first that is not (seen with --trace-deopt).
      segs = Math.max(1, (((ipLen - hdrLen + gsoSize - 1) / gsoSize) | 0));
      // A TCP super-packet is an upload's data: hold its flow's ACKs (headers checked above).
      if (gsoType === VNET_GSO_TCPV4) this.bulk.markReverse(buf, off, ipLen);
      wire = ipLen + segs * ENCAP_LEN + (segs - 1) * hdrLen;
    }
    const eth = off - ETH_HEADER_LEN;
    writeEthernetHeader(buf, eth, peers.macs, 6 * p, s.vtepMac, ETHERTYPE_IPV4);
    writeVxlanHeader(buf, eth - VXLAN_HEADER_LEN, s.vni);
    this.vnetIdx![this.out.n] = i;
    this.out.push(eth - VXLAN_HEADER_LEN, ipLen + ENCAP_LEN, peers.addr[p] | 0, peers.port[p]); // | 0: see ipv4Src
    this.countQueued(p, wire, segs);
  }

  /** TUN: an IPv4 packet at `off`; we supply the inner Ethernet header. */
  private encapPacket(off: number, len: number): void {
    const { buf, s, peers } = this;
    const ipLen = ipv4PacketLength(buf, off, len);
    if (ipLen < 0) {
      this.drops.add(buf[off] >>> 4 === 4 ? Drop.badIPv4 : Drop.notIPv4);
      return;
    }
    const p = peers.route(ipv4Dst(buf, off));
    if (p < 0) {
      this.drops.add(Drop.noPeer);
      return;
    }
    if (s.mssClamp) clampTcpMss(buf, off, ipLen, s.maxMss);
    if (isBulkTcp(buf, off, ipLen, s.mtu)) this.bulk.markReverse(buf, off, ipLen);
    const eth = off - ETH_HEADER_LEN;
    writeEthernetHeader(buf, eth, peers.macs, 6 * p, s.vtepMac, ETHERTYPE_IPV4);
    writeVxlanHeader(buf, eth - VXLAN_HEADER_LEN, s.vni);
    const wire = ipLen + ETH_HEADER_LEN + VXLAN_HEADER_LEN;
    this.out.push(eth - VXLAN_HEADER_LEN, wire, peers.addr[p] | 0, peers.port[p]); // | 0: see ipv4Src
    this.countQueued(p, wire, 1);
  }

  /** TAP: an Ethernet frame at `off`, already addressed by the kernel to a peer's VTEP MAC. */
  private encapFrame(off: number, len: number): void {
    const { buf, s, peers } = this;
    if (len < ETH_HEADER_LEN || readEtherType(buf, off) !== ETHERTYPE_IPV4) {
      // ARP, IPv6 neighbour discovery and the like never cross a flannel tunnel.
      this.drops.add(Drop.notIPv4);
      return;
    }
    const ip = off + ETH_HEADER_LEN;
    const ipLen = ipv4PacketLength(buf, ip, len - ETH_HEADER_LEN);
    if (ipLen < 0) {
      this.drops.add(Drop.badIPv4);
      return;
    }
    const p = peers.fromMac(buf, off);
    if (p < 0) {
      this.drops.add(Drop.noPeer);
      return;
    }
    if (s.mssClamp) clampTcpMss(buf, ip, ipLen, s.maxMss);
    if (isBulkTcp(buf, ip, ipLen, s.mtu)) this.bulk.markReverse(buf, ip, ipLen);
    writeVxlanHeader(buf, off - VXLAN_HEADER_LEN, s.vni);
    const wire = VXLAN_HEADER_LEN + ETH_HEADER_LEN + ipLen;
    this.out.push(off - VXLAN_HEADER_LEN, wire, peers.addr[p] | 0, peers.port[p]); // | 0: see ipv4Src
    this.countQueued(p, wire, 1);
  }
}

/** IPv4 + TCP header length of a TCP/IPv4 packet (`ipLen` bytes, validated), or -1. */
function tcpHeadersLength(buf: Buffer, off: number, ipLen: number): number {
  if (buf[off + 9] !== IPPROTO_TCP) return -1;
  const ihl = (buf[off] & 0x0f) << 2;
  if (ihl + 20 > ipLen) return -1;
  const hl = ihl + ((buf[off + ihl + 12] >>> 4) << 2);
  return hl - ihl < 20 || hl > ipLen ? -1 : hl;
}

/** IPv4 + UDP header length of a UDP/IPv4 packet (`ipLen` bytes, validated), or -1. */
function udpHeadersLength(buf: Buffer, off: number, ipLen: number): number {
  if (buf[off + 9] !== IPPROTO_UDP) return -1;
  const ihl = (buf[off] & 0x0f) << 2;
  return ihl + 8 > ipLen ? -1 : ihl + 8;
}

export function align64(n: number): number {
  return (n + 63) & ~63;
}
