// Whether network time keeps this machine's clock, as the kernel knows it (adjtimex(2),
// native/clock.c). A board without a battery-backed clock starts at a saved or built-in
// date; until chrony, ntpd or systemd-timesyncd has set it, every TLS peer can look "not
// yet valid" or "expired". Each of those daemons clears STA_UNSYNC once it disciplines the
// clock, so the kernel's answer holds whatever the daemon. A clock kept by its host (a VM's
// kvm-clock, a container) is right without any daemon and still reads unsynchronised here:
// so "unsynchronised" is a reason to doubt the clock, never a fault by itself.
//
// Where the kernel cannot be asked (the systemd unit's ProtectClock=yes refuses adjtimex, even
// the read), the daemon that keeps the clock is asked instead. systemd-timesyncd leaves a mark:
// it touches TIMESYNCD_MARKER at each synchronisation (systemd 239 and later, for
// systemd-time-wait-sync), and /run is emptied at boot, so the file says "network time set this
// clock since boot". chronyd answers its command port (util/chrony.ts), which is asynchronous:
// askClockSync asks it, and its answer stands for the synchronous readers (the TLS words, the
// certificates check) until the next ask. ntpd leaves no mark and is not asked: with it and no
// adjtimex the answer stays "not known".
import { statSync } from 'node:fs';
import { nativeBinding, type NativeClockState } from '../native/index.js';
import { askChrony, type ChronyTracking } from './chrony.js';

/** adjtimex's "clock not synchronised" return (TIME_ERROR in <sys/timex.h>). */
export const TIME_ERROR = 5;

/**
 * A date no clock that runs this code can be before: the day this was written. A floor, not
 * a promise, so it holds for every later release as it stands. A clock before it has not
 * been set at all (1970, or a build date of the OS image).
 */
export const WRITTEN_MS = Date.UTC(2026, 11, 7);

/** The file systemd-timesyncd touches at each synchronisation (systemd-timesyncd.service(8)). */
export const TIMESYNCD_MARKER = '/run/systemd/timesync/synchronized';

export type ClockSync =
  | {
    source: 'kernel';
    /** Kept by network time: adjtimex did not return TIME_ERROR. */
    synchronised: boolean;
    /** The kernel's estimated and maximum error, ms (16 s, its cap, when nothing keeps it). */
    estErrorMs: number;
    maxErrorMs: number;
  }
  | {
    /** The kernel could not be asked (`kernelRefused` says why); timesyncd's mark says it set the clock. */
    source: 'timesyncd';
    synchronised: true;
    /** When it last did (the mark's mtime), ms since the epoch. */
    lastSyncMs: number;
    kernelRefused: string;
  }
  | {
    /** The kernel could not be asked (`kernelRefused` says why); chronyd said (`tracking`). */
    source: 'chrony';
    synchronised: boolean;
    tracking: ChronyTracking;
    kernelRefused: string;
  };

/** chronyd's last answer and when (monotonic ms), for the synchronous readers; see askClockSync. */
let chronyAnswer: { tracking: ChronyTracking; atMs: number } | null = null;
/** An answer older than this is chronyd's no more (it may have stopped): the gateway asks every 30 s. */
const CHRONY_ANSWER_MS = 3 * 60_000;

/** chronyd's answer of the last ask, if recent. */
export function lastChronyAnswer(nowMono = performance.now()): ChronyTracking | null {
  return chronyAnswer && nowMono - chronyAnswer.atMs < CHRONY_ANSWER_MS ? chronyAnswer.tracking : null;
}

/** What adjtimex's answer means. */
export function clockSync(s: NativeClockState): ClockSync {
  return { source: 'kernel', synchronised: s.state !== TIME_ERROR, estErrorMs: s.estErrorUs / 1000, maxErrorMs: s.maxErrorUs / 1000 };
}

/** When systemd-timesyncd last synchronised the clock since boot (its mark's mtime); null: it has not, or there is none. */
export function timesyncdLastSync(marker = TIMESYNCD_MARKER): number | null {
  try {
    return statSync(marker).mtimeMs;
  } catch {
    return null;
  }
}

/**
 * The kernel's answer now; where it cannot be asked (no addon, a refused syscall), timesyncd's
 * mark if there is one, else chronyd's last answer (askClockSync) if recent, else an Error
 * with the kernel's reason.
 */
export function readClockSync(
  read: () => NativeClockState = () => nativeBinding().clockState(),
  lastSync: () => number | null = timesyncdLastSync,
  chrony: () => ChronyTracking | null = lastChronyAnswer,
): ClockSync | Error {
  try {
    return clockSync(read());
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    const lastSyncMs = lastSync();
    if (lastSyncMs !== null) return { source: 'timesyncd', synchronised: true, lastSyncMs, kernelRefused: err.message };
    const tracking = chrony();
    return tracking ? { source: 'chrony', synchronised: tracking.synchronised, tracking, kernelRefused: err.message } : err;
  }
}

/**
 * readClockSync, asking chronyd first where the kernel cannot be asked and timesyncd left no
 * mark; its answer then stands for readClockSync too. The Error, when nothing says, names
 * both: the kernel's refusal and why chronyd did not answer.
 */
export async function askClockSync(
  read: () => NativeClockState = () => nativeBinding().clockState(),
  lastSync: () => number | null = timesyncdLastSync,
  ask: () => Promise<ChronyTracking> = askChrony,
  nowMono: () => number = () => performance.now(),
): Promise<ClockSync | Error> {
  const r = readClockSync(read, lastSync, () => null);
  if (!(r instanceof Error)) return r;
  try {
    const tracking = await ask();
    chronyAnswer = { tracking, atMs: nowMono() };
    return { source: 'chrony', synchronised: tracking.synchronised, tracking, kernelRefused: r.message };
  } catch (e) {
    chronyAnswer = null;
    return new Error(`${r.message}; ${(e as Error).message}`);
  }
}

/**
 * Whether network time keeps the clock that reads `nowMs`, for the words beside that
 * reading: false for a reading before WRITTEN_MS whatever the kernel says (never set; or a
 * preloaded libfaketime, which the kernel does not see), else the kernel's answer (or
 * timesyncd's mark where the kernel cannot be asked); null when neither says.
 */
export function clockSynchronised(nowMs: number, read?: () => NativeClockState, lastSync?: () => number | null): boolean | null {
  if (nowMs < WRITTEN_MS) return false;
  const r = readClockSync(read, lastSync);
  return r instanceof Error ? null : r.synchronised;
}
