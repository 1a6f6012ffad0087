// The one interface every port-mapping protocol implements (pcp.ts, natpmp.ts, upnp.ts),
// and the little they share. portmapper.ts drives a MappingClient without knowing which
// protocol is behind it, like wireguard-go's per-OS `conn` files behind one Bind.
//
// A client holds one mapping: UDP `port` on our LAN address -> the same port outside. It
// keeps what a protocol needs between calls (the PCP nonce, the router's last epoch, the
// UPnP control URL) and never decides policy: whether a grant on another port is useful,
// when to renew, what to tell the operator is the manager's job.
import type { Clock } from '../../util/clock.js';
import type { Logger } from '../../util/log.js';
import type { HttpFn, UdpFactory } from './transport.js';

export type ProtocolName = 'pcp' | 'natpmp' | 'upnp';
export type PortMappingMode = 'auto' | 'off' | ProtocolName;

/** `auto` tries them in this order (Tailscale's too): the newest protocol first. */
export const AUTO_ORDER: readonly ProtocolName[] = ['pcp', 'natpmp', 'upnp'];

export const PROTOCOL_LABEL: Record<ProtocolName, string> = { pcp: 'PCP', natpmp: 'NAT-PMP', upnp: 'UPnP IGD' };

/** What the router granted. */
export interface Grant {
  /** The router's external IPv4 address; null when it did not say (then the manager asks check()). */
  externalIp: string | null;
  externalPort: number;
  /** Seconds granted; null for a permanent UPnP lease (routers that only support those). */
  lifetimeS: number | null;
  /** The router lost its state since our previous exchange (PCP/NAT-PMP epoch check). */
  restarted: boolean;
}

/** What a check of a live mapping found. */
export interface MappingHealth {
  /** The router restarted, or our mapping is gone or points elsewhere: map again now. */
  lost: boolean;
  /** Why `lost`, in words for the log. */
  why: string | null;
  externalIp: string | null;
}

export type FailureKind =
  /** Nothing speaks the protocol: no answer, port closed, no IGD found. Try the next protocol. */
  | 'absent'
  /** The router answered and said no (a result code, a SOAP fault). */
  | 'refused'
  /** The router answered with something we cannot use. */
  | 'bad-answer'
  /** Our side: no socket, stopped. */
  | 'local';

export interface Failure {
  kind: FailureKind;
  /** What is wrong, for operators: "PCP NOT_AUTHORIZED (2): …". */
  message: string;
  /** The router's own code by name, e.g. "NO_RESOURCES", "718 ConflictInMappingEntry". */
  code?: string;
  /** The router said when to try again (PCP error lifetimes). */
  retryAfterS?: number;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; failure: Failure };

export const ok = <T>(value: T): Outcome<T> => ({ ok: true, value });
export const fail = <T = never>(kind: FailureKind, message: string, extra: Partial<Failure> = {}): Outcome<T> => ({
  ok: false,
  failure: { kind, message, ...extra },
});

/** First contact (mapping from scratch, probes, checks) or renewing a mapping the router gave us. */
export type Phase = 'discover' | 'renew';

export interface ClientContext {
  /** The router (our default gateway), IPv4. */
  gateway: string;
  /** Our LAN address: the mapping's internal address and every socket's source. */
  localAddress: string;
  /** Internal port = wanted external port (underlay.port, normally 8472). */
  port: number;
  clock: Clock;
  log: Logger;
  udp: UdpFactory;
  http: HttpFn;
  /** In [0, 1): PCP's retransmission jitter. */
  random: () => number;
  /** 12 random bytes: PCP mapping nonces. */
  nonce: () => Buffer;
}

export interface MappingClient {
  readonly protocol: ProtocolName;
  /** Answers ignored or unusable since this client was made (malformed, wrong opcode/nonce, SOAP garbage). */
  readonly badAnswers: number;
  /** Creates or renews the mapping, asking for `lifetimeS` seconds. */
  map(lifetimeS: number, phase: Phase, signal: AbortSignal): Promise<Outcome<Grant>>;
  /** A cheap look at a live mapping: router restarted? mapping gone? external address? */
  check(signal: AbortSignal): Promise<Outcome<MappingHealth>>;
  /** Deletes the mapping on `externalPort` (ours, or one granted on the wrong port). */
  unmap(externalPort: number, signal: AbortSignal): Promise<Outcome<void>>;
  /** Does the router speak the protocol? A short description on success. No side effects. */
  probe(signal: AbortSignal): Promise<Outcome<string>>;
}

/**
 * The router's epoch (seconds since it started, PCP and NAT-PMP) as we last saw it, and a
 * protocol's rule for whether a new value is plausible. An implausible one means the router
 * restarted or lost its mappings, and every mapping has to be made again.
 */
export class EpochTracker {
  private prev: { serverS: number; clientMs: number } | null = null;

  constructor(private readonly plausible: (prevServerS: number, prevClientMs: number, serverS: number, clientMs: number) => boolean) {}

  /** Records an epoch seen at monotonic time clientMs; true when it shows a restart. The first one never does. */
  observe(serverS: number, clientMs: number): boolean {
    const p = this.prev;
    this.prev = { serverS, clientMs };
    return p !== null && !this.plausible(p.serverS, p.clientMs, serverS, clientMs);
  }

  get last(): number | null {
    return this.prev?.serverS ?? null;
  }
}
