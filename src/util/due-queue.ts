// Many deadlines behind one timer. Each keepalive probe of each peer used to be a Node
// timer of its own: a Timeout object, its list entry and two closures per probe, alive for
// the whole probe interval, so with 500 peers they outlived the young generation and were
// promoted, ~100 KB/s of old-generation garbage at a 2 s interval (docs/memory.md). Here
// the deadlines live in a binary min-heap of the items themselves (each carries its due
// time and heap position, so scheduling allocates nothing), and one timer of the injected
// clock is armed for the earliest.
//
// Nothing fires early. When the timer is already armed for a moment at most `coalesceMs`
// later than a new earliest deadline, it is left alone: that item fires up to `coalesceMs`
// late and the timer is not re-made for it. After a firing, the next firing is at least
// `coalesceMs` away; what fell due meanwhile fires together then. So timers are made at
// most ~1000 / coalesceMs times a second, however many items there are.
import type { Clock, Timer } from './clock.js';

/** heapIndex of an item taken out of the heap by the firing in progress. */
const FIRING = -2;

/** What DueQueue keeps in an item: its deadline and its place in the heap (-1: not queued; set it so). */
export interface DueItem {
  dueAt: number;
  heapIndex: number;
}

export class DueQueue<T extends DueItem> {
  private readonly heap: T[] = [];
  private timer: Timer | null = null;
  /** When the armed timer fires (clock.monotonic() ms); meaningful while `timer` is set. */
  private armedAt = 0;
  /** Inside fire(): the timer is armed once, after every due item was handled. */
  private firing = false;
  /** The items a firing takes out of the heap before calling onDue for each (reused). */
  private readonly firingNow: T[] = [];

  constructor(
    private readonly clock: Clock,
    /** Called for each item whose deadline came, in deadline order; it is out of the queue by then. */
    private readonly onDue: (item: T) => void,
    private readonly coalesceMs = 0,
  ) {}

  get size(): number {
    return this.heap.length;
  }

  has(item: T): boolean {
    return item.heapIndex >= 0 && this.heap[item.heapIndex] === item;
  }

  /** Sets (or moves) `item`'s deadline to `delayMs` from now. */
  schedule(item: T, delayMs: number): void {
    item.dueAt = this.clock.monotonic() + Math.max(0, delayMs);
    if (this.has(item)) {
      this.up(item.heapIndex);
      this.down(item.heapIndex);
    } else {
      item.heapIndex = this.heap.length;
      this.heap.push(item);
      this.up(item.heapIndex);
    }
    if (!this.firing) this.arm();
  }

  cancel(item: T): void {
    if (item.heapIndex === FIRING) item.heapIndex = -1; // taken out for this firing: not called now
    if (!this.has(item)) return;
    const i = item.heapIndex;
    const last = this.heap.pop()!;
    item.heapIndex = -1;
    if (last !== item) {
      this.heap[i] = last;
      last.heapIndex = i;
      this.up(i);
      this.down(last.heapIndex);
    }
    if (this.heap.length === 0 && !this.firing) this.disarm();
  }

  /** Forgets every deadline and the timer. */
  clear(): void {
    for (const item of this.heap) item.heapIndex = -1;
    for (const item of this.firingNow) item.heapIndex = -1;
    this.heap.length = 0;
    this.disarm();
  }

  private fire(): void {
    this.timer = null;
    const now = this.clock.monotonic();
    this.firing = true;
    // Only what was due when the timer fired, taken out first: an item scheduled again
    // with no delay by its own onDue waits for the next firing instead of looping here.
    // One cancelled or scheduled again by an earlier callback of this firing is skipped.
    const batch = this.firingNow;
    while (this.heap.length > 0 && this.heap[0].dueAt <= now) {
      const item = this.heap[0];
      this.cancel(item);
      item.heapIndex = FIRING;
      batch.push(item);
    }
    try {
      for (let i = 0; i < batch.length; i++) {
        const item = batch[i];
        if (item.heapIndex !== FIRING) continue;
        item.heapIndex = -1;
        this.onDue(item);
      }
    } finally {
      for (const item of batch) if (item.heapIndex === FIRING) item.heapIndex = -1;
      batch.length = 0;
      this.firing = false;
      if (this.heap.length > 0) this.armAt(Math.max(this.heap[0].dueAt, now + this.coalesceMs));
    }
  }

  private arm(): void {
    const due = this.heap[0].dueAt;
    if (this.timer !== null && this.armedAt <= due + this.coalesceMs) return;
    this.armAt(due);
  }

  private armAt(at: number): void {
    this.disarm();
    this.armedAt = at;
    this.timer = this.clock.after(at - this.clock.monotonic(), () => this.fire());
  }

  private disarm(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  private up(i: number): void {
    const h = this.heap;
    const item = h[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent].dueAt <= item.dueAt) break;
      h[i] = h[parent];
      h[i].heapIndex = i;
      i = parent;
    }
    h[i] = item;
    item.heapIndex = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const n = h.length;
    const item = h[i];
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && h[child + 1].dueAt < h[child].dueAt) child++;
      if (h[child].dueAt >= item.dueAt) break;
      h[i] = h[child];
      h[i].heapIndex = i;
      i = child;
    }
    h[i] = item;
    item.heapIndex = i;
  }
}
