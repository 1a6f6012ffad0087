// A real etcd (Debian's etcd-server, 3.4) for lab tests, started inside a network namespace
// at a given address, never in the root namespace; and etcdctl run next to it.
//
//   const etcd = await startEtcd({ ns: env.NS_INET, address: env.INET_WAN_IP, dataDir: path.join(dir, 'etcd') });
//   await etcd.ctl(['put', '/coreos.com/network/config', '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}']);
//   await etcd.stop();                  // SIGTERM; restart() brings it back on the same data dir
//
// Every server is bounded (`timeout lifetimeS`), tracked, and killed by stop(), stopAllEtcd(), or
// the harness's labDown()/process exit (it is started with nsSpawn). etcdctl prints 64-bit ids
// (leases, cluster and member ids) as bare JSON numbers: read its -w json output with
// parseEtcdJson(), which keeps them exact as decimal strings for BigInt().
import { rm } from 'node:fs/promises';
import { nsExec, nsSpawn, waitExit, waitFor, type ExecResult } from '../lab/harness.js';
import type { ChildProcess } from 'node:child_process';

/** etcdctl's flags for the root user of EtcdServer.enableAuth(). */
export const ROOT_CTL = ['--user', 'root:rootpw'];

export interface EtcdOptions {
  /** Network namespace to run in (its loopback must be up: the peer URL lives there). */
  ns: string;
  /** Address to serve clients on, e.g. 127.0.0.1 or a lab address. */
  address: string;
  clientPort?: number; // default 2379
  peerPort?: number; // default 2380
  /** Address of the peer URL (default 127.0.0.1; a member in a namespace of its own needs one the others reach). */
  peerAddress?: string;
  /** etcd --data-dir; kept across restart() unless wiped. */
  dataDir: string;
  /** Member name (default "vxedge-lab"). */
  name?: string;
  /** Hard bound on each run of the server (default 300 s). */
  lifetimeS?: number;
  /** Bound on start-up until healthy (default 15 s). */
  startTimeoutMs?: number;
  /** Serve clients over TLS (pass --cert-file/--key-file/... in extraArgs). */
  https?: boolean;
  /** More etcd flags (TLS, auth token settings, ...). */
  extraArgs?: string[];
  /** Flags for etcdctl (e.g. --cacert/--cert/--key/--user) used by ctl(). */
  ctlArgs?: string[];
}

const running = new Set<EtcdServer>();

export class EtcdServer {
  output = '';
  private child: ChildProcess | null = null;

  constructor(readonly o: EtcdOptions) {}

  get endpoint(): string {
    return `${this.o.https ? 'https' : 'http'}://${this.o.address}:${this.o.clientPort ?? 2379}`;
  }

  get alive(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the server (again) and waits until `etcdctl endpoint health` says so. */
  async start(): Promise<void> {
    if (this.alive) return;
    const o = this.o;
    const name = o.name ?? 'vxedge-lab';
    const peer = `http://${o.peerAddress ?? '127.0.0.1'}:${o.peerPort ?? 2380}`;
    const args = [
      'timeout', String(o.lifetimeS ?? 300),
      'etcd', '--name', name, '--data-dir', o.dataDir, '--logger', 'zap', '--log-outputs', 'stderr',
      '--listen-client-urls', this.endpoint, '--advertise-client-urls', this.endpoint,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `${name}=${peer}`,
      ...(o.extraArgs ?? []),
    ];
    // etcd 3.4 refuses to start on ARM unless told the platform is "unsupported" on purpose.
    const env = { ...process.env, ...(process.arch === 'x64' ? {} : { ETCD_UNSUPPORTED_ARCH: process.arch === 'arm64' ? 'arm64' : 'arm' }) };
    const child = nsSpawn(o.ns, args, { env });
    this.child = child;
    running.add(this);
    child.stdout!.on('data', (b: Buffer) => (this.output += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (this.output += b.toString()));
    try {
      await waitFor(async () => {
        if (!this.alive) throw new Error(`etcd exited (${child.exitCode ?? child.signalCode})`);
        return (await this.ctlResult(['endpoint', 'health', '--command-timeout=1s'], 3_000)).code === 0;
      }, o.startTimeoutMs ?? 15_000, 100);
    } catch (e) {
      await this.kill();
      throw new Error(`etcd on ${this.endpoint} in ${o.ns} did not become healthy: ${(e as Error).message}\n${this.output.slice(-3000)}`);
    }
  }

  /** SIGTERM (etcd shuts down cleanly), then SIGKILL after 5 s. */
  async stop(): Promise<void> {
    await this.signal('SIGTERM', 5_000);
  }

  /** SIGKILL: a crash, no clean shutdown. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL', 5_000);
  }

  /** Stops and starts again; `wipe` deletes the data dir in between (etcd comes back empty, with a new history). */
  async restart(opts: { wipe?: boolean } = {}): Promise<void> {
    await this.stop();
    if (opts.wipe) await rm(this.o.dataDir, { recursive: true, force: true });
    await this.start();
  }

  /** etcdctl with this server's endpoint; throws unless it exits 0; returns stdout. */
  async ctl(args: string[], timeoutMs = 10_000): Promise<string> {
    const r = await this.ctlResult(args, timeoutMs);
    if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')}: code ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  ctlResult(args: string[], timeoutMs = 10_000): Promise<ExecResult> {
    return nsExec(this.o.ns, ['etcdctl', '--endpoints', this.endpoint, ...(this.o.ctlArgs ?? []), ...args], {
      timeoutMs,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  }

  /**
   * Turns authentication on, with a root user (made once; password `rootpw`) for the test's
   * own etcdctl: returns its flags (ROOT_CTL).
   */
  async enableAuth(): Promise<string[]> {
    if ((await this.ctlResult(['user', 'get', 'root'])).code !== 0) {
      await this.ctl(['user', 'add', 'root:rootpw']);
      await this.ctl(['role', 'add', 'root']).catch(() => undefined); // etcd may have made it with the user
      await this.ctl(['user', 'grant-role', 'root', 'root']);
    }
    await this.ctl(['auth', 'enable']);
    return ROOT_CTL;
  }

  /** Grants a lease with etcdctl (as flanneld does for its subnet; `ctlArgs`: e.g. --user) and returns its id. */
  async grantLease(ttlS: number, ctlArgs: string[] = []): Promise<bigint> {
    const j = parseEtcdJson(await this.ctl([...ctlArgs, 'lease', 'grant', String(ttlS), '-w', 'json'])) as { ID: string };
    return BigInt(j.ID);
  }

  /** The key's value, lease and mod revision (etcdctl get -w json), or null. `ctlArgs`: e.g. ROOT_CTL once auth is on. */
  async getKey(key: string, ctlArgs: string[] = []): Promise<{ value: string; lease: bigint; modRevision: bigint } | null> {
    const j = parseEtcdJson(await this.ctl([...ctlArgs, 'get', key, '-w', 'json'])) as { kvs?: { value: string; lease?: string; mod_revision: string }[] };
    const kv = j.kvs?.[0];
    if (!kv) return null;
    return { value: Buffer.from(kv.value, 'base64').toString('utf8'), lease: BigInt(kv.lease ?? '0'), modRevision: BigInt(kv.mod_revision) };
  }

  /** `etcdctl lease timetolive`: remaining and granted TTL in seconds (remaining -1: the lease is gone). */
  async leaseTtl(id: bigint, ctlArgs: string[] = []): Promise<{ ttl: number; grantedTtl: number }> {
    const j = parseEtcdJson(await this.ctl([...ctlArgs, 'lease', 'timetolive', id.toString(16), '-w', 'json'])) as { ttl: string; 'granted-ttl': string };
    return { ttl: Number(j.ttl), grantedTtl: Number(j['granted-ttl']) };
  }

  /**
   * Waits until lease `id` has been renewed after its first `grantedTtl` seconds: its remaining
   * TTL went up between two looks, and more time than the lease's TTL has passed since the call
   * (so the key outlived the lease it would have had without renewals).
   */
  async waitRenewed(id: bigint, grantedTtlS: number, ctlArgs: string[] = []): Promise<void> {
    const t0 = Date.now();
    const ttls: number[] = [];
    await waitFor(async () => {
      ttls.push((await this.leaseTtl(id, ctlArgs)).ttl);
      return Date.now() - t0 > grantedTtlS * 1000 + 1_000 && ttls.some((t, i) => i > 0 && t > ttls[i - 1]);
    }, grantedTtlS * 1000 + 7_000, 300).catch((e: Error) => {
      throw new Error(`lease ${id.toString(16)} not renewed: remaining TTLs seen ${JSON.stringify(ttls)}: ${e.message}`);
    });
  }

  private async signal(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.child;
    running.delete(this);
    if (!child || !this.alive) return;
    try {
      process.kill(-child.pid!, sig);
    } catch {
      /* gone */
    }
    await waitExit(child, graceMs).catch(async () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitExit(child, 2_000).catch(() => undefined);
    });
  }
}

/** Starts etcd in o.ns at o.address and waits until it is healthy. */
export async function startEtcd(o: EtcdOptions): Promise<EtcdServer> {
  const s = new EtcdServer(o);
  await s.start();
  return s;
}

export async function stopAllEtcd(): Promise<void> {
  await Promise.all([...running].map((s) => s.kill()));
}

/** JSON.parse that keeps integers of 16+ digits (etcd's int64 ids) exact, as decimal strings. */
export function parseEtcdJson(text: string): unknown {
  return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}
