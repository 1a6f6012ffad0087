// VXLAN framing as the Linux kernel's vxlan driver sends and accepts it (RFC 7348 §5,
// made stricter by drivers/net/vxlan/vxlan_core.c: vxlan_rcv drops any datagram with a
// flag or reserved bit set that no extension of the device claims). Headers are written
// in place into headroom the caller reserved in front of the payload, so encapsulation
// is a 22-byte (TUN) or 8-byte (TAP) write and never a copy.
//
//   0      1      2      3      4      5      6      7
//   flags  reserved (24 bits)  VNI (24 bits)        reserved
//   0x08   00     00     00    vv     vv     vv     00
//
// What we send is always that. What we take is also the Group Policy extension
// (draft-smith-vxlan-group-policy), which flannel turns on with "GBP": true in its
// backend config (flannel.1 made with `gbp`): such a device sends the G flag (0x80), the
// D (0x40) and A (0x08) bits of byte 1 and a 16-bit policy ID from the packet's firewall
// mark whenever the mark is set (kube-proxy's 0x4000 masquerade mark is one), and takes
// frames without it too. A kernel VTEP with `gbp` takes the G flag with any value in
// the three bytes after it (VXLAN_GBP_USED_BITS) and turns them into a mark; we have no
// use for a mark and ignore them, so the site hears such a cluster without a setting of
// its own, and no other cluster sends them: the G flag needs `gbp` at the sender.
//
//   0x88   D·A    policy ID    VNI                  00
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

/** The Group Policy extension's flag: the three bytes after it are its bits and policy ID. */
export const VXLAN_FLAG_G = 0x80;

/**
 * Checks a received header the way a kernel VTEP with `gbp` does: the I flag set; with the
 * G flag, anything in the three bytes after it (ignored); without it, those bytes zero;
 * every other flag and the last byte zero, and the VNI ours. The caller guarantees 8 bytes.
 */
export function checkVxlanHeader(buf: Buffer, off: number, vni: number): number {
  const flags = buf[off];
  if (flags !== VXLAN_FLAG_I) {
    if ((flags & VXLAN_FLAG_I) === 0) return VxlanVerdict.badFlags;
    if (flags !== (VXLAN_FLAG_I | VXLAN_FLAG_G) || buf[off + 7] !== 0) return VxlanVerdict.reservedBits;
  } else if ((buf[off + 1] | buf[off + 2] | buf[off + 3] | buf[off + 7]) !== 0) return VxlanVerdict.reservedBits;
  const got = (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
  return got === vni ? VxlanVerdict.ok : VxlanVerdict.wrongVni;
}

/** Reads the VNI of a header (for diagnostics only). */
export function readVni(buf: Buffer, off: number): number {
  return (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
}
