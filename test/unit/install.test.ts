// scripts/install and scripts/uninstall into a throwaway root (a plain directory tree):
// the expected files land with the expected modes and owners, a second run changes
// nothing (a manifest of every path, type, mode, owner and sha256 is compared), the
// installed tree runs, and uninstall removes it all but the site's config and state
// (which --purge removes too). Needs root (chown to the vxedge user) and a built tree.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { skipUnless } from '../lab/harness.js';

const REPO = path.join(import.meta.dirname, '..', '..');
const INSTALL = path.join(REPO, 'scripts', 'install');
const UNINSTALL = path.join(REPO, 'scripts', 'uninstall');

const isRoot = process.getuid?.() === 0;
const built = existsSync(path.join(REPO, 'dist', 'cli', 'main.js')) && existsSync(path.join(REPO, 'build', 'Release', 'vxedge_native.node'));
// scripts/test runs with VXEDGE_REQUIRE_LAB=1: there a skip would hide a broken machine.
const skip = skipUnless(!isRoot ? 'not root' : !built ? 'tree not built (npm ci)' : process.platform !== 'linux' ? 'not Linux' : null, 'install');

/** Every path under root: "path type mode uid:gid sha256|->target". */
function manifest(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = path.join(root, rel);
    const st = lstatSync(abs);
    const mode = (st.mode & 0o7777).toString(8);
    const who = `${st.uid}:${st.gid}`;
    if (st.isSymbolicLink()) out.push(`${rel} l ${mode} ${who} ->${readlinkSync(abs)}`);
    else if (st.isFile()) out.push(`${rel} f ${mode} ${who} ${createHash('sha256').update(readFileSync(abs)).digest('hex')}`);
    else if (st.isDirectory()) {
      out.push(`${rel || '.'} d ${mode} ${who}`);
      for (const e of readdirSync(abs).sort()) walk(path.join(rel, e));
    } else out.push(`${rel} ? ${mode} ${who}`);
  };
  walk('');
  return out;
}

function run(script: string, args: string[]): { code: number | null; out: string } {
  const r = spawnSync(script, args, { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

const entry = (m: string[], p: string) => m.find((l) => l.startsWith(`${p} `));

describe.skipIf(skip)('scripts/install into a throwaway root', () => {
  let root: string;
  let first: string[];
  let firstRun: { code: number | null; out: string };
  let uid: string;

  beforeAll(() => {
    root = mkdtempSync(path.join(tmpdir(), 'vxedge-root-'));
    firstRun = run(INSTALL, ['--root', root, '--board', 'rpi4']);
    first = manifest(root);
    uid = /^vxedge:x:(\d+):(\d+):/m.exec(readFileSync(path.join(root, 'etc', 'passwd'), 'utf8'))?.slice(1, 3).join(':') ?? '?';
  }, 180_000);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('installs the app, the unit, the user and the board drop-ins', () => {
    expect(firstRun.code, firstRun.out).toBe(0);
    expect(firstRun.out).toContain('not started (--root');
    expect(firstRun.out).toContain('packages: skipped (--root)');
    const same = (installed: string, source: string) =>
      expect(readFileSync(path.join(root, installed), 'utf8'), installed).toBe(readFileSync(path.join(REPO, source), 'utf8'));
    same('usr/lib/systemd/system/vxedge.service', 'systemd/vxedge.service');
    same('usr/lib/sysusers.d/vxedge.conf', 'systemd/vxedge.sysusers.conf');
    same('usr/lib/tmpfiles.d/vxedge.conf', 'systemd/vxedge.tmpfiles.conf');
    same('etc/modules-load.d/vxedge.conf', 'board/common/etc/modules-load.d/vxedge.conf');
    same('etc/sysctl.d/90-vxedge.conf', 'board/common/etc/sysctl.d/90-vxedge.conf');
    same('etc/udev/rules.d/99-vxedge-leds.rules', 'board/common/etc/udev/rules.d/99-vxedge-leds.rules');
    same('etc/vxedge/site.yaml', 'board/rpi4/site.yaml');
    same('opt/vxedge/dist/cli/main.js', 'dist/cli/main.js');
    expect(existsSync(path.join(root, 'etc/systemd/system.conf.d'))).toBe(false); // only with --hw-watchdog

    expect(entry(first, 'etc/systemd/system/multi-user.target.wants/vxedge.service')).toMatch(/ l .* ->\/usr\/lib\/systemd\/system\/vxedge\.service$/);
    expect(entry(first, 'usr/local/bin/vxedge')).toMatch(/ ->\/opt\/vxedge\/dist\/cli\/main\.js$/);
    expect(entry(first, 'opt/vxedge/dist/cli/main.js')).toMatch(/ f 755 0:0 /);
    expect(entry(first, 'opt/vxedge/build/Release/vxedge_native.node')).toMatch(/ f 755 0:0 /);
    // The user and its directories: config readable by the group only, state its own.
    expect(uid).toMatch(/^\d+:\d+$/);
    const gid = uid.split(':')[1];
    expect(entry(first, 'etc/vxedge')).toBe(`etc/vxedge d 750 0:${gid}`);
    expect(entry(first, 'etc/vxedge/site.yaml')).toMatch(new RegExp(`^etc/vxedge/site.yaml f 640 0:${gid} `));
    expect(entry(first, 'var/lib/vxedge')).toBe(`var/lib/vxedge d 750 ${uid}`);
    expect(entry(first, 'run/vxedge')).toBe(`run/vxedge d 755 ${uid}`);
  });

  it('ships production dependencies only', () => {
    const mods = readdirSync(path.join(root, 'opt/vxedge/node_modules'));
    expect(mods).toEqual(expect.arrayContaining(['convict', 'mqtt', 'yaml', 'raw-socket']));
    for (const dev of ['vitest', 'typescript', 'fast-check', 'ajv', '@vitest']) expect(mods, dev).not.toContain(dev);
    expect(existsSync(path.join(root, 'opt/vxedge/src'))).toBe(false);
  });

  it('runs from the installed tree: CLI, config skeleton, native addon', () => {
    const app = path.join(root, 'opt/vxedge');
    const v = spawnSync(process.execPath, [path.join(app, 'dist/cli/main.js'), '--version'], { encoding: 'utf8' });
    expect(v.stdout.trim()).toMatch(/^vxedge \d+\.\d+\.\d+$/);
    const probe = `
      const n = await import(${JSON.stringify(path.join(app, 'dist/native/index.js'))});
      const cfg = await import(${JSON.stringify(path.join(app, 'dist/config/index.js'))});
      await import(${JSON.stringify(path.join(app, 'dist/gateway.js'))});
      const c = cfg.loadConfig(${JSON.stringify(path.join(root, 'etc/vxedge/site.yaml'))}, {});
      console.log(JSON.stringify({ addon: n.nativeAddonPath(), err: n.nativeBinding().lastError().errno, led: c.board.led }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ addon: path.join(app, 'build/Release/vxedge_native.node'), err: 0, led: 'ACT' });
  });

  it('a second run changes nothing', () => {
    const again = run(INSTALL, ['--root', root, '--board', 'rpi4']);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toContain('done: nothing changed');
    expect(again.out).not.toMatch(/^install: (installed|created|enabled) /m);
    expect(manifest(root)).toEqual(first);
  });

  it('repairs a changed file, and never overwrites the site config', () => {
    const site = path.join(root, 'etc/vxedge/site.yaml');
    writeFileSync(site, 'site: mine\n');
    writeFileSync(path.join(root, 'etc/sysctl.d/90-vxedge.conf'), 'net.ipv4.ip_forward = 0\n');
    const r = run(INSTALL, ['--root', root, '--board', 'rpi5']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('installed /etc/sysctl.d/90-vxedge.conf');
    expect(r.out).toContain('kept /etc/vxedge/site.yaml');
    expect(readFileSync(site, 'utf8')).toBe('site: mine\n');
    const now = manifest(root);
    expect(entry(now, 'etc/sysctl.d/90-vxedge.conf')).toBe(entry(first, 'etc/sysctl.d/90-vxedge.conf'));
  });

  it('uninstall removes what install added but keeps config and state; --purge removes those too', () => {
    const u = run(UNINSTALL, ['--root', root]);
    expect(u.code, u.out).toBe(0);
    const left = manifest(root).map((l) => l.split(' ')[0]);
    for (const p of [
      'opt/vxedge', 'usr/local/bin/vxedge', 'usr/lib/systemd/system/vxedge.service', 'usr/lib/sysusers.d/vxedge.conf',
      'usr/lib/tmpfiles.d/vxedge.conf', 'etc/modules-load.d/vxedge.conf', 'etc/sysctl.d/90-vxedge.conf',
      'etc/udev/rules.d/99-vxedge-leds.rules', 'etc/systemd/system/multi-user.target.wants/vxedge.service', 'run/vxedge',
    ]) expect(left, p).not.toContain(p);
    expect(left).toEqual(expect.arrayContaining(['etc/vxedge/site.yaml', 'var/lib/vxedge']));
    expect(readFileSync(path.join(root, 'etc/passwd'), 'utf8')).toMatch(/^vxedge:/m);
    // Nothing of ours is left but config, state and the user.
    const ours = left.filter((p) => /vxedge/.test(p));
    expect(ours.sort()).toEqual(['etc/vxedge', 'etc/vxedge/site.yaml', 'var/lib/vxedge']);

    const p = run(UNINSTALL, ['--root', root, '--purge']);
    expect(p.code, p.out).toBe(0);
    expect(manifest(root).filter((l) => /vxedge/.test(l.split(' ')[0]))).toEqual([]);
    expect(readFileSync(path.join(root, 'etc/passwd'), 'utf8')).not.toMatch(/^vxedge:/m);
    expect(readFileSync(path.join(root, 'etc/group'), 'utf8')).not.toMatch(/^vxedge:/m);
  });

  it('uninstall --root --purge never removes the host\'s vxedge user, even when userdel --root fails', () => {
    const r2 = mkdtempSync(path.join(tmpdir(), 'vxedge-root-'));
    const stub = mkdtempSync(path.join(tmpdir(), 'vxedge-stub-'));
    try {
      expect(run(INSTALL, ['--root', r2, '--board', 'none']).code).toBe(0);
      // A userdel that refuses --root (as on a root without its shadow files) and records any
      // other call: that one would act on this machine's own users.
      writeFileSync(path.join(stub, 'userdel'), `#!/bin/sh\ncase " $* " in *" --root "*) exit 1 ;; esac\necho "$*" >> ${stub}/host-calls\n`, { mode: 0o755 });
      const r = spawnSync(UNINSTALL, ['--root', r2, '--purge'], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, PATH: `${stub}:${process.env.PATH}` } });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(existsSync(path.join(stub, 'host-calls')) ? readFileSync(path.join(stub, 'host-calls'), 'utf8') : '').toBe('');
      expect(r.stdout).toMatch(/could not remove user vxedge/);
      expect(r.stdout).not.toMatch(/removed user vxedge/);
    } finally {
      rmSync(r2, { recursive: true, force: true });
      rmSync(stub, { recursive: true, force: true });
    }
  });

  it('installs the profile-less skeleton and the hardware watchdog drop-in on request', () => {
    const r2 = mkdtempSync(path.join(tmpdir(), 'vxedge-root-'));
    try {
      const r = run(INSTALL, ['--root', r2, '--board', 'none', '--hw-watchdog']);
      expect(r.code, r.out).toBe(0);
      expect(readFileSync(path.join(r2, 'etc/vxedge/site.yaml'), 'utf8')).toBe(readFileSync(path.join(REPO, 'board/common/site.yaml'), 'utf8'));
      expect(readFileSync(path.join(r2, 'etc/systemd/system.conf.d/90-vxedge-watchdog.conf'), 'utf8')).toMatch(/^RuntimeWatchdogSec=15s$/m);
      expect(run(INSTALL, ['--root', r2, '--board', 'rpi9']).code).toBe(2);
    } finally {
      rmSync(r2, { recursive: true, force: true });
    }
  });
});

describe('scripts/install and scripts/uninstall --help', () => {
  // Every option the parser takes is in the help the script prints (--no-packages once was not).
  for (const script of [INSTALL, UNINSTALL]) {
    it(`${path.basename(script)} names every option it accepts`, () => {
      const accepted = [...readFileSync(script, 'utf8').matchAll(/^\s+(--[a-z-]+)(?:=\*)?\)/gm)].map((m) => m[1]).filter((o) => o !== '--help');
      expect(accepted.length).toBeGreaterThan(0);
      const help = spawnSync(script, ['--help'], { encoding: 'utf8' });
      expect(help.status).toBe(0);
      for (const o of new Set(accepted)) expect(help.stdout, o).toContain(o);
    });
  }
});
