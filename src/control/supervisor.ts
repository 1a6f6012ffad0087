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
//   - the underlay address changed: rediscover.
import type { PeerState } from './peer-state.js';

export type Decision =
  | { do: 'diagnose'; peer: string; address: string }
  | { do: 'forget-diagnosis'; peer: string }
  | { do: 'rediscover'; why: string }
  | { do: 'log-transition'; peer: string; from: PeerState; to: PeerState }
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

export function decideOnUnderlayChange(was: string, now: string): Decision[] {
  return [{ do: 'rediscover', why: `underlay addresses changed (${was || 'none'} -> ${now || 'none'})` }, { do: 'publish' }];
}

/** What the supervisor acts with; each is a small capability of another part. */
export interface SupervisorActions {
  diagnose(peer: string, address: string): void;
  forgetDiagnosis(peer: string): void;
  rediscover(why: string): void;
  logTransition(peer: string, from: PeerState, to: PeerState): void;
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
        case 'publish':
          publish = true; // once, after everything else has changed
          break;
      }
    }
    if (publish) this.act.publish();
  }
}
