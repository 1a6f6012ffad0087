// SIGHUP reloads, one at a time (cli/run.ts). A SIGHUP that comes while a reload runs makes
// the file be read once more after it; systemd hears RELOADING=1 for each signal and READY=1
// once, after the last (systemd's reload ends at the first READY=1, so one sent while a
// second reload was still under way would report it done too early), and never READY=1 once
// the stop has begun (STOPPING=1 came first).
export interface ReloadsDeps {
  /** Reads the file and applies it; logs its own outcome; never rejects. */
  reloadOnce: () => Promise<void>;
  /** RELOADING=1 + MONOTONIC_USEC. */
  reloading: () => void;
  /** READY=1 + STATUS=. */
  ready: () => void;
  /** True once the clean stop has begun. */
  stopping: () => boolean;
}

export class Reloads {
  private running: Promise<void> | null = null;
  private again = false;

  constructor(private readonly d: ReloadsDeps) {}

  /** A SIGHUP. Resolves when the reloads it joined are over (for tests; the signal handler ignores it). */
  signal(): Promise<void> {
    if (this.d.stopping()) return Promise.resolve();
    this.d.reloading();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.run();
    return this.running;
  }

  private async run(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.d.reloadOnce().catch(() => undefined);
      } while (this.again && !this.d.stopping());
    } finally {
      this.running = null;
      try {
        if (!this.d.stopping()) this.d.ready();
      } catch {
        // Never a rejection out of a signal handler (an unhandled one ends the process).
      }
    }
  }
}

/**
 * From the start of `vxedge run` until the reload handler is in place: a SIGHUP then would
 * end the process (Node's default for it, as for any signal without a listener), e.g. a
 * `kill -HUP` from a script while the gateway is still starting. It is remembered instead;
 * release() removes the listener and says whether one came, so the file can be read again
 * once the gateway is up (it may have changed after start-up read it).
 */
export function holdHangups(proc: Pick<NodeJS.Process, 'on' | 'off'> = process): { came(): boolean; release(): boolean } {
  let came = false;
  const note = (): void => {
    came = true;
  };
  proc.on('SIGHUP', note);
  return {
    came: () => came,
    release(): boolean {
      proc.off('SIGHUP', note);
      return came;
    },
  };
}
