// The cluster side of the contract for the command line, without talking to the API server:
//  - `vxedge manifest`: the site's Node object (built in cluster/flannel-node.ts, the same
//    object a registering gateway keeps; with --etcd, the etcdctl put of its lease);
//  - `vxedge peers`: `kubectl get nodes -o json` -> our `peers` list, judged node by node
//    by the same rules the live Kubernetes source applies (cluster/flannel-node.ts);
//  - `vxedge rbac`: the least-privilege objects for cluster.source kubernetes (with an etcd
//    site file, the etcdctl commands for its role and user: cluster/etcd-rbac.ts).
import { readFile } from 'node:fs/promises';
import { stringify as toYaml } from 'yaml';
import { annotationsUnder, dualStackProblem, nodeManifest, viewFromNodes, type FlannelContext } from '../cluster/flannel-node.js';
import { clusterAnnotations, siteNodeName } from '../cluster/live.js';
import { etcdRbacScript, etcdUserFor } from '../cluster/etcd-rbac.js';
import { encodeLease, subnetKey } from '../cluster/flannel-lease.js';
import { rbacManifests } from '../cluster/rbac.js';
import { NODE_NAME_RE } from '../config/formats.js';
import type { Config } from '../config/types.js';
import { readVtepMac, StateError } from '../control/state.js';
import { readStatus, StatusFileError } from '../health/status-file.js';
import { ipToInt, isGloballyRoutable, isIPv4, parseCidr } from '../util/ipv4.js';
import { shellQuote } from '../util/shell-quote.js';
import { whyUnreadable } from '../util/why-unreadable.js';
import { EXIT_OK, EXIT_USAGE } from './exit-codes.js';

export { nodeManifest, type NodeManifestInput } from '../cluster/flannel-node.js';

export interface PeerEntryOut {
  name: string;
  publicIp: string;
  subnet: string;
  vtepMac: string;
}

export interface PeersResult {
  peers: PeerEntryOut[];
  skipped: { name: string; why: string }[];
  /** The cluster's dual-stack flannel nodes skip a site's IPv4-only Node: why, and the fix (null when none runs it). */
  dualStack: { detail: string; fix: string } | null;
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
  /** flanneld's --kube-annotation-prefix (cluster.kubernetes.annotationPrefix); default: flannel's default. */
  annotationPrefix?: string;
}

/** Turns `kubectl get nodes -o json` (a List, or a single Node) into peers. Throws on unreadable input. */
export function peersFromNodes(json: string, exclude: PeersExclude = {}): PeersResult {
  // A BOM (a file saved by an editor on Windows) is no reason to refuse what the config loader takes.
  const body = json.replace(/^\uFEFF/, '');
  if (body.trim() === '') throw new Error('the input is empty; expected the output of `kubectl get nodes -o json` (did kubectl fail?)');
  let doc: unknown;
  try {
    doc = JSON.parse(body);
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
    annotations: annotationsUnder(exclude.annotationPrefix),
  };
  // The port is not part of `vxedge peers` output (it defaults to vxlan.port in the config).
  const view = viewFromNodes(items, ctx, 0);
  const peers = view.peers.map((p) => ({ name: p.name, publicIp: p.publicIp, subnet: p.subnet.text, vtepMac: p.vtepMac }));
  return { peers, skipped: view.skipped, dualStack: dualStackProblem(view, ctx.annotations) };
}

/** `vxedge manifest`: the site's Node object, YAML or JSON. */
export async function runManifest(cfg: Config, json: boolean, etcd = false): Promise<number> {
  // A running gateway's document, for what the config leaves to discovery; one that cannot be
  // read counts as none, and the messages below say what to set instead.
  const status = await readStatus(cfg.runDir).catch((e: unknown) => {
    if (e instanceof StatusFileError) return null;
    throw e;
  });
  let publicIp = cfg.underlay.publicIp;
  if (!publicIp) {
    // What a running gateway discovered (port mapping, STUN); never a private local address.
    const found = status?.tunnel.publicEndpoint?.split(':')[0] ?? null;
    publicIp = found && isIPv4(found) && isGloballyRoutable(ipToInt(found)) ? found : null;
  }
  if (!publicIp) {
    process.stderr.write(
      "vxedge: the site's public IP is not known: set underlay.publicIp, or start the gateway so that port mapping or nat.stun can discover it\n",
    );
    return EXIT_USAGE;
  }
  // Read, never made here: a MAC made on the machine that runs this (a workstation with a copy
  // of site.yaml) would be announced to the cluster and never used by the gateway.
  let mac: string | null;
  try {
    mac = (await readVtepMac(cfg.stateDir, cfg.vxlan.vtepMac))?.mac ?? status?.tunnel.vtepMac ?? null;
  } catch (e) {
    if (!(e instanceof StateError)) throw e;
    process.stderr.write(`vxedge: ${e.message}\n`);
    return EXIT_USAGE;
  }
  if (!mac) {
    process.stderr.write(
      `vxedge: the site's VTEP MAC is not known yet: set vxlan.vtepMac, or run this on the gateway once it has started (it keeps the MAC in ${cfg.stateDir}/vtep-mac)\n`,
    );
    return EXIT_USAGE;
  }
  if (etcd) {
    // flannel's etcd subnet manager has no Node: the site's lease, as flanneld writes its own.
    const key = subnetKey(cfg.cluster.etcd.prefix, cfg.overlay.subnet);
    const value = encodeLease({ publicIp, vni: cfg.vxlan.vni, vtepMac: mac });
    process.stdout.write(json ? JSON.stringify({ key, value }, null, 2) + '\n' : etcdLeaseCommand(key, value));
    return EXIT_OK;
  }
  // The Node object whatever the source (the contract's output); an etcd site is told where its lease is.
  if (cfg.cluster.source === 'etcd') process.stderr.write('vxedge: this site follows etcd (cluster.source): vxedge manifest -c FILE --etcd prints its lease\n');
  const m = nodeManifest({ site: cfg.site, node: cfg.node, name: siteNodeName(cfg), subnet: cfg.overlay.subnet.text, vni: cfg.vxlan.vni, vtepMac: mac, publicIp, annotations: clusterAnnotations(cfg) });
  process.stdout.write(json ? JSON.stringify(m, null, 2) + '\n' : toYaml(m));
  return EXIT_OK;
}

/** `vxedge manifest` for an etcd site: the etcdctl command that writes its lease as a reservation. */
function etcdLeaseCommand(key: string, value: string): string {
  return [
    "# The site's lease for flannel's etcd subnet manager, exactly as flanneld writes its own. With",
    '# cluster.register on, the gateway keeps it itself, on a 24 h etcd lease it renews. With it off,',
    '# write it yourself: put without an etcd lease, the key is a reservation, which flannel never',
    '# hands to another node (and never expires: delete it when the site goes).',
    `etcdctl put ${shellQuote(key)} ${shellQuote(value)}`,
    '',
  ].join('\n');
}

/**
 * `vxedge peers [FILE]`: kubectl's node list (FILE or stdin) to the peers list; skipped nodes
 * on stderr. `annotationPrefix` (--kube-annotation-prefix, checked by the caller) wins over the config's.
 */
export async function runPeers(file: string | undefined, cfg: Config | null, annotationPrefix?: string): Promise<number> {
  if (file === undefined && process.stdin.isTTY) {
    // It would wait, silently, for a paste ending in Ctrl-D: the pipe was forgotten. "-" still reads a terminal.
    process.stderr.write(
      'vxedge: peers reads `kubectl get nodes -o json` from stdin, which is a terminal here: ' +
        'pipe it in (kubectl get nodes -o json | vxedge peers -c site.yaml) or give the file (vxedge peers nodes.json)\n',
    );
    return EXIT_USAGE;
  }
  let text: string;
  try {
    text = file && file !== '-' ? await readFile(file, 'utf8') : await readStdin();
  } catch (e) {
    process.stderr.write(`vxedge: cannot read ${file}: ${whyUnreadable(e)}\n`);
    return EXIT_USAGE;
  }
  const exclude: PeersExclude = {
    ...(cfg ? { names: [siteNodeName(cfg)], subnet: cfg.overlay.subnet.text, network: cfg.overlay.network.text, vni: cfg.vxlan.vni } : {}),
    annotationPrefix: annotationPrefix ?? cfg?.cluster.kubernetes.annotationPrefix,
  };
  let r;
  try {
    r = peersFromNodes(text, exclude);
  } catch (e) {
    process.stderr.write(`vxedge: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  for (const s of r.skipped) process.stderr.write(`skipped ${s.name}: ${s.why}\n`);
  if (r.dualStack) process.stderr.write(`vxedge: warning: ${r.dualStack.detail}; ${r.dualStack.fix}\n`);
  process.stdout.write(JSON.stringify(r.peers, null, 2) + '\n');
  return EXIT_OK;
}

/** `vxedge rbac`: ServiceAccount, token Secret, ClusterRole and binding for the site's Node, as YAML documents. */
export function runRbac(cfg: Config | null, nodeName: string | undefined): number {
  if (cfg?.cluster.source === 'etcd' && nodeName === undefined) {
    // etcd's roles are made with etcdctl: the script of commands for this site's role and user.
    const { user, note } = etcdUserFor(cfg);
    if (note) process.stderr.write(`vxedge: ${note}\n`);
    process.stdout.write(etcdRbacScript({ site: cfg.site, node: cfg.node, prefix: cfg.cluster.etcd.prefix, subnet: cfg.overlay.subnet, user }));
    return EXIT_OK;
  }
  const name = nodeName ?? (cfg ? siteNodeName(cfg) : undefined);
  if (!name) {
    // No default (the Node name needs `site`, which has none; a guess would grant another Node).
    process.stderr.write(
      'vxedge: rbac needs the site\'s Node name (cluster.kubernetes.nodeName, else vxedge-{site}-{node} from the config): ' +
        'give -c FILE (the site config; the package\'s is /etc/vxedge/site.yaml) or --node-name NAME\n',
    );
    return EXIT_USAGE;
  }
  if (!NODE_NAME_RE.test(name)) {
    process.stderr.write(`vxedge: --node-name ${JSON.stringify(name)} is not a Kubernetes node name (lower-case letters, digits, "-" and ".", starting and ending with a letter or digit)\n`);
    return EXIT_USAGE;
  }
  process.stdout.write(rbacManifests({ nodeName: name }).map((o) => toYaml(o)).join('---\n'));
  return EXIT_OK;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
