// A Kubernetes Node object as flannel's kube subnet manager sees it: the one place that
// decides whether a Node is a VXLAN peer (and at which endpoint) or is left out (and why,
// in words an operator acts on). `vxedge peers` and the live KubernetesSource both use it,
// so the command and the running gateway never disagree about a node.
//
// flannel's rules (pkg/subnet/kube/kube.go, pkg/backend/vxlan):
//   - its annotations are under one prefix, flanneld's --kube-annotation-prefix
//     (cluster.kubernetes.annotationPrefix; `annotationsUnder`), and only those count;
//   - only Nodes annotated `kube-subnet-manager: "true"` are leases at all;
//   - `public-ip` must parse as IPv4 or the node is skipped ("Error turning node to lease");
//   - the subnet is the first IPv4 entry of spec.podCIDRs, or spec.podCIDR when that list is
//     empty; flannel does no containment check for peers, but we do (a route outside the pod
//     network is never one we want);
//   - the VXLAN backend ignores leases whose backend-type is not "vxlan", and decodes
//     backend-data into {VtepMAC}: Go's encoding/json matches keys case-insensitively and
//     VtepMAC must be a JSON string that net.ParseMAC accepts. Linux flannel ignores VNI
//     (every node uses its own device's VNI), but a node whose backend-data names another VNI
//     than ours drops our frames, so we leave it out.
//
// Where we differ on purpose, the endpoint: flannel sends to `public-ip`, which on AWS is
// the node's private VPC address unless flanneld ran with --public-ip. From behind the site's
// NAT such an address is unreachable, so a private `public-ip` is replaced by the Node's
// ExternalIP (status.addresses, filled in by the AWS cloud provider): AWS translates the EIP
// to the private address, and the kernel's VXLAN socket listens on every address.
//
// And two rules that keep the site safe: the site's own Node is never a peer, and no node
// may claim (overlap) the site's subnet, or its route would take the site's traffic.
import { completeAnnotationPrefix, defaultNodeName, DEFAULT_ANNOTATION_PREFIX } from '../config/formats.js';
import type { Cidr, PeerConfig } from '../config/types.js';
import { cidrContains, cidrOverlaps, intToIp, ipToInt, isGloballyRoutable, isIPv4, parseCidr, prefixMask } from '../util/ipv4.js';
import { parseMac } from '../util/mac.js';
import { show } from '../util/show.js';
import { keepLastGood } from './last-good.js';
import type { ClusterView, SkippedNode } from './types.js';
import { isPlainObject } from '../util/plain-object.js';

/** flannel's annotations under one --kube-annotation-prefix, by role (annotations.go). */
export interface FlannelAnnotations {
  /** The prefix as flannel completes it: "flannel.alpha.coreos.com/", "example.com/net-". */
  readonly prefix: string;
  readonly kubeSubnetManager: string;
  readonly backendType: string;
  readonly backendData: string;
  readonly publicIp: string;
  readonly publicIpOverwrite: string;
  /** A dual-stack node's IPv6 half (flanneld with EnableIPv6 writes both, and never removes them). */
  readonly publicIpv6: string;
  readonly backendV6Data: string;
  /** Every key above: what a Node is read by (a slimmed Node keeps these). */
  readonly all: readonly string[];
}

/**
 * flannel's annotations under `prefix` (cluster.kubernetes.annotationPrefix, flanneld's
 * --kube-annotation-prefix; checked by the config, and throwing here like it for another).
 */
export function annotationsUnder(prefix: string = DEFAULT_ANNOTATION_PREFIX): FlannelAnnotations {
  const p = completeAnnotationPrefix(prefix);
  const keys = {
    kubeSubnetManager: `${p}kube-subnet-manager`,
    backendType: `${p}backend-type`,
    backendData: `${p}backend-data`,
    publicIp: `${p}public-ip`,
    publicIpOverwrite: `${p}public-ip-overwrite`,
    publicIpv6: `${p}public-ipv6`,
    backendV6Data: `${p}backend-v6-data`,
  };
  return { prefix: p, ...keys, all: Object.values(keys) };
}

/** Under flannel's default prefix, flannel.alpha.coreos.com. */
export const ANNOTATIONS = annotationsUnder();

/** Labels on the site's Node, so operators can find every gateway (`kubectl get nodes -l vxedge.io/gateway`). */
export const GATEWAY_LABEL = 'vxedge.io/gateway';
export const SITE_LABEL = 'vxedge.io/site';
/**
 * Kubernetes' well-known label that keeps a Node out of every cloud load balancer's backends
 * (the service controller's node set): no kubelet or kube-proxy answers behind the site's.
 */
export const EXCLUDE_FROM_LB_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers';

/**
 * The site's Node's spec.providerID, in a scheme no cloud provider owns. A cloud controller
 * manager's node lifecycle controller deletes a NotReady Node (ours always is: no kubelet)
 * when its provider says the instance does not exist, and without a providerID the provider
 * looks the Node up by name and finds none; a providerID it cannot parse is an error instead,
 * which the controller logs and skips (cloud-provider-aws: "Invalid scheme for AWS instance";
 * GCE's cannot split it; Azure counts it unmanaged). KWOK gives its Nodes `kwok://` for this.
 */
export function siteProviderId(nodeName: string): string {
  return `vxedge://${nodeName}`;
}

// ---------------------------------------------------------------------------------------------
// The site's own Node

// The name's rule lives with the config, which checks it (config/formats.ts).
export { defaultNodeName } from '../config/formats.js';

/** The Node's name is `name` (cluster.kubernetes.nodeName) or, without it, vxedge-{site}-{node}. */
export type NodeManifestInput = {
  site: string;
  subnet: string;
  vni: number;
  vtepMac: string;
  publicIp: string;
  /** Under cluster.kubernetes.annotationPrefix (default: flannel's default). */
  annotations?: FlannelAnnotations;
} & ({ node: string; name?: string } | { name: string; node?: string });

/** The annotations that make every flannel node program a route, a neighbour and an FDB entry for the site. */
function siteAnnotations(i: Pick<NodeManifestInput, 'vni' | 'vtepMac' | 'publicIp' | 'annotations'>): Record<string, string> {
  const a = i.annotations ?? ANNOTATIONS;
  return {
    [a.kubeSubnetManager]: 'true',
    [a.backendType]: 'vxlan',
    [a.backendData]: JSON.stringify({ VNI: i.vni, VtepMAC: i.vtepMac }),
    [a.publicIp]: i.publicIp,
  };
}

/**
 * The site's Node object (`vxedge manifest`, and what a registering gateway keeps): a Node
 * without a kubelet, as F5 and Citrix load balancers join flannel (flannel-io/flannel#1122).
 */
export function nodeManifest(i: NodeManifestInput): Record<string, unknown> {
  const name = i.name ?? defaultNodeName(i.site, i.node!);
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { [SITE_LABEL]: i.site, [GATEWAY_LABEL]: 'true', [EXCLUDE_FROM_LB_LABEL]: 'true' },
      annotations: siteAnnotations(i),
    },
    spec: {
      podCIDR: i.subnet,
      podCIDRs: [i.subnet],
      providerID: siteProviderId(name),
      // Keep the kube-scheduler (and DaemonSets that tolerate NotReady) off this Node:
      // no kubelet runs behind it.
      taints: [{ key: GATEWAY_LABEL, value: 'true', effect: 'NoSchedule' }],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Addresses

// ---------------------------------------------------------------------------------------------
// A Node -> a peer, or why not

export interface FlannelContext {
  /** Our VNI (vxlan.vni); undefined: not checked (`vxedge peers` without a config). */
  vni?: number;
  /** overlay.network: a podCIDR outside it is left out; undefined: not checked. */
  network?: Cidr;
  /** The site's own Node name(s): never a peer. */
  selfNames?: readonly string[];
  /** The site's subnet: a node whose podCIDR overlaps it is left out. */
  selfSubnet?: Cidr;
  /** The annotations flannel's nodes carry (cluster.kubernetes.annotationPrefix); default: flannel's default prefix. */
  annotations?: FlannelAnnotations;
}

/** A peer as read from a Node; `via` says where its endpoint came from (for logs). */
export interface FlannelPeer {
  name: string;
  publicIp: string;
  subnet: Cidr;
  vtepMac: string;
  via: 'public-ip' | 'ExternalIP';
}

/** `kept`: flannel's nodes keep the last lease they knew of such a node (cluster/last-good.ts). */
export type NodeVerdict = { peer: FlannelPeer; skip?: undefined } | { skip: SkippedNode; kept: boolean; peer?: undefined };

type Json = Record<string, unknown>;


/** Own string property only: Node JSON is untrusted, and `__proto__` or `toString` must not leak in. */
function str(o: unknown, key: string): string | undefined {
  if (!isPlainObject(o) || !Object.hasOwn(o, key)) return undefined;
  const v = o[key];
  return typeof v === 'string' ? v : undefined;
}

function field(o: unknown, key: string): unknown {
  return isPlainObject(o) && Object.hasOwn(o, key) ? o[key] : undefined;
}

/** The metadata.name of a Node-like value, or "(unnamed)". */
function nodeName(node: unknown): string {
  return str(field(node, 'metadata'), 'name') || '(unnamed)';
}

/** A Node's metadata.annotations: untrusted, so anything (read with `str`). */
function annotationsOf(node: unknown): unknown {
  return field(field(node, 'metadata'), 'annotations');
}

/** Why the site's own Node is not a peer: it is no node left out either (cluster/live.ts). */
export const SELF_WHY = 'this gateway itself';

/** Decides whether flannel's VXLAN backend would program `node`, and where we send to it. Never throws. */
export function nodeVerdict(node: unknown, ctx: FlannelContext = {}): NodeVerdict {
  const name = nodeName(node);
  const skip = (why: string, kept = false): NodeVerdict => ({ skip: { name, why }, kept });
  if (!isPlainObject(node)) return skip('not a Node object');
  if (ctx.selfNames?.includes(name)) return skip(SELF_WHY);

  const keys = ctx.annotations ?? ANNOTATIONS;
  const annotations = annotationsOf(node);
  const a = (key: string) => str(annotations, key);
  if (a(keys.kubeSubnetManager) !== 'true') {
    const other = otherPrefix(annotations, keys);
    if (other) {
      return skip(
        `its flannel annotations are under ${other} (flanneld --kube-annotation-prefix), not ${keys.prefix}, the prefix vxedge reads: ` +
          `if the site belongs to that flannel network, set cluster.kubernetes.annotationPrefix (vxedge peers: --kube-annotation-prefix) to ${other}`,
        true,
      );
    }
    return skip(`annotation ${keys.kubeSubnetManager} is not "true" (flannel ignores it too)`, true);
  }
  const type = a(keys.backendType);
  if (type !== 'vxlan') return skip(`backend-type is ${show(type ?? null)}, not "vxlan"`, true);

  const announced = a(keys.publicIp);
  if (announced === undefined || !isIPv4(announced)) {
    return skip(`public-ip ${show(announced ?? null)} is not an IPv4 address (flannel skips this node too)`, true);
  }

  const data = backendData(a(keys.backendData), ctx.vni);
  if ('why' in data) return skip(data.why, data.kept);

  const subnet = podCidr(field(node, 'spec'));
  if (!subnet) return skip('no IPv4 podCIDR in spec.podCIDRs/spec.podCIDR (the node has no subnet yet)', true);
  if (ctx.network && !cidrContains(ctx.network, subnet)) {
    return skip(`its podCIDR ${subnet.text} is outside the pod network ${ctx.network.text} (overlay.network): check that both clusters' networks agree`);
  }
  if (ctx.selfSubnet && cidrOverlaps(ctx.selfSubnet, subnet)) {
    return skip(`its podCIDR ${subnet.text} overlaps this site's subnet ${ctx.selfSubnet.text}: a route to it would take the site's traffic; give the site (overlay.subnet) a subnet no node uses`);
  }

  const endpoint = endpointOf(node, announced, keys);
  if ('why' in endpoint) return skip(endpoint.why);
  return { peer: { name, publicIp: endpoint.ip, subnet, vtepMac: data.mac, via: endpoint.via } };
}

/** The name of flannel's annotation that makes a Node a lease, whatever the prefix. */
export const KUBE_SUBNET_MANAGER = 'kube-subnet-manager';

/**
 * The other prefixes than ours under which `annotations` hold a `kube-subnet-manager` key,
 * each with its value: a flanneld started with --kube-annotation-prefix (to run a second
 * flannel network beside the default one) writes all its annotations under its own.
 */
export function otherPrefixes(annotations: unknown, ours: FlannelAnnotations): { prefix: string; value: unknown }[] {
  if (!isPlainObject(annotations)) return [];
  return Object.keys(annotations)
    .filter((key) => key.endsWith(KUBE_SUBNET_MANAGER) && key !== ours.kubeSubnetManager)
    .map((key) => ({ prefix: key.slice(0, -KUBE_SUBNET_MANAGER.length), value: annotations[key] }));
}

/** The other prefix under which a Node is a flannel lease (`kube-subnet-manager: "true"`); null when none. */
function otherPrefix(annotations: unknown, ours: FlannelAnnotations): string | null {
  return otherPrefixes(annotations, ours).find((o) => o.value === 'true')?.prefix ?? null;
}

/** The VtepMAC of a Node's backend-data as flannel decodes it, normalised; null when it has none flannel could use. */
export function nodeVtepMac(node: unknown, keys: FlannelAnnotations = ANNOTATIONS): string | null {
  const data = backendData(str(annotationsOf(node), keys.backendData), undefined);
  return 'mac' in data ? data.mac : null;
}

/** backend-data as flannel decodes it: {VtepMAC, VNI?}, keys matched as Go's encoding/json does. */
/** `kept`: flannel's VXLAN backend cannot decode it either, and keeps what it knew. */
function backendData(text: string | undefined, vni: number | undefined): { mac: string } | { why: string; kept: boolean } {
  let data: unknown;
  try {
    data = JSON.parse(text ?? '');
  } catch {
    return { why: `backend-data is not valid JSON (${show(text ?? null)}); flannel cannot decode it either`, kept: true };
  }
  if (!isPlainObject(data)) return { why: `backend-data ${show(data)} is not a JSON object`, kept: true };
  const rawMac = goField(data, 'VtepMAC');
  const mac = typeof rawMac === 'string' ? macOrNull(dottedToColons(rawMac)) : null;
  if (!mac) return { why: `backend-data VtepMAC ${show(rawMac ?? null)} is not a unicast MAC address`, kept: true };
  const rawVni = goField(data, 'VNI');
  if (vni !== undefined && rawVni !== undefined && rawVni !== null && rawVni !== vni) {
    return { why: `backend-data VNI ${show(rawVni)} is not ours (vxlan.vni ${vni}): that node's flannel.1 drops our frames; use the cluster's VNI`, kept: false };
  }
  return { mac };
}

/** Go's encoding/json: an exact key wins, else the first case-insensitive match. */
function goField(o: Json, key: string): unknown {
  if (Object.hasOwn(o, key)) return o[key];
  const lower = key.toLowerCase();
  for (const k of Object.keys(o)) if (k.toLowerCase() === lower) return o[k];
  return undefined;
}

function macOrNull(s: string): string | null {
  try {
    return parseMac(s);
  } catch {
    return null;
  }
}

/** net.ParseMAC also takes Cisco's "0e5c.aa00.0064"; our parser takes colons. */
function dottedToColons(s: string): string {
  const m = /^([0-9a-f]{4})\.([0-9a-f]{4})\.([0-9a-f]{4})$/i.exec(s);
  return m ? m.slice(1).join('').replace(/(..)(?!$)/g, '$1:') : s;
}

/** A Node's IPv4 subnet as flannel reads it (null when it has none). */
export function nodePodCidr(node: unknown): Cidr | null {
  return podCidr(field(node, 'spec'));
}

/** flannel: the first IPv4 entry of spec.podCIDRs, or spec.podCIDR when that list is empty. */
function podCidr(spec: unknown): Cidr | null {
  const list = field(spec, 'podCIDRs');
  const all = Array.isArray(list) && list.length > 0 ? list : [field(spec, 'podCIDR')];
  for (const c of all) {
    const cidr = typeof c === 'string' ? parseCidrLikeGo(c) : null;
    if (cidr) return cidr;
  }
  return null;
}

/** Go's net.ParseCIDR masks host bits ("10.244.1.5/24" is 10.244.1.0/24); IPv6 and junk give null. */
function parseCidrLikeGo(s: string): Cidr | null {
  const [ip, len, extra] = s.split('/');
  if (extra !== undefined || !isIPv4(ip) || !/^(0|[1-9][0-9]?)$/.test(len ?? '') || Number(len) > 32) return null;
  return parseCidr(`${intToIp((ipToInt(ip) & prefixMask(Number(len))) >>> 0)}/${len}`);
}

function endpointOf(node: Json, announced: string, keys: FlannelAnnotations): { ip: string; via: FlannelPeer['via'] } | { why: string } {
  if (isGloballyRoutable(ipToInt(announced))) return { ip: announced, via: 'public-ip' };
  const addresses = field(field(node, 'status'), 'addresses');
  for (const entry of Array.isArray(addresses) ? addresses : []) {
    const ip = str(entry, 'address');
    if (str(entry, 'type') === 'ExternalIP' && ip !== undefined && isIPv4(ip) && isGloballyRoutable(ipToInt(ip))) {
      return { ip, via: 'ExternalIP' };
    }
  }
  return {
    why:
      `public-ip ${announced} is a private address (flannel announces the VPC address unless --public-ip is set) ` +
      `and the Node has no public ExternalIP: set flannel's --public-ip, or the annotation ` +
      `${keys.publicIpOverwrite}, to the node's Elastic IP, or give the instance a public IP`,
  };
}

// ---------------------------------------------------------------------------------------------
// Many Nodes -> a view

/**
 * Every Node judged; peers in name order. `port` is the peers' UDP port (vxlan.port). `last`:
 * the peers of the view before, whose last good lease a node keeps when an update makes it
 * one flannel's nodes cannot use either (cluster/last-good.ts); none for a one-off listing.
 */
export function viewFromNodes(nodes: Iterable<unknown>, ctx: FlannelContext, port: number, last?: ReadonlyMap<string, PeerConfig>): ClusterView {
  const peers: PeerConfig[] = [];
  const skipped: SkippedNode[] = [];
  const keepable = new Set<SkippedNode>();
  const dualStack: string[] = [];
  let count = 0;
  for (const n of nodes) {
    count++;
    if (runsDualStack(n, ctx)) dualStack.push(nodeName(n));
    const v = nodeVerdict(n, ctx);
    if (v.peer) {
      peers.push({ name: v.peer.name, publicIp: v.peer.publicIp, port, subnet: v.peer.subnet, vtepMac: v.peer.vtepMac });
    } else {
      skipped.push(v.skip);
      if (v.kept) keepable.add(v.skip);
    }
  }
  const byName = (x: { name: string }, y: { name: string }) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
  const held = keepLastGood(peers.sort(byName), skipped.sort(byName), keepable, last);
  return { nodes: count, ...held, ...(dualStack.length ? { dualStack: dualStack.sort() } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Dual-stack clusters

/**
 * A flannel VXLAN node (not the site's own) whose Node carries flannel's IPv6 annotations: its
 * flanneld runs with EnableIPv6, or did (it never removes them). Such a flanneld turns a Node
 * into a lease only with an IPv6 public IP and an IPv6 podCIDR too (kube.go `nodeToLease`
 * returns the error of parsing an empty public-ipv6), so it skips the site's IPv4-only Node:
 * no route, neighbour or FDB entry for the site on that node.
 */
function runsDualStack(node: unknown, ctx: FlannelContext): boolean {
  if (ctx.selfNames?.includes(nodeName(node))) return false;
  const keys = ctx.annotations ?? ANNOTATIONS;
  const annotations = annotationsOf(node);
  const a = (key: string) => str(annotations, key);
  if (a(keys.kubeSubnetManager) !== 'true' || a(keys.backendType) !== 'vxlan') return false;
  return !!(a(keys.publicIpv6) || a(keys.backendV6Data));
}

/** How many dual-stack nodes a sentence names before it counts the rest. */
const DUAL_STACK_NAMED = 3;

/**
 * Why the cluster's dual-stack flannel nodes route nothing to the site, and what to do; null
 * when no node runs dual-stack (always for etcd: flannel's etcd subnet manager takes an
 * IPv4-only lease beside dual-stack ones, `EnableIPv6` following the key).
 */
export function dualStackProblem(view: Pick<ClusterView, 'dualStack'> | null, keys: FlannelAnnotations = ANNOTATIONS): { detail: string; fix: string } | null {
  const names = view?.dualStack ?? [];
  if (names.length === 0) return null;
  const shown = names.slice(0, DUAL_STACK_NAMED).join(', ') + (names.length > DUAL_STACK_NAMED ? ` and ${names.length - DUAL_STACK_NAMED} more` : '');
  return {
    detail:
      `${names.length} flannel node(s) run dual-stack (${shown}: ${keys.publicIpv6} set) and route nothing to this site: ` +
      'flanneld with EnableIPv6 skips a Node without an IPv6 public IP and podCIDR, and the site announces IPv4 only',
    fix:
      'vxedge carries IPv4 only: set "EnableIPv6": false in flannel\'s net-conf.json (ConfigMap kube-flannel-cfg) and restart flanneld, ' +
      `then remove the IPv6 annotations it leaves behind: kubectl annotate nodes --all ${keys.publicIpv6}- ${keys.backendV6Data}-`,
  };
}
