// cluster/last-good.ts: which skipped node keeps its last good lease (the sources' tests show
// when a node is keepable; this shows what keeping may not do).
import { describe, expect, it } from 'vitest';
import { KEPT_SUFFIX, keepLastGood } from '../../src/cluster/last-good.js';
import type { PeerConfig } from '../../src/config/types.js';
import type { SkippedNode } from '../../src/cluster/types.js';
import { parseCidr } from '../../src/util/ipv4.js';

const peer = (name: string, subnet: string, vtepMac: string): PeerConfig => ({ name, publicIp: '203.0.113.9', port: 8472, subnet: parseCidr(subnet), vtepMac });

describe('keepLastGood', () => {
  const last = new Map([['b', peer('b', '10.244.2.0/24', '0e:00:00:00:00:02')], ['d', peer('d', '10.244.4.0/24', '0e:00:00:00:00:04')]]);

  it('keeps the last peer of a keepable skipped node, in name order, and says so in its reason', () => {
    const skipped: SkippedNode[] = [{ name: 'b', why: 'public-ip "x" is not an IPv4 address' }];
    const r = keepLastGood([peer('a', '10.244.1.0/24', '0e:00:00:00:00:01'), peer('c', '10.244.3.0/24', '0e:00:00:00:00:03')], skipped, new Set(skipped), last);
    expect(r.peers.map((p) => p.name)).toEqual(['a', 'b', 'c']);
    expect(r.peers[1]).toBe(last.get('b'));
    expect(r.skipped).toEqual([{ name: 'b', why: `public-ip "x" is not an IPv4 address${KEPT_SUFFIX}` }]);
  });

  it('keeps nothing for a node that is not keepable, was no peer, or whose subnet or MAC a current peer now has', () => {
    const notKeepable = { name: 'b', why: 'overlaps the site' };
    const unknown = { name: 'e', why: 'public-ip "x"' };
    const d = { name: 'd', why: 'public-ip "x"' };
    const cases: [PeerConfig[], SkippedNode[], Set<SkippedNode>][] = [
      [[], [notKeepable], new Set()],
      [[], [unknown], new Set([unknown])],
      [[peer('x', '10.244.4.0/25', '0e:00:00:00:00:99')], [d], new Set([d])], // its subnet, in part
      [[peer('x', '10.244.0.0/16', '0e:00:00:00:00:99')], [d], new Set([d])], // around it
      [[peer('x', '10.244.9.0/24', '0e:00:00:00:00:04')], [d], new Set([d])], // its MAC
    ];
    for (const [peers, skipped, keepable] of cases) {
      const r = keepLastGood(peers, skipped, keepable, last);
      expect(r.peers).toEqual(peers);
      expect(r.skipped).toEqual(skipped);
    }
  });
});
