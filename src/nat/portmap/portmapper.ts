// The port mapper: asks the site router to forward UDP `port` (8472) from the internet to
// this gateway, keeps the forward alive, and tells the gateway the router's public address.
//
// AWS nodes always send to <site public IP>:8472, so only a mapping whose external port is
// 8472 itself is of any use. Anything else the router offers is deleted at once and reported
// with the two remedies that do not need the router's cooperation (a manual forward, or the
// AWS nodes' flannel.1 pinned to `srcport 8472 8473`).
//
// Life of a mapping (every step is one operation; operations never overlap):
//
//   start ──► attempt: each protocol in turn (auto: PCP, NAT-PMP, UPnP IGD; else the one
//   ▲         configured) until one maps `port` → `port`
//   │           ├─ none did ──► failed: retry in 15 s, doubling to 10 min (or when the
//   │           │               router's PCP error lifetime says)
//   │           └─ mapped ────► mapped: renew at half the lifetime (of what we asked or
//   │                           were given, whichever is shorter; PCP: at a random
//   │                           point of 1/2..5/8 of it); check every
//   │                           `checkIntervalS` (PCP ANNOUNCE, NAT-PMP address request,
//   │                           UPnP GetSpecificPortMappingEntry), and at once on
//   │                           recheck() (the gateway lost every peer): a router restart
//   │                           shows as an implausible epoch or a missing entry → attempt now
//   │                           renewal fails ─► try again in min(30 s, half the time left);
//   └────────────────────────── once expired, the mapping is lost: attempt from scratch
//   stop ─► abort what runs, delete the mapping (lifetime 0 / DeletePortMapping). A crash
//           leaves it to expire on the router.
//
// The router's external address is learnt from every answer that carries it and handed to
// onExternalAddress() listeners on first sight and on every change, so that the gateway can
// announce it as the public endpoint. A private or CGNAT address (the router is itself behind
// another NAT) is never announced: status().error says what it means instead.
//
// mode 'off' sends nothing at all, probe() included.
import { randomBytes } from 'node:crypto';
import type { Clock, Timer } from '../../util/clock.js';
import { ipToInt, isGloballyRoutable, isIPv4 } from '../../util/ipv4.js';
import type { Logger } from '../../util/log.js';
import {
  AUTO_ORDER,
  PROTOCOL_LABEL,
  type ClientContext,
  type FailureKind,
  type Grant,
  type MappingClient,
  type PortMappingMode,
  type ProtocolName,
} from './client.js';
import { NatPmpClient } from './natpmp.js';
import { PCP_NONCE_LEN, PcpClient } from './pcp.js';
import { nodeHttp, nodeUdp, type HttpFn, type UdpFactory } from './transport.js';
import { NOT_OURS, UpnpClient } from './upnp.js';

export type { PortMappingMode, ProtocolName } from './client.js';

export interface PortMapperDeps {
  udp?: UdpFactory;
  http?: HttpFn;
  /** In [0, 1): PCP retransmission jitter. */
  random?: () => number;
  /** 12 random bytes: PCP nonces. */
  nonce?: () => Buffer;
}

export interface PortMapperOptions {
  mode: PortMappingMode;
  /** The router: the default gateway of the underlay interface. */
  gateway: string;
  /** Our address on the router's LAN (the underlay address). */
  localAddress: string;
  /** Internal port = the only useful external port (underlay.port, normally 8472). */
  port: number;
  /** Lifetime to ask for (default 7200 s, RFC 6886's recommendation). */
  lifetimeS?: number;
  /** How often a live mapping is checked for a router restart (default 60 s). */
  checkIntervalS?: number;
  /**
   * The PCP nonce of the previous run (12 bytes), kept in the state directory: a router that
   * checks nonces then lets a restarted vxedge renew its mapping instead of refusing it.
   */
  pcpNonce?: Uint8Array;
  clock: Clock;
  log: Logger;
  deps?: PortMapperDeps;
}

export type PortMapperState = 'off' | 'idle' | 'mapping' | 'mapped' | 'failed' | 'stopped';

export interface TriedProtocol {
  protocol: ProtocolName;
  outcome: 'mapped' | 'wrong-port' | FailureKind;
  result: string;
}

/** The health document's `nat.portMapping` (docs/contract.md "Health document"), plus extensions. */
export interface PortMapperStatus {
  protocol: ProtocolName | null;
  /** "ip:port" of the live mapping. */
  external: string | null;
  /** Seconds granted by the router; null when permanent (UPnP) or unmapped. */
  lifetime: number | null;
  expires: string | null;
  error: string | null;
  mode: PortMappingMode;
  state: PortMapperState;
  /** The router asked: the underlay's default gateway (null: none, nothing asked). */
  gateway: string | null;
  /** The router's external address as it last reported it (even without a mapping). */
  routerAddress: string | null;
  /** The last attempt, protocol by protocol. */
  tried: TriedProtocol[];
  /** Last time the router granted or renewed the mapping. */
  renewedAt: string | null;
  /** When the next attempt runs, while failed. */
  retryAt: string | null;
  /** Router restarts (or lost mappings) noticed since start. */
  routerRestarts: number;
  /** Answers ignored as malformed, stale or not ours, per protocol. */
  badAnswers: Record<ProtocolName, number>;
}

export interface ProbeResult {
  protocol: ProtocolName;
  ok: boolean;
  detail: string;
}

export const PORTMAP_DEFAULTS = {
  lifetimeS: 7200,
  checkIntervalS: 60,
  retryMinMs: 15_000,
  retryMaxMs: 600_000,
  /** Renewal failed with time left: try again after at most this long. */
  renewRetryMaxMs: 30_000,
  /** probe() gives up on whatever has not answered by then. */
  probeDeadlineMs: 5_000,
  /** recheck() looks at the router at most this often. */
  recheckSpacingMs: 5_000,
} as const;

interface Active {
  client: MappingClient;
  /** As granted; its externalIp follows the router's address (see check()). */
  grant: Grant;
  /** Monotonic ms when the router drops it; null for a permanent lease. */
  expiresAt: number | null;
  /** Wall-clock ISO form of expiresAt. */
  expires: string | null;
}

export class PortMapper {
  private readonly o: Required<Omit<PortMapperOptions, 'deps' | 'pcpNonce'>>;
  private readonly log: Logger;
  private readonly ctx: ClientContext;
  private readonly clients = new Map<ProtocolName, MappingClient>();
  private readonly addressListeners: ((ip: string) => void)[] = [];
  private readonly changeListeners: ((s: PortMapperStatus) => void)[] = [];

  private state: PortMapperState = 'idle';
  private active: Active | null = null;
  private error: string | null = null;
  private addressProblem: string | null = null;
  private routerAddress: string | null = null;
  private announced: string | null = null;
  private tried: TriedProtocol[] = [];
  private renewedAt: string | null = null;
  private retryAt: string | null = null;
  private routerRestarts = 0;
  private retryMs: number = PORTMAP_DEFAULTS.retryMinMs;
  private lastRecheckAt = -Infinity;

  private timer: Timer | null = null;
  private checkTimer: Timer | null = null;
  private ops: Promise<void> = Promise.resolve();
  private pendingOps = 0;
  private readonly abort = new AbortController();
  private started = false;
  private stopped = false;
  private lastChange = '';

  constructor(opts: PortMapperOptions) {
    if (opts.mode !== 'off') {
      for (const [k, v] of [['gateway', opts.gateway], ['localAddress', opts.localAddress]] as const) {
        if (!isIPv4(v)) throw new Error(`port mapping needs the router's and our IPv4 addresses; ${k} is ${JSON.stringify(v)}`);
      }
    }
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new Error(`port mapping: port ${opts.port} is not a UDP port`);
    if (opts.pcpNonce !== undefined && opts.pcpNonce.length !== PCP_NONCE_LEN) throw new Error(`a PCP nonce is ${PCP_NONCE_LEN} bytes`);
    this.o = {
      mode: opts.mode,
      gateway: opts.gateway,
      localAddress: opts.localAddress,
      port: opts.port,
      lifetimeS: opts.lifetimeS ?? PORTMAP_DEFAULTS.lifetimeS,
      checkIntervalS: opts.checkIntervalS ?? PORTMAP_DEFAULTS.checkIntervalS,
      clock: opts.clock,
      log: opts.log,
    };
    this.log = opts.log.child({ part: 'portmap' });
    const pcpNonce = opts.pcpNonce;
    this.ctx = {
      gateway: opts.gateway,
      localAddress: opts.localAddress,
      port: opts.port,
      clock: opts.clock,
      log: this.log,
      udp: opts.deps?.udp ?? nodeUdp,
      http: opts.deps?.http ?? nodeHttp,
      random: opts.deps?.random ?? Math.random,
      nonce: pcpNonce ? () => Buffer.from(pcpNonce) : (opts.deps?.nonce ?? (() => randomBytes(PCP_NONCE_LEN))),
    };
    if (opts.mode === 'off') this.state = 'off';
  }

  /** Starts mapping (nothing at all in mode 'off'). */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    if (this.o.mode === 'off') return this.changed();
    this.state = 'mapping';
    this.changed();
    this.enqueue(() => this.attempt());
  }

  /** Stops renewing and deletes the mapping on the router (bounded: a few seconds at most). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    this.checkTimer?.cancel();
    this.abort.abort();
    await this.ops;
    const a = this.active;
    this.active = null;
    if (a) {
      const r = await a.client.unmap(this.o.port, new AbortController().signal);
      if (r.ok) this.log.info('port mapping deleted', { protocol: a.client.protocol });
      else if (r.failure.code === NOT_OURS) this.log.warn('port mapping not deleted: it is not ours any more', { protocol: a.client.protocol, why: r.failure.message });
      else this.log.warn('could not delete the port mapping; the router drops it when it expires', { protocol: a.client.protocol, why: r.failure.message, expires: a.expires });
    }
    this.state = this.o.mode === 'off' ? 'off' : 'stopped';
    this.error = null;
    this.changed();
  }

  /**
   * Something outside says the mapping may be gone: every peer stopped answering at once,
   * which is what a router that restarted and forgot our forward looks like from here.
   * A live mapping is checked now instead of at the next periodic check (up to
   * checkIntervalS away), and made again at once if the router lost it. Nothing happens
   * while an operation is already talking to the router, nor more often than every
   * recheckSpacingMs, so a flapping peer set cannot turn this into a stream of requests.
   */
  recheck(why: string): void {
    if (this.state !== 'mapped' || !this.spacedLook()) return;
    const protocol = this.active?.client.protocol;
    // PCP and NAT-PMP have no request that reads a forward back: their check compares the
    // router's epoch, which a firewall reload leaves as it was (OpenWrt's `fw4 reload` flushes
    // miniupnpd's rules while the daemon runs on). A renewal puts a forward that is gone back
    // (miniupnpd looks its rules up in the kernel, not in memory) and is what the router sees
    // every half lifetime anyway. UPnP reads its entry back, so a check finds it gone.
    const renew = protocol === 'pcp' || protocol === 'natpmp';
    this.log.info(renew ? 'renewing the port mapping now' : 'checking the port mapping now', { why, protocol });
    this.enqueue(() => (renew ? this.renew() : this.check()));
  }

  /**
   * The uplink came back (its carrier or address, after the underlay check failed): most
   * often the router itself restarted, and took its LAN port down while it did. A mapping
   * that failed meanwhile is tried again now, with the backoff started afresh, instead of
   * at its next retry (up to 10 min away); a live one is looked at, as recheck() does.
   * Spaced like recheck().
   */
  networkChanged(why: string): void {
    if (this.state === 'mapped') return this.recheck(why);
    if (this.state !== 'failed' || !this.spacedLook()) return;
    this.retryMs = PORTMAP_DEFAULTS.retryMinMs;
    this.log.info('trying the port mapping again now', { why });
    this.schedule(0, () => this.attempt());
  }

  /**
   * Whether an outside request (recheck, networkChanged) may talk to the router now: started,
   * not stopped, no operation talking to it already, and the last such look at least
   * recheckSpacingMs ago. Counts this one when it may.
   */
  private spacedLook(): boolean {
    if (!this.started || this.stopped || this.pendingOps > 0) return false;
    const now = this.o.clock.monotonic();
    if (now - this.lastRecheckAt < PORTMAP_DEFAULTS.recheckSpacingMs) return false;
    this.lastRecheckAt = now;
    return true;
  }

  /**
   * The router's external address while a mapping is in place and that address is public:
   * what the site may announce as its endpoint (with `port`). Null otherwise: no mapping, a
   * grant without an address, or a private/CGNAT one (status().error says why).
   */
  mappedAddress(): string | null {
    const ip = this.state === 'mapped' ? (this.active?.grant.externalIp ?? null) : null;
    return ip !== null && isPublicIPv4(ip) ? ip : null;
  }

  /** Called with the router's public address on first learning it and on every change. */
  onExternalAddress(cb: (ip: string) => void): void {
    this.addressListeners.push(cb);
  }

  /** Called whenever status() changes in substance (not for counters). */
  onChange(cb: (s: PortMapperStatus) => void): void {
    this.changeListeners.push(cb);
  }

  status(): PortMapperStatus {
    const a = this.active;
    const bad = { pcp: 0, natpmp: 0, upnp: 0 };
    for (const [p, c] of this.clients) bad[p] = c.badAnswers;
    return {
      protocol: a?.client.protocol ?? null,
      external: a && a.grant.externalIp ? `${a.grant.externalIp}:${a.grant.externalPort}` : null,
      lifetime: a?.grant.lifetimeS ?? null,
      expires: a?.expires ?? null,
      error: this.error ?? this.addressProblem,
      mode: this.o.mode,
      state: this.state,
      gateway: this.o.mode === 'off' ? null : this.o.gateway,
      routerAddress: this.routerAddress,
      tried: this.tried.map((t) => ({ ...t })),
      renewedAt: this.renewedAt,
      retryAt: this.retryAt,
      routerRestarts: this.routerRestarts,
      badAnswers: bad,
    };
  }

  /**
   * Which protocols the router answers (for `vxedge check`), all three at once, each
   * without side effects on the router, within a few seconds. Mode 'off' asks nothing.
   */
  async probe(): Promise<ProbeResult[]> {
    if (this.o.mode === 'off') {
      return AUTO_ORDER.map((protocol) => ({ protocol, ok: false, detail: 'not asked: port mapping is off' }));
    }
    const ac = new AbortController();
    const onStop = () => ac.abort();
    this.abort.signal.addEventListener('abort', onStop);
    const deadline = this.o.clock.after(PORTMAP_DEFAULTS.probeDeadlineMs, () => ac.abort());
    try {
      return await Promise.all(
        AUTO_ORDER.map(async (protocol) => {
          // Fresh clients: a probe must not disturb the epoch or service the mapping relies on.
          const r = await makeClient(protocol, this.ctx).probe(ac.signal);
          const detail = r.ok ? r.value : ac.signal.aborted && r.failure.kind === 'local' ? `no answer within ${PORTMAP_DEFAULTS.probeDeadlineMs / 1000} s` : r.failure.message;
          return { protocol, ok: r.ok, detail };
        }),
      );
    } finally {
      deadline.cancel();
      this.abort.signal.removeEventListener('abort', onStop);
    }
  }

  // ------------------------------------------------------------------ operations

  /** Runs op after the ones before it; a failing op is logged, never thrown. */
  private enqueue(op: () => Promise<void>): void {
    this.pendingOps++;
    this.ops = this.ops
      .then(() => (this.stopped ? undefined : op()))
      .catch((e: unknown) => this.log.error('internal error in the port mapper', { err: (e as Error).stack }))
      .finally(() => {
        this.pendingOps--;
      });
  }

  private get signal(): AbortSignal {
    return this.abort.signal;
  }

  private order(): readonly ProtocolName[] {
    return this.o.mode === 'auto' ? AUTO_ORDER : [this.o.mode as ProtocolName];
  }

  private client(p: ProtocolName): MappingClient {
    let c = this.clients.get(p);
    if (!c) this.clients.set(p, (c = makeClient(p, this.ctx)));
    return c;
  }

  /** Maps from scratch, trying each protocol in turn. */
  private async attempt(): Promise<void> {
    this.timer?.cancel();
    this.state = 'mapping';
    this.retryAt = null;
    const tried: TriedProtocol[] = [];
    let retryAfterS = 0;
    for (const p of this.order()) {
      if (this.stopped) return;
      const client = this.client(p);
      const r = await client.map(this.o.lifetimeS, 'discover', this.signal);
      if (!r.ok) {
        tried.push({ protocol: p, outcome: r.failure.kind, result: r.failure.message });
        retryAfterS = Math.max(retryAfterS, r.failure.retryAfterS ?? 0);
        continue;
      }
      this.learnAddress(r.value.externalIp);
      if (r.value.externalPort !== this.o.port) {
        tried.push({ protocol: p, outcome: 'wrong-port', result: await this.release(client, r.value) });
        continue;
      }
      tried.push({ protocol: p, outcome: 'mapped', result: `mapped ${r.value.externalIp ?? '?'}:${r.value.externalPort}` });
      this.tried = tried;
      return this.established(client, r.value);
    }
    if (this.stopped) return;
    this.tried = tried;
    this.failed(this.explain(tried), retryAfterS);
  }

  /** Renews the live mapping; once it has expired without a renewal, maps from scratch. */
  private async renew(): Promise<void> {
    const a = this.active;
    if (!a) return this.attempt();
    const r = await this.untilExpiry(a, (signal) => a.client.map(this.o.lifetimeS, 'renew', signal));
    if (this.stopped) return; // stop() deletes the mapping it finds in this.active
    if (r.ok) {
      this.learnAddress(r.value.externalIp);
      if (r.value.restarted) this.noteRestart(`the router's ${PROTOCOL_LABEL[a.client.protocol]} epoch shows it restarted; the mapping was made again`);
      if (r.value.externalPort === this.o.port) return this.established(a.client, r.value);
      // The router forgot us and someone else holds the port now.
      const result = await this.release(a.client, r.value);
      this.active = null;
      this.tried = [{ protocol: a.client.protocol, outcome: 'wrong-port', result }];
      return this.failed(this.explain(this.tried), 0);
    }
    const now = this.o.clock.monotonic();
    if (a.expiresAt !== null && now >= a.expiresAt) {
      this.active = null;
      const why = r.failure.kind === 'local' ? `${PROTOCOL_LABEL[a.client.protocol]}: no answer before it expired` : r.failure.message;
      this.log.warn('port mapping expired: the router did not renew it', { protocol: a.client.protocol, why });
      return this.attempt();
    }
    const left = a.expiresAt === null ? Infinity : a.expiresAt - now;
    const wait = Math.max(1000, Math.min(PORTMAP_DEFAULTS.renewRetryMaxMs, left / 2));
    const fields = { protocol: a.client.protocol, why: r.failure.message, retryInS: wait / 1000 };
    // Warn once per outage; the retries every half minute go to debug.
    if (this.error?.startsWith('renewing')) this.log.debug('port mapping renewal failed again', fields);
    else this.log.warn('port mapping renewal failed', fields);
    this.error = `renewing the ${PROTOCOL_LABEL[a.client.protocol]} mapping failed (${r.failure.message}); it holds until ${a.expires ?? 'removed'}, retrying`;
    this.schedule(wait, () => this.renew());
    this.changed();
  }

  /**
   * Runs a renewal with a signal that also aborts when the mapping expires. The RFC schedules
   * outlast a short lifetime (PCP's 5 requests take 93 s, NAT-PMP's 9 take 128 s): past the
   * expiry the mapping would still read as in place, and its address still be announced.
   */
  private async untilExpiry<T>(a: Active, op: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    const onStop = () => ac.abort();
    this.signal.addEventListener('abort', onStop);
    const timer = a.expiresAt === null ? null : this.o.clock.after(Math.max(0, a.expiresAt - this.o.clock.monotonic()), onStop);
    try {
      return await op(ac.signal);
    } finally {
      timer?.cancel();
      this.signal.removeEventListener('abort', onStop);
    }
  }

  /** Looks at the live mapping; maps from scratch at once when the router lost it. */
  private async check(): Promise<void> {
    const a = this.active;
    if (!a) return;
    const r = await a.client.check(this.signal);
    if (this.stopped || this.active !== a) return;
    if (!r.ok) {
      this.log.debug('port mapping check got no answer', { protocol: a.client.protocol, why: r.failure.message });
      return;
    }
    const ip = r.value.externalIp;
    this.learnAddress(ip);
    if (ip && ip !== a.grant.externalIp) {
      // NAT-PMP and UPnP map on the router's one external address: a new one moves the mapping with it.
      a.grant = { ...a.grant, externalIp: ip };
      this.changed();
    }
    if (r.value.lost) {
      // Whatever the router offers now (it may have come back with another configuration) is
      // a new mapping: start over, in the configured order.
      this.noteRestart(r.value.why ?? 'the router lost the mapping');
      this.active = null;
      await this.attempt();
    }
  }

  // ------------------------------------------------------------------ state changes

  private established(client: MappingClient, grant: Grant): void {
    const now = this.o.clock.monotonic();
    // A grant without the address (NAT-PMP's separate address request or UPnP's
    // GetExternalIPAddress went unanswered) is on the router's one external address, the last
    // one it reported: not knowing it now is no reason to stop announcing the mapping.
    const g = grant.externalIp === null && this.routerAddress !== null ? { ...grant, externalIp: this.routerAddress } : grant;
    const first = this.active?.client !== client || this.active.grant.externalIp !== g.externalIp;
    this.active = {
      client,
      grant: g,
      expiresAt: g.lifetimeS === null ? null : now + g.lifetimeS * 1000,
      expires: g.lifetimeS === null ? null : new Date(this.o.clock.now() + g.lifetimeS * 1000).toISOString(),
    };
    if (this.stopped) return;
    this.state = 'mapped';
    this.error = null;
    this.retryMs = PORTMAP_DEFAULTS.retryMinMs;
    this.retryAt = null;
    this.renewedAt = new Date(this.o.clock.now()).toISOString();
    const fields = { protocol: client.protocol, external: `${g.externalIp ?? '?'}:${g.externalPort}`, lifetimeS: g.lifetimeS };
    if (first) this.log.info('port mapping ready', fields);
    else this.log.debug('port mapping renewed', fields);
    // Renew at half of what we asked for or got, whichever is shorter (a router may grant more):
    // NAT-PMP says halfway (RFC 6886 §3.3, as DHCP does). PCP asks for a random point between
    // 1/2 and 5/8 (RFC 6887 §11.2.1), so that clients mapped at one moment (a router restart
    // that makes every box behind it map again) do not renew in step forever.
    const lifeS = Math.min(g.lifetimeS ?? Infinity, this.o.lifetimeS);
    const at = client.protocol === 'pcp' ? 0.5 + this.ctx.random() / 8 : 0.5;
    this.schedule(lifeS * 1000 * at, () => this.renew());
    if (!this.checkTimer) {
      this.checkTimer = this.o.clock.every(this.o.checkIntervalS * 1000, () => {
        // A slow operation (a renewal retrying for a minute) already looks at the router.
        if (this.pendingOps === 0) this.enqueue(() => this.check());
      });
    }
    this.changed();
  }

  private failed(message: string, retryAfterS: number): void {
    this.active = null;
    this.checkTimer?.cancel();
    this.checkTimer = null;
    if (this.stopped) return;
    const repeated = this.error === message;
    this.state = 'failed';
    this.error = message;
    const wait = Math.min(PORTMAP_DEFAULTS.retryMaxMs, Math.max(this.retryMs, retryAfterS * 1000));
    this.retryMs = Math.min(PORTMAP_DEFAULTS.retryMaxMs, this.retryMs * 2);
    this.retryAt = new Date(this.o.clock.now() + wait).toISOString();
    if (repeated) this.log.debug('port mapping still failing', { retryInS: wait / 1000 });
    else this.log.warn(`port mapping failed: ${message}`, { retryInS: wait / 1000 });
    this.schedule(wait, () => this.attempt());
    this.changed();
  }

  /** Deletes a grant on the wrong external port; returns what happened, for `tried`. */
  private async release(client: MappingClient, g: Grant): Promise<string> {
    const r = await client.unmap(g.externalPort, this.signal);
    const what = `the router offered external port ${g.externalPort} instead of ${this.o.port}`;
    this.log.warn(`${PROTOCOL_LABEL[client.protocol]}: ${what}; releasing it`, { released: r.ok });
    return r.ok ? `${what}; released it` : `${what}; releasing it failed (${r.failure.message}), it expires in ${g.lifetimeS ?? '?'} s`;
  }

  private noteRestart(why: string): void {
    this.routerRestarts++;
    this.log.warn(`port mapping: ${why}`, { protocol: this.active?.client.protocol });
  }

  private learnAddress(ip: string | null): void {
    if (!ip) return;
    this.routerAddress = ip;
    if (!isPublicIPv4(ip)) {
      this.addressProblem =
        `the router's external address ${ip} is not public (carrier-grade or double NAT): a mapping on this router ` +
        `does not reach the internet. Forward UDP ${this.o.port} on the upstream router as well, or create the AWS ` +
        `nodes' flannel.1 with \`srcport ${this.o.port} ${this.o.port + 1}\``;
      return;
    }
    this.addressProblem = null;
    if (ip === this.announced) return;
    this.announced = ip;
    this.log.info('router external address', { address: ip });
    for (const cb of this.addressListeners) {
      try {
        cb(ip);
      } catch (e) {
        this.log.error('an external-address listener failed', { err: (e as Error).stack });
      }
    }
  }

  /** The operator's explanation of a failed attempt: what each protocol said, and what to do. */
  private explain(tried: TriedProtocol[]): string {
    const { port, localAddress, gateway } = this.o;
    const remedy =
      `forward UDP ${port} to ${localAddress}:${port} on the router by hand (and set nat.portMapping to off), ` +
      `or create the AWS nodes' flannel.1 with \`srcport ${port} ${port + 1}\` so that their packets match the mapping our keepalives hold open`;
    const details = tried.map((t) => t.result).join('; ');
    if (tried.some((t) => t.outcome === 'wrong-port')) {
      return `the router would map UDP ${port} only to another external port, and AWS nodes always send to <public IP>:${port} ` +
        `(is UDP ${port} already forwarded to another host, or outside what the router allows?): ${details}. To fix: ${remedy}`;
    }
    if (tried.every((t) => t.outcome === 'absent')) {
      const names = tried.map((t) => PROTOCOL_LABEL[t.protocol]).join(', ');
      if (this.o.mode !== 'auto') {
        // Only the protocol named was asked: the router may well speak another one.
        return `the router ${gateway} does not answer ${names} (${details}), the only protocol nat.portMapping (${this.o.mode}) allows. ` +
          `Set nat.portMapping to auto (PCP, NAT-PMP and UPnP IGD in turn), turn on ${names} on the router, or ${remedy}`;
      }
      return `the router ${gateway} does not answer ${names} (${details}). Turn on UPnP IGD or NAT-PMP/PCP on the router, or ${remedy}`;
    }
    return `the router ${gateway} did not map UDP ${port}: ${details}. To fix: ${remedy}`;
  }

  // ------------------------------------------------------------------ plumbing

  private schedule(ms: number, op: () => Promise<void>): void {
    this.timer?.cancel();
    if (this.stopped) return;
    this.timer = this.o.clock.after(ms, () => this.enqueue(op));
  }

  /** Tells onChange listeners, when something other than counters changed. */
  private changed(): void {
    const s = this.status();
    // A router restart is news even when the mapping came back the same: the forward is new there.
    const key = JSON.stringify([s.state, s.protocol, s.external, s.lifetime, s.error, s.routerAddress, s.routerRestarts]);
    if (key === this.lastChange) return;
    this.lastChange = key;
    for (const cb of this.changeListeners) {
      try {
        cb(s);
      } catch (e) {
        this.log.error('a port-mapping status listener failed', { err: (e as Error).stack });
      }
    }
  }
}

function makeClient(p: ProtocolName, ctx: ClientContext): MappingClient {
  switch (p) {
    case 'pcp':
      return new PcpClient(ctx);
    case 'natpmp':
      return new NatPmpClient(ctx);
    case 'upnp':
      return new UpnpClient(ctx);
  }
}

/**
 * True for an address the internet can reach (util/ipv4.ts `isGloballyRoutable`, the list the
 * public_endpoint check uses too). The documentation ranges (192.0.2.0/24 and the like) count
 * as public: they never occur on real routers, and the lab uses them as WAN.
 */
export function isPublicIPv4(ip: string): boolean {
  return isIPv4(ip) && isGloballyRoutable(ipToInt(ip));
}
