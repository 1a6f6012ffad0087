// The health document as Prometheus metrics (text exposition format 0.0.4, what every
// Prometheus and agent scrapes): the same numbers as status.json and the MQTT `health`
// topic, named and typed by Prometheus's conventions (base units, `_total` for counters,
// one series per state of an enum). Pure: a document in, text out; the server is
// metrics-server.ts.
//
// Written here rather than with prom-client: its registry is for a process that counts as
// it goes, these numbers are counted already, and loading it (with @opentelemetry/api)
// costs ~9 MB of resident memory on a board whose whole budget is 64 MB (README,
// Dependencies). The format is checked by Prometheus itself in the lab (metrics.test.ts).
import { DROP_REASONS } from '../dataplane/drops.js';
import type { PeerState } from '../control/peer-state.js';
import type { GatewayState, HealthDocument, PeerHealthDoc } from './document.js';

const GATEWAY_STATES: readonly GatewayState[] = ['ok', 'degraded', 'down'];
const PEER_STATES: readonly PeerState[] = ['up', 'down', 'unknown'];
const MIB = 1024 * 1024;

/** A sample: its labels as written between the braces ("" for none), and its value. */
type Sample = [labels: string, value: number];

/** A label value or HELP text as the format writes it (\\, \n, and " in label values). */
function escapeLabel(v: string): string {
  return /[\\\n"]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"') : v;
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** `{version: "1", site: "lab"}` as the format writes it between braces: `version="1",site="lab"`. */
function labels(l: Record<string, string>): string {
  let out = '';
  for (const k in l) out += `${out ? ',' : ''}${k}="${escapeLabel(l[k]!)}"`;
  return out;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Seconds since the epoch of an ISO 8601 time, or null. */
function seconds(iso: string | null | undefined): number | null {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? ms / 1000 : null;
}

const b = (x: boolean): number => (x ? 1 : 0);

/**
 * Builds one exposition: each family's HELP and TYPE, then its samples. One string, appended
 * to: 500 peers make ~6 000 lines, and a scrape runs on the gateway's event loop.
 */
class Exposition {
  private out = '';

  family(name: string, type: 'gauge' | 'counter', help: string, samples: readonly Sample[]): void {
    if (samples.length === 0) return;
    this.head(name, type, help);
    for (const [l, value] of samples) this.line(name, l, value);
  }

  /** One sample without labels, left out when the value is not known. */
  one(name: string, type: 'gauge' | 'counter', help: string, value: number | null | undefined): void {
    if (value === null || value === undefined) return;
    this.head(name, type, help);
    this.line(name, '', value);
  }

  /** A family of one sample per item (`labelsOf[i]` its labels), leaving out the items whose value is null. */
  each<T>(name: string, type: 'gauge' | 'counter', help: string, items: readonly T[], labelsOf: readonly string[], value: (item: T) => number | null): void {
    let headed = false;
    for (let i = 0; i < items.length; i++) {
      const v = value(items[i]!);
      if (v === null) continue;
      if (!headed) this.head(name, type, help);
      headed = true;
      this.line(name, labelsOf[i]!, v);
    }
  }

  /** What was written since the last take. */
  take(): string {
    const out = this.out;
    this.out = '';
    return out;
  }

  private head(name: string, type: string, help: string): void {
    this.out += `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
  }

  private line(name: string, l: string, value: number): void {
    this.out += l ? `${name}{${l}} ${formatValue(value)}\n` : `${name} ${formatValue(value)}\n`;
  }
}

/** The metrics of one health document, whole. */
export function renderMetrics(doc: HealthDocument): string {
  return [...metricChunks(doc)].join('');
}

type PeerFamily = [name: string, type: 'gauge' | 'counter', help: string, value: (p: PeerHealthDoc) => number | null];

/** The families with a sample per peer, each a number of its row. */
const PEER_FAMILIES: readonly PeerFamily[] = [
  ['vxedge_peer_up', 'gauge', '1 while the peer answers its keepalives.', (p) => b(p.state === 'up')],
  ['vxedge_peer_rtt_seconds', 'gauge', 'The last keepalive round trip (absent before the first answer).', (p) => (p.rttMs === null ? null : p.rttMs / 1000)],
  ['vxedge_peer_loss_ratio', 'gauge', 'Keepalives lost over the recent window, 0..1.', (p) => (p.lossPct === null ? null : p.lossPct / 100)],
  ['vxedge_peer_last_seen_timestamp_seconds', 'gauge', 'The peer\'s last sign of life: a keepalive answer or any valid frame.', (p) => seconds(p.lastSeen)],
  ['vxedge_peer_receive_packets_total', 'counter', 'Packets received from the peer and written to the device.', (p) => p.rxPackets],
  ['vxedge_peer_receive_bytes_total', 'counter', 'Bytes of those packets.', (p) => p.rxBytes],
  ['vxedge_peer_transmit_packets_total', 'counter', 'Packets read from the device and sent to the peer.', (p) => p.txPackets],
  ['vxedge_peer_transmit_bytes_total', 'counter', 'Bytes of those packets.', (p) => p.txBytes],
];

/**
 * The metrics of one health document, a family or a few at a time: the server writes each
 * piece and lets the event loop (the packet path) run before the next, so that 500 peers'
 * ~6 000 lines never hold it for more than a family's worth.
 */
export function* metricChunks(doc: HealthDocument): Generator<string, void, undefined> {
  const x = new Exposition();
  const t = doc.tunnel;
  x.family('vxedge_info', 'gauge', 'The gateway: version, site and node (always 1).', [[labels({ version: doc.version, site: doc.site, node: doc.node }), 1]]);
  x.family('vxedge_state', 'gauge', 'The gateway\'s state: 1 for the current one of ok, degraded, down.', GATEWAY_STATES.map((s) => [labels({ state: s }), b(doc.state === s)]));
  x.one('vxedge_uptime_seconds', 'gauge', 'Seconds since the gateway started.', doc.uptimeS);
  x.one('vxedge_health_timestamp_seconds', 'gauge', 'When these numbers were taken (the health document\'s ts).', seconds(doc.ts));
  x.family('vxedge_tunnel_info', 'gauge', 'The tunnel: device, mode, VNI, the site\'s subnet, VTEP MAC and endpoints (always 1).', [[labels({
    device: t.device, mode: t.mode, vni: String(t.vni), subnet: t.subnet, vtep_mac: t.vtepMac,
    local_endpoint: t.localEndpoint, public_endpoint: t.publicEndpoint ?? '',
  }), 1]]);
  x.one('vxedge_tunnel_mtu_bytes', 'gauge', 'The tunnel device\'s MTU.', t.mtu);

  yield x.take();

  const peers = doc.peers;
  // Each peer's label written once for the families that carry it.
  const peer = peers.map((p) => `peer="${escapeLabel(p.name)}"`);
  x.one('vxedge_peers', 'gauge', 'Peers in the tunnel (static and the cluster\'s).', peers.length);
  x.each('vxedge_peer_info', 'gauge', 'A peer: its subnet and the endpoint the gateway sends to (always 1).', peers,
    peers.map((p, i) => `${peer[i]},${labels({ subnet: p.subnet, endpoint: p.endpoint })}`), () => 1);
  yield x.take();
  x.family('vxedge_peer_state', 'gauge', 'A peer\'s state: 1 for the current one of up, down, unknown (not answered yet).',
    peers.flatMap((p, i) => PEER_STATES.map((s): Sample => [`${peer[i]},state="${s}"`, b(p.state === s)])));
  yield x.take();
  for (const [name, type, help, value] of PEER_FAMILIES) {
    x.each(name, type, help, peers, peer, value);
    yield x.take();
  }

  x.family('vxedge_check_ok', 'gauge', 'A check of the gateway (the health document\'s checks): 1 passing, 0 failing; its detail says why.', doc.checks.map((c) => [labels({ check: c.name }), b(c.ok)]));
  // Every reason, not only those that happened: rate() needs the zero before the first drop.
  x.family('vxedge_drops_total', 'counter', 'Packets dropped, by reason (docs/dataplane.md "Drop reasons").', DROP_REASONS.map((r) => [labels({ reason: r }), doc.drops[r] ?? 0]));

  if (doc.mqtt?.enabled) {
    const m = doc.mqtt;
    x.one('vxedge_mqtt_connected', 'gauge', '1 while connected to the MQTT broker.', b(m.connected));
    x.one('vxedge_mqtt_published_total', 'counter', 'Health documents the broker acknowledged.', m.published);
    x.one('vxedge_mqtt_queued', 'gauge', 'Health documents waiting for the broker (0 or 1).', m.queued);
    x.one('vxedge_mqtt_reconnects_total', 'counter', 'Connections to the broker after the first.', m.reconnects);
  }

  const c = doc.cluster;
  if (c) {
    x.family('vxedge_cluster_connected', 'gauge', '1 while the cluster source (Kubernetes API or etcd) answers.', [[labels({ source: c.source }), b(c.connected)]]);
    x.one('vxedge_cluster_registered', 'gauge', '1 while the site\'s own Node object or lease is in place.', b(c.registered));
    x.one('vxedge_cluster_nodes', 'gauge', 'Nodes (or leases) in the cluster\'s last view.', c.nodes);
    x.one('vxedge_cluster_skipped_nodes', 'gauge', 'Nodes of that view left out of the peers (vxedge status says why).', c.skipped?.length ?? 0);
    x.one('vxedge_cluster_last_sync_timestamp_seconds', 'gauge', 'When the last complete view of the cluster was taken.', seconds(c.lastSync));
  }

  const pm = doc.nat?.portMapping;
  if (pm && pm.mode !== 'off') {
    x.family('vxedge_port_mapping_up', 'gauge', '1 while the site router maps the tunnel port (PCP, NAT-PMP or UPnP IGD).', [[labels({ protocol: pm.protocol ?? '' }), b(pm.state === 'mapped')]]);
    x.one('vxedge_port_mapping_expiry_timestamp_seconds', 'gauge', 'When the router\'s mapping ends unless renewed.', seconds(pm.expires));
    x.one('vxedge_port_mapping_router_restarts_total', 'counter', 'Router restarts (or lost mappings) noticed.', pm.routerRestarts);
  }

  if (doc.reload) {
    x.one('vxedge_reload_timestamp_seconds', 'gauge', 'When the configuration was last reloaded (SIGHUP).', seconds(doc.reload.at));
    x.one('vxedge_reload_refused', 'gauge', '1 when the last reload was refused (an invalid file; the running configuration was kept).', b(doc.reload.error !== undefined));
    x.one('vxedge_reload_restart_needed', 'gauge', 'Changed keys that take effect only after a restart.', doc.reload.restartNeeded.length);
  }

  const mem = doc.memory;
  if (mem) {
    x.one('process_resident_memory_bytes', 'gauge', 'Resident memory.', Math.round(mem.rssMb * MIB));
    x.one('vxedge_memory_peak_resident_bytes', 'gauge', 'The resident memory\'s peak (VmHWM): what a board\'s budget is about.', mem.peakMb > 0 ? Math.round(mem.peakMb * MIB) : null);
    x.one('vxedge_heap_used_bytes', 'gauge', 'The JavaScript heap in use.', Math.round(mem.heapUsedMb * MIB));
  }
  yield x.take();
}
