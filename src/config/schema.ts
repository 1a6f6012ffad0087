// The one place that declares every config key: its doc, default, format (which also
// gives its type, see formats.ts), whether a reload applies it live, and whether it is an
// extension of the public contract (docs/contract.md). Everything else is derived from
// this tree: the Config type, the environment variable (envName), convict's schema, the
// builder, the reload diff (reload.ts) and the README's reference table (reference.ts).
// Adding a key is one entry here plus, where the program uses it, the code that does.

import os from 'node:os';
import convict from 'convict';
import { choice, DEFAULT_ANNOTATION_PREFIX, formats as f, ID_PATTERN, type FormatDef, type Lookup, type SubProblem } from './formats.js';
import { show } from '../util/show.js';

export interface Leaf<T> {
  doc: string;
  /** The default as a user would write it; null with a non-nullable format: required. */
  default: unknown;
  format: FormatDef<T>;
  /** A SIGHUP applies a change of this key without a restart. */
  live?: boolean;
  /** Masked in every message. */
  sensitive?: boolean;
  /** Not in the public contract (the README lists the extensions). */
  extension?: boolean;
}

export type SchemaNode = Leaf<unknown> | { [key: string]: SchemaNode };
export type SchemaTree = { [key: string]: SchemaNode };

/** The typed value of a schema node: a leaf's built type, or an object of its children's. */
export type ValueOf<N> = N extends Leaf<infer T> ? T : { [K in keyof N]: ValueOf<N[K]> };

const leaf = <T>(l: Leaf<T>): Leaf<T> => l;

const overlayMode = choice('overlay-mode', ['tun', 'tap'] as const);
const logLevel = choice('log-level', ['debug', 'info', 'warn', 'error'] as const);
const clusterSource = choice('cluster-source', ['static', 'kubernetes', 'etcd'] as const);
const portMapping = choice('port-mapping', ['auto', 'pcp', 'natpmp', 'upnp', 'off'] as const);

/** The schema; `node` defaults to the lower-cased host name, injectable for tests. */
export function buildSchema(hostname: string = os.hostname()) {
  return {
    site: leaf({
      doc: `Site id (${ID_PATTERN}); used in MQTT topics and the Node name vxedge-{site}-{node}. Required.`,
      default: null,
      format: f.siteId,
    }),
    node: leaf({
      doc: `Gateway id within the site (${ID_PATTERN}). Default: the host name, lower-cased.`,
      default: hostname.toLowerCase(),
      format: f.siteId,
    }),
    stateDir: leaf({ doc: 'Persistent state: the VTEP MAC (vtep-mac) and the endpoints peers roamed to (endpoints.json).', default: '/var/lib/vxedge', format: f.path }),
    runDir: leaf({ doc: 'Runtime state: status.json.', default: '/run/vxedge', format: f.path }),
    underlay: {
      iface: leaf({
        doc: 'NIC whose IPv4 address carries the tunnel (flannel --iface); null: the NIC of the default route.',
        default: null,
        format: f.ifnameOrNull,
      }),
      address: leaf({
        doc: 'Local IPv4 address to bind; null: the first IPv4 address of underlay.iface.',
        default: null,
        format: f.ipv4OrNull,
      }),
      port: leaf({ doc: 'Local UDP port (VXLAN, STUN and keepalives share it).', default: 8472, format: f.port }),
      publicIp: leaf({
        doc: 'Public IPv4 address to announce (flannel --public-ip); null: discovered (port mapping, STUN), else the local address.',
        default: null,
        format: f.publicIpv4OrNull,
        live: true,
      }),
    },
    vxlan: {
      vni: leaf({ doc: 'VXLAN network identifier, 1..16777215.', default: 1, format: f.vni }),
      port: leaf({ doc: "UDP port of the peers' VTEPs.", default: 8472, format: f.port }),
      mtu: leaf({ doc: 'Device MTU, 576..9000; null: underlay MTU - 50.', default: null, format: f.mtuOrNull }),
      vtepMac: leaf({
        doc: "This VTEP's MAC (unicast); null: generated once and kept in stateDir.",
        default: null,
        format: f.macOrNull,
      }),
    },
    overlay: {
      device: leaf({ doc: 'TUN/TAP device name.', default: 'flannel.1', format: f.ifname }),
      mode: leaf({
        doc: 'tun: L3 device, vxedge builds the inner Ethernet header; tap: L2 device, the kernel resolves neighbours.',
        default: 'tun',
        format: overlayMode,
      }),
      network: leaf({ doc: "The cluster's pod network (flannel Network).", default: '10.244.0.0/16', format: f.cidr }),
      subnet: leaf({
        doc: "This site's subnet inside overlay.network; its .0 address is the VTEP's own. Required.",
        default: null,
        format: f.cidr,
      }),
      mssClamp: leaf({
        doc: 'Clamp the TCP MSS of forwarded SYN and SYN-ACK packets to fit the tunnel MTU.',
        default: true,
        format: f.bool,
        live: true,
        extension: true,
      }),
      strictPeers: leaf({
        doc:
          "Accept frames only from known peer endpoints, with inner sources inside the sending peer's subnet. " +
          'false accepts any source address and any inner source: only for clusters that route other prefixes via a peer.',
        default: true,
        format: f.bool,
        live: true,
        extension: true,
      }),
      offload: leaf({
        doc:
          'TUN mode: let the kernel hand over and take TCP super-packets (virtio-net headers, TSO, UDP GSO/GRO); ' +
          'vxedge segments and coalesces them itself. Falls back to the plain path, with a warning, when the kernel refuses. ' +
          'TAP mode is always plain.',
        default: true,
        format: f.bool,
        extension: true,
      }),
      sendThread: leaf({
        doc:
          'Send to the underlay from a second thread, so that reading and routing the next batch overlaps with the kernel\'s ' +
          'work of sending the last one, on another core. A packet of another flow (a ping, DNS, an SSH keystroke) does not wait behind the bulk it holds. ' +
          'Ignored on a one-core machine; false: every send is made on the main thread.',
        default: true,
        format: f.bool,
        extension: true,
      }),
      queues: leaf({
        doc:
          'Queues of the TUN/TAP device, 1..16, and as many underlay sockets on underlay.port (SO_REUSEPORT). The kernel keeps each flow on ' +
          "one queue, and a peer's kernel VXLAN sends each flow from its own source port, which picks the socket; vxedge reads queues and " +
          "sockets in turn, so a ping or a small request does not wait behind a bulk transfer's backlog either way. The device falls back " +
          'to 1 queue, with a warning, when the kernel refuses.',
        default: 8,
        format: f.deviceQueues,
        extension: true,
      }),
    },
    peers: leaf({
      doc:
        'The AWS nodes: list of { name, publicIp, port (default vxlan.port), subnet, vtepMac }; honoured with every cluster.source ' +
        'and winning over a cluster node with the same subnet. From the environment: a JSON list.',
      default: [],
      format: f.peers,
      live: true,
    }),
    keepalive: {
      interval: leaf({
        doc: 'Keepalive/probe period per peer (ms, or "25s"); keep it under the NAT UDP timeout. 0 disables probes (peers are then judged by their traffic alone, and NAT mappings are not held open).',
        default: '25s',
        format: f.durationOrZero,
        live: true,
      }),
      timeout: leaf({
        doc: 'A peer with no answer for this long is down; longer than keepalive.interval.',
        default: '90s',
        format: f.duration,
        live: true,
      }),
    },
    nat: {
      stun: leaf({
        doc:
          'STUN servers "host:port" (port defaults to 3478) for public-endpoint discovery. ' +
          'From the environment: comma-separated or a JSON list.',
        default: [],
        format: f.hostPortList,
        live: true,
      }),
      portMapping: leaf({
        doc:
          'Ask the site router to forward UDP underlay.port to this gateway: auto tries PCP, NAT-PMP, then UPnP IGD; ' +
          'pcp, natpmp or upnp force one; off sends nothing. The external port must equal underlay.port.',
        default: 'auto',
        format: portMapping,
        live: true,
      }),
    },
    cluster: {
      source: leaf({
        doc: "Where the peers come from: static (the peers list), kubernetes (the Node API, flannel's kube subnet manager) or etcd (flannel's etcd subnet manager).",
        default: 'static',
        format: clusterSource,
        live: true,
      }),
      register: leaf({
        doc: 'With a cluster source: announce this site as flannel does (Kubernetes: keep its Node object; etcd: keep its subnet lease).',
        default: true,
        format: f.bool,
        live: true,
      }),
      kubernetes: {
        kubeconfig: leaf({
          doc: 'kubeconfig (token, client certificate or exec credential plugin such as EKS\'s); null: $KUBECONFIG, else the in-cluster service account. Its cluster\'s proxy-url, else HTTPS_PROXY (NO_PROXY honoured), as kubectl.',
          default: null,
          format: f.pathOrNull,
          live: true,
        }),
        nodeName: leaf({ doc: "The site's Node name; null: vxedge-{site}-{node}.", default: null, format: f.nodeNameOrNull, live: true }),
        annotationPrefix: leaf({
          doc:
            "flanneld's --kube-annotation-prefix: the Nodes' flannel annotations are {prefix}/public-ip, {prefix}/backend-data, ... " +
            '("example.com/net": example.com/net-public-ip, as flannel completes it); read from the nodes, written on the site\'s Node.',
          default: DEFAULT_ANNOTATION_PREFIX,
          format: f.annotationPrefix,
          live: true,
          extension: true,
        }),
      },
      etcd: {
        endpoints: leaf({
          doc: 'etcd v3 endpoints (http:// or https://): list every member (flanneld --etcd-endpoints); calls go to one at a time, and to the next when one refuses, has no leader or stops answering; through an HTTP CONNECT proxy when grpc_proxy, https_proxy or http_proxy (or HTTPS_PROXY, HTTP_PROXY) is set (no_grpc_proxy, no_proxy, NO_PROXY honoured). From the environment: comma-separated or a JSON list.',
          default: [],
          format: f.etcdEndpoints,
          live: true,
        }),
        prefix: leaf({ doc: "flannel's --etcd-prefix: {prefix}/config and {prefix}/subnets/.", default: '/coreos.com/network', format: f.etcdPrefix, live: true }),
        ca: leaf({ doc: 'TLS CA bundle for etcd (PEM).', default: null, format: f.pathOrNull, live: true }),
        cert: leaf({ doc: 'TLS client certificate for etcd (PEM); needs cluster.etcd.key.', default: null, format: f.pathOrNull, live: true }),
        key: leaf({ doc: 'TLS client private key for etcd (PEM); needs cluster.etcd.cert.', default: null, format: f.pathOrNull, live: true }),
        username: leaf({ doc: 'etcd user name.', default: null, format: f.stringOrNull, live: true }),
        passwordFile: leaf({ doc: 'File holding the etcd password; needs cluster.etcd.username.', default: null, format: f.pathOrNull, live: true }),
      },
    },
    mqtt: {
      url: leaf({ doc: 'Broker URL: mqtt://, mqtts://, ws:// or wss://; null disables MQTT. Unless mqtt.proxy is set, ws:// and wss:// go through the HTTP proxy HTTP_PROXY or HTTPS_PROXY names (NO_PROXY honoured); mqtt:// and mqtts:// go direct, or through the SOCKS proxy MQTTJS_SOCKS_PROXY names (socks5://HOST:PORT, no credentials).', default: null, format: f.mqttUrlOrNull, live: true }),
      proxy: leaf({
        doc:
          'Proxy to the broker, whatever the scheme of mqtt.url (mqtts:// too: a client certificate, as AWS IoT Core takes on port 443, cannot ride a WebSocket): ' +
          'http://[USER:PASSWORD@]HOST:PORT (HTTP CONNECT; https:// the same over TLS to the proxy, its CA from the system or NODE_EXTRA_CA_CERTS), or socks5://, socks5h:// (the proxy resolves the broker), socks4://, socks4a:// [USER:PASSWORD@]HOST:PORT (1080 by default); ' +
          'wins over the proxy variables and NO_PROXY. null: as mqtt.url says.',
        default: null,
        format: f.mqttProxyOrNull,
        live: true,
        extension: true,
      }),
      topicPrefix: leaf({ doc: 'First topic level: {topicPrefix}/{site}/{node}/status and /health.', default: 'vxedge', format: f.topicLevel, live: true }),
      interval: leaf({ doc: 'Health publishing period; also published at once on any state change (changes that keep coming: one document every 5 s).', default: '30s', format: f.duration, live: true }),
      username: leaf({ doc: 'Broker user name.', default: null, format: f.stringOrNull, live: true }),
      password: leaf({
        doc: 'Broker password; prefer mqtt.passwordFile to keep it out of the config.',
        default: null,
        format: f.stringOrNull,
        sensitive: true,
        live: true,
      }),
      passwordFile: leaf({ doc: 'File holding the broker password (not with mqtt.password).', default: null, format: f.pathOrNull, live: true }),
      ca: leaf({ doc: 'TLS CA bundle (PEM).', default: null, format: f.pathOrNull, live: true }),
      cert: leaf({ doc: 'TLS client certificate (PEM) for mutual TLS, e.g. AWS IoT Core; needs mqtt.key.', default: null, format: f.pathOrNull, live: true }),
      key: leaf({ doc: 'TLS client private key (PEM); needs mqtt.cert.', default: null, format: f.pathOrNull, live: true }),
    },
    board: {
      led: leaf({
        doc:
          'Status LED: a name under /sys/class/leds (Raspberry Pi: "ACT", older kernels "led0") or an LED directory; ' +
          'steady on while every peer is up, blinking when degraded, off when down or stopped. null: the LEDs are left alone.',
        default: null,
        format: f.ledOrNull,
        live: true,
        extension: true,
      }),
      releaseStartupPages: leaf({
        doc:
          'Give back the pages of Node\'s binary and the other mapped files that only start-up used (once the modules are loaded, ' +
          'at READY and 10 s later): ~20 MB less resident memory; the pages stay in the page cache (docs/memory.md). false: keep them mapped.',
        default: true,
        format: f.bool,
        extension: true,
      }),
    },
    metrics: {
      listen: leaf({
        doc:
          'Serve Prometheus metrics (the health document\'s numbers: peers, traffic, drops, checks, MQTT, cluster, memory) at http://HOST:PORT/metrics: ' +
          '"127.0.0.1:9474" for an agent on this box, "0.0.0.0:9474" for a Prometheus elsewhere (open the port to it alone); a port alone means 127.0.0.1. null: not served.',
        default: null,
        format: f.metricsListenOrNull,
        live: true,
        extension: true,
      }),
      webConfig: leaf({
        doc:
          'TLS, client certificates, basic auth (bcrypt hashes), headers and a rate limit for metrics.listen, in the web configuration file of ' +
          'Prometheus\'s exporter-toolkit (node_exporter\'s --web.config.file); read again every 30 s and at a reload (SIGHUP). null: plain HTTP, open to whoever reaches the address.',
        default: null,
        format: f.pathOrNull,
        live: true,
        extension: true,
      }),
    },
    log: {
      level: leaf({ doc: 'Log level.', default: 'info', format: logLevel, live: true }),
    },
  };
}

export type Schema = ReturnType<typeof buildSchema>;

// ------------------------------------------------------------------- derived

/** `underlay.publicIp` -> `VXEDGE_UNDERLAY_PUBLIC_IP`. */
export function envName(path: string): string {
  return `VXEDGE_${path.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/\./g, '_').toUpperCase()}`;
}

/**
 * `underlay.publicIp` -> `VXEDGE_UNDERLAY_PUBLICIP`: the path upper-cased as it is, which is how
 * the contract's `VXEDGE_<PATH>` reads for a camel-case key. Accepted beside envName's spelling.
 */
export function envAlias(path: string): string {
  return `VXEDGE_${path.replace(/\./g, '_').toUpperCase()}`;
}

export function isLeaf(node: SchemaNode): node is Leaf<unknown> {
  return Object.hasOwn(node, 'format') && Object.hasOwn(node, 'doc');
}

export interface LeafEntry {
  path: string;
  spec: Leaf<unknown>;
  env: string;
}

/** Every leaf of the tree with its dotted path and environment variable, in schema order. */
export function leaves(tree: SchemaTree, prefix = ''): LeafEntry[] {
  return Object.entries(tree).flatMap(([k, node]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return isLeaf(node) ? [{ path, spec: node, env: envName(path) }] : leaves(node, path);
  });
}

/** Every path of the tree, sections included ("underlay", "underlay.port"). */
export function allPaths(tree: SchemaTree, prefix = ''): string[] {
  return Object.entries(tree).flatMap(([k, node]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return isLeaf(node) ? [p] : [p, ...allPaths(node, p)];
  });
}

/** A key with no default that must be given. */
export function isRequired(spec: Leaf<unknown>): boolean {
  return spec.default === null && spec.format.nullable !== true;
}

/** Problems with one leaf's value (null/undefined handled by the caller). */
export function valueProblems(spec: Leaf<unknown>, v: unknown): SubProblem[] {
  return spec.format.problems(v);
}

let registered = false;

/** convict's view of the tree: its formats registered by name, env from the path. */
export function convictSchema(tree: SchemaTree): convict.Schema<Record<string, unknown>> {
  if (!registered) {
    registered = true;
    const all = new Map(leaves(tree).map((l) => [l.spec.format.name, l.spec.format]));
    convict.addFormats(Object.fromEntries([...all].map(([name, def]) => [name, toConvictFormat(name, def)])));
  }
  const walk = (t: SchemaTree, prefix: string): Record<string, unknown> =>
    Object.fromEntries(
      Object.entries(t).map(([k, node]) => {
        const path = prefix ? `${prefix}.${k}` : k;
        if (!isLeaf(node)) return [k, walk(node, path)];
        return [k, { doc: node.doc, default: node.default, format: node.format.name, env: envName(path), sensitive: node.sensitive }];
      }),
    );
  return walk(tree, '') as convict.Schema<Record<string, unknown>>;
}

function toConvictFormat(name: string, def: FormatDef<unknown>): convict.Format {
  return {
    name,
    validate(v: unknown) {
      if (v === null && def.nullable) return;
      if (v === null || v === undefined) throw new Error(`is required: expected ${def.expected}`);
      const first = def.problems(v)[0];
      if (first) throw new Error(`${first.at}${first.at ? ': ' : ''}${first.message}`);
    },
    coerce: def.coerce,
  };
}

/** The typed config from checked raw values (every leaf through its format's build). */
export function buildValues<T extends SchemaTree>(tree: T, values: Record<string, unknown>): ValueOf<T> {
  const get: Lookup = (path) => {
    let cur: unknown = values;
    for (const k of path.split('.')) cur = (cur as Record<string, unknown> | undefined)?.[k];
    return cur;
  };
  const walk = (t: SchemaTree, prefix: string): Record<string, unknown> =>
    Object.fromEntries(
      Object.entries(t).map(([k, node]) => {
        const path = prefix ? `${prefix}.${k}` : k;
        if (!isLeaf(node)) return [k, walk(node, path)];
        const v = get(path);
        return [k, v === null && node.format.nullable ? null : node.format.build(v, get)];
      }),
    );
  return walk(tree, '') as ValueOf<T>;
}

export { show };
