// The control plane around the data plane's peers: keepalive probes, roaming, underlay
// diagnosis, and the supervisor that turns their events into decisions. The gateway hands
// it the things it cannot do itself (publish the health document, rediscover the public
// endpoint, stop for a fresh start); everything else is wired here, so that a test drives the whole of it
// with in-memory I/O and a manual clock.
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Clock } from '../util/clock.js';
import { intToIp } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { UnderlayDiagnosis } from './diagnosis.js';
import type { LearnedEndpoints } from './endpoints.js';
import { Keepalive, type KeepaliveParams } from './keepalive.js';
import { Roaming } from './roaming.js';
import { Supervisor, decideOnRoam, decideOnTick, decideOnTransition, decideOnUnderlayChange, decideOnUnderlayCheck } from './supervisor.js';
import type { UnderlayPingResult } from './underlay-probe.js';

/** Longer than a Linux router keeps an unanswered UDP flow (nf_conntrack_udp_timeout, 30 s). */
const CONNTRACK_FORGET_MS = 35_000;

export interface ControlPlaneOptions extends KeepaliveParams {
  clock: Clock;
  log: Logger;
  /** Publish a fresh health document. */
  publish(): void;
  /** Rediscover the public endpoint (STUN, port mapping): our side may have changed. */
  rediscover(why: string): void;
  /** Stop for a fresh start: what this process holds cannot recover (the gateway's 'fatal'). */
  restart?(why: string): void;
  /** The uplink is back after the underlay check failed: STUN again, a failed port mapping retried now. */
  uplinkBack?(why: string): void;
  /** A down peer's reason, for the log line of its transition. */
  reasonOf?(peer: string): string | null;
  /** The underlay ping (tests inject one). */
  ping?: (addr: string) => Promise<UnderlayPingResult>;
  /** Where roamed endpoints are kept across restarts (stateDir). */
  endpoints?: LearnedEndpoints;
}

export class ControlPlane {
  readonly keepalive: Keepalive;
  readonly diagnosis: UnderlayDiagnosis;
  readonly roaming: Roaming;
  private readonly supervisor: Supervisor;

  constructor(
    private readonly dp: Dataplane,
    private readonly o: ControlPlaneOptions,
  ) {
    const { clock, log } = o;
    this.keepalive = new Keepalive(dp, { intervalMs: o.intervalMs, timeoutMs: o.timeoutMs, clock });
    this.roaming = new Roaming(dp, log, clock);
    this.diagnosis = o.ping ? new UnderlayDiagnosis(clock, o.ping) : new UnderlayDiagnosis(clock);
    this.supervisor = new Supervisor({
      diagnose: (peer, address) => this.diagnosis.check(peer, address, () => o.publish()),
      forgetDiagnosis: (peer) => this.diagnosis.forget(peer),
      rediscover: (why) => o.rediscover(why),
      logTransition: (peer, from, to) => {
        const reason = to === 'down' ? (o.reasonOf?.(peer) ?? null) : null;
        log[to === 'down' ? 'warn' : 'info']('peer state', { peer, from, to, ...(reason ? { reason } : {}) });
      },
      restart: (why) => o.restart?.(why),
      uplinkBack: (why) => o.uplinkBack?.(why),
      publish: () => o.publish(),
    });
    this.keepalive.onStateChange = (peer, from, to) =>
      this.supervisor.run(decideOnTransition({ peer, from, to, address: this.addressOf(peer), anyUp: this.keepalive.anyUp() }));
    this.roaming.onMoved = (peer, _from, to) => {
      const s = dp.peers.indexOf(peer);
      if (s >= 0) o.endpoints?.remember(peer, dp.peers.configs[s]!.publicIp, to, new Date(clock.now()).toISOString());
      this.supervisor.run(decideOnRoam(peer));
    };
  }

  start(): void {
    this.keepalive.start();
    this.roaming.start();
  }

  stop(): void {
    this.keepalive.stop();
    this.roaming.stop();
  }

  /** The peer table changed (peer-sync.ts): learned endpoints apply, new peers are probed, gone ones forgotten. */
  peersChanged(): void {
    const moved = this.o.endpoints?.apply(this.dp.peers) ?? [];
    if (moved.length) this.o.log.info('peers start at the endpoints they roamed to before', { peers: moved });
    this.keepalive.syncPeers();
    this.roaming.syncPeers();
  }

  setParams(p: KeepaliveParams): void {
    this.keepalive.setParams(p);
  }

  /** The periodic look (every status period): peers that stay down are diagnosed again. */
  tick(): void {
    const t = this.dp.peers;
    const down: { peer: string; address: string }[] = [];
    for (const s of t.slots()) {
      if (this.keepalive.state(t.names[s]!) === 'down') down.push({ peer: t.names[s]!, address: intToIp(t.addr[s]) });
    }
    this.supervisor.run(decideOnTick(down));
  }

  /**
   * The site router now forwards underlay.port to us (router port mapping made or made
   * again). Peers that are not up were probed before it existed: hold their probes longer
   * than a router keeps an unanswered UDP flow (Linux: 30 s), so their answers start a new
   * flow that meets the forward.
   */
  routerForwardOpened(): void {
    const held = this.keepalive.holdUnanswered(CONNTRACK_FORGET_MS);
    if (held.length) {
      this.o.log.info('router forward made: probes to peers that are not up wait for the router to forget their unanswered flows', {
        peers: held.length, waitS: CONNTRACK_FORGET_MS / 1000,
      });
    }
  }

  /** The underlay NIC's addresses changed; `bound`: the sockets' address, and whether underlay.address pins it. */
  underlayChanged(was: string, now: string, bound?: { address: string; pinned: boolean }): void {
    this.supervisor.run(decideOnUnderlayChange(was, now, bound));
  }

  /** The underlay check's verdict at a refresh; `was`: the one before (null at the first). */
  underlayChecked(was: boolean | null, now: boolean): void {
    this.supervisor.run(decideOnUnderlayCheck(was, now));
  }

  /** The peer's current endpoint address: after roaming, the new one. */
  private addressOf(peer: string): string {
    const t = this.dp.peers;
    const s = t.indexOf(peer);
    return s >= 0 ? intToIp(t.addr[s]) : '';
  }
}
