// In-memory twins of the device and the underlay socket, for fast unit tests of the
// data plane. They honour the same batch contract as the native addon: packets are
// copied into the caller's slots, lengths and addresses into its typed arrays.
import type { DeviceIo, UnderlayIo } from '../../src/dataplane/io.js';

export class FakeDevice implements DeviceIo {
  readonly inbox: Buffer[] = []; // packets the "kernel" will hand us on read
  readonly written: Buffer[] = []; // packets we wrote to the "kernel"
  refuse = 0; // how many of the next writes fail

  read(buf: Buffer, slot: number, headroom: number, max: number, lens: Int32Array): number {
    let n = 0;
    while (n < max && this.inbox.length > 0) {
      const p = this.inbox.shift()!;
      const len = Math.min(p.length, slot - headroom);
      p.copy(buf, n * slot + headroom, 0, len);
      lens[n++] = len;
    }
    return n;
  }

  write(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number): number {
    let ok = 0;
    for (let i = 0; i < n; i++) {
      if (this.refuse > 0) {
        this.refuse--;
        continue;
      }
      this.written.push(Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])));
      ok++;
    }
    return ok;
  }
}

export interface Datagram {
  data: Buffer;
  addr: number;
  port: number;
}

export class FakeUnderlay implements UnderlayIo {
  readonly inbox: Datagram[] = [];
  readonly sent: Datagram[] = [];

  recv(buf: Buffer, slot: number, headroom: number, max: number, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array): number {
    let n = 0;
    while (n < max && this.inbox.length > 0) {
      const d = this.inbox.shift()!;
      const room = slot - headroom;
      if (d.data.length > room) {
        lens[n] = -1;
      } else {
        d.data.copy(buf, n * slot + headroom);
        lens[n] = d.data.length;
      }
      addrs[n] = d.addr;
      ports[n] = d.port;
      n++;
    }
    return n;
  }

  send(buf: Buffer, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, n: number): number {
    for (let i = 0; i < n; i++) {
      this.sent.push({ data: Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])), addr: addrs[i], port: ports[i] });
    }
    return n;
  }
}
