// The port mapper's state machine against an in-memory router (portmap-fakes.ts) on a
// ManualClock: which protocol `auto` picks and in what order, renewal timing, router restarts
// noticed through the epoch (PCP, NAT-PMP) or a missing entry (UPnP), a grant on the wrong
// external port released and explained, stop deleting the mapping, mode off sending nothing,
// and hostile answers bounded and counted.
import { describe, expect, it } from 'vitest';
import { PortMapper, isPublicIPv4, type PortMapperOptions } from '../../src/nat/portmap/portmapper.js';
import type { PortMappingMode } from '../../src/nat/portmap/client.js';
import { CaptureLog } from '../support/capture-log.js';
import { ManualClock, advanceUntil } from '../support/clock.js';
import { FakeRouter, GW, ME, WAN } from './portmap-fakes.js';

interface Rig {
  clock: ManualClock;
  router: FakeRouter;
  pm: PortMapper;
  log: CaptureLog;
  addresses: string[];
}

function rig(mode: PortMappingMode, opts: Partial<PortMapperOptions> = {}, setup: (r: FakeRouter) => void = () => {}, random = () => 0.5): Rig {
  const clock = new ManualClock();
  const router = new FakeRouter(clock);
  setup(router);
  const log = new CaptureLog();
  let n = 0;
  const pm = new PortMapper({
    mode,
    gateway: GW,
    localAddress: ME,
    port: 8472,
    clock,
    log,
    deps: { udp: router.udp, http: router.http, random, nonce: () => Buffer.alloc(12, ++n) },
    ...opts,
  });
  const addresses: string[] = [];
  pm.onExternalAddress((ip) => addresses.push(ip));
  return { clock, router, pm, log, addresses };
}

async function started(r: Rig, ms = 8000): Promise<Rig> {
  r.pm.start();
  await r.clock.advanceAsync(ms);
  return r;
}

function expectNoInternalErrors(r: Rig): void {
  expect(r.log.lines.filter((l) => l.level === 'error')).toEqual([]);
}

describe('PortMapper: choosing a protocol', () => {
  it('auto maps with PCP when the router speaks everything, and reports it', async () => {
    const r = await started(rig('auto'));
    const s = r.pm.status();
    expect(s).toMatchObject({ protocol: 'pcp', external: `${WAN}:8472`, lifetime: 7200, error: null, state: 'mapped', routerAddress: WAN });
    expect(Date.parse(s.expires!) - r.clock.now()).toBeGreaterThan(7190_000);
    expect(s.tried).toEqual([{ protocol: 'pcp', outcome: 'mapped', result: `mapped ${WAN}:8472` }]);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, internalPort: 8472, via: 'pcp' });
    expect(r.router.requests('natpmp-map')).toHaveLength(0);
    expect(r.router.httpLog).toHaveLength(0);
    expect(r.addresses).toEqual([WAN]);
    expectNoInternalErrors(r);
  });

  it('auto falls back PCP → NAT-PMP when the router answers PCP in NAT-PMP form (UNSUPPORTED_VERSION)', async () => {
    const r = await started(rig('auto', {}, (x) => (x.pcp = false)));
    expect(r.pm.status()).toMatchObject({ protocol: 'natpmp', external: `${WAN}:8472`, state: 'mapped' });
    expect(r.pm.status().tried.map((t) => [t.protocol, t.outcome])).toEqual([['pcp', 'absent'], ['natpmp', 'mapped']]);
    expect(r.pm.status().tried[0].result).toMatch(/NAT-PMP only/);
    // One PCP request was enough: the NAT-PMP-form answer is definite.
    expect(r.router.requests('pcp-map')).toHaveLength(1);
    expect(r.router.mapping(8472)?.via).toBe('natpmp');
  });

  it('auto falls back to UPnP when port 5351 is closed (ICMP unreachable ends PCP and NAT-PMP at once)', async () => {
    const r = await started(rig('auto', {}, (x) => { x.pcp = false; x.natpmp = false; }));
    const s = r.pm.status();
    expect(s).toMatchObject({ protocol: 'upnp', external: `${WAN}:8472`, state: 'mapped' });
    expect(s.tried.map((t) => [t.protocol, t.outcome])).toEqual([['pcp', 'absent'], ['natpmp', 'absent'], ['upnp', 'mapped']]);
    expect(s.tried[0].result).toMatch(/ICMP port unreachable/);
    expect(r.router.requests('pcp-map')).toHaveLength(1);
    expect(r.router.requests('natpmp-map')).toHaveLength(1);
    expect(r.router.soapActions()).toEqual(['AddPortMapping', 'GetSpecificPortMappingEntry', 'GetExternalIPAddress']);
    // The description and SOAP went to the router only, never to the LAN host that answered the multicast.
    expect(new Set(r.router.httpLog.map((q) => q.host))).toEqual(new Set([GW]));
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, via: 'upnp', description: 'vxedge' });
  });

  it('auto gives each silent protocol its bounded schedule, then fails with the remedies and retries with backoff', async () => {
    const r = rig('auto', {}, (x) => { x.pcp = false; x.natpmp = false; x.upnp = false; x.port5351 = 'silent'; });
    r.pm.start();
    await r.clock.advanceAsync(8000);
    const s = r.pm.status();
    expect(s.state).toBe('failed');
    expect(s.protocol).toBeNull();
    expect(r.router.requests('pcp-map')).toHaveLength(3);
    expect(r.router.requests('natpmp-map')).toHaveLength(3);
    expect(r.router.requests('ssdp').length).toBeGreaterThan(0);
    expect(s.tried.map((t) => t.outcome)).toEqual(['absent', 'absent', 'absent']);
    expect(s.error).toContain(`the router ${GW} does not answer PCP, NAT-PMP, UPnP IGD`);
    expect(s.error).toContain('no answer from 192.0.2.1:5351 to 3 requests in 1.75 s');
    expect(s.error).toContain(`forward UDP 8472 to ${ME}:8472`);
    expect(s.error).toContain('srcport 8472 8473');
    // Backoff: 15 s, then 30 s.
    const first = Date.parse(s.retryAt!) - r.clock.now();
    expect(first).toBeGreaterThan(10_000);
    expect(first).toBeLessThanOrEqual(15_000);
    const before = r.router.requests('pcp-map').length;
    await r.clock.advanceAsync(first + 8000);
    expect(r.router.requests('pcp-map').length).toBe(before + 3);
    const second = Date.parse(r.pm.status().retryAt!) - r.clock.now();
    expect(second).toBeGreaterThan(first);
    // The same failure is logged as a warning once, not on every retry.
    expect(r.log.lines.filter((l) => l.level === 'warn' && l.msg.startsWith('port mapping failed'))).toHaveLength(1);
    expect(r.addresses).toEqual([]);
  });

  it('a forced protocol uses only that protocol', async () => {
    const r = await started(rig('upnp'));
    expect(r.pm.status().protocol).toBe('upnp');
    expect(r.router.requests('pcp-map')).toHaveLength(0);
    expect(r.router.requests('natpmp-map')).toHaveLength(0);
    const n = await started(rig('natpmp', {}, (x) => (x.pcp = false)));
    expect(n.pm.status().tried.map((t) => t.protocol)).toEqual(['natpmp']);
    expect(n.router.requests('pcp-map')).toHaveLength(0);
  });

  it('a forced protocol the router does not speak: the error says to let auto try the others, not to turn on what the router has', async () => {
    // This router speaks NAT-PMP and UPnP IGD, not PCP.
    const r = await started(rig('pcp', {}, (x) => (x.pcp = false)));
    const s = r.pm.status();
    expect(s).toMatchObject({ state: 'failed', protocol: null });
    expect(s.error).toContain(`the router ${GW} does not answer PCP (PCP: the router speaks NAT-PMP only`);
    expect(s.error).toContain('the only protocol nat.portMapping (pcp) allows. Set nat.portMapping to auto (PCP, NAT-PMP and UPnP IGD in turn), turn on PCP on the router');
    expect(s.error).toContain(`forward UDP 8472 to ${ME}:8472`);
    expect(s.error).not.toContain('Turn on UPnP IGD');
  });
});

describe('PortMapper: keeping the mapping', () => {
  it('PCP renews at a random point between 1/2 and 5/8 of the lifetime (RFC 6887 §11.2.1), with the same nonce, and moves expires', async () => {
    // random() just below 1 and 0.5: due 375 and 337.5 s into 600 (the clock moves in 1 s steps).
    for (const [random, dueMs] of [[0.9999, 375_000], [0.5, 337_500]] as const) {
      const r = await started(rig('pcp', { lifetimeS: 600 }, undefined, () => random));
      const mappedAt = Date.parse(r.pm.status().renewedAt!);
      await advanceUntil(r.clock, () => r.router.requests('pcp-map').length === 2, 400_000);
      expect(r.clock.now() - mappedAt).toBeGreaterThanOrEqual(dueMs);
      expect(r.clock.now() - mappedAt).toBeLessThanOrEqual(dueMs + 1000);
    }
    const r = await started(rig('pcp', { lifetimeS: 600 }, undefined, () => 0));
    const maps = () => r.router.requests('pcp-map');
    expect(maps()).toHaveLength(1);
    const expires1 = r.pm.status().expires;
    await r.clock.advanceAsync(290_000);
    expect(maps()).toHaveLength(1);
    await r.clock.advanceAsync(20_000);
    expect(maps()).toHaveLength(2);
    expect(maps()[1].data.subarray(24, 36)).toEqual(maps()[0].data.subarray(24, 36));
    // The renewal suggests the external address it was given.
    expect([...maps()[1].data.subarray(56, 60)].join('.')).toBe(WAN);
    expect(Date.parse(r.pm.status().expires!)).toBeGreaterThan(Date.parse(expires1!));
    expect(r.pm.status().state).toBe('mapped');
  });

  it('renews at half of a shorter lifetime the router grants', async () => {
    const r = await started(rig('natpmp', { lifetimeS: 7200 }, (x) => (x.lifetimeRange = [60, 600])));
    expect(r.pm.status().lifetime).toBe(600);
    const maps = () => r.router.requests('natpmp-map').length;
    await r.clock.advanceAsync(285_000);
    expect(maps()).toBe(1);
    await r.clock.advanceAsync(15_000);
    expect(maps()).toBe(2);
  });

  it('PCP: a router restart (epoch going back) is noticed by the next check and the mapping is made again', async () => {
    const r = await started(rig('pcp', { checkIntervalS: 60 }));
    await r.clock.advanceAsync(120_000);
    expect(r.router.requests('pcp-announce').length).toBeGreaterThanOrEqual(2);
    r.router.restart();
    expect(r.router.mapping(8472)).toBeUndefined();
    await r.clock.advanceAsync(65_000);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, via: 'pcp' });
    expect(r.pm.status()).toMatchObject({ state: 'mapped', routerRestarts: 1, protocol: 'pcp' });
    expect(r.log.lines.some((l) => l.level === 'warn' && /epoch .* restarted or lost its mappings/.test(l.msg))).toBe(true);
  });

  it('PCP: an epoch that did not advance with our clock (router restarted between renewals) counts as a restart', async () => {
    // No checks in between: the renewal itself sees the implausible epoch.
    const r = await started(rig('pcp', { lifetimeS: 600, checkIntervalS: 10_000 }));
    await r.clock.advanceAsync(100_000);
    r.router.restart();
    await r.clock.advanceAsync(250_000);
    expect(r.router.requests('pcp-map')).toHaveLength(2);
    expect(r.pm.status().routerRestarts).toBe(1);
    expect(r.router.mapping(8472)?.via).toBe('pcp');
  });

  it('NAT-PMP: a restart noticed through the address request, and the mapping made again', async () => {
    const r = await started(rig('natpmp', { checkIntervalS: 30 }));
    await r.clock.advanceAsync(60_000);
    r.router.restart();
    await r.clock.advanceAsync(35_000);
    expect(r.pm.status().routerRestarts).toBe(1);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, via: 'natpmp' });
    expect(r.router.requests('natpmp-map')).toHaveLength(2);
  });

  it('UPnP: a restart (control URL moved, entry gone) is noticed by the check and the mapping made again', async () => {
    const r = await started(rig('upnp', { checkIntervalS: 60 }));
    r.router.restart();
    await r.clock.advanceAsync(65_000);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, via: 'upnp' });
    expect(r.pm.status()).toMatchObject({ state: 'mapped', routerRestarts: 1 });
    expect(r.router.requests('ssdp').length).toBeGreaterThan(2); // searched again
  });

  it('UPnP: the entry dropped by the router (714) is noticed and re-added', async () => {
    const r = await started(rig('upnp', { checkIntervalS: 60 }));
    r.router.mappings.clear();
    await r.clock.advanceAsync(61_000);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME });
    expect(r.pm.status().routerRestarts).toBe(1);
    expect(r.router.soapActions().filter((a) => a === 'AddPortMapping')).toHaveLength(2);
  });

  it('UPnP: a router that answers 718 to re-adding our own entry (a previous run\'s, or ours on renewal) gets it deleted and added again', async () => {
    // Our previous run crashed and left its entry; this router refuses to overwrite any entry.
    const r = rig('upnp', { lifetimeS: 600, checkIntervalS: 10_000 }, (x) => {
      x.upnpConflictOnOwn = true;
      x.mappings.set(8472, { client: ME, internalPort: 8472, expiresAt: x.clock.monotonic() + 3000_000, via: 'upnp', description: 'vxedge' });
    });
    await started(r);
    expect(r.pm.status()).toMatchObject({ state: 'mapped', protocol: 'upnp', lifetime: 600, error: null });
    expect(r.router.soapActions().slice(0, 4)).toEqual(['AddPortMapping', 'GetSpecificPortMappingEntry', 'DeletePortMapping', 'AddPortMapping']);
    expect(r.router.mapping(8472)!.expiresAt - r.clock.monotonic()).toBeLessThanOrEqual(600_000);
    // The renewal at half the lifetime meets the same refusal, and the same remedy.
    const adds = () => r.router.soapActions().filter((a) => a === 'AddPortMapping').length;
    await r.clock.advanceAsync(301_000);
    expect(adds()).toBe(4);
    expect(r.pm.status()).toMatchObject({ state: 'mapped', error: null });
    expect(r.router.mapping(8472)!.expiresAt - r.clock.monotonic()).toBeGreaterThan(590_000);
    expectNoInternalErrors(r);
  });

  it('UPnP: OnlyPermanentLeasesSupported (725) is retried with lease 0 and reported as permanent', async () => {
    const r = await started(rig('upnp', {}, (x) => (x.onlyPermanentLeases = true)));
    expect(r.pm.status()).toMatchObject({ protocol: 'upnp', lifetime: null, expires: null, state: 'mapped' });
    expect(r.router.mapping(8472)?.expiresAt).toBe(Infinity);
  });

  it('a renewal that gets no answer is retried until expiry, then the mapping is made from scratch', async () => {
    const r = await started(rig('pcp', { lifetimeS: 240, checkIntervalS: 10_000 }, (x) => (x.lifetimeRange = [1, 86400])));
    const mappedAt = r.clock.monotonic();
    r.router.pcp = false;
    r.router.natpmp = false;
    r.router.port5351 = 'silent';
    await advanceUntil(r.clock, () => /renewing the PCP mapping failed/.test(r.pm.status().error ?? ''), 300_000);
    // The renewal ran the RFC schedule (5 requests, 3 s doubling ± 10 %) from half the lifetime on.
    expect(r.clock.monotonic() - mappedAt).toBeGreaterThan(120_000 + 80_000);
    expect(r.pm.status().state).toBe('mapped');
    expect(r.pm.status().error).toMatch(/no answer from 192\.0\.2\.1:5351 to 5 requests.*holds until/);
    await advanceUntil(r.clock, () => r.pm.status().state === 'failed', 300_000);
    expect(r.log.lines.some((l) => l.msg.startsWith('port mapping expired'))).toBe(true);
    r.router.pcp = true;
    await advanceUntil(r.clock, () => r.pm.status().state === 'mapped', 120_000);
    expect(r.pm.status().error).toBeNull();
    expect(r.router.mapping(8472)?.via).toBe('pcp');
  });

  it.each(['pcp', 'natpmp'] as const)('%s: a renewal still retransmitting when the mapping expires stops there; the mapping is no longer reported or announced', async (mode) => {
    // 120 s granted: the renewal starts at 60 s, and the RFC schedule (PCP 93 s, NAT-PMP 128 s) would outlast the expiry.
    const r = await started(rig(mode, { lifetimeS: 120, checkIntervalS: 10_000 }, (x) => (x.lifetimeRange = [1, 86400])), 1000);
    const expiresAt = Date.parse(r.pm.status().expires!);
    r.router.pcp = false;
    r.router.natpmp = false;
    r.router.port5351 = 'silent';
    await r.clock.advanceAsync(expiresAt - r.clock.now() - 1000);
    expect(r.pm.status().state).toBe('mapped');
    await r.clock.advanceAsync(1000);
    expect(r.pm.status().state).not.toBe('mapped');
    expect(r.pm.mappedAddress()).toBeNull();
    const expired = r.log.lines.find((l) => l.msg.startsWith('port mapping expired'));
    expect(expired?.fields?.why).toMatch(/no answer before it expired/);
    expectNoInternalErrors(r);
  });

  it('NAT-PMP: a renewal whose address request goes unanswered keeps the known external address', async () => {
    const r = await started(rig('natpmp', { lifetimeS: 600, checkIntervalS: 10_000 }));
    expect(r.pm.status().external).toBe(`${WAN}:8472`);
    r.router.natpmpAddressSilent = true;
    await advanceUntil(r.clock, () => r.router.requests('natpmp-map').length === 2, 400_000);
    await r.clock.advanceAsync(3000); // the address request's 3 tries
    expect(r.pm.status()).toMatchObject({ state: 'mapped', external: `${WAN}:8472` });
    expect(r.pm.mappedAddress()).toBe(WAN);
  });

  it('reports a changed external address once, and a private one as an error instead of an endpoint', async () => {
    const r = await started(rig('natpmp', { checkIntervalS: 30 }));
    r.router.externalIp = '11.22.33.99';
    await r.clock.advanceAsync(31_000);
    expect(r.addresses).toEqual([WAN, '11.22.33.99']);
    expect(r.pm.status().external).toBe('11.22.33.99:8472'); // NAT-PMP maps on the router's one address
    r.router.externalIp = '100.64.1.2';
    await r.clock.advanceAsync(31_000);
    expect(r.addresses).toEqual([WAN, '11.22.33.99']);
    expect(r.pm.status().error).toMatch(/100\.64\.1\.2 is not public \(carrier-grade or double NAT\)/);
    expect(r.pm.status().routerAddress).toBe('100.64.1.2');
  });
});

describe('PortMapper: recheck() when every peer went down', () => {
  // The gateway calls recheck() when it loses every peer at once. Without it, a router that
  // restarted and forgot our forward is only noticed at the next periodic check (60 s by
  // default), and with NAT-PMP/UPnP leases of hours no renewal comes sooner either.
  it.each(['pcp', 'natpmp', 'upnp'] as const)('%s: a restarted router is looked at and the mapping made again at once, not at the next check', async (mode) => {
    const r = await started(rig(mode, { checkIntervalS: 3600 }));
    await r.clock.advanceAsync(60_000); // the router's epoch moves on, so that a restart shows
    r.router.restart();
    await r.clock.advanceAsync(10_000);
    expect(r.router.mapping(8472)).toBeUndefined(); // nothing looks on its own for an hour
    r.pm.recheck('peers down');
    await r.clock.advanceAsync(3000);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, via: mode });
    expect(r.pm.status()).toMatchObject({ state: 'mapped', routerRestarts: 1, protocol: mode });
    const said = mode === 'upnp' ? 'checking the port mapping now' : 'renewing the port mapping now';
    expect(r.log.lines.some((l) => l.msg === said && l.fields?.why === 'peers down')).toBe(true);
    expectNoInternalErrors(r);
  });

  it.each(['pcp', 'natpmp', 'upnp'] as const)('%s: a forward dropped without a restart (a firewall reload: the epoch goes on) is put back at once', async (mode) => {
    const r = await started(rig(mode, { checkIntervalS: 3600 }));
    await r.clock.advanceAsync(60_000);
    r.router.mappings.delete(8472); // OpenWrt's `fw4 reload`: miniupnpd's rules gone, the daemon and its epoch running on
    r.pm.recheck('peers down');
    await r.clock.advanceAsync(3000);
    expect(r.router.mapping(8472)).toMatchObject({ client: ME, via: mode });
    expect(r.pm.status()).toMatchObject({ state: 'mapped', protocol: mode });
    expectNoInternalErrors(r);
  });

  it('a NAT-PMP mapping still in place is renewed in place: one request, the same mapping, no restart counted', async () => {
    const r = await started(rig('natpmp', { checkIntervalS: 3600 }));
    const maps = r.router.requests('natpmp-map').length;
    const before = r.router.mapping(8472);
    r.pm.recheck('peers down');
    await r.clock.advanceAsync(2000);
    expect(r.router.requests('natpmp-map').length).toBe(maps + 1);
    expect(r.router.mapping(8472)).toMatchObject({ client: before!.client, via: 'natpmp' });
    expect(r.pm.status()).toMatchObject({ state: 'mapped', routerRestarts: 0, external: `${WAN}:8472` });
  });

  it('a UPnP mapping still in place is left alone: one read of its entry, no new mapping', async () => {
    const r = await started(rig('upnp', { checkIntervalS: 3600 }));
    const soap = (action: string) => r.router.httpLog.filter((h) => h.body?.includes(action)).length;
    const adds = soap('AddPortMapping');
    r.pm.recheck('peers down');
    await r.clock.advanceAsync(2000);
    expect(soap('GetSpecificPortMappingEntry')).toBeGreaterThan(0);
    expect(soap('AddPortMapping')).toBe(adds);
    expect(r.pm.status()).toMatchObject({ state: 'mapped', routerRestarts: 0 });
  });

  it('is spaced: repeated calls within 5 s send one renewal', async () => {
    const r = await started(rig('pcp', { checkIntervalS: 3600 }));
    const renewals = () => r.router.requests('pcp-map').length;
    const before = renewals();
    for (let i = 0; i < 4; i++) {
      r.pm.recheck('peers down');
      await r.clock.advanceAsync(1000);
    }
    expect(renewals()).toBe(before + 1);
    await r.clock.advanceAsync(2000);
    r.pm.recheck('peers down');
    await r.clock.advanceAsync(1000);
    expect(renewals()).toBe(before + 2);
  });

  it('does nothing unless a mapping is in place: off, before start, failed, stopped', async () => {
    const off = rig('off');
    off.pm.start();
    off.pm.recheck('peers down');
    await off.clock.advanceAsync(2000);
    expect(off.router.sent).toEqual([]);

    const idle = rig('natpmp');
    idle.pm.recheck('peers down');
    await idle.clock.advanceAsync(2000);
    expect(idle.router.sent).toEqual([]);

    const failed = await started(rig('natpmp', {}, (x) => { x.natpmp = false; x.port5351 = 'silent'; }));
    expect(failed.pm.status().state).toBe('failed');
    const sent = failed.router.sent.length;
    failed.pm.recheck('peers down');
    await failed.clock.advanceAsync(2000); // the retry is 15 s after the failure, not now
    expect(failed.router.sent.length).toBe(sent);

    const stopped = await started(rig('upnp'));
    await stopped.pm.stop();
    const total = stopped.router.sent.length + stopped.router.httpLog.length;
    stopped.pm.recheck('peers down');
    await stopped.clock.advanceAsync(5000);
    expect(stopped.router.sent.length + stopped.router.httpLog.length).toBe(total);
  });
});

describe('PortMapper: networkChanged() when the uplink is back', () => {
  // A router that restarts takes its LAN port down meanwhile: the gateway's underlay check
  // fails, and passes again once the router is up. The mapping failed while it was away, and
  // its next retry could be up to 10 min off.
  const away = (router: FakeRouter, on: boolean) => {
    router.pcp = on;
    router.natpmp = on;
    router.port5351 = 'silent';
  };

  it.each(['pcp', 'natpmp'] as const)('%s: a mapping that failed while the router was away is made again at once, the backoff started afresh', async (mode) => {
    const r = rig(mode, { checkIntervalS: 3600 }, (x) => away(x, false));
    r.pm.start();
    // Away long enough for the backoff to grow past a few minutes.
    await advanceUntil(r.clock, () => (r.pm.status().retryAt !== null && Date.parse(r.pm.status().retryAt!) - r.clock.now() >= 240_000), 3_600_000);
    expect(r.pm.status().state).toBe('failed');
    away(r.router, true);
    r.pm.networkChanged('the uplink is back');
    await r.clock.advanceAsync(3000);
    expect(r.pm.status()).toMatchObject({ state: 'mapped', protocol: mode });
    expect(r.log.lines.some((l) => l.msg === 'trying the port mapping again now' && l.fields?.why === 'the uplink is back')).toBe(true);
    // And without it, the mapper would have waited for its retry.
    const idle = rig(mode, { checkIntervalS: 3600 }, (x) => away(x, false));
    idle.pm.start();
    await advanceUntil(idle.clock, () => (idle.pm.status().retryAt !== null && Date.parse(idle.pm.status().retryAt!) - idle.clock.now() >= 240_000), 3_600_000);
    away(idle.router, true);
    await idle.clock.advanceAsync(3000);
    expect(idle.pm.status().state).toBe('failed');
    expectNoInternalErrors(r);
  });

  it('a live mapping is looked at, as recheck() does; repeated calls within 5 s are one; nothing before start', async () => {
    const r = await started(rig('natpmp', { checkIntervalS: 3600 }));
    const address = () => r.router.requests('natpmp-address').length;
    const before = address();
    r.pm.networkChanged('the uplink is back');
    r.pm.networkChanged('the uplink is back');
    await r.clock.advanceAsync(2000);
    expect(address()).toBe(before + 1);
    const idle = rig('natpmp');
    idle.pm.networkChanged('the uplink is back');
    await idle.clock.advanceAsync(2000);
    expect(idle.router.sent).toEqual([]);
  });
});

describe('PortMapper: the wrong external port', () => {
  it('PCP grants another port: released at once, reported with the remedies', async () => {
    const r = await started(rig('pcp', {}, (x) => (x.grantPort = 8473)));
    const s = r.pm.status();
    expect(s).toMatchObject({ state: 'failed', protocol: null, external: null });
    expect(r.router.mapping(8473)).toBeUndefined(); // released
    const maps = r.router.requests('pcp-map');
    expect(maps.map((m) => m.data.readUInt32BE(4))).toEqual([7200, 0]);
    expect(maps[1].data.readUInt16BE(42)).toBe(8473);
    expect(s.tried).toEqual([{ protocol: 'pcp', outcome: 'wrong-port', result: 'the router offered external port 8473 instead of 8472; released it' }]);
    expect(s.error).toContain('AWS nodes always send to <public IP>:8472');
    expect(s.error).toContain(`forward UDP 8472 to ${ME}:8472`);
    expect(s.error).toContain('srcport 8472 8473');
  });

  it('auto: 8472 held by another host: PCP and NAT-PMP offer 8473 (released), UPnP says ConflictInMappingEntry and names the holder', async () => {
    const r = await started(
      rig('auto', {}, (x) => {
        x.mappings.set(8472, { client: '192.0.2.11', internalPort: 8472, expiresAt: Infinity, via: 'upnp', description: 'other' });
      }),
    );
    const s = r.pm.status();
    expect(s.tried.map((t) => [t.protocol, t.outcome])).toEqual([['pcp', 'wrong-port'], ['natpmp', 'wrong-port'], ['upnp', 'refused']]);
    expect(s.tried[2].result).toContain('UPnPError 718 ConflictInMappingEntry');
    expect(s.tried[2].result).toContain('192.0.2.11:8472');
    expect(r.router.mapping(8473)).toBeUndefined();
    expect(r.router.mapping(8472)?.client).toBe('192.0.2.11');
    expect(s.error).toMatch(/only to another external port/);
  });

  it('after a restart the router gives another port on renewal: released, failed, retried later', async () => {
    const r = await started(rig('natpmp', { lifetimeS: 600 }));
    r.router.restart();
    r.router.grantPort = 9000;
    await r.clock.advanceAsync(301_000);
    expect(r.pm.status()).toMatchObject({ state: 'failed', protocol: null });
    expect(r.pm.status().error).toMatch(/offered external port 9000/);
    expect(r.router.mapping(9000)).toBeUndefined();
  });
});

describe('PortMapper: refusals and hostile answers', () => {
  it('PCP result codes are reported by name; an error lifetime delays the retry', async () => {
    const r = await started(rig('pcp', {}, (x) => (x.pcpResult = { code: 2, lifetimeS: 120 })));
    const s = r.pm.status();
    expect(s.tried[0]).toMatchObject({ outcome: 'refused' });
    expect(s.tried[0].result).toContain('NOT_AUTHORIZED (2)');
    expect(Date.parse(s.retryAt!) - r.clock.now()).toBeGreaterThan(100_000);
  });

  it('NAT-PMP result codes are reported by name', async () => {
    const r = await started(rig('natpmp', {}, (x) => (x.natpmpResult = 3)));
    expect(r.pm.status().tried[0].result).toContain('NETWORK_FAILURE (3)');
  });

  it('UPnP faults are reported by name (606 Action not authorized)', async () => {
    const r = await started(rig('upnp', {}, (x) => (x.upnpAddFault = 606)));
    expect(r.pm.status().error).toContain('UPnPError 606 Action not authorized');
  });

  it('garbage and answers with a foreign nonce are counted and ignored; the real answer still maps', async () => {
    const r = await started(rig('pcp', {}, (x) => (x.garbageBefore = 5)));
    expect(r.pm.status()).toMatchObject({ state: 'mapped', protocol: 'pcp' });
    expect(r.pm.status().badAnswers.pcp).toBe(5);
    const n = await started(rig('pcp', {}, (x) => (x.pcpNonceOverride = Buffer.alloc(12, 0xee))));
    expect(n.pm.status()).toMatchObject({ state: 'failed' });
    expect(n.pm.status().badAnswers.pcp).toBe(3);
    expect(n.pm.status().tried[0].result).toMatch(/no answer .* to 3 requests/);
  });

  it('a LAN full of other UPnP devices answering the multicast search does not hide the router', async () => {
    // The router answers only the multicast search, after 100 datagrams from media servers and printers.
    const r = await started(rig('upnp', {}, (x) => { x.ssdpUnicast = false; x.lanChatter = 100; }));
    expect(r.pm.status()).toMatchObject({ state: 'mapped', protocol: 'upnp' });
    expect(r.pm.status().badAnswers.upnp).toBe(0); // other hosts' answers are not the router's bad answers
    expect(new Set(r.router.httpLog.map((q) => q.host))).toEqual(new Set([GW]));
  });

  it('an HTTP server that never finishes is cut off by the deadline', async () => {
    const r = rig('upnp', {}, (x) => (x.httpHangs = true));
    r.pm.start();
    await r.clock.advanceAsync(10_000);
    expect(r.pm.status().state).toBe('failed');
    expect(r.pm.status().error).toContain('no complete answer within 2 s');
    expectNoInternalErrors(r);
  });

  it('an SSDP flood is bounded and garbled SOAP is counted, never a crash', async () => {
    const r = await started(rig('upnp', {}, (x) => (x.ssdpFlood = 500)));
    expect(r.pm.status().state).toBe('failed');
    expect(r.pm.status().badAnswers.upnp).toBeGreaterThan(0);
    expect(r.pm.status().badAnswers.upnp).toBeLessThanOrEqual(64);
    const g = await started(rig('upnp', {}, (x) => (x.soapBody = '<s:Envelope><s:Body><oops')));
    expect(g.pm.status().state).toBe('failed');
    expect(g.pm.status().error).toMatch(/without a SOAP envelope/);
    expectNoInternalErrors(g);
  });
});

describe('PortMapper: stop, off, probe', () => {
  it.each(['pcp', 'natpmp', 'upnp'] as const)('stop deletes the %s mapping', async (mode) => {
    const r = await started(rig(mode));
    expect(r.router.mapping(8472)).toBeDefined();
    await r.pm.stop();
    expect(r.router.mapping(8472)).toBeUndefined();
    expect(r.pm.status()).toMatchObject({ state: 'stopped', protocol: null, external: null });
    const sent = r.router.sent.length + r.router.httpLog.length;
    await r.clock.advanceAsync(7200_000);
    expect(r.router.sent.length + r.router.httpLog.length).toBe(sent); // nothing after stop
  });

  it('UPnP: stop leaves alone a forward of the port that another host holds by now', async () => {
    // The router restarted and another host took UDP 8472 before our next check noticed.
    const r = await started(rig('upnp', { checkIntervalS: 3600 }));
    r.router.mappings.set(8472, { client: '192.0.2.11', internalPort: 8472, expiresAt: Infinity, via: 'upnp', description: 'other' });
    await r.pm.stop();
    expect(r.router.mapping(8472)).toMatchObject({ client: '192.0.2.11' });
    expect(r.router.soapActions()).not.toContain('DeletePortMapping');
    expect(r.log.lines.some((l) => l.level === 'warn' && /192\.0\.2\.11:8472/.test(`${l.msg} ${JSON.stringify(l.fields)}`))).toBe(true);
  });

  it('stop during a slow attempt returns promptly and leaves nothing behind', async () => {
    const r = rig('auto', {}, (x) => { x.pcp = false; x.natpmp = false; x.port5351 = 'silent'; });
    r.pm.start();
    await r.clock.advanceAsync(300);
    await r.pm.stop();
    expect(r.pm.status().state).toBe('stopped');
    const sent = r.router.sent.length;
    await r.clock.advanceAsync(60_000);
    expect(r.router.sent.length).toBe(sent);
  });

  it('mode off never sends a packet, not even for probe()', async () => {
    const r = rig('off');
    r.pm.start();
    await r.clock.advanceAsync(3600_000);
    const probe = await r.pm.probe();
    await r.pm.stop();
    expect(r.router.sent).toEqual([]);
    expect(r.router.httpLog).toEqual([]);
    expect(r.pm.status()).toMatchObject({ state: 'off', protocol: null, error: null, mode: 'off' });
    expect(probe.every((p) => !p.ok && p.detail.includes('off'))).toBe(true);
  });

  it('probe() says which protocols answer, within its deadline, without making a mapping', async () => {
    const r = rig('auto', {}, (x) => { x.pcp = false; x.port5351 = 'silent'; });
    const p = r.pm.probe();
    await r.clock.advanceAsync(6000);
    const res = await p;
    expect(res.map((x) => [x.protocol, x.ok])).toEqual([['pcp', false], ['natpmp', true], ['upnp', true]]);
    expect(res[0].detail).toMatch(/NAT-PMP only/);
    expect(res[1].detail).toContain(`external address ${WAN}`);
    expect(res[2].detail).toContain('WANIPConnection:2');
    expect(r.router.mappings.size).toBe(0);
    expect(r.router.soapActions()).toEqual(['GetExternalIPAddress']);
  });

  it('onChange fires on state changes, not on every renewal', async () => {
    const r = rig('pcp', { lifetimeS: 600 });
    const states: string[] = [];
    r.pm.onChange((s) => states.push(`${s.state}:${s.external}`));
    await started(r);
    await r.clock.advanceAsync(700_000);
    expect(states).toEqual(['mapping:null', `mapped:${WAN}:8472`]);
  });
});

describe('isPublicIPv4', () => {
  it.each([
    ['11.22.33.7', true], ['8.8.8.8', true], ['198.51.100.2', true],
    ['10.1.2.3', false], ['172.16.0.1', false], ['172.31.255.255', false], ['172.32.0.1', true], ['192.168.1.1', false],
    ['100.64.0.1', false], ['100.127.255.255', false], ['100.128.0.1', true], ['169.254.1.1', false], ['127.0.0.1', false],
    ['0.0.0.0', false], ['224.0.0.1', false], ['255.255.255.255', false], ['192.0.0.2', false], ['198.18.0.1', false], ['nope', false],
  ])('%s → %s', (ip, want) => {
    expect(isPublicIPv4(ip)).toBe(want);
  });
});
