// The cluster side of the contract for the command line, without talking to the API server:
//  - `vxedge manifest`: the site's Node object (built in cluster/flannel-node.ts, the same
//    object a registering gateway keeps);
//  - `vxedge peers`: `kubectl get nodes -o json` -> our `peers` list, judged node by node
//    by the same rules the live Kubernetes source applies (cluster/flannel-node.ts).
import { viewFromNodes, type FlannelContext } from '../cluster/flannel-node.js';
import { parseCidr } from '../util/ipv4.js';

export { ANNOTATION_PREFIX, nodeManifest, type NodeManifestInput } from '../cluster/flannel-node.js';

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

/** What `vxedge peers -c FILE` knows about the site; every field is optional. */
export interface PeersExclude {
  /** The site's own Node name(s). */
  names?: string[];
  /** The site's subnet (overlay.subnet): nodes overlapping it are left out. */
  subnet?: string;
  /** overlay.network: nodes outside it are left out. */
  network?: string;
  /** vxlan.vni: nodes announcing another VNI are left out. */
  vni?: number;
}

/** Turns `kubectl get nodes -o json` (a List, or a single Node) into peers. Throws on unreadable input. */
export function peersFromNodes(json: string, exclude: PeersExclude = {}): PeersResult {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (e) {
    throw new Error(`input is not JSON (${(e as Error).message}); expected the output of \`kubectl get nodes -o json\``);
  }
  const d = (typeof doc === 'object' && doc !== null ? doc : {}) as { kind?: unknown; items?: unknown };
  const items: unknown[] = Array.isArray(d.items) ? d.items : d.kind === 'Node' ? [doc] : (() => {
    throw new Error('input has no "items" list; expected the output of `kubectl get nodes -o json`');
  })();
  const ctx: FlannelContext = {
    selfNames: exclude.names,
    selfSubnet: exclude.subnet !== undefined ? parseCidr(exclude.subnet) : undefined,
    network: exclude.network !== undefined ? parseCidr(exclude.network) : undefined,
    vni: exclude.vni,
  };
  // The port is not part of `vxedge peers` output (it defaults to vxlan.port in the config).
  const view = viewFromNodes(items, ctx, 0);
  const peers = view.peers.map((p) => ({ name: p.name, publicIp: p.publicIp, subnet: p.subnet.text, vtepMac: p.vtepMac }));
  return { peers, skipped: view.skipped };
}
