// The keepalive of one peer as a step function: (state, event) -> what to do, the state
// changed in place (it is the peer's own; a copy per probe was three objects each time).
// No timers, no sockets, no clock, no randomness: keepalive.ts feeds it events at the times
// its Clock says and carries out the result, and a test feeds it a timeline.
//
// Events (all times are monotonic ms):
//   due     the probe timer fired: send a probe now, and say when the next one is due
//           (keepalive.interval ± 20 % jitter; `jitter` in [-1, 1] comes from outside so
//           that the step stays deterministic);
//   reply   an echo reply to one of our probes arrived (the driver checked its token);
//   check   re-evaluate liveness (every second, and after a reply), given when the data
//           plane last saw any valid frame from the peer.
//
// Every BIG_EVERY-th probe (the second, sixth, ...) carries a full device-MTU inner packet:
// if small probes come back and those do not, the path loses large frames (path_mtu check).
import { peerState, type PeerState } from './peer-state.js';
import { ProbeWindow } from './probe-window.js';

export type { ProbeRecord } from './probe-window.js';

/** Probes over which loss is computed. */
export const WINDOW = 20;
export const JITTER = 0.2;
export const BIG_EVERY = 4;

export interface KeepaliveParams {
  /** 0 disables probing: liveness then comes from traffic alone. */
  intervalMs: number;
  timeoutMs: number;
}

export interface KeepaliveState {
  /** Sequence number of the last probe sent (16 bits). */
  seq: number;
  /** Probes sent so far (small and big). */
  probes: number;
  firstProbeAt: number;
  lastReplyAt: number;
  lastRttMs: number | null;
  /** The last WINDOW small probes, and the last full-size one (kept out of RTT and loss,
   *  which are about the small ones). */
  readonly window: ProbeWindow;
  state: PeerState;
}

export type KeepaliveEvent =
  | { type: 'due'; now: number; jitter: number }
  | { type: 'reply'; now: number; seq: number }
  | { type: 'check'; now: number; lastRxAt: number };

export interface KeepaliveStep {
  state: KeepaliveState;
  /** Send a probe with this sequence number; big: a full device-MTU one. */
  send: { seq: number; big: boolean } | null;
  /** When the next `due` event should come (after a `due`). */
  nextDueIn: number | null;
  /** The peer's state changed. */
  changed: { from: PeerState; to: PeerState } | null;
}

export function initialKeepalive(seq: number): KeepaliveState {
  return { seq, probes: 0, firstProbeAt: 0, lastReplyAt: 0, lastRttMs: null, window: new ProbeWindow(WINDOW), state: 'unknown' };
}

/** How long a probe may take before it counts as lost. */
export function settleMs(p: KeepaliveParams): number {
  return Math.max(1000, Math.min(p.intervalMs, 5000));
}

export function keepaliveStep(s: KeepaliveState, ev: KeepaliveEvent, p: KeepaliveParams): KeepaliveStep {
  switch (ev.type) {
    case 'due':
      return probe(s, ev.now, ev.jitter, p);
    case 'reply':
      return reply(s, ev.now, ev.seq);
    case 'check':
      return check(s, ev.now, ev.lastRxAt, p);
  }
}

function probe(s: KeepaliveState, now: number, jitter: number, p: KeepaliveParams): KeepaliveStep {
  if (p.intervalMs === 0) return nothing(s);
  const seq = (s.seq + 1) & 0xffff;
  const big = s.probes % BIG_EVERY === 1;
  s.seq = seq;
  s.probes++;
  if (s.firstProbeAt === 0) s.firstProbeAt = now;
  if (!big) s.window.addSmall(seq, now);
  else {
    // A full-size probe that overtakes the previous one's answer window replaces it only once settled.
    const settle = settleMs(p);
    if (s.window.bigReplaceable(now, settle)) s.window.setBig(seq, now, settle);
  }
  const nextDueIn = Math.round(p.intervalMs * (1 + JITTER * Math.max(-1, Math.min(1, jitter))));
  return { state: s, send: { seq, big }, nextDueIn, changed: null };
}

function reply(s: KeepaliveState, now: number, seq: number): KeepaliveStep {
  const sentAt = s.window.answerSmall(seq, now);
  if (sentAt >= 0) s.lastRttMs = Math.round((now - sentAt) * 1000) / 1000;
  else if (!s.window.answerBig(seq, now)) return nothing(s); // late, duplicate or not ours
  s.lastReplyAt = now;
  // An answer is news: a peer that was not up may be now.
  return check(s, now, 0, null);
}

function check(s: KeepaliveState, now: number, lastRxAt: number, p: KeepaliveParams | null): KeepaliveStep {
  const to = p === null ? upAfterReply(s) : stateOf(s, now, lastRxAt, p);
  if (to === s.state) return nothing(s);
  const from = s.state;
  s.state = to;
  return { state: s, send: null, nextDueIn: null, changed: { from, to } };
}

function nothing(s: KeepaliveState): KeepaliveStep {
  return { state: s, send: null, nextDueIn: null, changed: null };
}

/** Right after a reply the peer is up, whatever else is true. */
function upAfterReply(s: KeepaliveState): PeerState {
  return s.lastReplyAt > 0 ? 'up' : s.state;
}

/** Liveness now (peer-state.ts), or from traffic alone when probing is off. */
export function stateOf(s: KeepaliveState, now: number, lastRxAt: number, p: KeepaliveParams): PeerState {
  if (p.intervalMs === 0) return lastRxAt === 0 ? 'unknown' : now - lastRxAt < p.timeoutMs ? 'up' : 'down';
  return peerState({ firstProbeAt: s.firstProbeAt, lastReplyAt: s.lastReplyAt, lastRxAt }, now, p.timeoutMs);
}

export interface ProbeStats {
  rttMs: number | null;
  lossPct: number | null;
  /** A full-size probe was answered: true; went unanswered: false; not yet known: null. */
  pathMtuOk: boolean | null;
  /** Small probes in the loss window. */
  probesSent: number;
}

/** RTT, loss over the settled probes of the window, and the path-MTU verdict. */
export function probeStats(s: KeepaliveState, now: number, p: KeepaliveParams): ProbeStats {
  const settle = settleMs(p);
  return {
    rttMs: s.lastRttMs,
    lossPct: s.window.lossPct(now, settle),
    pathMtuOk: s.window.bigAnswered(now, settle),
    probesSent: s.window.smallCount,
  };
}
