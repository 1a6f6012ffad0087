// Roaming of a peer's endpoint address (AWS may re-map an EIP), with path validation
// as QUIC does it (RFC 9000 §8.2): VXLAN carries no authentication, so a frame from a
// new address that claims a peer's VTEP MAC moves nothing by itself. It triggers an
// echo probe with an unpredictable token to that address; only the answer, from that
// address, moves the endpoint. The port is never adopted: a kernel peer sends from a
// port hashed per flow and listens only on vxlan.port.
//
// An answer proves that the candidate address reaches *a* VTEP that claims the peer's
// MAC and subnet, not that it is the peer: anyone who knows those (they are in the
// cluster's Node annotations) can answer from an address of their own. So, as QUIC
// validates the previously active path on an apparent migration (RFC 9000 §9.3.3), the
// old endpoint is probed too, and a peer that still answers there (or sends anything
// from there) is not moved: a re-mapped EIP falls silent at once, a live peer does not.
import { randomBytes, randomInt } from 'node:crypto';
import { parseEchoReply } from '../proto/icmp.js';
import { intToIp } from '../util/ipv4.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { OutsideHooks } from '../dataplane/outside.js';
import { ProbeSender } from './probe.js';

/** At most one validation per peer per this long, so a flood of forged frames costs one probe. */
const VALIDATION_INTERVAL_MS = 5000;
/** How long a validation probe may take to be answered. */
const VALIDATION_TIMEOUT_MS = 5000;
/**
 * How long the current endpoint has, from the candidate's arrival, to show it is alive
 * before the endpoint moves: an internet round trip with room to spare. A real move waits
 * this much longer; a peer alive at its old address answers the old-path probe within it.
 */
export const OLD_PATH_GRACE_MS = 1000;

interface Validation {
  peer: string;
  addr: number;
  seq: number;
  token: Buffer;
  sentAt: number;
  /** The candidate answered; the move waits for the rest of OLD_PATH_GRACE_MS. */
  timer: Timer | null;
  /** Moved or refused; kept until the next validation so that late answers are still known as ours. */
  decided: boolean;
}

export class Roaming {
  private readonly ident: number;
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
    /** The echo ident of our probes (tests; random otherwise). Another part (the keepalive) may
     *  draw the same one: an answer is ours only with a pending validation's sequence and token. */
    ident = randomInt(1, 0xffff),
  ) {
    this.ident = ident;
    this.probes = new ProbeSender(dp);
  }

  private toVtep: OutsideHooks['onToVtep'];

  /** After Keepalive.start(): the old-path probe's answer comes by its hook (see oldPathReply). */
  start(): void {
    const hooks = this.dp.outside.hooks;
    hooks.onRoamCandidate = (p, addr, _port, buf, ipOff, ipLen) => this.onCandidate(p, addr, buf, ipOff, ipLen);
    const keepalive = hooks.onToVtep;
    this.toVtep = (buf, off, len, p) => this.oldPathReply(buf, off, len, p) || (keepalive?.(buf, off, len, p) ?? false);
    hooks.onToVtep = this.toVtep;
  }

  stop(): void {
    const hooks = this.dp.outside.hooks;
    hooks.onRoamCandidate = undefined;
    if (hooks.onToVtep === this.toVtep) hooks.onToVtep = undefined;
    for (const v of this.pending.values()) v.timer?.cancel();
    this.pending.clear();
  }

  /**
   * Follows the data plane's peer table: forgets peers that left it (their pending validation
   * and its timer, when they last started one), so that these maps hold at most the table's peers.
   */
  syncPeers(): void {
    const t = this.dp.peers;
    for (const [name, v] of this.pending) {
      if (t.indexOf(name) >= 0) continue;
      v.timer?.cancel();
      this.pending.delete(name);
    }
    for (const name of this.lastStarted.keys()) if (t.indexOf(name) < 0) this.lastStarted.delete(name);
  }

  /** Peers roaming holds state for (at most the table's peers after syncPeers). */
  get trackedPeers(): number {
    return new Set([...this.pending.keys(), ...this.lastStarted.keys()]).size;
  }

  /** A validated-looking frame for peer `p` from an address that is not its endpoint. */
  private onCandidate(p: number, addr: number, buf: Buffer, ipOff: number, ipLen: number): boolean {
    const name = this.dp.peers.names[p];
    if (name === null) return false;
    const v = this.pending.get(name);
    const now = this.clock.monotonic();
    if (v && v.addr === addr && parseEchoReply(buf, ipOff, ipLen, this.reply) && this.reply.ident === this.ident) {
      if (this.answers(v, buf) && now - v.sentAt <= VALIDATION_TIMEOUT_MS) {
        if (v.timer === null && !v.decided) {
          const wait = v.sentAt + OLD_PATH_GRACE_MS - now;
          if (wait <= 0) this.decide(v);
          else v.timer = this.clock.after(wait, () => this.decide(v));
        }
        return true;
      }
      return false;
    }
    const last = this.lastStarted.get(name);
    if (last === undefined || now - last >= VALIDATION_INTERVAL_MS) {
      this.lastStarted.set(name, now);
      this.pending.get(name)?.timer?.cancel();
      this.seq = (this.seq + 1) & 0xffff;
      const token = randomBytes(8);
      if (this.probes.send(p, this.ident, this.seq, token, addr)) {
        // The old path's probe: the same echo at the current endpoint. Its answer, like any
        // frame from there, sets the peer's lastRx, which is all decide() looks at.
        this.probes.send(p, this.ident, this.seq, token);
        this.pending.set(name, { peer: name, addr, seq: this.seq, token, sentAt: now, timer: null, decided: false });
        this.log.info('frames for a peer from a new address: validating the path', { peer: name, candidate: intToIp(addr) });
      }
    }
    return false;
  }

  /** The candidate answered and the grace is over: move, unless the peer was heard at its endpoint since the probes. */
  private decide(v: Validation): void {
    if (this.pending.get(v.peer) !== v || v.decided) return;
    v.decided = true;
    const p = this.dp.peers.indexOf(v.peer);
    if (p < 0) {
      this.pending.delete(v.peer);
      return;
    }
    const from = intToIp(this.dp.peers.addr[p]);
    if (this.dp.peers.lastRx[p] >= v.sentAt) {
      this.log.warn('frames for a peer from a new address, but it still answers at its endpoint: not moved', {
        peer: v.peer,
        endpoint: from,
        candidate: intToIp(v.addr),
        hint: 'a second sender claims this peer (its VTEP MAC and subnet), or the peer sends from two addresses',
      });
      return;
    }
    this.dp.peers.setAddress(p, v.addr);
    this.log.warn('peer endpoint moved after path validation', { peer: v.peer, from, to: intToIp(v.addr) });
    this.onMoved(v.peer, from, intToIp(v.addr));
  }

  /**
   * Consumes the old endpoint's answers to our probes (addressed to our VTEP, like a keepalive's),
   * late ones too: they are ours, not the site's. Only with the sequence number and token of
   * that peer's latest validation: the keepalive may have drawn the same ident, and its
   * answers must reach it (taken by ident alone, they all were in 1 of 65 535 starts, and
   * every peer stayed down).
   */
  private oldPathReply(buf: Buffer, off: number, len: number, slot: number): boolean {
    const name = this.dp.peers.names[slot];
    const v = name === null || name === undefined ? undefined : this.pending.get(name);
    return v !== undefined && parseEchoReply(buf, off, len, this.reply) && this.reply.ident === this.ident && this.answers(v, buf);
  }

  /** The echo answer just parsed from buf (this.reply) carries v's sequence number and token. */
  private answers(v: Validation, buf: Buffer): boolean {
    const { seq, tokenOff } = this.reply;
    return seq === v.seq && buf.compare(v.token, 0, 8, tokenOff, tokenOff + 8) === 0;
  }
}
