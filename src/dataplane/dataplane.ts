// The data plane: two paths over two file descriptors, driven by readiness events
// on Node's own event loop (uv_poll in the addon; no threadpool, no JS per syscall).
// Each wakeup drains a bounded number of batches so one busy direction cannot starve
// the other or the control plane's timers.
import * as native from '../native/index.js';
import type { PeerTable } from './peers.js';
import { Drop, DropCounters } from './drops.js';
import { InsidePath } from './inside.js';
import { OutsidePath } from './outside.js';
import type { DeviceIo, UnderlayIo } from './io.js';
import { Batch } from './io.js';
import type { PathSettings } from './settings.js';
import type { Logger } from '../util/log.js';

const BATCHES_PER_WAKEUP = 8;

export class Dataplane {
  readonly drops = new DropCounters();
  readonly inside: InsidePath;
  readonly outside: OutsidePath;
  private polls: native.PollHandle[] = [];
  /** Set when libuv reported an error on a polled fd (the addon then stops that poll):
   *  that path moves no more packets. Read by Gateway.liveness() for the systemd watchdog. */
  pollError: string | null = null;
  /** Why an offload is off (settings.vnetHdr/udpGro false), or null; for the health document. */
  offloadOff: string | null = null;
  private readonly one = new Batch(1);
  private internalErrorLogged = false;

  constructor(
    readonly settings: PathSettings,
    device: DeviceIo,
    private readonly underlay: UnderlayIo,
    private peerTable: PeerTable,
    private readonly log: Logger,
  ) {
    this.inside = new InsidePath(settings, device, underlay, this.drops, peerTable);
    this.outside = new OutsidePath(settings, underlay, device, this.drops, peerTable);
  }

  get peers(): PeerTable {
    return this.peerTable;
  }

  /** Swaps in a new peer table (config reload); counters of unchanged peers carry over. */
  setPeers(t: PeerTable): void {
    t.inherit(this.peerTable);
    this.peerTable = t;
    this.inside.peers = t;
    this.outside.peers = t;
  }

  start(deviceFd: number, underlayFd: number): void {
    this.polls.push(native.pollStart(deviceFd, (err) => (err ? this.pollFailed('device', err) : this.drain(this.inside))));
    this.polls.push(native.pollStart(underlayFd, (err) => (err ? this.pollFailed('underlay', err) : this.drain(this.outside))));
  }

  private pollFailed(which: string, err: Error): void {
    this.pollError = `${which} poll failed: ${err.message}`;
    this.log.error('the data plane stopped reading a file descriptor', { fd: which, err: err.message });
  }

  stop(): void {
    for (const p of this.polls) native.pollStop(p);
    this.polls = [];
  }

  /** Sends one control datagram (keepalive probe, STUN request) on the tunnel socket. */
  sendControl(buf: Buffer, off: number, len: number, addr: number, port: number): boolean {
    this.one.n = 0;
    this.one.push(off, len, addr, port);
    return this.underlay.send(buf, this.one.offs, this.one.lens, this.one.addrs, this.one.ports, 1) === 1;
  }

  private drain(path: InsidePath | OutsidePath): void {
    try {
      for (let i = 0; i < BATCHES_PER_WAKEUP; i++) {
        if (path.pump() < this.settings.batch) break;
      }
    } catch (e) {
      // A bug, not a bad packet: count it, say it once, keep forwarding.
      this.drops.add(Drop.internal);
      if (!this.internalErrorLogged) {
        this.internalErrorLogged = true;
        this.log.error('internal error in the packet path (further ones are only counted)', { err: (e as Error).stack });
      }
    }
  }
}
