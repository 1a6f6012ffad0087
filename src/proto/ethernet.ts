// Inner Ethernet header between VTEP MACs. flannel's nodes only ever put IPv4
// (0x0800) inside: neighbours are static, so no ARP crosses the tunnel.

export const ETHERTYPE_IPV4 = 0x0800;

/** Writes dst MAC, src MAC (6 bytes each, copied from `macs` at the given offsets) and the EtherType. */
export function writeEthernetHeader(
  buf: Buffer,
  off: number,
  dstMacs: Buffer,
  dstMacOff: number,
  srcMac: Buffer,
  etherType: number,
): void {
  dstMacs.copy(buf, off, dstMacOff, dstMacOff + 6);
  srcMac.copy(buf, off + 6, 0, 6);
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
