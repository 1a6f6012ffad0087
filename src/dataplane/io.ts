// The two I/O edges of the data plane as the engine sees them: batched reads and
// writes on the device, batched receives and sends on the underlay socket. The
// native addon implements them over real file descriptors (native-io.ts); tests use
// in-memory twins (test/unit/fake-io.ts). Every call moves a whole batch: packets
// live in one shared Buffer at offsets, never in a Buffer each.

export interface DeviceIo {
  /** Reads up to `max` packets; packet i lands at i*slot+headroom, its length in lens[i]. */
  read(buf: Buffer, slot: number, headroom: number, max: number, lens: Int32Array): number;
  /** Writes packets buf[offs[i] .. +lens[i]) for i < n; returns how many the kernel took. */
  write(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number): number;
}

export interface UnderlayIo {
  /** Receives up to `max` datagrams at i*slot+headroom; lens[i] = -1 marks a truncated one. */
  recv(
    buf: Buffer,
    slot: number,
    headroom: number,
    max: number,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
  ): number;
  /** Sends datagrams buf[offs[i] .. +lens[i]) to addrs[i]:ports[i]; returns how many were sent. */
  send(buf: Buffer, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, n: number): number;
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
