// `vxedge rbac` for `cluster.source: etcd`: the least privilege the gateway needs in etcd, as
// a shell script of etcdctl commands (etcd's roles are made with etcdctl, not applied as
// objects).
//
// The gateway follows the cluster as flanneld does, reading `{prefix}/config` and every key
// under `{prefix}/subnets/` (a list, then watches), and, registering, writes exactly one key:
// the site's own lease `{prefix}/subnets/<net>-<len>` (etcd-register.ts), on an etcd lease it
// grants, renews and revokes. Leases need no permission of their own; revoking one needs write
// access to the keys on it, which is that key. flanneld's own nodes get readwrite on the whole
// subnets prefix because they pick a free subnet; the gateway's subnet is configured, so one
// key is enough, and a gateway with these rights cannot take or delete another node's lease.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config } from '../config/types.js';
import { shellQuote as sq } from '../util/shell-quote.js';
import { whyUnreadable } from '../util/why-unreadable.js';
import { configKey, subnetKey, subnetsPrefix } from './flannel-lease.js';

/** What etcd gives the gateway's role, by key: read, or readwrite; `prefix`: every key under it. */
export interface EtcdGrant {
  permission: 'read' | 'readwrite';
  key: string;
  prefix: boolean;
}

export function etcdGrants(prefix: string, subnet: Config['overlay']['subnet']): EtcdGrant[] {
  return [
    { permission: 'read', key: configKey(prefix), prefix: false },
    { permission: 'read', key: subnetsPrefix(prefix), prefix: true },
    { permission: 'readwrite', key: subnetKey(prefix, subnet), prefix: false },
  ];
}

/** The etcd user the gateway connects as, and how it logs in. */
export interface EtcdUser {
  name: string;
  /** password: cluster.etcd.username with a password file; certificate: a client certificate's common name. */
  login: 'password' | 'certificate';
}

/**
 * The gateway's etcd user: cluster.etcd.username; else the common name of cluster.etcd.cert
 * (etcd takes a client certificate's CN as the user); else none (`note` says what to set).
 */
export function etcdUserFor(cfg: Config): { user: EtcdUser | null; note: string | null } {
  const e = cfg.cluster.etcd;
  if (e.username) return { user: { name: e.username, login: 'password' }, note: null };
  if (e.cert) {
    let cn: string | null;
    try {
      cn = commonName(new X509Certificate(readFileSync(e.cert)).subject);
    } catch (err) {
      return { user: null, note: `cannot read the common name of cluster.etcd.cert ${e.cert} (${whyUnreadable(err)}): etcd takes it as the user name` };
    }
    if (cn) return { user: { name: cn, login: 'certificate' }, note: null };
    return { user: null, note: `cluster.etcd.cert ${e.cert} has no common name (CN), which etcd would take as the user name` };
  }
  return { user: null, note: 'neither cluster.etcd.username nor cluster.etcd.cert is set: the role is granted to no user' };
}

/** The CN of an X.509 subject as Node prints it ("C=..\nCN=name\n..."). */
function commonName(subject: string): string | null {
  const line = subject.split('\n').find((l) => l.startsWith('CN='));
  return line ? line.slice(3) : null;
}

export interface EtcdRbacOptions {
  site: string;
  node: string;
  prefix: string;
  subnet: Config['overlay']['subnet'];
  user: EtcdUser | null;
}

/** The role's name: one per gateway, as the Kubernetes ClusterRole is. */
export function etcdRoleName(site: string, node: string): string {
  return `vxedge-${site}-${node}`;
}

/** The script `vxedge rbac -c FILE` prints for an etcd site. */
export function etcdRbacScript(o: EtcdRbacOptions): string {
  const role = etcdRoleName(o.site, o.node);
  const lines = [
    '#!/bin/sh',
    `# vxedge rbac: least privilege in etcd for the gateway of site ${o.site}, node ${o.node}`,
    `# (cluster.source etcd, prefix ${o.prefix}). It reads the network's config and every lease, as`,
    "# flanneld does, and writes one key: the site's own lease. Run it with etcdctl as a user that may",
    '# change roles, e.g.',
    '#   vxedge rbac -c /etc/vxedge/site.yaml > vxedge-etcd.sh',
    '#   ETCDCTL_ENDPOINTS=https://etcd-1:2379 ETCDCTL_USER=root sh vxedge-etcd.sh',
    '# (with ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY for a TLS cluster). Running it again is harmless.',
    'set -eu',
    `role=${sq(role)}`,
    'etcdctl role get "$role" >/dev/null 2>&1 || etcdctl role add "$role"',
    ...etcdGrants(o.prefix, o.subnet).map((g) => `etcdctl role grant-permission "$role" ${g.permission}${g.prefix ? ' --prefix=true' : ''} ${sq(g.key)}`),
  ];
  if (o.user === null) {
    lines.push(
      '# No user: set cluster.etcd.username (and cluster.etcd.passwordFile) or cluster.etcd.cert, and run',
      '# vxedge rbac again; or grant the role yourself: etcdctl user grant-role USER "$role"',
    );
    return `${lines.join('\n')}\n`;
  }
  lines.push(`user=${sq(o.user.name)}`);
  if (o.user.login === 'certificate') {
    lines.push(
      "# The client certificate's common name is the user; it needs no password.",
      'etcdctl user get "$user" >/dev/null 2>&1 || etcdctl user add "$user" --no-password',
    );
  } else {
    // etcdctl reads a new password from the terminal; without one (the script piped to sh) it
    // would read the script's next line, and --interactive=false keeps only its first word.
    lines.push(
      'if ! etcdctl user get "$user" >/dev/null 2>&1; then',
      '  if [ -t 0 ]; then',
      '    echo "user $user: give it the password that cluster.etcd.passwordFile holds" >&2',
      '    etcdctl user add "$user"',
      '  else',
      '    echo "user $user does not exist: create it with etcdctl user add $user (it asks for the password that cluster.etcd.passwordFile holds), then run this again" >&2',
      '    exit 1',
      '  fi',
      'fi',
    );
  }
  lines.push('etcdctl user grant-role "$user" "$role"');
  return `${lines.join('\n')}\n`;
}
