// The keepalive probes of one peer that the loss window still counts, kept as numbers.
//
// They were one object per probe ({ seq, sentAt, answeredAt }, its send time a boxed double)
// in an array copied on every probe and every answer: with 500 peers ~10 000 objects and
// 13 000 heap numbers, 0.75 MB of a 10 MB live heap (heap snapshots, docs/memory.md), and
// three new objects per probe. Here they are one array of numbers per peer, changed in place:
// a ring of the last `size` small probes and, after it, the full-size probe the machine keeps.
// A plain array, not a Float64Array: V8 keeps an array of only numbers as unboxed doubles in
// the heap, where a typed array of this size costs an ArrayBuffer and an off-heap backing
// store besides (measured: ~740 bytes a peer as a Float64Array, ~620 as an array).
//
// A record is three numbers: the sequence number, when it was sent and when it was answered
// (0: not, or not yet). Times are the keepalive's monotonic ms.

/** Numbers per record: seq, sentAt, answeredAt. */
const REC = 3;

/** A probe as the tests and the health code see it. */
export interface ProbeRecord {
  seq: number;
  sentAt: number;
  /** 0: not (yet) answered. */
  answeredAt: number;
}

export class ProbeWindow {
  /** Numbers only, so that V8 stores them as unboxed doubles. */
  private readonly r: number[];
  /** The ring slot the next small probe goes to: the oldest once the ring is full. */
  private next = 0;
  /** Small probes held, at most `size`. */
  private held = 0;
  private hasBig = false;
  /** The verdict of the full-size probe replaced last (answered or not), reported while the
   *  one kept now is still pending: without it the path_mtu verdict went false, then back to
   *  unknown with every new full-size probe, and a health document could miss the false
   *  every time (a flaky lab test showed it). */
  private lastBigVerdict: boolean | null = null;

  constructor(readonly size: number) {
    this.r = Array.from({ length: (size + 1) * REC }, () => 0);
  }

  /** Small probes in the window. */
  get smallCount(): number {
    return this.held;
  }

  /** Records a small probe; past `size` it replaces the oldest. */
  addSmall(seq: number, now: number): void {
    this.write(this.next * REC, seq, now);
    this.next = (this.next + 1) % this.size;
    if (this.held < this.size) this.held++;
  }

  /** The small probe `seq` not yet answered: marks it answered at `now` and returns when it
   *  was sent; -1 if there is none (late, a duplicate, or not ours). */
  answerSmall(seq: number, now: number): number {
    const r = this.r;
    for (let k = 0; k < this.held; k++) {
      const i = k * REC;
      if (r[i] === seq && r[i + 2] === 0) {
        r[i + 2] = now;
        return r[i + 1];
      }
    }
    return -1;
  }

  /** Is the kept full-size probe free to be replaced at `now` (none, or it has its verdict:
   *  answered, or older than `settleMs`)? */
  bigReplaceable(now: number, settleMs: number): boolean {
    return !this.hasBig || this.currentBigVerdict(now, settleMs) !== null;
  }

  /** Keeps `seq` as the full-size probe, replacing the previous one, whose verdict at `now`
   *  (if it had one) stands until the new one has its own. */
  setBig(seq: number, now: number, settleMs: number): void {
    const before = this.currentBigVerdict(now, settleMs);
    if (before !== null) this.lastBigVerdict = before;
    this.write(this.size * REC, seq, now);
    this.hasBig = true;
  }

  /** Is `seq` the full-size probe kept? */
  keepsBig(seq: number): boolean {
    return this.hasBig && this.r[this.size * REC] === seq;
  }

  /** Marks the kept full-size probe answered if it is `seq` and was not; true if it did. */
  answerBig(seq: number, now: number): boolean {
    const b = this.size * REC;
    if (!this.keepsBig(seq) || this.r[b + 2] !== 0) return false;
    this.r[b + 2] = now;
    return true;
  }

  /** Loss in % (one decimal) over the small probes settled at `now` (answered, or older than
   *  `settleMs`); null when none has settled. */
  lossPct(now: number, settleMs: number): number | null {
    const r = this.r;
    let settled = 0;
    let lost = 0;
    for (let k = 0; k < this.held; k++) {
      const i = k * REC;
      if (r[i + 2] > 0) settled++;
      else if (now - r[i + 1] > settleMs) {
        settled++;
        lost++;
      }
    }
    return settled ? Math.round((1000 * lost) / settled) / 10 : null;
  }

  /** The full-size probe's verdict at `now`: answered true, unanswered past `settleMs` false;
   *  while the kept one is pending, the verdict of the one before it; else null. */
  bigAnswered(now: number, settleMs: number): boolean | null {
    return this.currentBigVerdict(now, settleMs) ?? this.lastBigVerdict;
  }

  private currentBigVerdict(now: number, settleMs: number): boolean | null {
    if (!this.hasBig) return null;
    const b = this.size * REC;
    return this.r[b + 2] > 0 ? true : now - this.r[b + 1] > settleMs ? false : null;
  }

  /** The small probes, oldest first (a copy: for tests and diagnostics, not the probe path). */
  smallProbes(): ProbeRecord[] {
    const out: ProbeRecord[] = [];
    const first = this.held < this.size ? 0 : this.next;
    for (let k = 0; k < this.held; k++) out.push(this.record(((first + k) % this.size) * REC));
    return out;
  }

  /** The kept full-size probe (a copy), or null. */
  bigProbe(): ProbeRecord | null {
    return this.hasBig ? this.record(this.size * REC) : null;
  }

  private write(i: number, seq: number, now: number): void {
    this.r[i] = seq;
    this.r[i + 1] = now;
    this.r[i + 2] = 0;
  }

  private record(i: number): ProbeRecord {
    return { seq: this.r[i], sentAt: this.r[i + 1], answeredAt: this.r[i + 2] };
  }
}
