// Roaming of a peer's endpoint address (AWS may re-map an EIP), with path validation
// as QUIC does it (RFC 9000 §8.2): VXLAN carries no authentication, so a frame from a
// new address that claims a peer's VTEP MAC moves nothing by itself. It triggers an
// echo probe with an unpredictable token to that address; only the answer, from that
// address, moves the endpoint. The port is never adopted: a kernel peer sends from a
// port hashed per flow and listens only on vxlan.port.
import { randomBytes, randomInt } from 'node:crypto';
import { parseEchoReply } from '../proto/icmp.js';
import { intToIp } from '../util/ipv4.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { ProbeSender } from './probe.js';

/** At most one validation per peer per this long, so a flood of forged frames costs one probe. */
const VALIDATION_INTERVAL_MS = 5000;
/** How long a validation probe may take to be answered. */
const VALIDATION_TIMEOUT_MS = 5000;

interface Validation {
  peer: string;
  addr: number;
  seq: number;
  token: Buffer;
  sentAt: number;
}

export class Roaming {
  private readonly ident = randomInt(1, 0xffff);
  private readonly probes: ProbeSender;
  private readonly pending = new Map<string, Validation>(); // by peer name
  private readonly lastStarted = new Map<string, number>();
  private readonly reply = { ident: 0, seq: 0, tokenOff: 0 };
  private seq = randomInt(0, 0xffff);
  /** Called after an endpoint moved. */
  onMoved: (peer: string, from: string, to: string) => void = () => undefined;

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    this.probes = new ProbeSender(dp);
  }

  start(): void {
    this.dp.outside.hooks.onRoamCandidate = (p, addr, _port, buf, ipOff, ipLen) => this.onCandidate(p, addr, buf, ipOff, ipLen);
  }

  stop(): void {
    this.dp.outside.hooks.onRoamCandidate = undefined;
  }

  /** A validated-looking frame for peer `p` from an address that is not its endpoint. */
  private onCandidate(p: number, addr: number, buf: Buffer, ipOff: number, ipLen: number): boolean {
    const name = this.dp.peers.names[p];
    if (name === null) return false;
    const v = this.pending.get(name);
    const now = this.clock.monotonic();
    if (v && v.addr === addr && parseEchoReply(buf, ipOff, ipLen, this.reply) && this.reply.ident === this.ident) {
      if (this.reply.seq === v.seq && buf.compare(v.token, 0, 8, this.reply.tokenOff, this.reply.tokenOff + 8) === 0 && now - v.sentAt <= VALIDATION_TIMEOUT_MS) {
        const from = intToIp(this.dp.peers.addr[p]);
        this.dp.peers.setAddress(p, addr);
        this.pending.delete(name);
        this.log.warn('peer endpoint moved after path validation', { peer: name, from, to: intToIp(addr) });
        this.onMoved(name, from, intToIp(addr));
        return true;
      }
      return false;
    }
    const last = this.lastStarted.get(name);
    if (last === undefined || now - last >= VALIDATION_INTERVAL_MS) {
      this.lastStarted.set(name, now);
      this.seq = (this.seq + 1) & 0xffff;
      const token = randomBytes(8);
      if (this.probes.send(p, this.ident, this.seq, token, addr)) {
        this.pending.set(name, { peer: name, addr, seq: this.seq, token, sentAt: now });
        this.log.info('frames for a peer from a new address: validating the path', { peer: name, candidate: intToIp(addr) });
      }
    }
    return false;
  }
}
