// The optional status LED (config board.led): the gateway state at a glance on the box.
//
//   ok        steady on     trigger "none", brightness = max_brightness
//   degraded  blinking      trigger "timer" (the kernel blinks it; 500/500 ms unless
//                           delay_on/delay_off can be written, see below)
//   down      off           trigger "none", brightness 0
//   stopped   off
//
// The LED class interface (Documentation/ABI/testing/sysfs-class-led): writing a trigger
// name to `trigger` selects it ("none" stops the current one, e.g. the Pi's ACT default
// "mmc0"); `brightness` 0 switches the LED off (and clears any trigger). On a Raspberry Pi
// the LED is /sys/class/leds/ACT (kernels before 6.1: led0). Those files are root's 0644:
// board/99-vxedge-leds.rules gives the vxedge group write access to `trigger` and
// `brightness`. The `timer` trigger creates delay_on/delay_off only when selected, after
// udev has run, so they stay root's: we try them and fall back to the kernel's default
// blink when refused.
//
// Never throws: an LED is a convenience, a write that fails is logged once.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { GatewayState } from './document.js';
import type { Logger } from '../util/log.js';

export type LedMode = 'on' | 'blink' | 'off';

export const SYSFS_LEDS = '/sys/class/leds';

export function ledModeFor(state: GatewayState): LedMode {
  return state === 'ok' ? 'on' : state === 'degraded' ? 'blink' : 'off';
}

export interface StatusLedOptions {
  /** Where LED directories live (tests use a temporary tree); default /sys/class/leds. */
  sysfsRoot?: string;
  /** Blink timing when degraded (ms). */
  blinkOnMs?: number;
  blinkOffMs?: number;
  log?: Logger;
}

export class StatusLed {
  /** The LED's sysfs directory. */
  readonly dir: string;
  private mode: LedMode | null = null;
  private failed = false;

  /** `led`: a name under the sysfs root ("ACT", "led0") or an absolute LED directory. */
  constructor(
    led: string,
    private readonly o: StatusLedOptions = {},
  ) {
    this.dir = path.isAbsolute(led) ? led : path.join(o.sysfsRoot ?? SYSFS_LEDS, led);
  }

  /** The mode last set successfully (null before the first). */
  get current(): LedMode | null {
    return this.mode;
  }

  /** Shows the gateway state; writes only when the mode changes. */
  show(state: GatewayState): void {
    this.set(ledModeFor(state));
  }

  set(mode: LedMode): void {
    if (mode === this.mode) return;
    try {
      if (mode === 'blink') {
        this.write('trigger', 'timer');
        // Optional: refused when udev could not open them up (see above).
        this.tryWrite('delay_on', String(this.o.blinkOnMs ?? 500));
        this.tryWrite('delay_off', String(this.o.blinkOffMs ?? 500));
      } else {
        this.write('trigger', 'none');
        this.write('brightness', mode === 'on' ? String(this.maxBrightness()) : '0');
      }
      this.mode = mode;
      if (this.failed) this.o.log?.info('status LED works again', { led: this.dir, mode });
      this.failed = false;
    } catch (e) {
      this.mode = null; // unknown: try again on the next update
      if (!this.failed) {
        const code = (e as NodeJS.ErrnoException).code;
        const fix =
          code === 'EACCES' || code === 'EPERM'
            ? 'install board/99-vxedge-leds.rules (scripts/install does) so the vxedge group may write the LED'
            : code === 'ENOENT'
              ? `no LED ${this.dir}: see ls ${SYSFS_LEDS} (Raspberry Pi: ACT, older kernels led0)`
              : undefined;
        this.o.log?.warn('cannot set the status LED', { led: this.dir, mode, err: (e as Error).message, ...(fix ? { fix } : {}) });
      }
      this.failed = true;
    }
  }

  /** Switches the LED off (the gateway stops). */
  off(): void {
    this.set('off');
  }

  private maxBrightness(): number {
    try {
      const n = Number(readFileSync(path.join(this.dir, 'max_brightness'), 'utf8').trim());
      return Number.isInteger(n) && n > 0 ? n : 1;
    } catch {
      return 1;
    }
  }

  private write(file: string, value: string): void {
    const p = path.join(this.dir, file);
    statSync(p); // ENOENT rather than a new file: a wrong LED name must not litter a test tree
    writeFileSync(p, value);
  }

  private tryWrite(file: string, value: string): void {
    try {
      this.write(file, value);
    } catch {
      /* the kernel's default blink rate then */
    }
  }
}
