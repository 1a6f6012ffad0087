// Inside: packets the site's kernel routed into our device, on their way to a peer.
//
//  1. One read call takes a batch of packets from the device, each into its own slot
//     of one Buffer, leaving headroom in front.
//  2. Each packet is checked (IPv4, sane lengths), routed to the peer whose subnet
//     holds its destination (TUN) or whose VTEP MAC it is addressed to (TAP), and its
//     TCP MSS clamped if it is a SYN.
//  3. The inner Ethernet header (TUN only) and the VXLAN header are written into the
//     headroom, in place.
//  4. One send call hands the whole batch to the underlay socket (sendmmsg).

import { clampTcpMss } from '../proto/tcpmss.js';
import { ETHERTYPE_IPV4, readEtherType, writeEthernetHeader } from '../proto/ethernet.js';
import { ipv4Dst, ipv4PacketLength } from '../proto/ipv4.js';
import { ETH_HEADER_LEN, VXLAN_HEADER_LEN, writeVxlanHeader } from '../proto/vxlan.js';
import { Drop, type DropCounters } from './drops.js';
import { Batch, type DeviceIo, type UnderlayIo } from './io.js';
import type { PeerTable } from './peers.js';
import type { PathSettings } from './settings.js';

/** Room in front of every slot for VXLAN + inner Ethernet, rounded up for alignment. */
export const INSIDE_HEADROOM = 32;

export class InsidePath {
  private readonly buf: Buffer;
  private readonly lens: Int32Array;
  private readonly out: Batch;
  private readonly slot: number;

  constructor(
    private readonly s: PathSettings,
    private readonly device: DeviceIo,
    private readonly underlay: UnderlayIo,
    private readonly drops: DropCounters,
    public peers: PeerTable,
  ) {
    // A slot holds the largest frame the device can hand us (MTU, plus Ethernet in TAP mode).
    this.slot = align64(INSIDE_HEADROOM + s.mtu + ETH_HEADER_LEN);
    this.buf = Buffer.alloc(this.slot * s.batch);
    this.lens = new Int32Array(s.batch);
    this.out = new Batch(s.batch);
  }

  /** Moves one batch from the device to the underlay; returns how many packets were read. */
  pump(): number {
    const { buf, lens, out, s } = this;
    const n = this.device.read(buf, this.slot, INSIDE_HEADROOM, s.batch, lens);
    out.n = 0;
    for (let i = 0; i < n; i++) {
      const off = i * this.slot + INSIDE_HEADROOM;
      if (s.tap) this.encapFrame(off, lens[i]);
      else this.encapPacket(off, lens[i]);
    }
    if (out.n > 0) {
      const sent = this.underlay.send(buf, out.offs, out.lens, out.addrs, out.ports, out.n);
      if (sent < out.n) this.drops.add(Drop.underlaySend, out.n - sent);
    }
    return n;
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
    const eth = off - ETH_HEADER_LEN;
    writeEthernetHeader(buf, eth, peers.macs, 6 * p, s.vtepMac, ETHERTYPE_IPV4);
    writeVxlanHeader(buf, eth - VXLAN_HEADER_LEN, s.vni);
    const wire = ipLen + ETH_HEADER_LEN + VXLAN_HEADER_LEN;
    this.out.push(eth - VXLAN_HEADER_LEN, wire, peers.addr[p], peers.port[p]);
    peers.countTx(p, wire);
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
    writeVxlanHeader(buf, off - VXLAN_HEADER_LEN, s.vni);
    const wire = VXLAN_HEADER_LEN + ETH_HEADER_LEN + ipLen;
    this.out.push(off - VXLAN_HEADER_LEN, wire, peers.addr[p], peers.port[p]);
    peers.countTx(p, wire);
  }
}

export function align64(n: number): number {
  return (n + 63) & ~63;
}
