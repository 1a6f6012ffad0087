// The data plane's I/O edges: the part of the native binding it uses, over two file
// descriptors. Production passes the addon itself (src/native/index.ts); unit tests pass
// an in-memory twin of the same type (test/unit/fake-io.ts). Every call moves a whole
// batch: packets live in one shared Buffer at offsets, never in a Buffer each.
import type { NativeBinding } from '../native/index.js';

export type DataplaneIo = Pick<NativeBinding, 'devRead' | 'devWrite' | 'udpRecv' | 'udpSend' | 'udpSendFailed' | 'pollStart' | 'pollStop'> &
  // Only where sends can fail after udpSend returned (the addon's sender thread).
  Partial<Pick<NativeBinding, 'udpSendLost'>>;

/** The device's and the underlay socket's file descriptors. */
export interface DataplaneFds {
  device: number;
  underlay: number;
}

/** A batch of outgoing packets: offsets into one buffer plus destinations. */
export class Batch {
  readonly offs: Int32Array;
  readonly lens: Int32Array;
  readonly addrs: Uint32Array;
  readonly ports: Uint16Array;
  n = 0;

  constructor(readonly capacity: number) {
    this.offs = new Int32Array(capacity);
    this.lens = new Int32Array(capacity);
    this.addrs = new Uint32Array(capacity);
    this.ports = new Uint16Array(capacity);
  }

  push(off: number, len: number, addr = 0, port = 0): void {
    const i = this.n++;
    this.offs[i] = off;
    this.lens[i] = len;
    this.addrs[i] = addr;
    this.ports[i] = port;
  }
}
