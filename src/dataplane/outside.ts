// Outside: datagrams from the underlay socket, on their way into the site.
//
//  1. One receive call (recvmmsg) takes a batch of datagrams into slots of one Buffer.
//  2. Non-VXLAN traffic on the same socket (STUN replies, recognised by the magic
//     cookie) is handed to the control plane.
//  3. Every datagram is untrusted and checked in order: size, VXLAN flags, reserved
//     bits and VNI (as strictly as the kernel), sender is a known peer endpoint, inner
//     destination MAC is ours, inner source MAC is that peer's, IPv4 inside, inner
//     source address inside that peer's subnet. A failure is counted by reason.
//  4. Keepalive replies addressed to our own VTEP address may be consumed by the
//     control plane; everything else has its MSS clamped and is queued for the device.
//  5. One write call per batch hands the packets (TUN: the inner IPv4 packet; TAP: the
//     inner Ethernet frame) to the device.
//
// With offloads (TUN, settings.udpGro/vnetHdr) a received datagram may hold several VXLAN
// frames of one sender (UDP GRO: segs[i] bytes each, the last possibly shorter); each frame
// is checked on its own as in step 3. In step 5 the addon joins consecutive TCP segments
// of one flow into one super-packet per write (src/native/gro.c), after verifying their
// checksums, and on Linux 6.2+ consecutive UDP datagrams of one flow too.

import { ETHERTYPE_IPV4, isBroadcastMac, macEquals, readEtherType } from '../proto/ethernet.js';
import { IPPROTO_TCP, ipv4Dst, ipv4PacketLength, ipv4Src } from '../proto/ipv4.js';
import { decapsulateEcn } from '../proto/ecn.js';
import { clampTcpMss } from '../proto/tcpmss.js';
import {
  ETH_HEADER_LEN,
  MIN_VXLAN_DATAGRAM,
  VXLAN_HEADER_LEN,
  VxlanVerdict,
  checkVxlanHeader,
} from '../proto/vxlan.js';
import { Drop } from './drops.js';
import { Batch } from './io.js';
import { PacketPath, type PathContext } from './path.js';
import { align64 } from './inside.js';

const STUN_MAGIC_COOKIE = 0x2112a442;

/** Control-plane taps on the outside path; each returns true when it consumed the packet. */
export interface OutsideHooks {
  /** A datagram carrying the STUN magic cookie in bytes 4..7. */
  onStun?(buf: Buffer, off: number, len: number, addr: number, port: number): boolean;
  /** A valid inner IPv4 packet from peer `p` addressed to our VTEP address (keepalive replies). */
  onToVtep?(buf: Buffer, ipOff: number, ipLen: number, p: number): boolean;
  /**
   * A frame that passed every check for peer `p` (its VTEP MAC, an inner source in its
   * subnet) but came from an address that is not p's endpoint: a roaming candidate. It
   * is never forwarded; the hook may consume it (a path-validation answer) or not
   * (then it is counted as unknownSource).
   */
  onRoamCandidate?(p: number, addr: number, port: number, buf: Buffer, ipOff: number, ipLen: number): boolean;
}

/** Largest datagram we accept; anything longer arrives truncated and is dropped as oversize. */
export const OUTSIDE_MAX_DATAGRAM = 9216;
/** Receive slot with UDP GRO: a coalesced datagram is up to 64 KB. */
const GRO_SLOT = 65536;
/** Datagrams per receive with UDP GRO: each may hold up to 64 frames, so 32 of them are up to
 *  2048 frames in a 2 MB buffer. Per batch the drain pays a receive, a look at the device and
 *  device writes that end each flow's super-packet: with 16 a download took more CPU for the
 *  same rate and four were slower; 64 made one slower and the pings beside it too
 *  (docs/dataplane.md "Batching and sizes"). */
const GRO_RECV_BATCH = 32;
/** Frames queued for one device write with UDP GRO (a batch of datagrams holds many). */
const GRO_OUT_BATCH = 1024;

export class OutsidePath extends PacketPath {
  private readonly buf: Buffer;
  private readonly lens: Int32Array;
  private readonly addrs: Uint32Array;
  private readonly ports: Uint16Array;
  private readonly out: Batch;
  /** What expedite() writes at once: the packets of its batch that are not TCP of a bulk flow. */
  private readonly early: Batch;
  /** Slots from the first on that hold datagrams whose TCP segments wait in `out` for the
   *  next pump(): expedite() receives into the slots after them. */
  private held = 0;
  /** `buf` from slot k on (made once: a view per receive would be garbage per batch). */
  private readonly from: Buffer[];
  private readonly slot: number;
  /** UDP GRO only: segment size of each received datagram (0: a single frame). */
  private readonly segs: Int32Array | null;
  /** The ECN field of each received datagram's outer header (proto/ecn.ts). */
  private readonly ecn: Uint8Array;
  /** Datagrams per receive call: a pump that returns this many says "read on". */
  readonly batch: number;
  hooks: OutsideHooks = {};
  /** The batch's receive time (monotonic ms), a field rather than an argument: a double
   *  passed to a call that is not inlined is boxed, once per datagram. */
  private batchTime = 0;

  constructor(
    c: PathContext,
    /** Monotonic time for peers' lastRx (liveness must not jump with the wall clock), read once per batch. */
    private readonly now: () => number,
  ) {
    super(c);
    const s = c.settings;
    this.slot = s.udpGro ? GRO_SLOT : align64(OUTSIDE_MAX_DATAGRAM);
    this.batch = s.udpGro ? Math.min(GRO_RECV_BATCH, s.batch) : s.batch;
    this.buf = Buffer.alloc(this.slot * this.batch);
    this.lens = new Int32Array(this.batch);
    this.addrs = new Uint32Array(this.batch);
    this.ports = new Uint16Array(this.batch);
    this.segs = s.udpGro ? new Int32Array(this.batch) : null;
    this.ecn = new Uint8Array(this.batch);
    this.out = new Batch(s.udpGro ? GRO_OUT_BATCH : s.batch);
    this.early = new Batch(this.out.capacity);
    this.from = [];
    for (let k = 0; k < this.batch; k++) this.from.push(this.buf.subarray(k * this.slot));
  }

  /** Moves one batch from the underlay to the device; returns how many datagrams were received. */
  pump(): number {
    this.flush(); // what expedite() left queued, before its slots are received into again
    this.held = 0;
    this.bulk.clear(); // the next drain marks the flows still moving bulk (bulk-flows.ts)
    const n = this.take(0);
    this.flush();
    return n;
  }

  /**
   * Called between batches of the other direction while that one drains (Dataplane.drain):
   * receives one batch and writes at once the packets that are not TCP of a flow moving bulk
   * data to the peers during this drain (a ping's answer, DNS, the answer of an interactive
   * TCP session; a keepalive reply goes to the control plane); the bulk flows' segments
   * (their ACKs) stay queued, in order, until the next pump(). Delivered early, a bulk
   * stream's ACKs would reach the site in small groups, and a host's TCP would send in small
   * bursts (docs/dataplane.md "Batching and sizes"). No flow is reordered: each look decides
   * again for everything held, in order, with one answer per flow.
   * Receives into the slots that earlier calls left free; returns how many datagrams it
   * received (0 once every slot holds TCP that waits).
   */
  expedite(): number {
    if (this.held >= this.batch) return 0;
    const n = this.take(this.held);
    this.pickExpress();
    this.write(this.early);
    this.held = this.out.n > 0 ? this.held + n : 0;
    return n;
  }

  /** Moves the packets that are not TCP of a bulk flow from `out` to `early`, keeping the
   *  order of both. A pass of its own rather than a branch in decap(): decap is optimised
   *  long before the first expedite(), and a branch it had never taken would deoptimise it then. */
  private pickExpress(): void {
    const { out, early, buf, bulk } = this;
    const ip = this.s.tap ? ETH_HEADER_LEN : 0;
    let kept = 0;
    for (let j = 0; j < out.n; j++) {
      const off = out.offs[j];
      if (buf[off + ip + 9] === IPPROTO_TCP && bulk.has(buf, off + ip, out.lens[j] - ip)) {
        out.offs[kept] = off;
        out.lens[kept++] = out.lens[j];
      } else {
        early.push(off, out.lens[j]);
      }
    }
    out.n = kept;
  }

  /** Receives up to a batch into the slots from `first` on and decapsulates it into `out`;
   *  returns the datagrams. */
  private take(first: number): number {
    const { lens, segs, ecn } = this;
    const n = this.io.udpRecv(this.fds.underlay, this.from[first], this.slot, 0, this.batch - first, lens, this.addrs, this.ports, segs, ecn);
    this.batchTime = this.now();
    for (let i = 0; i < n; i++) {
      const off = (first + i) * this.slot;
      const len = lens[i];
      const seg = segs ? segs[i] : 0;
      // The datagram's index, not its source address and port: an address above 2^31 is no
      // small integer to V8 and would be boxed for the call, once per datagram.
      if (seg > 0 && len > seg) {
        // Several frames from one sender, coalesced by the kernel: each is checked on its own.
        const big = seg > OUTSIDE_MAX_DATAGRAM;
        for (let o = 0; o < len; o += seg) this.decap(off + o, big ? -1 : Math.min(seg, len - o), i);
      } else {
        this.decap(off, len > OUTSIDE_MAX_DATAGRAM ? -1 : len, i);
      }
    }
    return n;
  }

  private flush(): void {
    this.write(this.out);
  }

  /** One device write of a batch's packets, which leaves it empty. */
  private write(b: Batch): void {
    if (b.n > 0) {
      const written = this.io.devWrite(this.fds.device, this.buf, b.offs, b.lens, b.n, this.s.vnetHdr === true);
      if (written < b.n) this.drops.add(Drop.deviceWrite, b.n - written);
      b.n = 0;
    }
  }

  private queue(off: number, len: number): void {
    if (this.out.n === this.out.capacity) this.flush();
    this.out.push(off, len);
  }

  /** One frame at `off` of datagram `i` (its source in addrs[i], ports[i]). */
  private decap(off: number, len: number, i: number): void {
    const { buf, s, drops } = this;
    if (len < 0) return drops.add(Drop.oversize);
    // Signed, so that passing it on allocates nothing (see ipv4Src); `>>> 0` for the hooks.
    const addr = this.addrs[i] | 0;
    const port = this.ports[i];
    if (len >= 20 && buf.readUInt32BE(off + 4) === STUN_MAGIC_COOKIE && (buf[off] & 0xc0) === 0) {
      if (this.hooks.onStun?.(buf, off, len, addr >>> 0, port)) return;
    }
    if (len < MIN_VXLAN_DATAGRAM) return drops.add(Drop.short);
    const verdict = checkVxlanHeader(buf, off, s.vni);
    if (verdict !== VxlanVerdict.ok) {
      return drops.add(
        verdict === VxlanVerdict.badFlags ? Drop.badFlags : verdict === VxlanVerdict.wrongVni ? Drop.wrongVni : Drop.reservedBits,
      );
    }
    const eth = off + VXLAN_HEADER_LEN;
    const peers = this.peers;
    let p = peers.fromAddress(addr);
    let candidate = false;
    if (p < 0) {
      p = peers.fromMac(buf, eth + 6);
      if (p < 0 || (s.strictPeers && !this.hooks.onRoamCandidate)) return drops.add(Drop.unknownSource);
      candidate = s.strictPeers;
    }
    if (!macEquals(buf, eth, s.vtepMac, 0) && !(s.tap && isBroadcastMac(buf, eth))) return drops.add(Drop.notForUs);
    if (!macEquals(buf, eth + 6, peers.macs, 6 * p)) {
      // Strict: another peer's MAC is accepted only from that peer's own endpoint address,
      // which two peers share when they sit behind one address (a NAT forwarding a port to
      // each): fromAddress names only one of them.
      const byMac = peers.fromMac(buf, eth + 6);
      if (byMac < 0 || (s.strictPeers && peers.addr[byMac] !== peers.addr[p])) return drops.add(Drop.foreignMac);
      p = byMac;
    }
    if (readEtherType(buf, eth) !== ETHERTYPE_IPV4) return drops.add(Drop.notIPv4);
    const ip = eth + ETH_HEADER_LEN;
    const ipLen = ipv4PacketLength(buf, ip, len - VXLAN_HEADER_LEN - ETH_HEADER_LEN);
    if (ipLen < 0) return drops.add(buf[ip] >>> 4 === 4 ? Drop.badIPv4 : Drop.notIPv4);
    if (s.strictPeers && !peers.inSubnet(p, ipv4Src(buf, ip))) return drops.add(Drop.spoofedSource);
    if (candidate) {
      if (!this.hooks.onRoamCandidate!(p, addr >>> 0, port, buf, ip, ipLen)) drops.add(Drop.unknownSource);
      return;
    }
    // After every check, as the kernel's vxlan_rcv: a CE mark on the outer header goes to
    // the inner one, or the packet is dropped when that one is not ECN-capable (proto/ecn.ts).
    const ecn = this.ecn[i];
    if (ecn !== 0 && !decapsulateEcn(buf, ip, ecn)) return drops.add(Drop.ceNotEct);
    peers.countRx(p, len);
    peers.lastRx[p] = this.batchTime;
    if (ipv4Dst(buf, ip) >>> 0 === s.vtepIp && this.hooks.onToVtep?.(buf, ip, ipLen, p)) return;
    if (s.mssClamp) clampTcpMss(buf, ip, ipLen, s.maxMss);
    if (s.tap) this.queue(eth, ETH_HEADER_LEN + ipLen);
    else this.queue(ip, ipLen);
  }
}
