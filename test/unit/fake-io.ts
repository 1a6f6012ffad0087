// An in-memory twin of the data plane's part of the native binding (DataplaneIo), for
// fast unit tests of the packet paths. It honours the addon's batch contract: packets are
// copied into the caller's buffer at the places the addon would put them, lengths and
// addresses into its typed arrays, and a packet too large for its room comes back as
// length -1, as the addon reports a truncated one.
import type { DataplaneFds, DataplaneIo } from '../../src/dataplane/io.js';
import type { OnReadable, PollHandle } from '../../src/native/index.js';
import { vnetWireSegments } from '../../src/proto/vnet.js';

export interface Datagram {
  data: Buffer;
  addr: number;
  port: number;
  /** UDP GRO segment size when this datagram stands for several (0: one). */
  seg?: number;
  /** The ECN field of its outer IPv4 header (udpRecv's ecn; 3 = CE). */
  ecn?: number;
}

/** What was written to the device; `vnet` tells whether the offload write was asked for. */
export interface Written {
  data: Buffer;
  vnet: boolean;
}

export interface SentDatagram extends Datagram {
  /** The virtio_net_hdr the datagram's inner packet was read with (offloads), else null. */
  vnet: Buffer | null;
  encap: number;
}

export class FakeDevice {
  /** Packets the "kernel" will hand us on read, each with its virtio_net_hdr when read with offloads. */
  readonly inbox: (Buffer | { pkt: Buffer; vnet: Buffer })[] = [];
  readonly writes: Written[] = [];
  /** How many of the next writes the kernel refuses. */
  refuse = 0;

  get written(): Buffer[] {
    return this.writes.map((w) => w.data);
  }
}

export class FakeUnderlay {
  readonly inbox: Datagram[] = [];
  readonly sent: SentDatagram[] = [];
  /** How many datagrams the socket takes before it is full: a send stops there and the rest
   *  of its batch is not sent, as the addon's sendmmsg stops at EAGAIN/ENOBUFS. Infinity: never full. */
  room = Infinity;
  /** A datagram the kernel rejects alone (EMSGSIZE, EACCES): skipped, the rest of its batch
   *  still sent, as the addon does. Asked with the datagram's destination and length. */
  rejects: ((addr: number, len: number) => boolean) | null = null;
  /** Which packets of the last udpSend did not go out (udpSendFailed). */
  readonly failed: boolean[] = [];
}

export class FakeIo implements DataplaneIo {
  readonly device = new FakeDevice();
  readonly underlay = new FakeUnderlay();
  readonly fds: DataplaneFds = { device: 3, underlay: 4 };
  readonly polls: { fd: number; cb: OnReadable }[] = [];

  devRead(
    fd: number, buf: Uint8Array, headroom: number, room: number, max: number, offs: Int32Array, lens: Int32Array,
    vnet: Uint8Array | null, look = false, segments = 0,
  ): number {
    this.expectFd(fd, this.fds.device);
    if (look) return 0; // one queue, as the addon's plain fd: a look never reads it
    let n = 0;
    let pos = 0;
    let wire = 0; // the addon's `segments` budget, counted as it counts
    while (n < max && this.device.inbox.length > 0 && pos + headroom + room <= buf.length && (!vnet || !segments || wire < segments)) {
      const item = this.device.inbox.shift()!;
      const pkt = Buffer.isBuffer(item) ? item : item.pkt;
      if (vnet) {
        if (Buffer.isBuffer(item)) throw new Error('a device read with offloads needs { pkt, vnet } in the inbox');
        item.vnet.copy(vnet, 10 * n);
      }
      offs[n] = pos + headroom;
      if (pkt.length > room) {
        lens[n++] = -1; // truncated, as the addon reports it; the space is reused
        continue;
      }
      pkt.copy(buf, offs[n]);
      lens[n] = pkt.length;
      if (vnet) wire += vnetWireSegments(vnet, 10 * n, pkt.length);
      pos = (offs[n] + pkt.length + 63) & ~63;
      n++;
    }
    return n;
  }

  devWrite(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number, vnet: boolean): number {
    this.expectFd(fd, this.fds.device);
    let ok = 0;
    for (let i = 0; i < n; i++) {
      if (this.device.refuse > 0) {
        this.device.refuse--;
        continue;
      }
      this.device.writes.push({ data: Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])), vnet });
      ok++;
    }
    return ok;
  }

  udpRecv(
    fd: number, buf: Uint8Array, slot: number, headroom: number, max: number, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array,
    segs: Int32Array | null, ecn?: Uint8Array | null,
  ): number {
    this.expectFd(fd, this.fds.underlay);
    let n = 0;
    while (n < max && this.underlay.inbox.length > 0) {
      const d = this.underlay.inbox.shift()!;
      if (d.data.length > slot - headroom) {
        lens[n] = -1;
      } else {
        d.data.copy(buf, n * slot + headroom);
        lens[n] = d.data.length;
      }
      addrs[n] = d.addr;
      ports[n] = d.port;
      if (segs) segs[n] = d.seg ?? 0;
      if (ecn) ecn[n] = d.ecn ?? 0;
      n++;
    }
    return n;
  }

  udpSend(
    fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array,
    n: number, vnet: Uint8Array | null, vnetIdx: Int32Array | null, encap: number,
  ): number {
    this.expectFd(fd, this.fds.underlay);
    const u = this.underlay;
    u.failed.length = 0;
    let sent = 0;
    for (let i = 0; i < n; i++) {
      const refused = u.room <= sent || (u.rejects?.(addrs[i], lens[i]) ?? false);
      u.failed.push(refused);
      if (refused) continue;
      sent++;
      u.sent.push({
        data: Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])),
        addr: addrs[i],
        port: ports[i],
        vnet: vnet && vnetIdx ? Buffer.from(vnet.subarray(10 * vnetIdx[i], 10 * vnetIdx[i] + 10)) : null,
        encap,
      });
    }
    u.room -= sent;
    return sent;
  }

  udpSendFailed(out: Uint8Array): number {
    const f = this.underlay.failed;
    for (let i = 0; i < f.length && i < out.length; i++) out[i] = f[i] ? 1 : 0;
    return f.length;
  }

  pollStart(fd: number, cb: OnReadable): PollHandle {
    this.polls.push({ fd, cb });
    return { fd } as PollHandle;
  }

  pollStop(h: PollHandle): void {
    const i = this.polls.findIndex((p) => p.fd === h.fd);
    if (i >= 0) this.polls.splice(i, 1);
  }

  private expectFd(got: number, want: number): void {
    if (got !== want) throw new Error(`fake io: fd ${got} used where ${want} was expected`);
  }
}
