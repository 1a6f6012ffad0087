// Inner Ethernet header between VTEP MACs. flannel's nodes only ever put IPv4
// (0x0800) inside: neighbours are static, so no ARP crosses the tunnel.

export const ETHERTYPE_IPV4 = 0x0800;

/**
 * Writes dst MAC, src MAC (6 bytes each, copied from `dstMacs` at `dstMacOff` and from
 * `srcMac`) and the EtherType. Byte by byte on purpose: this runs once per packet, and
 * `Buffer#copy` of part of a buffer makes a Uint8Array view of the part each time
 * (~90 bytes of garbage per packet; test/unit/no-alloc.test.ts).
 */
export function writeEthernetHeader(
  buf: Uint8Array,
  off: number,
  dstMacs: Uint8Array,
  dstMacOff: number,
  srcMac: Uint8Array,
  etherType: number,
): void {
  for (let i = 0; i < 6; i++) {
    buf[off + i] = dstMacs[dstMacOff + i];
    buf[off + 6 + i] = srcMac[i];
  }
  buf[off + 12] = etherType >>> 8;
  buf[off + 13] = etherType & 0xff;
}

/** Compares 6 bytes at `off` in `buf` with 6 bytes at `macOff` in `macs`. */
export function macEquals(buf: Buffer, off: number, macs: Buffer, macOff: number): boolean {
  return (
    buf[off] === macs[macOff] &&
    buf[off + 1] === macs[macOff + 1] &&
    buf[off + 2] === macs[macOff + 2] &&
    buf[off + 3] === macs[macOff + 3] &&
    buf[off + 4] === macs[macOff + 4] &&
    buf[off + 5] === macs[macOff + 5]
  );
}

export function isBroadcastMac(buf: Buffer, off: number): boolean {
  return (buf[off] & buf[off + 1] & buf[off + 2] & buf[off + 3] & buf[off + 4] & buf[off + 5]) === 0xff;
}

export function readEtherType(buf: Buffer, off: number): number {
  return (buf[off + 12] << 8) | buf[off + 13];
}
