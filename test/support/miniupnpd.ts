// A real site router's port-mapping daemon for lab tests: Debian's miniupnpd-nftables (2.3.1),
// which answers PCP, NAT-PMP (UDP 5351) and UPnP IGD (SSDP on 1900, SOAP on a random HTTP
// port), started inside a router namespace, never in the root namespace.
//
//   const mu = await startMiniupnpd({ ns: 'vxpm-rtr', wanIf: 'wan', lanIf: 'lan', lanNet: '192.0.2.0/24', dir });
//   await mu.mappings();                 // [{ protocol: 'udp', externalPort: 8472, internalIp, internalPort }]
//   await mu.restart({ reboot: true });  // as after a power cycle: mappings and conntrack gone, epoch from 0
//   await mu.stop();                     // SIGTERM, then the nftables chains are removed
//
// In the standard lab (`scripts/labnet up --router miniupnpd`), the NAT namespace already holds
// the chains, with the site's masquerade in them: start it there with `routerChains: true`, and
// the chains are then neither created nor removed here.
//
// What miniupnpd needs, learnt the hard way:
//   - a WAN address outside every reserved range: it refuses RFC 1918, CGNAT and the RFC 5737
//     documentation ranges ("Port forwarding is impossible"); a made-up 11.22.33.7/24 works;
//   - its nftables chains, created beforehand (it only adds rules): a filter `forward` chain
//     jumping to `miniupnpd`, nat `prerouting`/`postrouting` chains jumping to
//     `prerouting_miniupnpd`/`postrouting_miniupnpd`; here all in one `table inet miniupnpd`
//     of the router namespace, named in the config (upnp_table_name, upnp_nat_table_name,
//     upnp_forward_chain, upnp_nat_chain, upnp_nat_postrouting_chain);
//   - it neither removes its rules when it exits nor flushes them when it starts (it reads them
//     back as existing mappings, without their lifetimes): restart({ reboot: true }) flushes
//     the chains in between, as a router reboot would, and the router's conntrack table with
//     them (a reboot loses it too; kept, its entries would go on forwarding flows that began
//     under the old mappings, and hide that the mappings are gone);
//   - system_uptime=no makes its PCP/NAT-PMP epoch the daemon's uptime, so a restart resets it;
//   - min_lifetime/max_lifetime bound PCP lifetimes (defaults 120 s and 86400 s); NAT-PMP
//     lifetimes are not bounded at all; UPnP IGD:2 leases of 0 or over a week become 604800 s.
//
// Every daemon is bounded (`timeout lifetimeS`), tracked, and killed by stop(), stopAllMiniupnpd(),
// or the harness's process-exit hook (it is started with nsSpawn).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { nsExec, nsRun, nsSpawn, waitExit, waitFor } from '../lab/harness.js';

export const MINIUPNPD_TABLE = 'miniupnpd';

export interface MiniupnpdOptions {
  /** The router namespace. */
  ns: string;
  wanIf: string;
  lanIf: string;
  /** The LAN prefix clients may map for, e.g. 192.0.2.0/24. */
  lanNet: string;
  /** Config, pid file and log go here (a test's temp dir). */
  dir: string;
  /** Permission rules placed before the default "allow 1024-65535 <lanNet> 1024-65535" (e.g. a deny). */
  rules?: string[];
  /** PCP lifetime bounds (default 2 s and 86400 s: short lifetimes keep renewal tests short). */
  minLifetimeS?: number;
  maxLifetimeS?: number;
  /** Hard bound on each run of the daemon (default 300 s). */
  lifetimeS?: number;
  /**
   * The router namespace already holds `table inet miniupnpd` and its chains, as the router's
   * own (scripts/labnet --router miniupnpd, which also masquerades there): start() checks that
   * they are there instead of creating them, and stop() leaves them in place.
   */
  routerChains?: boolean;
}

export interface RouterMapping {
  protocol: 'udp' | 'tcp';
  externalPort: number;
  internalIp: string;
  internalPort: number;
}

const running = new Set<Miniupnpd>();
const MAX_OUTPUT = 64 * 1024;

export class Miniupnpd {
  /** The daemon's log (it logs to stderr with -d), the last 64 KiB. */
  output = '';
  private child: ChildProcess | null = null;
  private startedAt = 0;

  constructor(readonly o: MiniupnpdOptions) {}

  get alive(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Since the last start: its PCP/NAT-PMP epoch, give or take a second. */
  get uptimeMs(): number {
    return this.alive ? Date.now() - this.startedAt : 0;
  }

  get configFile(): string {
    return path.join(this.o.dir, 'miniupnpd.conf');
  }

  /** Creates the nftables chains (if missing), writes the config, starts the daemon, waits until it answers. */
  async start(): Promise<void> {
    if (this.alive) return;
    if (this.o.routerChains) await expectChains(this.o.ns);
    else await createChains(this.o.ns);
    await writeFile(this.configFile, config(this.o));
    const child = nsSpawn(this.o.ns, [
      'timeout', String(this.o.lifetimeS ?? 300),
      'miniupnpd', '-f', this.configFile, '-d', '-P', path.join(this.o.dir, 'miniupnpd.pid'),
    ]);
    this.child = child;
    this.startedAt = Date.now();
    running.add(this);
    const keep = (b: Buffer) => {
      this.output = (this.output + b.toString()).slice(-MAX_OUTPUT);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    try {
      await waitFor(async () => {
        if (!this.alive) throw new Error(`miniupnpd exited (${child.exitCode ?? child.signalCode})`);
        return (await this.httpPort()) !== null && (await listening(this.o.ns, 'udp', 5351)) && (await listening(this.o.ns, 'udp', 1900));
      }, 10_000, 50);
    } catch (e) {
      await this.stop({ keepChains: true });
      throw new Error(`miniupnpd did not come up: ${(e as Error).message}\n${this.output}`);
    }
  }

  /** SIGTERM (SIGKILL after 3 s); then removes the nftables table unless told to keep it (or it is the router's). */
  async stop(opts: { keepChains?: boolean } = {}): Promise<void> {
    running.delete(this);
    const child = this.child;
    if (child && this.alive) {
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        /* gone */
      }
      await waitExit(child, 3_000).catch(() => undefined);
    }
    if (!opts.keepChains && !this.o.routerChains) await deleteChains(this.o.ns);
  }

  /**
   * Stops and starts the daemon. reboot: also flush its chains and the conntrack table in
   * between, as a router that power-cycles loses its kernel state (a bare daemon restart keeps
   * both, see the header).
   */
  async restart(opts: { reboot?: boolean } = {}): Promise<void> {
    await this.stop({ keepChains: true });
    if (opts.reboot) {
      for (const chain of ['miniupnpd', 'prerouting_miniupnpd', 'postrouting_miniupnpd']) {
        await nsRun(this.o.ns, ['nft', 'flush', 'chain', 'inet', MINIUPNPD_TABLE, chain]);
      }
      await nsRun(this.o.ns, ['conntrack', '-F'], { timeoutMs: 5_000 });
    }
    await this.start();
  }

  /** The forwards miniupnpd holds, read from its DNAT chain. */
  async mappings(): Promise<RouterMapping[]> {
    const text = await nsRun(this.o.ns, ['nft', 'list', 'chain', 'inet', MINIUPNPD_TABLE, 'prerouting_miniupnpd']);
    return parseMappings(text);
  }

  /** The port its HTTP (UPnP description and control) server listens on, or null. */
  async httpPort(): Promise<number | null> {
    const r = await nsExec(this.o.ns, ['ss', '-Hltnp'], { timeoutMs: 2_000 });
    const line = r.stdout.split('\n').find((l) => l.includes('"miniupnpd"'));
    const m = line ? /:(\d+)\s/.exec(line) : null;
    return m ? Number(m[1]) : null;
  }
}

export async function startMiniupnpd(o: MiniupnpdOptions): Promise<Miniupnpd> {
  const m = new Miniupnpd(o);
  await m.start();
  return m;
}

export async function stopAllMiniupnpd(): Promise<void> {
  await Promise.all([...running].map((m) => m.stop()));
}

/**
 * Rules miniupnpd 2.3.1 writes, e.g. `iif "wan" @nh,72,8 0x11 th dport 8472 dnat ip to 192.0.2.10:8472`
 * (byte 9 of the IP header is the protocol: 0x11 UDP, 0x6 TCP).
 */
export function parseMappings(nftChain: string): RouterMapping[] {
  const out: RouterMapping[] = [];
  for (const m of nftChain.matchAll(/@nh,72,8 0x(11|6|06) th dport (\d+) dnat ip to ([\d.]+):(\d+)/g)) {
    out.push({ protocol: m[1] === '11' ? 'udp' : 'tcp', externalPort: Number(m[2]), internalIp: m[3], internalPort: Number(m[4]) });
  }
  return out;
}

function config(o: MiniupnpdOptions): string {
  return [
    '# written by test/support/miniupnpd.ts',
    `ext_ifname=${o.wanIf}`,
    `listening_ip=${o.lanIf}`,
    'http_port=0',
    'enable_natpmp=yes',
    'enable_upnp=yes',
    'secure_mode=yes',
    'system_uptime=no',
    `min_lifetime=${o.minLifetimeS ?? 2}`,
    `max_lifetime=${o.maxLifetimeS ?? 86400}`,
    `upnp_table_name=${MINIUPNPD_TABLE}`,
    `upnp_nat_table_name=${MINIUPNPD_TABLE}`,
    'upnp_forward_chain=miniupnpd',
    'upnp_nat_chain=prerouting_miniupnpd',
    'upnp_nat_postrouting_chain=postrouting_miniupnpd',
    'uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b',
    ...(o.rules ?? []),
    `allow 1024-65535 ${o.lanNet} 1024-65535`,
    'deny 0-65535 0.0.0.0/0 0-65535',
    '',
  ].join('\n');
}

const CHAINS = `
table inet ${MINIUPNPD_TABLE} {
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
`;

async function createChains(ns: string): Promise<void> {
  const exists = await nsExec(ns, ['nft', 'list', 'table', 'inet', MINIUPNPD_TABLE], { timeoutMs: 5_000 });
  if (exists.code === 0) return;
  await nsRun(ns, ['nft', '-f', '-'], { input: CHAINS, timeoutMs: 5_000 });
}

async function expectChains(ns: string): Promise<void> {
  const r = await nsExec(ns, ['nft', 'list', 'chain', 'inet', MINIUPNPD_TABLE, 'prerouting_miniupnpd'], { timeoutMs: 5_000 });
  if (r.code !== 0) throw new Error(`${ns} has no chain inet ${MINIUPNPD_TABLE} prerouting_miniupnpd (was the lab built with labnet up --router miniupnpd?): ${r.stderr}`);
}

async function deleteChains(ns: string): Promise<void> {
  await nsExec(ns, ['nft', 'delete', 'table', 'inet', MINIUPNPD_TABLE], { timeoutMs: 5_000 });
}

async function listening(ns: string, proto: 'udp' | 'tcp', port: number): Promise<boolean> {
  const r = await nsExec(ns, ['ss', proto === 'udp' ? '-Hlun' : '-Hltn', `sport = :${port}`], { timeoutMs: 2_000 });
  return r.stdout.includes(`:${port}`);
}
