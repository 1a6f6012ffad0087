// The data plane's I/O edges over the native addon: a TUN/TAP fd and a UDP socket fd.
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

export class NativeUnderlay implements UnderlayIo {
  constructor(readonly fd: number) {}
  recv(buf: Buffer, slot: number, headroom: number, max: number, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array): number {
    return native.udpRecv(this.fd, buf, slot, headroom, max, lens, addrs, ports);
  }
  send(buf: Buffer, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, n: number): number {
    return native.udpSend(this.fd, buf, offs, lens, addrs, ports, n);
  }
}
