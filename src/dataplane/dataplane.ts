// The data plane: two paths over two file descriptors, driven by readiness events on
// Node's own event loop (uv_poll in the addon; no threadpool, no JS per syscall). Each
// wakeup drains a bounded number of batches so one busy direction cannot starve the
// other or the control plane's timers, then looks once at the other direction.
import type { PollHandle } from '../native/index.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { BulkFlows } from './bulk-flows.js';
import { Drop, DropCounters } from './drops.js';
import { InsidePath } from './inside.js';
import type { KernelDrops } from './kernel-drops.js';
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
  /** The inside path on the device's fd, the outside path on the underlay socket's. */
  private readonly paths: [WatchedPath, WatchedPath];
  /** Set when libuv reported an error on a polled fd, or a read found the fd gone: that
   *  path's poll is stopped and it moves no more packets. Read by the liveness gate of the
   *  systemd watchdog. */
  pollError: string | null = null;
  /** Why an offload is off (settings.vnetHdr/udpGro false), or null; for the health document. */
  offloadOff: string | null = null;
  /** The kernel's drops at the two edges (control/tunnel.ts sets it: it knows the device's name). */
  kernelDrops: KernelDrops | null = null;
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
    const c = { settings, io, fds, drops: this.drops, peers, bulk: new BulkFlows() };
    this.inside = new InsidePath(c);
    this.outside = new OutsidePath(c, now);
    this.paths = [
      { name: 'device', path: this.inside, poll: null },
      { name: 'underlay', path: this.outside, poll: null },
    ];
  }

  start(): void {
    this.watch(this.paths[0], this.fds.device);
    this.watch(this.paths[1], this.fds.underlay);
  }

  stop(): void {
    for (const p of this.paths) {
      if (p.poll) this.io.pollStop(p.poll);
      p.poll = null;
    }
  }

  /** Counts as drops the packets the sender thread could not send after udpSend had handed
   *  them over (socket full), and what the kernel dropped at the device's queue and the
   *  tunnel sockets before they were read (`kernelDrops`, when set): called before the
   *  counters are read. */
  collectLosses(): void {
    const lost = this.io.udpSendLost?.() ?? 0;
    if (lost > 0) this.drops.add(Drop.underlaySend, lost);
    this.kernelDrops?.collect(this.drops);
  }

  /** Sends one control datagram (keepalive probe, STUN request) on the tunnel socket. */
  sendControl(buf: Buffer, off: number, len: number, addr: number, port: number): boolean {
    this.one.n = 0;
    this.one.push(off, len, addr, port);
    const o = this.one;
    return this.io.udpSend(this.fds.underlay, buf, o.offs, o.lens, o.addrs, o.ports, 1, null, null, 0) === 1;
  }

  private watch(p: WatchedPath, fd: number): void {
    const other = p === this.paths[0] ? this.paths[1] : this.paths[0];
    p.poll = this.io.pollStart(fd, (err) => (err ? this.pollFailed(p, err) : this.drain(p, other)));
  }

  private pollFailed(p: WatchedPath, err: Error): void {
    if (p.poll) this.io.pollStop(p.poll);
    p.poll = null;
    this.pollError = `${p.name} poll failed: ${err.message}`;
    this.log.error('the data plane stopped reading a file descriptor', { fd: p.name, err: err.message });
  }

  /**
   * Up to BATCHES_PER_WAKEUP batches of the path whose fd is readable, then one batch of the
   * other: what our own sends caused may be there already (in the lab a ping's answer
   * arrives while our send is still running the namespaces' stacks) and is handled now
   * instead of after another trip through epoll; when nothing is, that costs one empty
   * receive. While the device drains, the underlay is also looked at after each of its
   * batches, and what is not TCP of the flows uploading in this drain (their ACKs) is
   * written to the site at once (OutsidePath.expedite, BulkFlows): a ping's answer no
   * longer waits for the whole drain of a bulk upload (2.6 -> 0.8 ms in the bench), nor
   * does the answer of an interactive TCP session beside it. The mirror while the underlay
   * drains: the device is looked at after each of its batches, but only the queues that
   * hold no ACKs of a download in progress (InsidePath.look; the addon knows them, it wrote
   * the download's data to them), so a request from the site does not wait for the drain
   * while those ACKs still go out in the groups bulk TCP wants. Taking whole turns after
   * every batch would do the same for TCP too, but cost bulk TCP 15-35 % in the lab
   * (docs/dataplane.md "Batching and sizes").
   */
  private drain(p: WatchedPath, other: WatchedPath): void {
    for (let i = 0; i < BATCHES_PER_WAKEUP && this.pump(p, false); i++) {
      if (i < BATCHES_PER_WAKEUP - 1) this.pump(other, true);
    }
    this.pump(other, false);
  }

  /** One batch of one path; true when it came back full ("read on"). A path whose poll was
   *  stopped (its fd failed, or stop()) is not read. `look`: the outside path's expedite()
   *  or the inside path's look() instead of its pump(). */
  private pump(p: WatchedPath, look: boolean): boolean {
    if (p.poll === null) return false;
    try {
      const n = !look ? p.path.pump() : p.path === this.outside ? this.outside.expedite() : this.inside.look();
      return n >= p.path.batch;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // The fd itself is gone: a multi-queue device's fd is an epoll fd, so libuv sees no
      // error condition when the device is deleted, only the read does (EBADFD).
      if (code === 'EBADF' || code === 'EBADFD') {
        this.pollFailed(p, e as Error);
        return false;
      }
      // A bug, not a bad packet: count it, say it once, keep forwarding.
      this.drops.add(Drop.internal);
      if (!this.internalErrorLogged) {
        this.internalErrorLogged = true;
        this.log.error('internal error in the packet path (further ones are only counted)', { err: (e as Error).stack });
      }
      return false;
    }
  }
}

/** A packet path with its poll; null before start(), after stop() and once its fd failed. */
interface WatchedPath {
  name: 'device' | 'underlay';
  path: PacketPath;
  poll: PollHandle | null;
}
