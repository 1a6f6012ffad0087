// The data plane's I/O edges over the native addon: a TUN/TAP fd and a UDP socket fd.
//
// Offloads (overlay.offload, TUN only): the device is opened with virtio-net headers and
// TSO (native.tunOpenVnet) and the socket gets UDP_GRO; openDevice()/enableUdpGro() fall
// back to the plain path, with the reason, when the kernel refuses.
import * as native from '../native/index.js';
import type { DeviceIo, UnderlayIo } from './io.js';

export class NativeDevice implements DeviceIo {
  constructor(readonly fd: number) {}
  read(buf: Buffer, slot: number, headroom: number, max: number, lens: Int32Array): number {
    return native.devRead(this.fd, buf, slot, headroom, max, lens);
  }
  write(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number): number {
    return native.devWrite(this.fd, buf, offs, lens, n);
  }
}

/** A TUN device opened by tunOpenVnet: every packet carries a virtio_net_hdr. */
export class NativeVnetDevice implements DeviceIo {
  constructor(readonly fd: number) {}
  read(): number {
    throw new Error('a device with virtio-net headers is read with readVnet');
  }
  readVnet(buf: Buffer, headroom: number, max: number, offs: Int32Array, lens: Int32Array, vnet: Buffer): number {
    return native.devReadVnet(this.fd, buf, headroom, max, offs, lens, vnet);
  }
  write(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number): number {
    return native.devWriteVnet(this.fd, buf, offs, lens, n);
  }
}

export class NativeUnderlay implements UnderlayIo {
  constructor(readonly fd: number) {}
  recv(
    buf: Buffer,
    slot: number,
    headroom: number,
    max: number,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    segs?: Int32Array,
  ): number {
    return segs
      ? native.udpRecvGro(this.fd, buf, slot, headroom, max, lens, addrs, ports, segs)
      : native.udpRecv(this.fd, buf, slot, headroom, max, lens, addrs, ports);
  }
  send(buf: Buffer, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, n: number): number {
    return native.udpSend(this.fd, buf, offs, lens, addrs, ports, n);
  }
  sendVnet(
    buf: Buffer,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    vnet: Buffer,
    vnetIdx: Int32Array,
    encap: number,
    n: number,
  ): number {
    return native.udpSendVnet(this.fd, buf, offs, lens, addrs, ports, vnet, vnetIdx, encap, n);
  }
}

/** What tunOpen/tunOpenVnet look like to openDevice (tests inject refusals). */
export interface TunOpener {
  tunOpen(name: string, tap: boolean): native.TunHandle;
  tunOpenVnet(name: string, offloads: number): native.TunHandle;
}

export interface OpenedDevice {
  tun: native.TunHandle;
  /** true: opened with virtio-net headers and TSO (use NativeVnetDevice). */
  vnetHdr: boolean;
  /** Why offloads are off, when they were wanted or are impossible; null when on or not wanted. */
  offloadOff: string | null;
}

/** Offloads asked of the TUN driver: partial checksums and IPv4 TSO. (TUN_F_USO4 would
 *  bring UDP super-packets, which the site rarely sends; TSO6 is pointless: IPv4 only.) */
export const TUN_OFFLOADS = native.TUN_F_CSUM | native.TUN_F_TSO4;

/**
 * Opens the overlay device: TUN with offloads when `offload` is set, falling back to the
 * plain device (and saying why) when the kernel refuses; TAP always plain.
 */
export function openDevice(name: string, mode: 'tun' | 'tap', offload: boolean, open: TunOpener = native): OpenedDevice {
  if (!offload) return { tun: open.tunOpen(name, mode === 'tap'), vnetHdr: false, offloadOff: null };
  if (mode === 'tap') {
    return { tun: open.tunOpen(name, true), vnetHdr: false, offloadOff: 'TAP mode has no offloads (TUN only)' };
  }
  try {
    return { tun: open.tunOpenVnet(name, TUN_OFFLOADS), vnetHdr: true, offloadOff: null };
  } catch (e) {
    const reason = `the kernel refused TUN offloads: ${(e as Error).message}`;
    return { tun: open.tunOpen(name, false), vnetHdr: false, offloadOff: reason };
  }
}

/** Turns on UDP_GRO; returns null, or why it stays off. */
export function enableUdpGro(fd: number, set: (fd: number, on: boolean) => void = native.udpSetGro): string | null {
  try {
    set(fd, true);
    return null;
  } catch (e) {
    return `the kernel refused UDP_GRO: ${(e as Error).message}`;
  }
}
