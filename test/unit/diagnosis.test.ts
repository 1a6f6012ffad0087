// The underlay diagnosis: which probes run, when (paced: a whole cluster going down at once
// must not start hundreds of probes in one turn of the event loop), and what they leave.
import { describe, expect, it } from 'vitest';
import { BURST, PACE_MS, UnderlayDiagnosis } from '../../src/control/diagnosis.js';
import type { UnderlayPingResult } from '../../src/control/underlay-probe.js';
import { ManualClock, flush } from '../support/clock.js';

function rig() {
  const clock = new ManualClock();
  const pinged: string[] = [];
  const answer = new Map<string, (r: UnderlayPingResult) => void>();
  const d = new UnderlayDiagnosis(clock, (addr) => {
    pinged.push(addr);
    return new Promise((resolve) => answer.set(addr, resolve));
  });
  return { clock, d, pinged, answer };
}

describe('underlay diagnosis', () => {
  it(`starts at most ${BURST} probes per ${PACE_MS} ms; the rest follow in order`, () => {
    const r = rig();
    const n = 2 * BURST + 10;
    for (let i = 0; i < n; i++) r.d.check(`p${i}`, `198.51.100.${i}`);
    expect(r.pinged).toHaveLength(BURST);
    expect(r.d.waiting).toBe(n - BURST);
    r.clock.advance(PACE_MS - 1);
    expect(r.pinged).toHaveLength(BURST);
    r.clock.advance(1);
    expect(r.pinged).toHaveLength(2 * BURST);
    r.clock.advance(PACE_MS);
    expect(r.pinged).toHaveLength(n);
    expect(r.d.waiting).toBe(0);
    expect(r.pinged).toEqual(Array.from({ length: n }, (_, i) => `198.51.100.${i}`));
  });

  it('a lone check after a quiet while starts at once', () => {
    const r = rig();
    for (let i = 0; i < BURST; i++) r.d.check(`p${i}`, `198.51.100.${i}`);
    r.clock.advance(PACE_MS);
    r.d.check('late', '203.0.113.7');
    expect(r.pinged.at(-1)).toBe('203.0.113.7');
  });

  it('drops a waiting check of a peer forgotten meanwhile, and runs only the newest address of one that roamed', () => {
    const r = rig();
    for (let i = 0; i < BURST; i++) r.d.check(`p${i}`, `198.51.100.${i}`);
    r.d.check('gone', '203.0.113.1');
    r.d.check('roamed', '203.0.113.2');
    r.d.check('roamed', '203.0.113.2'); // the same address again while waiting: nothing more
    r.d.forget('gone');
    r.d.check('roamed', '203.0.113.3');
    r.clock.advance(PACE_MS);
    expect(r.pinged.slice(BURST)).toEqual(['203.0.113.3']);
  });

  it('keeps each result for its address, and reports it once the probe is done', async () => {
    const r = rig();
    const done: string[] = [];
    r.d.check('a', '203.0.113.10', () => done.push('a'));
    expect(r.d.reachable('a', '203.0.113.10')).toBeNull(); // running
    r.answer.get('203.0.113.10')!({ reachable: true, rttMs: 1.5, error: null });
    await flush();
    expect(done).toEqual(['a']);
    expect(r.d.reachable('a', '203.0.113.10')).toBe(true);
    expect(r.d.reachable('a', '203.0.113.11')).toBeNull(); // a result is about an address
    // Not probed again within a minute; at once at a new address.
    r.d.check('a', '203.0.113.10');
    expect(r.pinged).toEqual(['203.0.113.10']);
    r.d.check('a', '203.0.113.11');
    expect(r.pinged).toEqual(['203.0.113.10', '203.0.113.11']);
  });
});
