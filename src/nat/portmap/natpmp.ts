// NAT-PMP (RFC 6886): the codec and a MappingClient over UDP to the router's port 5351.
//
//   request  public address (op 0)        request  map UDP (op 1)
//   | vers 0 | op 0 |                      | vers 0 | op 1 | reserved (16)               |
//                                          | internal port | suggested external port    |
//                                          | requested lifetime, seconds (32)           |
//   response (op 128), 12 bytes            response (op 129), 16 bytes
//   | vers 0 | op 128 | result code (16) | | vers 0 | op 129 | result code (16)          |
//   | seconds since start of epoch (32)  | | seconds since start of epoch (32)          |
//   | external IPv4 address              | | internal port | mapped external port       |
//                                          | lifetime, seconds (32)                     |
//
// An error answer may stop after the first 8 bytes (the "Unsupported Version" form of
// §3.5). Every datagram is untrusted: decodeNatPmpResponse() checks the version, the
// response bit, the opcode and the exact length of a success before it reads a field, never
// throws, and returns null for anything else.
//
// The epoch (§3.6) is how a client notices that the router rebooted or lost its mappings:
// from one answer to the next it must grow by at least 7/8 of the time that passed here,
// less 2 s of slack. A smaller value means every mapping has to be made again.
//
// Retransmission (§3.1): 250 ms, doubling, 9 requests (the last wait is 64 s). We use the
// full schedule only to renew a mapping the router gave us; first contact, checks and the
// delete on stop give up after 3 requests (1.75 s), because the router is one hop away
// and `auto` must move on to the next protocol quickly (Tailscale waits only 250 ms).
import { intToIp } from '../../util/ipv4.js';
import { EpochTracker, fail, ok, type ClientContext, type Grant, type MappingClient, type MappingHealth, type Outcome, type Phase } from './client.js';
import { QUICK_WAITS_MS, RESPONSE_BIT, RouterUdp } from './router-udp.js';
import type { ExchangeResult } from './transport.js';

export const NATPMP_VERSION = 0;
export const NATPMP_OP_ADDRESS = 0;
export const NATPMP_OP_MAP_UDP = 1;
export const NATPMP_OP_MAP_TCP = 2;
const HEADER_LEN = 8;
const ADDRESS_RESPONSE_LEN = 12;
const MAP_REQUEST_LEN = 12;
const MAP_RESPONSE_LEN = 16;

/** Result codes (§3.5) by their RFC names. */
export const NATPMP_RESULT: Readonly<Record<number, string>> = {
  0: 'SUCCESS',
  1: 'UNSUPPORTED_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'NETWORK_FAILURE',
  4: 'OUT_OF_RESOURCES',
  5: 'UNSUPPORTED_OPCODE',
};

export function natPmpResultName(code: number): string {
  return NATPMP_RESULT[code] ?? `UNKNOWN_RESULT_${code}`;
}

/** RFC 6886 §3.1 in full, for renewals (everything else: its first three steps, QUICK_WAITS_MS). */
export const NATPMP_RENEW_WAITS_MS: readonly number[] = [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000];

export interface NatPmpResponse {
  /** The request's opcode (0 address, 1 UDP, 2 TCP), without the response bit. */
  opcode: number;
  resultCode: number;
  epochS: number;
  /** Opcode 0, success only. */
  externalIp?: string;
  /** Opcodes 1 and 2, whenever the answer carries them. */
  internalPort?: number;
  externalPort?: number;
  lifetimeS?: number;
}

// --------------------------------------------------------------------- codec

export function encodeNatPmpAddressRequest(): Buffer {
  return Buffer.from([NATPMP_VERSION, NATPMP_OP_ADDRESS]);
}

export interface NatPmpMapRequest {
  internalPort: number;
  /** 0: no preference (and always 0 in a delete, §3.4). */
  suggestedExternalPort: number;
  /** 0 deletes the mapping. */
  lifetimeS: number;
  protocol?: 'udp' | 'tcp';
}

export function encodeNatPmpMapRequest(r: NatPmpMapRequest): Buffer {
  const b = Buffer.alloc(MAP_REQUEST_LEN);
  b[0] = NATPMP_VERSION;
  b[1] = r.protocol === 'tcp' ? NATPMP_OP_MAP_TCP : NATPMP_OP_MAP_UDP;
  b.writeUInt16BE(r.internalPort, 4);
  b.writeUInt16BE(r.suggestedExternalPort, 6);
  b.writeUInt32BE(r.lifetimeS, 8);
  return b;
}

/** Parses one answer from the router. Null when it is not a well-formed NAT-PMP response. Never throws. */
export function decodeNatPmpResponse(buf: Buffer): NatPmpResponse | null {
  if (buf.length < HEADER_LEN || buf[0] !== NATPMP_VERSION || (buf[1] & RESPONSE_BIT) === 0) return null;
  const opcode = buf[1] & 0x7f;
  const full = opcode === NATPMP_OP_ADDRESS ? ADDRESS_RESPONSE_LEN : opcode === NATPMP_OP_MAP_UDP || opcode === NATPMP_OP_MAP_TCP ? MAP_RESPONSE_LEN : -1;
  if (full < 0) return null;
  const resultCode = buf.readUInt16BE(2);
  // A success has exactly its size; an error is the full size or the bare 8-byte header.
  if (resultCode === 0 ? buf.length !== full : buf.length !== full && buf.length !== HEADER_LEN) return null;
  const r: NatPmpResponse = { opcode, resultCode, epochS: buf.readUInt32BE(4) };
  if (buf.length === full) {
    if (opcode === NATPMP_OP_ADDRESS) {
      if (resultCode === 0) r.externalIp = intToIp(buf.readUInt32BE(8));
    } else {
      r.internalPort = buf.readUInt16BE(8);
      r.externalPort = buf.readUInt16BE(10);
      r.lifetimeS = buf.readUInt32BE(12);
    }
  }
  return r;
}

/** §3.6: the new epoch must be at least the old one plus 7/8 of the elapsed time, less 2 s. */
export function natPmpEpochPlausible(prevServerS: number, prevClientMs: number, serverS: number, clientMs: number): boolean {
  const elapsedS = Math.max(0, clientMs - prevClientMs) / 1000;
  return serverS >= prevServerS + (elapsedS * 7) / 8 - 2;
}

// --------------------------------------------------------------------- client

export class NatPmpClient implements MappingClient {
  readonly protocol = 'natpmp' as const;
  private readonly epoch = new EpochTracker(natPmpEpochPlausible);
  private readonly udp: RouterUdp;

  constructor(private readonly c: ClientContext) {
    this.udp = new RouterUdp(c, 'NAT-PMP');
  }

  get badAnswers(): number {
    return this.udp.bad;
  }

  async map(lifetimeS: number, phase: Phase, signal: AbortSignal): Promise<Outcome<Grant>> {
    const req = encodeNatPmpMapRequest({ internalPort: this.c.port, suggestedExternalPort: this.c.port, lifetimeS });
    const r = await this.send(req, NATPMP_OP_MAP_UDP, phase === 'renew' ? NATPMP_RENEW_WAITS_MS : QUICK_WAITS_MS, signal);
    if (r.kind !== 'answer') return this.udp.silence(r);
    const a = r.value;
    if (a.resultCode !== 0) return this.refusal(a);
    if (!a.lifetimeS || !a.externalPort) {
      this.udp.bad++;
      return fail('bad-answer', `NAT-PMP answered SUCCESS without a mapping (external port ${a.externalPort}, lifetime ${a.lifetimeS} s)`);
    }
    const restarted = this.epoch.observe(a.epochS, this.c.clock.monotonic());
    // The mapping answer has no address in it: ask (a failure here leaves it unknown, not the mapping).
    const addr = await this.address(signal);
    return ok({
      externalIp: addr.ok ? addr.value.externalIp : null,
      externalPort: a.externalPort,
      lifetimeS: a.lifetimeS,
      restarted: restarted || (addr.ok && addr.value.lost),
    });
  }

  check(signal: AbortSignal): Promise<Outcome<MappingHealth>> {
    return this.address(signal);
  }

  async unmap(_externalPort: number, signal: AbortSignal): Promise<Outcome<void>> {
    // §3.4: lifetime 0 and suggested external port 0 delete the mapping of our internal port.
    const req = encodeNatPmpMapRequest({ internalPort: this.c.port, suggestedExternalPort: 0, lifetimeS: 0 });
    const r = await this.send(req, NATPMP_OP_MAP_UDP, QUICK_WAITS_MS, signal);
    if (r.kind !== 'answer') return this.udp.silence(r);
    return r.value.resultCode === 0 ? ok(undefined) : this.refusal(r.value);
  }

  async probe(signal: AbortSignal): Promise<Outcome<string>> {
    const r = await this.address(signal);
    if (!r.ok) return r;
    return ok(`NAT-PMP answers: external address ${r.value.externalIp ?? 'unknown'}, router epoch ${this.epoch.last} s`);
  }

  private async address(signal: AbortSignal): Promise<Outcome<MappingHealth>> {
    const r = await this.send(encodeNatPmpAddressRequest(), NATPMP_OP_ADDRESS, QUICK_WAITS_MS, signal);
    if (r.kind !== 'answer') return this.udp.silence(r);
    const a = r.value;
    if (a.resultCode !== 0) return this.refusal(a);
    const restarted = this.epoch.observe(a.epochS, this.c.clock.monotonic());
    return ok({
      lost: restarted,
      why: restarted ? `the router's NAT-PMP epoch is ${a.epochS} s, less than the time since its previous answer allows: it restarted or lost its mappings` : null,
      externalIp: a.externalIp && a.externalIp !== '0.0.0.0' ? a.externalIp : null,
    });
  }

  private send(req: Buffer, opcode: number, waitsMs: readonly number[], signal: AbortSignal): Promise<ExchangeResult<NatPmpResponse>> {
    return this.udp.send(req, waitsMs, signal, (msg) => {
      const a = decodeNatPmpResponse(msg);
      // An answer to another request, or a mapping of another internal port, is not ours.
      if (!a || a.opcode !== opcode) return null;
      if (a.internalPort !== undefined && a.internalPort !== this.c.port) return null;
      return a;
    });
  }

  private refusal(a: NatPmpResponse): Outcome<never> {
    const name = natPmpResultName(a.resultCode);
    const code = `${name} (${a.resultCode})`;
    // Another version answering means no NAT-PMP here as far as we are concerned.
    if (a.resultCode === 1) return fail('absent', `NAT-PMP: the router answered ${code}`, { code: name });
    return fail('refused', `NAT-PMP: the router answered ${code}${NATPMP_HINT[a.resultCode] ?? ''}`, { code: name });
  }
}

const NATPMP_HINT: Record<number, string> = {
  2: ': port mapping is turned off on the router',
  3: ': the router has no working WAN connection (no DHCP lease yet?)',
  4: ': the router has no room for another mapping',
};
