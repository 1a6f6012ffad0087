// Starting the real vxedge (compiled CLI) inside a lab namespace, with a config
// written for that lab, and reading its status file.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { REPO_ROOT, nsSpawn, waitExit, waitFor, type LabEnv } from './harness.js';
import type { HealthDocument } from '../../src/health/document.js';

export const CLI = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');

/** Builds dist/ once if it is missing (CI builds it in `npm ci` already). */
export function ensureBuilt(): void {
  if (existsSync(CLI)) return;
  const r = spawnSync('npx', ['tsc', '-p', REPO_ROOT], { cwd: REPO_ROOT, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('tsc failed');
}

export interface GatewayOptions {
  mode?: 'tun' | 'tap';
  keepaliveInterval?: string;
  keepaliveTimeout?: string;
  /** Replaces or adds top-level config keys. */
  extra?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
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
  ) {
    for (const name of ['stdout', 'stderr'] as const) {
      child[name]!.on('data', (b: Buffer) => {
        this.output += b.toString();
        this.streams[name] += b.toString();
      });
    }
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
  waitLog(msg: RegExp, fields: Record<string, unknown> = {}, timeoutMs = 5_000): Promise<LogEntry> {
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
  async waitUp(timeoutMs = 15_000): Promise<HealthDocument> {
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
  async waitStarted(timeoutMs = 10_000): Promise<HealthDocument> {
    try {
      return await waitFor(async () => {
        if (this.child.exitCode !== null) throw new Error(`vxedge exited ${this.child.exitCode}`);
        return this.status();
      }, timeoutMs, 100);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- vxedge output ---\n${this.output}`);
    }
  }

  /** Waits for a status document that satisfies `pred` (status.json is rewritten every 2 s). */
  async waitStatus(pred: (s: HealthDocument) => boolean, timeoutMs = 10_000): Promise<HealthDocument> {
    return waitFor(async () => {
      const s = await this.status();
      return s && pred(s) ? s : null;
    }, timeoutMs, 200);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 6_000): Promise<number | null> {
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
  ensureBuilt();
  const dir = await mkdtemp(path.join(tmpdir(), `vxedge-${env.PREFIX}-`));
  const configFile = path.join(dir, 'site.json');
  await writeFile(configFile, JSON.stringify(labConfig(env, dir, o), null, 2));
  const child = nsSpawn(env.NS_GW, ['node', CLI, 'run', '-c', configFile], { env: { ...process.env, ...o.env } });
  return new RunningGateway(child, dir, configFile);
}
