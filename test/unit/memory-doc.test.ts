// health/memory.ts: the health document's memory extension, read from this very process.
import { describe, expect, it } from 'vitest';
import { memoryDoc } from '../../src/health/memory.js';

describe.skipIf(process.platform !== 'linux')('memoryDoc', () => {
  it('splits the resident set into anonymous and file pages, which add up to it; the peak is at least the resident set', () => {
    const d = memoryDoc();
    expect(d.anonMb).toBeGreaterThan(1);
    expect(d.fileMb).toBeGreaterThan(1);
    // Read a moment apart from process.memoryUsage(): within a few MB of each other.
    expect(Math.abs(d.anonMb! + d.fileMb! - d.rssMb)).toBeLessThan(4);
    expect(d.peakMb).toBeGreaterThanOrEqual(d.rssMb);
    expect(d.heapUsedMb).toBeLessThanOrEqual(d.heapTotalMb);
  });
});
