// What every cluster source (Kubernetes Node API, etcd) produces, and what the gateway
// hands back to it. A source follows flannel's subnet manager for its backend and turns
// what it sees into a ClusterView: the peers flannel's VXLAN backend would program, and
// the nodes it left out with the reason. membership.ts merges a view with the static
// peers and turns the result into the smallest change for the data plane and kernel.
import type { Cidr, PeerConfig } from '../config/types.js';
import type { SiteCertificate } from '../util/tls-failure.js';

export type ClusterSourceKind = 'kubernetes' | 'etcd';

/** A node (Kubernetes) or lease (etcd) that is not a peer, and why, in words an operator acts on. */
export interface SkippedNode {
  name: string;
  /** What is wrong and what to do, e.g. "public-ip 10.0.1.5 is private and the Node has no ExternalIP: …". */
  why: string;
}

/** What a source knows about the cluster at one moment. */
export interface ClusterView {
  /** Every Node object / subnet lease seen, ours included. */
  nodes: number;
  /** Candidate peers, by name; membership.ts still checks them against each other and the site. */
  peers: PeerConfig[];
  skipped: SkippedNode[];
  /**
   * Kubernetes: the flannel nodes that run dual-stack, by name (absent when none). They reach
   * the site's pods, but their flanneld skips the site's IPv4-only Node (flannel-node.ts
   * `dualStackProblem`).
   */
  dualStack?: string[];
}

/** Our own lease: what we announce so that every flannel node programs a route to the site. */
export interface OwnLease {
  /** Kubernetes: the Node name (cluster.kubernetes.nodeName or vxedge-{site}-{node}). etcd: informational. */
  name: string;
  subnet: Cidr;
  vni: number;
  vtepMac: string;
  /** The site's public IPv4 address; null while unknown (nothing is announced until it is). */
  publicIp: string | null;
}

/** The `cluster` field of the health document (docs/contract.md "Health document"), plus extensions. */
export interface ClusterStatus {
  source: 'static' | ClusterSourceKind;
  /** The last request or watch to the API/etcd worked. */
  connected: boolean;
  /** When the last complete view was taken (ISO 8601), null before the first. */
  lastSync: string | null;
  /** Nodes/leases seen in the last view. */
  nodes: number;
  /** Peers in use (static and cluster, after merging). */
  peers: number;
  /** Our Node object / lease is in place as we want it. */
  registered: boolean;
  /** The last error, with the fix (e.g. the RBAC verb missing); null when none. */
  error: string | null;
  /** Extension: nodes left out, with the reason. */
  skipped?: SkippedNode[];
}

/**
 * A live cluster source. It never throws into the gateway for cluster trouble: an
 * unreachable API, 401/403 or a bad answer become status().connected=false and
 * status().error, and the last view stays in force (forwarding goes on).
 */
export interface ClusterSource {
  readonly kind: ClusterSourceKind;
  /** Starts listing and watching (and registering, when asked to). */
  start(): void;
  /** Stops watching and renewing. Our registration stays (the lease TTL bounds it on etcd). */
  stop(): Promise<void>;
  /** Called with every new view (after the initial list, then on every change). */
  onView(cb: (view: ClusterView) => void): void;
  /** Our lease changed (public IP discovered or changed, VTEP MAC): announce it. */
  setOwnLease(lease: OwnLease): void;
  status(): Omit<ClusterStatus, 'peers' | 'skipped'>;
  /**
   * Before start (`vxedge check`), after the first view: why registering the site would be
   * refused (Kubernetes: a verb RBAC does not grant; etcd: the site's key held by another VTEP
   * MAC than `siteMac`, null when none is known yet), or null when it would not be.
   */
  registrationRefusal?(siteMac: string | null): Promise<string | null>;
  /** The certificates the cluster's servers presented last, for the certificates check. */
  serverCertificates?(): SiteCertificate[];
  /**
   * After start: resolves once serverCertificates() holds what a first look found (`vxedge
   * check`); a source that reads them from its answers has them with its first view.
   */
  serverCertificatesRead?(): Promise<void>;
  /** The wall clock was set (util/clock-step.ts): retry now what failed and waits out a backoff. */
  clockStepped?(): void;
}
