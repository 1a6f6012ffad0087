// Applies a new desired set of peers to everything that knows about peers: the kernel's
// routes and neighbours (one `ip -batch` per change), the data plane's peer table (in
// place) and the keepalive. Only what changed is touched: another peer's route, slot,
// counters, roamed address and keepalive history stay as they are. Reloads (SIGHUP) and
// cluster changes both come through here, one at a time.
//
// A peer is in the table before its route is in the kernel, so a route the kernel refused
// would never be tried again by a diff (the peer is already "in force"). Such peers are
// kept as unrouted, and every later apply routes them again, an apply with no change too
// (LiveMembership retries after a failure).
import type { PeerConfig } from '../config/types.js';
import { diffIsEmpty, diffPeers, type PeerDiff } from '../cluster/membership.js';
import type { PeerTable } from '../dataplane/peers.js';
import type { OverlayDevice } from './device.js';

export class PeerSync {
  private queue: Promise<unknown> = Promise.resolve();
  /** Peers in the table whose route the kernel refused, by name: routed again at the next apply. */
  private readonly unrouted = new Map<string, PeerConfig>();

  constructor(
    private readonly device: Pick<OverlayDevice, 'addPeers' | 'removePeers'>,
    private readonly table: PeerTable,
    /** Called after the table changed (the keepalive follows it). */
    private readonly afterChange: () => void,
  ) {}

  /** The peers in force, in slot order. */
  current(): PeerConfig[] {
    return [...this.table.slots()].map((s) => this.table.configs[s]!);
  }

  /** Names of peers in force whose route is not in the kernel (the last attempt failed). */
  unroutedPeers(): string[] {
    return [...this.unrouted.keys()];
  }

  /** Makes `desired` the peers in force; resolves with what changed. Calls are serialized. */
  apply(desired: readonly PeerConfig[]): Promise<PeerDiff> {
    const run = this.queue.then(() => this.applyNow(desired));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Puts back the routes (TAP: and neighbours) of the peers in force that the kernel lost to
   * someone else (a network manager that manages foreign routes, a script): `lost` says which
   * of them have no route. Queued with the applies, so it never reads the routing table while
   * an apply has put peers in the table but not yet their routes. Resolves with those routed.
   */
  restoreRoutes(lost: (peers: PeerConfig[]) => Promise<PeerConfig[]>): Promise<PeerConfig[]> {
    const run = this.queue.then(async () => {
      const gone = await lost(this.current());
      if (gone.length > 0) await this.device.addPeers(gone);
      return gone;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async applyNow(desired: readonly PeerConfig[]): Promise<PeerDiff> {
    const d = diffPeers(this.current(), desired);
    if (diffIsEmpty(d) && this.unrouted.size === 0) return d;
    // A peer whose subnet or MAC changed needs its old kernel state gone; an address or
    // port change lives only in the table (the kernel routes by subnet, TUN knows no MAC).
    const rerouted = d.changed.filter((c) => c.from.subnet.text !== c.to.subnet.text || c.from.vtepMac !== c.to.vtepMac);
    await this.device.removePeers([...d.removed, ...rerouted.map((c) => c.from)]);
    for (const p of d.removed) this.table.remove(p.name);
    for (const c of d.changed) this.table.update(c.to);
    for (const p of d.added) this.table.add(p);
    for (const p of d.removed) this.unrouted.delete(p.name);
    for (const c of rerouted) this.unrouted.delete(c.to.name);
    for (const c of d.changed) if (this.unrouted.has(c.to.name)) this.unrouted.set(c.to.name, c.to);
    // Routes last, so that a packet the kernel routes to a new peer finds it in the table.
    const routes = [...d.added, ...rerouted.map((c) => c.to), ...this.unrouted.values()];
    try {
      await this.device.addPeers(routes);
      this.unrouted.clear();
    } catch (e) {
      // `ip -force -batch` went on past the line that failed, so most may be in; which is not
      // said, and a route replace of one that is costs nothing: all of them are tried again.
      for (const p of routes) this.unrouted.set(p.name, p);
      this.afterChange();
      throw e;
    }
    this.afterChange();
    return d;
  }
}
