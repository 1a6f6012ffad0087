// chronyd's tracking over its command port (util/chrony.ts): the request's bytes, replies
// captured from Debian's chronyd 4.3 (test/lab/chrony.test.ts asks a running one), any
// datagram parsed without a throw, and how askClockSync (util/clock-sync.ts) takes chronyd's
// word where the kernel will not say.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { chronyFloat, LEAP_UNSYNCHRONISED, parseTrackingReply, trackingRequest, TRACKING_REPLY_LENGTH } from '../../src/util/chrony.js';
import { askClockSync, lastChronyAnswer, readClockSync } from '../../src/util/clock-sync.js';
import { checkClock } from '../../src/health/checks.js';

const SEQ = 0x01020304;
/** `chronyc tracking`'s reply to sequence SEQ from chronyd 4.3 in a namespace, no source reachable yet. */
const UNSYNCHRONISED = Buffer.from(
  '0602000000210005000000000000000001020304000000000000000000000000000000000000000000000000000000000000000000000003000000000000000000000000000000000000000000000000000000000000000000000000048000000480000000000000',
  'hex',
);
/** The same a few seconds after a second chronyd (`local stratum 8`, 127.0.0.1:11123) came up. */
const SYNCHRONISED = Buffer.from(
  '060200000021000500000000000000000102030400000000000000007f0000017f0000010000000000000000000000000001000000090000000000006b16f8380073ad33dd6eb46fcb22aa0bd2a7b418fb64d833f1646ce3008dc825e0a801cdda886a83fc821d0c',
  'hex',
);

describe('chronyd tracking: the request and the reply', () => {
  it('the request is protocol 6, a command request for tracking (33) with its sequence, zero-padded to the reply\'s 104 bytes', () => {
    const r = trackingRequest(SEQ);
    expect(r.length).toBe(TRACKING_REPLY_LENGTH);
    expect(r.subarray(0, 20).toString('hex')).toBe('0601000000210000' + '01020304' + '0000000000000000');
    expect(r.subarray(20).every((x) => x === 0)).toBe(true);
  });

  it('reads a synchronised chronyd: stratum, reference, last update and offset', () => {
    const r = parseTrackingReply(SYNCHRONISED, SEQ);
    expect(r).toEqual({ tracking: expect.objectContaining({ synchronised: true, stratum: 9, reference: '127.0.0.1', leap: 0 }) });
    const t = (r as { tracking: { refTimeMs: number; offsetS: number } }).tracking;
    expect(new Date(t.refTimeMs).toISOString()).toBe('2026-12-07T18:17:28.007Z');
    // chronyc said "System time : 0.000001... seconds fast of NTP time" for such replies.
    expect(t.offsetS).toBeGreaterThan(0);
    expect(t.offsetS).toBeLessThan(1e-4);
  });

  it('reads an unsynchronised one: leap status 3, no reference, never updated', () => {
    expect(parseTrackingReply(UNSYNCHRONISED, SEQ)).toEqual({
      tracking: { synchronised: false, stratum: 0, reference: '00000000', refTimeMs: null, offsetS: 0, leap: LEAP_UNSYNCHRONISED },
    });
  });

  it('ignores what is no reply to this request, and says what chronyd refused', () => {
    expect(parseTrackingReply(SYNCHRONISED, SEQ + 1)).toBeNull();
    expect(parseTrackingReply(SYNCHRONISED.subarray(0, 27), SEQ)).toBeNull();
    expect(parseTrackingReply(trackingRequest(SEQ), SEQ)).toBeNull();
    const unauth = Buffer.from(SYNCHRONISED);
    unauth.writeUInt16BE(2, 8);
    expect(parseTrackingReply(unauth, SEQ)).toEqual({ refused: 'chronyd refused the request: not allowed from here (chrony.conf cmdallow/cmddeny)' });
    const version = Buffer.from(SYNCHRONISED.subarray(0, 28));
    version[0] = 5;
    expect(parseTrackingReply(version, SEQ)).toEqual({ refused: 'chronyd speaks protocol version 5, not 6' });
    expect(parseTrackingReply(SYNCHRONISED.subarray(0, 60), SEQ)).toEqual({ refused: 'chronyd answered with another reply than tracking' });
  });

  it("decodes chrony's float: a signed 7-bit exponent over a signed 25-bit coefficient", () => {
    const enc = (coef: number, exp: number) => (((exp & 0x7f) << 25) | (coef & 0x1ffffff)) >>> 0;
    expect(chronyFloat(enc(1, 25))).toBe(1);
    expect(chronyFloat(enc(3, 24))).toBe(1.5);
    expect(chronyFloat(enc(-1, 25))).toBe(-1);
    expect(chronyFloat(enc(1, -1))).toBe(2 ** -26);
    expect(chronyFloat(0)).toBe(0);
  });

  it('takes any datagram without a throw (fast-check)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, asReply) => {
        const b = Buffer.from(bytes);
        // Half the time a header that passes the first tests, so the fields after it are reached.
        if (asReply && b.length >= 28) {
          b[1] = 2;
          b.writeUInt16BE(33, 4);
          b.writeUInt32BE(SEQ, 16);
        }
        const r = parseTrackingReply(b, SEQ);
        if (r && 'tracking' in r) {
          expect(Number.isFinite(r.tracking.offsetS)).toBe(true);
          expect(typeof r.tracking.reference).toBe('string');
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('askClockSync: chronyd where the kernel will not say', () => {
  const refused = () => {
    throw new Error('adjtimex: operation not permitted (EPERM)');
  };
  const noMark = () => null;
  const kept = { state: 0, status: 0x2001, maxErrorUs: 1000, estErrorUs: 100 };
  const synced = (parseTrackingReply(SYNCHRONISED, SEQ) as { tracking: import('../../src/util/chrony.js').ChronyTracking }).tracking;

  it('asks chronyd, and its answer stands for the synchronous readers (the TLS words) until the next ask', async () => {
    let mono = 1_000;
    const r = await askClockSync(refused, noMark, async () => synced, () => mono);
    expect(r).toEqual({ source: 'chrony', synchronised: true, tracking: synced, kernelRefused: 'adjtimex: operation not permitted (EPERM)' });
    expect(readClockSync(refused, noMark, () => lastChronyAnswer(mono + 60_000))).toEqual(r);
    // Three minutes on, with no ask since, chronyd's word is no longer taken.
    expect(lastChronyAnswer(mono + 3 * 60_000)).toBeNull();
    mono += 10;
    const gone = await askClockSync(refused, noMark, async () => Promise.reject(new Error('chronyd: not running (nothing answers on 127.0.0.1:323)')), () => mono);
    expect(gone).toEqual(new Error('adjtimex: operation not permitted (EPERM); chronyd: not running (nothing answers on 127.0.0.1:323)'));
    expect(lastChronyAnswer(mono)).toBeNull();
  });

  it('asks no daemon where the kernel answers or timesyncd left its mark', async () => {
    let asked = 0;
    const ask = async () => (asked++, synced);
    expect(await askClockSync(() => kept, noMark, ask)).toEqual(expect.objectContaining({ source: 'kernel', synchronised: true }));
    expect(await askClockSync(refused, () => Date.UTC(2026, 11, 7), ask)).toEqual(expect.objectContaining({ source: 'timesyncd' }));
    expect(asked).toBe(0);
  });

  it('the clock line says what chronyd said', () => {
    const now = Date.UTC(2026, 11, 7, 18, 20);
    const line = checkClock(now, { source: 'chrony', synchronised: true, tracking: { ...synced, offsetS: -0.0123 }, kernelRefused: 'adjtimex: EPERM' }, []);
    expect(line).toEqual({
      name: 'clock', ok: true,
      detail: "this machine's clock says 2026-12-07 18:20 UTC, kept by network time (chronyd: stratum 9 from 127.0.0.1, last updated 2026-12-07 18:17 UTC, 12 ms slow; the kernel would not say: adjtimex: EPERM)",
    });
    const unsynced = (parseTrackingReply(UNSYNCHRONISED, SEQ) as { tracking: typeof synced }).tracking;
    expect(checkClock(now, { source: 'chrony', synchronised: false, tracking: unsynced, kernelRefused: 'adjtimex: EPERM' }, ['the broker']).detail).toBe(
      "this machine's clock says 2026-12-07 18:20 UTC and network time does not keep it: chronyd runs but is not synchronised (no source it trusts; `chronyc sources` says why); " +
        'if it is off, TLS to the broker fails on certificate dates (the kernel would not say: adjtimex: EPERM)',
    );
  });
});
