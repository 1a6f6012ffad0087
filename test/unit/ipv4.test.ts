// Address helpers shared by config and the data plane: IPv4/CIDR (util/ipv4)
// and MAC (util/mac). Examples pin the messages; properties pin the maths.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  cidrContains,
  cidrOverlaps,
  inCidr,
  intToIp,
  ipToInt,
  isGloballyRoutable,
  isIPv4,
  isUnicastIPv4,
  nonGlobalKind,
  parseCidr,
  prefixMask,
} from '../../src/util/ipv4.js';
import { formatMac, macToBytes, parseMac, randomLocalMac } from '../../src/util/mac.js';

// The reference: four decimal octets 0..255 without leading zeros.
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';
const REFERENCE_RE = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);

const uint32 = fc.integer({ min: 0, max: 0xffffffff });
const prefixLen = fc.integer({ min: 0, max: 32 });
/** A valid CIDR: random address, host bits cleared. */
const cidrText = fc.tuple(uint32, prefixLen).map(([ip, len]) => `${intToIp((ip & prefixMask(len)) >>> 0)}/${len}`);
/** Strings near the IPv4 grammar, where the interesting mistakes live. */
const ipish = fc.string({ unit: fc.constantFrom('0', '1', '2', '5', '9', '.', '/', ' ', 'x', '-', '+'), maxLength: 20 });
const anyString = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), ipish, fc.ipV4Extended());

function throwsOnlyErrors(f: () => unknown): boolean {
  try {
    f();
  } catch (e) {
    return e instanceof Error && e.constructor === Error && typeof e.message === 'string' && e.message.length > 0;
  }
  return true;
}

describe('ipToInt / intToIp', () => {
  it.each([
    ['0.0.0.0', 0],
    ['203.0.113.1', 0xcb007101],
    ['255.255.255.255', 0xffffffff],
    ['10.244.1.0', 0x0af40100],
  ])('%s <-> %d', (s, n) => {
    expect(ipToInt(s)).toBe(n);
    expect(intToIp(n)).toBe(s);
  });

  it('returns unsigned numbers', () => {
    expect(ipToInt('203.0.113.1')).toBeGreaterThan(0);
  });

  it('intToIp accepts the signed result of a bitwise and', () => {
    expect(intToIp(0xcb007101 & 0xffffff00)).toBe('203.0.113.0');
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.256', ' 1.2.3.4', '1.2.3.4 ', '1..2.3', '+1.2.3.4', '0x1.2.3.4', '1.2.3.4/24'])(
    'rejects %j',
    (s) => {
      expect(isIPv4(s)).toBe(false);
      expect(() => ipToInt(s)).toThrow('is not an IPv4 address');
    },
  );

  it.each([1.5, -0x80000001, 0x100000000, NaN])('intToIp rejects %d', (n) => {
    expect(() => intToIp(n)).toThrow('is not a 32-bit IPv4 address value');
  });

  it('round-trips every dotted quad', () => {
    fc.assert(fc.property(fc.ipV4(), (s) => intToIp(ipToInt(s)) === s));
  });

  it('round-trips every uint32', () => {
    fc.assert(fc.property(uint32, (n) => ipToInt(intToIp(n)) === n));
  });

  it('isIPv4 agrees with the reference regex', () => {
    fc.assert(fc.property(anyString, (s) => isIPv4(s) === REFERENCE_RE.test(s)));
  });

  it('throws nothing but a plain Error on any string', () => {
    fc.assert(fc.property(anyString, (s) => throwsOnlyErrors(() => ipToInt(s))));
  });

  it('isUnicastIPv4 refuses 0/8, 127/8 and 224/3', () => {
    expect(['0.1.2.3', '127.0.0.1', '224.0.0.1', '255.255.255.255'].map((s) => isUnicastIPv4(ipToInt(s)))).toEqual([false, false, false, false]);
    expect(['10.0.0.1', '203.0.113.10', '223.255.255.255'].map((s) => isUnicastIPv4(ipToInt(s)))).toEqual([true, true, true]);
  });
});

describe('parseCidr', () => {
  it('parses a prefix', () => {
    expect(parseCidr('10.244.0.0/16')).toEqual({ text: '10.244.0.0/16', network: 0x0af40000, prefixLen: 16, mask: 0xffff0000 });
    expect(parseCidr('0.0.0.0/0')).toEqual({ text: '0.0.0.0/0', network: 0, prefixLen: 0, mask: 0 });
    expect(parseCidr('192.0.2.7/32').mask).toBe(0xffffffff);
  });

  it('refuses host bits and says which prefix was meant', () => {
    expect(() => parseCidr('10.244.1.5/24')).toThrow('10.244.1.5/24 has host bits set; did you mean 10.244.1.0/24?');
  });

  it('asks for the prefix length when it is missing', () => {
    expect(() => parseCidr('10.244.0.0')).toThrow('add the prefix length, e.g. 10.244.0.0/24');
  });

  it.each(['10.244.0.0/33', '10.244.0.0/', '10.244.0.0/016', '10.244.0.0/-1', '10.244.0/16', 'x/16', '10.244.0.0/16/1'])('rejects %j', (s) => {
    expect(() => parseCidr(s)).toThrow('is not a CIDR');
  });

  it('never returns host bits, and keeps the canonical text', () => {
    fc.assert(
      fc.property(uint32, prefixLen, (ip, len) => {
        const text = `${intToIp(ip)}/${len}`;
        try {
          const c = parseCidr(text);
          return (c.network & ~c.mask) === 0 && c.text === text && c.network === ip && c.mask === prefixMask(len);
        } catch (e) {
          return (e as Error).message.includes('has host bits set') && (ip & ~prefixMask(len)) !== 0;
        }
      }),
    );
  });

  it('throws nothing but a plain Error on any string', () => {
    const near = fc.tuple(anyString, fc.string({ maxLength: 4 })).map(([a, b]) => `${a}/${b}`);
    fc.assert(fc.property(fc.oneof(anyString, near), (s) => throwsOnlyErrors(() => parseCidr(s))));
  });
});

describe('inCidr / cidrContains / cidrOverlaps', () => {
  const net = parseCidr('10.244.0.0/16');
  const sub = parseCidr('10.244.100.0/24');
  const other = parseCidr('10.245.0.0/24');

  it('works on examples', () => {
    expect(inCidr(ipToInt('10.244.100.7'), sub)).toBe(true);
    expect(inCidr(ipToInt('10.244.101.7'), sub)).toBe(false);
    expect(cidrContains(net, sub)).toBe(true);
    expect(cidrContains(sub, net)).toBe(false);
    expect(cidrContains(net, net)).toBe(true);
    expect(cidrContains(net, other)).toBe(false);
    expect(cidrOverlaps(sub, net)).toBe(true);
    expect(cidrOverlaps(sub, other)).toBe(false);
    expect(inCidr(ipToInt('255.1.2.3'), parseCidr('0.0.0.0/0'))).toBe(true);
  });

  it('inCidr matches a bit-by-bit reference', () => {
    const bits = (n: number): string => n.toString(2).padStart(32, '0');
    fc.assert(
      fc.property(uint32, cidrText, (ip, text) => {
        const c = parseCidr(text);
        return inCidr(ip, c) === (bits(ip).slice(0, c.prefixLen) === bits(c.network).slice(0, c.prefixLen));
      }),
    );
  });

  it('containment means every address, overlap is symmetric', () => {
    fc.assert(
      fc.property(cidrText, cidrText, uint32, (ta, tb, ip) => {
        const a = parseCidr(ta);
        const b = parseCidr(tb);
        if (cidrOverlaps(a, b) !== cidrOverlaps(b, a)) return false;
        if (cidrContains(a, b) && !cidrOverlaps(a, b)) return false;
        if (cidrContains(a, b) && inCidr(ip, b) && !inCidr(ip, a)) return false;
        // Disjoint prefixes share no address.
        return cidrOverlaps(a, b) || !(inCidr(ip, a) && inCidr(ip, b));
      }),
    );
  });

  it('a prefix contains its own network address and its last address', () => {
    fc.assert(
      fc.property(cidrText, (t) => {
        const c = parseCidr(t);
        return inCidr(c.network, c) && inCidr((c.network | ~c.mask) >>> 0, c);
      }),
    );
  });
});

describe('MAC addresses', () => {
  it('normalises to lower-case colon form', () => {
    expect(parseMac('0E-5C-AA-00-00-01')).toBe('0e:5c:aa:00:00:01');
    expect(parseMac('0e:5C:aa:00:00:01')).toBe('0e:5c:aa:00:00:01');
  });

  it.each([
    ['zz:00:00:00:00:01', 'is not a MAC address (expected aa:bb:cc:dd:ee:ff)'],
    ['0e:5c:aa:00:00', 'is not a MAC address'],
    ['0e:5c-aa:00:00:01', 'is not a MAC address'],
    ['0e5caa000001', 'is not a MAC address'],
    ['01:00:5e:00:00:01', 'multicast'],
    ['ff:ff:ff:ff:ff:ff', 'multicast'],
    ['00:00:00:00:00:00', 'all-zero'],
  ])('rejects %s', (s, message) => {
    expect(() => parseMac(s)).toThrow(message);
  });

  it('writes bytes in place', () => {
    const buf = Buffer.alloc(14, 0xee);
    macToBytes('0e:5c:aa:00:00:01', buf, 6);
    expect(buf.subarray(6, 12)).toEqual(Buffer.from([0x0e, 0x5c, 0xaa, 0, 0, 1]));
    expect(buf[5]).toBe(0xee);
    expect(buf[12]).toBe(0xee);
    expect(macToBytes('0E-5C-AA-00-00-01')).toEqual(Buffer.from([0x0e, 0x5c, 0xaa, 0, 0, 1]));
    expect(() => macToBytes('0e:5c:aa:00:00:01', Buffer.alloc(6), 1)).toThrow('no room');
    expect(() => macToBytes('0e:5c:aa:00:00:0g')).toThrow('is not a MAC address');
  });

  it('formatMac and macToBytes are inverse', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (bytes) => macToBytes(formatMac(bytes)).equals(Buffer.from(bytes))),
    );
  });

  it('randomLocalMac is locally administered unicast, as flannel makes it', () => {
    for (let i = 0; i < 200; i++) {
      const mac = randomLocalMac();
      expect(parseMac(mac)).toBe(mac);
      const first = parseInt(mac.slice(0, 2), 16);
      expect(first & 0x01).toBe(0);
      expect(first & 0x02).toBe(2);
    }
  });

  it('parseMac throws nothing but a plain Error on any string', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 20 }), fc.mixedCase(fc.constant('0e:5c:aa:00:00:0'))), (s) => throwsOnlyErrors(() => parseMac(s))));
  });
});

describe('globally routable addresses', () => {
  it.each([
    ['100.63.255.255', 'public'], ['100.64.0.0', 'carrier-grade NAT, 100.64.0.0/10'], ['100.127.255.255', 'carrier-grade NAT, 100.64.0.0/10'], ['100.128.0.0', 'public'],
    ['172.15.255.255', 'public'], ['172.16.0.1', 'private, RFC 1918'], ['172.31.255.255', 'private, RFC 1918'], ['172.32.0.0', 'public'],
    ['169.254.1.1', 'link-local, 169.254.0.0/16'], ['127.0.0.1', 'loopback, 127.0.0.0/8'], ['255.255.255.255', 'reserved, 240.0.0.0/4'],
    // RFC 5737 documentation ranges count as public: the lab's internet is made of them.
    ['192.0.2.10', 'public'], ['198.51.100.2', 'public'], ['203.0.113.7', 'public'], ['11.22.33.7', 'public'],
  ])('%s is %s', (ip, kind) => {
    expect(nonGlobalKind(ip)).toBe(kind);
    expect(isGloballyRoutable(ipToInt(ip))).toBe(kind === 'public');
  });
});
