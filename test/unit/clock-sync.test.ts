// Whether network time keeps the clock (src/util/clock-sync.ts) and the `clock` line of
// `vxedge check` (checkClock in src/health/checks.ts): the kernel's answer is injected here;
// test/native/addon.test.ts reads the real one against libc's.
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkClock } from '../../src/health/checks.js';
import { tlsPeers } from '../../src/cli/check.js';
import { clockSync, clockSynchronised, readClockSync, TIME_ERROR, timesyncdLastSync, TIMESYNCD_MARKER, WRITTEN_MS } from '../../src/util/clock-sync.js';
import { NETWORK_TIME_FIX } from '../../src/util/tls-failure.js';

const NOW = Date.UTC(2026, 11, 8, 9, 30);
const KEPT = { state: 0, status: 0x2001, maxErrorUs: 412_000, estErrorUs: 1_250 }; // TIME_OK, STA_PLL | STA_NANO
const UNKEPT = { state: TIME_ERROR, status: 0x40, maxErrorUs: 16_000_000, estErrorUs: 16_000_000 }; // STA_UNSYNC

describe('clock sync as the kernel says it', () => {
  it("kept unless adjtimex says TIME_ERROR; the errors in ms", () => {
    expect(clockSync(KEPT)).toEqual({ source: 'kernel', synchronised: true, estErrorMs: 1.25, maxErrorMs: 412 });
    expect(clockSync(UNKEPT)).toEqual({ source: 'kernel', synchronised: false, estErrorMs: 16_000, maxErrorMs: 16_000 });
    // TIME_INS .. TIME_WAIT (a leap second pending or just past) are a kept clock too.
    for (const state of [1, 2, 3, 4]) expect(clockSync({ ...KEPT, state }).synchronised).toBe(true);
  });

  const refused = () => {
    throw Object.assign(new Error('adjtimex: Operation not permitted'), { code: 'EPERM' });
  };
  const noMark = () => null;

  it('a kernel that cannot be asked, and no mark of systemd-timesyncd: an Error to show, and "not known" beside a reading', () => {
    expect(readClockSync(refused, noMark)).toEqual(expect.objectContaining({ message: 'adjtimex: Operation not permitted' }));
    expect(clockSynchronised(NOW, refused, noMark)).toBeNull();
    expect(clockSynchronised(NOW, () => KEPT, noMark)).toBe(true);
    expect(clockSynchronised(NOW, () => UNKEPT, noMark)).toBe(false);
  });

  it("where the kernel cannot be asked (the unit's ProtectClock=yes), systemd-timesyncd's mark says network time set the clock", () => {
    const at = Date.UTC(2026, 11, 8, 9, 12, 30);
    expect(readClockSync(refused, () => at)).toEqual({ source: 'timesyncd', synchronised: true, lastSyncMs: at, kernelRefused: 'adjtimex: Operation not permitted' });
    expect(clockSynchronised(NOW, refused, () => at)).toBe(true);
    // The kernel's word wins where it is given: a timesyncd that lost its servers long ago
    // left its mark, and the kernel has since called the clock unsynchronised.
    let marked = 0;
    expect(clockSynchronised(NOW, () => UNKEPT, () => (marked++, at))).toBe(false);
    expect(marked).toBe(0);
    // A reading before this code was written is never kept, mark or not.
    expect(clockSynchronised(WRITTEN_MS - 1, refused, () => at)).toBe(false);
  });

  it("the mark is the file systemd-timesyncd touches at each synchronisation; its mtime is when", () => {
    expect(TIMESYNCD_MARKER).toBe('/run/systemd/timesync/synchronized');
    const dir = mkdtempSync(join(tmpdir(), 'vxedge-timesync-'));
    try {
      const mark = join(dir, 'synchronized');
      expect(timesyncdLastSync(mark)).toBeNull();
      writeFileSync(mark, '');
      utimesSync(mark, new Date(Date.UTC(2026, 11, 8, 9, 12, 30)), new Date(Date.UTC(2026, 11, 8, 9, 12, 30)));
      expect(timesyncdLastSync(mark)).toBe(Date.UTC(2026, 11, 8, 9, 12, 30));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a reading before this code was written is not kept, whatever the kernel says (never set; a libfaketime the kernel does not see)', () => {
    let asked = 0;
    expect(clockSynchronised(WRITTEN_MS - 1, () => (asked++, KEPT))).toBe(false);
    expect(asked).toBe(0);
    expect(clockSynchronised(WRITTEN_MS, () => KEPT)).toBe(true);
  });
});

describe('`vxedge check`: the clock line', () => {
  it('a kept clock passes with its reading and the estimated error', () => {
    expect(checkClock(NOW, clockSync(KEPT), ['the broker'])).toEqual({
      name: 'clock', ok: true, detail: "this machine's clock says 2026-12-08 09:30 UTC, kept by network time (estimated error 1.3 ms)",
    });
    expect(checkClock(NOW, clockSync({ ...KEPT, estErrorUs: 40 }), []).detail).toMatch(/\(estimated error 40 µs\)$/);
    expect(checkClock(NOW, clockSync({ ...KEPT, estErrorUs: 2_500_000 }), []).detail).toMatch(/\(estimated error 2\.5 s\)$/);
  });

  it('a clock nothing keeps passes, saying so and what a wrong one would break (its host may keep it: a VM, a container)', () => {
    expect(checkClock(NOW, clockSync(UNKEPT), ['the broker', 'etcd'])).toEqual({
      name: 'clock', ok: true,
      detail: "this machine's clock says 2026-12-08 09:30 UTC and network time does not keep it: right only if something else sets it " +
        "(a VM's host, a battery-backed clock); if it is off, TLS to the broker, etcd fails on certificate dates",
    });
    expect(checkClock(NOW, clockSync(UNKEPT), []).detail).toMatch(/battery-backed clock\)$/);
  });

  it('a clock before this code was written fails: it was never set, and every certificate looks not yet valid', () => {
    const r = checkClock(Date.UTC(1970, 0, 1, 0, 3), clockSync(UNKEPT), ['the API server']);
    expect(r).toEqual({
      name: 'clock', ok: false,
      detail: "this machine's clock says 1970-01-01 00:03 UTC, before this vxedge was written (2026-12-07): it has not been set, and every certificate of the API server looks not yet valid; the times it publishes and logs are wrong too",
      fix: NETWORK_TIME_FIX,
    });
    // Whatever the kernel says (a libfaketime it does not see): the reading alone decides.
    expect(checkClock(WRITTEN_MS - 60_000, clockSync(KEPT), [])).toMatchObject({ ok: false, detail: expect.stringMatching(/: it has not been set; the times it publishes and logs are wrong too$/) });
    expect(checkClock(WRITTEN_MS, clockSync(KEPT), []).ok).toBe(true);
  });

  it("a kernel that cannot be asked, but systemd-timesyncd's mark: kept, since when, and why the kernel was not asked", () => {
    const r = readClockSync(() => {
      throw new Error('adjtimex: Operation not permitted');
    }, () => Date.UTC(2026, 11, 8, 9, 12, 30));
    expect(checkClock(NOW, r, ['the broker'])).toEqual({
      name: 'clock', ok: true,
      detail: "this machine's clock says 2026-12-08 09:30 UTC, kept by network time (systemd-timesyncd last synchronised it at 2026-12-08 09:12 UTC; " +
        'the kernel would not say: adjtimex: Operation not permitted)',
    });
  });

  it('a kernel that cannot be asked: the reading, and that its sync is not known', () => {
    expect(checkClock(NOW, new Error('adjtimex: Function not implemented'), [])).toEqual({
      name: 'clock', ok: true, detail: "this machine's clock says 2026-12-08 09:30 UTC; whether network time keeps it is not known (adjtimex: Function not implemented)",
    });
  });

  it('the TLS peers a wrong clock breaks, from the config', () => {
    const cfg = (url: string | null, source: string, endpoints: string[] = []) => ({ mqtt: { url }, cluster: { source, etcd: { endpoints } } }) as any;
    expect(tlsPeers(cfg('mqtts://b:8883', 'kubernetes'))).toEqual(['the broker', 'the API server']);
    expect(tlsPeers(cfg('wss://b/mqtt', 'static'))).toEqual(['the broker']);
    expect(tlsPeers(cfg('mqtt://b', 'etcd', ['http://10.0.0.1:2379', 'https://10.0.0.2:2379']))).toEqual(['etcd']);
    expect(tlsPeers(cfg(null, 'etcd', ['http://10.0.0.1:2379']))).toEqual([]);
  });
});
