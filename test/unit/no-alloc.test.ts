// "The per-packet path allocates nothing": checked, not promised. Every object made per
// packet is garbage that, with the unit's 1 MB semi-spaces, soon triggers a scavenge, and
// each scavenge promotes whatever else is alive at that moment into the old generation
// (docs/memory.md). The compiled data plane (dist/, what ships, with V8's own inlining
// rather than the test runner's transform) runs in a child process against an I/O twin
// that allocates nothing itself; see no-alloc-child.mjs for the measure.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureDist } from '../support/dist.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'no-alloc-child.mjs');
/** Packets each direction moves while measured: 8 wake-ups of 8 batches of 64. */
const PACKETS = 8 * 8 * 64;

interface Result {
  mode: 'tun' | 'tun-offload' | 'tap';
  inside: number | null;
  outside: number | null;
  control: number | null;
  sent: number;
  written: number;
  drops: { noPeer: number; spoofedSource: number };
}

let results: Result[];

beforeAll(() => {
  ensureDist(['dataplane/dataplane', 'dataplane/inside', 'dataplane/outside', 'dataplane/peers', 'dataplane/slot-index', 'proto/ipv4', 'proto/ethernet']);
  const r = spawnSync(process.execPath, ['--min-semi-space-size=16', '--max-semi-space-size=16', '--single-threaded', CHILD], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`no-alloc-child failed (${r.status ?? r.signal}): ${r.stderr}`);
  results = JSON.parse(r.stdout) as Result[];
}, 240_000);

describe('the packet paths allocate nothing per packet', () => {
  for (const mode of ['tun', 'tun-offload', 'tap'] as const) {
    it(`${mode}: site → peers and peers → site move ${PACKETS} packets each with less than 2 bytes allocated per packet`, () => {
      const r = results.find((x) => x.mode === mode)!;
      // They did move packets: 43 of each 64 have a peer, the rest has none (site → peers)
      // or a source outside its peer's subnet (peers → site); with offloads the device
      // writes join the TCP segments of one flow.
      expect(r.sent).toBe(8 * 8 * 43);
      expect(r.written).toBeGreaterThan(0);
      expect(r.drops.noPeer).toBeGreaterThan(0);
      expect(r.drops.spoofedSource).toBeGreaterThan(0);
      // What is left is a few numbers per batch (a receive's timestamp), not per packet:
      // one 16-byte number for a third of the packets would be ~22 KB.
      expect(r.inside).not.toBeNull();
      expect(r.outside).not.toBeNull();
      expect(r.inside!).toBeLessThan(2 * PACKETS);
      expect(r.outside!).toBeLessThan(2 * PACKETS);
    });
  }

  it('the measure sees one small object per packet (so the checks above can fail)', () => {
    for (const r of results) expect(r.control!).toBeGreaterThan(32 * PACKETS);
  });
});
