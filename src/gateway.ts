// The composition root: builds the parts in order, wires them, and takes them down
// in reverse. Nothing else knows how the parts fit together.
//
//   config -> underlay (NIC, address, MTU) -> VTEP MAC (stateDir)
//          -> device (TUN/TAP, address, routes) + underlay socket
//          -> data plane (inside/outside paths) -> keepalive probes, STUN -> health
import { EventEmitter } from 'node:events';
import type { Config, PeerConfig } from './config/types.js';
import * as native from './native/index.js';
import { OverlayDevice, removeLeftoverDevice, vtepAddress } from './control/device.js';
import { Keepalive } from './control/keepalive.js';
import { Roaming } from './control/roaming.js';
import { UnderlayDiagnosis } from './control/diagnosis.js';
import { peerReason } from './control/reasons.js';
import { loadOrCreateVtepMac } from './control/state.js';
import { StunClient, natHealth, type AdviceContext, type StunResult } from './control/stun-client.js';
import { ifaceIPv4 } from './control/iproute.js';
import { resolveUnderlay, type Underlay } from './control/underlay.js';
import { Dataplane } from './dataplane/dataplane.js';
import { NativeDevice, NativeUnderlay, NativeVnetDevice, enableUdpGro, openDevice } from './dataplane/native-io.js';
import { PeerTable, STAT_RX_BYTES, STAT_RX_PACKETS, STAT_TX_BYTES, STAT_TX_PACKETS } from './dataplane/peers.js';
import type { PathSettings } from './dataplane/settings.js';
import { checkDevice, checkIpForward, checkMtu, checkPathMtu, checkPublicEndpoint, checkRoutes } from './health/checks.js';
import { overallState, type CheckResult, type HealthDocument, type OffloadHealthDoc, type PeerHealthDoc } from './health/document.js';
import { removeStatus, writeStatus } from './health/status-file.js';
import { HealthPublisher } from './health/mqtt.js';
import { StatusLed } from './health/led.js';
import { intToIp, ipToInt } from './util/ipv4.js';
import { macToBytes } from './util/mac.js';
import type { Logger } from './util/log.js';

const SOCKET_BUFFER_BYTES = 4 << 20;
const BATCH = 64;
const STATUS_FILE_PERIOD_MS = 2000;
const CHECKS_PERIOD_MS = 30_000;

export class GatewayError extends Error {
  override name = 'GatewayError';
}

export class Gateway extends EventEmitter {
  private readonly startedAt = Date.now();
  private checks: CheckResult[] = [];
  private timers: NodeJS.Timeout[] = [];
  private lastState: string | null = null;
  private lastStates = '';
  private stopping = false;
  private readonly publisher: HealthPublisher;
  private readonly roaming: Roaming;
  private readonly diagnosis = new UnderlayDiagnosis();
  private stun: StunClient | null = null;
  private underlayAddrs: string | null = null;
  private lastStunKey = '';
  private readonly led: StatusLed | null;
  /** performance.now() of the last periodic status run, for liveness(). */
  private lastTickAt = performance.now();

  private constructor(
    private cfg: Config,
    private readonly log: Logger,
    readonly version: string,
    readonly underlay: Underlay,
    readonly vtepMac: string,
    readonly mtu: number,
    private readonly tun: native.TunHandle,
    private readonly udpFd: number,
    private readonly device: OverlayDevice,
    readonly dataplane: Dataplane,
    readonly keepalive: Keepalive,
  ) {
    super();
    this.publisher = new HealthPublisher({ mqtt: cfg.mqtt, site: cfg.site, node: cfg.node, log: log.child({ part: 'mqtt' }) });
    this.roaming = new Roaming(dataplane, log);
    this.roaming.onMoved = () => void this.publishStatus();
    this.led = cfg.board.led ? new StatusLed(cfg.board.led, { log: log.child({ part: 'led' }) }) : null;
  }

  static async start(cfg: Config, log: Logger, version: string): Promise<Gateway> {
    const underlay = await resolveUnderlay(cfg);
    const { mac, source } = await loadOrCreateVtepMac(cfg.stateDir, cfg.vxlan.vtepMac);
    const mtu = cfg.vxlan.mtu ?? underlay.mtu - 50;
    if (mtu + 50 > underlay.mtu) {
      log.warn('device MTU + 50 exceeds the underlay MTU: large packets will be fragmented or lost', { mtu, underlayMtu: underlay.mtu });
    }
    const name = cfg.overlay.device;

    const undo: (() => void)[] = [];
    try {
      // The port first: a second vxedge (or a kernel vxlan) on it must fail here, before
      // anything of the running one is touched.
      const udpFd = openOrExplain(
        () => native.udpOpen(ipToInt(underlay.address), cfg.underlay.port, SOCKET_BUFFER_BYTES),
        `bind UDP ${underlay.address}:${cfg.underlay.port}`,
      );
      undo.push(() => native.close(udpFd));
      await removeLeftoverDevice(name, log);
      const opened = openOrExplain(
        () => openDevice(name, cfg.overlay.mode, cfg.overlay.offload),
        `open ${cfg.overlay.mode.toUpperCase()} device ${name}`,
      );
      const tun = opened.tun;
      undo.push(() => native.close(tun.fd));
      if (opened.offloadOff && cfg.overlay.mode === 'tun') {
        log.warn('TUN offloads off: the plain data plane moves one packet per syscall', { reason: opened.offloadOff });
      }
      let udpGro = false;
      if (opened.vnetHdr) {
        const groOff = enableUdpGro(udpFd);
        udpGro = groOff === null;
        if (groOff) log.warn('UDP GRO off: datagrams are received one by one', { reason: groOff });
      }

      const device = new OverlayDevice({ name: tun.name, mode: cfg.overlay.mode, mtu, vtepMac: mac, subnet: cfg.overlay.subnet }, log);
      await device.configure();
      for (const p of cfg.peers) await device.addPeer(p);

      const settings: PathSettings = {
        tap: cfg.overlay.mode === 'tap',
        vni: cfg.vxlan.vni,
        mtu,
        vtepMac: macToBytes(mac),
        vtepIp: cfg.overlay.subnet.network,
        mssClamp: cfg.overlay.mssClamp,
        maxMss: mtu - 40,
        strictPeers: cfg.overlay.strictPeers,
        batch: BATCH,
        vnetHdr: opened.vnetHdr,
        udpGro,
      };
      const dev = opened.vnetHdr ? new NativeVnetDevice(tun.fd) : new NativeDevice(tun.fd);
      const dp = new Dataplane(settings, dev, new NativeUnderlay(udpFd), new PeerTable(cfg.peers), log);
      dp.offloadOff = !cfg.overlay.offload ? 'overlay.offload is false' : opened.offloadOff ?? (udpGro ? null : 'the kernel refused UDP_GRO');
      dp.start(tun.fd, udpFd);
      const ka = new Keepalive(dp, { intervalMs: cfg.keepalive.interval, timeoutMs: cfg.keepalive.timeout });
      const gw = new Gateway(cfg, log, version, underlay, mac, mtu, tun, udpFd, device, dp, ka);
      ka.onStateChange = (peer, from, to) => gw.onPeerState(peer, from, to);
      ka.start();
      gw.roaming.start();
      if (cfg.nat.stun.length > 0) gw.startStun();
      await gw.startHealth();
      log.info('gateway up', {
        device: tun.name, mode: cfg.overlay.mode, mtu, vtepMac: mac, vtepMacSource: source,
        vtep: vtepAddress(cfg.overlay.subnet), underlay: `${underlay.iface} ${underlay.address}:${cfg.underlay.port}`,
        peers: cfg.peers.length,
        offload: opened.vnetHdr ? (udpGro ? 'tso+csum, udp gso+gro' : 'tso+csum, udp gso') : 'off',
      });
      return gw;
    } catch (e) {
      for (const u of undo.reverse()) u();
      throw e;
    }
  }

  /** Applies a new config's peer list without touching unchanged peers. */
  async reload(next: Config): Promise<{ added: string[]; removed: string[]; changed: string[]; restartNeeded: string[] }> {
    const old = new Map(this.cfg.peers.map((p) => [p.name, p]));
    const nu = new Map(next.peers.map((p) => [p.name, p]));
    const added = next.peers.filter((p) => !old.has(p.name)).map((p) => p.name);
    const removed = this.cfg.peers.filter((p) => !nu.has(p.name)).map((p) => p.name);
    const changed = next.peers.filter((p) => old.has(p.name) && !samePeer(old.get(p.name)!, p)).map((p) => p.name);
    const restartNeeded = restartKeys(this.cfg, next);

    for (const name of [...removed, ...changed]) await this.device.removePeer(old.get(name)!);
    // Switch the data plane before adding routes, so packets the kernel routes to a new
    // peer find it in the table.
    this.dataplane.setPeers(new PeerTable(next.peers));
    for (const name of [...added, ...changed]) await this.device.addPeer(nu.get(name)!);
    this.cfg = { ...this.cfg, peers: next.peers, keepalive: this.cfg.keepalive, log: next.log };
    this.keepalive.syncPeers();
    await this.refreshChecks();
    await this.publishStatus();
    return { added, removed, changed, restartNeeded };
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.keepalive.stop();
    this.roaming.stop();
    this.stun?.stop();
    await this.publisher.stop().catch((e) => this.log.warn('mqtt stop failed', { err: (e as Error).message }));
    this.dataplane.stop();
    try {
      await this.device.teardown();
    } catch (e) {
      this.log.warn('could not remove every route', { err: (e as Error).message });
    }
    // Closing the last fd of a non-persistent TUN/TAP removes the device itself.
    native.close(this.tun.fd);
    native.close(this.udpFd);
    await removeStatus(this.cfg.runDir).catch(() => undefined);
    this.led?.off();
    this.log.info('gateway stopped');
  }

  health(): HealthDocument {
    const cfg = this.cfg;
    const t = this.dataplane.peers;
    const pmtu: { name: string; state: string; pathMtuOk: boolean | null }[] = [];
    const peers: PeerHealthDoc[] = cfg.peers.map((p) => {
      const i = t.indexOf(p.name);
      const h = this.keepalive.health(p.name);
      pmtu.push({ name: p.name, state: h.state, pathMtuOk: h.pathMtuOk });
      return {
        name: p.name,
        endpoint: `${i >= 0 ? intToIp(t.addr[i]) : p.publicIp}:${p.port}`,
        subnet: p.subnet.text,
        state: h.state,
        rttMs: h.rttMs,
        lossPct: h.lossPct,
        lastSeen: h.lastSeen ? new Date(h.lastSeen).toISOString() : null,
        rxPackets: i >= 0 ? t.stat(i, STAT_RX_PACKETS) : 0,
        txPackets: i >= 0 ? t.stat(i, STAT_TX_PACKETS) : 0,
        rxBytes: i >= 0 ? t.stat(i, STAT_RX_BYTES) : 0,
        txBytes: i >= 0 ? t.stat(i, STAT_TX_BYTES) : 0,
        reason: this.reasonFor(p, h),
      };
    });
    const checks = [...this.checks, checkPathMtu(this.mtu, pmtu)];
    return {
      site: cfg.site,
      node: cfg.node,
      version: this.version,
      ts: new Date().toISOString(),
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      state: overallState(peers, checks),
      tunnel: {
        device: this.tun.name,
        mode: cfg.overlay.mode,
        vni: cfg.vxlan.vni,
        mtu: this.mtu,
        subnet: cfg.overlay.subnet.text,
        vtepMac: this.vtepMac,
        localEndpoint: `${this.underlay.address}:${cfg.underlay.port}`,
        publicEndpoint: this.publicEndpoint(),
      },
      peers,
      checks,
      pid: process.pid,
      drops: this.dataplane.drops.snapshot(),
      mqtt: this.publisher.status(),
      ...(this.stun ? { nat: natHealth(this.stun, this.adviceContext()) } : {}),
      offload: this.offloadHealth(),
    };
  }

  /**
   * Why the gateway is not live, or null: the systemd watchdog is pinged only while this
   * is null (src/health/sd-notify.ts). Live = both data plane polls still run and the
   * periodic status timer ran recently (monotonic clock: a Pi without RTC jumps at NTP sync).
   */
  liveness(): string | null {
    if (this.dataplane.pollError) return `data plane stopped: ${this.dataplane.pollError}`;
    const since = performance.now() - this.lastTickAt;
    if (!this.stopping && since > 3 * STATUS_FILE_PERIOD_MS + 1000) {
      return `gateway timers stalled: status last refreshed ${Math.round(since)} ms ago`;
    }
    return null;
  }

  private offloadHealth(): OffloadHealthDoc {
    const s = this.dataplane.settings;
    const doc: OffloadHealthDoc = { tso: s.vnetHdr === true, udpGro: s.udpGro === true, reason: this.dataplane.offloadOff };
    if (s.vnetHdr) doc.counters = { ...native.offloadStats() };
    return doc;
  }

  /** underlay.publicIp when configured (it wins), else what STUN last found. */
  publicEndpoint(): string | null {
    if (this.cfg.underlay.publicIp) return `${this.cfg.underlay.publicIp}:${this.cfg.underlay.port}`;
    return this.stun?.lastGood?.publicEndpoint ?? null;
  }

  /** STUN from the tunnel socket: answers come back through the outside path's onStun hook. */
  private startStun(): void {
    const stun = new StunClient({
      servers: this.cfg.nat.stun,
      localPort: this.cfg.underlay.port,
      send: (buf, off, len, addr, port) => this.dataplane.sendControl(buf, off, len, addr, port),
      software: 'vxedge',
      log: this.log.child({ part: 'stun' }),
    });
    this.dataplane.outside.hooks.onStun = (buf, off, len, addr, port) => stun.handle(buf, off, len, addr, port);
    stun.onResult((r) => this.onStunResult(r));
    this.stun = stun;
    stun.start();
  }

  private onStunResult(r: StunResult): void {
    const fields = { reason: r.reason, publicEndpoint: r.publicEndpoint, portPreserved: r.portPreserved, mappingVaries: r.mappingVaries };
    // Log what changed; an unchanged periodic result only at debug level.
    const key = JSON.stringify([r.publicEndpoint, r.portPreserved, r.mappingVaries]);
    if (!r.publicEndpoint) this.log.warn('no STUN server answered', { ...fields, servers: r.servers });
    else if (key !== this.lastStunKey) this.log.info('stun result', fields);
    else this.log.debug('stun result', fields);
    this.lastStunKey = key;
    this.checks = this.checks.map((c) => (c.name === 'public_endpoint' ? checkPublicEndpoint(this.publicEndpoint()) : c));
    void this.publishStatus();
  }

  private adviceContext(): AdviceContext {
    const cfg = this.cfg;
    return { localAddress: this.underlay.address, localPort: cfg.underlay.port, vxlanPort: cfg.vxlan.port, publicIp: cfg.underlay.publicIp };
  }

  /** Is our address still on the NIC? A change (DHCP, renumbering) may change the public mapping too. */
  private async checkUnderlayAddress(): Promise<CheckResult> {
    const { iface, address } = this.underlay;
    const detail = `${iface} ${address}:${this.cfg.underlay.port}`;
    let addrs: string[];
    try {
      addrs = await ifaceIPv4(iface);
    } catch {
      addrs = [];
    }
    const now = addrs.join(' ');
    if (this.underlayAddrs !== null && now !== this.underlayAddrs) {
      this.log.warn('underlay addresses changed', { iface, was: this.underlayAddrs, now });
      this.stun?.trigger('underlay address changed');
    }
    this.underlayAddrs = now;
    return addrs.includes(address)
      ? { name: 'underlay', ok: true, detail }
      : {
          name: 'underlay', ok: false, detail: `${address} is no longer on ${iface} (now: ${now || 'none'})`,
          fix: 'restart vxedge: its socket is bound to the old address',
        };
  }

  private async startHealth(): Promise<void> {
    this.publisher.start();
    await this.refreshChecks();
    await this.publishStatus();
    this.timers.push(
      setInterval(() => {
        this.lastTickAt = performance.now();
        void this.publishStatus();
      }, STATUS_FILE_PERIOD_MS),
    );
    this.timers.push(setInterval(() => void this.refreshChecks(), CHECKS_PERIOD_MS));
  }

  private async refreshChecks(): Promise<void> {
    const cfg = this.cfg;
    this.checks = [
      await checkIpForward(),
      checkMtu(this.mtu, this.underlay.mtu, this.underlay.iface),
      await checkDevice(cfg),
      await checkRoutes(cfg),
      await this.checkUnderlayAddress(),
      checkPublicEndpoint(this.publicEndpoint()),
    ];
  }

  private async publishStatus(): Promise<void> {
    if (this.stopping) return;
    const doc = this.health();
    if (doc.state !== this.lastState) {
      this.log.info('gateway state', { state: doc.state, was: this.lastState });
      this.lastState = doc.state;
    }
    // "Changed" = the gateway's state or any peer's state: those are published at once.
    const states = `${doc.state} ${doc.peers.map((p) => `${p.name}=${p.state}`).join(',')}`;
    const changed = states !== this.lastStates;
    this.lastStates = states;
    this.publisher.update(doc, changed);
    this.led?.show(doc.state);
    this.emit('health', doc, changed);
    try {
      await writeStatus(this.cfg.runDir, doc);
    } catch (e) {
      this.log.warn('cannot write status file', { runDir: this.cfg.runDir, err: (e as Error).message });
    }
  }

  private onPeerState(peer: string, from: string, to: string): void {
    const log = to === 'down' ? this.log.warn.bind(this.log) : this.log.info.bind(this.log);
    const p = this.cfg.peers.find((x) => x.name === peer);
    if (to === 'down' && p) this.diagnosis.check(peer, p.publicIp, () => void this.publishStatus());
    if (to === 'up') this.diagnosis.forget(peer);
    log('peer state', { peer, from, to, ...(to === 'down' && p ? { reason: this.reasonFor(p, this.keepalive.health(peer)) } : {}) });
    // Every peer gone at once points at our side: the NAT may have changed our mapping.
    if (to === 'down' && this.cfg.peers.every((x) => this.keepalive.health(x.name).state !== 'up')) this.stun?.trigger('peers down');
    void this.publishStatus();
  }

  private reasonFor(p: PeerConfig, h: ReturnType<Keepalive['health']>): string | null {
    const cfg = this.cfg;
    // After roaming, the peer lives at another address than the config's.
    const i = this.dataplane.peers.indexOf(p.name);
    const peerIp = i >= 0 ? intToIp(this.dataplane.peers.addr[i]) : p.publicIp;
    if (h.state === 'down') this.diagnosis.check(p.name, peerIp, () => void this.publishStatus());
    const local = `${this.underlay.address}:${cfg.underlay.port}`;
    const pub = this.publicEndpoint();
    return peerReason({
      state: h.state,
      keepalivesEnabled: cfg.keepalive.interval > 0,
      timeoutS: Math.round(cfg.keepalive.timeout / 1000),
      answeredBefore: h.lastReplyAt > 0,
      heardRecently: h.heardAt > 0 && Date.now() - h.heardAt < cfg.keepalive.timeout,
      hostReachable: this.diagnosis.reachable(p.name),
      peerIp,
      port: p.port,
      siteSubnet: cfg.overlay.subnet.text,
      nat: pub && pub !== local ? { local, public: pub } : null,
    });
  }
}

function openOrExplain<T>(fn: () => T, what: string): T {
  try {
    return fn();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const hint =
      code === 'EPERM' || code === 'EACCES'
        ? 'vxedge needs CAP_NET_ADMIN (run as root, or with AmbientCapabilities=CAP_NET_ADMIN under systemd)'
        : code === 'EADDRINUSE'
          ? 'another process holds the port: a kernel vxlan device (flannel.1) or another vxedge? see `ss -ulpn` and `ip -d link show type vxlan`'
          : code === 'ENOENT'
            ? '/dev/net/tun is missing: modprobe tun'
            : code === 'EADDRNOTAVAIL'
              ? 'the address is not on this machine: check underlay.address'
              : 'see the error code';
    throw new GatewayError(`cannot ${what}: ${(e as Error).message}; ${hint}`);
  }
}

function samePeer(a: PeerConfig, b: PeerConfig): boolean {
  return a.publicIp === b.publicIp && a.port === b.port && a.subnet.text === b.subnet.text && a.vtepMac === b.vtepMac;
}

/** Keys whose change a reload cannot apply live. */
function restartKeys(a: Config, b: Config): string[] {
  const pick = (c: Config) => ({
    underlay: c.underlay, vxlan: c.vxlan, device: c.overlay.device, mode: c.overlay.mode, offload: c.overlay.offload,
    subnet: c.overlay.subnet.text, network: c.overlay.network.text, site: c.site, node: c.node, mqtt: c.mqtt, nat: c.nat,
    board: c.board,
  });
  const pa = pick(a) as Record<string, unknown>;
  const pb = pick(b) as Record<string, unknown>;
  return Object.keys(pa).filter((k) => JSON.stringify(pa[k]) !== JSON.stringify(pb[k]));
}

