// Why a peer is not up, in words an operator can act on. A pure function of what we
// know, so each case is a row in a table test. The cases follow flannel's own
// troubleshooting guide: the AWS security group must allow UDP 8472; the node must
// route back to the site (its Node object applied); and behind a NAT the AWS nodes'
// packets, sent from a port hashed per flow, need a way in (docs/nat.md "Ways in").
import type { PeerState } from './peer-state.js';

export interface ReasonFacts {
  state: PeerState;
  keepalivesEnabled: boolean;
  timeoutS: number;
  /** A probe was answered at some point. */
  answeredBefore: boolean;
  /** A valid frame arrived from the peer within the timeout (it can reach us). */
  heardRecently: boolean;
  /** Underlay ICMP echo to the peer's public IP: true, false, or null (not tried). */
  hostReachable: boolean | null;
  peerIp: string;
  port: number;
  siteSubnet: string;
  /** Local and public endpoints when they differ (the site is behind NAT), else null. */
  nat: { local: string; public: string } | null;
  /**
   * A fault on the gateway's own side that no peer gets past (the running `underlay` or
   * `device` check failing: the uplink down, its address gone, the device deleted), in the
   * check's words; null or absent when there is none.
   */
  localFault?: string | null;
}

export function peerReason(f: ReasonFacts): string | null {
  if (f.state === 'up') return null;
  if (f.state === 'unknown') {
    return f.keepalivesEnabled ? 'waiting for the first keepalive answer' : 'keepalives are disabled and no traffic has arrived from this peer yet';
  }
  const udp = `UDP ${f.port}`;
  const sg = `the AWS security group must allow ${udp} from the site's public IP`;
  const nodeObject = `the node needs a route back to ${f.siteSubnet}: apply the site's Node object (vxedge manifest -c FILE | kubectl apply -f -)`;
  const natWayIn = f.nat
    ? `; the site is behind NAT (${f.nat.local} leaves as ${f.nat.public}) and AWS nodes send from varying source ports, so the site router needs a ${udp} port forward to ${f.nat.local}, or the nodes' flannel.1 must be created with srcport ${f.port} ${f.port + 1}`
    : '';
  const lead = f.answeredBefore ? `no answer to keepalive probes for ${f.timeoutS}s (it answered before)` : `no answer to keepalive probes for ${f.timeoutS}s`;
  // Every peer goes down when our own uplink does; sending the operator to the security group
  // or the node (and the underlay ping, which fails too, to "host unreachable") misleads.
  if (f.localFault) return `${lead}: the fault is on this side, not the node's: ${f.localFault}`;
  if (f.hostReachable === false) {
    return `${lead}, and ${f.peerIp} does not answer ping either: host unreachable (is the node running, is its publicIp right?); if it only drops ICMP, ${sg}`;
  }
  if (f.heardRecently) {
    return `${lead}, although frames from ${f.peerIp} do arrive: ${udp} toward the node is blocked (${sg}), or the node cannot route back to ${f.siteSubnet}`;
  }
  const reachable = f.hostReachable ? `${f.peerIp} answers ping, so ${udp} is blocked or unanswered: ` : '';
  return `${lead}: ${reachable}${sg} (flannel's troubleshooting: "Firewalls"); ${nodeObject}${natWayIn}`;
}

function sameFacts(a: ReasonFacts, b: ReasonFacts): boolean {
  return (
    a.state === b.state && a.keepalivesEnabled === b.keepalivesEnabled && a.timeoutS === b.timeoutS &&
    a.answeredBefore === b.answeredBefore && a.heardRecently === b.heardRecently &&
    a.hostReachable === b.hostReachable && a.peerIp === b.peerIp && a.port === b.port &&
    a.siteSubnet === b.siteSubnet && a.nat?.local === b.nat?.local && a.nat?.public === b.nat?.public &&
    (a.localFault ?? null) === (b.localFault ?? null)
  );
}

/**
 * Each peer's last reason with the facts it was made from, so a reason is written again only
 * when a fact changed. The health document lists every peer every 2 s; with 500 peers down
 * that was 500 new reasons of ~450 characters each time, most of the document's allocation,
 * and with the board's 1 MB young generation most of it lived long enough to be promoted:
 * the periodic document held the event loop for milliseconds, and the old generation grew.
 * Peers not seen in a round (removed) are forgotten at its end.
 */
export class ReasonMemo {
  private readonly last = new Map<string, { facts: ReasonFacts; reason: string | null; round: number }>();
  private round = 0;

  /** A new round over every peer begins: entries not used before `endRound` are dropped. */
  beginRound(): void {
    this.round++;
  }

  endRound(): void {
    for (const [peer, e] of this.last) if (e.round !== this.round) this.last.delete(peer);
  }

  reason(peer: string, facts: ReasonFacts): string | null {
    const e = this.last.get(peer);
    if (e && sameFacts(e.facts, facts)) {
      e.round = this.round;
      return e.reason;
    }
    const reason = peerReason(facts);
    this.last.set(peer, { facts, reason, round: this.round });
    return reason;
  }

  /** Peers remembered (tests: removed peers do not accumulate). */
  get size(): number {
    return this.last.size;
  }
}
