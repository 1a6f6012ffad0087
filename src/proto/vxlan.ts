// VXLAN framing as the Linux kernel's vxlan driver sends and accepts it
// (RFC 7348 §5, made stricter by drivers/net/vxlan/vxlan_core.c: vxlan_rcv drops
// any datagram with a flag or reserved bit other than I set, and flannel never
// enables GBP). Headers are written in place into headroom the caller reserved in
// front of the payload, so encapsulation is a 22-byte (TUN) or 8-byte (TAP) write
// and never a copy.
//
//   0      1      2      3      4      5      6      7
//   flags  reserved (24 bits)  VNI (24 bits)        reserved
//   0x08   00     00     00    vv     vv     vv     00
//
// On the wire: outer IPv4 (20) | UDP (8) | VXLAN (8) | inner Ethernet (14) | inner IPv4.
// 50 bytes of overhead, hence device MTU = underlay MTU - 50, as flannel does.

export const VXLAN_HEADER_LEN = 8;
export const ETH_HEADER_LEN = 14;
export const IPV4_MIN_HEADER_LEN = 20;
/** Outer IPv4 + UDP + VXLAN + inner Ethernet. */
export const VXLAN_OVERHEAD = 20 + 8 + VXLAN_HEADER_LEN + ETH_HEADER_LEN;
/** VXLAN header plus inner Ethernet: what we prepend to an inner IPv4 packet in TUN mode. */
export const ENCAP_LEN = VXLAN_HEADER_LEN + ETH_HEADER_LEN;
/** Shortest datagram worth looking at: VXLAN + Ethernet + minimal IPv4 header. */
export const MIN_VXLAN_DATAGRAM = VXLAN_HEADER_LEN + ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN;

export const VXLAN_FLAG_I = 0x08;
export const VNI_MAX = 0xffffff;

/** Result of header validation: 0 is valid, anything else names the drop reason. */
export const VxlanVerdict = {
  ok: 0,
  badFlags: 1,
  reservedBits: 2,
  wrongVni: 3,
} as const;

/** Writes the 8-byte header for `vni` at `off`. */
export function writeVxlanHeader(buf: Buffer, off: number, vni: number): void {
  buf[off] = VXLAN_FLAG_I;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = (vni >>> 16) & 0xff;
  buf[off + 5] = (vni >>> 8) & 0xff;
  buf[off + 6] = vni & 0xff;
  buf[off + 7] = 0;
}

/**
 * Checks a received header the way the kernel does: only the I flag may be set, every
 * reserved bit must be zero, and the VNI must be ours. The caller guarantees 8 bytes.
 */
export function checkVxlanHeader(buf: Buffer, off: number, vni: number): number {
  if (buf[off] !== VXLAN_FLAG_I) {
    return (buf[off] & VXLAN_FLAG_I) === 0 ? VxlanVerdict.badFlags : VxlanVerdict.reservedBits;
  }
  if ((buf[off + 1] | buf[off + 2] | buf[off + 3] | buf[off + 7]) !== 0) return VxlanVerdict.reservedBits;
  const got = (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
  return got === vni ? VxlanVerdict.ok : VxlanVerdict.wrongVni;
}

/** Reads the VNI of a header (for diagnostics only). */
export function readVni(buf: Buffer, off: number): number {
  return (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
}
