// The data plane: two paths over two file descriptors, driven by readiness events on
// Node's own event loop (uv_poll in the addon; no threadpool, no JS per syscall). Each
// wakeup drains a bounded number of batches so one busy direction cannot starve the
// other or the control plane's timers.
import type { PollHandle } from '../native/index.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { Drop, DropCounters } from './drops.js';
import { InsidePath } from './inside.js';
import { Batch, type DataplaneFds, type DataplaneIo } from './io.js';
import { OutsidePath } from './outside.js';
import type { PacketPath } from './path.js';
import type { PeerTable } from './peers.js';
import type { PathSettings } from './settings.js';

const BATCHES_PER_WAKEUP = 8;

export class Dataplane {
  readonly drops = new DropCounters();
  readonly inside: InsidePath;
  readonly outside: OutsidePath;
  private polls: PollHandle[] = [];
  /** Set when libuv reported an error on a polled fd (the addon then stops that poll):
   *  that path moves no more packets. Read by the liveness gate of the systemd watchdog. */
  pollError: string | null = null;
  /** Why an offload is off (settings.vnetHdr/udpGro false), or null; for the health document. */
  offloadOff: string | null = null;
  private readonly one = new Batch(1);
  private internalErrorLogged = false;

  constructor(
    readonly settings: PathSettings,
    private readonly io: DataplaneIo,
    private readonly fds: DataplaneFds,
    /** Changed in place (add/update/remove), never replaced. */
    readonly peers: PeerTable,
    private readonly log: Logger,
    clock: Clock,
  ) {
    // Peers' lastRx is monotonic: liveness must not jump with the wall clock (a Pi has no RTC).
    const now = () => clock.monotonic();
    const c = { settings, io, fds, drops: this.drops, peers };
    this.inside = new InsidePath(c);
    this.outside = new OutsidePath(c, now);
  }

  start(): void {
    this.polls.push(this.io.pollStart(this.fds.device, (err) => (err ? this.pollFailed('device', err) : this.drain(this.inside))));
    this.polls.push(this.io.pollStart(this.fds.underlay, (err) => (err ? this.pollFailed('underlay', err) : this.drain(this.outside))));
  }

  stop(): void {
    for (const p of this.polls) this.io.pollStop(p);
    this.polls = [];
  }

  /** Sends one control datagram (keepalive probe, STUN request) on the tunnel socket. */
  sendControl(buf: Buffer, off: number, len: number, addr: number, port: number): boolean {
    this.one.n = 0;
    this.one.push(off, len, addr, port);
    const o = this.one;
    return this.io.udpSend(this.fds.underlay, buf, o.offs, o.lens, o.addrs, o.ports, 1, null, null, 0) === 1;
  }

  private pollFailed(which: string, err: Error): void {
    this.pollError = `${which} poll failed: ${err.message}`;
    this.log.error('the data plane stopped reading a file descriptor', { fd: which, err: err.message });
  }

  private drain(path: PacketPath): void {
    try {
      for (let i = 0; i < BATCHES_PER_WAKEUP; i++) {
        if (path.pump() < path.batch) break;
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
