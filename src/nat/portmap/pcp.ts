// PCP, the Port Control Protocol (RFC 6887): the codec for the two opcodes we use (MAP and
// ANNOUNCE) and a MappingClient over UDP to the router's port 5351, which PCP shares with
// NAT-PMP (its successor: version 2 where NAT-PMP is version 0).
//
//   common header, request                  common header, response
//   | version 2 |R=0| opcode | reserved (16) | version 2 |R=1| opcode | reserved | result |
//   | requested lifetime (32)               | lifetime (32)                               |
//   | PCP client's IP address (128)         | epoch time (32)                             |
//                                           | reserved (96)                               |
//   MAP, after the header (36 bytes, the same layout both ways)
//   | mapping nonce (96)                                                                  |
//   | protocol (8) | reserved (24)                                                        |
//   | internal port (16) | suggested (request) / assigned (response) external port (16)   |
//   | suggested / assigned external IP address (128)                                      |
//
// IPv4 addresses travel as IPv4-mapped IPv6 (::ffff:a.b.c.d). A message is at most 1100
// bytes and a multiple of 4 (§7); a MAP answer is ours only if it carries the nonce we
// chose, our protocol and internal port (§11.4). Error answers may be the bare 24-byte
// header. A NAT-PMP-only router answers our version-2 request with its own 8-byte
// "Unsupported Version" (RFC 6886 §3.5, RFC 6887 §9): that means "no PCP here", quickly.
//
// The epoch (§8.5) tells a client that the router lost its state: it must not go back by
// more than 1 s, and from one answer to the next it must advance about as much as our own
// clock did (within 2 s + 1/16). Otherwise every mapping has to be made again.
//
// Retransmission (§8.1.1): the first wait is 3 s ± 10 %, then each one doubles (± 10 %, at
// most 1024 s), with no limit. We stop after 5 requests (about 93 s) when renewing a mapping
// the router gave us; first contact, checks and deletes give up after 3 requests in 1.75 s
// (250 ms doubling, as NAT-PMP): the router is one hop away, `auto` has to move on, and a
// check or a renewal comes again anyway.
//
// Nonces: one random nonce per client, kept for renewals and the delete. A router that checks
// nonces (miniupnpd 2.3.1 does not) refuses to touch a mapping made with another nonce, so a
// restarted vxedge waits for its old mapping to expire unless it is given the nonce it used
// before (PortMapper's `pcpNonce`).
import { isIPv4 } from '../../util/ipv4.js';
import { decodeNatPmpResponse } from './natpmp.js';
import { EpochTracker, fail, ok, type ClientContext, type Grant, type MappingClient, type MappingHealth, type Outcome, type Phase } from './client.js';
import { QUICK_WAITS_MS, RESPONSE_BIT, RouterUdp } from './router-udp.js';
import type { ExchangeResult } from './transport.js';

export const PCP_VERSION = 2;
export const PCP_OP_ANNOUNCE = 0;
export const PCP_OP_MAP = 1;
export const PCP_PROTO_UDP = 17;
export const PCP_NONCE_LEN = 12;
export const PCP_HEADER_LEN = 24;
export const PCP_MAP_LEN = PCP_HEADER_LEN + 36;
export const PCP_MAX_LEN = 1100;

/** Result codes (§7.4) by their RFC names. */
export const PCP_RESULT: Readonly<Record<number, string>> = {
  0: 'SUCCESS',
  1: 'UNSUPP_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'MALFORMED_REQUEST',
  4: 'UNSUPP_OPCODE',
  5: 'UNSUPP_OPTION',
  6: 'MALFORMED_OPTION',
  7: 'NETWORK_FAILURE',
  8: 'NO_RESOURCES',
  9: 'UNSUPP_PROTOCOL',
  10: 'USER_EX_QUOTA',
  11: 'CANNOT_PROVIDE_EXTERNAL',
  12: 'ADDRESS_MISMATCH',
  13: 'EXCESSIVE_REMOTE_PEERS',
};

export function pcpResultName(code: number): string {
  return PCP_RESULT[code] ?? `UNKNOWN_RESULT_${code}`;
}

const IRT_MS = 3000;
const MRT_MS = 1_024_000;
const RENEW_SENDS = 5;

/** §8.1.1's waits for `sends` requests: RT = (1 + RAND) × min(2 × RTprev, MRT), RAND in [-0.1, 0.1]. */
export function pcpRetransmitWaits(sends: number, random: () => number): number[] {
  const out: number[] = [];
  let base = IRT_MS;
  for (let i = 0; i < sends; i++) {
    out.push(Math.round(base * (1 + (random() * 0.2 - 0.1))));
    base = Math.min(2 * base, MRT_MS);
  }
  return out;
}

export interface PcpMapData {
  nonce: Buffer;
  protocol: number;
  internalPort: number;
  externalPort: number;
  /** Dotted quad when IPv4-mapped; null otherwise (IPv6, or no address). */
  externalIp: string | null;
}

export interface PcpResponse {
  opcode: number;
  resultCode: number;
  /** SUCCESS: seconds granted; an error: how long the error holds (when to try again). */
  lifetimeS: number;
  epochS: number;
  /** MAP answers of full length. */
  map?: PcpMapData;
}

// --------------------------------------------------------------------- codec

function writeV4Mapped(b: Buffer, off: number, ip: string): void {
  const parts = ip.split('.').map(Number);
  b.fill(0, off, off + 10);
  b[off + 10] = 0xff;
  b[off + 11] = 0xff;
  for (let i = 0; i < 4; i++) b[off + 12 + i] = parts[i];
}

function readV4Mapped(b: Buffer, off: number): string | null {
  for (let i = 0; i < 10; i++) if (b[off + i] !== 0) return null;
  if (b[off + 10] !== 0xff || b[off + 11] !== 0xff) return null;
  return `${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
}

function header(op: number, lifetimeS: number, clientIp: string, len: number): Buffer {
  if (!isIPv4(clientIp)) throw new RangeError(`PCP client address must be IPv4, got ${clientIp}`);
  const b = Buffer.alloc(len);
  b[0] = PCP_VERSION;
  b[1] = op;
  b.writeUInt32BE(lifetimeS, 4);
  writeV4Mapped(b, 8, clientIp);
  return b;
}

/** ANNOUNCE (§14.1): the header alone, lifetime 0. Its answer carries the router's epoch. */
export function encodePcpAnnounceRequest(clientIp: string): Buffer {
  return header(PCP_OP_ANNOUNCE, 0, clientIp, PCP_HEADER_LEN);
}

export interface PcpMapRequest {
  clientIp: string;
  /** 0 deletes the mapping. */
  lifetimeS: number;
  nonce: Uint8Array;
  protocol?: number;
  internalPort: number;
  suggestedExternalPort: number;
  /** Default 0.0.0.0: no preference. */
  suggestedExternalIp?: string;
}

/** MAP (§11.1), 60 bytes, no options. Throws RangeError on arguments that are our own bug. */
export function encodePcpMapRequest(r: PcpMapRequest): Buffer {
  if (r.nonce.length !== PCP_NONCE_LEN) throw new RangeError(`a PCP nonce is ${PCP_NONCE_LEN} bytes, not ${r.nonce.length}`);
  const b = header(PCP_OP_MAP, r.lifetimeS, r.clientIp, PCP_MAP_LEN);
  b.set(r.nonce, 24);
  b[36] = r.protocol ?? PCP_PROTO_UDP;
  b.writeUInt16BE(r.internalPort, 40);
  b.writeUInt16BE(r.suggestedExternalPort, 42);
  const ext = r.suggestedExternalIp ?? '0.0.0.0';
  if (!isIPv4(ext)) throw new RangeError(`suggested external address must be IPv4, got ${ext}`);
  writeV4Mapped(b, 44, ext);
  return b;
}

/** Parses one answer. Null when it is not a well-formed PCP version-2 response. Never throws. */
export function decodePcpResponse(buf: Buffer): PcpResponse | null {
  if (buf.length < PCP_HEADER_LEN || buf.length > PCP_MAX_LEN || buf.length % 4 !== 0) return null;
  if (buf[0] !== PCP_VERSION || (buf[1] & RESPONSE_BIT) === 0) return null;
  const r: PcpResponse = {
    opcode: buf[1] & 0x7f,
    resultCode: buf[3],
    lifetimeS: buf.readUInt32BE(4),
    epochS: buf.readUInt32BE(8),
  };
  if (r.opcode === PCP_OP_MAP) {
    if (buf.length >= PCP_MAP_LEN) {
      r.map = {
        nonce: Buffer.from(buf.subarray(24, 36)),
        protocol: buf[36],
        internalPort: buf.readUInt16BE(40),
        externalPort: buf.readUInt16BE(42),
        externalIp: readV4Mapped(buf, 44),
      };
    } else if (r.resultCode === 0) {
      return null; // a successful MAP without its mapping
    }
  }
  return r;
}

/** §8.5: false when the router's epoch shows it lost its state since the previous answer. */
export function pcpEpochPlausible(prevServerS: number, prevClientMs: number, serverS: number, clientMs: number): boolean {
  if (serverS + 1 < prevServerS) return false;
  const clientDelta = Math.max(0, clientMs - prevClientMs) / 1000;
  const serverDelta = serverS - prevServerS;
  return !(clientDelta + 2 < serverDelta - serverDelta / 16 || serverDelta + 2 < clientDelta - clientDelta / 16);
}

// --------------------------------------------------------------------- client

/** What the exchange accepts: a PCP answer, or a NAT-PMP router saying it only speaks version 0. */
type Answer = { pcp: PcpResponse } | { natPmpOnly: true };

export class PcpClient implements MappingClient {
  readonly protocol = 'pcp' as const;
  private readonly epoch = new EpochTracker(pcpEpochPlausible);
  private readonly udp: RouterUdp;
  private readonly nonce: Buffer;
  /** The external address of our last grant: suggested again when renewing (§11.2). */
  private lastExternalIp = '0.0.0.0';

  constructor(private readonly c: ClientContext) {
    this.udp = new RouterUdp(c, 'PCP');
    this.nonce = Buffer.from(c.nonce());
  }

  get badAnswers(): number {
    return this.udp.bad;
  }

  async map(lifetimeS: number, phase: Phase, signal: AbortSignal): Promise<Outcome<Grant>> {
    const waits = phase === 'renew' ? pcpRetransmitWaits(RENEW_SENDS, this.c.random) : QUICK_WAITS_MS;
    const r = await this.send(this.mapRequest(lifetimeS, this.c.port), PCP_OP_MAP, waits, signal);
    const a = this.answerOf(r);
    if (!a.ok) return a;
    const res = a.value;
    if (res.resultCode !== 0) return this.refusal(res);
    const m = res.map!;
    if (res.lifetimeS === 0 || m.externalPort === 0 || m.externalIp === null) {
      this.udp.bad++;
      return fail('bad-answer', `PCP answered SUCCESS without a usable IPv4 mapping (external ${m.externalIp ?? 'not IPv4'}:${m.externalPort}, lifetime ${res.lifetimeS} s)`);
    }
    const restarted = this.epoch.observe(res.epochS, this.c.clock.monotonic());
    this.lastExternalIp = m.externalIp;
    return ok({ externalIp: m.externalIp, externalPort: m.externalPort, lifetimeS: res.lifetimeS, restarted });
  }

  async check(signal: AbortSignal): Promise<Outcome<MappingHealth>> {
    const r = await this.send(encodePcpAnnounceRequest(this.c.localAddress), PCP_OP_ANNOUNCE, QUICK_WAITS_MS, signal);
    const a = this.answerOf(r);
    if (!a.ok) return a;
    if (a.value.resultCode !== 0) return this.refusal(a.value);
    const epochS = a.value.epochS;
    const lost = this.epoch.observe(epochS, this.c.clock.monotonic());
    return ok({
      lost,
      why: lost ? `the router's PCP epoch is ${epochS} s, which does not follow from its previous answer: it restarted or lost its mappings` : null,
      // ANNOUNCE carries no address; a new one resets the epoch (§8.5), and the new MAP tells it.
      externalIp: null,
    });
  }

  async unmap(externalPort: number, signal: AbortSignal): Promise<Outcome<void>> {
    const r = await this.send(this.mapRequest(0, externalPort), PCP_OP_MAP, QUICK_WAITS_MS, signal);
    const a = this.answerOf(r);
    if (!a.ok) return a;
    return a.value.resultCode === 0 ? ok(undefined) : this.refusal(a.value);
  }

  async probe(signal: AbortSignal): Promise<Outcome<string>> {
    const r = await this.send(encodePcpAnnounceRequest(this.c.localAddress), PCP_OP_ANNOUNCE, QUICK_WAITS_MS, signal);
    const a = this.answerOf(r);
    if (!a.ok) return a;
    if (a.value.resultCode !== 0) return this.refusal(a.value);
    this.epoch.observe(a.value.epochS, this.c.clock.monotonic());
    return ok(`PCP answers: router epoch ${a.value.epochS} s`);
  }

  private mapRequest(lifetimeS: number, suggestedExternalPort: number): Buffer {
    return encodePcpMapRequest({
      clientIp: this.c.localAddress,
      lifetimeS,
      nonce: this.nonce,
      internalPort: this.c.port,
      suggestedExternalPort,
      suggestedExternalIp: this.lastExternalIp,
    });
  }

  private send(req: Buffer, opcode: number, waitsMs: readonly number[], signal: AbortSignal): Promise<ExchangeResult<Answer>> {
    return this.udp.send<Answer>(req, waitsMs, signal, (msg) => {
      if (msg[0] === 0) {
        const n = decodeNatPmpResponse(msg);
        return n && n.resultCode === 1 && n.opcode === opcode ? { natPmpOnly: true } : null;
      }
      const a = decodePcpResponse(msg);
      if (!a || a.opcode !== opcode) return null;
      const m = a.map;
      // A MAP answer must be about our mapping: nonce, protocol, internal port (§11.4).
      if (m && (!m.nonce.equals(this.nonce) || m.protocol !== PCP_PROTO_UDP || m.internalPort !== this.c.port)) return null;
      return { pcp: a };
    });
  }

  private answerOf(r: ExchangeResult<Answer>): Outcome<PcpResponse> {
    if (r.kind === 'answer') {
      if ('pcp' in r.value) return ok(r.value.pcp);
      return fail('absent', 'PCP: the router speaks NAT-PMP only (it answered UNSUPPORTED_VERSION in NAT-PMP form)', { code: 'UNSUPP_VERSION' });
    }
    return this.udp.silence(r);
  }

  private refusal(a: PcpResponse): Outcome<never> {
    const name = pcpResultName(a.resultCode);
    const text = `PCP: the router answered ${name} (${a.resultCode})${PCP_HINT[a.resultCode] ?? ''}`;
    const retryAfterS = a.lifetimeS > 0 ? a.lifetimeS : undefined;
    // Another version, or no MAP support, is "no PCP here" for our purposes.
    const absent = a.resultCode === 1 || a.resultCode === 4;
    return fail(absent ? 'absent' : 'refused', text, { code: name, retryAfterS });
  }
}

const PCP_HINT: Record<number, string> = {
  2: ': PCP is turned off on the router, or it holds this mapping under another nonce (a previous vxedge run) until it expires',
  7: ': the router has no working WAN connection',
  8: ': the router has no room for another mapping',
  10: ': the router allows this host no more mappings',
  11: ': the router cannot give this external port or address',
  12: ': a NAT between this host and the router changed our source address',
};
