// Taking a retired site out of its cluster (`vxedge retire`): the site's Node (Kubernetes) or
// its subnet lease (etcd), each only when it is the site's own. A gateway that stops leaves
// them on purpose (a restart must not take the site's routes away from every node), so a site
// that is gone for good stays in every flannel node's routes, FDB and neighbour table until
// someone removes it: a Node forever, a lease until its TTL (flannel's: 24 h) ends.
//
// "Own" is what registration goes by: a Node labelled vxedge.io/gateway=true for this site
// (kubernetes.ts registrationStep), a lease whose VtepMAC is the site's (etcd-register.ts). The
// delete is conditional on what was read (the Node's uid and resourceVersion, the key's mod
// revision), so a Node or lease that a running gateway rewrote, or that someone replaced,
// between the read and the delete is left in place and said so.
import type { NodeApi } from './kube-client.js';
import { httpStatusOf } from './kube-errors.js';
import { ANNOTATIONS, GATEWAY_LABEL, SITE_LABEL, nodePodCidr, nodeVtepMac, type FlannelAnnotations } from './flannel-node.js';
import { describeHolder, leaseVtepMac } from './flannel-lease.js';
import { leaseHex, type EtcdKv } from './etcd-kv.js';

/** What one step did or would do: `ok` false leaves the site's entry in place, and `fix` says what to do. */
export interface RetireOutcome {
  ok: boolean;
  detail: string;
  fix?: string;
  /** Something was (or, in a dry run, would be) removed. */
  removed: boolean;
}

type Meta = { uid?: unknown; resourceVersion?: unknown; labels?: Record<string, unknown> | null; annotations?: Record<string, unknown> | null };

function metaOf(node: unknown): Meta {
  const m = (node as { metadata?: unknown } | null)?.metadata;
  return m !== null && typeof m === 'object' ? (m as Meta) : {};
}

const notFound = (e: unknown) => httpStatusOf(e) === 404;

/**
 * The site's Node deleted, if it is there and is this site's gateway's. API errors other than
 * 404 are thrown. `keys`: flannel's annotations in that cluster (the public IP and VTEP MAC it names).
 */
export async function retireNode(
  api: Pick<NodeApi, 'get' | 'delete'>, name: string, site: string, dryRun: boolean, mac: string | null = null, keys: FlannelAnnotations = ANNOTATIONS,
): Promise<RetireOutcome> {
  let node: unknown;
  try {
    node = await api.get(name);
  } catch (e) {
    if (notFound(e)) return { ok: true, removed: false, detail: `no Node ${name}: nothing to remove` };
    throw e;
  }
  const meta = metaOf(node);
  const labels = meta.labels ?? {};
  const podCidr = nodePodCidr(node)?.text ?? 'no podCIDR';
  const publicIp = meta.annotations?.[keys.publicIp];
  const what = `Node ${name} (${podCidr}${typeof publicIp === 'string' ? `, public IP ${publicIp}` : ''})`;
  if (labels[GATEWAY_LABEL] !== 'true' || labels[SITE_LABEL] !== site) {
    const has = labels[GATEWAY_LABEL] === 'true' ? `the gateway of site ${JSON.stringify(labels[SITE_LABEL] ?? null)}` : `not labelled ${GATEWAY_LABEL}=true`;
    return {
      ok: false, removed: false,
      detail: `${what} is not this site's gateway (${has}): left in place`,
      fix: `check site and cluster.kubernetes.nodeName in the site file; if that Node is this site's all the same, delete it yourself (kubectl delete node ${name})`,
    };
  }
  if (mac !== null) {
    // --mac: the box being retired is the one with that VTEP MAC, not one that replaced it.
    const held = nodeVtepMac(node, keys);
    if (held !== mac.toLowerCase()) {
      // Registration follows the site, not the MAC: a replacement has patched the Node already.
      return { ok: true, removed: false, detail: `${what} holds VtepMAC ${held ?? 'none'}, not ${mac.toLowerCase()}: a gateway that replaced that box has it now; nothing to remove` };
    }
  }
  if (typeof meta.uid !== 'string' || meta.uid === '') {
    return { ok: false, removed: false, detail: `${what} has no uid: the API server's answer is not a Node as Kubernetes serves one; left in place` };
  }
  if (dryRun) return { ok: true, removed: true, detail: `would remove ${what}` };
  try {
    await api.delete(name, { uid: meta.uid, ...(typeof meta.resourceVersion === 'string' ? { resourceVersion: meta.resourceVersion } : {}) });
  } catch (e) {
    if (notFound(e)) return { ok: true, removed: false, detail: `no Node ${name} any more (removed meanwhile): nothing to remove` };
    if (httpStatusOf(e) === 409) {
      return {
        ok: false, removed: false,
        detail: `${what} changed between reading and removing it: left in place`,
        fix: 'a gateway of this site still running somewhere writes its Node: stop it (systemctl stop vxedge), then run vxedge retire again',
      };
    }
    throw e;
  }
  return { ok: true, removed: true, detail: `removed ${what}: flannel's nodes drop their route to the site at the Node's delete event` };
}

/**
 * The site's subnet lease deleted, if it is there and holds the site's VTEP MAC (`mac`, null:
 * not known on this machine). etcd errors are thrown.
 */
export async function retireLease(kv: Pick<EtcdKv, 'get' | 'deleteIf' | 'leaseKeys' | 'revoke'>, key: string, mac: string | null, dryRun: boolean, macFrom = "this site's VTEP MAC"): Promise<RetireOutcome> {
  const entry = await kv.get(key);
  if (!entry) return { ok: true, removed: false, detail: `no lease ${key}: nothing to remove` };
  const holder = describeHolder(entry.value);
  const what = `lease ${key} (${holder})`;
  if (mac === null) {
    return {
      ok: false, removed: false,
      detail: `${what}: this site's VTEP MAC is not known here (no vxlan.vtepMac, nothing in stateDir), so whether the lease is this site's cannot be told; left in place`,
      fix: `run vxedge retire on the site's gateway (with its stateDir), or delete the lease yourself once sure it is this site's (etcdctl del ${key})`,
    };
  }
  if (leaseVtepMac(entry.value) !== mac.toLowerCase()) {
    return {
      ok: false, removed: false,
      detail: `${what} does not hold ${macFrom} (${mac.toLowerCase()}): left in place`,
      fix: `check overlay.subnet and cluster.etcd.prefix in the site file; the node holding that lease routes the subnet now`,
    };
  }
  if (dryRun) return { ok: true, removed: true, detail: `would remove ${what}` };
  const r = await kv.deleteIf(key, entry.modRevision);
  if (!r.ok) {
    if (r.current === null) return { ok: true, removed: false, detail: `no lease ${key} any more (removed meanwhile): nothing to remove` };
    return {
      ok: false, removed: false,
      detail: `${what} changed between reading and removing it (now: ${describeHolder(r.current.value)}): left in place`,
      fix: 'a gateway of this site still running somewhere renews its lease: stop it (systemctl stop vxedge), then run vxedge retire again',
    };
  }
  const removed = `removed ${what}: flannel's nodes drop their route to the site at the lease's delete event`;
  return { ok: true, removed: true, detail: entry.lease === 0n ? removed : `${removed}; ${await revokeEmptied(kv, entry.lease)}` };
}

/**
 * The etcd lease the removed key was on, revoked when nothing else is attached to it (ours, as
 * flanneld's, holds that one key), so that it does not linger until its TTL ends (24 h). One
 * that holds other keys is left: revoking it would delete them. Either way the key is gone,
 * so a failure here is said, not thrown.
 */
async function revokeEmptied(kv: Pick<EtcdKv, 'leaseKeys' | 'revoke'>, lease: bigint): Promise<string> {
  const id = leaseHex(lease);
  try {
    const keys = await kv.leaseKeys(lease);
    if (keys === null) return `its etcd lease ${id} had already ended`;
    if (keys.length > 0) return `its etcd lease ${id} is left to its TTL: it holds ${keys.length} other key(s) (${keys.slice(0, 3).join(', ')}${keys.length > 3 ? ', …' : ''})`;
    await kv.revoke(lease);
    return `its etcd lease ${id} revoked`;
  } catch (e) {
    return `its etcd lease ${id} is left to its TTL (${e instanceof Error ? e.message : String(e)})`;
  }
}
