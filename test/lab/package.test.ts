// scripts/package and the Debian packages it writes, as root.
//
// Builds the three architectures in one run (fast compression, a private addon cache) and
// checks each .deb: control data, conffiles, production dependencies only, and addons for
// its machine (`file` says x86-64 / ARM aarch64 / ARM EABI5). lintian runs on the amd64 one
// alongside the rest. The amd64 package is then installed into throwaway systems: the host's
// own root under an overlay whose upper layer (a tmpfs) takes every write, so the host stays
// untouched and the upper layer is exactly what the package changed, entered with chroot in
// private mount, PID and network namespaces. dpkg runs the real maintainer scripts there,
// with the real systemd-sysusers, systemd-tmpfiles and deb-systemd-helper; systemctl,
// modprobe and udevadm are stand-ins that log their calls (systemctl hands its offline work
// on unit files, --root=, to the real one). Two boxes:
//  - a chroot without systemd: install, `vxedge --version` and the addons load, upgrade and
//    reinstall keep the operator's config and the VTEP MAC, remove keeps config, state and
//    user, purge leaves nothing but the package manager's own records; nothing is asked of
//    a running systemd (deb-systemd-invoke would ask regardless: the scripts must not call it);
//  - a booted system (/run/systemd/system exists): no start while site.yaml is the skeleton,
//    exactly one restart and no stop on upgrade, stop on removal, a reinstall with the
//    operator's config starts it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT, skipUnlessRoot } from './harness.js';
import { ensureDistCurrent } from '../support/dist.js';

const PACKAGE = path.join(REPO_ROOT, 'scripts', 'package');
const VERSION = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const UPGRADE = `${VERSION}+pkgtest1`;
const ARCHES = { amd64: 'x86-64', arm64: 'ARM aarch64', armhf: 'ARM, EABI5' } as const;
const UNIT = 'vxedge.service';
const WANTS = 'etc/systemd/system/multi-user.target.wants/vxedge.service';

const skip =
  skipUnlessRoot(['dpkg-deb', 'dpkg-buildflags', 'unshare', 'nsenter', 'chroot', 'file', 'lintian', 'systemd-sysusers', 'systemd-tmpfiles',
    'deb-systemd-helper', 'aarch64-linux-gnu-g++', 'arm-linux-gnueabihf-g++']);

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 60_000, env: opts.env ?? process.env, maxBuffer: 64 << 20 });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

// ------------------------------------------------------------------------------- the box
// HOLDER_SH BOX BOOTED, run by unshare in new mount, PID, network, UTS and IPC namespaces,
// builds BOX's system and holds the namespaces open (bounded) while the steps enter them:
// the host's / under an overlay whose upper layer is a tmpfs (dpkg's writes cost little,
// and nothing outlives the namespaces), fresh /proc, /run and /tmp, BOX/shared as /run/box
// (the packages, the stand-ins' call log and state), and BOX/shared/bin over
// /usr/local/sbin, first in PATH, so the stand-ins win over the real tools.
const HOLDER_SH = String.raw`
set -eu
box=$1 booted=$2
T=$box/t R=$box/t/root
mount -t tmpfs tmpfs "$T"
mkdir "$T/upper" "$T/work" "$R"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$R"
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
mkdir "$R/run/box"
mount --bind "$box/shared" "$R/run/box"
mount --bind "$box/shared/bin" "$R/usr/local/sbin"
# A policy-rc.d that forbids starting services (container images ship one) would hide what
# the maintainer scripts ask for.
if [ -e "$R/usr/sbin/policy-rc.d" ]; then mount --bind "$box/shared/bin/policy-rc.d" "$R/usr/sbin/policy-rc.d"; fi
if [ "$booted" = 1 ]; then mkdir -p "$R/run/systemd/system"; fi
read -r pid rest < /proc/self/stat   # the host's /proc: our PID out there, for nsenter
echo "ready $pid"
exec sleep 900
`;

const STANDINS: Record<string, string> = {
  systemctl: `#!/bin/sh
# systemctl stand-in: logs the call and answers like a running systemd would for ${UNIT}.
# Offline operations on unit files (--root=, as deb-systemd-helper's preset) need no
# running systemd: the real systemctl does them.
echo "systemctl $*" >> /run/box/state/calls
case " $* " in *" --root="*) exec /usr/bin/systemctl "$@" ;; esac
verb=
for a in "$@"; do case $a in -*) ;; *) verb=$a; break ;; esac; done
case $verb in
  is-enabled) if [ -L /${WANTS} ]; then echo enabled; exit 0; fi; echo disabled; exit 1 ;;
  is-active) [ -e /run/box/state/active ]; exit $? ;;
  start|restart) : > /run/box/state/active ;;
  stop) rm -f /run/box/state/active ;;
esac
exit 0
`,
  modprobe: '#!/bin/sh\necho "modprobe $*" >> /run/box/state/calls\n',
  udevadm: '#!/bin/sh\necho "udevadm $*" >> /run/box/state/calls\n',
  'policy-rc.d': '#!/bin/sh\nexit 0\n',
};

class Box {
  private constructor(
    readonly dir: string,
    private readonly holder: ChildProcess,
    private readonly pid: number,
  ) {}

  static async open(dir: string, booted: boolean, debs: string[]): Promise<Box> {
    for (const d of ['t', 'shared/bin', 'shared/state']) mkdirSync(path.join(dir, d), { recursive: true });
    for (const [name, text] of Object.entries(STANDINS)) {
      writeFileSync(path.join(dir, 'shared/bin', name), text);
      chmodSync(path.join(dir, 'shared/bin', name), 0o755);
    }
    for (const deb of debs) linkSync(deb, path.join(dir, 'shared', path.basename(deb)));
    const holder = spawn('unshare', ['--mount', '--pid', '--net', '--uts', '--ipc', '--fork', '--kill-child', 'bash', '-c', HOLDER_SH, 'box', dir, booted ? '1' : '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 900_000,
    });
    const pid = await new Promise<number>((resolve, reject) => {
      let out = '';
      const deadline = setTimeout(() => reject(new Error(`box did not come up: ${out}`)), 20_000);
      const seen = (d: Buffer) => {
        out += d.toString();
        const m = /^ready (\d+)$/m.exec(out);
        if (m) {
          clearTimeout(deadline);
          resolve(Number(m[1]));
        }
      };
      holder.stdout!.on('data', seen);
      holder.stderr!.on('data', seen);
      holder.on('exit', (code) => {
        clearTimeout(deadline);
        reject(new Error(`box exited (${code}): ${out}`));
      });
    });
    const box = new Box(dir, holder, pid);
    // man-db re-indexes every man page after each install and removal (seconds): a property
    // of man-db, not of this package, so the boxes skip it (its documented switch).
    const r = box.sh('rm -f /var/lib/man-db/auto-update');
    expect(r.code, r.out).toBe(0);
    return box;
  }

  close(): void {
    this.holder.kill('SIGKILL'); // --kill-child takes the namespaces' init, and with it everything in them
  }

  sh(cmd: string): { code: number | null; out: string } {
    return run('nsenter', ['-t', String(this.pid), '-m', '-p', '-n', '-u', '-i', '--', 'chroot', `${this.dir}/t/root`, '/usr/bin/env', '-i',
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8', 'DEBIAN_FRONTEND=noninteractive', '/bin/sh', '-c', cmd], {
      timeout: 120_000,
    });
  }

  /** dpkg in the box; its output (the test fails with it when dpkg does). */
  dpkg(...args: string[]): string {
    const r = this.sh(`dpkg ${args.join(' ')}`);
    expect(r.code, r.out).toBe(0);
    return r.out;
  }

  /**
   * The stand-ins' calls since the last time that would act on a running system: not
   * systemctl's queries (is-enabled, is-active) nor its offline work on unit files (--root=).
   */
  calls(): string[] {
    const file = path.join(this.dir, 'shared/state/calls');
    const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    writeFileSync(file, '');
    return lines.filter((l) => !/ is-(enabled|active) | --root=/.test(l));
  }

  setActive(on: boolean): void {
    const flag = path.join(this.dir, 'shared/state/active');
    if (on) writeFileSync(flag, '');
    else rmSync(flag, { force: true });
  }

  isActive(): boolean {
    return existsSync(path.join(this.dir, 'shared/state/active'));
  }

  /** A path of the box's system, seen from here (through the holder's mount namespace). */
  file(p: string): string {
    return path.join(`/proc/${this.pid}/root`, this.dir, 't/root', p);
  }

  /**
   * What the box's system has that the host's has not: new paths, changed files, deleted
   * ones (overlayfs whiteouts), relative to /. Directories copied up unchanged are not news.
   */
  changes(): string[] {
    const upper = path.join(`/proc/${this.pid}/root`, this.dir, 't/upper');
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const name of readdirSync(path.join(upper, rel)).sort()) {
        const p = path.join(rel, name);
        const st = lstatSync(path.join(upper, p));
        const host = path.join('/', p);
        const hostSt = existsSync(host) || isLink(host) ? lstatSync(host) : null;
        if (st.isCharacterDevice() && st.rdev === 0) out.push(`deleted ${p}`);
        else if (st.isDirectory()) {
          if (!hostSt?.isDirectory()) out.push(`new ${p}/`);
          walk(p);
        } else if (!hostSt) out.push(`new ${p}`);
        else if (st.isSymbolicLink() ? !hostSt.isSymbolicLink() || readlinkSync(host) !== readlinkSync(path.join(upper, p))
          : !hostSt.isFile() || !readFileSync(host).equals(readFileSync(path.join(upper, p)))) out.push(`changed ${p}`);
      }
    };
    walk('');
    return out;
  }
}

function isElf(p: string): boolean {
  const st = lstatSync(p);
  if (!st.isFile() || st.size < 4) return false;
  const fd = openSync(p, 'r');
  try {
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    closeSync(fd);
  }
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** What dpkg and the account tools keep about any package's life: allowed after a purge. */
const BOOKKEEPING = [
  /^changed var\/lib\/dpkg\/(status|status-old|lock|lock-frontend|triggers\/Lock|triggers\/Unincorp)$/,
  /^changed var\/log\/dpkg\.log$/,
  /^(new|changed) var\/lib\/dpkg\/(status-old|updates\/)$/,
  // useradd/userdel keep the previous account files as passwd- etc.
  /^(new|changed) etc\/(passwd|group|shadow|gshadow)-$/,
  /^(new|changed) etc\/\.pwd\.lock$/,
  // The boxes switch man-db's re-indexing off (Box).
  /^deleted var\/lib\/man-db\/auto-update$/,
];
const leftovers = (box: Box) => box.changes().filter((c) => !BOOKKEEPING.some((re) => re.test(c)));

const accountLine = (box: Box, file: 'passwd' | 'group') =>
  readFileSync(box.file(`etc/${file}`), 'utf8').split('\n').find((l) => l.startsWith('vxedge:'));

/** "mode uid:gid" of a path in the box. */
function owner(box: Box, p: string): string {
  const st = lstatSync(box.file(p));
  return `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
}

/** The board profiles (board/NAME/profile.conf) whose ARCH= is `arch`. */
function boardsFor(arch: string): string[] {
  const dir = path.join(REPO_ROOT, 'board');
  return readdirSync(dir).filter((name) => {
    const conf = path.join(dir, name, 'profile.conf');
    return existsSync(conf) && new RegExp(`^ARCH=${arch}$`, 'm').test(readFileSync(conf, 'utf8'));
  });
}

// ------------------------------------------------------------------------------- the tests
describe.skipIf(skip)('scripts/package', () => {
  let tmp: string;
  let debs: Record<keyof typeof ARCHES, string>;
  let upgradeDeb: string;
  let buildOut: string;
  let buildMs: number;
  let lintian: Promise<{ code: number | null; out: string }>;
  let lintianProc: ChildProcess | undefined;

  beforeAll(() => {
    // `scripts/package --no-build` below packages the dist/ that is there: make it this tree's
    // (npm run build when it is missing or older than src/; an error when that did not help),
    // rather than skipping when it is missing or packaging stale code. The addons are compiled
    // by scripts/package itself, per architecture.
    ensureDistCurrent();
    tmp = mkdtempSync(path.join(tmpdir(), 'vxedge-pkgtest-'));
    const out = path.join(tmp, 'pkg');
    const t0 = performance.now();
    const r = run(PACKAGE, ['--arch', 'all', '--no-build', '--out', out], {
      timeout: 300_000,
      // gzip -1: the test checks contents, not compression (xz takes ~10 s per package here).
      env: { ...process.env, DPKG_DEB_COMPRESSOR_TYPE: 'gzip', DPKG_DEB_COMPRESSOR_LEVEL: '1', VXEDGE_PKG_CACHE: path.join(tmp, 'cache') },
    });
    buildMs = performance.now() - t0;
    buildOut = r.out;
    expect(r.code, r.out).toBe(0);
    debs = {
      amd64: path.join(out, `vxedge_${VERSION}_amd64.deb`),
      arm64: path.join(out, `vxedge_${VERSION}_arm64.deb`),
      armhf: path.join(out, `vxedge_${VERSION}_armhf.deb`),
    };
    lintian = new Promise((resolve) => {
      const p = spawn('lintian', ['--tag-display-limit', '0', debs.amd64], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 });
      lintianProc = p;
      let text = '';
      p.stdout.on('data', (d: Buffer) => (text += d.toString()));
      p.stderr.on('data', (d: Buffer) => (text += d.toString()));
      p.on('close', (code) => resolve({ code, out: text }));
    });
    // The upgrade: the same build as a newer version (what the next release looks like to dpkg).
    const x = path.join(tmp, 'upgrade');
    expect(run('dpkg-deb', ['-R', debs.amd64, x]).code).toBe(0);
    const control = path.join(x, 'DEBIAN/control');
    writeFileSync(control, readFileSync(control, 'utf8').replace(/^Version: .*$/m, `Version: ${UPGRADE}`));
    const pj = path.join(x, 'usr/lib/vxedge/package.json');
    writeFileSync(pj, readFileSync(pj, 'utf8').replace(`"version": "${VERSION}"`, `"version": "${UPGRADE}"`));
    upgradeDeb = path.join(out, `vxedge_${UPGRADE}_amd64.deb`);
    const b = run('dpkg-deb', ['-Zgzip', '-z1', '--root-owner-group', '-b', x, upgradeDeb]);
    expect(b.code, b.out).toBe(0);
  }, 540_000); // up to 180 s for a build of dist/, 300 s for scripts/package

  afterAll(() => {
    lintianProc?.kill('SIGKILL');
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('builds all three architectures', () => {
    // The time is printed, not asserted: the run's own 300 s timeout bounds it, and a budget
    // on wall-clock seconds fails on a busy machine, not on a slower build.
    console.log(`scripts/package --arch all: ${(buildMs / 1000).toFixed(1)} s\n${buildOut.trim()}`);
    for (const deb of Object.values(debs)) expect(existsSync(deb), deb).toBe(true);
  });

  it.each(Object.entries(ARCHES))('the %s package: control data, production dependencies, its own addons', (arch, machine) => {
    const deb = debs[arch as keyof typeof ARCHES];
    const field = (f: string) => run('dpkg-deb', ['-f', deb, f]).out.trim();
    expect(field('Package')).toBe('vxedge');
    expect(field('Version')).toBe(VERSION);
    expect(field('Architecture')).toBe(arch);
    expect(field('Depends')).toMatch(/^nodejs \(>= 20\), iproute2, libc6 \(>= 2\.\d+\)/);
    expect(run('dpkg-deb', ['-I', deb, 'conffiles']).out.trim()).toBe('/etc/vxedge/site.yaml');

    const list = run('dpkg-deb', ['-c', deb]).out;
    const paths = new Set(list.split('\n').map((l) => l.split(/\s+/)[5]).filter(Boolean).map((p) => p.replace(/^\.\//, '/').replace(/\/$/, '')));
    for (const p of [
      '/usr/bin/vxedge', '/usr/lib/systemd/system/vxedge.service', '/usr/lib/sysusers.d/vxedge.conf', '/usr/lib/tmpfiles.d/vxedge.conf',
      '/usr/lib/modules-load.d/vxedge.conf', '/usr/lib/sysctl.d/90-vxedge.conf', '/usr/lib/udev/rules.d/99-vxedge-leds.rules',
      '/etc/vxedge/site.yaml', '/usr/lib/vxedge/dist/cli/main.js', '/usr/share/doc/vxedge/copyright', '/usr/share/man/man1/vxedge.1.gz',
      '/usr/lib/vxedge/node_modules/@kubernetes/client-node/package.json', '/usr/lib/vxedge/dist/cluster/etcd-grpc-kv.js',
      '/usr/lib/vxedge/node_modules/mqtt/package.json', '/usr/lib/vxedge/node_modules/convict/package.json',
    ]) expect(paths, p).toContain(p);
    // etcd3 and protobufjs are the tests' (an independent etcd client, and etcd's .proto read by another codec).
    for (const dev of ['vitest', 'typescript', 'fast-check', 'ajv', '@types/node', '@vitest/runner', 'etcd3', '@grpc/grpc-js', 'protobufjs']) {
      expect(paths, dev).not.toContain(`/usr/lib/vxedge/node_modules/${dev}`);
    }
    expect([...paths].filter((p) => p.startsWith('/opt') || p.startsWith('/usr/lib/vxedge/src'))).toEqual([]);
    // The examples of this architecture's board profiles (profile.conf ARCH=), and the watchdog.
    const boards = [...paths].filter((p) => /^\/usr\/share\/vxedge\/board\/[^/]+$/.test(p)).map((p) => path.basename(p)).sort();
    expect(boards).toEqual([...boardsFor(arch), 'hw-watchdog'].sort());
    expect(boards.length).toBeGreaterThan(arch === 'amd64' ? 0 : 1);

    // Every ELF file in the package is one of the two addons, built for this machine.
    const x = path.join(tmp, `x-${arch}`);
    expect(run('dpkg-deb', ['-x', deb, x]).code).toBe(0);
    const elf = (readdirSync(x, { recursive: true, encoding: 'utf8' }) as string[])
      .filter((p) => isElf(path.join(x, p)))
      .sort();
    expect(elf).toEqual(['usr/lib/vxedge/build/Release/vxedge_native.node', 'usr/lib/vxedge/node_modules/raw-socket/build/Release/raw.node']);
    for (const p of elf) expect(run('file', ['-b', path.join(x, p)]).out, p).toContain(machine);
    rmSync(x, { recursive: true, force: true });
  });

  describe('in a chroot without systemd', () => {
    let box: Box;
    let installOut: string;
    beforeAll(async () => {
      box = await Box.open(path.join(tmp, 'box-chroot'), false, [debs.amd64, upgradeDeb]);
      installOut = box.dpkg('-i', `/run/box/${path.basename(debs.amd64)}`);
    }, 180_000);
    afterAll(() => box?.close());

    it('installs the app, the unit, the drop-ins, the user and its directories; enables, starts nothing', () => {
      const same = (installed: string, source: string) =>
        expect(readFileSync(box.file(installed), 'utf8'), installed).toBe(readFileSync(path.join(REPO_ROOT, source), 'utf8'));
      same('usr/lib/sysusers.d/vxedge.conf', 'systemd/vxedge.sysusers.conf');
      same('usr/lib/tmpfiles.d/vxedge.conf', 'systemd/vxedge.tmpfiles.conf');
      same('usr/lib/sysctl.d/90-vxedge.conf', 'board/common/etc/sysctl.d/90-vxedge.conf');
      same('etc/vxedge/site.yaml', 'board/common/site.yaml');
      expect(readFileSync(box.file('usr/lib/systemd/system/vxedge.service'), 'utf8')).toMatch(
        /^ExecStart=\/usr\/bin\/node .*\/usr\/lib\/vxedge\/dist\/cli\/main\.js run -c \/etc\/vxedge\/site\.yaml$/m,
      );

      const user = accountLine(box, 'passwd');
      expect(user).toMatch(/^vxedge:x:\d+:\d+:[^:]*:\/var\/lib\/vxedge:\/usr\/sbin\/nologin$/);
      const [uid, gid] = user!.split(':').slice(2, 4);
      expect(accountLine(box, 'group')).toMatch(new RegExp(`^vxedge:x:${gid}:`));
      expect(owner(box, 'etc/vxedge')).toBe(`750 0:${gid}`);
      expect(owner(box, 'etc/vxedge/site.yaml')).toBe(`640 0:${gid}`);
      expect(owner(box, 'var/lib/vxedge')).toBe(`750 ${uid}:${gid}`);
      // systemctl preset links the unit by its /lib path on Debian 12 (merged /usr: the same file).
      expect(readlinkSync(box.file(WANTS))).toMatch(/^(\/usr)?\/lib\/systemd\/system\/vxedge\.service$/);

      expect(box.calls()).toEqual([]);
      expect(installOut).not.toMatch(/not started/);
    });

    it('runs from the installed tree: vxedge --version, its addon, raw-socket, the cluster clients', () => {
      const v = box.sh('vxedge --version');
      expect(v.code, v.out).toBe(0);
      expect(v.out.trim()).toBe(`vxedge ${VERSION}`);
      writeFileSync(path.join(box.dir, 'shared/probe.mjs'), `
        import { createRequire } from 'node:module';
        const app = '/usr/lib/vxedge';
        const req = createRequire(app + '/dist/cli/main.js');
        const n = await import(app + '/dist/native/index.js');
        const raw = req('raw-socket');
        const k8s = await import(req.resolve('@kubernetes/client-node'));
        // The etcd adapter is ours (its gRPC client and protobuf codec): no etcd3 or gRPC library ships.
        const etcd = await import(app + '/dist/cluster/etcd-grpc-kv.js');
        const shipped = (m) => { try { req.resolve(m); return true; } catch { return false; } };
        console.log(JSON.stringify({ addon: n.nativeAddonPath(), errno: n.nativeBinding().lastError().errno,
          raw: typeof raw.createSocket, k8s: typeof k8s.KubeConfig, etcd: typeof etcd.connectEtcdGrpc,
          etcd3: shipped('etcd3'), grpc: shipped('@grpc/grpc-js'), protobufjs: shipped('protobufjs') }));`);
      const r = box.sh('node /run/box/probe.mjs');
      expect(r.code, r.out).toBe(0);
      expect(JSON.parse(r.out)).toEqual({
        addon: '/usr/lib/vxedge/build/Release/vxedge_native.node', errno: 0, raw: 'function', k8s: 'function', etcd: 'function',
        etcd3: false, grpc: false, protobufjs: false,
      });
    });

    it('upgrade and reinstall keep the operator config, its permissions and the VTEP MAC', () => {
      const mine = `${readFileSync(box.file('etc/vxedge/site.yaml'), 'utf8')}# edited by the operator\n`;
      writeFileSync(box.file('etc/vxedge/site.yaml'), mine);
      const mac = box.sh('printf "02:42:ac:11:00:02\\n" > /var/lib/vxedge/vtep-mac && chown vxedge:vxedge /var/lib/vxedge/vtep-mac');
      expect(mac.code, mac.out).toBe(0);
      const before = { config: owner(box, 'etc/vxedge/site.yaml'), state: owner(box, 'var/lib/vxedge/vtep-mac') };

      box.dpkg('-i', `/run/box/${path.basename(upgradeDeb)}`);
      expect(box.sh('vxedge --version').out.trim()).toBe(`vxedge ${UPGRADE}`);
      box.dpkg('-i', `/run/box/${path.basename(upgradeDeb)}`); // a reinstall of the same version
      expect(readFileSync(box.file('etc/vxedge/site.yaml'), 'utf8')).toBe(mine);
      expect(readFileSync(box.file('var/lib/vxedge/vtep-mac'), 'utf8')).toBe('02:42:ac:11:00:02\n');
      expect({ config: owner(box, 'etc/vxedge/site.yaml'), state: owner(box, 'var/lib/vxedge/vtep-mac') }).toEqual(before);
      expect(readdirSync(box.file('etc/vxedge'))).toEqual(['site.yaml']); // no .dpkg-dist / .dpkg-old
      expect(box.calls()).toEqual([]);
    });

    it('remove keeps config, state and user; purge leaves nothing', () => {
      box.dpkg('-r', 'vxedge');
      for (const p of ['usr/lib/vxedge', 'usr/bin/vxedge', 'usr/lib/systemd/system/vxedge.service', 'usr/lib/sysctl.d/90-vxedge.conf']) {
        expect(existsSync(box.file(p)), p).toBe(false);
      }
      expect(existsSync(box.file('etc/vxedge/site.yaml'))).toBe(true);
      expect(existsSync(box.file('var/lib/vxedge/vtep-mac'))).toBe(true);
      expect(accountLine(box, 'passwd')).toBeDefined();
      expect(box.sh("dpkg-query -W -f='${Status}' vxedge").out).toBe('deinstall ok config-files');

      box.dpkg('-P', 'vxedge');
      expect(box.sh('dpkg-query -W vxedge').code).not.toBe(0);
      expect(leftovers(box)).toEqual([]);
      expect(box.calls()).toEqual([]);
    });
  });

  describe('on a booted system (systemctl stand-in)', () => {
    let box: Box;
    beforeAll(async () => {
      box = await Box.open(path.join(tmp, 'box-booted'), true, [debs.amd64, upgradeDeb]);
    });
    afterAll(() => box?.close());

    it('does not start while site.yaml is the skeleton; applies the drop-ins', () => {
      const out = box.dpkg('-i', `/run/box/${path.basename(debs.amd64)}`);
      expect(out).toMatch(/vxedge: not started: \/etc\/vxedge\/site\.yaml is the example skeleton/);
      const calls = box.calls();
      expect(calls).toContain('systemctl --system daemon-reload');
      expect(calls).toContain('modprobe tun');
      expect(calls.filter((c) => /^systemctl .*\b(start|restart|stop)\b/.test(c))).toEqual([]);
      expect(box.isActive()).toBe(false);
    }, 120_000);

    it('an upgrade of a gateway running on the skeleton (its keys from /etc/default/vxedge) restarts it once too', () => {
      // Fleet tooling may leave site.yaml as shipped and set every key as VXEDGE_* in the
      // unit's EnvironmentFile; the operator then started it. The new version must run.
      box.setActive(true);
      const out = box.dpkg('-i', `/run/box/${path.basename(upgradeDeb)}`);
      expect(out).not.toMatch(/not started/);
      const actions = box.calls().filter((c) => /^systemctl .*\b(start|restart|stop)\b/.test(c));
      expect(actions).toEqual([`systemctl --quiet --system restart ${UNIT}`]);
      expect(box.isActive()).toBe(true);
      box.setActive(false); // the operator stopped it again: the next upgrade leaves it stopped
      const again = box.dpkg('-i', `/run/box/${path.basename(upgradeDeb)}`);
      expect(again).toMatch(/vxedge: not started: \/etc\/vxedge\/site\.yaml is the example skeleton/);
      expect(box.calls().filter((c) => /^systemctl .*\b(start|restart|stop)\b/.test(c))).toEqual([]);
      expect(box.isActive()).toBe(false);
    }, 120_000);

    it('an upgrade of a running gateway restarts it exactly once and never stops it', () => {
      writeFileSync(box.file('etc/vxedge/site.yaml'), `${readFileSync(box.file('etc/vxedge/site.yaml'), 'utf8')}# mine\n`);
      box.setActive(true); // the operator started it: systemctl start vxedge
      box.dpkg('-i', `/run/box/${path.basename(upgradeDeb)}`);
      const actions = box.calls().filter((c) => /^systemctl .*\b(start|restart|stop)\b/.test(c));
      expect(actions).toEqual([`systemctl --quiet --system restart ${UNIT}`]);
      expect(box.isActive()).toBe(true);
    }, 120_000);

    it('remove stops it; a reinstall with the operator config starts it again; purge leaves nothing', () => {
      box.dpkg('-r', 'vxedge');
      expect(box.calls().filter((c) => /\b(start|restart|stop)\b/.test(c))).toEqual([`systemctl stop ${UNIT}`]);
      expect(box.isActive()).toBe(false);

      box.dpkg('-i', `/run/box/${path.basename(upgradeDeb)}`);
      expect(box.calls().filter((c) => /\b(start|restart|stop)\b/.test(c))).toEqual([`systemctl --quiet --system restart ${UNIT}`]);
      expect(box.isActive()).toBe(true);

      box.dpkg('-P', 'vxedge'); // dpkg removes, then purges
      expect(box.calls().filter((c) => /\b(start|restart|stop)\b/.test(c))).toEqual([`systemctl stop ${UNIT}`]);
      expect(leftovers(box)).toEqual([]);
    }, 180_000);
  });

  it('lintian: no errors and no warnings (explained exceptions are overridden in the package)', async () => {
    const r = await lintian;
    const tags = r.out.split('\n').filter((l) => /^[EW]: /.test(l));
    expect(tags, r.out).toEqual([]);
    expect(r.code, r.out).toBe(0);
  }, 240_000);
});
