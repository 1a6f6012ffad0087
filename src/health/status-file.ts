// {runDir}/status.json: the last health document, replaced atomically so that
// `vxedge status` (and anything else) never reads half a file.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LatestWriter } from '../util/atomic-file.js';
import type { HealthDocument } from './document.js';

export function statusPath(runDir: string): string {
  return join(runDir, 'status.json');
}

/** Writes status.json, the latest document first: overlapping writes never race (LatestWriter). */
export class StatusFile {
  private readonly writer: LatestWriter;

  constructor(
    private readonly runDir: string,
    onError: (e: Error) => void,
  ) {
    this.writer = new LatestWriter(() => statusPath(runDir), onError, async () => void (await mkdir(runDir, { recursive: true })));
  }

  write(doc: HealthDocument): void {
    this.writer.write(JSON.stringify(doc, null, 2) + '\n');
  }

  /** Waits for the pending write, then removes the file (a clean stop). */
  async remove(): Promise<void> {
    await this.writer.flush();
    await removeStatus(this.runDir);
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }
}

export async function removeStatus(runDir: string): Promise<void> {
  await rm(statusPath(runDir), { force: true });
}

/** The status document of a running gateway, or null (no file, or its process is gone). */
export async function readStatus(runDir: string): Promise<HealthDocument | null> {
  let doc: HealthDocument;
  try {
    doc = JSON.parse(await readFile(statusPath(runDir), 'utf8')) as HealthDocument;
  } catch {
    return null;
  }
  if (typeof doc.pid === 'number') {
    try {
      process.kill(doc.pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return null;
    }
  }
  return doc;
}
