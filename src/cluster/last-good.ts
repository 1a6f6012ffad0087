// What flannel's nodes do when a node they know turns into one they cannot use: nothing.
// kube: handleUpdateLeaseEvent returns early on a Node whose kube-subnet-manager annotation
// is gone, and on one nodeToLease cannot turn into a lease (a public-ip that is no IPv4
// address); the VXLAN backend skips an added lease of another backend type, or whose
// backend-data it cannot decode. etcd: the watch skips an event it cannot parse. So every
// node keeps its route to that node, with the last lease it knew, until the node (or its
// lease) is deleted. The site keeps it too: dropping it would leave the cluster sending to
// the site while the site's answers had no route.
//
// Only those failures: a node the site must not route to (its own, one that overlaps the
// site's subnet or lies outside the pod network), one on another VNI, and one whose public
// address the site cannot reach are dropped as before, whatever it was.
import type { PeerConfig } from '../config/types.js';
import { cidrOverlaps } from '../util/ipv4.js';
import type { SkippedNode } from './types.js';

/** Appended to the reason of a skipped node whose last good lease stays in use. */
export const KEPT_SUFFIX = '; its last good lease stays in use, as flannel\'s nodes keep it, until the node or its lease is deleted';

/**
 * The view's peers and skipped nodes with the last good peer kept for each skipped node that
 * `keepable` names and `last` knows, unless a current peer now claims its subnet or MAC.
 * Peers in name order, as the views have them.
 */
export function keepLastGood(
  peers: readonly PeerConfig[],
  skipped: readonly SkippedNode[],
  keepable: ReadonlySet<SkippedNode>,
  last: ReadonlyMap<string, PeerConfig> | undefined,
): { peers: PeerConfig[]; skipped: SkippedNode[] } {
  if (!last || last.size === 0 || keepable.size === 0) return { peers: [...peers], skipped: [...skipped] };
  const macs = new Set(peers.map((p) => p.vtepMac));
  const kept: PeerConfig[] = [];
  const out = skipped.map((s) => {
    const p = keepable.has(s) ? last.get(s.name) : undefined;
    if (!p || macs.has(p.vtepMac) || peers.some((q) => cidrOverlaps(q.subnet, p.subnet))) return s;
    kept.push(p);
    return { name: s.name, why: s.why + KEPT_SUFFIX };
  });
  if (kept.length === 0) return { peers: [...peers], skipped: out };
  const byName = (x: PeerConfig, y: PeerConfig) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
  return { peers: [...peers, ...kept].sort(byName), skipped: out };
}
