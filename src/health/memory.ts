// The process's memory for the health document: resident set now and at its peak (VmHWM,
// what a board's budget is about), and the JS heap. /proc/self/status is one small read;
// without /proc (not Linux) the peak is left out as unknown.
import { readFileSync } from 'node:fs';

const MB = 1024 * 1024;
const round = (n: number) => Math.round(n * 10) / 10;

export interface MemoryDoc {
  rssMb: number;
  peakMb: number;
  /** Of rssMb: anonymous memory (heaps, buffers, written pages) and pages of mapped files
   *  (Node's binary, libraries; clean page cache the kernel can take back). Linux only. */
  anonMb?: number;
  fileMb?: number;
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
}

const VM_HWM = /^VmHWM:\s*(\d+) kB/m;
const RSS_ANON = /^RssAnon:\s*(\d+) kB/m;
const RSS_FILE = /^RssFile:\s*(\d+) kB/m;

/** The kB of a "Name:   123 kB" line of /proc/self/status, or null. */
function kb(status: string, line: RegExp): number | null {
  const m = line.exec(status);
  return m ? Number(m[1]) : null;
}

export function memoryDoc(): MemoryDoc {
  const u = process.memoryUsage();
  let status = '';
  try {
    status = readFileSync('/proc/self/status', 'utf8');
  } catch {
    // no /proc
  }
  const peakKb = kb(status, VM_HWM) ?? 0;
  const anonKb = kb(status, RSS_ANON);
  const fileKb = kb(status, RSS_FILE);
  return {
    rssMb: round(u.rss / MB),
    peakMb: round(Math.max(peakKb / 1024, u.rss / MB)),
    ...(anonKb !== null && fileKb !== null ? { anonMb: round(anonKb / 1024), fileMb: round(fileKb / 1024) } : {}),
    heapUsedMb: round(u.heapUsed / MB),
    heapTotalMb: round(u.heapTotal / MB),
    externalMb: round(u.external / MB),
  };
}
