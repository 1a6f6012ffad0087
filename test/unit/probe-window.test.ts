// The keepalive's probe window as numbers (control/probe-window.ts): the ring itself, then
// the step function over it against a reference model, the array-of-records machine it
// replaced, on random timelines.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BIG_EVERY,
  JITTER,
  initialKeepalive,
  keepaliveStep,
  probeStats,
  settleMs,
  stateOf,
  WINDOW,
  type KeepaliveEvent,
  type KeepaliveParams,
  type ProbeRecord,
} from '../../src/control/keepalive-machine.js';
import type { PeerState } from '../../src/control/peer-state.js';
import { ProbeWindow } from '../../src/control/probe-window.js';

describe('probe window', () => {
  it('keeps the last `size` small probes, oldest first, across wrap-arounds', () => {
    const w = new ProbeWindow(4);
    expect(w.smallProbes()).toEqual([]);
    for (let seq = 1; seq <= 3; seq++) w.addSmall(seq, seq * 10);
    expect(w.smallProbes().map((p) => p.seq)).toEqual([1, 2, 3]);
    for (let seq = 4; seq <= 11; seq++) w.addSmall(seq, seq * 10);
    expect(w.smallCount).toBe(4);
    expect(w.smallProbes()).toEqual([8, 9, 10, 11].map((seq) => ({ seq, sentAt: seq * 10, answeredAt: 0 })));
  });

  it('answers a small probe once, with its send time, and nothing that left the window', () => {
    const w = new ProbeWindow(4);
    for (let seq = 1; seq <= 6; seq++) w.addSmall(seq, seq * 10);
    expect(w.answerSmall(5, 57)).toBe(50);
    expect(w.answerSmall(5, 58)).toBe(-1); // a duplicate
    expect(w.answerSmall(2, 59)).toBe(-1); // overwritten by 6
    expect(w.answerSmall(99, 60)).toBe(-1);
    expect(w.smallProbes().find((p) => p.seq === 5)?.answeredAt).toBe(57);
    // A probe sent at time 0 is answerable: -1, not 0, means "none".
    const z = new ProbeWindow(2);
    z.addSmall(7, 0);
    expect(z.answerSmall(7, 3)).toBe(0);
  });

  it('keeps one full-size probe, replaceable once answered or settled', () => {
    const w = new ProbeWindow(4);
    expect(w.bigProbe()).toBeNull();
    expect(w.bigAnswered(0, 1000)).toBeNull();
    expect(w.bigReplaceable(0, 1000)).toBe(true);
    w.setBig(2, 100, 1000);
    expect(w.keepsBig(2)).toBe(true);
    expect(w.keepsBig(3)).toBe(false);
    expect(w.bigReplaceable(1100, 1000)).toBe(false);
    expect(w.bigReplaceable(1101, 1000)).toBe(true);
    expect(w.bigAnswered(1100, 1000)).toBeNull();
    expect(w.bigAnswered(1101, 1000)).toBe(false);
    expect(w.answerBig(3, 200)).toBe(false);
    expect(w.answerBig(2, 200)).toBe(true);
    expect(w.answerBig(2, 201)).toBe(false);
    expect(w.bigAnswered(150, 1000)).toBe(true);
    expect(w.bigReplaceable(201, 1000)).toBe(true);
    expect(w.bigProbe()).toEqual({ seq: 2, sentAt: 100, answeredAt: 200 });
  });

  it("a replaced full-size probe's verdict stands while the next one is pending: no flapping back to unknown", () => {
    const w = new ProbeWindow(4);
    w.setBig(2, 100, 1000);
    expect(w.bigAnswered(1101, 1000)).toBe(false);
    // The next full-size probe replaces the failed one: still false, not null, until it has its own verdict.
    w.setBig(6, 2100, 1000);
    expect(w.bigAnswered(2500, 1000)).toBe(false);
    expect(w.bigAnswered(3101, 1000)).toBe(false);
    // The path heals: the next one answered is true at once.
    w.setBig(10, 4100, 1000);
    expect(w.bigAnswered(4200, 1000)).toBe(false);
    w.answerBig(10, 4150);
    expect(w.bigAnswered(4200, 1000)).toBe(true);
    // And a good verdict stands too while its successor is pending.
    w.setBig(14, 6100, 1000);
    expect(w.bigAnswered(6200, 1000)).toBe(true);
    expect(w.bigAnswered(7101, 1000)).toBe(false);
    // Replacing a still-pending probe (the caller never does) does not invent a verdict.
    const v = new ProbeWindow(4);
    v.setBig(1, 0, 1000);
    v.setBig(2, 10, 1000);
    expect(v.bigAnswered(20, 1000)).toBeNull();
  });

  it('computes loss over the settled small probes only', () => {
    const w = new ProbeWindow(4);
    expect(w.lossPct(0, 1000)).toBeNull();
    w.addSmall(1, 0);
    w.addSmall(2, 500);
    w.addSmall(3, 900);
    w.answerSmall(2, 510);
    expect(w.lossPct(1000, 1000)).toBe(0); // only 2 settled (answered)
    expect(w.lossPct(1001, 1000)).toBe(50); // 1 lost too
    expect(w.lossPct(1901, 1000)).toBe(66.7);
  });
});

// ---------------------------------------------------------------------------------------------
// The reference: the machine as it was, one immutable record per probe in an array copied on
// every step. Its behaviour is the specification of the packed one.

interface RefState {
  seq: number;
  probes: number;
  firstProbeAt: number;
  lastReplyAt: number;
  lastRttMs: number | null;
  history: readonly ProbeRecord[];
  big: ProbeRecord | null;
  /** The verdict of the full-size probe replaced last, while the kept one is pending. */
  lastBig: boolean | null;
  state: PeerState;
}

interface RefStep {
  state: RefState;
  send: { seq: number; big: boolean } | null;
  nextDueIn: number | null;
  changed: { from: PeerState; to: PeerState } | null;
}

function refStep(s: RefState, ev: KeepaliveEvent, p: KeepaliveParams): RefStep {
  const none = { send: null, nextDueIn: null, changed: null };
  const liveness = (x: RefState, now: number, lastRxAt: number) =>
    stateOf({ ...initialKeepalive(0), firstProbeAt: x.firstProbeAt, lastReplyAt: x.lastReplyAt }, now, lastRxAt, p);
  const check = (x: RefState, to: PeerState): RefStep =>
    to === x.state ? { state: x, ...none } : { state: { ...x, state: to }, ...none, changed: { from: x.state, to } };
  if (ev.type === 'check') return check(s, liveness(s, ev.now, ev.lastRxAt));
  if (ev.type === 'due') {
    if (p.intervalMs === 0) return { state: s, ...none };
    const now = ev.now;
    const seq = (s.seq + 1) & 0xffff;
    const big = s.probes % BIG_EVERY === 1;
    const rec = { seq, sentAt: now, answeredAt: 0 };
    const next: RefState = { ...s, seq, probes: s.probes + 1, firstProbeAt: s.firstProbeAt || now };
    if (big) {
      if (!s.big || s.big.answeredAt > 0 || now - s.big.sentAt > settleMs(p)) {
        if (s.big) next.lastBig = s.big.answeredAt > 0;
        next.big = rec;
      }
    } else {
      next.history = [...s.history, rec].slice(-WINDOW);
    }
    const nextDueIn = Math.round(p.intervalMs * (1 + JITTER * Math.max(-1, Math.min(1, ev.jitter))));
    return { state: next, ...none, send: { seq, big }, nextDueIn };
  }
  const { now, seq } = ev;
  const i = s.history.findIndex((h) => h.seq === seq && h.answeredAt === 0);
  let next: RefState;
  if (i >= 0) {
    const history = s.history.slice();
    history[i] = { ...history[i], answeredAt: now };
    next = { ...s, history, lastReplyAt: now, lastRttMs: Math.round((now - history[i].sentAt) * 1000) / 1000 };
  } else if (s.big && s.big.seq === seq && s.big.answeredAt === 0) {
    next = { ...s, big: { ...s.big, answeredAt: now }, lastReplyAt: now };
  } else {
    return { state: s, ...none };
  }
  return check(next, next.lastReplyAt > 0 ? 'up' : next.state);
}

function refStats(s: RefState, now: number, p: KeepaliveParams) {
  const settle = settleMs(p);
  const settled = s.history.filter((h) => h.answeredAt > 0 || now - h.sentAt > settle);
  const lost = settled.filter((h) => h.answeredAt === 0).length;
  return {
    rttMs: s.lastRttMs,
    lossPct: settled.length ? Math.round((1000 * lost) / settled.length) / 10 : null,
    pathMtuOk: (!s.big ? null : s.big.answeredAt > 0 ? true : now - s.big.sentAt > settle ? false : null) ?? s.lastBig,
    probesSent: s.history.length,
  };
}

/** A timeline: each step moves time on and is a probe, an answer to a recent probe (or a
 *  made-up one), or a look. */
const timeline = fc.array(
  fc.record({
    dt: fc.integer({ min: 0, max: 8000 }),
    kind: fc.constantFrom('due', 'due', 'reply', 'reply', 'check'),
    back: fc.integer({ min: 0, max: WINDOW + 6 }),
    jitter: fc.double({ min: -1.5, max: 1.5, noNaN: true }),
    rx: fc.boolean(),
  }),
  { minLength: 1, maxLength: 160, size: 'max' }, // long enough to wrap the ring (fast-check's default size stays near 10)
);

describe('keepalive step function over the probe window', () => {
  it('does what the array-of-records machine did, step by step, with the same statistics', () => {
    fc.assert(
      fc.property(
        timeline,
        fc.constantFrom<KeepaliveParams>({ intervalMs: 2000, timeoutMs: 6000 }, { intervalMs: 25_000, timeoutMs: 90_000 }, { intervalMs: 0, timeoutMs: 20_000 }),
        fc.integer({ min: 0, max: 0xffff }),
        (events, p, seq0) => {
          let now = 0;
          let lastRx = 0;
          const s = initialKeepalive(seq0);
          let ref: RefState = { seq: seq0, probes: 0, firstProbeAt: 0, lastReplyAt: 0, lastRttMs: null, history: [], big: null, lastBig: null, state: 'unknown' };
          for (const e of events) {
            now += e.dt + 0.25; // fractional times, as the monotonic clock's
            if (e.rx) lastRx = now;
            const ev: KeepaliveEvent =
              e.kind === 'due' ? { type: 'due', now, jitter: e.jitter }
              : e.kind === 'reply' ? { type: 'reply', now, seq: (s.seq - e.back) & 0xffff }
              : { type: 'check', now, lastRxAt: lastRx };
            const got = keepaliveStep(s, ev, p);
            const want = refStep(ref, ev, p);
            ref = want.state;
            expect(got.state).toBe(s);
            expect({ send: got.send, nextDueIn: got.nextDueIn, changed: got.changed }).toEqual({ send: want.send, nextDueIn: want.nextDueIn, changed: want.changed });
            expect([s.seq, s.probes, s.firstProbeAt, s.lastReplyAt, s.lastRttMs, s.state]).toEqual([ref.seq, ref.probes, ref.firstProbeAt, ref.lastReplyAt, ref.lastRttMs, ref.state]);
            expect(s.window.smallProbes()).toEqual(ref.history);
            expect(s.window.bigProbe()).toEqual(ref.big);
            // settleMs(p) later: the last probe sent is exactly at its settle boundary.
            for (const later of [0, 999, settleMs(p), 5001]) expect(probeStats(s, now + later, p)).toEqual(refStats(ref, now + later, p));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
