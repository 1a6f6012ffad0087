// The systemd unit and its sysusers/tmpfiles companions are checked by systemd's own tools
// (Debian's `systemd` package, which scripts/setup installs): `systemd-analyze verify` must
// pass without a single warning (an unknown or misspelt key is only a warning there), the
// offline security score must stay low, and the unit must say what the deployment needs.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { skipUnless } from '../lab/harness.js';

const DIR = path.join(import.meta.dirname, '..', '..', 'systemd');
const UNIT = path.join(DIR, 'vxedge.service');
const unitText = readFileSync(UNIT, 'utf8');

/** `Key=value` lines of one section, in order (repeated keys keep every value). */
function section(text: string, name: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('[')) cur = line;
    else if (cur === `[${name}]` && line && !line.startsWith('#')) {
      const i = line.indexOf('=');
      out.push([line.slice(0, i), line.slice(i + 1)]);
    }
  }
  return out;
}

/** Why one of `tools` cannot run here (the Debian package systemd, which scripts/setup
 *  installs, brings them all), or null. */
function missingTool(...tools: string[]): string | null {
  const t = tools.find((x) => spawnSync(x, ['--version']).status !== 0);
  return t === undefined ? null : `no working ${t} (Debian's systemd package)`;
}

const noAnalyze = skipUnless(missingTool('systemd-analyze'), 'systemd-analyze');

/** A copy of the unit whose ExecStart binary exists here (verify checks it is executable). */
function verifiableCopy(): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxedge-unit-'));
  const file = path.join(dir, 'vxedge.service');
  if (existsSync('/usr/bin/node')) copyFileSync(UNIT, file);
  else writeFileSync(file, unitText.replace('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `));
  return { dir, file };
}

describe('systemd/vxedge.service', () => {
  const svc = new Map(section(unitText, 'Service').map(([k, v]) => [k, v]));
  const unit = new Map(section(unitText, 'Unit').map(([k, v]) => [k, v]));

  it('is a notify service with a watchdog that never gives up restarting', () => {
    expect(svc.get('Type')).toBe('notify');
    expect(svc.get('NotifyAccess')).toBe('main');
    expect(svc.get('WatchdogSec')).toBe('30s');
    expect(svc.get('Restart')).toBe('always');
    expect(svc.get('RestartSec')).toBe('5s');
    expect(unit.get('StartLimitIntervalSec')).toBe('0');
    expect(svc.get('ExecStart')).toBe('/usr/bin/node --max-semi-space-size=1 --single-threaded --max-old-space-size=128 /opt/vxedge/dist/cli/main.js run -c /etc/vxedge/site.yaml');
    expect(svc.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
  });

  it('runs unprivileged with only NET_ADMIN and NET_RAW, hardened without breaking Node', () => {
    expect(svc.get('User')).toBe('vxedge');
    expect(svc.get('AmbientCapabilities')).toBe('CAP_NET_ADMIN CAP_NET_RAW');
    expect(svc.get('CapabilityBoundingSet')).toBe('CAP_NET_ADMIN CAP_NET_RAW');
    for (const [k, v] of [
      ['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['StateDirectory', 'vxedge'],
      ['RuntimeDirectory', 'vxedge'], ['ConfigurationDirectory', 'vxedge'], ['DevicePolicy', 'closed'],
      ['DeviceAllow', '/dev/net/tun rw'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'],
    ]) expect(svc.get(k), k).toBe(v);
    // V8 needs W+X memory; PrivateDevices hides /dev/net/tun.
    expect(svc.has('MemoryDenyWriteExecute')).toBe(false);
    expect(svc.has('PrivateDevices')).toBe(false);
  });

  it.skipIf(noAnalyze)('passes systemd-analyze verify without a warning', () => {
    const { dir, file } = verifiableCopy();
    try {
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
      expect(r.stderr.trim(), r.stderr).toBe('');
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(noAnalyze)('fails verify when a key is wrong (the check has teeth)', () => {
    const { dir, file } = verifiableCopy();
    try {
      writeFileSync(file, readFileSync(file, 'utf8').replace('ProtectHome=yes', 'ProtectHome=yes\nProtectHoem=yes'));
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      expect(r.stderr).toMatch(/Unknown key 'ProtectHoem'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(noAnalyze)('keeps the offline security exposure low (systemd-analyze security)', () => {
    const { dir, file } = verifiableCopy();
    try {
      const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', file], { encoding: 'utf8' });
      const m = /Overall exposure level for vxedge\.service: ([\d.]+)/.exec(r.stdout);
      expect(m, r.stdout + r.stderr).not.toBeNull();
      expect(Number(m![1])).toBeLessThanOrEqual(3.0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('systemd/vxedge.sysusers.conf and vxedge.tmpfiles.conf', () => {
  const noTools = skipUnless(missingTool('systemd-sysusers', 'systemd-tmpfiles'), 'sysusers and tmpfiles');

  it.skipIf(noTools)('create the vxedge user and its directories in a throwaway root', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'vxedge-sysroot-'));
    mkdirSync(path.join(root, 'etc'));
    try {
      const u = spawnSync('systemd-sysusers', [`--root=${root}`, path.join(DIR, 'vxedge.sysusers.conf')], { encoding: 'utf8' });
      expect(u.status, u.stderr).toBe(0);
      const passwd = readFileSync(path.join(root, 'etc', 'passwd'), 'utf8');
      expect(passwd).toMatch(/^vxedge:x:\d+:\d+:vxedge flannel VXLAN gateway:\/var\/lib\/vxedge:\/usr\/sbin\/nologin$/m);
      expect(readFileSync(path.join(root, 'etc', 'group'), 'utf8')).toMatch(/^vxedge:x:\d+:$/m);
      const t = spawnSync('systemd-tmpfiles', ['--create', `--root=${root}`, path.join(DIR, 'vxedge.tmpfiles.conf')], { encoding: 'utf8' });
      expect(t.status, t.stderr).toBe(0);
      expect(t.stderr).toBe('');
      for (const d of ['etc/vxedge', 'var/lib/vxedge', 'run/vxedge']) expect(existsSync(path.join(root, d)), d).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
