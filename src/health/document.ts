// The health document of the public contract (docs/contract.md "Health document"): what
// `status.json`, `vxedge status` and the MQTT `health` topic carry. Fields beyond the
// contract are extensions, marked as such there.
import type { ClusterStatus } from '../cluster/types.js';
import type { PeerState } from '../control/peer-state.js';
import type { PortMapperStatus } from '../nat/portmap/portmapper.js';
import type { MemoryDoc } from './memory.js';
import type { MqttStatus } from './mqtt.js';

export type GatewayState = 'ok' | 'degraded' | 'down';

export interface PeerHealthDoc {
  name: string;
  endpoint: string;
  subnet: string;
  state: PeerState;
  rttMs: number | null;
  lossPct: number | null;
  lastSeen: string | null;
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  reason: string | null;
}

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  /** What to run or change when !ok (extension). */
  fix?: string;
}

/**
 * The site's NAT: STUN discovery (extension; the first six fields, present when nat.stun is
 * configured) and the router port mapping (contract: `portMapping`, present unless
 * nat.portMapping is off).
 */
export interface NatHealthDoc {
  /** The last round, one entry per configured server, in config order. */
  stun?: { server: string; mapped: string | null; error: string | null; rttMs: number | null }[];
  /** What the first answering server saw, "ip:port"; null: no answer in the last round. */
  mappedEndpoint?: string | null;
  /** The NAT kept the local port; null when unknown. */
  portPreserved?: boolean | null;
  /** Two servers saw different ip:port (endpoint-dependent NAT); null with fewer than two answers. */
  mappingVaries?: boolean | null;
  /** When the last round ended; null before the first one ends. */
  checkedAt?: string | null;
  /** Which way in applies, in plain words (docs/nat.md). */
  advice?: string;
  /** The router port mapping (PCP, NAT-PMP, UPnP IGD): src/nat/portmap/portmapper.ts status(). */
  portMapping?: PortMappingHealthDoc;
}

/**
 * The contract's five fields (protocol, external, lifetime, expires, error), then
 * extensions: the mapper's state, what it tried, the router's address and whether STUN
 * agrees with it (false: another NAT in front of the router).
 */
export type PortMappingHealthDoc = PortMapperStatus & { stunAgrees: boolean | null };

export interface HealthDocument {
  site: string;
  node: string;
  version: string;
  ts: string;
  uptimeS: number;
  state: GatewayState;
  tunnel: {
    device: string;
    mode: 'tun' | 'tap';
    vni: number;
    mtu: number;
    subnet: string;
    vtepMac: string;
    localEndpoint: string;
    publicEndpoint: string | null;
    /** Extension: the device's queues (overlay.queues, or 1 when the kernel refused more). */
    queues?: number;
  };
  peers: PeerHealthDoc[];
  checks: CheckResult[];
  /** Extensions. */
  pid: number;
  /** Seconds between MQTT health publications (mqtt.interval): older than 3 × this is stale. */
  intervalS?: number;
  /** The process's memory, MiB (docs/memory.md): resident now and at its peak, and the JS heap. */
  memory?: MemoryDoc;
  drops: Record<string, number>;
  mqtt?: MqttStatus;
  nat?: NatHealthDoc;
  offload?: OffloadHealthDoc;
  /** With cluster.source kubernetes or etcd: following the cluster, and our registration. */
  cluster?: ClusterStatus;
  /** The last SIGHUP: the keys applied, and the changed ones that need a restart. */
  reload?: ReloadDoc;
}

/**
 * The last SIGHUP. One that was refused (an invalid file) applied nothing and carries `error`;
 * `restartNeeded` then still lists what the reloads before it left waiting for a restart.
 */
export interface ReloadDoc {
  at: string;
  applied: string[];
  restartNeeded: string[];
  /** Why the last reload was refused (the running config was kept); absent when it was applied. */
  error?: string;
}

/** The data plane's offloads (docs/dataplane.md "Offloads"). */
export interface OffloadHealthDoc {
  tso: boolean;
  udpGro: boolean;
  reason: string | null;
  counters?: Record<string, number>;
}

/** ok: every peer up and every check passes; down: no peer up (none at all included); else degraded. */
export function overallState(peers: { state: PeerState }[], checks: { ok: boolean }[]): GatewayState {
  const up = peers.filter((p) => p.state === 'up').length;
  if (up === 0) return 'down';
  if (up === peers.length && checks.every((c) => c.ok)) return 'ok';
  return 'degraded';
}
