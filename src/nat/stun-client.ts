// Public endpoint discovery with STUN, from the tunnel's own socket so that the NAT
// mapping STUN sees is the one VXLAN and the keepalives use (docs/nat.md "STUN").
//
// One round asks every configured server at once. Each server is one transaction
// with RFC 8489 §6.2.1 retransmission: requests at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and
// 31.5 s (RTO 500 ms doubling, Rc = 7), failure 16 × RTO after the last (39.5 s).
// A response counts only if it carries the transaction id we sent AND comes from
// the address and port we sent to. From the answers (Tailscale netcheck's logic):
//   publicEndpoint  the first server's mapping (config order)
//   portPreserved   the NAT kept our local port
//   mappingVaries   two servers saw different ip:port: an endpoint-dependent ("hard")
//                   NAT; null with fewer than two answers
// Rounds run at start, then every 60–120 s (random), and when the gateway calls
// trigger(): all peers went down, the underlay address changed. Triggers are
// debounced and spaced so that a flapping peer cannot turn into a STUN storm.
//
// handle() is called from the packet path for every datagram with the STUN cookie:
// it compares bytes before it parses anything and never throws.
import { randomBytes } from 'node:crypto';
import dns from 'node:dns';
import type { HostPort } from '../config/types.js';
import type { NatHealthDoc } from '../health/document.js';
import {
  STUN_BINDING_ERROR,
  STUN_BINDING_SUCCESS,
  bindingRequestLength,
  parseStunResponse,
  txidEquals,
  usableMapping,
  writeBindingRequest,
} from '../proto/stun.js';
import { ipToInt, isIPv4 } from '../util/ipv4.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';

export type SendFn = (buf: Buffer, off: number, len: number, addr: number, port: number) => boolean;

export interface StunServerResult {
  /** As configured: "host:port". */
  server: string;
  /** What the server saw us as, "ip:port"; null without an answer. */
  mapped: string | null;
  /** Why there is no mapping; null when there is one. */
  error: string | null;
  /** From the last request sent to the answer; null without an answer. */
  rttMs: number | null;
}

export interface StunResult {
  servers: StunServerResult[];
  publicEndpoint: string | null;
  portPreserved: boolean | null;
  mappingVaries: boolean | null;
  /** When the round ended (ms since the epoch). */
  at: number;
  /** Why the round ran: "start", "periodic", or the trigger's reason. */
  reason: string;
}

export interface StunClientOptions {
  servers: HostPort[];
  /** The port our socket is bound to (underlay.port). */
  localPort: number;
  send: SendFn;
  /** host -> IPv4 address; default dns.promises.lookup(host, { family: 4 }). IPv4 literals skip it. */
  lookup?: (host: string) => Promise<string>;
  clock?: Clock;
  /** In [0, 1), for the period's jitter. */
  random?: () => number;
  /** RFC 8489 §6.2.1: initial RTO (500 ms), requests per transaction (7), final wait in RTOs (16). */
  rtoMs?: number;
  rc?: number;
  rm?: number;
  /** Between rounds: a random time in [min, max] (default 60–120 s). */
  periodMs?: { min: number; max: number };
  /** A trigger waits this long, so that several causes make one round (default 1 s). */
  debounceMs?: number;
  /** A triggered round starts at least this long after the previous one started (default 5 s). */
  minGapMs?: number;
  lookupTimeoutMs?: number;
  /** SOFTWARE attribute; none when empty. */
  software?: string;
  log?: Logger;
}

export const STUN_DEFAULTS = {
  rtoMs: 500,
  rc: 7,
  rm: 16,
  periodMs: { min: 60_000, max: 120_000 },
  debounceMs: 1_000,
  minGapMs: 5_000,
  lookupTimeoutMs: 5_000,
} as const;

const defaultLookup = async (host: string): Promise<string> => (await dns.promises.lookup(host, { family: 4 })).address;

interface Transaction {
  label: string;
  host: string;
  port: number;
  /** Resolved server address (uint32); -1 until resolved. */
  addr: number;
  txid: Buffer;
  req: Buffer;
  sends: number;
  sendFailures: number;
  lastSentAt: number;
  timer: Timer | null;
  done: boolean;
  result: StunServerResult;
}

interface Round {
  reason: string;
  startedAt: number;
  txns: Transaction[];
  remaining: number;
}

export class StunClient {
  private readonly o: Required<Omit<StunClientOptions, 'log' | 'software'>> & { software: string };
  private readonly t: Clock;
  private readonly log: Logger | undefined;
  private readonly listeners: ((r: StunResult) => void)[] = [];
  private round: Round | null = null;
  /** The last round's transactions, kept to absorb late duplicate answers. */
  private previous: Transaction[] = [];
  private pending: string | null = null;
  private nextTimer: Timer | null = null;
  private nextIsTrigger = false;
  private lastStartedAt = -Infinity;
  private stopped = true;
  private handleErrorLogged = false;
  private latest: StunResult | null = null;
  private latestGood: StunResult | null = null;

  constructor(opts: StunClientOptions) {
    this.o = {
      servers: opts.servers,
      localPort: opts.localPort,
      send: opts.send,
      rtoMs: opts.rtoMs ?? STUN_DEFAULTS.rtoMs,
      rc: opts.rc ?? STUN_DEFAULTS.rc,
      rm: opts.rm ?? STUN_DEFAULTS.rm,
      periodMs: opts.periodMs ?? STUN_DEFAULTS.periodMs,
      debounceMs: opts.debounceMs ?? STUN_DEFAULTS.debounceMs,
      minGapMs: opts.minGapMs ?? STUN_DEFAULTS.minGapMs,
      lookupTimeoutMs: opts.lookupTimeoutMs ?? STUN_DEFAULTS.lookupTimeoutMs,
      lookup: opts.lookup ?? defaultLookup,
      clock: opts.clock ?? systemClock,
      random: opts.random ?? Math.random,
      software: opts.software ?? '',
    };
    this.t = this.o.clock;
    this.log = opts.log;
  }

  /** The last finished round, or null before the first one ends. */
  get result(): StunResult | null {
    return this.latest;
  }

  /** The last round in which some server answered (its endpoint stays good through a failed round). */
  get lastGood(): StunResult | null {
    return this.latestGood;
  }

  /** Runs a round now, then periodically. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.runRound('start');
  }

  stop(): void {
    this.stopped = true;
    this.clearNext();
    for (const x of this.round?.txns ?? []) this.clearTxnTimer(x);
    this.round = null;
    this.pending = null;
  }

  onResult(cb: (r: StunResult) => void): void {
    this.listeners.push(cb);
  }

  /** Asks for a round soon (debounced; after the running one if one runs). */
  trigger(reason: string): void {
    if (this.stopped) return;
    if (this.round) {
      this.pending ??= reason;
      return;
    }
    if (this.nextTimer !== null && this.nextIsTrigger) return; // one is already coming
    const wait = Math.max(this.o.debounceMs, this.lastStartedAt + this.o.minGapMs - this.t.monotonic());
    this.schedule(wait, reason, true);
  }

  /**
   * A datagram with the STUN cookie from the tunnel socket. Returns true when it answers
   * one of our transactions (consumed); false leaves it to the data plane, which drops and
   * counts it. Never throws.
   */
  handle(buf: Buffer, off: number, len: number, addr: number, port: number): boolean {
    try {
      const x = this.match(this.round?.txns, buf, off, addr, port) ?? this.match(this.previous, buf, off, addr, port);
      if (!x) return false;
      if (!x.done) this.answer(x, buf, off, len);
      return true;
    } catch (e) {
      if (!this.handleErrorLogged) {
        this.handleErrorLogged = true;
        this.log?.error('internal error handling a STUN response (further ones are not logged)', { err: (e as Error).stack });
      }
      return true;
    }
  }

  // ------------------------------------------------------------------ rounds

  private runRound(reason: string): void {
    if (this.stopped) return;
    if (this.round) {
      this.pending ??= reason;
      return;
    }
    this.clearNext();
    const now = this.t.monotonic();
    this.lastStartedAt = now;
    const software = this.o.software || undefined;
    const reqLen = bindingRequestLength({ software, fingerprint: true });
    const round: Round = { reason, startedAt: now, txns: [], remaining: this.o.servers.length };
    for (const s of this.o.servers) {
      const txid = randomBytes(12);
      const req = Buffer.alloc(reqLen);
      writeBindingRequest(req, 0, txid, { software, fingerprint: true });
      round.txns.push({
        label: `${s.host}:${s.port}`, host: s.host, port: s.port, addr: -1, txid, req,
        sends: 0, sendFailures: 0, lastSentAt: 0, timer: null, done: false,
        result: { server: `${s.host}:${s.port}`, mapped: null, error: null, rttMs: null },
      });
    }
    this.round = round;
    this.log?.debug('stun round', { reason, servers: round.txns.map((x) => x.label) });
    if (round.txns.length === 0) return this.endRound(round);
    for (const x of round.txns) void this.begin(round, x);
  }

  private async begin(round: Round, x: Transaction): Promise<void> {
    let address: string;
    try {
      address = isIPv4(x.host) ? x.host : await this.resolve(x.host);
    } catch (e) {
      if (this.round === round) this.finish(round, x, null, `cannot resolve ${x.host}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return;
    }
    if (this.round !== round || x.done) return;
    if (!isIPv4(address)) return this.finish(round, x, null, `${x.host} resolved to ${address}, not an IPv4 address`);
    x.addr = ipToInt(address);
    this.transmit(round, x);
  }

  private resolve(host: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = this.t.after(this.o.lookupTimeoutMs, () => reject(new Error(`no answer within ${this.o.lookupTimeoutMs} ms`)));
      this.o.lookup(host).then(
        (a) => {
          timer.cancel();
          resolve(a);
        },
        (e: unknown) => {
          timer.cancel();
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  /** Sends request number x.sends + 1 and arms the timer for the next one (or the give-up). */
  private transmit(round: Round, x: Transaction): void {
    if (this.round !== round || x.done) return;
    let ok = false;
    try {
      ok = this.o.send(x.req, 0, x.req.length, x.addr, x.port);
    } catch {
      ok = false;
    }
    if (!ok) x.sendFailures++;
    x.sends++;
    x.lastSentAt = this.t.monotonic();
    const { rtoMs, rc, rm } = this.o;
    if (x.sends < rc) {
      x.timer = this.t.after(rtoMs * 2 ** (x.sends - 1), () => this.transmit(round, x));
    } else {
      x.timer = this.t.after(rm * rtoMs, () => {
        const waited = (rtoMs * (2 ** (rc - 1) - 1) + rm * rtoMs) / 1000;
        const why = x.sendFailures === x.sends
          ? 'could not send: the socket refused every request (no route to the server?)'
          : `no answer to ${x.sends} requests in ${waited} s`;
        this.finish(round, x, null, why);
      });
    }
  }

  private match(txns: Transaction[] | undefined, buf: Buffer, off: number, addr: number, port: number): Transaction | null {
    if (!txns) return null;
    for (const x of txns) {
      if (x.addr === addr && x.port === port && txidEquals(buf, off + 8, x.txid)) return x;
    }
    return null;
  }

  private answer(x: Transaction, buf: Buffer, off: number, len: number): void {
    const round = this.round;
    if (!round || !round.txns.includes(x)) return;
    const msg = parseStunResponse(buf, off, len);
    // Malformed, or a failed FINGERPRINT: not a STUN message (§14.7); keep waiting.
    if (!msg || msg.fingerprintOk === false) return;
    if (msg.type === STUN_BINDING_SUCCESS) {
      const m = usableMapping(msg);
      if (m) return this.finish(round, x, `${m.address}:${m.port}`, null);
      const v6 = msg.xorMapped?.family === 6 || msg.mapped?.family === 6;
      return this.finish(round, x, null, v6 ? 'answered with an IPv6 mapping, which an IPv4 tunnel cannot use' : 'answered without a mapped address');
    }
    if (msg.type === STUN_BINDING_ERROR) {
      const code = msg.errorCode ?? 0;
      this.finish(round, x, null, `error response ${code || '(no ERROR-CODE)'}${msg.errorReason ? ` ${msg.errorReason}` : ''}`);
    }
  }

  private finish(round: Round, x: Transaction, mapped: string | null, error: string | null): void {
    if (x.done) return;
    x.done = true;
    this.clearTxnTimer(x);
    x.result = {
      server: x.label,
      mapped,
      error,
      rttMs: mapped !== null ? Math.max(0, this.t.monotonic() - x.lastSentAt) : null,
    };
    if (--round.remaining === 0) this.endRound(round);
  }

  private endRound(round: Round): void {
    if (this.round !== round) return;
    this.round = null;
    this.previous = round.txns;
    const r = summarize(round.txns.map((x) => x.result), this.o.localPort, this.t.now(), round.reason);
    this.latest = r;
    if (r.publicEndpoint) this.latestGood = r;
    for (const cb of this.listeners) {
      try {
        cb(r);
      } catch (e) {
        this.log?.error('a STUN result listener failed', { err: (e as Error).stack });
      }
    }
    if (this.stopped) return;
    if (this.pending !== null) {
      const reason = this.pending;
      this.pending = null;
      this.trigger(reason);
    } else {
      const { min, max } = this.o.periodMs;
      this.schedule(min + this.o.random() * Math.max(0, max - min), 'periodic', false);
    }
  }

  // ------------------------------------------------------------------ timers

  private schedule(ms: number, reason: string, isTrigger: boolean): void {
    this.clearNext();
    this.nextIsTrigger = isTrigger;
    this.nextTimer = this.t.after(Math.max(0, ms), () => {
      this.nextTimer = null;
      this.runRound(reason);
    });
  }

  private clearNext(): void {
    this.nextTimer?.cancel();
    this.nextTimer = null;
  }

  private clearTxnTimer(x: Transaction): void {
    x.timer?.cancel();
    x.timer = null;
  }
}

/** The round's conclusions from its per-server results (pure; exported for tests). */
export function summarize(servers: StunServerResult[], localPort: number, at: number, reason: string): StunResult {
  const mapped = servers.map((s) => s.mapped).filter((m): m is string => m !== null);
  const publicEndpoint = mapped[0] ?? null;
  return {
    servers,
    publicEndpoint,
    portPreserved: publicEndpoint === null ? null : portOf(publicEndpoint) === localPort,
    mappingVaries: mapped.length < 2 ? null : mapped.some((m) => m !== publicEndpoint),
    at,
    reason,
  };
}

export interface AdviceContext {
  /** The address and port the tunnel socket is bound to. */
  localAddress: string;
  localPort: number;
  /** The port AWS nodes send to (vxlan.port). */
  vxlanPort: number;
  /** underlay.publicIp, when configured. */
  publicIp: string | null;
}

/**
 * Which way in applies, in plain words (docs/nat.md "Ways in"): no NAT; a
 * port-preserving, endpoint-independent NAT (keepalives + the AWS-side srcport pin, or
 * a port forward); or a NAT that needs the site router's port forward.
 */
export function natAdvice(r: StunResult | null, c: AdviceContext): string {
  const forward = `the site router needs a port forward of UDP ${c.vxlanPort} to ${c.localAddress}:${c.localPort}`;
  if (!r) return 'STUN discovery is running; nothing is known yet';
  if (!r.publicEndpoint) {
    return `no STUN server answered (${r.servers.map((s) => `${s.server}: ${s.error}`).join('; ')}): the public endpoint is unknown; ` +
      'check that UDP to the STUN servers is allowed, or set underlay.publicIp';
  }
  const [ip] = r.publicEndpoint.split(':');
  const port = portOf(r.publicEndpoint);
  const mismatch = c.publicIp && c.publicIp !== ip ? ` Note: underlay.publicIp is ${c.publicIp} but STUN saw ${ip}.` : '';
  if (r.publicEndpoint === `${c.localAddress}:${c.localPort}` && r.mappingVaries !== true) {
    return `no NAT: ${c.localAddress} is public; AWS nodes reach the gateway directly at ${c.localAddress}:${c.vxlanPort} (allow UDP ${c.vxlanPort} from them).${mismatch}`;
  }
  if (r.mappingVaries) {
    return `the NAT maps each destination to a different port (endpoint-dependent, a "hard" NAT: ${distinct(r).join(' vs ')}): ` +
      `AWS nodes cannot come in through the mapping the keepalives hold open, so ${forward}.${mismatch}`;
  }
  if (port !== c.vxlanPort || r.portPreserved === false) {
    return `the NAT does not preserve the port (local ${c.localPort}, public ${port}): AWS nodes always send to port ${c.vxlanPort}, so ${forward}.${mismatch}`;
  }
  const unknown = r.mappingVaries === null ? ' Only one STUN server answered, so whether the mapping varies by destination is unknown; configure two.' : '';
  return `the NAT preserves port ${c.vxlanPort} and maps independently of the destination: AWS nodes reach ${r.publicEndpoint} either through ` +
    `a port forward of UDP ${c.vxlanPort} on the site router, or without one when their flannel.1 is created with \`srcport ${c.vxlanPort} ${c.vxlanPort + 1}\` ` +
    `(their packets then match the mapping the keepalives hold open; keep keepalive.interval under the NAT's UDP timeout).${unknown}${mismatch}`;
}

/** The health document's `nat` object from the client's last round. */
export function natHealth(client: StunClient, c: AdviceContext): NatHealthDoc {
  const r = client.result;
  return {
    stun: r ? r.servers.map((x) => ({ ...x })) : [],
    mappedEndpoint: r?.publicEndpoint ?? null,
    portPreserved: r?.portPreserved ?? null,
    mappingVaries: r?.mappingVaries ?? null,
    checkedAt: r ? new Date(r.at).toISOString() : null,
    advice: natAdvice(r, c),
  };
}

function distinct(r: StunResult): string[] {
  return [...new Set(r.servers.map((s) => s.mapped).filter((m): m is string => m !== null))];
}

function portOf(endpoint: string): number {
  return Number(endpoint.slice(endpoint.lastIndexOf(':') + 1));
}
