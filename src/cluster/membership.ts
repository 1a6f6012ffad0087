// Who the peers are, whatever told us: the static `peers` list (config, SIGHUP) and the
// view of a cluster source (Kubernetes, etcd) are merged here into one desired set, and
// the desired set is turned into the smallest change against what is in force (added,
// removed, changed) for peer-sync.ts to apply. Both the reload path and the cluster path
// go through these two functions.
//
// Merging is where untrusted cluster data meets the site: a cluster peer is left out,
// with a reason, when it would hijack or shadow something (our own subnet, a static peer's
// subnet, another node's subnet or VTEP MAC, our own MAC) or lies outside the pod network.
// Static peers always win: the operator wrote them. Between two cluster nodes that conflict,
// the one already in force with that subnet wins: a node that joins claiming a working peer's
// subnet must not take that peer's traffic, whatever its name. Otherwise the name decides, so
// that every start picks the same one.
import type { Cidr, PeerConfig } from '../config/types.js';
import { cidrContains, cidrOverlaps } from '../util/ipv4.js';
import type { ClusterView, SkippedNode } from './types.js';

export interface MergeContext {
  network: Cidr;
  /** The site's own subnet: nothing may route it into the tunnel. */
  siteSubnet: Cidr;
  siteMac: string;
  /** The peers in force now (from the last merge applied); none at start. */
  inForce?: readonly PeerConfig[];
}

export interface Merged {
  peers: PeerConfig[];
  /** Cluster nodes left out here (the source's own skips come on top). */
  skipped: SkippedNode[];
}

export function mergePeers(statics: readonly PeerConfig[], view: ClusterView | null, ctx: MergeContext): Merged {
  const peers = [...statics];
  const skipped: SkippedNode[] = [];
  const staticNames = new Set(statics.map((p) => p.name));
  const names = new Set(staticNames);
  const held = new Map((ctx.inForce ?? []).map((p) => [p.name, p.subnet.text]));
  const incumbent = (p: PeerConfig) => (held.get(p.name) === p.subnet.text ? 0 : 1);
  const candidates = [...(view?.peers ?? [])].sort((a, b) => incumbent(a) - incumbent(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const c of candidates) {
    const why = names.has(c.name) ? 'a static peer has the same name; the static entry is used' : conflict(c, peers, staticNames, ctx);
    if (why) {
      skipped.push({ name: c.name, why });
      continue;
    }
    peers.push(c);
    names.add(c.name);
  }
  return { peers, skipped };
}

function conflict(c: PeerConfig, taken: readonly PeerConfig[], staticNames: Set<string>, ctx: MergeContext): string | null {
  if (cidrOverlaps(c.subnet, ctx.siteSubnet)) {
    return `its subnet ${c.subnet.text} overlaps this site's overlay.subnet ${ctx.siteSubnet.text}: another node claims the site's subnet (two leases for one subnet? check the cluster's podCIDR allocation)`;
  }
  if (!cidrContains(ctx.network, c.subnet)) {
    return `its subnet ${c.subnet.text} is outside overlay.network ${ctx.network.text}: is overlay.network the cluster's pod network?`;
  }
  if (c.vtepMac === ctx.siteMac) return `its VTEP MAC ${c.vtepMac} is this site's own: every VTEP needs its own MAC`;
  for (const p of taken) {
    if (cidrOverlaps(p.subnet, c.subnet)) {
      const whose = staticNames.has(p.name) ? 'the static peer' : 'node';
      return `its subnet ${c.subnet.text} overlaps ${whose} ${p.name} (${p.subnet.text}); that one is kept`;
    }
    if (p.vtepMac === c.vtepMac) return `its VTEP MAC ${c.vtepMac} is also ${p.name}'s; that one is kept`;
  }
  return null;
}

export interface PeerDiff {
  added: PeerConfig[];
  removed: PeerConfig[];
  /** Same name, something else changed: `from` is what is in force now. */
  changed: { from: PeerConfig; to: PeerConfig }[];
}

export function samePeer(a: PeerConfig, b: PeerConfig): boolean {
  return a.publicIp === b.publicIp && a.port === b.port && a.subnet.text === b.subnet.text && a.vtepMac === b.vtepMac;
}

/** The smallest change from the peers in force to the desired ones, by name. */
export function diffPeers(current: readonly PeerConfig[], desired: readonly PeerConfig[]): PeerDiff {
  const now = new Map(current.map((p) => [p.name, p]));
  const want = new Map(desired.map((p) => [p.name, p]));
  return {
    added: desired.filter((p) => !now.has(p.name)),
    removed: current.filter((p) => !want.has(p.name)),
    changed: desired.filter((p) => now.has(p.name) && !samePeer(now.get(p.name)!, p)).map((to) => ({ from: now.get(to.name)!, to })),
  };
}

export function diffIsEmpty(d: PeerDiff): boolean {
  return d.added.length === 0 && d.removed.length === 0 && d.changed.length === 0;
}
