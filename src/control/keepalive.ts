// Keepalives are real probes: an ICMP echo inside the tunnel from our VTEP address to
// each peer's, every keepalive.interval ±20 %. The peer's kernel answers from its own
// stack through its route back to our subnet, so an answer proves the whole round trip,
// and sending it holds our NAT mapping toward that peer open. RTT and loss come from
// these probes.
//
// This is the driver: what to do and when is decided by the step function of
// keepalive-machine.ts; here are only the timers (from the injected Clock), the probe
// tokens and the sockets. Peers are keyed by name, so that a reload or a cluster change
// that keeps a peer keeps its history.
import { randomInt } from 'node:crypto';
import { parseEchoReply } from '../proto/icmp.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Clock, Timer } from '../util/clock.js';
import { DueQueue, type DueItem } from '../util/due-queue.js';
import {
  initialKeepalive,
  keepaliveStep,
  probeStats,
  type KeepaliveEvent,
  type KeepaliveParams,
  type KeepaliveState,
  type ProbeStats,
} from './keepalive-machine.js';
import type { PeerState } from './peer-state.js';
import { ProbeSender } from './probe.js';
import { ProbeTokens, RandomWords } from './probe-tokens.js';

export type { KeepaliveParams } from './keepalive-machine.js';

/** How often liveness is re-evaluated without any packet (a timeout is a non-event). */
const CHECK_EVERY_MS = 1000;
/**
 * Above this many peers the look once a second is cut into slices (at most 10), each taking
 * its share of the peers in turn. Peers started together time out together: 500 of them
 * went down in one look, and their 500 transitions (a log line with its reason each) held
 * the event loop the packets share for ~50 ms. Each peer is still looked at once a second.
 */
const CHECK_SLICE_PEERS = 50;
const MAX_CHECK_SLICES = 10;
/** What health() reports for a name it does not know: read, never stepped. */
const NEVER_PROBED = initialKeepalive(0);

/** Probes due within this much of each other go out together (one timer, not one each). */
const PROBE_COALESCE_MS = 20;

/** A peer's probing; its next probe's deadline (DueItem) is kept by the keepalive's DueQueue. */
interface PeerProbes extends DueItem {
  name: string;
  ka: KeepaliveState;
  /** Tokens of the probes that may still be answered. */
  tokens: ProbeTokens;
}

export interface PeerHealth extends ProbeStats {
  state: PeerState;
  /** Last sign of life (probe reply or any valid frame), wall ms; 0 = never. */
  lastSeen: number;
  /** A probe was answered at some point. */
  answeredBefore: boolean;
  /** Last valid frame of any kind from the peer, monotonic ms (0: never). */
  heardAt: number;
}

export interface KeepaliveOptions extends KeepaliveParams {
  clock: Clock;
  /** In [0, 1): jitter of the probe period and first-probe spread (tests make it fixed). */
  random?: () => number;
}

export class Keepalive {
  private readonly peers = new Map<string, PeerProbes>();
  private readonly ident = randomInt(1, 0xffff);
  private readonly probes: ProbeSender;
  private readonly reply = { ident: 0, seq: 0, tokenOff: 0 };
  private readonly words = new RandomWords();
  /** The token of the probe being sent, as the wire carries it. */
  private readonly token = Buffer.alloc(8);
  private readonly clock: Clock;
  private readonly random: () => number;
  private params: KeepaliveParams;
  private running = false;
  private checkTimer: Timer | null = null;
  /** Every peer's next probe, behind one timer. */
  private readonly due: DueQueue<PeerProbes>;
  /** Which slice of the peers the next look takes (see CHECK_SLICE_PEERS). */
  private checkSlice = 0;
  /** Peers up now: kept as states change, so that "is any peer up?" costs nothing per transition. */
  private upCount = 0;
  /** Called when a peer's state changes (the supervisor hooks in here). */
  onStateChange: (name: string, from: PeerState, to: PeerState) => void = () => undefined;

  constructor(
    private readonly dp: Dataplane,
    o: KeepaliveOptions,
  ) {
    this.clock = o.clock;
    this.random = o.random ?? Math.random;
    this.params = { intervalMs: o.intervalMs, timeoutMs: o.timeoutMs };
    this.probes = new ProbeSender(dp);
    this.due = new DueQueue<PeerProbes>(this.clock, (p) => this.probeDue(p), PROBE_COALESCE_MS);
  }

  start(): void {
    this.running = true;
    this.dp.outside.hooks.onToVtep = (buf, off, len, p) => this.onToVtep(buf, off, len, p);
    this.syncPeers();
    // Peers that joined before the start (the table was filled first) get their first probe now.
    if (this.params.intervalMs > 0) for (const p of this.peers.values()) if (!this.due.has(p)) this.schedule(p, this.firstDelay());
    this.scheduleCheck();
  }

  stop(): void {
    this.running = false;
    this.due.clear();
    this.checkTimer?.cancel();
    this.dp.outside.hooks.onToVtep = undefined;
  }

  /** keepalive.interval/timeout changed (reload): keeps every peer's history, reschedules probes. */
  setParams(p: KeepaliveParams): void {
    const intervalChanged = p.intervalMs !== this.params.intervalMs;
    this.params = { ...p };
    if (!intervalChanged || !this.running) return;
    for (const peer of this.peers.values()) {
      this.due.cancel(peer);
      if (p.intervalMs > 0) this.schedule(peer, this.firstDelay());
    }
  }

  /** Follows the data plane's peer table: new peers start probing, gone ones stop. */
  syncPeers(): void {
    const table = this.dp.peers;
    for (const [name, p] of this.peers) {
      if (table.indexOf(name) < 0) {
        this.due.cancel(p);
        if (p.ka.state === 'up') this.upCount--;
        this.peers.delete(name);
      }
    }
    for (const s of table.slots()) {
      const name = table.names[s]!;
      if (this.peers.has(name)) continue;
      const p: PeerProbes = { name, ka: initialKeepalive(randomInt(0, 0xffff)), tokens: new ProbeTokens(), dueAt: 0, heapIndex: -1 };
      this.peers.set(name, p);
      if (this.running && this.params.intervalMs > 0) this.schedule(p, this.firstDelay());
    }
  }

  /**
   * No probes to peers that are not up for `ms`, then probing as before. Their answers so
   * far died at the site router; while more keep coming on the same flow, the router's
   * conntrack entry for it (made before a forward existed) never expires and never meets the
   * forward. Peers that are up keep their rhythm.
   */
  holdUnanswered(ms: number): string[] {
    const held: string[] = [];
    if (!this.running || this.params.intervalMs === 0) return held;
    for (const p of this.peers.values()) {
      if (p.ka.state === 'up' || p.ka.probes === 0) continue;
      this.schedule(p, ms);
      held.push(p.name);
    }
    return held;
  }

  /** Is any peer up? (Asked at every transition: 500 peers going down at once made a scan of all of them each time quadratic.) */
  anyUp(): boolean {
    return this.upCount > 0;
  }

  /** The peer's state alone (cheap: the periodic looks over every peer use it). */
  state(name: string): PeerState {
    return this.peers.get(name)?.ka.state ?? 'unknown';
  }

  health(name: string): PeerHealth {
    const p = this.peers.get(name);
    const lastRx = this.lastRxOf(name);
    const ka = p?.ka ?? NEVER_PROBED;
    const mono = this.clock.monotonic();
    const lastLife = Math.max(lastRx, ka.lastReplyAt);
    // Field by field, not `{ ...probeStats(), ... }`: the spread took the slow path of V8's
    // object cloning, 8 µs a peer, and the health document asks for every peer every 2 s.
    const st = probeStats(ka, mono, this.params);
    return {
      rttMs: st.rttMs,
      lossPct: st.lossPct,
      pathMtuOk: st.pathMtuOk,
      probesSent: st.probesSent,
      state: p ? ka.state : 'unknown',
      lastSeen: lastLife > 0 ? Math.round(this.clock.now() - (mono - lastLife)) : 0,
      answeredBefore: ka.lastReplyAt > 0,
      heardAt: lastRx,
    };
  }

  /** Re-evaluates one slice of `slices` of the peers and reports transitions. */
  private evaluate(slices: number): void {
    const now = this.clock.monotonic();
    const slice = this.checkSlice++ % slices;
    let i = 0;
    for (const p of this.peers.values()) {
      if (i++ % slices === slice) this.apply(p, { type: 'check', now, lastRxAt: this.lastRxOf(p.name) });
    }
  }

  /** The next look at the peers: once a second, or one slice of them 2-10 times a second. */
  private scheduleCheck(): void {
    const slices = Math.min(MAX_CHECK_SLICES, Math.max(1, Math.ceil(this.peers.size / CHECK_SLICE_PEERS)));
    this.checkTimer = this.clock.after(CHECK_EVERY_MS / slices, () => {
      if (!this.running) return;
      this.evaluate(slices);
      this.scheduleCheck();
    });
  }

  private firstDelay(): number {
    // First probe soon after start (spread a little so 500 peers do not go in one burst).
    return 50 + Math.floor(this.random() * 450);
  }

  private lastRxOf(name: string): number {
    const s = this.dp.peers.indexOf(name);
    return s >= 0 ? this.dp.peers.lastRx[s] : 0;
  }

  private schedule(p: PeerProbes, delayMs: number): void {
    this.due.schedule(p, delayMs);
  }

  private probeDue(p: PeerProbes): void {
    if (!this.running || this.peers.get(p.name) !== p) return;
    this.apply(p, { type: 'due', now: this.clock.monotonic(), jitter: 2 * this.random() - 1 });
  }

  /** Runs one step and carries out what it says. */
  private apply(p: PeerProbes, ev: KeepaliveEvent): void {
    const r = keepaliveStep(p.ka, ev, this.params);
    p.ka = r.state;
    if (r.send) this.send(p, r.send.seq, r.send.big);
    if (r.nextDueIn !== null) this.schedule(p, r.nextDueIn);
    if (r.changed) {
      if (r.changed.from === 'up') this.upCount--;
      if (r.changed.to === 'up') this.upCount++;
      this.onStateChange(p.name, r.changed.from, r.changed.to);
    }
  }

  private send(p: PeerProbes, seq: number, big: boolean): void {
    const slot = this.dp.peers.indexOf(p.name);
    if (slot < 0) return;
    const hi = this.words.next();
    const lo = this.words.next();
    this.token.writeUInt32BE(hi, 0);
    this.token.writeUInt32BE(lo, 4);
    this.probes.send(slot, this.ident, seq, this.token, undefined, big ? this.dp.settings.mtu : undefined);
    // A full-size probe the machine did not keep (the previous one is still within its
    // answer window) cannot be counted: its token is not worth remembering.
    if (!big || p.ka.window.keepsBig(seq)) p.tokens.add(seq, big, hi, lo);
  }

  /** Outside-path hook: consumes echo replies to our probes, lets everything else through. */
  private onToVtep(buf: Buffer, off: number, len: number, slot: number): boolean {
    if (!parseEchoReply(buf, off, len, this.reply) || this.reply.ident !== this.ident) return false;
    const name = this.dp.peers.names[slot];
    const p = name ? this.peers.get(name) : undefined;
    if (!p) return true;
    if (!p.tokens.take(this.reply.seq, buf, this.reply.tokenOff)) return true;
    this.apply(p, { type: 'reply', now: this.clock.monotonic(), seq: this.reply.seq });
    return true;
  }
}
