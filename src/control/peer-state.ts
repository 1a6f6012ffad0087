// A peer's liveness as a pure function of what we know, so it can be tested with a
// table and reasoned about without timers (docs/control-plane.md "Peer states"):
//   unknown: no answer yet, and the first probe went out less than `timeout` ago;
//   up:      a probe was answered, and we heard from the peer within `timeout`
//            (any valid VXLAN frame from it counts as life);
//   down:    otherwise.
export type PeerState = 'unknown' | 'up' | 'down';

export interface PeerLiveness {
  /** When the first probe was sent (0: not yet). */
  firstProbeAt: number;
  /** Last probe reply (0: never). */
  lastReplyAt: number;
  /** Last valid frame of any kind from the peer (0: never). */
  lastRxAt: number;
}

export function peerState(l: PeerLiveness, now: number, timeoutMs: number): PeerState {
  const lastLife = Math.max(l.lastReplyAt, l.lastRxAt);
  if (l.lastReplyAt > 0 && now - lastLife < timeoutMs) return 'up';
  if (l.lastReplyAt === 0 && (l.firstProbeAt === 0 || now - l.firstProbeAt < timeoutMs)) {
    // Traffic before the first answered probe is life but not yet proof of the round trip.
    return 'unknown';
  }
  return 'down';
}
