// The cluster side of the contract, without talking to the API server:
//  - the site's Node object, which makes every flannel node program a route, a
//    permanent neighbour and an FDB entry for the site (as F5/Citrix do: flannel-io/flannel#1122);
//  - the reverse: `kubectl get nodes -o json` -> our `peers` list, with the same
//    acceptance rules flannel applies to a lease (pkg/subnet/kube/kube.go nodeToLease).
import { isIPv4, parseCidr } from '../util/ipv4.js';
import { parseMac } from '../util/mac.js';

export const ANNOTATION_PREFIX = 'flannel.alpha.coreos.com/';

export interface NodeManifestInput {
  site: string;
  node: string;
  subnet: string;
  vni: number;
  vtepMac: string;
  publicIp: string;
}

export function nodeManifest(i: NodeManifestInput): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: `vxedge-${i.site}-${i.node}`,
      labels: { 'vxedge.io/site': i.site, 'vxedge.io/gateway': 'true' },
      annotations: {
        [`${ANNOTATION_PREFIX}kube-subnet-manager`]: 'true',
        [`${ANNOTATION_PREFIX}backend-type`]: 'vxlan',
        [`${ANNOTATION_PREFIX}backend-data`]: JSON.stringify({ VNI: i.vni, VtepMAC: i.vtepMac }),
        [`${ANNOTATION_PREFIX}public-ip`]: i.publicIp,
      },
    },
    spec: {
      podCIDR: i.subnet,
      podCIDRs: [i.subnet],
      // Keep the kube-scheduler (and DaemonSets that tolerate NotReady) off this Node:
      // no kubelet runs behind it.
      taints: [{ key: 'vxedge.io/gateway', value: 'true', effect: 'NoSchedule' }],
    },
  };
}

export interface PeerEntryOut {
  name: string;
  publicIp: string;
  subnet: string;
  vtepMac: string;
}

export interface PeersResult {
  peers: PeerEntryOut[];
  skipped: { name: string; why: string }[];
}

interface KubeNode {
  metadata?: { name?: string; annotations?: Record<string, string> };
  spec?: { podCIDR?: string; podCIDRs?: string[] };
}

/** Turns `kubectl get nodes -o json` (a List, or a single Node) into peers. Throws on unreadable input. */
export function peersFromNodes(json: string, exclude: { names?: string[]; subnet?: string } = {}): PeersResult {
  let doc: { kind?: string; items?: KubeNode[] } & KubeNode;
  try {
    doc = JSON.parse(json);
  } catch (e) {
    throw new Error(`input is not JSON (${(e as Error).message}); expected the output of \`kubectl get nodes -o json\``);
  }
  const items: KubeNode[] = Array.isArray(doc?.items) ? doc.items : doc?.kind === 'Node' ? [doc] : (() => {
    throw new Error('input has no "items" list; expected the output of `kubectl get nodes -o json`');
  })();
  const peers: PeerEntryOut[] = [];
  const skipped: { name: string; why: string }[] = [];
  for (const n of items) {
    const name = n.metadata?.name ?? '(unnamed)';
    const a = n.metadata?.annotations ?? {};
    const get = (k: string) => a[ANNOTATION_PREFIX + k];
    const why = ((): string | null => {
      if (exclude.names?.includes(name)) return 'this gateway itself';
      if (get('kube-subnet-manager') !== 'true') return `annotation ${ANNOTATION_PREFIX}kube-subnet-manager is not "true" (flannel ignores it too)`;
      if (get('backend-type') !== 'vxlan') return `backend-type is ${JSON.stringify(get('backend-type') ?? null)}, not "vxlan"`;
      if (!get('public-ip') || !isIPv4(get('public-ip'))) return `public-ip ${JSON.stringify(get('public-ip') ?? null)} is not an IPv4 address`;
      let data: { VtepMAC?: unknown };
      try {
        data = JSON.parse(get('backend-data') ?? '');
      } catch {
        return 'backend-data is not valid JSON';
      }
      try {
        parseMac(String(data?.VtepMAC ?? ''));
      } catch {
        return `backend-data VtepMAC ${JSON.stringify(data?.VtepMAC ?? null)} is not a MAC address`;
      }
      const cidr = podCidr(n);
      if (!cidr) return 'no IPv4 podCIDR';
      if (exclude.subnet && cidr === exclude.subnet) return 'its podCIDR is this site\'s own subnet';
      return null;
    })();
    if (why) {
      skipped.push({ name, why });
      continue;
    }
    const data = JSON.parse(get('backend-data')) as { VtepMAC: string };
    peers.push({ name, publicIp: get('public-ip'), subnet: podCidr(n)!, vtepMac: parseMac(data.VtepMAC) });
  }
  peers.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  return { peers, skipped };
}

function podCidr(n: KubeNode): string | null {
  const all = [...(n.spec?.podCIDRs ?? []), ...(n.spec?.podCIDR ? [n.spec.podCIDR] : [])];
  for (const c of all) {
    try {
      return parseCidr(c).text;
    } catch {
      // IPv6 or malformed: flannel takes the first IPv4 entry.
    }
  }
  return null;
}
