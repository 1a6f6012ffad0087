// Write-then-rename, so that readers never see a half-written file. Each write has its
// own temporary name: two writes in flight at once (a slow disk, overlapping timers)
// must not share one temp file, where one rename would fail with ENOENT or the two
// could interleave into a torn document.
import { rename, rm, writeFile } from 'node:fs/promises';

let seq = 0;

export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.${process.pid}.${++seq}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/**
 * Writes the latest value of something that changes often (status.json every 2 s and on
 * every state change): one write at a time, and while one is in flight only the newest
 * value waits; older ones are never written. Never rejects: failures go to onError.
 */
export class LatestWriter {
  private inflight: Promise<void> | null = null;
  private next: string | null = null;

  constructor(
    private readonly file: () => string,
    private readonly onError: (e: Error) => void,
    private readonly prepare: () => Promise<void> = async () => undefined,
    /** Called after each successful write. */
    private readonly onWritten: () => void = () => undefined,
  ) {}

  write(data: string): void {
    this.next = data;
    if (!this.inflight) this.inflight = this.drain();
  }

  /** Resolves once everything queued so far is on disk (or failed). */
  async flush(): Promise<void> {
    while (this.inflight) await this.inflight;
  }

  private async drain(): Promise<void> {
    while (this.next !== null) {
      const data = this.next;
      this.next = null;
      try {
        await this.prepare();
        await writeFileAtomic(this.file(), data);
        this.onWritten();
      } catch (e) {
        this.onError(e as Error);
      }
    }
    this.inflight = null;
  }
}
