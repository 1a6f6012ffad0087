// The router port mapping end to end: the real gateway (dist/, test/lab/vxedge.ts) in the
// standard lab, behind a site router that runs miniupnpd and has no static forward
// (`labnet up --router miniupnpd`: WAN 11.22.33.7, NAT in nftables chains miniupnpd adds its
// forwards to), toward stock AWS kernel peers whose VXLAN source ports are hashed per flow (no
// srcport pin). So the AWS nodes' frames to 11.22.33.7:8472 get in only through a forward the
// gateway asked the router for:
//
//   - nat.portMapping off: the gateway sends nothing to the router's ports 5351 and 1900
//     (counted by an nftables counter on the router) and nothing gets in (pings die at the
//     router's WAN);
//   - pcp, natpmp, upnp forced in turn, and auto: the forward shows in the router's DNAT chain,
//     pods on aws1/aws2 and the site host ping each other, the health document carries
//     nat.portMapping, a passing port_mapping check and the WAN address as public endpoint,
//     and only the forced protocol's port saw requests; the router reboots (forwards and
//     conntrack gone) → the forward is back within a few seconds (the peers going down make the
//     gateway look at the router at once; PCP, whose lifetime this router caps at 6 s, is also
//     renewed every 3-3.75 s) and the pods get in again; SIGTERM → the forward is deleted;
//   - a reload from off to upnp: the forward appears, the pods get in, the peers come up after
//     the same hold as after a reboot (below); a reload to off deletes it; the device stays;
//   - the keepalive flow after a reboot: the AWS nodes' answers that reached the router before
//     the forward was back made conntrack entries without it; the gateway holds its probes to
//     the down peers for longer than a router keeps such a flow (35 s), the entries expire, and
//     the peers come back up.
//
// Every wait is on a condition with a deadline. The gateway maps before its first probe, so
// no answer reaches the router ahead of the forward at start.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { HealthDocument } from '../../src/health/document.js';
import { MINIUPNPD_TABLE, Miniupnpd, type RouterMapping } from '../support/miniupnpd.js';
import { labDown, labUp, nsRun, ping, skipUnlessRoot, snmpCounters, waitFor, waitSnmpDelta, type LabEnv } from './harness.js';
import { labConfig, startGateway, tunnelDeviceIndex, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxpg';
const KEEPALIVE = { interval: '1s', timeout: '3s', timeoutMs: 3_000 };
/** miniupnpd's max_lifetime: PCP grants at most this, so the gateway renews every 3-3.75 s. */
const PCP_MAX_LIFETIME_S = 6;
/** What the gateway asks for, and gets from this router over NAT-PMP and UPnP (it caps neither). */
const ASKED_LIFETIME_S = 7200;
/**
 * The deadline for the forward to be back after a reboot. It comes after keepalive.timeout
 * (the peers go down, the gateway looks at the router) plus a check and a mapping, about 5 s;
 * PCP's 3 s renewal may be first. The deadline is generous for a busy machine and still far
 * from the periodic check (60 s), the only other way NAT-PMP and UPnP would notice.
 */
const REMAP_DEADLINE_MS = 20_000;
/** PCP renews at a random point between 1/2 and 5/8 of the granted lifetime (RFC 6887 §11.2.1). */
const PCP_RENEW_MIN_MS = (PCP_MAX_LIFETIME_S / 2) * 1000;
const PCP_RENEW_MAX_MS = (PCP_MAX_LIFETIME_S * 5 / 8) * 1000;
/** A renewal that met the router down is retried after half the time left: at most (6 s - 3 s) / 2. */
const PCP_RETRY_MS = (PCP_MAX_LIFETIME_S * 1000 - PCP_RENEW_MIN_MS) / 2;
/** Allowance for timers running late on a busy machine. */
const LATE_MS = 1_000;

type Mode = 'pcp' | 'natpmp' | 'upnp' | 'auto';

describe.skipIf(skipUnlessRoot(['nft', 'miniupnpd', 'conntrack']))('router port mapping end to end (gateway, miniupnpd, kernel flannel peers)', () => {
  let env: LabEnv;
  let dir: string;
  let mu: Miniupnpd;
  let gw: RunningGateway | null = null;
  let ours: RouterMapping;

  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX, router: 'miniupnpd' });
    expect(env).toMatchObject({ ROUTER: 'miniupnpd', PORT_FORWARD: 0, AWS_SRCPORT_PIN: 0, NAT_WAN_IP: '11.22.33.7', GW_PUBLIC_IP: '11.22.33.7' });
    ours = { protocol: 'udp', externalPort: env.VXLAN_PORT, internalIp: env.GW_UNDERLAY_IP, internalPort: env.VXLAN_PORT };
    // What the gateway sends to the router's port-mapping ports (PCP and NAT-PMP share 5351; SSDP is 1900).
    await nsRun(env.NS_NAT, ['nft', '-f', '-'], {
      input: `
table inet vxpg_count {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${env.NAT_LAN_IF}" ip saddr ${env.GW_UNDERLAY_IP} udp dport 5351 counter
    iifname "${env.NAT_LAN_IF}" ip saddr ${env.GW_UNDERLAY_IP} udp dport 1900 counter
  }
}
`,
    });
    dir = await mkdtemp(path.join(tmpdir(), 'vxpg-'));
    mu = new Miniupnpd({
      ns: env.NS_NAT, wanIf: env.NAT_WAN_IF, lanIf: env.NAT_LAN_IF, lanNet: '192.0.2.0/24', dir,
      routerChains: true, maxLifetimeS: PCP_MAX_LIFETIME_S,
    });
    await mu.start();
  });

  afterEach(async () => {
    await gw?.cleanup();
    gw = null;
  });

  afterAll(async () => {
    await mu?.stop();
    await labDown(PREFIX);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The router's forwards of UDP 8472 (its DNAT chain). */
  const routerForwards = async () => (await mu.mappings()).filter((m) => m.externalPort === env.VXLAN_PORT);

  /** Requests the gateway sent to the router so far, by port. */
  async function mappingRequests(): Promise<{ 5351: number; 1900: number }> {
    const text = await nsRun(env.NS_NAT, ['nft', 'list', 'chain', 'inet', 'vxpg_count', 'input']);
    const n = (port: number) => Number(new RegExp(`udp dport ${port} counter packets (\\d+)`).exec(text)?.[1] ?? NaN);
    return { 5351: n(5351), 1900: n(1900) };
  }

  /** Each test starts on a router that holds no forward and has forgotten every flow. */
  async function freshRouter(): Promise<void> {
    if ((await mu.mappings()).length > 0) await mu.restart({ reboot: true });
    await nsRun(env.NS_NAT, ['conntrack', '-F']);
  }

  /** How `gateway(mode)` runs the gateway (and what a reload to `mode` writes). */
  const gatewayOptions = (mode: Mode | 'off') => ({
    keepaliveInterval: KEEPALIVE.interval,
    keepaliveTimeout: KEEPALIVE.timeout,
    // No configured public IP: the router's external address has to become the public endpoint.
    // Debug: each renewal is logged ("port mapping renewed"), which times PCP below.
    extra: { underlay: { publicIp: null }, nat: { portMapping: mode }, log: { level: 'debug' } },
  });

  function gateway(mode: Mode | 'off'): Promise<RunningGateway> {
    return startGateway(env, gatewayOptions(mode));
  }

  /** Pods on both AWS nodes reach the site host and the host reaches them (retried until the deadline). */
  async function podsAndHostReachEachOther(timeoutMs = 5_000): Promise<void> {
    const pairs: [string, string][] = [
      [env.NS_POD1, env.HOST_IP],
      [env.NS_POD2, env.HOST_IP],
      [env.NS_HOST, env.POD1_IP],
      [env.NS_HOST, env.POD2_IP],
    ];
    await Promise.all(
      pairs.map(([ns, dst]) =>
        waitFor(async () => (await ping(ns, dst, { count: 2, intervalMs: 100, timeoutMs: 1_000 })).ok, timeoutMs, 0).catch((e: Error) => {
          throw new Error(`${ns} -> ${dst}: ${e.message}\n--- vxedge output ---\n${gw?.output.slice(-4000)}`);
        }),
      ),
    );
  }

  const portMappingCheck = (s: HealthDocument) => s.checks.find((c) => c.name === 'port_mapping');

  it('off: not one request to the router, no forward, and the AWS nodes cannot get in', async () => {
    await freshRouter();
    const before = await mappingRequests();
    gw = await gateway('off');
    // The AWS nodes' answers to the keepalives die at the router: both peers go down.
    const s = await gw.waitStatus((d) => d.peers.length === 2 && d.peers.every((p) => p.state === 'down'), 10_000);
    expect(s.nat?.portMapping).toBeUndefined();
    expect(portMappingCheck(s)).toBeUndefined();
    expect(s.tunnel.publicEndpoint).toBe(`${env.GW_UNDERLAY_IP}:${env.VXLAN_PORT}`); // nothing better is known
    const nat0 = await snmpCounters(env.NS_NAT);
    const r = await ping(env.NS_POD1, env.HOST_IP, { count: 3, intervalMs: 100, timeoutMs: 1_500 });
    expect(r.received).toBe(0);
    await waitSnmpDelta(env.NS_NAT, 'Udp.NoPorts', nat0, 3, 5_000); // the frames died at the router's WAN
    expect(await routerForwards()).toEqual([]);
    expect(await gw.stop()).toBe(0);
    // Its whole run (more than keepalive.timeout) sent nothing to 5351 or 1900; the mapping
    // tests below show that the counter does count.
    expect(await mappingRequests()).toEqual(before);
  });

  it('a reload turns the mapping on (upnp): the forward lets the pods in; off again: the forward is deleted, the tunnel never reopened', async () => {
    await freshRouter();
    gw = await gateway('off');
    const g = gw;
    await g.waitStatus((d) => d.peers.length === 2 && d.peers.every((p) => p.state === 'down'), 10_000);
    expect(await routerForwards()).toEqual([]);
    const index = await tunnelDeviceIndex(env);
    const reload = (mode: Mode | 'off') => g.reload(labConfig(env, g.dir, gatewayOptions(mode)));

    await reload('upnp');
    const s = await g.waitStatus((d) => d.nat?.portMapping?.state === 'mapped', REMAP_DEADLINE_MS);
    expect(s.nat!.portMapping).toMatchObject({ protocol: 'upnp', mode: 'upnp', external: `${env.NAT_WAN_IP}:${env.VXLAN_PORT}` });
    expect(s.tunnel.publicEndpoint).toBe(`${env.NAT_WAN_IP}:${env.VXLAN_PORT}`);
    expect(s.reload).toMatchObject({ applied: ['nat.portMapping'], restartNeeded: [] });
    expect(await routerForwards()).toEqual([ours]);
    // As after a router reboot (the test below): the keepalive answers that met the router
    // without a forward keep their conntrack entry alive, so the probes to the down peers wait
    // for the router to forget them; then the peers come back. Pod flows hash to other source
    // ports and get in at once.
    const held = await g.waitLog(/^router forward made: probes to peers that are not up wait/, {}, 5_000);
    expect(held).toMatchObject({ peers: 2, waitS: 35 });
    await podsAndHostReachEachOther(10_000);
    await g.waitStatus((d) => Date.parse(d.ts) > Date.parse(held.ts) && d.peers.every((p) => p.state === 'up'), 45_000);

    await reload('off');
    await waitFor(async () => (await routerForwards()).length === 0, 10_000);
    const off = await g.waitStatus((d) => d.nat?.portMapping === undefined);
    expect(portMappingCheck(off)).toBeUndefined();
    expect(off.tunnel.publicEndpoint).toBe(`${env.GW_UNDERLAY_IP}:${env.VXLAN_PORT}`);
    expect(await tunnelDeviceIndex(env)).toBe(index);
  }, 90_000);

  it.each([
    ['pcp', 'pcp'],
    ['natpmp', 'natpmp'],
    ['upnp', 'upnp'],
    ['auto', 'pcp'],
  ] as const)('%s: the forward lets the pods in, is made again after a router reboot, and is deleted on SIGTERM', async (mode, protocol) => {
    await freshRouter();
    const before = await mappingRequests();
    gw = await gateway(mode);
    const g = gw;
    await g.waitStatus((d) => d.nat?.portMapping?.state === 'mapped', 10_000);
    expect(await routerForwards()).toEqual([ours]);
    await g.waitUp(10_000);

    const external = `${env.NAT_WAN_IP}:${env.VXLAN_PORT}`;
    const s = await g.waitStatus((d) => d.nat?.portMapping?.state === 'mapped' && portMappingCheck(d)?.ok === true);
    const pm = s.nat!.portMapping!;
    // What the router granted: PCP caps the ask (the router's max_lifetime); UPnP's is the
    // lease the router's entry has left when the gateway reads it back right after adding it
    // (miniupnpd counts whole seconds down from the ask), so a second may have ticked.
    const lifetime = pm.lifetime!;
    if (protocol === 'pcp') expect(lifetime).toBe(PCP_MAX_LIFETIME_S);
    else if (protocol === 'upnp') expect(ASKED_LIFETIME_S - lifetime).toBeOneOf([0, 1]);
    else expect(lifetime).toBe(ASKED_LIFETIME_S);
    expect(pm).toMatchObject({ protocol, external, error: null, mode, routerAddress: env.NAT_WAN_IP, routerRestarts: 0, stunAgrees: null });
    expect(Math.abs(Date.parse(pm.expires!) - Date.parse(pm.renewedAt!) - lifetime * 1000)).toBeLessThan(50);
    expect(portMappingCheck(s)!.detail).toContain(`${protocol} ${external} (lifetime ${lifetime}`);
    expect(s.tunnel.publicEndpoint).toBe(external);
    expect(s.checks.find((c) => c.name === 'public_endpoint')).toMatchObject({ ok: true, detail: `${external} (port-mapping)` });
    expect(s.nat!.advice).toContain(`AWS nodes get in at ${external} without a manual forward`);
    await podsAndHostReachEachOther();

    if (protocol === 'pcp') {
      // The router granted 6 s: the gateway renews within 3-3.75 s, and the forward outlives its first lifetime.
      const first = pm.renewedAt;
      await g.waitStatus((d) => d.nat?.portMapping?.renewedAt !== first, (PCP_MAX_LIFETIME_S / 2 + 2) * 1000);
    }
    // Only the protocol in use talked to the router: PCP and NAT-PMP on 5351, UPnP's SSDP on 1900.
    const sent = await mappingRequests();
    const [used, unused] = protocol === 'upnp' ? ([1900, 5351] as const) : ([5351, 1900] as const);
    expect(sent[used] - before[used]).toBeGreaterThan(0);
    expect(sent[unused] - before[unused]).toBe(0);

    // A power cycle: the router comes back without its forwards and without its conntrack table.
    // An epoch shows a restart only after the router has been up a few seconds (RFC 6887 §8.5,
    // RFC 6886 §3.6 allow 1-2 s of slack).
    await waitFor(() => mu.uptimeMs >= 5_000, 10_000, 100);
    await mu.restart({ reboot: true });
    expect(await routerForwards()).toEqual([]);
    await waitFor(async () => (await routerForwards()).length === 1, REMAP_DEADLINE_MS, 100).catch((e: Error) => {
      throw new Error(`no forward again after the reboot: ${e.message}\n--- vxedge output ---\n${g.output.slice(-4000)}`);
    });
    expect(await routerForwards()).toEqual([ours]);
    const after = await g.waitStatus((d) => (d.nat?.portMapping?.routerRestarts ?? 0) >= 1 && d.nat?.portMapping?.state === 'mapped', 5_000);
    // When the gateway noticed the restart (its "port mapping: <why>" warning), after its last
    // grant ("port mapping ready"/"renewed") before that, by its own log.
    const log = g.logEntries();
    const noticed = log.find((e) => /^port mapping: /.test(e.msg));
    expect(noticed, 'a "port mapping: ..." warning about the restart').toBeDefined();
    const grantsBefore = log.filter((e) => /^port mapping (ready|renewed)$/.test(e.msg) && Date.parse(e.ts) < Date.parse(noticed!.ts)).map((e) => Date.parse(e.ts));
    const noticedMs = Date.parse(noticed!.ts) - grantsBefore.at(-1)!;
    console.log(`[portmap gateway] ${mode}: restart noticed ${noticedMs} ms after the last grant before it (${noticed!.msg})`);
    if (protocol === 'pcp') {
      // PCP's timing is the behaviour: the router grants 6 s, the gateway renews 3-3.75 s later.
      // Before the reboot, one grant each 3-3.75 s (no earlier; late by at most LATE_MS). After
      // it, the restart is noticed within one renewal of the last grant, plus one retry at most
      // 1.5 s later if that renewal met the router still down (the peers going down may make it
      // look sooner).
      const gaps = grantsBefore.slice(1).map((t, i) => t - grantsBefore[i]);
      expect(gaps.length, 'PCP renewals before the reboot').toBeGreaterThan(0);
      for (const gap of gaps) {
        expect(gap, JSON.stringify(gaps)).toBeGreaterThanOrEqual(PCP_RENEW_MIN_MS - 5);
        expect(gap, JSON.stringify(gaps)).toBeLessThanOrEqual(PCP_RENEW_MAX_MS + LATE_MS);
      }
      expect(noticedMs).toBeLessThanOrEqual(PCP_RENEW_MAX_MS + PCP_RETRY_MS + LATE_MS);
    }
    expect(after.nat!.portMapping).toMatchObject({ protocol, external, error: null });
    if (protocol !== 'pcp') {
      // Nothing but the lost peers made the gateway look: the periodic check is a minute away.
      const said = protocol === 'upnp' ? 'checking the port mapping now' : 'renewing the port mapping now';
      expect(g.logEntries().some((e) => e.msg === said && e.why === 'peers down')).toBe(true);
    }
    await podsAndHostReachEachOther();

    expect(await g.stop()).toBe(0);
    expect(await routerForwards()).toEqual([]);
    expect(g.logEntries().some((e) => e.msg === 'port mapping deleted' && e.protocol === protocol)).toBe(true);
  }, 40_000);

  // Not UPnP: miniupnpd answers GetSpecificPortMappingEntry from its own rule cache, which a
  // flush by someone else does not touch, so the entry reads as present (docs/nat.md).
  it.each(['pcp', 'natpmp'] as const)('%s: a firewall reload that drops the forward while miniupnpd runs on (OpenWrt fw4 reload): put back once the peers go down', async (mode) => {
    await freshRouter();
    gw = await gateway(mode);
    const g = gw;
    await g.waitStatus((d) => d.nat?.portMapping?.state === 'mapped', 10_000);
    await g.waitUp(10_000);
    expect(await routerForwards()).toEqual([ours]);
    // The rules go, the daemon and its epoch stay: the protocol's own check (the epoch) sees
    // nothing, and NAT-PMP's renewal is an hour away (it granted 7200 s; PCP's is 3 s here).
    const t0 = performance.now();
    for (const chain of ['miniupnpd', 'prerouting_miniupnpd', 'postrouting_miniupnpd']) await nsRun(env.NS_NAT, ['nft', 'flush', 'chain', 'inet', MINIUPNPD_TABLE, chain]);
    await nsRun(env.NS_NAT, ['conntrack', '-F']);
    await waitFor(async () => (await routerForwards()).length === 1, REMAP_DEADLINE_MS, 100).catch((e: Error) => {
      throw new Error(`no forward again after the reload: ${e.message}\n--- vxedge output ---\n${g.output.slice(-4000)}`);
    });
    console.log(`[portmap gateway] ${mode}: forward back ${(performance.now() - t0).toFixed(0)} ms after the firewall reload`);
    expect(await routerForwards()).toEqual([ours]);
    await podsAndHostReachEachOther(15_000);
    expect(await g.stop()).toBe(0);
  }, 40_000);

  it('the router replaced by one at another address: the gateway asks the new one as soon as the default route names it', async () => {
    await freshRouter();
    gw = await gateway('pcp');
    const g = gw;
    const s = await g.waitStatus((d) => d.nat?.portMapping?.state === 'mapped', 10_000);
    expect(s.nat!.portMapping!.gateway).toBe(env.NAT_LAN_IP);
    await g.waitUp(10_000);
    const NEW_ROUTER = '192.0.2.254';
    try {
      // The old box goes (its forwards and flows with it); the new one answers at another
      // address of the same LAN, as after a swap of the ISP's router or a DHCP lease that
      // names another gateway.
      await mu.stop({ keepChains: true });
      for (const chain of ['miniupnpd', 'prerouting_miniupnpd', 'postrouting_miniupnpd']) await nsRun(env.NS_NAT, ['nft', 'flush', 'chain', 'inet', MINIUPNPD_TABLE, chain]);
      await nsRun(env.NS_NAT, ['conntrack', '-F']);
      // (Deleted first: deleting a primary address takes the secondaries of its subnet with it.)
      await nsRun(env.NS_NAT, ['ip', 'addr', 'del', `${env.NAT_LAN_IP}/24`, 'dev', env.NAT_LAN_IF]);
      await nsRun(env.NS_NAT, ['ip', 'addr', 'add', `${NEW_ROUTER}/24`, 'dev', env.NAT_LAN_IF]);
      await mu.start();
      const t0 = performance.now();
      await nsRun(env.NS_GW, ['ip', 'route', 'replace', 'default', 'via', NEW_ROUTER, 'dev', env.GW_UNDERLAY_IF]);
      // At the kernel's notice, not the 30 s refresh: the old router's delete (which times out:
      // it is gone) comes first, then the new one is asked.
      const after = await g.waitStatus((d) => d.nat?.portMapping?.gateway === NEW_ROUTER && d.nat.portMapping.state === 'mapped', 20_000).catch(async (e: Error) => {
        throw new Error(`not mapped on the new router: ${e.message}\n--- status ---\n${JSON.stringify((await g.status())?.nat)}\n--- vxedge output ---\n${g.output.slice(-4000)}`);
      });
      const ms = performance.now() - t0;
      console.log(`[portmap gateway] router replaced: mapped on the new one ${ms.toFixed(0)} ms after the default route changed`);
      expect(ms).toBeLessThan(20_000);
      expect(after.nat!.portMapping).toMatchObject({ protocol: 'pcp', external: `${env.NAT_WAN_IP}:${env.VXLAN_PORT}`, error: null });
      expect(await routerForwards()).toEqual([ours]);
      const said = g.logEntries().find((e) => e.msg === 'the site router changed: the port mapping follows it');
      expect(said).toMatchObject({ was: env.NAT_LAN_IP, now: NEW_ROUTER });
      await podsAndHostReachEachOther(15_000);
      expect(await g.stop()).toBe(0);
      expect(await routerForwards()).toEqual([]); // deleted on the new router at stop
    } finally {
      // The lab as the other tests expect it: the router at its address, the route through it.
      await mu.stop({ keepChains: true });
      await nsRun(env.NS_NAT, ['ip', 'addr', 'del', `${NEW_ROUTER}/24`, 'dev', env.NAT_LAN_IF]).catch(() => undefined);
      await nsRun(env.NS_NAT, ['ip', 'addr', 'add', `${env.NAT_LAN_IP}/24`, 'dev', env.NAT_LAN_IF]).catch(() => undefined);
      await nsRun(env.NS_GW, ['ip', 'route', 'replace', 'default', 'via', env.NAT_LAN_IP, 'dev', env.GW_UNDERLAY_IF]);
      await mu.start();
    }
  }, 60_000);

  it('after a reboot the probes to the down peers wait until the router forgot their answers, and the peers come back', async () => {
    // The AWS node answers a keepalive from a source port hashed from the inner addresses, the
    // same port every time. Between the reboot and the new forward those answers reach the
    // router and get a conntrack entry that delivers to the router itself (no DNAT); further
    // answers on that flow would keep it alive for ever. The gateway holds its probes to the
    // down peers for 35 s once the forward is back: the entry expires (5 s in this lab, 30 s on
    // a stock Linux router) and the next answer meets the forward. (Pod flows hash to other
    // source ports and meet the forward at once; they are left out until the peers are back.)
    await freshRouter();
    gw = await gateway('natpmp');
    const g = gw;
    await g.waitStatus((d) => d.nat?.portMapping?.state === 'mapped', 10_000);
    await g.waitUp(10_000);
    await waitFor(() => mu.uptimeMs >= 5_000, 10_000, 100);
    await mu.restart({ reboot: true });
    await waitFor(async () => (await routerForwards()).length === 1, REMAP_DEADLINE_MS, 100);
    const held = await g.waitLog(/^router forward made: probes to peers that are not up wait/, {}, 5_000);
    expect(held).toMatchObject({ peers: 2, waitS: 35 });
    // No pod traffic meanwhile (any frame from a peer counts as life): only the keepalives can
    // bring the peers back, and they do once the hold is over. Only documents made after the
    // hold count: the peers going down is what made the gateway look at the router again, so
    // the forward can be back before status.json (written at most every 250 ms) says so.
    const s = await g.waitStatus(
      (d) => Date.parse(d.ts) > Date.parse(held.ts) && d.peers.length === 2 && d.peers.every((p) => p.state === 'up'),
      45_000,
    );
    expect(Date.now() - Date.parse(held.ts)).toBeGreaterThanOrEqual(35_000);
    expect(s.nat?.portMapping).toMatchObject({ state: 'mapped', routerRestarts: 1 });
    await podsAndHostReachEachOther();
    expect(await g.stop()).toBe(0);
  }, 70_000);
});
