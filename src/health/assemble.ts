// Assembles the health document (document.ts) from what the parts know: the peer table
// (endpoints, counters), the keepalive (state, RTT, loss), the diagnosis (reasons), the
// checks and the extensions. Pure given its inputs, so the document's rules (state, peer
// rows, reasons, path_mtu) are tested without a gateway.
import { peerReason, type ReasonFacts, type ReasonMemo } from '../control/reasons.js';
import type { PeerHealth } from '../control/keepalive.js';
import { STAT_RX_BYTES, STAT_RX_PACKETS, STAT_TX_BYTES, STAT_TX_PACKETS, type PeerTable } from '../dataplane/peers.js';
import { intToIp } from '../util/ipv4.js';
import { checkPathMtu } from './checks.js';
import { overallState, type CheckResult, type HealthDocument, type PeerHealthDoc } from './document.js';

export interface PeerRowContext {
  health(name: string): PeerHealth;
  /** The underlay ping's verdict on the peer's current address (null: not tried). */
  reachable(peer: string, address: string): boolean | null;
  keepalivesEnabled: boolean;
  timeoutMs: number;
  siteSubnet: string;
  /** Local and public endpoints when they differ (the site is behind NAT), else null. */
  nat: { local: string; public: string } | null;
  /** A router port mapping lets nodes in: reasons then never ask for a manual forward. */
  portMapped: boolean;
  /** A failing check on the gateway's own side that explains every peer being down (ReasonFacts.localFault). */
  localFault?: string | null;
  /** Monotonic now, to judge `heardRecently`. */
  monoNow: number;
  /** Reuses each peer's reason while its facts stay the same (the gateway keeps one). */
  reasons?: ReasonMemo;
}

export interface PathMtuFacts {
  name: string;
  state: string;
  pathMtuOk: boolean | null;
}

/** One row per live peer, by name, and what the path_mtu check needs of each. */
export function peerRows(t: PeerTable, ctx: PeerRowContext): { rows: PeerHealthDoc[]; pathMtu: PathMtuFacts[] } {
  const rows: PeerHealthDoc[] = [];
  const pathMtu: PathMtuFacts[] = [];
  ctx.reasons?.beginRound();
  for (const s of t.slots()) {
    const h = ctx.health(t.names[s]!);
    pathMtu.push({ name: t.names[s]!, state: h.state, pathMtuOk: h.pathMtuOk });
    rows.push(rowOf(t, s, h, ctx));
  }
  ctx.reasons?.endRound();
  rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { rows, pathMtu };
}

/** The row of the peer in slot `s`; on its own for a single peer's reason (a transition's log line). */
export function peerRow(t: PeerTable, s: number, ctx: PeerRowContext): PeerHealthDoc {
  return rowOf(t, s, ctx.health(t.names[s]!), ctx);
}

function rowOf(t: PeerTable, s: number, h: PeerHealth, ctx: PeerRowContext): PeerHealthDoc {
  const name = t.names[s]!;
  const address = intToIp(t.addr[s]);
  return {
    name,
    endpoint: `${address}:${t.port[s]}`,
    subnet: t.configs[s]!.subnet.text,
    state: h.state,
    rttMs: h.rttMs,
    lossPct: h.lossPct,
    lastSeen: h.lastSeen ? new Date(h.lastSeen).toISOString() : null,
    rxPackets: t.stat(s, STAT_RX_PACKETS),
    txPackets: t.stat(s, STAT_TX_PACKETS),
    rxBytes: t.stat(s, STAT_RX_BYTES),
    txBytes: t.stat(s, STAT_TX_BYTES),
    reason: h.state === 'up' ? null : reasonOf(name, ctx, {
      state: h.state,
      keepalivesEnabled: ctx.keepalivesEnabled,
      timeoutS: Math.round(ctx.timeoutMs / 1000),
      answeredBefore: h.answeredBefore,
      heardRecently: h.heardAt > 0 && ctx.monoNow - h.heardAt < ctx.timeoutMs,
      hostReachable: ctx.reachable(name, address),
      peerIp: address,
      port: t.port[s],
      siteSubnet: ctx.siteSubnet,
      nat: ctx.portMapped ? null : ctx.nat,
      localFault: ctx.localFault ?? null,
    }),
  };
}

/** The running checks that, failing, explain every peer being down: nothing leaves or enters the tunnel here. */
const LOCAL_CHECKS = ['underlay', 'device'];

/** The first of LOCAL_CHECKS failing, in its words, for the peers' reasons; null when they pass. */
export function localFault(checks: readonly CheckResult[]): string | null {
  const c = checks.find((x) => !x.ok && LOCAL_CHECKS.includes(x.name));
  return c ? `${c.detail} (see the ${c.name} check)` : null;
}

function reasonOf(name: string, ctx: PeerRowContext, facts: ReasonFacts): string | null {
  return ctx.reasons ? ctx.reasons.reason(name, facts) : peerReason(facts);
}

export type HealthParts = Omit<HealthDocument, 'state' | 'checks'> & {
  /** The checks refreshed periodically; path_mtu is added from the peers' probes. */
  checks: CheckResult[];
  pathMtu: { mtu: number; peers: PathMtuFacts[] };
};

/** The document: its parts, the path_mtu check, and the overall state they give. */
export function assembleHealth(p: HealthParts): HealthDocument {
  const { pathMtu, site, node, version, ts, uptimeS, tunnel, peers, checks: periodic, ...extensions } = p;
  const checks = [...periodic, checkPathMtu(pathMtu.mtu, pathMtu.peers)];
  return { site, node, version, ts, uptimeS, state: overallState(peers, checks), tunnel, peers, checks, ...extensions };
}
