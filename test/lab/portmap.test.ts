// The port mapper against a real router daemon, Debian's miniupnpd-nftables 2.3.1, which speaks
// PCP, NAT-PMP and UPnP IGD:
//
//   vxpm-inet                 vxpm-rtr                                       vxpm-cli
//   eth0 11.22.33.1/24 ---- wan 11.22.33.7/24   [miniupnpd]   lan 192.0.2.1/24 ---- eth0 192.0.2.10/24
//   (the internet)          MASQUERADE out wan; DNAT rules by miniupnpd          (the gateway: PortMapper in
//                           (table inet miniupnpd)                                test/lab/portmap-child.mjs)
//
// The WAN address is made up but not reserved: miniupnpd refuses to map on a private or
// documentation address. The PortMapper (dist/) runs in a child process in the client namespace
// and prints its status as JSON lines; the test reads the router's DNAT chain, sends a datagram
// from the internet to 11.22.33.7:8472, restarts the router, and counts the client's packets to
// ports 5351 and 1900 on the router (mode off must send none).
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, addNamespace, deleteNamespaces, killSpawned, nsExec, nsRun, nsSpawn, onLines, skipUnlessRoot, waitExit, waitFor } from './harness.js';
import { Miniupnpd, stopAllMiniupnpd } from '../support/miniupnpd.js';
import { ensureDist } from '../support/dist.js';
import type { PortMapperStatus, ProbeResult } from '../../src/nat/portmap/portmapper.js';

const PREFIX = 'vxpm';
const NS = { inet: `${PREFIX}-inet`, rtr: `${PREFIX}-rtr`, cli: `${PREFIX}-cli` };
const INET_IP = '11.22.33.1';
const WAN_IP = '11.22.33.7';
const LAN_IP = '192.0.2.1';
const CLI_IP = '192.0.2.10';
const CHILD = path.join(REPO_ROOT, 'test', 'lab', 'portmap-child.mjs');

/** What the child runs from dist/: this tree's port mapper. */
const PORTMAP_MODULES = ['nat/portmap/portmapper', 'nat/portmap/client', 'nat/portmap/transport', 'nat/portmap/pcp', 'nat/portmap/natpmp', 'nat/portmap/upnp', 'nat/portmap/xml', 'util/clock', 'util/log', 'util/ipv4'];

function sh(argv: string[]): void {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.status ?? r.signal} ${r.stderr}`);
}

async function buildTopology(): Promise<void> {
  deleteNamespaces(PREFIX); // a killed earlier run's
  for (const ns of Object.values(NS)) addNamespace(ns);
  sh(['ip', '-n', NS.rtr, 'link', 'add', 'wan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.inet]);
  sh(['ip', '-n', NS.rtr, 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.cli]);
  for (const [ns, dev, cidr] of [[NS.rtr, 'wan', `${WAN_IP}/24`], [NS.rtr, 'lan', `${LAN_IP}/24`], [NS.inet, 'eth0', `${INET_IP}/24`], [NS.cli, 'eth0', `${CLI_IP}/24`]]) {
    sh(['ip', '-n', ns, 'addr', 'add', cidr, 'dev', dev]);
    sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  }
  sh(['ip', '-n', NS.cli, 'route', 'add', 'default', 'via', LAN_IP]);
  sh(['ip', '-n', NS.rtr, 'route', 'add', 'default', 'via', INET_IP]);
  await nsRun(NS.rtr, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  // The site NAT, and a counter of what the client sends to the router's mapping ports.
  await nsRun(NS.rtr, ['nft', '-f', '-'], {
    input: `
table ip vxpm_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
}
table inet vxpm_count {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "lan" ip saddr ${CLI_IP} udp dport { 1900, 5351 } counter
  }
}
`,
  });
}

/** Datagrams the client sent to the router's ports 5351 and 1900 so far. */
async function mappingPackets(): Promise<number> {
  const text = await nsRun(NS.rtr, ['nft', 'list', 'chain', 'inet', 'vxpm_count', 'input']);
  return Number(/counter packets (\d+)/.exec(text)?.[1] ?? NaN);
}

/** Sends `text` from the internet to the router's WAN address, UDP 8472; returns what reached the client. */
async function datagramToClient(text: string): Promise<string> {
  const rx = nsSpawn(NS.cli, ['timeout', '5', 'socat', '-u', `UDP4-RECVFROM:8472,bind=${CLI_IP}`, 'STDOUT']);
  let got = '';
  rx.stdout!.on('data', (b: Buffer) => (got += b.toString()));
  await waitFor(async () => (await nsExec(NS.cli, ['ss', '-Hlun', 'sport = :8472'])).stdout.includes(':8472'), 5_000);
  await nsRun(NS.inet, ['timeout', '5', 'socat', '-u', 'STDIN', `UDP4-SENDTO:${WAN_IP}:8472`], { input: text });
  await waitExit(rx, 7_000).catch(() => undefined);
  return got;
}

/** A PortMapper in a child process in the client namespace, and what it printed. */
class Mapper {
  statuses: PortMapperStatus[] = [];
  addresses: string[] = [];
  stopped: PortMapperStatus | null = null;
  results: { type: string; [k: string]: unknown }[] = [];
  logs: string[] = [];

  constructor(readonly child: ChildProcess) {
    onLines(child.stdout!, (l) => this.line(l));
    onLines(child.stderr!, (l) => this.logs.push(l));
  }

  /** The mapper's own log so far (info on stdout, warn and error on stderr), parsed. */
  logEntries(): { ts: string; level: string; msg: string }[] {
    return this.logs.flatMap((l) => {
      try {
        const j = JSON.parse(l) as { ts?: string; level?: string; msg?: string };
        return typeof j.msg === 'string' && typeof j.level === 'string' ? [j as { ts: string; level: string; msg: string }] : [];
      } catch {
        return [];
      }
    });
  }

  static run(scenario: 'run' | 'probe' | 'once', opts: object): Mapper {
    const o = { gateway: LAN_IP, localAddress: CLI_IP, port: 8472, ...opts };
    return new Mapper(nsSpawn(NS.cli, ['node', CHILD, scenario, JSON.stringify(o)]));
  }

  private line(l: string): void {
    let j: { type?: string; status?: PortMapperStatus; ip?: string };
    try {
      j = JSON.parse(l);
    } catch {
      this.logs.push(l);
      return;
    }
    if (j.type === 'status') this.statuses.push(j.status!);
    else if (j.type === 'address') this.addresses.push(j.ip!);
    else if (j.type === 'stopped') this.stopped = j.status!;
    else if (j.type) this.results.push(j as { type: string });
    else this.logs.push(l);
  }

  get status(): PortMapperStatus | undefined {
    return this.statuses.at(-1);
  }

  /** Waits until pred holds; the failure message carries the child's status and log. */
  async until(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    try {
      await waitFor(() => {
        if (this.child.exitCode !== null && !pred()) throw new Error(`the child exited (${this.child.exitCode})`);
        return pred();
      }, timeoutMs, 50);
    } catch (e) {
      throw new Error(`${what}: ${(e as Error).message}\nstatus: ${JSON.stringify(this.status)}\nlog:\n${this.logs.join('\n').slice(-4000)}`);
    }
  }

  /** A clean stop: the mapper deletes its mapping, prints "stopped" and exits. */
  async stop(): Promise<PortMapperStatus> {
    this.child.stdin!.write('{"cmd":"stop"}\n');
    await this.until('stopped', () => this.stopped !== null);
    await waitExit(this.child, 5_000);
    return this.stopped!;
  }

  /** Waits for a one-shot scenario's result line. */
  async result<T>(type: string): Promise<T> {
    await this.until(type, () => this.results.some((r) => r.type === type), 15_000);
    await waitExit(this.child, 5_000);
    return this.results.find((r) => r.type === type) as T;
  }
}

const ours = { protocol: 'udp', externalPort: 8472, internalIp: CLI_IP, internalPort: 8472 };

describe.skipIf(skipUnlessRoot(['nft', 'miniupnpd', 'socat', 'conntrack']))('port mapping against miniupnpd 2.3.1', () => {
  let dir: string;
  let mu: Miniupnpd;
  const routerOptions = () => ({ ns: NS.rtr, wanIf: 'wan', lanIf: 'lan', lanNet: '192.0.2.0/24', dir });

  /** A mapping only counts as 8472 → the client; anything else the router holds is listed too. */
  const routerHas = async (port: number) => (await mu.mappings()).filter((m) => m.externalPort === port);

  beforeAll(async () => {
    ensureDist(PORTMAP_MODULES);
    await buildTopology();
    dir = await mkdtemp(path.join(tmpdir(), 'vxpm-'));
    mu = new Miniupnpd(routerOptions());
    await mu.start();
  });

  afterAll(async () => {
    await killSpawned(PREFIX);
    await stopAllMiniupnpd();
    deleteNamespaces(PREFIX);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.each(['pcp', 'natpmp', 'upnp'] as const)('%s maps UDP 8472 to the client, the internet reaches it, and a clean stop removes it', async (mode) => {
    const m = Mapper.run('run', { mode, lifetimeS: 60 });
    await m.until('mapped', () => m.status?.state === 'mapped');
    expect(m.status).toMatchObject({ protocol: mode, external: `${WAN_IP}:8472`, error: null, routerAddress: WAN_IP });
    expect(m.status!.lifetime).toBeGreaterThan(50);
    expect(m.status!.lifetime).toBeLessThanOrEqual(60);
    expect(m.addresses).toEqual([WAN_IP]);
    expect(await routerHas(8472)).toEqual([ours]);
    expect(await datagramToClient(`hello over ${mode}`)).toBe(`hello over ${mode}`);

    const final = await m.stop();
    expect(final).toMatchObject({ state: 'stopped', protocol: null });
    expect(await routerHas(8472)).toEqual([]);
  });

  it('auto picks PCP, the newest protocol the router speaks', async () => {
    const m = Mapper.run('once', { mode: 'auto', lifetimeS: 30 });
    const r = await m.result<{ status: PortMapperStatus }>('once');
    expect(r.status).toMatchObject({ protocol: 'pcp', state: 'mapped' });
    expect(r.status.tried).toEqual([{ protocol: 'pcp', outcome: 'mapped', result: `mapped ${WAN_IP}:8472` }]);
    expect(await routerHas(8472)).toEqual([]); // "once" stops cleanly
  });

  it.each(['pcp', 'natpmp', 'upnp'] as const)('%s renews before the lifetime runs out; after a crash the mapping expires', async (mode) => {
    const m = Mapper.run('run', { mode, lifetimeS: 3 });
    await m.until('mapped', () => m.status?.state === 'mapped');
    const renewals = () => new Set(m.statuses.map((s) => s.renewedAt).filter(Boolean)).size;
    // Three grants span more than one lifetime (renewal at 1.5 s): the mapping only lives on if renewed.
    await m.until('renewed twice', () => renewals() >= 3, 15_000);
    expect(await routerHas(8472)).toEqual([ours]);
    expect(m.status).toMatchObject({ state: 'mapped', error: null, protocol: mode });
    expect(await datagramToClient('still mapped')).toBe('still mapped');

    // A crash deletes nothing: the router drops the mapping when its lifetime ends.
    process.kill(-m.child.pid!, 'SIGKILL');
    await waitFor(async () => (await routerHas(8472)).length === 0, 10_000, 200);
  });

  it.each(['pcp', 'natpmp', 'upnp'] as const)('%s: the router reboots; the mapping is back within one check, long before the renewal', async (mode) => {
    // An epoch can only show a restart once the router has been up for a few seconds (§8.5 of
    // RFC 6887 and §3.6 of RFC 6886 allow 1-2 s of slack): wait for that. UPnP has no epoch.
    if (mode !== 'upnp') await waitFor(() => mu.uptimeMs >= 3_000, 10_000, 100);
    const m = Mapper.run('run', { mode, lifetimeS: 60, checkIntervalS: 1 });
    await m.until('mapped', () => m.status?.state === 'mapped');
    expect(await routerHas(8472)).toEqual([ours]);

    await mu.restart({ reboot: true });
    expect(await routerHas(8472)).toEqual([]);
    // The renewal is due 30 s after the mapping (half its 60 s lifetime; PCP: 30-37.5 s): these deadlines end
    // well before it, so only the check can have made the mapping again in time.
    await m.until('mapped again', () => (m.status?.routerRestarts ?? 0) >= 1 && m.status?.state === 'mapped', 15_000);
    await waitFor(async () => (await routerHas(8472)).length === 1, 5_000, 100);
    // And the mapper says so: one restart noticed, in the check's words ("... it restarted or
    // lost its mappings", UPnP: "... it restarted or dropped it"); a renewal that finds the
    // router restarted says "... shows it restarted; the mapping was made again".
    const noticed = m.logEntries().filter((e) => /^port mapping: /.test(e.msg));
    expect(noticed, m.logs.join('\n')).toHaveLength(1);
    expect(noticed[0].msg).toMatch(/: it restarted or (lost its mappings|dropped it)$/);
    expect(noticed[0].msg).not.toContain('the mapping was made again');
    expect(await routerHas(8472)).toEqual([ours]);
    expect(await datagramToClient(`back after reboot (${mode})`)).toBe(`back after reboot (${mode})`);
    await m.stop();
  });

  it('probe() reports all three protocols with what the router said', async () => {
    const m = Mapper.run('probe', { mode: 'auto' });
    const r = await m.result<{ results: ProbeResult[] }>('probe');
    expect(r.results.map((x) => [x.protocol, x.ok])).toEqual([['pcp', true], ['natpmp', true], ['upnp', true]]);
    expect(r.results[1].detail).toContain(`external address ${WAN_IP}`);
    expect(r.results[2].detail).toMatch(/MiniUPnPd\/2\.3\.1, WANIPConnection:2 at http:\/\/192\.0\.2\.1:\d+\/ctl\/IPConn, external address 11\.22\.33\.7/);
    expect(await routerHas(8472)).toEqual([]);
  });

  it('mode off sends not one packet to 5351 or 1900 (and the counter does count: auto does)', async () => {
    const before = await mappingPackets();
    const off = Mapper.run('once', { mode: 'off' });
    expect((await off.result<{ status: PortMapperStatus }>('once')).status).toMatchObject({ state: 'off', protocol: null, error: null });
    const offProbe = Mapper.run('probe', { mode: 'off' });
    expect((await offProbe.result<{ results: ProbeResult[] }>('probe')).results.every((x) => !x.ok)).toBe(true);
    expect(await mappingPackets()).toBe(before);

    const auto = Mapper.run('probe', { mode: 'auto' });
    await auto.result('probe');
    expect(await mappingPackets()).toBeGreaterThan(before);
  });

  it('a router that will not give 8472: PCP/NAT-PMP offer another port (released), UPnP refuses; the error names the remedies', async () => {
    await mu.stop();
    const strict = new Miniupnpd({ ...routerOptions(), rules: ['deny 8472 0.0.0.0/0 0-65535'] });
    try {
      await strict.start();
      const m = Mapper.run('run', { mode: 'auto', lifetimeS: 60 });
      await m.until('failed', () => m.status?.state === 'failed');
      const s = m.status!;
      expect(s.tried.map((t) => [t.protocol, t.outcome])).toEqual([['pcp', 'wrong-port'], ['natpmp', 'wrong-port'], ['upnp', 'refused']]);
      expect(s.tried[0].result).toBe('the router offered external port 8473 instead of 8472; released it');
      expect(s.tried[2].result).toContain('UPnPError 606 Action not authorized');
      expect(s.error).toContain('AWS nodes always send to <public IP>:8472');
      expect(s.error).toContain(`forward UDP 8472 to ${CLI_IP}:8472 on the router by hand`);
      expect(s.error).toContain('srcport 8472 8473');
      expect(await strict.mappings()).toEqual([]); // nothing left behind
      expect(m.addresses).toEqual([WAN_IP]); // the address is still learnt
      await m.stop();
    } finally {
      await strict.stop();
      await mu.start();
    }
  });
});
