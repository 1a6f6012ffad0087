// The keepalive of one peer as a pure step function: (state, event) -> (state, what to
// do). No timers, no sockets, no clock: keepalive.ts feeds it events at the times its
// Clock says and carries out the result, and a test feeds it a timeline.
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

/** Probes over which loss is computed. */
export const WINDOW = 20;
export const JITTER = 0.2;
export const BIG_EVERY = 4;

export interface ProbeRecord {
  seq: number;
  sentAt: number;
  /** 0: not (yet) answered. */
  answeredAt: number;
}

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
  /** Small probes, newest last, at most WINDOW. */
  history: readonly ProbeRecord[];
  /** The last full-size probe; kept out of RTT and loss, which are about the small ones. */
  big: ProbeRecord | null;
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
  return { seq, probes: 0, firstProbeAt: 0, lastReplyAt: 0, lastRttMs: null, history: [], big: null, state: 'unknown' };
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
  if (p.intervalMs === 0) return { state: s, send: null, nextDueIn: null, changed: null };
  const seq = (s.seq + 1) & 0xffff;
  const big = s.probes % BIG_EVERY === 1;
  const rec: ProbeRecord = { seq, sentAt: now, answeredAt: 0 };
  const next: KeepaliveState = { ...s, seq, probes: s.probes + 1, firstProbeAt: s.firstProbeAt || now };
  if (big) {
    // A full-size probe that overtakes the previous one's answer window replaces it only once settled.
    if (!s.big || s.big.answeredAt > 0 || now - s.big.sentAt > settleMs(p)) next.big = rec;
  } else {
    next.history = [...s.history, rec].slice(-WINDOW);
  }
  const nextDueIn = Math.round(p.intervalMs * (1 + JITTER * Math.max(-1, Math.min(1, jitter))));
  return { state: next, send: { seq, big }, nextDueIn, changed: null };
}

function reply(s: KeepaliveState, now: number, seq: number): KeepaliveStep {
  const i = s.history.findIndex((h) => h.seq === seq && h.answeredAt === 0);
  let next: KeepaliveState;
  if (i >= 0) {
    const history = s.history.slice();
    history[i] = { ...history[i], answeredAt: now };
    next = { ...s, history, lastReplyAt: now, lastRttMs: Math.round((now - history[i].sentAt) * 1000) / 1000 };
  } else if (s.big && s.big.seq === seq && s.big.answeredAt === 0) {
    next = { ...s, big: { ...s.big, answeredAt: now }, lastReplyAt: now };
  } else {
    return { state: s, send: null, nextDueIn: null, changed: null }; // late, duplicate or not ours
  }
  // An answer is news: a peer that was not up may be now.
  return { ...check(next, now, 0, null), send: null, nextDueIn: null };
}

function check(s: KeepaliveState, now: number, lastRxAt: number, p: KeepaliveParams | null): KeepaliveStep {
  const to = p === null ? upAfterReply(s) : stateOf(s, now, lastRxAt, p);
  if (to === s.state) return { state: s, send: null, nextDueIn: null, changed: null };
  return { state: { ...s, state: to }, send: null, nextDueIn: null, changed: { from: s.state, to } };
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
  const settled = s.history.filter((h) => h.answeredAt > 0 || now - h.sentAt > settle);
  const lost = settled.filter((h) => h.answeredAt === 0).length;
  return {
    rttMs: s.lastRttMs,
    lossPct: settled.length ? Math.round((1000 * lost) / settled.length) / 10 : null,
    pathMtuOk: !s.big ? null : s.big.answeredAt > 0 ? true : now - s.big.sentAt > settle ? false : null,
    probesSent: s.history.length,
  };
}
