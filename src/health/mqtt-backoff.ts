// Reconnect pacing for the MQTT health publisher (docs/health.md "Reconnecting": exponential
// backoff with jitter, so that a fleet does not stampede a restarted broker). MQTT.js's own
// reconnectPeriod is a constant, so the publisher schedules its attempts with this.

export interface BackoffPolicy {
  /** Nominal delay before the first retry. */
  initialMs: number;
  /** Cap of the nominal delay (the jitter band is applied around it). */
  maxMs: number;
  /** Relative jitter: the delay is nominal × (1 ± jitter), uniformly. */
  jitter: number;
  /** A connection that lasted this long resets the schedule to initialMs. */
  stableMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000, jitter: 0.3, stableMs: 10_000 };

/**
 * Delay before retry number `attempt` (0 = the first retry after a failure):
 * nominal = min(maxMs, initialMs × 2^attempt), then × (1 + jitter × (2r − 1)) for r in [0, 1).
 * With the defaults: 1 s, 2 s, 4 s, … 32 s, 60 s, 60 s, … each ±30 % (0.7 s–1.3 s, …, 42 s–78 s).
 * Pure: `random` is injected (Math.random in production).
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const n = Math.max(0, Math.floor(attempt));
  // 2^n overflows to Infinity for large n; min() keeps it at the cap.
  const nominal = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(n, 1024));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(nominal * (1 + policy.jitter * (2 * r - 1)));
}
