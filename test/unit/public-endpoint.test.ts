// Where the site tells the cluster to send (underlay.publicIp, the router's mapping, STUN, the
// local address), whether that may be announced, and what the port_mapping check says.
import { describe, expect, it } from 'vitest';
import { checkPublicEndpoint } from '../../src/health/checks.js';
import type { PortMappingHealthDoc } from '../../src/health/document.js';
import { announceableIp, choosePublicEndpoint } from '../../src/nat/public-endpoint.js';
import { portMappingCheck } from '../../src/nat/site-nat.js';
import { preflightPeerAddresses } from '../../src/cli/check.js';
import type { Config } from '../../src/config/types.js';

const facts = { configuredIp: null, port: 8472, mappedIp: null, stun: null, localIp: '192.168.1.10' };

describe('public endpoint', () => {
  it.each([
    ['config wins over everything', { configuredIp: '198.51.100.2', mappedIp: '11.22.33.7', stun: '11.22.33.7:40000' }, '198.51.100.2:8472', 'config'],
    ['the router mapping over STUN, at underlay.port', { mappedIp: '11.22.33.7', stun: '11.22.33.7:40000' }, '11.22.33.7:8472', 'port-mapping'],
    ['STUN as it saw us', { stun: '203.0.113.50:40000' }, '203.0.113.50:40000', 'stun'],
    ['else the local address', {}, '192.168.1.10:8472', 'local'],
  ] as const)('%s', (_what, over, endpoint, source) => {
    expect(choosePublicEndpoint({ ...facts, ...over })).toEqual({ endpoint, source });
  });

  it('never announces a private local address, but does announce a public one', () => {
    expect(announceableIp(choosePublicEndpoint(facts))).toBeNull();
    expect(announceableIp(choosePublicEndpoint({ ...facts, localIp: '203.0.113.7' }))).toBe('203.0.113.7');
    expect(announceableIp(choosePublicEndpoint({ ...facts, stun: '100.64.1.2:8472' }))).toBe('100.64.1.2'); // STUN said so
    expect(announceableIp(null)).toBeNull();
  });

  it('the public_endpoint check fails on a private local address, and passes a public or discovered one', () => {
    expect(checkPublicEndpoint(choosePublicEndpoint(facts))).toMatchObject({ ok: false, detail: expect.stringContaining('private') });
    expect(checkPublicEndpoint(choosePublicEndpoint({ ...facts, stun: '203.0.113.50:40000' }))).toMatchObject({ ok: true, detail: '203.0.113.50:40000 (stun)' });
    expect(checkPublicEndpoint(choosePublicEndpoint({ ...facts, configuredIp: '198.51.100.2' }))).toMatchObject({ ok: true, detail: '198.51.100.2:8472 (underlay.publicIp)' });
    expect(checkPublicEndpoint(choosePublicEndpoint({ ...facts, configuredIp: '11.22.33.7' }))).toMatchObject({ ok: true });
  });

  // The loader takes any unicast address (the operator's word wins, and it is announced as
  // given); whether a peer in AWS can reach it is the check's to say, as for the local address.
  it.each([
    ['private, RFC 1918', '192.168.1.10'],
    ['private, RFC 1918', '10.0.0.5'],
    ['private, RFC 1918', '172.20.1.1'],
    ['carrier-grade NAT', '100.64.3.4'],
    ['link-local', '169.254.10.1'],
    ['benchmarking', '198.18.0.1'],
    ['IETF protocol assignments', '192.0.0.8'],
  ])('the public_endpoint check fails on a configured %s underlay.publicIp (%s), saying what it is and what to set', (kind, ip) => {
    const c = checkPublicEndpoint(choosePublicEndpoint({ ...facts, configuredIp: ip }));
    expect(c).toMatchObject({ name: 'public_endpoint', ok: false });
    expect(c.detail).toContain(`underlay.publicIp ${ip} is not reachable from the internet (${kind}`);
    expect(c.fix).toMatch(kind === 'carrier-grade NAT' ? /behind the ISP's NAT: set underlay\.publicIp to null and configure nat\.stun/ : /set underlay\.publicIp to the site router's public \(WAN\) address, or to null/);
  });

  it('a private underlay.publicIp passes when every configured peer is at a private address too (a VPN or Direct Connect), not when one is public', () => {
    const at = choosePublicEndpoint({ ...facts, configuredIp: '10.20.0.5' });
    expect(checkPublicEndpoint(at, ['172.31.5.10', '172.31.6.11'])).toMatchObject({ ok: true, detail: expect.stringContaining('a private underlay') });
    expect(checkPublicEndpoint(at, ['172.31.5.10', '203.0.113.10'])).toMatchObject({ ok: false });
    expect(checkPublicEndpoint(at, [])).toMatchObject({ ok: false }); // peers from the cluster: not known here
    // The local address alone is still no answer: nothing said that it is the one to announce.
    expect(checkPublicEndpoint(choosePublicEndpoint(facts), ['172.31.5.10'])).toMatchObject({ ok: false });
  });

  it('before start, a Kubernetes source makes no private underlay (its peers are public by construction); an etcd source is judged on the configured peers', () => {
    const at = choosePublicEndpoint({ ...facts, configuredIp: '10.20.0.5' });
    const peers = [{ publicIp: '172.31.5.10' }, { publicIp: '172.31.6.11' }] as Config['peers'];
    const kube = preflightPeerAddresses({ cluster: { source: 'kubernetes' }, peers } as Config);
    expect(checkPublicEndpoint(at, kube)).toMatchObject({ ok: false, detail: expect.stringContaining('underlay.publicIp 10.20.0.5') });
    for (const source of ['static', 'etcd']) {
      const addrs = preflightPeerAddresses({ cluster: { source }, peers } as Config);
      expect(checkPublicEndpoint(at, addrs), source).toMatchObject({ ok: true });
    }
  });

  it("once `vxedge check` could read the cluster, the peers a start would use are judged, whatever the source", () => {
    const at = choosePublicEndpoint({ ...facts, configuredIp: '10.20.0.5' });
    const configured = [{ publicIp: '172.31.5.10' }] as Config['peers'];
    // An etcd cluster over a VPN: every lease private, as the underlay is.
    const vpn = [{ publicIp: '172.31.5.10' }, { publicIp: '10.1.2.3' }] as Config['peers'];
    // One lease at a public address: that node cannot reach a private underlay.publicIp.
    const mixed = [{ publicIp: '172.31.5.10' }, { publicIp: '203.0.113.9' }] as Config['peers'];
    for (const source of ['etcd', 'kubernetes']) {
      const cfg = { cluster: { source }, peers: configured } as Config;
      expect(preflightPeerAddresses(cfg, vpn), source).toEqual(['172.31.5.10', '10.1.2.3']);
      expect(checkPublicEndpoint(at, preflightPeerAddresses(cfg, vpn)), source).toMatchObject({ ok: true });
      expect(checkPublicEndpoint(at, preflightPeerAddresses(cfg, mixed)), source).toMatchObject({ ok: false, detail: expect.stringContaining('underlay.publicIp 10.20.0.5') });
    }
  });

  // The lab's "internet" is the RFC 5737 documentation ranges (docs/lab.md): they stay public.
  it.each(['192.0.2.10', '198.51.100.2', '203.0.113.7'])('a documentation-range underlay.publicIp (%s) passes, as the lab uses them', (ip) => {
    expect(checkPublicEndpoint(choosePublicEndpoint({ ...facts, configuredIp: ip }))).toMatchObject({ ok: true });
  });
});

describe('port_mapping check', () => {
  const status = (over: Partial<PortMappingHealthDoc>): PortMappingHealthDoc => ({
    protocol: null, external: null, lifetime: null, expires: null, error: null, mode: 'auto', state: 'idle', routerAddress: null,
    tried: [], renewedAt: null, retryAt: null, routerRestarts: 0, badAnswers: { pcp: 0, natpmp: 0, upnp: 0 }, stunAgrees: null, ...over,
  });
  const absent = (p: 'pcp' | 'natpmp' | 'upnp') => ({ protocol: p, outcome: 'absent' as const, result: 'no answer' });

  it('is absent with port mapping off', () => expect(portMappingCheck('off', undefined, null)).toBeNull());

  it('passes with a mapping in place, naming it', () => {
    const c = portMappingCheck('auto', status({ state: 'mapped', protocol: 'pcp', external: '11.22.33.7:8472', lifetime: 7200, expires: '2026-12-02T10:00:00Z', routerAddress: '11.22.33.7', stunAgrees: true }), '11.22.33.7:8472');
    expect(c).toEqual({ name: 'port_mapping', ok: true, detail: 'pcp 11.22.33.7:8472 (lifetime 7200, expires 2026-12-02T10:00:00Z)' });
  });

  it('fails when STUN sees another address than the router: a second NAT in front', () => {
    const c = portMappingCheck('auto', status({ state: 'mapped', protocol: 'upnp', external: '100.64.0.9:8472', routerAddress: '100.64.0.9', stunAgrees: false }), '203.0.113.77:51000');
    expect(c).toMatchObject({ ok: false, detail: expect.stringContaining('another NAT') });
  });

  it('in auto, a router that offers nothing is no failure, but says what that means', () => {
    const c = portMappingCheck('auto', status({ state: 'failed', error: 'no router answered', tried: [absent('pcp'), absent('natpmp'), absent('upnp')] }), null);
    expect(c).toMatchObject({ ok: true, detail: expect.stringContaining('manual forward') });
  });

  it('fails when a protocol was asked for by name, or when the router refused or granted another port', () => {
    expect(portMappingCheck('pcp', status({ state: 'failed', mode: 'pcp', error: 'PCP: no answer', tried: [absent('pcp')] }), null)).toMatchObject({ ok: false, fix: 'PCP: no answer' });
    const wrong = status({ state: 'failed', error: 'the router would map UDP 8472 only to another external port', tried: [{ protocol: 'natpmp', outcome: 'wrong-port', result: '8473' }] });
    expect(portMappingCheck('auto', wrong, null)).toMatchObject({ ok: false, detail: expect.stringContaining('another external port') });
  });

  it('does not fail while the first answer is still coming', () => {
    expect(portMappingCheck('auto', status({ state: 'mapping' }), null)).toMatchObject({ ok: true });
  });
});
