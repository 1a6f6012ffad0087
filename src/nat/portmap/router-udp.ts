// What PCP (pcp.ts) and NAT-PMP (natpmp.ts) share on the wire. Both talk to the router's UDP
// port 5351: PCP is NAT-PMP's successor and took over its port, and the first byte of every
// message, the version (0 NAT-PMP, 2 PCP), tells them apart. Both mark an answer with the
// high bit of the opcode byte, and both give up on first contact, checks and deletes after 3
// requests in 1.75 s (RFC 6886 §3.1's first steps): the router is one hop away, and `auto`
// must move on to the next protocol quickly.
//
// RouterUdp is one client's line to that port: it sends a request on a schedule (transport.ts
// exchange), counts the datagrams that were not an answer to it (a client's badAnswers), and
// says in the protocol's name why nothing came back.
import { fail, type ClientContext, type Outcome } from './client.js';
import { describeSilence, exchange, type ExchangeResult, type UdpPeer } from './transport.js';

/** The router's port for PCP and NAT-PMP. */
export const ROUTER_UDP_PORT = 5351;
/** Set in the opcode byte of every answer (PCP's R bit; NAT-PMP answers with opcode 128 + the request's). */
export const RESPONSE_BIT = 0x80;
/** First contact, checks and deletes: 250 ms, doubling, 3 requests. */
export const QUICK_WAITS_MS: readonly number[] = [250, 500, 1000];

/** An exchange that ended without an answer. */
export type Silence = Exclude<ExchangeResult<unknown>, { kind: 'answer' }>;

export class RouterUdp {
  readonly server: UdpPeer;
  /** Datagrams ignored or unusable since this line was made. */
  bad = 0;

  /** `label` names the protocol in messages ("PCP", "NAT-PMP"). */
  constructor(
    private readonly c: ClientContext,
    private readonly label: string,
  ) {
    this.server = { address: c.gateway, port: ROUTER_UDP_PORT };
  }

  /** Sends `request` on the schedule until `accept` takes an answer (null: not ours, counted). Never rejects. */
  send<T>(request: Buffer, waitsMs: readonly number[], signal: AbortSignal, accept: (msg: Buffer) => T | null): Promise<ExchangeResult<T>> {
    const c = this.c;
    return exchange<T>({ udp: c.udp, clock: c.clock, localAddress: c.localAddress, server: this.server, request, waitsMs, signal, accept }).then((r) => {
      this.bad += r.ignored;
      return r;
    });
  }

  /** Why no answer came: our side (aborted, no socket) is 'local'; silence or an ICMP error is 'absent'. */
  silence(r: Silence): Outcome<never> {
    const kind = r.kind === 'aborted' || r.kind === 'error' ? 'local' : 'absent';
    return fail(kind, `${this.label}: ${describeSilence(r, this.server)}`);
  }
}
