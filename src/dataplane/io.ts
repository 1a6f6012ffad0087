// The two I/O edges of the data plane as the engine sees them: batched reads and
// writes on the device, batched receives and sends on the underlay socket. The
// native addon implements them over real file descriptors (native-io.ts); tests use
// in-memory twins (test/unit/fake-io.ts). Every call moves a whole batch: packets
// live in one shared Buffer at offsets, never in a Buffer each.

export interface DeviceIo {
  /** Reads up to `max` packets; packet i lands at i*slot+headroom, its length in lens[i]. */
  read(buf: Buffer, slot: number, headroom: number, max: number, lens: Int32Array): number;
  /** Writes packets buf[offs[i] .. +lens[i]) for i < n; returns how many the kernel took.
   *  A device with virtio-net headers joins consecutive TCP segments of a flow on the way. */
  write(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number): number;
  /**
   * Devices with virtio-net headers only (PathSettings.vnetHdr): reads up to `max` packets
   * packed into buf, packet i at offs[i] (at least `headroom` free bytes in front), its
   * length in lens[i] (-1: truncated), its 10-byte virtio_net_hdr at vnet[10*i]. A packet
   * may be a TCP super-packet of up to 64 KB; it stops early when less than
   * headroom + 65535 bytes are left.
   */
  readVnet?(buf: Buffer, headroom: number, max: number, offs: Int32Array, lens: Int32Array, vnet: Buffer): number;
}

export interface UnderlayIo {
  /** Receives up to `max` datagrams at i*slot+headroom; lens[i] = -1 marks a truncated one.
   *  With `segs` (a socket with UDP_GRO): segs[i] > 0 says datagram i holds several of
   *  segs[i] bytes each, the last possibly shorter; 0 a single one. */
  recv(
    buf: Buffer,
    slot: number,
    headroom: number,
    max: number,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    segs?: Int32Array,
  ): number;
  /** Sends datagrams buf[offs[i] .. +lens[i]) to addrs[i]:ports[i]; returns how many were sent. */
  send(buf: Buffer, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, n: number): number;
  /**
   * For devices with virtio-net headers (PathSettings.vnetHdr): like send, where datagram i
   * is `encap` bytes of headers, then an inner IPv4 packet read with virtio_net_hdr
   * vnet[10*vnetIdx[i]]; a TCP super-packet leaves as MTU-sized segments, each behind a
   * copy of the encap bytes. Returns how many of the n went out entirely.
   */
  sendVnet?(
    buf: Buffer,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    vnet: Buffer,
    vnetIdx: Int32Array,
    encap: number,
    n: number,
  ): number;
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
