// flannel's etcd layout (src/cluster/flannel-lease.ts): keys, {prefix}/config, lease values.
// Examples pin flanneld's exact bytes and every rejection's words; properties pin that nothing
// read from etcd can throw, and that what we write reads back as the same peer.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  checkNetConfig,
  configKey,
  describeHolder,
  encodeLease,
  leaseName,
  leaseToPeer,
  leaseVni,
  parseLeaseAttrs,
  parseNetConfig,
  parseSubnetKey,
  subnetKey,
  subnetKeyText,
  subnetsPrefix,
  type LeaseContext,
  type OurNetwork,
} from '../../src/cluster/flannel-lease.js';
import { intToIp, parseCidr, prefixMask } from '../../src/util/ipv4.js';

const NET = parseCidr('10.244.0.0/16');
const SITE = parseCidr('10.244.100.0/24');
const CTX: LeaseContext = { network: NET, ownSubnet: SITE, vni: 1, port: 8472 };
const OURS: OurNetwork = { network: NET, subnet: SITE, vni: 1, port: 8472 };

/** A lease value exactly as flanneld writes it (flannel's Documentation/reservations.md form). */
const FLANNELD = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';

/** A random unicast, locally administered MAC as flannel generates them. */
const macArb = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => {
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
});

function lease(over: Record<string, unknown> = {}, data: Record<string, unknown> = {}): string {
  return JSON.stringify({
    PublicIP: '203.0.113.10',
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: '0e:11:22:33:44:55', ...data },
    ...over,
  });
}

describe('keys', () => {
  it.each([
    ['/coreos.com/network', '/coreos.com/network/config', '/coreos.com/network/subnets/'],
    ['/coreos.com/network/', '/coreos.com/network/config', '/coreos.com/network/subnets/'],
    ['/a//b', '/a/b/config', '/a/b/subnets/'],
    ['/', '/config', '/subnets/'],
  ])('prefix %j: config %s, leases under %s', (prefix, config, subnets) => {
    expect(configKey(prefix)).toBe(config);
    expect(subnetsPrefix(prefix)).toBe(subnets);
  });

  it('our key and peer name come from the subnet', () => {
    expect(subnetKeyText(SITE)).toBe('10.244.100.0-24');
    expect(subnetKey('/coreos.com/network', SITE)).toBe('/coreos.com/network/subnets/10.244.100.0-24');
    expect(leaseName(parseCidr('10.244.1.0/24'))).toBe('etcd-10.244.1.0-24');
  });

  it.each([
    ['10.244.1.0-24', '10.244.1.0/24', null],
    ['10.244.1.0-24&fc00::-64', '10.244.1.0/24', 'fc00::/64'],
    ['0.0.0.0-0', '0.0.0.0/0', null],
    ['10.244.1.128-25', '10.244.1.128/25', null],
  ])('parses %s', (text, subnet, ipv6) => {
    const r = parseSubnetKey(text);
    expect(r.ok && r.subnet.text).toBe(subnet);
    expect(r.ok && r.ipv6).toBe(ipv6);
  });

  it.each([
    ['10.244.1.1-24', /host bits set in 10.244.1.1\/24/],
    ['10.244.1.0-33', /bad IPv4 network/],
    ['10.244.1.0-024', /unrecognised form|bad IPv4/],
    ['010.244.1.0-24', /bad IPv4 network/],
    ['10.244.1.0/24', /unrecognised form/],
    ['10.244.1.0-24&zz::-64', /unrecognised form/],
    ['10.244.1.0-24&fc00::-129', /bad IPv6 network/],
    ['', /unrecognised form/],
    ['lease', /unrecognised form/],
  ])('rejects %j', (text, re) => {
    const r = parseSubnetKey(text);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(re);
    expect(!r.ok && r.error).toMatch(/expected <network>-<length>, e\.g\. 10\.244\.1\.0-24/);
  });
});

describe('encodeLease', () => {
  it('writes the bytes flanneld writes', () => {
    expect(encodeLease({ publicIp: '192.168.64.3', vni: 1, vtepMac: 'C6-D2-32-6F-8F-44' })).toBe(FLANNELD);
  });

  it('carries a VNI above 65535 as flannel does (its lease field is a uint16)', () => {
    expect(leaseVni(70_000)).toBe(4464);
    expect(encodeLease({ publicIp: '198.51.100.2', vni: 70_000, vtepMac: '0e:00:00:00:00:01' })).toContain('"VNI":4464');
  });

  it.each([
    [{ publicIp: '198.51.100.300', vni: 1, vtepMac: '0e:00:00:00:00:01' }, /not an IPv4 address/],
    [{ publicIp: '198.51.100.2', vni: 1, vtepMac: '01:00:00:00:00:01' }, /multicast/],
    [{ publicIp: '198.51.100.2', vni: -1, vtepMac: '0e:00:00:00:00:01' }, /not a VNI/],
  ])('refuses %j', (l, re) => {
    expect(() => encodeLease(l)).toThrow(re);
  });
});

describe('leaseToPeer', () => {
  it("turns flanneld's lease into a peer on the VXLAN port", () => {
    const v = leaseToPeer('10.244.1.0-24', lease(), CTX);
    expect(v).toEqual({
      kind: 'peer',
      peer: { name: 'etcd-10.244.1.0-24', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0e:11:22:33:44:55' },
    });
  });

  it("reads a dual-stack node's IPv4 half", () => {
    const v = leaseToPeer('10.244.1.0-24&fc00::-64', lease({ PublicIPv6: 'fd00::10', BackendV6Data: { VNI: 1, VtepMAC: '0e:00:00:00:00:06' } }), CTX);
    expect(v.kind === 'peer' && v.peer.subnet.text).toBe('10.244.1.0/24');
  });

  it('reads field names case-insensitively, the last duplicate winning, as Go does', () => {
    const v = leaseToPeer('10.244.1.0-24', '{"publicip":"203.0.113.1","PublicIP":"203.0.113.7","backendtype":"vxlan","backenddata":{"vni":1,"vtepmac":"0E:00:00:00:00:07"}}', CTX);
    expect(v.kind === 'peer' && [v.peer.publicIp, v.peer.vtepMac]).toEqual(['203.0.113.7', '0e:00:00:00:00:07']);
  });

  it.each([
    ['key', 'subnets-not-a-key', lease(), /not a flannel subnet key.*delete it/],
    ['own', '10.244.100.0-24', lease(), /the site's own subnet 10\.244\.100\.0\/24 \(PublicIP 203\.0\.113\.10, VtepMAC 0e:11:22:33:44:55\)/],
    ['overlap', '10.244.100.0-23', lease(), /overlaps the site's subnet 10\.244\.100\.0\/24/],
    ['overlap', '10.244.100.128-25', lease(), /overlaps the site's subnet/],
    ['network', '10.3.0.0-24', lease(), /outside overlay\.network 10\.244\.0\.0\/16: set overlay\.network/],
    ['malformed', '10.244.1.0-24', '{"PublicIP":', /not JSON.*fix or delete the key/],
    ['malformed', '10.244.1.0-24', '[1,2]', /not a JSON object/],
    ['malformed', '10.244.1.0-24', lease({ pad: 'x'.repeat(5000) }), /more than the 4096/],
    ['backend', '10.244.1.0-24', lease({ BackendType: 'host-gw' }), /BackendType "host-gw" is not "vxlan"/],
    ['backend', '10.244.1.0-24', lease({ BackendType: 'VXLAN' }), /BackendType "VXLAN" is not "vxlan"/],
    ['backend', '10.244.1.0-24', lease({ BackendType: undefined }), /BackendType null/],
    ['public-ip', '10.244.1.0-24', lease({ PublicIP: '0.0.0.0' }), /PublicIP "0\.0\.0\.0" is not a usable IPv4 address: start that node's flanneld with --public-ip/],
    ['public-ip', '10.244.1.0-24', lease({ PublicIP: 12 }), /PublicIP null/],
    ['mac', '10.244.1.0-24', lease({}, { VtepMAC: 'zz:11:22:33:44:55' }), /VtepMAC "zz:11:22:33:44:55" is not a unicast MAC/],
    ['mac', '10.244.1.0-24', lease({}, { VtepMAC: '01:00:5e:00:00:01' }), /not a unicast MAC/],
    ['mac', '10.244.1.0-24', lease({ BackendData: null }), /VtepMAC null/],
    ['vni', '10.244.1.0-24', lease({}, { VNI: 2 }), /VNI 2 differs from vxlan\.vni 1: .*set vxlan\.vni to it/],
    ['vni', '10.244.1.0-24', lease({}, { VNI: undefined }), /has no VNI/],
  ])('skips (%s) %s', (code, key, value, re) => {
    const v = leaseToPeer(key, value, CTX);
    expect(v.kind).toBe('skip');
    if (v.kind !== 'skip') return;
    expect(v.code).toBe(code);
    expect(v.why).toMatch(re);
    expect(v.name.startsWith('etcd-')).toBe(true);
  });

  it("reports the holder of a lease it cannot read", () => {
    expect(describeHolder('nope')).toMatch(/^a value that is not a flannel lease: "nope"$/);
    expect(describeHolder(lease({}, { VtepMAC: 'bad' }))).toBe('PublicIP 203.0.113.10, VtepMAC "bad"');
  });
});

describe('{prefix}/config', () => {
  const KEY = '/coreos.com/network/config';
  const check = (v: unknown, ours: OurNetwork = OURS) => checkNetConfig(v, ours, KEY);

  it('accepts the shipped net-conf and defaults VNI 1, port 8472', () => {
    const r = check('{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
    expect(r).toEqual({
      ok: true,
      warnings: [],
      config: { network: NET, subnetLen: 24, backendType: 'vxlan', vni: 1, port: 8472, backendGiven: true, vniGiven: false },
    });
  });

  it('reads it as Go does: keys in any case, Type lower-cased, Network host bits dropped, Port 0 = 8472', () => {
    const r = check('{"network":"10.244.7.1/16","backend":{"type":"VXLAN","vni":1,"port":0}}');
    expect(r.ok && r.config).toMatchObject({ network: { text: '10.244.0.0/16' }, backendType: 'vxlan', vni: 1, port: 8472 });
  });

  it.each([
    ['{"Network":"10.244.0.0/16"}', /has no Backend, which flannel takes as "udp": .*\{"Backend":\{"Type":"vxlan"\}\}/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', /has Backend\.Type "host-gw": vxedge speaks flannel's VXLAN backend only/],
    ['{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}', /Network 10\.0\.0\.0\/16, which does not hold overlay\.subnet 10\.244\.100\.0\/24: pick a site subnet inside 10\.0\.0\.0\/16/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4096}}', /has Backend\.VNI 4096 but vxlan\.vni is 1: set vxlan\.vni to 4096/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":4789}}', /Backend\.Port 4789 but vxlan\.port is 8472: set vxlan\.port to 4789/],
    ['{"Network":"10.244.0.0/16","EnableIPv4":false,"Backend":{"Type":"vxlan"}}', /EnableIPv4 false/],
    ['{"Network":"10.244.0.0","Backend":{"Type":"vxlan"}}', /Network "10\.244\.0\.0", not an IPv4 CIDR/],
    ['{"Network":"10.244.0.0/16","SubnetLen":"24","Backend":{"Type":"vxlan"}}', /SubnetLen "24", not a prefix length/],
    ['{"Network":"10.244.0.0/16","Backend":"vxlan"}', /Backend "vxlan", not an object/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}', /Backend\.VNI "1", not a VNI/],
    ['not json', /is not JSON.*write flannel's net-conf JSON there/],
    ['', /is not JSON/],
  ])('refuses %s', (text, re) => {
    const r = check(text);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(re);
    expect(!r.ok && r.error).toContain(KEY);
  });

  it("names the default when the cluster's VNI is flannel's default and ours is not", () => {
    const r = check('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', { ...OURS, vni: 2 });
    expect(!r.ok && r.error).toMatch(/has no Backend\.VNI \(flannel's default 1\) but vxlan\.vni is 2: set vxlan\.vni to 1/);
  });

  it('lists every mismatch at once', () => {
    const r = check('{"Network":"10.0.0.0/8","Backend":{"Type":"udp","VNI":3}}');
    expect(!r.ok && r.error.split('; ')).toHaveLength(3);
  });

  it('warns about a different overlay.network and a different subnet length, without refusing', () => {
    const r = check('{"Network":"10.244.0.0/14","SubnetLen":26,"Backend":{"Type":"vxlan"}}');
    expect(r.ok).toBe(true);
    expect(r.ok && r.warnings.join('\n')).toMatch(/Network 10\.244\.0\.0\/14 but overlay\.network is 10\.244\.0\.0\/16.*\n.*SubnetLen 26 but overlay\.subnet is a \/24/);
  });
});

describe('untrusted input never throws (fast-check)', () => {
  const jsonish = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.json({ maxDepth: 4 }),
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
    // shaped like a lease, with random field values
    fc.record({
      PublicIP: fc.oneof(fc.ipV4(), fc.string(), fc.integer(), fc.constant(null)),
      BackendType: fc.oneof(fc.constant('vxlan'), fc.string()),
      BackendData: fc.oneof(fc.constant(null), fc.record({ VNI: fc.oneof(fc.integer(), fc.string()), VtepMAC: fc.oneof(macArb, fc.string()) })),
    }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  );
  const anyValue = fc.oneof(jsonish, fc.anything().map((v) => v as unknown));
  const keyish = fc.oneof(fc.string({ maxLength: 60 }), fc.string({ unit: fc.constantFrom('1', '0', '2', '.', '-', '&', ':', 'f', '/'), maxLength: 40 }));

  it('leaseToPeer, parseLeaseAttrs, describeHolder', () => {
    fc.assert(fc.property(keyish, anyValue, (k, v) => {
      const verdict = leaseToPeer(k, v, CTX);
      expect(['peer', 'skip']).toContain(verdict.kind);
      if (verdict.kind === 'skip') expect(verdict.why.length).toBeGreaterThan(10);
      parseLeaseAttrs(v);
      expect(typeof describeHolder(v)).toBe('string');
    }), { numRuns: 2000 });
  });

  it('parseSubnetKey', () => {
    fc.assert(fc.property(fc.oneof(keyish, fc.anything().map((v) => v as string)), (k) => {
      const r = parseSubnetKey(k);
      if (r.ok) expect(r.subnet.network & ~r.subnet.mask).toBe(0);
    }), { numRuns: 2000 });
  });

  it('parseNetConfig and checkNetConfig', () => {
    fc.assert(fc.property(anyValue, (v) => {
      const r = checkNetConfig(v, OURS);
      if (!r.ok) expect(r.error.length).toBeGreaterThan(10);
      parseNetConfig(v);
    }), { numRuns: 2000 });
  });
});

describe('round trip (fast-check)', () => {
  it('a lease we encode reads back as the same peer', () => {
    const publicIp = fc.integer({ min: 0x01000000, max: 0xdfffffff }).filter((n) => n >>> 24 !== 127).map((n) => intToIp(n));
    const subnet = fc.integer({ min: 0, max: 255 }).filter((n) => n !== 100).map((n) => parseCidr(`10.244.${n}.0/24`));
    const vni = fc.integer({ min: 0, max: 0xffffff });
    fc.assert(fc.property(macArb, publicIp, subnet, vni, (m, ip, s, n) => {
      const v = leaseToPeer(subnetKeyText(s), encodeLease({ publicIp: ip, vni: n, vtepMac: m }), { ...CTX, vni: n });
      expect(v).toEqual({ kind: 'peer', peer: { name: leaseName(s), publicIp: ip, port: 8472, subnet: s, vtepMac: m } });
    }));
  });

  it('subnetKeyText parses back to the subnet', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), (ip, len) => {
      const c = parseCidr(`${intToIp((ip & prefixMask(len)) >>> 0)}/${len}`);
      const r = parseSubnetKey(subnetKeyText(c));
      expect(r.ok && r.subnet).toEqual(c);
    }));
  });
});
