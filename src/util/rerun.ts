// One async job (the gateway's check refresh) run on request: never two at once, requests
// that arrive together served by one run, and a run at most every `gapMs`. A request made
// while a run is on gets a run after it: the run may have read the state before the change
// that asked for it.
import type { Clock, Timer } from './clock.js';

export interface RerunOptions {
  /** Wait after a request before running, so that a burst of requests is one run. */
  settleMs: number;
  /** Least time from one run's start to the next's (requested ones; `now` does not wait). */
  gapMs: number;
  /** A run that threw; the runner goes on. */
  failed: (e: Error) => void;
}

export class Rerun {
  private running: Promise<void> | null = null;
  private timer: Timer | null = null;
  private requested = false;
  private lastStart = -Infinity;
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly job: () => Promise<void>,
    private readonly o: RerunOptions,
  ) {}

  /** Runs the job soon: after `settleMs`, and no sooner than `gapMs` after the last start. */
  request(): void {
    if (this.stopped) return;
    this.requested = true;
    this.schedule();
  }

  /** Runs the job once the run in progress (if any) has ended; resolves when this run ends. */
  async now(): Promise<void> {
    while (this.running) await this.running;
    if (this.stopped) return;
    this.timer?.cancel();
    this.timer = null;
    await this.run();
  }

  /** No more runs; resolves once a run in progress has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    while (this.running) await this.running;
  }

  private schedule(): void {
    if (this.running || this.timer || this.stopped) return;
    const wait = Math.max(this.o.settleMs, this.lastStart + this.o.gapMs - this.clock.monotonic());
    this.timer = this.clock.after(wait, () => {
      this.timer = null;
      void this.run();
    });
  }

  private run(): Promise<void> {
    this.requested = false;
    this.lastStart = this.clock.monotonic();
    this.running = this.job()
      .catch((e: unknown) => this.o.failed(e instanceof Error ? e : new Error(String(e))))
      .finally(() => {
        this.running = null;
        if (this.requested) this.schedule();
      });
    return this.running;
  }
}
