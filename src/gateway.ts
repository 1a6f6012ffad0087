// The composition root: builds the parts in order, wires them, and takes them down in
// reverse. It decides nothing itself: what an event means is the supervisor's
// (control/supervisor.ts), what the peers are is membership's (cluster/membership.ts),
// what a reload changes is the schema's (config/reload.ts), what the health document says
// is health/assemble.ts's.
//
//   tunnel (underlay, MAC, socket, device, data plane)      control/tunnel.ts
//   -> peers (static, merged) -> kernel routes + table       cluster/membership.ts, control/peer-sync.ts
//   -> keepalive, roaming, diagnosis, supervisor             control/
//   -> STUN -> public endpoint                               nat/
//   -> health: checks, document, status.json, MQTT, LED      health/
import { EventEmitter } from 'node:events';
import { LiveMembership, type MembershipHandover } from './cluster/live.js';
import { reloadPlan, withLive, type ReloadPlan } from './config/reload.js';
import type { Config } from './config/types.js';
import { ControlPlane } from './control/control-plane.js';
import { KernelEvents } from './control/kernel-events.js';
import { LearnedEndpoints } from './control/endpoints.js';
import { PeerSync } from './control/peer-sync.js';
import { ReasonMemo } from './control/reasons.js';
import { openTunnel, type Tunnel } from './control/tunnel.js';
import { assembleHealth, localFault, peerRow, peerRows, type PeerRowContext } from './health/assemble.js';
import { CertificateReader, certificateSources, certificatesCheck } from './health/certificates.js';
import { checkIpForward, checkMtu, checkRoutes, checkUnderlayAddress, deviceCheck, lostNeighboursIn, lostRoutesIn, routesCheck } from './health/checks.js';
import type { CheckResult, HealthDocument, OffloadHealthDoc, ReloadDoc } from './health/document.js';
import { StatusLed } from './health/led.js';
import { HealthPublisher, publishPeriodMs } from './health/mqtt.js';
import { MetricsServer } from './health/metrics-server.js';
import { HealthReporter } from './health/reporter.js';
import { memoryDoc } from './health/memory.js';
import { StatusFile } from './health/status-file.js';
import type { NativeBinding } from './native/index.js';
import { announceableIp } from './nat/public-endpoint.js';
import { SiteNat } from './nat/site-nat.js';
import { defaultGateway, linkDetails, neighboursIPv4, routesIPv4, type KernelRoute, type LinkInfo } from './control/iproute.js';
import { loadOrCreatePcpNonce } from './control/state.js';
import type { Clock, Timer } from './util/clock.js';
import { ClockStepWatch, describeStep, type ClockStep } from './util/clock-step.js';
import { askClockSync } from './util/clock-sync.js';
import type { Logger } from './util/log.js';
import { readOnlyHint } from './util/read-only.js';
import { Rerun } from './util/rerun.js';

const STATUS_PERIOD_MS = 2000;
const CHECKS_PERIOD_MS = 30_000;
/** A refresh the kernel's notices ask for: this long after the first notice (the rest of a burst joins it), at most one per gap. */
const CHECKS_SETTLE_MS = 100;
const CHECKS_GAP_MS = 2000;
/** Changes this close together make one document: 500 peers going down at once publish a few, not 500. */
const PUBLISH_COALESCE_MS = 250;
/** How long the first probes wait for the router port mapping's first attempt. */
const FIRST_MAPPING_WAIT_MS = 3000;

export interface GatewayDeps {
  binding: NativeBinding;
  clock: Clock;
  log: Logger;
  version: string;
}

export interface ReloadResult extends ReloadPlan {
  added: string[];
  removed: string[];
  changed: string[];
}

export class Gateway extends EventEmitter {
  private readonly startedAt: number;
  private lastTickAt: number;
  /** null until the first round of checks: no document goes out without them. */
  private checks: CheckResult[] | null = null;
  private timers: Timer[] = [];
  private publishPending: Timer | null = null;
  private stopping = false;
  /** 'fatal' was emitted (once). */
  private fatalSaid = false;
  private underlayAddrs: string | null = null;
  /** The underlay check's last verdict (null before the first): the supervisor acts on its return. */
  private underlayOk: boolean | null = null;
  private lastReload: ReloadDoc | null = null;
  private readonly control: ControlPlane;
  private readonly peerSync: PeerSync;
  /** These, the LED, the metrics server, the NAT and the membership: a reload rebuilds them when their keys change (replaceParts). */
  private publisher: HealthPublisher;
  private readonly reporter: HealthReporter;
  private readonly reasons = new ReasonMemo();
  private readonly statusFile: StatusFile;
  private led: StatusLed | null;
  /** metrics.listen's Prometheus endpoint, serving the latest document. */
  private metrics: MetricsServer | null;
  /** A reload's rebuilding of parts, which stop() waits for (the old broker's "offline"). */
  private replacing: Promise<void> | null = null;
  private nat: SiteNat | null = null;
  private membership: LiveMembership | null = null;
  /** The check refresh: every CHECKS_PERIOD_MS, and at once when the kernel says the device, its routes or the underlay changed. */
  private readonly checksRun: Rerun;
  private readonly kernelEvents: KernelEvents;
  /** The site's certificate files (MQTT's, the cluster's), for the `certificates` check with those the servers present. */
  private certificates: CertificateReader;
  /** Looked at every tick: network time setting the clock after a boot. */
  private readonly clockWatch: ClockStepWatch;

  private constructor(
    private cfg: Config,
    private readonly t: Tunnel,
    private readonly d: GatewayDeps,
    endpoints: LearnedEndpoints,
  ) {
    super();
    const { clock, log } = d;
    this.startedAt = this.lastTickAt = clock.monotonic();
    this.clockWatch = new ClockStepWatch(clock);
    this.control = new ControlPlane(t.dataplane, {
      intervalMs: cfg.keepalive.interval, timeoutMs: cfg.keepalive.timeout, clock, log,
      publish: () => this.publishSoon(),
      rediscover: (why) => this.nat?.rediscover(why),
      restart: (why) => this.fatal(why),
      uplinkBack: (why) => this.nat?.uplinkBack(why),
      reasonOf: (peer) => this.peerReason(peer),
      endpoints,
    });
    this.peerSync = new PeerSync(t.device, t.dataplane.peers, () => this.control.peersChanged());
    this.certificates = new CertificateReader(certificateSources(cfg));
    this.checksRun = new Rerun(clock, async () => {
      await this.refreshChecks();
      this.publishSoon();
    }, { settleMs: CHECKS_SETTLE_MS, gapMs: CHECKS_GAP_MS, failed: (e) => log.warn('check refresh failed', { err: e.message }) });
    this.kernelEvents = new KernelEvents({
      io: d.binding, device: t.deviceName, underlay: t.underlay.iface, neighbours: cfg.overlay.mode === 'tap', changed: () => this.checksRun.request(), log,
    });
    this.publisher = this.newPublisher(cfg);
    this.statusFile = new StatusFile(
      cfg.runDir,
      (e) => log.warn('cannot write status file (said once until it changes or works again)', { runDir: cfg.runDir, err: e.message + readOnlyHint(e, 'runDir', cfg.runDir) }),
      () => log.info('status file written again', { runDir: cfg.runDir }),
    );
    this.led = this.newLed(cfg);
    // Through the fields, not the objects: a reload may replace them.
    this.reporter = new HealthReporter({
      publisher: { update: (doc, changed) => this.publisher.update(doc, changed) },
      led: { show: (state) => this.led?.show(state) },
      status: this.statusFile,
      log,
    });
    this.reporter.onDocument((doc, changed) => this.emit('health', doc, changed));
    this.metrics = this.newMetrics(cfg);
    this.reporter.onDocument((doc) => this.metrics?.update(doc));
  }

  private newMembership(cfg: Config, handover: MembershipHandover | null): Promise<LiveMembership> {
    return LiveMembership.create({
      cfg, siteMac: this.t.vtepMac, apply: (peers) => this.peerSync.apply(peers), changed: () => this.publishSoon(),
      certificatesSeen: () => this.checksRun.request(), clock: this.d.clock, log: this.d.log, ...(handover ? { handover } : {}),
    });
  }

  private newPublisher(cfg: Config): HealthPublisher {
    return new HealthPublisher({
      mqtt: cfg.mqtt, site: cfg.site, node: cfg.node, log: this.d.log.child({ part: 'mqtt' }), deps: { clock: this.d.clock },
      connected: () => this.checksRun.request(), // the broker's certificate, for the certificates check
    });
  }

  private newLed(cfg: Config): StatusLed | null {
    return cfg.board.led ? new StatusLed(cfg.board.led, { log: this.d.log.child({ part: 'led' }) }) : null;
  }

  private newMetrics(cfg: Config): MetricsServer | null {
    if (!cfg.metrics.listen) return null;
    const { binding, clock, log } = this.d;
    return new MetricsServer({
      listen: cfg.metrics.listen, webConfig: cfg.metrics.webConfig, log: log.child({ part: 'metrics' }),
      passwordCheck: (password, hash) => binding.passwordCheck(password, hash), now: () => clock.monotonic(),
    });
  }

  static async start(cfg: Config, deps: GatewayDeps): Promise<Gateway> {
    LiveMembership.preload(cfg);
    const endpoints = new LearnedEndpoints(cfg.stateDir, (e) =>
      deps.log.warn('cannot store learned endpoints', { stateDir: cfg.stateDir, err: e.message + readOnlyHint(e, 'stateDir', cfg.stateDir) }),
    );
    await endpoints.load();
    const tunnel = await openTunnel(cfg, deps.binding, deps.clock, deps.log);
    const gw = new Gateway(cfg, tunnel, deps, endpoints);
    try {
      gw.nat = await SiteNat.create({
        cfg, underlay: tunnel.underlay, dataplane: tunnel.dataplane, router: await defaultGateway(tunnel.underlay.iface),
        pcpNonce: await loadOrCreatePcpNonce(cfg.stateDir), clock: deps.clock, log: deps.log, changed: () => gw.publishSoon(),
        mapped: () => gw.control.routerForwardOpened(),
        // The peers in force, the cluster's too: a private underlay.publicIp is right only when
        // every one of them is private (a VPN), and a cluster's public node cannot reach it.
        peers: () => {
          const t = tunnel.dataplane.peers;
          return [...t.slots()].map((s) => t.configs[s]!.publicIp);
        },
      });
      gw.nat.start();
      // Forwarding starts now; probing once the router forward exists or was refused (SiteNat.settled).
      void gw.nat.settled(FIRST_MAPPING_WAIT_MS).then(() => gw.stopping || gw.control.start());
      gw.membership = await gw.newMembership(cfg, null);
      await gw.membership.start();
      gw.publisher.start();
      await gw.metrics?.start();
      gw.kernelEvents.start();
      await gw.checksRun.now();
      gw.publish();
      gw.timers.push(deps.clock.every(STATUS_PERIOD_MS, () => gw.tick()), deps.clock.every(CHECKS_PERIOD_MS, () => gw.checksRun.request()));
      deps.log.info('gateway up', { peers: tunnel.dataplane.peers.size });
      return gw;
    } catch (e) {
      await gw.stop();
      throw e;
    }
  }

  /** Applies a new config: live keys at once (peers without touching unchanged ones), the rest reported. */
  async reload(next: Config): Promise<ReloadResult> {
    const plan = reloadPlan(this.cfg, next);
    const live = new Set(plan.live);
    const cfg = withLive(this.cfg, next, plan.live);
    this.cfg = cfg;
    if (live.has('keepalive.interval') || live.has('keepalive.timeout')) {
      this.control.setParams({ intervalMs: cfg.keepalive.interval, timeoutMs: cfg.keepalive.timeout });
    }
    this.t.dataplane.settings.mssClamp = cfg.overlay.mssClamp;
    this.t.dataplane.settings.strictPeers = cfg.overlay.strictPeers;
    const diff = await this.membership!.setStatics(next.peers);
    this.replacing = this.replaceParts(plan.live).finally(() => (this.replacing = null));
    await this.replacing;
    this.lastReload = { at: new Date(this.d.clock.now()).toISOString(), applied: plan.live, restartNeeded: plan.restart };
    await this.checksRun.now();
    this.publish();
    const names = (l: { name: string }[]) => l.map((p) => p.name);
    return { ...plan, added: names(diff.added), removed: names(diff.removed), changed: diff.changed.map((c) => c.to.name) };
  }

  /**
   * The parts whose keys a reload changed, rebuilt from this.cfg one by one while the tunnel
   * carries on: STUN, the router's port mapping and the announced address
   * (SiteNat.reconfigure), the cluster source (the peers it gave stay in force until the new
   * one has a view, when it follows the same kind of source), MQTT (the old connection says
   * "offline" and ends, the new one connects and says "online"; mqtt.interval alone keeps
   * the connection), the metrics endpoint (closed, then served as configured now, or not at
   * all), the status LED (the old one switched off). Nothing new starts once the gateway is
   * stopping.
   */
  private async replaceParts(changed: readonly string[]): Promise<void> {
    const { cfg } = this;
    const keys = (prefix: string) => changed.filter((k) => k.startsWith(prefix));
    const [cluster, mqtt, metrics] = [keys('cluster.').length > 0, keys('mqtt.'), keys('metrics.').length > 0];
    // underlay.publicIp is the NAT's to weigh (it wins over what is discovered); publish() then tells the cluster.
    if (keys('nat.').length > 0 || changed.includes('underlay.publicIp')) await this.nat?.reconfigure(cfg, await defaultGateway(this.t.underlay.iface));
    if (cluster && this.membership) {
      const old = this.membership;
      await old.stop(); // the site's Node or lease stays, as at a stop: the new source finds it
      if (!this.stopping) {
        this.membership = await this.newMembership(cfg, old.handover(cfg));
        await this.membership.start();
      }
    }
    if (mqtt.length === 1 && mqtt[0] === 'mqtt.interval') {
      this.publisher.setInterval(cfg.mqtt.interval);
    } else if (mqtt.length > 0) {
      const old = this.publisher;
      this.publisher = this.newPublisher(cfg); // takes the documents from now on, connects once the old one is gone
      await old.stop();
      if (!this.stopping) this.publisher.start();
    }
    if (metrics) {
      const old = this.metrics;
      this.metrics = null;
      await old?.close();
      if (!this.stopping) {
        this.metrics = this.newMetrics(cfg);
        await this.metrics?.start();
      }
    }
    if (changed.includes('board.led')) {
      this.led?.off();
      this.led = this.newLed(cfg);
    }
    // Which certificate files the certificates check reads follows cluster.*, mqtt.* and metrics.webConfig.
    if (cluster || mqtt.length > 0 || metrics) this.certificates = new CertificateReader(certificateSources(cfg));
  }

  /**
   * A SIGHUP whose file could not be used: nothing changed, and the health document says so
   * (the log alone is easy to miss after `systemctl reload`, which reports success either way).
   */
  reloadRefused(error: string): void {
    this.lastReload = {
      at: new Date(this.d.clock.now()).toISOString(), applied: [], restartNeeded: this.lastReload?.restartNeeded ?? [], error,
    };
    this.publish();
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) t.cancel();
    this.kernelEvents.stop();
    await this.checksRun.stop(); // a refresh in progress would repair what stop takes down
    await this.replacing?.catch(() => undefined); // bounded: the old broker's "offline" (< 2 s)
    this.publishPending?.cancel();
    await this.membership?.stop().catch((e) => this.d.log.warn('cluster stop failed', { err: (e as Error).message }));
    this.control.stop();
    await this.nat?.stop().catch((e) => this.d.log.warn('could not delete the router port mapping', { err: (e as Error).message }));
    await this.publisher.stop().catch((e) => this.d.log.warn('mqtt stop failed', { err: (e as Error).message }));
    await this.metrics?.close();
    this.t.dataplane.stop();
    try {
      await this.t.device.teardown();
    } catch (e) {
      this.d.log.warn('could not remove every route', { err: (e as Error).message });
    }
    this.t.close();
    await this.statusFile.remove().catch(() => undefined);
    this.led?.off();
    this.d.log.info('gateway stopped');
  }

  health(): HealthDocument {
    const { cfg, t, d } = this;
    t.dataplane.collectLosses();
    const { rows, pathMtu } = peerRows(t.dataplane.peers, this.rowContext());
    return assembleHealth({
      site: cfg.site, node: cfg.node, version: d.version,
      ts: new Date(d.clock.now()).toISOString(),
      uptimeS: Math.round((d.clock.monotonic() - this.startedAt) / 1000),
      tunnel: {
        device: t.deviceName, mode: cfg.overlay.mode, vni: cfg.vxlan.vni, mtu: t.mtu, subnet: cfg.overlay.subnet.text,
        vtepMac: t.vtepMac, localEndpoint: this.localEndpoint(), publicEndpoint: this.publicEndpoint(), queues: t.queues,
      },
      peers: rows,
      checks: [
        ...(this.checks ?? []), ...(this.nat?.checks() ?? []), ...(this.membership?.check() ? [this.membership.check()!] : []),
        ...(this.metrics ? [this.metrics.check()] : []),
      ],
      pathMtu: { mtu: t.mtu, peers: pathMtu },
      pid: process.pid,
      intervalS: publishPeriodMs(cfg.mqtt.interval, STATUS_PERIOD_MS) / 1000,
      memory: memoryDoc(),
      drops: t.dataplane.drops.snapshot(),
      mqtt: this.publisher.status(),
      ...(this.nat?.health() ? { nat: this.nat.health()! } : {}),
      offload: this.offloadHealth(),
      ...(this.membership?.status(t.dataplane.peers.size) ? { cluster: this.membership.status(t.dataplane.peers.size)! } : {}),
      ...(this.lastReload ? { reload: this.lastReload } : {}),
    });
  }

  /**
   * Why the gateway is not live, or null: the systemd watchdog is pinged only while this is
   * null (health/sd-notify.ts). Live = both data plane polls still run and the periodic
   * status timer ran recently (monotonic clock: a Pi without RTC jumps at NTP sync).
   */
  liveness(): string | null {
    if (this.t.dataplane.pollError) return `data plane stopped: ${this.t.dataplane.pollError}`;
    const since = this.d.clock.monotonic() - this.lastTickAt;
    if (!this.stopping && since > 3 * STATUS_PERIOD_MS + 1000) {
      return `gateway timers stalled: status last refreshed ${Math.round(since)} ms ago`;
    }
    return null;
  }

  private localEndpoint(): string {
    return `${this.t.underlay.address}:${this.cfg.underlay.port}`;
  }

  private rowContext(): PeerRowContext {
    const { cfg } = this;
    const pub = this.publicEndpoint();
    const local = this.localEndpoint();
    return {
      health: (name) => this.control.keepalive.health(name),
      reachable: (peer, addr) => this.control.diagnosis.reachable(peer, addr),
      keepalivesEnabled: cfg.keepalive.interval > 0,
      timeoutMs: cfg.keepalive.timeout,
      siteSubnet: cfg.overlay.subnet.text,
      nat: pub && pub !== local ? { local, public: pub } : null,
      portMapped: this.nat?.portMapped() ?? false,
      localFault: localFault(this.checks ?? []),
      monoNow: this.d.clock.monotonic(),
      reasons: this.reasons,
    };
  }

  /** One peer's reason, without building the whole document (500 peers going down at once). */
  private peerReason(peer: string): string | null {
    const peers = this.t.dataplane.peers;
    const s = peers.indexOf(peer);
    return s < 0 ? null : peerRow(peers, s, this.rowContext()).reason;
  }

  /** underlay.publicIp when configured (it wins), else the router's mapping, else STUN's, else the local address. */
  publicEndpoint(): string | null {
    return this.nat?.publicEndpoint().endpoint ?? null;
  }

  private tick(): void {
    this.lastTickAt = this.d.clock.monotonic();
    const step = this.clockWatch.look();
    if (step) this.clockSet(step);
    this.control.tick();
    this.publish();
    // A data plane that stopped reading (its device deleted, a socket gone) never comes back
    // in this process: say so once, and let the caller stop it for a fresh start.
    const dead = this.t.dataplane.pollError;
    if (dead !== null) this.fatal(`data plane stopped: ${dead}`);
  }

  /**
   * The wall clock was set (network time, after a boot without a battery-backed clock): said,
   * since every timestamp after it jumps; connections that failed, perhaps on certificates the
   * wrong clock called not valid, try again now; the certificates check dates them anew.
   */
  private clockSet(step: ClockStep): void {
    const iso = (ms: number) => new Date(ms).toISOString();
    this.d.log.info(`the wall clock was set ${describeStep(step.byMs)}`, { from: iso(step.fromMs), to: iso(step.toMs) });
    this.publisher.clockStepped();
    this.membership?.clockStepped();
    this.checksRun.request();
  }

  /** What this process holds cannot recover: 'fatal', once; `vxedge run` stops it and exits 1 for a fresh start. */
  private fatal(why: string): void {
    if (this.fatalSaid) return;
    this.fatalSaid = true;
    this.emit('fatal', why);
  }

  /** A part's state changed: publish shortly, once for everything that changes meanwhile. */
  private publishSoon(): void {
    this.publishPending ??= this.d.clock.after(PUBLISH_COALESCE_MS, () => this.publish());
  }

  private publish(): void {
    this.publishPending?.cancel();
    this.publishPending = null;
    if (this.stopping || this.checks === null) return;
    // Whatever changed the public endpoint (STUN, port mapping), the cluster follows it.
    this.membership?.setPublicIp(announceableIp(this.nat?.publicEndpoint() ?? null));
    this.reporter.report(this.health());
  }

  private async refreshChecks(): Promise<void> {
    const { cfg, t } = this;
    await this.metrics?.start(); // again, when the address could not be had; metrics.webConfig read again
    const underlay = await checkUnderlayAddress(t.underlay, cfg.underlay.port);
    if (this.underlayAddrs !== null && underlay.addresses !== this.underlayAddrs) {
      this.d.log.warn('underlay addresses changed', { iface: t.underlay.iface, was: this.underlayAddrs, now: underlay.addresses });
      this.control.underlayChanged(this.underlayAddrs, underlay.addresses, { address: t.underlay.address, pinned: cfg.underlay.address !== null });
    }
    this.underlayAddrs = underlay.addresses;
    this.control.underlayChecked(this.underlayOk, underlay.result.ok);
    this.underlayOk = underlay.result.ok;
    // The router may have been replaced, or DHCP named another: the port mapping follows it.
    if (this.nat?.followsRouter) await this.nat.routerSeen(await defaultGateway(t.underlay.iface));
    // Repairs first, so that the checks show what is left; each reads what its check reads
    // and hands it on, so a refresh without a repair reads the link and the table once.
    const link = await this.deviceLinkSetUp();
    const routes = await this.routesRestored();
    const subnets = this.peerSync.current().map((p) => p.subnet);
    this.checks = [
      await checkIpForward(),
      checkMtu(t.mtu, t.underlay.mtu, t.underlay.iface),
      deviceCheck(cfg.overlay.device, link),
      routes ? routesCheck(t.deviceName, subnets, routes) : await checkRoutes(t.deviceName, subnets),
      underlay.result,
    ];
    // Where the kernel will not say whether network time keeps the clock (the unit's
    // ProtectClock=yes), chronyd is asked now for the TLS words until the next refresh.
    await askClockSync();
    const broker = this.publisher.brokerCertificate();
    const live = [...(broker ? [broker] : []), ...(this.membership?.serverCertificates() ?? [])];
    const certs = certificatesCheck([...(await this.certificates.read()), ...live], this.d.clock.now(), this.d.clock.synchronised?.());
    if (certs) this.checks.push(certs);
  }

  /**
   * Our device's link, set up again first when someone set it down: nothing crossed the
   * tunnel, and the kernel removed every route through it (put back next, by routesRestored).
   * The device is vxedge's own; stopping the traffic is `systemctl stop vxedge`.
   */
  private async deviceLinkSetUp(): Promise<LinkInfo | null> {
    const name = this.cfg.overlay.device;
    const l = await linkDetails(name);
    if (!l || (l.flags?.includes('UP') ?? true)) return l; // gone (the data plane's fatal), or up
    try {
      await this.t.device.setUp();
      this.d.log.warn('set the tunnel device up again: something set it down', { device: name });
      return await linkDetails(name);
    } catch (e) {
      this.d.log.warn('could not set the tunnel device up again', { device: name, err: (e as Error).message });
      return l;
    }
  }

  /**
   * Puts back peer routes someone deleted: systemd-networkd removes routes it did not make
   * when it reconfigures (ManageForeignRoutes=yes, its default), and the tunnel then carried
   * nothing to those peers until a restart. In TAP mode the same for the peers' permanent
   * neighbours (`ip neigh flush`), without which nothing answers the kernel's ARP for them.
   * A route of the same prefix via another device is left alone (the routes check reports
   * it). Resolves with the routing table it read when it changed nothing, else null (the
   * routes check then reads the table again).
   */
  private async routesRestored(): Promise<KernelRoute[] | null> {
    let table: KernelRoute[] = [];
    let what = 'peer routes';
    try {
      const put = await this.peerSync.restoreRoutes(async (peers) => {
        table = await routesIPv4();
        const lost = new Set(lostRoutesIn(peers.map((p) => p.subnet), table).map((c) => c.text));
        const unresolved = this.cfg.overlay.mode === 'tap' ? new Set(lostNeighboursIn(peers, await neighboursIPv4(this.t.deviceName))) : new Set();
        if (unresolved.size > 0) what = lost.size > 0 ? 'peer routes and neighbours' : 'peer neighbours';
        return peers.filter((p) => lost.has(p.subnet.text) || unresolved.has(p));
      });
      if (put.length === 0) return table;
      this.d.log.warn(`put back ${what} that were deleted (a network manager that removes foreign routes?)`, { count: put.length, peers: put.slice(0, 5).map((p) => p.name) });
    } catch (e) {
      // An unreadable routing table is the routes check's to report.
      this.d.log.warn('could not put back deleted peer routes', { err: (e as Error).message });
    }
    return null;
  }

  private offloadHealth(): OffloadHealthDoc {
    const s = this.t.dataplane.settings;
    const doc: OffloadHealthDoc = { tso: s.vnetHdr === true, udpGro: s.udpGro === true, reason: this.t.dataplane.offloadOff };
    if (s.vnetHdr) doc.counters = { ...this.d.binding.offloadStats() };
    return doc;
  }
}
