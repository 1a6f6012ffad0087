// board/: the per-board profiles, their example configs (valid against the schema), the
// sysctl/modules/udev drop-ins, and the status LED (src/health/led.ts) on a fake sysfs tree.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, parseConfigText } from '../../src/config/index.js';
import { ConfigError } from '../../src/config/types.js';
import { StatusLed, ledModeFor } from '../../src/health/led.js';
import type { Logger } from '../../src/util/log.js';

const BOARD = path.join(import.meta.dirname, '..', '..', 'board');
const PROFILES = ['rpi4', 'rpi5', 'cm4', 'rpi-armv7'];

function profileConf(name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path.join(BOARD, name, 'profile.conf'), 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(?:"([^"]*)"|(\S*))$/.exec(line.trim());
    if (m) out[m[1]] = m[2] ?? m[3];
  }
  return out;
}

describe('board profiles', () => {
  it('has exactly the four profiles, each with profile.conf and site.yaml', () => {
    const dirs = readdirSync(BOARD, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(path.join(BOARD, d.name, 'profile.conf')))
      .map((d) => d.name);
    expect(dirs.sort()).toEqual([...PROFILES].sort());
  });

  for (const name of PROFILES) {
    it(`${name}: its example site.yaml is a valid config that uses the profile's LED`, () => {
      const p = profileConf(name);
      expect(p.ARCH).toMatch(/^(arm64|armhf)$/);
      expect(p.DESCRIPTION).toBeTruthy();
      expect(() => new RegExp(p.MODEL_MATCH)).not.toThrow();
      const cfg = loadConfig(path.join(BOARD, name, 'site.yaml'), {});
      expect(cfg.board.led).toBe(p.LED);
      expect(cfg.peers).toHaveLength(2);
      expect(cfg.underlay.iface).toBe('eth0');
    });
  }

  it('the profile-less skeleton is valid too and drives no LED', () => {
    const cfg = loadConfig(path.join(BOARD, 'common', 'site.yaml'), {});
    expect(cfg.board.led).toBeNull();
    expect(cfg.underlay.iface).toBeNull();
  });

  it('detects the right profile from the device-tree model and the architecture', () => {
    const detect = (arch: string, model: string) =>
      PROFILES.filter((n) => profileConf(n).ARCH === arch && new RegExp(profileConf(n).MODEL_MATCH).test(model));
    expect(detect('arm64', 'Raspberry Pi 4 Model B Rev 1.5')).toEqual(['rpi4']);
    expect(detect('arm64', 'Raspberry Pi 5 Model B Rev 1.0')).toEqual(['rpi5']);
    expect(detect('arm64', 'Raspberry Pi Compute Module 4 Rev 1.1')).toEqual(['cm4']);
    expect(detect('armhf', 'Raspberry Pi 3 Model B Plus Rev 1.3')).toEqual(['rpi-armv7']);
    expect(detect('amd64', 'QEMU Standard PC')).toEqual([]);
  });
});

describe('board/common drop-ins', () => {
  const etc = path.join(BOARD, 'common', 'etc');

  it('loads tun at boot', () => {
    const lines = readFileSync(path.join(etc, 'modules-load.d', 'vxedge.conf'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines).toEqual(['tun']);
  });

  it('forwards IPv4 with loose reverse-path filtering, using knobs this kernel has', () => {
    const settings = readFileSync(path.join(etc, 'sysctl.d', '90-vxedge.conf'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => l.split('=').map((x) => x.trim()));
    expect(Object.fromEntries(settings)).toEqual({
      'net.ipv4.ip_forward': '1',
      'net.ipv4.conf.all.rp_filter': '2',
      'net.ipv4.conf.default.rp_filter': '2',
    });
    for (const [key] of settings) expect(existsSync(`/proc/sys/${key.replace(/\./g, '/')}`), key).toBe(true);
  });

  it('opens the LED files to the vxedge group with a well-formed udev rule', () => {
    const rules = readFileSync(path.join(etc, 'udev', 'rules.d', '99-vxedge-leds.rules'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'));
    expect(rules).toHaveLength(1);
    const pairs = rules[0].split(/,\s*(?=[A-Z])/).map((p) => /^([A-Z]+)(==|\+=)"([^"]*)"$/.exec(p.trim()));
    expect(pairs.every((m) => m !== null), rules[0]).toBe(true);
    const keys = pairs.map((m) => `${m![1]}${m![2]}${m![3]}`);
    expect(keys).toContain('SUBSYSTEM==leds');
    expect(keys.find((k) => k.startsWith('KERNEL=='))).toMatch(/ACT/);
    expect(keys.find((k) => k.startsWith('KERNEL=='))).toMatch(/led0/);
    expect(keys).toContain('RUN+=/bin/chgrp vxedge /sys%p/trigger /sys%p/brightness');
    expect(keys).toContain('RUN+=/bin/chmod g+w /sys%p/trigger /sys%p/brightness');
  });
});

describe('config board.led', () => {
  const base = 'site: lab\nnode: edge-1\noverlay:\n  subnet: 10.244.100.0/24\n';
  const parse = (extra: string, env: NodeJS.ProcessEnv = {}) => parseConfigText(base + extra, 'x.yaml', 'yaml', env);

  it('defaults to null and takes a name, a directory, or the environment', () => {
    expect(parse('').board.led).toBeNull();
    expect(parse('board:\n  led: ACT\n').board.led).toBe('ACT');
    expect(parse('board:\n  led: /sys/class/leds/led0\n').board.led).toBe('/sys/class/leds/led0');
    expect(parse('', { VXEDGE_BOARD_LED: 'led0' }).board.led).toBe('led0');
    expect(parse('board:\n  led: ACT\n', { VXEDGE_BOARD_LED: '' }).board.led).toBeNull();
  });

  it('names a bad LED in the error block', () => {
    for (const bad of ['../../etc', 'a b', '7', 'true']) {
      let err: unknown;
      try {
        parse(`board:\n  led: ${bad}\n`);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems.map((p) => p.key)).toEqual(['board.led']);
    }
    expect(() => parse('board:\n  lde: ACT\n')).toThrow(/board\.lde: unknown key; did you mean "board\.led"\?/);
  });
});

// ------------------------------------------------------------------------------------------
// The LED on a fake /sys/class/leds.

function fakeLed(root: string, name: string, o: { maxBrightness?: number; timerFiles?: boolean } = {}): string {
  const dir = path.join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'trigger'), 'none [mmc0] timer heartbeat default-on');
  writeFileSync(path.join(dir, 'brightness'), '0');
  writeFileSync(path.join(dir, 'max_brightness'), String(o.maxBrightness ?? 1));
  if (o.timerFiles) {
    writeFileSync(path.join(dir, 'delay_on'), '500');
    writeFileSync(path.join(dir, 'delay_off'), '500');
  }
  return dir;
}

const read = (dir: string, f: string) => readFileSync(path.join(dir, f), 'utf8');

describe('status LED', () => {
  let root = '';
  afterEach(() => {
    if (root) rmSync(root, { recursive: true, force: true });
    root = '';
  });
  const newRoot = () => (root = mkdtempSync(path.join(tmpdir(), 'vxedge-leds-')));

  it('maps ok/degraded/down to on/blink/off', () => {
    expect([ledModeFor('ok'), ledModeFor('degraded'), ledModeFor('down')]).toEqual(['on', 'blink', 'off']);
  });

  it('steady on when ok, timer blink when degraded, off when down', () => {
    const dir = fakeLed(newRoot(), 'ACT', { maxBrightness: 255, timerFiles: true });
    const led = new StatusLed('ACT', { sysfsRoot: root, blinkOnMs: 250, blinkOffMs: 750 });
    expect(led.dir).toBe(dir);
    led.show('ok');
    expect([read(dir, 'trigger'), read(dir, 'brightness')]).toEqual(['none', '255']);
    led.show('degraded');
    expect([read(dir, 'trigger'), read(dir, 'delay_on'), read(dir, 'delay_off')]).toEqual(['timer', '250', '750']);
    led.show('down');
    expect([read(dir, 'trigger'), read(dir, 'brightness')]).toEqual(['none', '0']);
    expect(led.current).toBe('off');
  });

  it('writes only on a change of mode', () => {
    const dir = fakeLed(newRoot(), 'led0');
    const led = new StatusLed('led0', { sysfsRoot: root });
    led.show('ok');
    writeFileSync(path.join(dir, 'brightness'), 'untouched');
    led.show('ok');
    expect(read(dir, 'brightness')).toBe('untouched');
    led.off();
    expect(read(dir, 'brightness')).toBe('0');
  });

  it('blinks at the kernel default when delay_on/delay_off cannot be written', () => {
    const dir = fakeLed(newRoot(), 'ACT'); // no delay files, as when udev could not open them
    const led = new StatusLed(dir); // an absolute LED directory works too
    led.show('degraded');
    expect(read(dir, 'trigger')).toBe('timer');
    expect(existsSync(path.join(dir, 'delay_on'))).toBe(false);
    expect(led.current).toBe('blink');
  });

  it('a missing LED is logged once with the fix, creates no file and never throws', () => {
    newRoot();
    const warnings: Array<Record<string, unknown>> = [];
    const log = { warn: (_m: string, f: Record<string, unknown>) => warnings.push(f), info: () => {} } as unknown as Logger;
    const led = new StatusLed('ACT', { sysfsRoot: root, log });
    led.show('ok');
    led.show('down');
    led.show('degraded');
    expect(warnings).toHaveLength(1);
    expect(String(warnings[0].fix)).toMatch(/no LED .*ACT/);
    expect(readdirSync(root)).toEqual([]);
    expect(led.current).toBeNull();
    // Once the LED appears, the next update takes.
    const dir = fakeLed(root, 'ACT');
    led.show('ok');
    expect(read(dir, 'brightness')).toBe('1');
  });
});
