// Lab harness: a small TypeScript layer over scripts/labnet for vitest lab tests.
//
// Every lab test file picks its own namespace prefix (labUp({ prefix: 'vxtopo' })), so files never
// collide; vitest runs files one at a time anyway (vitest.config.ts). Everything started here is
// bounded in time and killed on labDown() or at process exit.
//
//   describe.skipIf(skipUnlessRoot(['socat']))('my lab test', () => {
//     let env: LabEnv;
//     beforeAll(async () => { env = await labUp({ prefix: 'vxmine', gw: 'kernel' }); });
//     afterAll(() => labDown('vxmine'));
//     it('pings', async () => { expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true); });
//   });
//
// With VXEDGE_REQUIRE_LAB=1 (scripts/test sets it) a missing precondition is a failing test
// instead of a skip: CI, where scripts/setup installed every tool, must not pass by skipping.

import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'vitest';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const LABNET = path.join(REPO_ROOT, 'scripts', 'labnet');

// ---------------------------------------------------------------------------------------------
// Lab lifecycle

export interface LabOptions {
  /** Namespace prefix, [a-z][a-z0-9]{0,11}; one per test file. */
  prefix: string;
  /** Static DNAT of UDP 8472 on the NAT's WAN to the gateway (default true; never with router 'miniupnpd'). */
  portForward?: boolean;
  /** 'kernel': a kernel flannel.1 in the gateway namespace; 'none' (default): no VTEP there. */
  gw?: 'kernel' | 'none';
  /** Create the AWS nodes' flannel.1 with `srcport 8472 8473`. */
  awsSrcportPin?: boolean;
  /** Create the AWS nodes' flannel.1 with `gbp` (flannel's "GBP": true). */
  awsGbp?: boolean;
  /** Create the AWS nodes' flannel.1 with learning on (flannel's "Learning": true). */
  awsLearning?: boolean;
  /** Set rp_filter (all/default) in every lab namespace; default: leave the inherited value. */
  rpFilter?: 0 | 1 | 2;
  /** The gateway's underlay receives as from a real NIC: datagrams one by one, GRO on (`--underlay-gro`). */
  underlayGro?: boolean;
  /** The gateway's LAN receives as from a real NIC: MTU-sized frames, GRO on, its NAPI in a thread (`--lan-gro`). */
  lanGro?: boolean;
  /**
   * The site router: 'masquerade' (default, iptables MASQUERADE on WAN 198.51.100.2) or
   * 'miniupnpd': WAN 11.22.33.7 (an address miniupnpd will map on), no static forward, NAT in
   * the nftables chains miniupnpd adds its forwards to; start the daemon with
   * test/support/miniupnpd.ts (`routerChains: true`). See scripts/labnet.
   */
  router?: 'masquerade' | 'miniupnpd';
  /** Bound for `labnet up` (default 30 s). */
  timeoutMs?: number;
}

/** `labnet env --json`: every name and address of the lab (see scripts/labnet). */
export interface LabEnv {
  PREFIX: string;
  NS_INET: string; NS_AWS1: string; NS_AWS2: string; NS_POD1: string; NS_POD2: string;
  NS_NAT: string; NS_GW: string; NS_HOST: string;
  OVERLAY_NETWORK: string; VXLAN_VNI: number; VXLAN_PORT: number;
  UNDERLAY_MTU: number; VTEP_MTU: number; POD_MTU: number; HOST_MTU: number; VTEP_DEV: string;
  INET_BR_IF: string; INET_AWS_IP: string; INET_WAN_IF: string; INET_WAN_IP: string;
  AWS1_UNDERLAY_IF: string; AWS1_UNDERLAY_IP: string; AWS1_PUBLIC_IP: string; AWS1_SUBNET: string;
  AWS1_VTEP_IP: string; AWS1_VTEP_MAC: string; AWS1_CNI_IF: string; AWS1_CNI_IP: string;
  POD1_IF: string; POD1_IP: string;
  AWS2_UNDERLAY_IF: string; AWS2_UNDERLAY_IP: string; AWS2_PUBLIC_IP: string; AWS2_SUBNET: string;
  AWS2_VTEP_IP: string; AWS2_VTEP_MAC: string; AWS2_CNI_IF: string; AWS2_CNI_IP: string;
  POD2_IF: string; POD2_IP: string;
  NAT_WAN_IF: string; NAT_WAN_IP: string; NAT_LAN_IF: string; NAT_LAN_IP: string;
  GW_UNDERLAY_IF: string; GW_UNDERLAY_IP: string; GW_LAN_IF: string; GW_LAN_IP: string;
  GW_SUBNET: string; GW_VTEP_IP: string; GW_VTEP_MAC: string; GW_PUBLIC_IP: string;
  HOST_IF: string; HOST_IP: string;
  /** 1 when the lab with this prefix is up (then the fields after it say how it was built). */
  UP: number; PORT_FORWARD: number | string; GW_MODE: string; AWS_SRCPORT_PIN: number | string; AWS_GBP: number | string; AWS_LEARNING: number | string; UNDERLAY_GRO: number | string;
  LAN_GRO: number | string; RP_FILTER: number | string; ROUTER: 'masquerade' | 'miniupnpd';
}

export async function labUp(opts: LabOptions): Promise<LabEnv> {
  const args = ['up', '--prefix', opts.prefix];
  // A miniupnpd router has no static forward by default (labnet refuses --port-forward with it).
  if (opts.router !== 'miniupnpd' || opts.portForward !== undefined) {
    args.push(opts.portForward === false ? '--no-port-forward' : '--port-forward');
  }
  args.push('--gw', opts.gw ?? 'none');
  if (opts.awsSrcportPin) args.push('--aws-srcport-pin');
  if (opts.awsGbp) args.push('--aws-gbp');
  if (opts.awsLearning) args.push('--aws-learning');
  if (opts.rpFilter !== undefined) args.push('--rp-filter', String(opts.rpFilter));
  if (opts.underlayGro) args.push('--underlay-gro');
  if (opts.lanGro) args.push('--lan-gro');
  if (opts.router) args.push('--router', opts.router);
  const r = await run([LABNET, ...args], { timeoutMs: opts.timeoutMs ?? 30_000 });
  if (r.code !== 0) {
    throw new Error(`labnet up failed (code ${r.code}${r.timedOut ? ', timed out' : ''}):\n${r.stderr}${r.stdout}`);
  }
  return labEnv(opts.prefix);
}

export async function labEnv(prefix: string): Promise<LabEnv> {
  const r = await run([LABNET, 'env', '--json', '--prefix', prefix], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`labnet env failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as LabEnv;
}

/** Kills what this process spawned into the lab, then `labnet down` (kills the rest, deletes namespaces). */
export async function labDown(prefix: string): Promise<void> {
  await killSpawned(prefix);
  const r = await run([LABNET, 'down', '--prefix', prefix], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`labnet down failed (code ${r.code}): ${r.stderr}`);
}

// ---------------------------------------------------------------------------------------------
// Processes in namespaces

export interface ExecResult {
  /** Exit code; null when killed by a signal (timeout). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface ExecOptions {
  /** Hard bound: the process group is SIGKILLed after this (default 10 s). */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
}

/** Runs argv inside namespace ns (`ip netns exec`), bounded by timeoutMs. Never throws for a non-zero exit. */
export function nsExec(ns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return run(['ip', 'netns', 'exec', ns, ...argv], opts);
}

/** Like nsExec, but throws (with stderr) unless the command exits 0; returns stdout. */
export async function nsRun(ns: string, argv: string[], opts: ExecOptions = {}): Promise<string> {
  const r = await nsExec(ns, argv, opts);
  if (r.code !== 0) {
    throw new Error(`[${ns}] ${argv.join(' ')}: code ${r.code}${r.timedOut ? ' (timed out)' : ''}\n${r.stderr}`);
  }
  return r.stdout;
}

/** GET `url` from inside namespace `ns` (Node's fetch there; curl is not in every Debian): its status and body; throws when nothing answers. */
export async function nsHttpGet(ns: string, url: string): Promise<{ status: number; body: string }> {
  const code = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { console.error(String(e.cause ?? e)); process.exit(1); })';
  const r = await nsExec(ns, ['node', '-e', code, url], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`GET ${url} in ${ns}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as { status: number; body: string };
}

/** Runs argv (in this namespace), bounded by timeoutMs: on timeout its whole process group
 *  is killed. Never throws for a non-zero exit. */
export function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group, so a timeout kills the command's children too
      env: opts.env ?? process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.stdin!.on('error', () => {}); // EPIPE when the command does not read stdin
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        timedOut,
      });
    });
    child.stdin!.end(opts.input ?? undefined);
  });
}

interface Tracked {
  child: ChildProcess;
  ns: string;
}
/**
 * Every child nsSpawn() and spawnTracked() started that still runs. One set per process (on
 * globalThis), however often vitest evaluates this module in it, so that the reaper below is
 * installed once.
 */
const SPAWNED = Symbol.for('vxedge.lab.spawned');
const spawned: Set<Tracked> = ((globalThis as { [SPAWNED]?: Set<Tracked> })[SPAWNED] ??= installReaper(new Set<Tracked>()));

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/**
 * Kills every tracked child's process group when this process ends: at 'exit', and on SIGTERM,
 * SIGINT and SIGHUP, which end a Node process without 'exit' (vitest ends its fork workers with
 * SIGTERM, so an 'exit' hook alone never ran there). After the kill the signal is raised again
 * with this listener gone, so the process ends as it would have without it (unless someone
 * else listens for it too, who then decides).
 */
function installReaper(set: Set<Tracked>): Set<Tracked> {
  const reap = () => {
    for (const t of set) killGroup(t.child, 'SIGKILL');
  };
  process.on('exit', reap);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(sig, () => {
      reap();
      process.kill(process.pid, sig);
    });
  }
  return set;
}

/**
 * Starts argv inside namespace ns and returns the ChildProcess (stdio piped unless opts.stdio says
 * otherwise). It runs in its own process group and is killed by killSpawned()/labDown() for its
 * prefix, or at process exit. Bound its lifetime yourself (e.g. `timeout 20 ...`) when it could hang.
 */
export function nsSpawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], {
    stdio: ['pipe', 'pipe', 'pipe'],
    ...opts,
    detached: true,
  });
  const t: Tracked = { child, ns };
  spawned.add(t);
  child.on('exit', () => spawned.delete(t));
  child.on('error', () => spawned.delete(t));
  child.stdin?.on('error', () => {});
  return child;
}

/**
 * Starts argv in this process's namespace (for what needs no lab namespace, e.g. a receiver on
 * a unix socket), tracked as nsSpawn's children are: its process group is killed by
 * killSpawned() (with no prefix) or at process exit. Bound its lifetime yourself (`timeout N ...`).
 */
export function spawnTracked(argv: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ['pipe', 'pipe', 'pipe'],
    ...opts,
    detached: true,
  });
  const t: Tracked = { child, ns: '' };
  spawned.add(t);
  child.on('exit', () => spawned.delete(t));
  child.on('error', () => spawned.delete(t));
  child.stdin?.on('error', () => {});
  return child;
}

/** Kills (TERM, then KILL after graceMs) the processes nsSpawn started, in namespaces of this prefix (all if omitted). */
export async function killSpawned(prefix?: string, graceMs = 1_000): Promise<void> {
  const mine = [...spawned].filter((t) => prefix === undefined || t.ns.startsWith(`${prefix}-`));
  const live = mine.filter((t) => t.child.exitCode === null && t.child.signalCode === null);
  for (const t of live) killGroup(t.child, 'SIGTERM');
  await Promise.all(
    live.map(
      (t) =>
        new Promise<void>((resolve) => {
          if (t.child.exitCode !== null || t.child.signalCode !== null) return resolve();
          const timer = setTimeout(() => {
            killGroup(t.child, 'SIGKILL');
            resolve();
          }, graceMs);
          t.child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
        }),
    ),
  );
  for (const t of mine) spawned.delete(t);
}

/**
 * Resolves once `pattern` appears in what the child printed on `stream` (from its start, so call
 * this right after spawning it); rejects if the child exits first or timeoutMs passes.
 */
export function waitForOutput(child: ChildProcess, stream: 'stdout' | 'stderr', pattern: RegExp | string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = child[stream];
    if (!s) return reject(new Error(`${stream} of ${child.spawnargs.join(' ')} is not piped`));
    let text = '';
    const matches = () => (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text));
    const finish = (err?: Error) => {
      clearTimeout(timer);
      s.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve();
    };
    const onData = (b: Buffer) => {
      text += b.toString();
      if (matches()) finish();
    };
    const onExit = () => finish(new Error(`${child.spawnargs.join(' ')} exited before printing ${pattern}: ${text}`));
    const timer = setTimeout(() => finish(new Error(`${child.spawnargs.join(' ')} did not print ${pattern} within ${timeoutMs} ms: ${text}`)), timeoutMs);
    s.on('data', onData);
    child.once('exit', onExit);
  });
}


/** Calls `fn` with each complete line the stream writes (a child's line protocol); the part of
 *  a line still being written waits for the rest. */
export function onLines(stream: NodeJS.ReadableStream, fn: (line: string) => void): void {
  let buf = '';
  stream.on('data', (b: Buffer) => {
    buf += b.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) fn(l);
  });
}
/** Resolves when a child exits (with its code), or rejects after timeoutMs (and kills it). */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    if (child.signalCode !== null) return resolve(null);
    const timer = setTimeout(() => {
      killGroup(child, 'SIGKILL');
      reject(new Error(`process ${child.spawnargs.join(' ')} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Namespaces of a test file's own (for files that build their topology without labnet)

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes the namespaces `${prefix}-*` of this run and of runs that are gone (killed before
 * their cleanup): every one but those named `${prefix}-<pid>` for another live process, whose
 * run keeps its own. The native tests' namespaces follow it too (test/native/scenario.ts).
 */
export function deleteNamespaces(prefix: string): void {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '';
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    if (!name.startsWith(`${prefix}-`)) continue;
    const rest = name.slice(prefix.length + 1);
    const pid = /^\d+$/.test(rest) ? Number(rest) : NaN;
    if (Number.isInteger(pid) && pid !== process.pid && pidAlive(pid)) continue;
    spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
  }
}

/** Adds namespace `name` with its loopback up; throws with ip's message when it cannot. */
export function addNamespace(name: string): void {
  for (const argv of [['netns', 'add', name], ['-n', name, 'link', 'set', 'lo', 'up']]) {
    const r = spawnSync('ip', argv, { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) throw new Error(`ip ${argv.join(' ')}: ${r.status ?? r.signal} ${r.stderr}`);
  }
}

/** `${prefix}-<pid>`, a namespace of this run's own with its loopback up, after deleteNamespaces(prefix). */
export function createNamespace(prefix: string): string {
  deleteNamespaces(prefix);
  const ns = `${prefix}-${process.pid}`;
  addNamespace(ns);
  return ns;
}

// ---------------------------------------------------------------------------------------------
// Probes

export interface PingOptions {
  count?: number; // default 3
  /** Bound for the whole run, replies included (default count * interval + 2 s). */
  timeoutMs?: number;
  intervalMs?: number; // default 200
  /** ICMP payload bytes (default 56, as ping). */
  size?: number;
  /** Source address to bind. */
  source?: string;
}

export interface PingResult {
  /** Every echo was answered. */
  ok: boolean;
  sent: number;
  received: number;
  /** Average RTT of the answered echoes; null if none. */
  rttMs: number | null;
  rtts: number[];
}

/** ICMP echo from ns to target (raw-socket pinger in `labnet ping`; iputils-ping is not needed). */
export async function ping(ns: string, target: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 3;
  const intervalMs = opts.intervalMs ?? 200;
  const timeoutMs = opts.timeoutMs ?? count * intervalMs + 2_000;
  const args = [LABNET, 'ping', ns, target, '--count', String(count), '--interval', String(intervalMs / 1000)];
  args.push('--timeout', String(timeoutMs / 1000));
  if (opts.size !== undefined) args.push('--size', String(opts.size));
  if (opts.source) args.push('--source', opts.source);
  const r = await run(args, { timeoutMs: timeoutMs + 5_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`labnet ping ${ns} ${target}: code ${r.code}: ${r.stderr}`);
  const j = JSON.parse(line) as { sent: number; received: number; rttMs: number[] };
  const avg = j.rttMs.length ? j.rttMs.reduce((a, b) => a + b, 0) / j.rttMs.length : null;
  return { ok: j.sent > 0 && j.received === j.sent, sent: j.sent, received: j.received, rttMs: avg, rtts: j.rttMs };
}

export interface TransferOptions {
  port?: number; // default: random in 20000..29999
  timeoutMs?: number; // default 20 s
}

export interface TransferResult {
  sentSha256: string;
  receivedSha256: string;
  receivedBytes: number;
  /** From the sender's start to the receiver's end of stream. */
  ms: number;
}

/**
 * Sends `bytes` random bytes over TCP from fromNs to toAddr (in toNs) with socat, and hashes what
 * arrives. Bounded by timeoutMs; both socat processes are gone when it returns.
 */
export async function tcpTransfer(
  fromNs: string,
  toNs: string,
  toAddr: string,
  bytes: number,
  opts: TransferOptions = {},
): Promise<TransferResult> {
  const port = opts.port ?? 20_000 + Math.floor(Math.random() * 10_000);
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const secs = String(Math.ceil(timeoutMs / 1000));
  const data = randomBytes(bytes);
  const sentSha256 = createHash('sha256').update(data).digest('hex');

  const rx = nsSpawn(toNs, ['timeout', secs, 'socat', '-u', `TCP-LISTEN:${port},bind=${toAddr},reuseaddr`, 'STDOUT']);
  const hash = createHash('sha256');
  let receivedBytes = 0;
  let rxErr = '';
  rx.stdout!.on('data', (b: Buffer) => {
    hash.update(b);
    receivedBytes += b.length;
  });
  rx.stderr!.on('data', (b: Buffer) => (rxErr += b.toString()));
  const rxDone = new Promise<void>((resolve) => rx.stdout!.on('close', () => resolve()));
  let tx: ChildProcess | undefined;
  try {
    await waitFor(async () => {
      if (rx.exitCode !== null) throw new Error(`receiver exited early: ${rxErr}`);
      const r = await nsExec(toNs, ['ss', '-Hltn', `sport = :${port}`], { timeoutMs: 2_000 });
      return r.stdout.includes(`:${port}`);
    }, 5_000);
    const t0 = performance.now();
    tx = nsSpawn(fromNs, ['timeout', secs, 'socat', '-u', 'STDIN', `TCP:${toAddr}:${port},connect-timeout=5`]);
    let txErr = '';
    tx.stderr!.on('data', (b: Buffer) => (txErr += b.toString()));
    tx.stdin!.end(data);
    const txCode = await waitExit(tx, timeoutMs);
    const rxCode = await waitExit(rx, timeoutMs);
    await rxDone;
    const ms = performance.now() - t0;
    if (txCode !== 0) throw new Error(`sender socat exited ${txCode}: ${txErr}`);
    if (rxCode !== 0) throw new Error(`receiver socat exited ${rxCode}: ${rxErr}`);
    return { sentSha256, receivedSha256: hash.digest('hex'), receivedBytes, ms };
  } finally {
    for (const c of [tx, rx]) if (c) killGroup(c, 'SIGKILL');
  }
}

/** Polls fn until it returns a truthy value (returned) or timeoutMs passes (throws with the last error). */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`waitFor: condition not met within ${timeoutMs} ms${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface Capture {
  /** Resolves once tcpdump listens (its "listening on" line): packets from then on are captured. */
  ready: Promise<void>;
  /** What tcpdump printed so far, line by line (-l: one line per packet, more with -v). */
  readonly lines: string[];
  /** Resolves when tcpdump exits (-c N packets seen, stop(), or the time bound). */
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Ends the capture early (SIGINT) and waits for it. */
  stop(): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/**
 * Starts `tcpdump -l ARGS` in ns, bounded by timeoutMs (default 10 s). Await `ready` before
 * sending what it should see: tcpdump needs a moment to open the interface and set its filter,
 * and a packet sent before that is silently not captured.
 */
export function startCapture(ns: string, args: string[], opts: { timeoutMs?: number; readyTimeoutMs?: number } = {}): Capture {
  const secs = String(Math.ceil((opts.timeoutMs ?? 10_000) / 1000));
  const child = nsSpawn(ns, ['timeout', secs, 'tcpdump', '-l', ...args]);
  const lines: string[] = [];
  let stdout = '';
  let stderr = '';
  let partial = '';
  child.stdout!.on('data', (b: Buffer) => {
    stdout += b.toString();
    partial += b.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const ready = waitForOutput(child, 'stderr', 'listening on', opts.readyTimeoutMs ?? 10_000);
  ready.catch(() => killGroup(child, 'SIGKILL'));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code) => {
      if (partial) lines.push(partial);
      partial = '';
      resolve({ code, stdout, stderr });
    });
  });
  return {
    ready,
    lines,
    done,
    stop: () => {
      killGroup(child, 'SIGINT');
      return done;
    },
  };
}

/** /proc/net/snmp of a namespace, flattened: { 'Icmp.InEchos': 2, 'Udp.NoPorts': 1, ... }. */
export async function snmpCounters(ns: string): Promise<Record<string, number>> {
  const text = await nsRun(ns, ['cat', '/proc/net/snmp'], { timeoutMs: 5_000 });
  const lines = text.trim().split('\n');
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i].split(/\s+/);
    const values = lines[i + 1].split(/\s+/);
    const proto = names[0].replace(/:$/, '');
    for (let j = 1; j < names.length; j++) out[`${proto}.${names[j]}`] = Number(values[j]);
  }
  return out;
}

/**
 * Waits until counter `key` of ns (see snmpCounters) has grown by at least minDelta since `base`
 * (an earlier snmpCounters(ns)); returns the growth. Positive evidence that packets got somewhere,
 * e.g. 'Icmp.InEchoReps' for a ping that is flowing, 'Udp.NoPorts' for datagrams that died there.
 */
export async function waitSnmpDelta(ns: string, key: string, base: Record<string, number>, minDelta: number, timeoutMs: number): Promise<number> {
  if (!(key in base)) throw new Error(`no counter ${key} in /proc/net/snmp of ${ns}`);
  try {
    return await waitFor(async () => {
      const d = (await snmpCounters(ns))[key] - base[key];
      return d >= minDelta ? d : null;
    }, timeoutMs, 50);
  } catch (e) {
    const now = (await snmpCounters(ns).catch(() => ({}) as Record<string, number>))[key];
    throw new Error(`${ns} ${key} grew by ${now - base[key]}, not ${minDelta}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Preconditions

const toolCache = new Map<string, boolean>();

/** True if `name` is an executable on PATH. */
export function haveTool(name: string): boolean {
  let ok = toolCache.get(name);
  if (ok === undefined) {
    ok = spawnSync('sh', ['-c', 'command -v "$1" >/dev/null 2>&1', 'sh', name]).status === 0;
    toolCache.set(name, ok);
  }
  return ok;
}

/** Why the lab cannot run here (not root, a tool missing, VXEDGE_LAB=0), or null if it can. */
export function labSkipReason(tools: string[] = []): string | null {
  if (process.env.VXEDGE_LAB === '0') return 'VXEDGE_LAB=0';
  if (process.platform !== 'linux') return 'not Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not root';
  for (const t of ['ip', 'bridge', 'iptables', 'ethtool', 'perl', 'ss', ...tools]) {
    if (!haveTool(t)) return `missing tool: ${t}`;
  }
  return null;
}

/** VXEDGE_REQUIRE_LAB=1 (scripts/test sets it): a lab test that cannot run fails instead of skipping. */
export function labRequired(): boolean {
  return process.env.VXEDGE_REQUIRE_LAB === '1';
}

/**
 * True when the tests where it is called must be skipped because of `why` (what is missing
 * here; null: nothing is), for `describe.skipIf(skipUnless(why, 'systemd'))(...)`: a
 * unit or native test that needs a tool, a device or root. Prints the reason once. Under
 * VXEDGE_REQUIRE_LAB=1 (scripts/test sets it; scripts/setup installs every tool) it adds a
 * failing test "<what> prerequisites" where it is called instead: a skip there would hide a
 * broken machine, and the run passed with these tests never run.
 */
export function skipUnless(why: string | null, what: string): boolean {
  if (why === null) return false;
  if (labRequired()) {
    it(`${what} prerequisites`, () => {
      throw new Error(`${what} tests cannot run: ${why} (VXEDGE_REQUIRE_LAB=1: a missing precondition fails instead of skipping; scripts/setup installs every tool)`);
    });
  } else {
    console.warn(`${what} tests skipped: ${why}`);
  }
  return true;
}

/**
 * True when lab tests must be skipped (not root, or one of the base tools or `tools` is missing),
 * for `describe.skipIf(skipUnlessRoot(['socat']))(...)`. Prints the reason once. Under
 * VXEDGE_REQUIRE_LAB=1 it adds a failing test "lab prerequisites" where it is called (the
 * file, or the describe around it) instead, so the run fails naming what is missing;
 * VXEDGE_LAB=0 still skips (an explicit choice).
 */
export function skipUnlessRoot(tools: string[] = []): boolean {
  const why = labSkipReason(tools);
  if (why === 'VXEDGE_LAB=0') {
    console.warn(`lab tests skipped: ${why}`);
    return true;
  }
  return skipUnless(why, 'lab');
}
