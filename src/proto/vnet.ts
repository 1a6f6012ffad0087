// The virtio_net_hdr (linux/virtio_net.h) in front of every packet on a TUN device opened
// with IFF_VNET_HDR (offloads): 10 bytes, in host byte order (TUNSETVNETLE/BE never set).
//
//   0 flags  1 gso_type  2 hdr_len  4 gso_size  6 csum_start  8 csum_offset
//
// flags NEEDS_CSUM: the L4 checksum field holds only the pseudo-header sum, to be completed
// over [csum_start, end). gso_type TCPV4: a TCP super-packet, to be cut into segments of
// gso_size payload bytes; UDP_L4 (Linux 6.2+): a UDP one, cut into datagrams of gso_size
// payload bytes. The addon (src/native/tso.c) does both; TypeScript reads only what it
// needs to route and count.
import { endianness } from 'node:os';

export const VNET_HDR_LEN = 10;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP_L4 = 5;
export const VNET_GSO_ECN = 0x80;

const LITTLE = endianness() === 'LE';

/** A 16-bit field of a virtio_net_hdr at `off` (host byte order). */
export function readVnetU16(buf: Uint8Array, off: number): number {
  return LITTLE ? buf[off] | (buf[off + 1] << 8) : (buf[off] << 8) | buf[off + 1];
}

/** The datagrams a packet of `len` bytes read behind the header at vnet[off] makes on the
 *  wire: a super-packet ceil(len / gso_size) (its headers counted in, an estimate from above),
 *  anything else 1. The addon's devRead counts the same way for its `segments` budget
 *  (native/csum.h vnet_wire_segments), so the two agree on when a read stopped for it. */
export function vnetWireSegments(vnet: Uint8Array, off: number, len: number): number {
  const gsoSize = readVnetU16(vnet, off + 4);
  if ((vnet[off + 1] & ~VNET_GSO_ECN) === VNET_GSO_NONE || gsoSize === 0) return 1;
  return ((len + gsoSize - 1) / gsoSize) | 0;
}

/** Writes a virtio_net_hdr (tests and in-memory twins). */
export function writeVnetHeader(
  buf: Buffer,
  off: number,
  h: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number },
): void {
  buf[off] = h.flags ?? 0;
  buf[off + 1] = h.gsoType ?? 0;
  const put = (at: number, v: number) => {
    if (LITTLE) {
      buf[off + at] = v & 0xff;
      buf[off + at + 1] = v >>> 8;
    } else {
      buf[off + at] = v >>> 8;
      buf[off + at + 1] = v & 0xff;
    }
  };
  put(2, h.hdrLen ?? 0);
  put(4, h.gsoSize ?? 0);
  put(6, h.csumStart ?? 0);
  put(8, h.csumOffset ?? 0);
}
