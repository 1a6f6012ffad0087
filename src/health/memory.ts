// The process's memory for the health document: resident set now and at its peak (VmHWM,
// what a board's budget is about), and the JS heap. /proc/self/status is one small read;
// without /proc (not Linux) the peak is left out as unknown.
import { readFileSync } from 'node:fs';

const MB = 1024 * 1024;
const round = (n: number) => Math.round(n * 10) / 10;

export interface MemoryDoc {
  rssMb: number;
  peakMb: number;
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
}

export function memoryDoc(): MemoryDoc {
  const u = process.memoryUsage();
  let peakKb = 0;
  try {
    peakKb = Number(/VmHWM:\s*(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
  } catch {
    // no /proc
  }
  return {
    rssMb: round(u.rss / MB),
    peakMb: round(Math.max(peakKb / 1024, u.rss / MB)),
    heapUsedMb: round(u.heapUsed / MB),
    heapTotalMb: round(u.heapTotal / MB),
    externalMb: round(u.external / MB),
  };
}
