// {runDir}/status.json: the last health document, replaced atomically so that
// `vxedge status` (and anything else) never reads half a file.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LatestWriter } from '../util/atomic-file.js';
import type { HealthDocument } from './document.js';
import { isPlainObject } from '../util/plain-object.js';

export function statusPath(runDir: string): string {
  return join(runDir, 'status.json');
}

/**
 * Writes status.json, the latest document first: overlapping writes never race (LatestWriter).
 * A failure is reported once, not at every document (one every 2 s would flood the journal of
 * a runDir the unit cannot write, or a full /run); again when its cause changes or after the
 * file could be written again (`onRecovered`).
 */
export class StatusFile {
  private readonly writer: LatestWriter;
  /** The cause of the failure reported last (errno code or message), null while writes work. */
  private failing: string | null = null;

  constructor(
    private readonly runDir: string,
    onError: (e: Error) => void,
    onRecovered: () => void = () => undefined,
  ) {
    this.writer = new LatestWriter(
      () => statusPath(runDir),
      (e) => {
        const cause = (e as NodeJS.ErrnoException).code ?? e.message;
        if (cause === this.failing) return;
        this.failing = cause;
        onError(e);
      },
      async () => void (await mkdir(runDir, { recursive: true })),
      () => {
        if (this.failing === null) return;
        this.failing = null;
        onRecovered();
      },
    );
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

/** A status.json that is there but cannot be read, or is not a health document. */
export class StatusFileError extends Error {
  override name = 'StatusFileError';
}

/**
 * The status document of a running gateway, or null (no file, or its process is gone).
 * Throws StatusFileError for a file that is there but unreadable (a reader without the
 * rights would otherwise be told that no gateway runs) or not a health document.
 */
export async function readStatus(runDir: string): Promise<HealthDocument | null> {
  const file = statusPath(runDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new StatusFileError(`cannot read ${file}: ${code === 'EACCES' ? 'permission denied (run it as root or as the vxedge user)' : (e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new StatusFileError(`${file} is not JSON (${(e as Error).message}); vxedge writes it whole, so something else did`);
  }
  const d = isPlainObject(doc) ? doc : {};
  if (typeof d.pid === 'number') {
    try {
      process.kill(d.pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return null;
    }
  }
  const missing = missingFields(d);
  if (missing.length) throw new StatusFileError(`${file} is not a vxedge health document (${missing.join(', ')})`);
  return d as unknown as HealthDocument;
}

/** What `vxedge status` and `manifest` read of a document, checked before they read it. */
function missingFields(d: Record<string, unknown>): string[] {
  const want: [string, (v: unknown) => boolean, string][] = [
    ['site', (v) => typeof v === 'string', 'a string'],
    ['node', (v) => typeof v === 'string', 'a string'],
    ['version', (v) => typeof v === 'string', 'a string'],
    ['state', (v) => typeof v === 'string', 'a string'],
    ['uptimeS', (v) => typeof v === 'number', 'a number'],
    ['tunnel', isPlainObject, 'an object'],
    ['peers', (v) => Array.isArray(v) && v.every((p) => typeof p === 'object' && p !== null), 'a list of peers'],
    ['checks', (v) => Array.isArray(v) && v.every((c) => typeof c === 'object' && c !== null), 'a list of checks'],
  ];
  return want.filter(([k, ok]) => !ok(d[k])).map(([k, , what]) => `${k} is not ${what}`);
}
