// The kernel's notices of what changed on the tunnel device and the underlay NIC (rtnetlink,
// native/netlink.c), so that the running checks look at once: a device set down, a peer
// route (TAP: or neighbour) deleted by a network manager, the uplink's carrier or address gone. Without them
// those waited for the next periodic refresh (30 s), with nothing crossing the tunnel
// meanwhile. The notices only say "look"; what changed is read the usual way.
import { NETLINK_LOST, type NativeBinding, type PollHandle } from '../native/index.js';
import type { Logger } from '../util/log.js';

export type KernelEventsIo = Pick<NativeBinding, 'netlinkOpen' | 'netlinkRead' | 'pollStart' | 'pollStop' | 'close'>;

export interface KernelEventsOptions {
  io: KernelEventsIo;
  /** The tunnel device's name and the underlay NIC's. */
  device: string;
  underlay: string;
  /** Also a neighbour of the device deleted (TAP mode: the peers are permanent neighbours). */
  neighbours: boolean;
  /** Something concerning them changed (netlinkRead's NETLINK_* bits). */
  changed: (bits: number) => void;
  log: Logger;
}

export class KernelEvents {
  private fd = -1;
  private poll: PollHandle | null = null;

  constructor(private readonly o: KernelEventsOptions) {}

  /** Starts listening; false (said in the log) where netlink cannot be had: the periodic refresh still repairs. */
  start(): boolean {
    try {
      this.fd = this.o.io.netlinkOpen(this.o.neighbours);
      this.poll = this.o.io.pollStart(this.fd, (err) => this.readable(err));
      return true;
    } catch (e) {
      this.giveUp(e as Error);
      return false;
    }
  }

  stop(): void {
    if (this.poll) this.o.io.pollStop(this.poll);
    this.poll = null;
    if (this.fd >= 0) this.o.io.close(this.fd);
    this.fd = -1;
  }

  private readable(err?: Error): void {
    try {
      if (err) {
        // Notices the socket had no room for set an error on it, which libuv reports as a
        // poll error, stopping the poll: the read below takes the error (NETLINK_LOST), and
        // the poll starts again. A socket error the read cannot take throws there.
        this.o.io.pollStop(this.poll!);
        this.poll = null;
      }
      const bits = this.o.io.netlinkRead(this.fd, this.o.device, this.o.underlay);
      if (err) this.poll = this.o.io.pollStart(this.fd, (e) => this.readable(e));
      if (err && (bits & NETLINK_LOST) === 0) throw err; // an error that was not an overflow
      if (bits !== 0) this.o.changed(bits);
    } catch (e) {
      this.giveUp(e as Error);
    }
  }

  private giveUp(e: Error): void {
    this.o.log.warn('no kernel notices of link and route changes: repairs wait for the periodic check refresh (30 s)', { err: e.message });
    this.stop();
  }
}
