// Keepalives are real probes: an ICMP echo inside the tunnel from our VTEP address
// to each peer's, every keepalive.interval ±20 %. The peer's kernel answers from
// its own stack through its route back to our subnet, so an answer proves the whole
// round trip, and sending it holds our NAT mapping toward that peer open. RTT and
// loss come from these probes; liveness is decided by peer-state.ts.
//
// All per-peer timers live here. Peers are keyed by name so that a config reload
// that keeps a peer keeps its history.
import { randomInt } from 'node:crypto';
import { parseEchoReply } from '../proto/icmp.js';
import { ProbeSender } from './probe.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import { peerState, type PeerState } from './peer-state.js';

const WINDOW = 20; // probes over which loss is computed
const JITTER = 0.2;
/** Every Nth probe is a full-size one (inner packet = device MTU): the path MTU probe. */
const BIG_EVERY = 4;

interface ProbeRecord {
  seq: number;
  sentAt: number;
  sentHr: number; // performance.now(), for sub-millisecond RTT
  answeredAt: number; // 0: not (yet)
  token: Buffer;
}

interface PeerProbes {
  name: string;
  timer: NodeJS.Timeout | null;
  seq: number;
  firstProbeAt: number;
  lastReplyAt: number;
  lastRttMs: number | null;
  history: ProbeRecord[]; // newest last, at most WINDOW
  /** The last full-size probe; kept out of RTT and loss, which are about the small ones. */
  big: ProbeRecord | null;
  probes: number;
  state: PeerState;
}

/** Whether full-size frames make the round trip: null until a full-size probe settled. */
export type PathMtuVerdict = boolean | null;

export interface PeerHealth {
  state: PeerState;
  rttMs: number | null;
  lossPct: number | null;
  lastSeen: number; // ms epoch, 0 = never
  lastReplyAt: number;
  /** Last valid frame of any kind from the peer (0: never). */
  heardAt: number;
  probesSent: number;
  /** A full-size (device MTU) probe was answered: true; went unanswered: false; not yet known: null. */
  pathMtuOk: PathMtuVerdict;
}

export interface KeepaliveOptions {
  intervalMs: number; // 0 disables probing
  timeoutMs: number;
  now?: () => number;
}

export class Keepalive {
  private readonly peers = new Map<string, PeerProbes>();
  private readonly ident = randomInt(1, 0xffff);
  private readonly probes: ProbeSender;
  private readonly reply = { ident: 0, seq: 0, tokenOff: 0 };
  private readonly now: () => number;
  private stopped = true;
  private stateTimer: NodeJS.Timeout | null = null;
  /** Called when a peer's state changes (health publishing hooks in here). */
  onStateChange: (name: string, from: PeerState, to: PeerState) => void = () => undefined;

  constructor(
    private readonly dp: Dataplane,
    private readonly opts: KeepaliveOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.probes = new ProbeSender(dp);
  }

  start(): void {
    this.stopped = false;
    this.dp.outside.hooks.onToVtep = (buf, off, len, p) => this.onToVtep(buf, off, len, p);
    this.syncPeers();
    // Liveness can change without any packet (a timeout), so re-evaluate on a clock too.
    this.stateTimer = setInterval(() => this.evaluate(), 1000);
    this.stateTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    for (const p of this.peers.values()) if (p.timer) clearTimeout(p.timer);
    if (this.stateTimer) clearInterval(this.stateTimer);
    this.dp.outside.hooks.onToVtep = undefined;
  }

  /** Follows the data plane's peer table after a reload: new peers start probing, gone ones stop. */
  syncPeers(): void {
    const names = new Set(this.dp.peers.names);
    for (const [name, p] of this.peers) {
      if (!names.has(name)) {
        if (p.timer) clearTimeout(p.timer);
        this.peers.delete(name);
      }
    }
    for (const name of names) {
      if (this.peers.has(name)) continue;
      const p: PeerProbes = { name, timer: null, seq: randomInt(0, 0xffff), firstProbeAt: 0, lastReplyAt: 0, lastRttMs: null, history: [], big: null, probes: 0, state: 'unknown' };
      this.peers.set(name, p);
      // First probe soon after start (spread a little), then every interval.
      if (this.opts.intervalMs > 0 && !this.stopped) this.schedule(p, randomInt(50, 500));
    }
  }

  health(name: string): PeerHealth {
    const p = this.peers.get(name);
    const idx = this.dp.peers.indexOf(name);
    const lastRx = idx >= 0 ? this.dp.peers.lastRx[idx] : 0;
    if (!p) return { state: 'unknown', rttMs: null, lossPct: null, lastSeen: lastRx, lastReplyAt: 0, heardAt: lastRx, probesSent: 0, pathMtuOk: null };
    const now = this.now();
    const settleMs = this.settleMs();
    const settled = p.history.filter((h) => h.answeredAt > 0 || now - h.sentAt > settleMs);
    const lost = settled.filter((h) => h.answeredAt === 0).length;
    return {
      state: this.stateOf(p, now),
      rttMs: p.lastRttMs,
      lossPct: settled.length ? Math.round((1000 * lost) / settled.length) / 10 : null,
      lastSeen: Math.max(lastRx, p.lastReplyAt),
      lastReplyAt: p.lastReplyAt,
      heardAt: lastRx,
      probesSent: p.history.length,
      pathMtuOk: !p.big ? null : p.big.answeredAt > 0 ? true : now - p.big.sentAt > settleMs ? false : null,
    };
  }

  private stateOf(p: PeerProbes, now: number): PeerState {
    const idx = this.dp.peers.indexOf(p.name);
    const lastRxAt = idx >= 0 ? this.dp.peers.lastRx[idx] : 0;
    if (this.opts.intervalMs === 0) {
      // Without probes, only traffic from the peer tells us anything.
      return lastRxAt === 0 ? 'unknown' : now - lastRxAt < this.opts.timeoutMs ? 'up' : 'down';
    }
    return peerState({ firstProbeAt: p.firstProbeAt, lastReplyAt: p.lastReplyAt, lastRxAt }, now, this.opts.timeoutMs);
  }

  /** Re-evaluates every peer and reports transitions. */
  evaluate(): void {
    const now = this.now();
    for (const p of this.peers.values()) {
      const s = this.stateOf(p, now);
      if (s !== p.state) {
        const from = p.state;
        p.state = s;
        this.onStateChange(p.name, from, s);
      }
    }
  }

  private settleMs(): number {
    return Math.max(1000, Math.min(this.opts.intervalMs, 5000));
  }

  private schedule(p: PeerProbes, delayMs: number): void {
    p.timer = setTimeout(() => {
      if (this.stopped || !this.peers.has(p.name)) return;
      this.probe(p);
      const jitter = 1 + JITTER * (2 * Math.random() - 1);
      this.schedule(p, Math.round(this.opts.intervalMs * jitter));
    }, delayMs);
    p.timer.unref();
  }

  /** Sends one probe to a peer now. */
  probe(p: PeerProbes): void {
    const idx = this.dp.peers.indexOf(p.name);
    if (idx < 0) return;
    p.seq = (p.seq + 1) & 0xffff;
    const now = this.now();
    if (p.firstProbeAt === 0) p.firstProbeAt = now;
    // The second probe and every BIG_EVERY-th after it carry a full device-MTU packet (DF set
    // inside): if small probes come back and these do not, the path loses large frames.
    const big = p.probes++ % BIG_EVERY === 1;
    const token = this.probes.send(idx, this.ident, p.seq, undefined, big ? this.dp.settings.mtu : undefined);
    const rec = { seq: p.seq, sentAt: now, sentHr: performance.now(), answeredAt: 0, token: token ?? Buffer.alloc(8) };
    if (big) {
      // A full-size probe that overtakes the previous one's answer window replaces it only once settled.
      if (!p.big || p.big.answeredAt > 0 || now - p.big.sentAt > this.settleMs()) p.big = rec;
      return;
    }
    p.history.push(rec);
    if (p.history.length > WINDOW) p.history.shift();
  }

  /** Outside-path hook: consumes echo replies to our probes, lets everything else through. */
  private onToVtep(buf: Buffer, off: number, len: number, idx: number): boolean {
    if (!parseEchoReply(buf, off, len, this.reply) || this.reply.ident !== this.ident) return false;
    const p = this.peers.get(this.dp.peers.names[idx]);
    if (!p) return true;
    const rec =
      p.history.find((h) => h.seq === this.reply.seq && h.answeredAt === 0) ??
      (p.big && p.big.seq === this.reply.seq && p.big.answeredAt === 0 ? p.big : undefined);
    if (!rec || buf.compare(rec.token, 0, 8, this.reply.tokenOff, this.reply.tokenOff + 8) !== 0) return true;
    const now = this.now();
    rec.answeredAt = now;
    p.lastReplyAt = now;
    if (rec !== p.big) p.lastRttMs = Math.round((performance.now() - rec.sentHr) * 1000) / 1000;
    if (p.state !== 'up') this.evaluate();
    return true;
  }
}
