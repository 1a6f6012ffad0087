// Starting the real vxedge inside a lab namespace, with a config written for that lab, and
// reading its status file. A launcher says how the process is started: the host's node
// with this checkout's dist/ (nativeLauncher, the default), or e.g. an ARM Node under
// qemu-user with a .deb payload (test/lab/arm-launcher.ts).
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { ensureDistCurrent } from '../support/dist.js';
import { REPO_ROOT, nsExec, nsRun, nsSpawn, run, waitExit, waitFor, type LabEnv } from './harness.js';
import type { HealthDocument } from '../../src/health/document.js';
import { clockSynchronised } from '../../src/util/clock-sync.js';

export const CLI = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');

/** The Node flags of main.js's `#!/usr/bin/env -S node <flags>` line: those the systemd unit
 *  runs the gateway with too, so the lab measures and tests the process as it runs on a board. */
export function shippedNodeFlags(mainJs: string): string[] {
  const first = readFileSync(mainJs, 'utf8').split('\n', 1)[0];
  const m = /^#!\/usr\/bin\/env -S node((?: --?[\w-]+(?:=\S+)?)*)$/.exec(first);
  if (!m) throw new Error(`${mainJs}: unexpected #! line ${first}`);
  return m[1].trim().split(/\s+/).filter(Boolean);
}

/** Builds dist/ when it is missing or older than src/ (CI builds it in `npm ci` already). */
export function ensureBuilt(): void {
  ensureDistCurrent();
}

/** A shared library loaded into the gateway's own process (LD_PRELOAD), with its environment. */
export interface Preload {
  lib: string;
  env: Record<string, string>;
}

/** The environment assignments (NAME=value) that load the preload into a process. */
export function preloadEnv(p: Preload): string[] {
  return [`LD_PRELOAD=${p.lib}`, ...Object.entries(p.env).map(([k, v]) => `${k}=${v}`)];
}

/**
 * A wall clock of its own for one process, set from the test: Debian's libfaketime preloaded,
 * reading `file` at every call (FAKETIME_NO_CACHE), with the real monotonic clock, as on a
 * board that boots with its clock in the past and is set by network time later.
 */
export function settableClock(file: string, start: string): { preload: Preload; setNow(): void } {
  const lib = readdirSync('/usr/lib', { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => path.join('/usr/lib', d.name, 'faketime', 'libfaketime.so.1'))
    .find((f) => existsSync(f));
  if (!lib) throw new Error('libfaketime.so.1 not found under /usr/lib/*/faketime: apt-get install faketime (scripts/setup does)');
  writeFileSync(file, `@${start}\n`);
  return {
    preload: { lib, env: { FAKETIME_TIMESTAMP_FILE: file, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' } },
    setNow: () => writeFileSync(file, '+0\n'),
  };
}

/**
 * Whether this machine's kernel says network time keeps its clock (util/clock-sync.ts, the
 * same read the gateway makes): its words about a clock that reads now depend on it (a
 * certificate not valid yet is the clock's fault only when nothing keeps it), and CI
 * machines differ. null: not known.
 */
export function kernelKeepsClock(): boolean | null {
  return clockSynchronised(Date.now());
}

/**
 * The argv prefix that runs a command as the systemd unit's ProtectClock=yes would, which the
 * lab cannot run the unit under: the clock system calls refused by a seccomp filter
 * (test/lab/protect-clock.c, built into `dir`), in a mount namespace of its own whose /run is
 * empty but for systemd-timesyncd's mark when `timesyncdMark` is given (its mtime: when
 * timesyncd last synchronised the clock). The host's /run is never touched.
 */
export async function protectClock(dir: string, timesyncdMark: Date | null): Promise<string[]> {
  const bin = path.join(dir, 'protect-clock');
  if (!existsSync(bin)) {
    const r = await run(['gcc', '-O2', '-Wall', '-Werror', '-o', bin, path.join(REPO_ROOT, 'test', 'lab', 'protect-clock.c')]);
    if (r.code !== 0) throw new Error(`gcc protect-clock.c: ${r.stderr}`);
  }
  const mark = timesyncdMark
    ? `mkdir -p /run/systemd/timesync && touch -d @${Math.floor(timesyncdMark.getTime() / 1000)} /run/systemd/timesync/synchronized && `
    : '';
  return ['unshare', '--mount', '--propagation', 'private', 'sh', '-ec', `mount -t tmpfs tmpfs /run && ${mark}exec "$@"`, 'protect-clock', bin];
}

/** The words the gateway puts after its clock's reading here (no regex specials in them). */
export function clockWordsHere(): string {
  return { true: ', kept by network time', false: ' and network time does not keep it', null: '' }[String(kernelKeepsClock()) as 'true' | 'false' | 'null'];
}

/** How the gateway process is started in the gateway namespace. */
export interface GatewayLauncher {
  /** For test titles and logs. */
  readonly name: string;
  /** Runs under an emulator: its speed is no performance figure. */
  readonly emulated: boolean;
  /** process.arch of the gateway process. */
  readonly arch: string;
  /** How many times longer than the host's node it takes to start and react: waits are scaled by it. */
  readonly slowdown: number;
  /** The C compiler for libraries its process can load (a Preload). */
  readonly cc: string;
  /** Readies what it runs (build, fetch); idempotent, awaited before every start. */
  prepare(): Promise<void>;
  /** The command line that runs `vxedge ARGS`. */
  argv(args: string[], preload?: Preload): string[];
  /** The command line that runs `node ARGS` with the same Node. */
  nodeArgv(args: string[]): string[];
  /** The app it runs: the directory with package.json, dist/ and node_modules/ (after prepare()). */
  readonly appDir: string;
}

/** The host's node running this checkout's compiled CLI (dist/, built once if missing). */
export const nativeLauncher: GatewayLauncher = {
  name: `node ${process.version} ${process.arch} (dist/ of this checkout)`,
  emulated: false,
  arch: process.arch,
  slowdown: 1,
  cc: 'gcc',
  prepare: async () => ensureBuilt(),
  // `env` after `ip netns exec`: the preload is for the gateway, not for ip.
  argv: (args, preload) => [
    ...(preload ? ['env', ...preloadEnv(preload)] : []),
    'node', ...shippedNodeFlags(CLI), CLI, ...args,
  ],
  nodeArgv: (args) => ['node', ...args],
  appDir: REPO_ROOT,
};

export interface GatewayOptions {
  /** Default: nativeLauncher. */
  launcher?: GatewayLauncher;
  preload?: Preload;
  mode?: 'tun' | 'tap';
  keepaliveInterval?: string;
  keepaliveTimeout?: string;
  /** Replaces or adds top-level config keys. */
  extra?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

/**
 * The gateway's tunnel device's ifindex in its namespace: the same number before and after a
 * reload says the tunnel was not opened again (a new device gets a new index).
 */
export async function tunnelDeviceIndex(env: LabEnv): Promise<number> {
  const line = await nsRun(env.NS_GW, ['ip', '-o', 'link', 'show', 'dev', env.VTEP_DEV]);
  const index = /^(\d+):/.exec(line)?.[1];
  if (index === undefined) throw new Error(`no ifindex in "ip -o link show dev ${env.VTEP_DEV}": ${line}`);
  return Number(index);
}

export function labConfig(env: LabEnv, dir: string, o: GatewayOptions = {}): Record<string, unknown> {
  return {
    site: 'lab',
    node: 'edge-1',
    stateDir: path.join(dir, 'state'),
    runDir: path.join(dir, 'run'),
    underlay: { publicIp: env.GW_PUBLIC_IP },
    vxlan: { vtepMac: env.GW_VTEP_MAC },
    overlay: { subnet: env.GW_SUBNET, mode: o.mode ?? 'tun' },
    peers: [
      { name: 'aws-1', publicIp: env.AWS1_PUBLIC_IP, subnet: env.AWS1_SUBNET, vtepMac: env.AWS1_VTEP_MAC },
      { name: 'aws-2', publicIp: env.AWS2_PUBLIC_IP, subnet: env.AWS2_SUBNET, vtepMac: env.AWS2_VTEP_MAC },
    ],
    keepalive: { interval: o.keepaliveInterval ?? '1s', timeout: o.keepaliveTimeout ?? '5s' },
    log: { level: 'info' },
    ...o.extra,
  };
}

/** One line of the gateway's JSON log. */
export interface LogEntry {
  ts: string;
  level: string;
  msg: string;
  [field: string]: unknown;
}

export class RunningGateway {
  /** stdout and stderr as they came, interleaved. */
  output = '';
  /** Each stream on its own, so that no log line is cut by the other's writes. */
  private readonly streams = { stdout: '', stderr: '' };
  constructor(
    readonly child: ChildProcess,
    readonly dir: string,
    readonly configFile: string,
    /** The launcher's slowdown: the default waits below are multiplied by it. */
    readonly slowdown = 1,
  ) {
    for (const name of ['stdout', 'stderr'] as const) {
      child[name]!.on('data', (b: Buffer) => {
        this.output += b.toString();
        this.streams[name] += b.toString();
      });
    }
  }

  /**
   * As `systemctl reload`: writes `config` as the gateway's file and sends SIGHUP; resolves
   * with the "reloaded" log entry it caused (its `applied` lists the keys applied live).
   */
  async reload(config: Record<string, unknown>, timeoutMs = 10_000 * this.slowdown): Promise<LogEntry> {
    const reloaded = () => this.logEntries().filter((e) => e.msg === 'reloaded');
    const before = reloaded().length;
    await writeFile(this.configFile, JSON.stringify(config, null, 2));
    this.child.kill('SIGHUP');
    return waitFor(() => reloaded()[before], timeoutMs).catch((e: Error) => {
      throw new Error(`${e.message}: no "reloaded" after the SIGHUP\n--- vxedge output ---\n${this.output.slice(-3000)}`);
    });
  }

  /** The gateway's log so far, one parsed JSON object per line, in time order (other lines are left out). */
  logEntries(): LogEntry[] {
    const out: LogEntry[] = [];
    for (const line of `${this.streams.stdout}\n${this.streams.stderr}`.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogEntry);
      } catch {
        /* the last line, still being written */
      }
    }
    return out.sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
  }

  /** Waits for a log entry whose msg matches and whose fields include `fields`; returns it. */
  waitLog(msg: RegExp, fields: Record<string, unknown> = {}, timeoutMs = 5_000 * this.slowdown): Promise<LogEntry> {
    const match = (e: LogEntry) => msg.test(e.msg) && Object.entries(fields).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v));
    return waitFor(() => this.logEntries().find(match), timeoutMs).catch((e: Error) => {
      throw new Error(`${e.message}: no log entry ${msg} with ${JSON.stringify(fields)}\n--- vxedge output ---\n${this.output}`);
    });
  }

  async status(): Promise<HealthDocument | null> {
    try {
      return JSON.parse(await readFile(path.join(this.dir, 'run', 'status.json'), 'utf8')) as HealthDocument;
    } catch {
      return null;
    }
  }

  /** Waits until every peer is up (keepalive answered), or throws with the log. */
  async waitUp(timeoutMs = 15_000 * this.slowdown): Promise<HealthDocument> {
    try {
      return await waitFor(async () => {
        if (this.child.exitCode !== null) throw new Error(`vxedge exited ${this.child.exitCode}`);
        const s = await this.status();
        return s && s.peers.length > 0 && s.peers.every((p) => p.state === 'up') ? s : null;
      }, timeoutMs, 200);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- vxedge output ---\n${this.output}`);
    }
  }

  /** Waits until the gateway has started (device, routes and status file in place). */
  async waitStarted(timeoutMs = 10_000 * this.slowdown): Promise<HealthDocument> {
    try {
      return await waitFor(async () => {
        if (this.child.exitCode !== null) throw new Error(`vxedge exited ${this.child.exitCode}`);
        return this.status();
      }, timeoutMs, 100);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- vxedge output ---\n${this.output}`);
    }
  }

  /** More for the failure messages of until() and untilStatus(): what a server the test runs
   *  beside the gateway printed, for example. */
  context: () => string = () => '';

  /**
   * Waits for `cond` while the gateway runs. Throws at once if the gateway exits; on a timeout
   * says `what` and shows the last health document (its cluster, first five peers and checks),
   * the gateway's output and context().
   */
  async until<T>(cond: () => T | Promise<T>, what: string, timeoutMs: number, intervalMs = 100): Promise<NonNullable<T>> {
    try {
      return await waitFor(async () => {
        if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`vxedge exited (${this.child.exitCode ?? this.child.signalCode})`);
        return cond();
      }, timeoutMs, intervalMs);
    } catch (e) {
      const last = await this.status();
      const health = JSON.stringify({ cluster: last?.cluster, peers: last?.peers.slice(0, 5), checks: last?.checks }, null, 1);
      throw new Error(`${what}: ${(e as Error).message}\n--- last health ---\n${health}\n--- vxedge output ---\n${this.output.slice(-6000)}${this.context()}`);
    }
  }

  /** A status document that satisfies `pred`, waited for as until() waits. */
  untilStatus(pred: (s: HealthDocument) => boolean, what: string, timeoutMs = 15_000): Promise<HealthDocument> {
    return this.until(async () => {
      const s = await this.status();
      return s && pred(s) ? s : null;
    }, what, timeoutMs);
  }

  /** Waits for a status document that satisfies `pred` (status.json is rewritten every 2 s). */
  async waitStatus(pred: (s: HealthDocument) => boolean, timeoutMs = 10_000 * this.slowdown): Promise<HealthDocument> {
    return waitFor(async () => {
      const s = await this.status();
      return s && pred(s) ? s : null;
    }, timeoutMs, 200);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 6_000 * this.slowdown): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    return waitExit(this.child, timeoutMs);
  }

  /** SIGKILLs the gateway if it still runs and waits until it is gone (its port and device with it). */
  async cleanup(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await waitExit(this.child, 5_000).catch(() => undefined);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

export async function startGateway(env: LabEnv, o: GatewayOptions = {}): Promise<RunningGateway> {
  const launcher = o.launcher ?? nativeLauncher;
  await launcher.prepare();
  const dir = await mkdtemp(path.join(tmpdir(), `vxedge-${env.PREFIX}-`));
  const configFile = path.join(dir, 'site.json');
  await writeFile(configFile, JSON.stringify(labConfig(env, dir, o), null, 2));
  const child = nsSpawn(env.NS_GW, launcher.argv(['run', '-c', configFile], o.preload), { env: { ...process.env, ...o.env } });
  return new RunningGateway(child, dir, configFile, launcher.slowdown);
}

/** `vxedge check -c FILE` in namespace `ns`: its exit code, its `check` line (with its fix line; default the `cluster` one), all it printed, how long it took. */
export async function checkCommand(
  ns: string, file: string, check = 'cluster', o: { preload?: Preload; env?: Record<string, string>; wrap?: string[] } = {},
): Promise<{ code: number | null; line: string; stdout: string; ms: number }> {
  const t0 = performance.now();
  const vars = [...(o.preload ? preloadEnv(o.preload) : []), ...Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`)];
  const r = await nsExec(ns, [...(o.wrap ?? []), ...(vars.length ? ['env', ...vars] : []), 'node', CLI, 'check', '-c', file], { timeoutMs: 30_000 });
  const ms = performance.now() - t0;
  const lines = r.stdout.split('\n');
  const i = lines.findIndex((l) => new RegExp(`^(ok|FAIL) +${check} `).test(l));
  const fix = /^ +fix: /.test(lines[i + 1] ?? '') ? 2 : 1;
  return { code: r.code, line: i < 0 ? '' : lines.slice(i, i + fix).join('\n'), stdout: r.stdout + r.stderr, ms };
}

/** Writes the lab gateway's config (as startGateway would) to DIR/NAME, for commands other than run. */
export async function writeLabConfig(env: LabEnv, dir: string, name: string, o: GatewayOptions = {}): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, JSON.stringify(labConfig(env, dir, o), null, 2));
  return file;
}
