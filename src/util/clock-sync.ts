// Whether network time keeps this machine's clock, as the kernel knows it (adjtimex(2),
// native/clock.c). A board without a battery-backed clock starts at a saved or built-in
// date; until chrony, ntpd or systemd-timesyncd has set it, every TLS peer can look "not
// yet valid" or "expired". Each of those daemons clears STA_UNSYNC once it disciplines the
// clock, so the kernel's answer holds whatever the daemon. A clock kept by its host (a VM's
// kvm-clock, a container) is right without any daemon and still reads unsynchronised here:
// so "unsynchronised" is a reason to doubt the clock, never a fault by itself.
import { nativeBinding, type NativeClockState } from '../native/index.js';

/** adjtimex's "clock not synchronised" return (TIME_ERROR in <sys/timex.h>). */
export const TIME_ERROR = 5;

/**
 * A date no clock that runs this code can be before: the day this was written. A floor, not
 * a promise, so it holds for every later release as it stands. A clock before it has not
 * been set at all (1970, or a build date of the OS image).
 */
export const WRITTEN_MS = Date.UTC(2026, 11, 7);

export interface ClockSync {
  /** Kept by network time: adjtimex did not return TIME_ERROR. */
  synchronised: boolean;
  /** The kernel's estimated and maximum error, ms (16 s, its cap, when nothing keeps it). */
  estErrorMs: number;
  maxErrorMs: number;
}

/** What adjtimex's answer means. */
export function clockSync(s: NativeClockState): ClockSync {
  return { synchronised: s.state !== TIME_ERROR, estErrorMs: s.estErrorUs / 1000, maxErrorMs: s.maxErrorUs / 1000 };
}

/** The kernel's answer now; an Error (with its reason) when it cannot be asked (no addon, a refused syscall). */
export function readClockSync(read: () => NativeClockState = () => nativeBinding().clockState()): ClockSync | Error {
  try {
    return clockSync(read());
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

/**
 * Whether network time keeps the clock that reads `nowMs`, for the words beside that
 * reading: false for a reading before WRITTEN_MS whatever the kernel says (never set; or a
 * preloaded libfaketime, which the kernel does not see), else the kernel's answer; null when
 * it cannot be asked.
 */
export function clockSynchronised(nowMs: number, read?: () => NativeClockState): boolean | null {
  if (nowMs < WRITTEN_MS) return false;
  const r = readClockSync(read);
  return r instanceof Error ? null : r.synchronised;
}
