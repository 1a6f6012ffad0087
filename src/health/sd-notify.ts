// systemd's notification protocol (sd_notify(3)) without libsystemd: one datagram of
// newline-separated KEY=VALUE lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a
// leading '@' is the abstract namespace), sent by the native addon's unixDgramSend
// because Node's dgram speaks only UDP.
//
//   READY=1 (+ STATUS=)  once the gateway is up, and again after each reload
//   STATUS=...           the gateway state, whenever it changes (`systemctl status`)
//   RELOADING=1          on SIGHUP, before the new config is applied
//   STOPPING=1           when a clean stop begins
//   WATCHDOG=1           every WATCHDOG_USEC/3, only while the liveness gate passes
//
// The watchdog ping is not a bare setInterval (a process whose loop still ticks but
// whose data plane is dead would be kept alive): each ping first asks the gate.
//   1. The event loop: a 1 s (or finer) timer measures how late it fires; a lag above
//      WATCHDOG_USEC/4 since the last ping means the loop was blocked long enough to
//      matter, and the ping is skipped, the first one after the block even when it runs
//      before the lag timer. (A loop blocked right now sends nothing at all.)
//   2. The caller's check (Gateway.liveness()): the data plane's polls are alive and the
//      gateway's periodic timers ran recently. It returns why not, or null.
// Skipped pings are logged with the reason; two in a row and systemd kills us
// (WatchdogSignal, SIGABRT) and Restart=always starts a fresh process. One is survived: the
// pings come every WATCHDOG_USEC/3, not /2 as sd_watchdog_enabled(3) suggests, because
// systemd kills after WATCHDOG_USEC without one, and setInterval counts the next period from
// when a ping ran, so at /2 one skipped ping (made late by the block that caused it) left a
// gap of WATCHDOG_USEC and more: the process was killed though healthy again.
//
// Without $NOTIFY_SOCKET (not under systemd, or Type=simple) every call is a no-op.
import { nativeBinding } from '../native/index.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { HealthDocument } from './document.js';

/** Why the process must not ping the watchdog now, or null when it is healthy. */
export type LivenessCheck = () => string | null;

export interface SdNotifyOptions {
  env?: NodeJS.ProcessEnv;
  pid?: number;
  log?: Logger;
  /** Sends one datagram; default: the native addon's unixDgramSend. */
  send?: (path: string, data: Buffer) => void;
  clock?: Clock;
}

export interface WatchdogStats {
  pings: number;
  skipped: number;
  lastSkipReason: string | null;
  /** The largest loop lag (ms) seen since the last ping. */
  maxLagMs: number;
}

export class SdNotify {
  /** $NOTIFY_SOCKET, or null when not run by systemd as a notify service. */
  readonly socket: string | null;
  /** The watchdog period in ms when systemd asked for pings (WATCHDOG_USEC, for our pid). */
  readonly watchdogMs: number | null;
  readonly stats: WatchdogStats = { pings: 0, skipped: 0, lastSkipReason: null, maxLagMs: 0 };
  private readonly send: (path: string, data: Buffer) => void;
  private readonly log: Logger | undefined;
  private lastStatus: string | null = null;
  private sendFailed = false;
  private pingTimer: Timer | null = null;
  private lagTimer: Timer | null = null;
  private readonly clock: Clock;
  private gate: LivenessCheck = () => null;

  constructor(o: SdNotifyOptions = {}) {
    const env = o.env ?? process.env;
    this.socket = env.NOTIFY_SOCKET ? env.NOTIFY_SOCKET : null;
    this.watchdogMs = this.socket ? watchdogPeriodMs(env, o.pid ?? process.pid) : null;
    this.send = o.send ?? ((path, data) => nativeBinding().unixDgramSend(path, data));
    this.clock = o.clock ?? systemClock;
    this.log = o.log;
  }

  get enabled(): boolean {
    return this.socket !== null;
  }

  /** READY=1, with STATUS= when given. Also ends a RELOADING=1. */
  ready(status?: string): boolean {
    if (status !== undefined) this.lastStatus = status;
    return this.notify(status === undefined ? 'READY=1' : `READY=1\nSTATUS=${oneLine(status)}`);
  }

  /** STATUS=text, sent only when it differs from the last one sent. */
  status(text: string): boolean {
    if (text === this.lastStatus) return true;
    this.lastStatus = text;
    return this.notify(`STATUS=${oneLine(text)}`);
  }

  reloading(): boolean {
    return this.notify(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}`);
  }

  stopping(): boolean {
    this.stopWatchdog();
    return this.notify('STOPPING=1');
  }

  /** One unconditional WATCHDOG=1 (watchdog mode sends them itself, gated). */
  watchdog(): boolean {
    return this.notify('WATCHDOG=1');
  }

  /** The check asked before each ping; may be replaced (e.g. once the gateway is up). */
  setLivenessCheck(check: LivenessCheck): void {
    this.gate = check;
  }

  /**
   * Pings every WATCHDOG_USEC/3 while the event loop lag stays under WATCHDOG_USEC/4 and
   * the liveness check passes. No-op unless systemd set WATCHDOG_USEC for this process.
   * The timers never keep the process alive.
   */
  startWatchdog(check?: LivenessCheck): void {
    if (check) this.gate = check;
    if (this.watchdogMs === null || this.pingTimer !== null) return;
    const period = Math.floor(this.watchdogMs / 3); // one skipped ping is survived (see the header)
    const maxLag = this.watchdogMs / 4;
    const tickMs = Math.max(10, Math.min(1000, Math.floor(this.watchdogMs / 8)));
    let expected = this.clock.monotonic() + tickMs;
    this.lagTimer = this.clock.every(tickMs, () => {
      const now = this.clock.monotonic();
      this.stats.maxLagMs = Math.max(this.stats.maxLagMs, now - expected);
      expected = now + tickMs;
    });
    const tick = () => {
      // After a block both timers are due, and the ping's may come first: the lag timer has
      // not measured the block yet. Its lateness so far counts here, and is then taken as
      // measured (expected = now), so that when the lag timer runs right after, it does not
      // count the same block against the next ping too (two skips in a row: systemd kills).
      const now = this.clock.monotonic();
      if (now > expected) {
        this.stats.maxLagMs = Math.max(this.stats.maxLagMs, now - expected);
        expected = now;
      }
      const why = this.stats.maxLagMs > maxLag ? `event loop blocked for ${Math.round(this.stats.maxLagMs)} ms` : this.check();
      this.stats.maxLagMs = 0;
      if (why === null) {
        if (this.watchdog()) this.stats.pings++;
        return;
      }
      this.stats.skipped++;
      this.stats.lastSkipReason = why;
      this.log?.warn('watchdog ping skipped: the process is not healthy', { reason: why, watchdogMs: this.watchdogMs });
    };
    this.pingTimer = this.clock.every(period, tick);
    tick(); // a first ping right away: start-up may have taken a while
  }

  stopWatchdog(): void {
    this.pingTimer?.cancel();
    this.lagTimer?.cancel();
    this.pingTimer = this.lagTimer = null;
  }

  private check(): string | null {
    try {
      return this.gate();
    } catch (e) {
      return `liveness check failed: ${(e as Error).message}`;
    }
  }

  /** Sends one message; false (logged once) when it cannot be delivered. Never throws. */
  private notify(message: string): boolean {
    if (this.socket === null) return false;
    try {
      this.send(this.socket, Buffer.from(message));
      if (this.sendFailed) this.log?.info('systemd notification works again', { socket: this.socket });
      this.sendFailed = false;
      return true;
    } catch (e) {
      if (!this.sendFailed) {
        this.log?.warn('cannot notify systemd', { socket: this.socket, err: (e as Error).message });
      }
      this.sendFailed = true;
      return false;
    }
  }
}

/** WATCHDOG_USEC in ms when set for this process (WATCHDOG_PID absent or ours), else null. */
export function watchdogPeriodMs(env: NodeJS.ProcessEnv, pid: number): number | null {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isSafeInteger(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return null;
  return usec / 1000;
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

/** CLOCK_MONOTONIC in µs, as RELOADING=1 wants it next to it (systemd ≥ 253 Type=notify-reload). */
function monotonicUsec(): string {
  return String(process.hrtime.bigint() / 1000n);
}

/** The STATUS= line for `systemctl status`: "degraded: 1/2 peers up; aws-2 down (no answer for 90 s)". */
/** STATUS= shown by `systemctl status` is one line; longer is cut with an ellipsis. */
const STATUS_MAX = 400;

export function statusText(doc: Pick<HealthDocument, 'state' | 'peers'>): string {
  let up = 0;
  for (const p of doc.peers) if (p.state === 'up') up++;
  let line = `${doc.state}: ${up}/${doc.peers.length} peers up`;
  let sep = '; ';
  // Built only as far as it is shown: with 500 peers down, the whole list would be 200 KB a tick.
  for (const p of doc.peers) {
    if (line.length > STATUS_MAX) break;
    if (p.state === 'up') continue;
    line += `${sep}${p.name} ${p.state}${p.reason ? ` (${p.reason})` : ''}`;
    sep = ', ';
  }
  return line.length > STATUS_MAX ? `${line.slice(0, STATUS_MAX - 3)}...` : line;
}
