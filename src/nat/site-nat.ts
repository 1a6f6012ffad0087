// The site's NAT as the gateway sees it: STUN from the tunnel socket (what the world sees
// of us), the router port mapping (PCP, NAT-PMP or UPnP IGD opening UDP underlay.port), and
// the public endpoint that follows from both (public-endpoint.ts). It answers the health
// document's `nat`, the `public_endpoint` and `port_mapping` checks, and whether AWS nodes
// have a way in without a manual forward (peer reasons stop asking for one then).
import type { Config } from '../config/types.js';
import type { Underlay } from '../control/underlay.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import { checkPublicEndpoint } from '../health/checks.js';
import type { CheckResult, NatHealthDoc, PortMappingHealthDoc } from '../health/document.js';
import type { Clock } from '../util/clock.js';
import { ipToInt, isGloballyRoutable, isIPv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import type { PortMapper, PortMapperDeps, PortMapperStatus } from './portmap/portmapper.js';
import { choosePublicEndpoint, endpointIp, type PublicEndpoint } from './public-endpoint.js';
import { StunClient, natHealth } from './stun-client.js';

export interface SiteNatOptions {
  cfg: Config;
  underlay: Underlay;
  dataplane: Pick<Dataplane, 'sendControl' | 'outside'>;
  /** The router: the default gateway of underlay.iface (null: none, port mapping skipped). */
  router: string | null;
  /** 12 bytes kept in stateDir, so a restarted gateway may renew its PCP mapping. */
  pcpNonce: Uint8Array;
  clock: Clock;
  log: Logger;
  /** Something in the health document changed. */
  changed(): void;
  /** The router mapping was made (first time, or again after it was lost). */
  mapped?(): void;
  /** The port mapper's I/O (tests put an in-memory router here). */
  portMapperDeps?: PortMapperDeps;
  /**
   * The addresses of the peers in force, configured and from the cluster source (the gateway's
   * peer table): the public_endpoint check passes a private underlay.publicIp only when all of
   * them are private too. Default: the configured peers'.
   */
  peers?: () => readonly string[];
}

export class SiteNat {
  private stun: StunClient | null = null;
  private mapper: PortMapper | null = null;
  /** The router the mapper asks (the underlay's default gateway), null when there is none. */
  private router: string | null = null;
  private stopped = false;
  private lastStunKey = '';
  /**
   * What the STUN client a reload replaced last saw of the site: the public endpoint until the
   * new servers answer (a site that only STUN finds would otherwise announce nothing meanwhile).
   */
  private stunBefore: string | null = null;

  /** Not readonly: a reload's nat.* comes in through reconfigure(). */
  private constructor(private o: SiteNatOptions) {}

  static async create(o: SiteNatOptions): Promise<SiteNat> {
    const nat = new SiteNat(o);
    const { cfg } = o;
    if (cfg.nat.stun.length > 0) nat.stun = nat.makeStun();
    nat.router = o.router;
    if (cfg.nat.portMapping !== 'off' && o.router) {
      nat.mapper = await nat.makeMapper(o.router);
    } else if (cfg.nat.portMapping !== 'off') {
      o.log.warn('no default gateway on the underlay: router port mapping skipped', { iface: o.underlay.iface });
    }
    return nat;
  }

  private async makeMapper(router: string): Promise<PortMapper> {
    const o = this.o;
    const { cfg } = o;
    // Loaded only where mapping is on: its UPnP/XML parts are of no use to a mode-off site.
    const { PortMapper } = await import('./portmap/portmapper.js');
    const mapper = new PortMapper({
      mode: cfg.nat.portMapping, gateway: router, localAddress: o.underlay.address, port: cfg.underlay.port,
      pcpNonce: o.pcpNonce, clock: o.clock, log: o.log.child({ part: 'portmap' }), deps: o.portMapperDeps,
    });
    // A mapper replaced (the router changed) says nothing more: only the one in use speaks.
    const current = () => this.mapper === mapper;
    // What is announced is read from the mapper when asked (mappedAddress()): a copy kept here
    // went stale, e.g. null for good after a failed attempt when the mapping came back on the
    // same address, which the mapper does not announce twice.
    let learned = false;
    mapper.onExternalAddress(() => {
      if (!current()) return;
      // Called when the router's address is first learned and on every change. A new one
      // makes what STUN saw old: until STUN looked again (its next round can be 2 minutes
      // away), stunAgrees would be false and the port_mapping check would blame a second NAT
      // in front of the router.
      if (learned) this.stun?.trigger('router external address changed');
      learned = true;
      o.changed();
    });
    // The forward is new on the router when the mapping is made from nothing or again after
    // a router restart (a PCP renewal that finds a reset epoch never leaves "mapped").
    let wasMapped = false;
    let restarts = 0;
    mapper.onChange((s) => {
      if (!current()) return;
      if (s.state === 'mapped' && (!wasMapped || s.routerRestarts > restarts)) o.mapped?.();
      wasMapped = s.state === 'mapped';
      restarts = s.routerRestarts;
      o.changed();
    });
    return mapper;
  }

  /** Whether the router matters here (port mapping on): else nobody need read the default route. */
  get followsRouter(): boolean {
    return this.o.cfg.nat.portMapping !== 'off';
  }

  /**
   * The underlay's default gateway as a check refresh read it (at the kernel's notice of a
   * default route added or deleted, and every 30 s). A router replaced by one at another
   * address, or a DHCP lease that names another, is asked from now on: the mapping on the old
   * one is deleted first where that router still answers (bounded: a few seconds), so that two
   * addresses of one box never race a delete against the new mapping; STUN looks again. A
   * default route that is gone (a DHCP renewal between its delete and its add, a cable out)
   * changes nothing: the mapper keeps asking the router it has, which the uplink check covers.
   */
  async routerSeen(router: string | null): Promise<void> {
    if (router === null || router === this.router || !this.followsRouter || this.stopped) return;
    const was = this.router;
    this.router = router;
    this.o.log.warn(was === null ? 'the underlay has a default gateway now: asking it for the port mapping' : 'the site router changed: the port mapping follows it', { was, now: router });
    const old = this.mapper;
    this.mapper = null;
    await old?.stop();
    if (this.stopped) return;
    this.mapper = await this.makeMapper(router);
    this.mapper.start();
    this.stun?.trigger('the site router changed');
    this.o.changed();
  }

  start(): void {
    this.stun?.start();
    this.mapper?.start();
  }

  /**
   * A reload changed nat.* or underlay.publicIp (the rest of `cfg` is the running config): the
   * configured address is announced from now on (or, null, what is discovered); STUN asks the new
   * servers, or stops; the router's mapping is deleted and asked for again in the new mode, or
   * not at all ('off'). `router`: the underlay's default gateway as read now (it was not
   * followed while the mapping was off). The public endpoint follows from what they find, as at
   * a start; STUN's last answer stands until the new servers give theirs.
   */
  async reconfigure(cfg: Config, router: string | null): Promise<void> {
    const was = this.o.cfg.nat;
    this.o = { ...this.o, cfg };
    if (router !== null) this.router = router;
    if (JSON.stringify(was.stun) !== JSON.stringify(cfg.nat.stun)) {
      this.stunBefore = this.stun?.lastGood?.publicEndpoint ?? this.stunBefore;
      this.stun?.stop();
      this.stun = null;
      this.o.dataplane.outside.hooks.onStun = undefined;
      if (cfg.nat.stun.length > 0) {
        this.stun = this.makeStun();
        this.stun.start();
      } else {
        this.stunBefore = null;
      }
    }
    if (was.portMapping !== cfg.nat.portMapping) {
      const old = this.mapper;
      this.mapper = null;
      await old?.stop(); // the forward deleted on the router, as at a stop
      if (this.stopped) return;
      if (cfg.nat.portMapping !== 'off' && this.router) {
        this.mapper = await this.makeMapper(this.router);
        this.mapper.start();
      } else if (cfg.nat.portMapping !== 'off') {
        this.o.log.warn('no default gateway on the underlay: router port mapping skipped', { iface: this.o.underlay.iface });
      }
    }
    this.o.changed();
  }

  /**
   * Resolves once the router mapping's first attempt is over (mapped, failed, off) or after
   * timeoutMs, whichever comes first. The gateway probes its peers only then: a probe whose
   * answer reaches the router before the forward exists leaves a conntrack entry without
   * it, which every later answer (same flow) keeps alive.
   */
  settled(timeoutMs: number): Promise<void> {
    const mapper = this.mapper;
    const busy = () => mapper !== null && ['idle', 'mapping'].includes(mapper.status().state);
    if (!busy()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = this.o.clock.after(timeoutMs, done);
      let over = false;
      function done(): void {
        if (over) return;
        over = true;
        timer.cancel();
        resolve();
      }
      mapper!.onChange(() => {
        if (!busy()) done();
      });
    });
  }

  /** Stops STUN and deletes the router mapping (a crash leaves it to expire). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stun?.stop();
    await this.mapper?.stop();
  }

  /**
   * Our side may have changed (every peer down, the underlay address changed): look again,
   * with STUN and at the router's mapping. Every peer down at once is how a router restart
   * that lost our forward shows, long before the mapper's periodic check would notice it.
   */
  rediscover(why: string): void {
    this.stun?.trigger(why);
    this.mapper?.recheck(why);
  }

  /**
   * The uplink is back after the underlay check failed (carrier, address): a router that
   * restarted takes its LAN ports down meanwhile. A failed port mapping is tried again at once,
   * and STUN looks again.
   */
  uplinkBack(why: string): void {
    this.stun?.trigger(why);
    this.mapper?.networkChanged(why);
  }

  publicEndpoint(): PublicEndpoint {
    const { cfg } = this.o;
    return choosePublicEndpoint({
      configuredIp: cfg.underlay.publicIp, port: cfg.underlay.port, mappedIp: this.mapper?.mappedAddress() ?? null, stun: this.stun?.lastGood?.publicEndpoint ?? this.stunBefore,
      localIp: this.o.underlay.address,
    });
  }

  /** A mapping on the router lets AWS nodes in: no manual forward is needed. */
  portMapped(): boolean {
    return (this.mapper?.mappedAddress() ?? null) !== null;
  }

  health(): NatHealthDoc | undefined {
    if (!this.stun && !this.mapper && this.o.cfg.nat.portMapping === 'off') return undefined;
    const { cfg, underlay } = this.o;
    const doc: NatHealthDoc = this.stun
      ? natHealth(this.stun, { localAddress: underlay.address, localPort: cfg.underlay.port, vxlanPort: cfg.vxlan.port, publicIp: cfg.underlay.publicIp })
      : {};
    const pm = this.mapperStatus();
    if (pm) doc.portMapping = pm;
    if (this.portMapped()) {
      doc.advice = `the site router maps UDP ${cfg.underlay.port} to ${underlay.address}:${cfg.underlay.port} (${pm?.protocol}): AWS nodes get in at ${pm?.external} without a manual forward`;
    }
    return doc;
  }

  checks(): CheckResult[] {
    const out = [checkPublicEndpoint(this.publicEndpoint(), this.o.peers?.() ?? this.o.cfg.peers.map((q) => q.publicIp))];
    const pm = portMappingCheck(this.o.cfg.nat.portMapping, this.mapperStatus(), this.stun?.lastGood?.publicEndpoint ?? null);
    if (pm) out.push(pm);
    return out;
  }

  private mapperStatus(): PortMappingHealthDoc | undefined {
    if (!this.mapper) {
      if (this.o.cfg.nat.portMapping === 'off') return undefined;
      return this.noRouterStatus();
    }
    const s = this.mapper.status();
    const stunIp = endpointIp(this.stun?.lastGood?.publicEndpoint ?? null);
    return { ...s, stunAgrees: stunIp && s.routerAddress ? stunIp === s.routerAddress : null };
  }

  /** Without a mapper: no router to ask, or (the router just changed) the next one not asked yet. */
  private noRouterStatus(): PortMapperStatus & { stunAgrees: null } {
    const asking = this.router !== null;
    return {
      protocol: null, external: null, lifetime: null, expires: null, mode: this.o.cfg.nat.portMapping, state: asking ? 'idle' : 'failed',
      error: asking ? null : `no default gateway on ${this.o.underlay.iface}: nothing to ask for a port mapping`,
      gateway: this.router, routerAddress: null, tried: [], renewedAt: null, retryAt: null, routerRestarts: 0, badAnswers: { pcp: 0, natpmp: 0, upnp: 0 },
      stunAgrees: null,
    };
  }

  private makeStun(): StunClient {
    const { cfg, dataplane, clock, log } = this.o;
    const stun = new StunClient({
      servers: cfg.nat.stun, localPort: cfg.underlay.port, software: 'vxedge', clock, log: log.child({ part: 'stun' }),
      send: (buf, off, len, addr, port) => dataplane.sendControl(buf, off, len, addr, port),
    });
    dataplane.outside.hooks.onStun = (buf, off, len, addr, port) => stun.handle(buf, off, len, addr, port);
    stun.onResult((r) => {
      this.stunBefore = null; // the servers of now have answered (or all failed): theirs is the word
      const fields = { reason: r.reason, publicEndpoint: r.publicEndpoint, portPreserved: r.portPreserved, mappingVaries: r.mappingVaries };
      const key = JSON.stringify([r.publicEndpoint, r.portPreserved, r.mappingVaries]);
      if (!r.publicEndpoint) log.warn('no STUN server answered', { ...fields, servers: r.servers });
      else log[key !== this.lastStunKey ? 'info' : 'debug']('stun result', fields);
      this.lastStunKey = key;
      this.o.changed();
    });
    return stun;
  }
}

/**
 * port_mapping: fails when a mapping was asked for by name and is not in place, when the one
 * in place cannot work (STUN sees another address than the router's, or the router itself
 * reports a private or CGNAT external address: another NAT sits in front of it), or when
 * the router granted only another port. In `auto`, a router that offers no mapping at all
 * is no failure: most datacenter firewalls do not, and a manual forward or the srcport pin
 * does the job there (the peer reasons say so).
 */
export function portMappingCheck(mode: string, s: PortMappingHealthDoc | undefined, stunEndpoint: string | null): CheckResult | null {
  if (!s) return null;
  if (s.state === 'mapped' && s.stunAgrees === false) {
    return {
      name: 'port_mapping', ok: false,
      detail: `${s.protocol} maps ${s.external}, but STUN sees this site as ${stunEndpoint}: another NAT sits in front of the router (carrier-grade NAT?), so the mapping does not reach the internet`,
      fix: 'ask the ISP for a public address, or pin the AWS nodes\' source port (docs/nat.md "Ways in")',
    };
  }
  // Without STUN (the default) nothing else would say it: the router reports a private or CGNAT
  // WAN address, so its forward ends at the next NAT up (portmapper.ts isPublicIPv4's rule).
  const ip = s.routerAddress;
  if (s.state === 'mapped' && ip !== null && isIPv4(ip) && !isGloballyRoutable(ipToInt(ip))) {
    return {
      name: 'port_mapping', ok: false,
      detail: `${s.protocol} maps ${s.external}, but ${ip}, the router's external address, is not public (carrier-grade or double NAT): the mapping does not reach the internet`,
      fix: `forward UDP ${s.external?.slice(s.external.lastIndexOf(':') + 1)} to this router on the upstream one as well, ask the ISP for a public address, or pin the AWS nodes' source port (docs/nat.md "Ways in")`,
    };
  }
  if (s.state === 'mapped') {
    return { name: 'port_mapping', ok: true, detail: `${s.protocol} ${s.external} (lifetime ${s.lifetime ?? 'permanent'}${s.expires ? `, expires ${s.expires}` : ''})` };
  }
  if (s.state === 'mapping' || s.state === 'idle') return { name: 'port_mapping', ok: true, detail: `asking the router (${mode})` };
  const offered = s.tried.some((t) => t.outcome !== 'absent');
  if (mode === 'auto' && !offered) {
    return { name: 'port_mapping', ok: true, detail: 'the router offers no port mapping (PCP, NAT-PMP, UPnP IGD): AWS nodes need a manual forward or the srcport pin' };
  }
  return { name: 'port_mapping', ok: false, detail: s.error ?? `no mapping (${s.state})`, fix: s.error ?? 'see the log' };
}
