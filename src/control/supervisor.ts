// What the control plane does about events, decided first and done after (nebula's
// connection manager does the same): the decide* functions are pure and return decisions
// as data, so every rule is a row in a table test; Supervisor carries them out with the
// parts the gateway hands it.
//
// Rules:
//   - a peer goes down: diagnose its *current* address over the underlay (it may have
//     roamed away from the configured one), log why, publish;
//   - while a peer stays down: diagnose again (the diagnosis itself spaces reruns a minute);
//   - a peer comes up: forget its diagnosis, publish;
//   - every peer down at once points at our side: the NAT may have changed our mapping, so
//     rediscover the public endpoint (STUN, port mapping);
//   - a peer roamed: forget its diagnosis (it was about the old address), publish;
//   - the underlay address changed: rediscover; and when the address the tunnel sockets are
//     bound to left the NIC while another took its place (DHCP renumbering), restart: only a
//     fresh start binds the new one (not when underlay.address pins it: a restart would
//     refuse to start, and the address may come back);
//   - the underlay check passes again after failing (carrier or address back: a router that
//     restarted takes its LAN port down meanwhile): look again with STUN, and try a port
//     mapping that failed meanwhile at once, not at its next retry.
import type { PeerState } from './peer-state.js';

export type Decision =
  | { do: 'diagnose'; peer: string; address: string }
  | { do: 'forget-diagnosis'; peer: string }
  | { do: 'rediscover'; why: string }
  | { do: 'log-transition'; peer: string; from: PeerState; to: PeerState }
  | { do: 'restart'; why: string }
  | { do: 'uplink-back'; why: string }
  | { do: 'publish' };

export interface PeerTransition {
  peer: string;
  from: PeerState;
  to: PeerState;
  /** The peer's current endpoint address (after roaming, the new one). */
  address: string;
  /** Is any peer up after this transition? */
  anyUp: boolean;
}

export function decideOnTransition(t: PeerTransition): Decision[] {
  const out: Decision[] = [];
  if (t.to === 'down') out.push({ do: 'diagnose', peer: t.peer, address: t.address });
  if (t.to === 'up') out.push({ do: 'forget-diagnosis', peer: t.peer });
  out.push({ do: 'log-transition', peer: t.peer, from: t.from, to: t.to });
  if (t.to === 'down' && !t.anyUp) out.push({ do: 'rediscover', why: 'peers down' });
  out.push({ do: 'publish' });
  return out;
}

/** The periodic look at peers that stay down. */
export function decideOnTick(down: readonly { peer: string; address: string }[]): Decision[] {
  return down.map((d) => ({ do: 'diagnose', peer: d.peer, address: d.address }));
}

export function decideOnRoam(peer: string): Decision[] {
  return [{ do: 'forget-diagnosis', peer }, { do: 'publish' }];
}

/**
 * The underlay NIC's IPv4 addresses changed (`was`, `now`: space-separated). `bound`: the
 * address the tunnel sockets are bound to, and whether the config pins it (underlay.address).
 */
export function decideOnUnderlayChange(was: string, now: string, bound?: { address: string; pinned: boolean }): Decision[] {
  const addrs = now.split(' ').filter(Boolean);
  if (bound && !bound.pinned && addrs.length > 0 && !addrs.includes(bound.address)) {
    return [{ do: 'restart', why: `the underlay address ${bound.address} the tunnel sockets are bound to is gone, and the NIC now has ${addrs.join(', ')} (DHCP renumbering?): a fresh start binds the new one` }];
  }
  return [{ do: 'rediscover', why: `underlay addresses changed (${was || 'none'} -> ${now || 'none'})` }, { do: 'publish' }];
}

/** The underlay check's verdict at a refresh (`was`: the one before, null at the first). */
export function decideOnUnderlayCheck(was: boolean | null, now: boolean): Decision[] {
  return was === false && now ? [{ do: 'uplink-back', why: 'the uplink is back' }] : [];
}

/** What the supervisor acts with; each is a small capability of another part. */
export interface SupervisorActions {
  diagnose(peer: string, address: string): void;
  forgetDiagnosis(peer: string): void;
  rediscover(why: string): void;
  logTransition(peer: string, from: PeerState, to: PeerState): void;
  /** Stop for a fresh start (the gateway's 'fatal': vxedge run exits 1 for its service manager). */
  restart(why: string): void;
  /** The uplink is back: look again (STUN), and retry a failed port mapping now. */
  uplinkBack(why: string): void;
  publish(): void;
}

export class Supervisor {
  constructor(private readonly act: SupervisorActions) {}

  run(decisions: readonly Decision[]): void {
    let publish = false;
    for (const d of decisions) {
      switch (d.do) {
        case 'diagnose':
          this.act.diagnose(d.peer, d.address);
          break;
        case 'forget-diagnosis':
          this.act.forgetDiagnosis(d.peer);
          break;
        case 'rediscover':
          this.act.rediscover(d.why);
          break;
        case 'log-transition':
          this.act.logTransition(d.peer, d.from, d.to);
          break;
        case 'restart':
          this.act.restart(d.why);
          break;
        case 'uplink-back':
          this.act.uplinkBack(d.why);
          break;
        case 'publish':
          publish = true; // once, after everything else has changed
          break;
      }
    }
    if (publish) this.act.publish();
  }
}
