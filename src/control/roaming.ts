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
// And when two new addresses answer for one peer within VALIDATION_TIMEOUT_MS, nothing
// says which is the peer: it moves to neither.
//
// A flood of forged frames must stay cheap without keeping a real move from being
// validated (with one validation per peer per 5 s, a forger that sent from an address of
// its own first after every 5 s took each one, and the peer's real new address waited
// for ever). The bounds, and why:
//   - per peer, at most VALIDATIONS_PER_INTERVAL (4) validations start in any
//     VALIDATION_INTERVAL_MS (5 s), each one probe to the candidate and one to the old
//     endpoint, and at most one resend of the candidate's (below): 12 probes per 5 s. A
//     validation lasts at most VALIDATION_TIMEOUT_MS (also 5 s), so at most 4 are in flight
//     at once, for different addresses: a forger can no longer shut out the next address by
//     holding one slot.
//   - all peers together, at most VALIDATIONS_PER_SECOND (20) start per second: 60 probes
//     (~5.6 KB with their headers) a second however many peers a flood names.
//   - an address whose validation failed (no answer in time, the peer still heard at its
//     endpoint, a second address answering too) gets no probe for REFUSED_MS (30 s); each
//     peer remembers REFUSED_PER_PEER (16) such addresses, the oldest forgotten first. An
//     address gets at most two probes (66 bytes each) per REFUSED_MS + VALIDATION_TIMEOUT_MS,
//     the first after a frame from it (42 bytes at least), the second after another: below
//     QUIC's anti-amplification limit of three times what came from the address (RFC 9000
//     §8.1).
// A candidate probe that got no answer within PROBE_RESEND_MS (1 s) is sent once more, same
// sequence number and token (RFC 9000 §8.2.1 allows several PATH_CHALLENGEs against loss),
// only while the validation can still succeed (the peer not heard at its endpoint since)
// and the candidate has sent another frame since the first probe: a lost probe of a real
// move then costs ~1 s instead of REFUSED_MS, while a flood against a live peer, or from
// addresses that send one frame each (spoofed), costs no more than without resends.
// A forger flooding from n addresses of its own that do not answer takes the 4 starts of
// each 5 s until all n are refused; the first stay refused until the last are (16 of them
// take ⌊16/4⌋ × 5 s = 20 s < 30 s). So the peer's new address starts its validation at most
// ⌊n/4⌋ × 5 s after its first frame (n ≤ 16: 20 s), at once for n ≤ 3, and moves
// OLD_PATH_GRACE_MS later. A forger with more addresses (or spoofed ones, which cost it
// nothing) can hold the peer's starts longer: no frame tells a forged sender from the peer
// before a probe is answered, and remembering every address would be memory a flood fills.
// What it cannot do is make vxedge send more than the bounds above, or hold more than 4
// validations and 16 addresses per peer (forgotten when the peer leaves: syncPeers).
import { randomBytes, randomInt } from 'node:crypto';
import type { PeerConfig } from '../config/types.js';
import { parseEchoReply } from '../proto/icmp.js';
import { intToIp } from '../util/ipv4.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { OutsideHooks } from '../dataplane/outside.js';
import { ProbeSender } from './probe.js';
import { RateWindow } from '../util/rate-window.js';

/** Validations of one peer that may start within VALIDATION_INTERVAL_MS (see the header for the bounds). */
export const VALIDATIONS_PER_INTERVAL = 4;
export const VALIDATION_INTERVAL_MS = 5000;
/**
 * How long a validation probe may take to be answered (RFC 9000 §8.2.4 abandons after three
 * probe timeouts, ~3 s for a new path). Not longer than VALIDATION_INTERVAL_MS: that keeps
 * at most VALIDATIONS_PER_INTERVAL of a peer in flight.
 */
const VALIDATION_TIMEOUT_MS = 5000;
/** Validations that may start within a second, all peers together. */
export const VALIDATIONS_PER_SECOND = 20;
/**
 * How long an address whose validation failed gets no new one. At least the time a forger's
 * REFUSED_PER_PEER addresses take to be refused at VALIDATIONS_PER_INTERVAL a round (20 s),
 * so that none of them is free again before the last is refused. A real new address whose
 * probe was lost is not refused for that: the probe is resent (PROBE_RESEND_MS); only when
 * both, or their answers, are lost does its move wait REFUSED_MS.
 */
export const REFUSED_MS = 30_000;
/** Addresses whose validation failed that each peer remembers. */
export const REFUSED_PER_PEER = 16;
/**
 * Each kind of roaming line (a validation starting, a candidate refused) is logged at most
 * once per peer in this long: how often validations start is the flood's to choose (up to
 * VALIDATIONS_PER_INTERVAL per 5 s per peer), how much is logged is not. The next line says
 * how many were left out. A move is always logged.
 */
export const ROAM_LOG_EVERY_MS = 60_000;
/**
 * How long the current endpoint has, from the candidate's arrival, to show it is alive
 * before the endpoint moves: an internet round trip with room to spare. A real move waits
 * this much longer; a peer alive at its old address answers the old-path probe within it.
 */
export const OLD_PATH_GRACE_MS = 1000;
/**
 * When an unanswered candidate probe is sent once more (see the header): a new path's first
 * probe timeout in QUIC (RFC 9002 §6.2.2, three times the initial 333 ms RTT); an internet
 * round trip with room to spare. Well before VALIDATION_TIMEOUT_MS, so the resend's answer
 * still counts.
 */
export const PROBE_RESEND_MS = 1000;

interface Validation {
  peer: PeerRoaming;
  addr: number;
  seq: number;
  token: Buffer;
  sentAt: number;
  /** When the candidate answered (monotonic ms); -1: not yet. */
  answeredAt: number;
  /** Unanswered: the candidate probe's resend (PROBE_RESEND_MS); answered: the move waits for
   *  the rest of OLD_PATH_GRACE_MS. */
  timer: Timer | null;
  /** Another frame came from the candidate after the probe: it may have one more (see the header). */
  heardAgain: boolean;
  /** Moved to, refused or timed out. */
  decided: boolean;
}

/** What roaming knows of one peer; made at its first candidate frame. */
interface PeerRoaming {
  name: string;
  /** The table's configuration of the peer when this was made: a changed peer starts afresh. */
  config: PeerConfig;
  starts: RateWindow;
  /**
   * The peer's last VALIDATIONS_PER_INTERVAL validations, oldest first: those in flight, and
   * decided ones, kept so that late answers are still known as ours (not the site's). The
   * oldest is replaced only after VALIDATION_INTERVAL_MS, so never while in flight.
   */
  recent: Validation[];
  /** Addresses whose validation failed -> monotonic ms until which they get none; oldest first. */
  refused: Map<number, number>;
  /** Per kind of line: until when it is not logged again, and how many were left out since. */
  quiet: Record<LineKind, { until: number; left: number }>;
}

type LineKind = 'validating' | 'refused';

export class Roaming {
  private readonly ident: number;
  private readonly probes: ProbeSender;
  private readonly peers = new Map<string, PeerRoaming>(); // by peer name
  private readonly starts = new RateWindow(VALIDATIONS_PER_SECOND, 1000);
  private readonly reply = { ident: 0, seq: 0, tokenOff: 0 };
  private seq = randomInt(0, 0xffff);
  /** Called after an endpoint moved. */
  onMoved: (peer: string, from: string, to: string) => void = () => undefined;

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
    private readonly clock: Clock,
    /** The echo ident of our probes (tests; random otherwise). Another part (the keepalive) may
     *  draw the same one: an answer is ours only with a validation's sequence and token. */
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
    for (const r of this.peers.values()) this.drop(r);
    this.peers.clear();
  }

  /** Follows the data plane's peer table: forgets peers that left it or whose configuration changed. */
  syncPeers(): void {
    const t = this.dp.peers;
    for (const [name, r] of this.peers) {
      const s = t.indexOf(name);
      if (s < 0 || t.configs[s] !== r.config) {
        this.drop(r);
        this.peers.delete(name);
      }
    }
  }

  /** Peers roaming holds state for (at most the table's peers after syncPeers). */
  get trackedPeers(): number {
    return this.peers.size;
  }

  /** A validated-looking frame for peer `p` from an address that is not its endpoint. */
  private onCandidate(p: number, addr: number, buf: Buffer, ipOff: number, ipLen: number): boolean {
    const name = this.dp.peers.names[p];
    if (name === null) return false;
    const now = this.clock.monotonic();
    const r = this.stateOf(p, name);
    this.expire(r, now);
    if (parseEchoReply(buf, ipOff, ipLen, this.reply) && this.reply.ident === this.ident) {
      const v = this.answered(r, buf);
      if (v) {
        // Ours, consumed; it counts only from the address it was sent to.
        if (v.addr === addr) this.onAnswer(v, now);
        return true;
      }
    }
    const v = this.inFlight(r, addr);
    if (v) v.heardAgain = true;
    else if (this.mayStart(r, addr, now)) this.startValidation(p, r, addr, now);
    return false;
  }

  /** The peer's roaming state, fresh when the table's configuration of it is not the one it was made under. */
  private stateOf(p: number, name: string): PeerRoaming {
    const config = this.dp.peers.configs[p]!;
    let r = this.peers.get(name);
    if (r?.config === config) return r;
    if (r) this.drop(r);
    r = {
      name, config, starts: new RateWindow(VALIDATIONS_PER_INTERVAL, VALIDATION_INTERVAL_MS), recent: [], refused: new Map(),
      quiet: { validating: { until: -Infinity, left: 0 }, refused: { until: -Infinity, left: 0 } },
    };
    this.peers.set(name, r);
    return r;
  }

  /**
   * Validations left unanswered for VALIDATION_TIMEOUT_MS fail: their addresses are refused.
   * Run before a start, so the validation a start replaces in `recent` (VALIDATION_INTERVAL_MS
   * old) is always decided, its address refused rather than free again.
   */
  private expire(r: PeerRoaming, now: number): void {
    for (const v of r.recent) {
      if (!v.decided && v.answeredAt < 0 && now - v.sentAt >= VALIDATION_TIMEOUT_MS) {
        v.decided = true;
        v.timer?.cancel();
        v.timer = null;
        this.refuse(r, v.addr, now);
      }
    }
  }

  /** The validation of `addr` still in flight, if any. */
  private inFlight(r: PeerRoaming, addr: number): Validation | undefined {
    for (const v of r.recent) if (v.addr === addr && !v.decided) return v;
    return undefined;
  }

  /**
   * Whether a frame from `addr`, which has no validation in flight, may start one: not while
   * the address is refused, and only within the peer's and the overall rate. First come,
   * first served among the rest: nothing tells the peer's frames from a forger's, but the
   * forger's addresses, once refused, leave the starts to the others.
   */
  private mayStart(r: PeerRoaming, addr: number, now: number): boolean {
    const until = r.refused.get(addr);
    if (until !== undefined) {
      if (now < until) return false;
      r.refused.delete(addr);
    }
    return r.starts.allows(now) && this.starts.allows(now);
  }

  private startValidation(p: number, r: PeerRoaming, addr: number, now: number): void {
    r.starts.take(now);
    this.starts.take(now);
    this.seq = (this.seq + 1) & 0xffff;
    const token = randomBytes(8);
    if (!this.probes.send(p, this.ident, this.seq, token, addr)) return;
    // The old path's probe: the same echo at the current endpoint. Its answer, like any
    // frame from there, sets the peer's lastRx, which is what decide() looks at first.
    this.probes.send(p, this.ident, this.seq, token);
    if (r.recent.length === VALIDATIONS_PER_INTERVAL) r.recent.shift()!.timer?.cancel();
    const v: Validation = { peer: r, addr, seq: this.seq, token, sentAt: now, answeredAt: -1, timer: null, heardAgain: false, decided: false };
    v.timer = this.clock.after(PROBE_RESEND_MS, () => this.resend(v));
    r.recent.push(v);
    this.say(r, 'validating', now, 'info', 'frames for a peer from a new address: validating the path', { peer: r.name, candidate: intToIp(addr) });
  }

  /**
   * The candidate's probe is unanswered after PROBE_RESEND_MS: sent once more (it or its
   * answer may have been lost), if the validation can still move the peer (not heard at its
   * endpoint since the probes) and the candidate sent another frame since (see the header).
   */
  private resend(v: Validation): void {
    v.timer = null;
    const r = v.peer;
    if (this.peers.get(r.name) !== r || v.decided || v.answeredAt >= 0 || !v.heardAgain) return;
    const p = this.dp.peers.indexOf(r.name);
    if (p < 0 || this.dp.peers.lastRx[p] >= v.sentAt) return;
    this.probes.send(p, this.ident, v.seq, v.token, v.addr);
  }

  /** The candidate answered its probe: decide once the old endpoint had OLD_PATH_GRACE_MS to show it is alive. */
  private onAnswer(v: Validation, now: number): void {
    if (v.decided || v.answeredAt >= 0 || now - v.sentAt >= VALIDATION_TIMEOUT_MS) return;
    v.timer?.cancel(); // the resend, not needed any more
    v.answeredAt = now;
    const wait = v.sentAt + OLD_PATH_GRACE_MS - now;
    if (wait <= 0) this.decide(v);
    else v.timer = this.clock.after(wait, () => this.decide(v));
  }

  /**
   * The candidate answered and the grace is over: move, unless the peer was heard at its
   * endpoint since the probes, or another new address answered for it too.
   */
  private decide(v: Validation): void {
    const r = v.peer;
    if (this.peers.get(r.name) !== r || v.decided) return;
    v.decided = true;
    v.timer = null;
    const p = this.dp.peers.indexOf(r.name);
    if (p < 0) return;
    const now = this.clock.monotonic();
    const from = intToIp(this.dp.peers.addr[p]);
    if (this.dp.peers.lastRx[p] >= v.sentAt) {
      this.refuse(r, v.addr, now);
      this.say(r, 'refused', now, 'warn', 'frames for a peer from a new address, but it still answers at its endpoint: not moved', {
        peer: r.name,
        endpoint: from,
        candidate: intToIp(v.addr),
        hint: 'a second sender claims this peer (its VTEP MAC and subnet), or the peer sends from two addresses',
      });
      return;
    }
    const rival = r.recent.find((w) => w.addr !== v.addr && w.answeredAt >= 0 && now - w.answeredAt <= VALIDATION_TIMEOUT_MS);
    if (rival) {
      // Either may be the peer; moving to the first to answer would hand the peer to
      // whoever answers fastest. The rival, when its grace is over, finds this one.
      this.refuse(r, v.addr, now);
      this.say(r, 'refused', now, 'warn', 'frames for a peer from two new addresses, and both answer for it: not moved', {
        peer: r.name,
        endpoint: from,
        candidates: [intToIp(rival.addr), intToIp(v.addr)],
        hint: 'a second sender claims this peer (its VTEP MAC and subnet), or the peer sends from two addresses; set its address in the configuration if it moved',
      });
      return;
    }
    // Validations of other addresses still in flight go on (RFC 9000 §9.3 would let them be
    // abandoned): each ends refused (unanswered; or answered, and then the peer is heard at
    // its new endpoint or this answer is its rival), so a forger's address is not tried again
    // at once against the new endpoint.
    this.dp.peers.setAddress(p, v.addr);
    this.log.warn('peer endpoint moved after path validation', { peer: r.name, from, to: intToIp(v.addr) });
    this.onMoved(r.name, from, intToIp(v.addr));
  }

  /** Logs a line of kind `kind` for peer r unless one was logged within ROAM_LOG_EVERY_MS; then
   *  it is counted, and the next one says how many were left out (`notLogged`). */
  private say(r: PeerRoaming, kind: LineKind, now: number, level: 'info' | 'warn', msg: string, fields: Record<string, unknown>): void {
    const q = r.quiet[kind];
    if (now < q.until) {
      q.left++;
      return;
    }
    this.log[level](msg, q.left > 0 ? { ...fields, notLogged: q.left } : fields);
    q.until = now + ROAM_LOG_EVERY_MS;
    q.left = 0;
  }

  private refuse(r: PeerRoaming, addr: number, now: number): void {
    r.refused.delete(addr); // re-inserted as the newest
    r.refused.set(addr, now + REFUSED_MS);
    if (r.refused.size > REFUSED_PER_PEER) r.refused.delete(r.refused.keys().next().value!);
  }

  private drop(r: PeerRoaming): void {
    for (const v of r.recent) v.timer?.cancel();
  }

  /**
   * Consumes the old endpoint's answers to our probes (addressed to our VTEP, like a keepalive's),
   * late ones too: they are ours, not the site's. Only with the sequence number and token of
   * one of that peer's recent validations: the keepalive may have drawn the same ident, and its
   * answers must reach it (taken by ident alone, they all were in 1 of 65 535 starts, and
   * every peer stayed down).
   */
  private oldPathReply(buf: Buffer, off: number, len: number, slot: number): boolean {
    const name = this.dp.peers.names[slot];
    const r = name === null || name === undefined ? undefined : this.peers.get(name);
    return r !== undefined && parseEchoReply(buf, off, len, this.reply) && this.reply.ident === this.ident && this.answered(r, buf) !== undefined;
  }

  /** The validation of r whose sequence number and token the echo answer just parsed from buf (this.reply) carries. */
  private answered(r: PeerRoaming, buf: Buffer): Validation | undefined {
    const { seq, tokenOff } = this.reply;
    return r.recent.find((v) => v.seq === seq && buf.compare(v.token, 0, 8, tokenOff, tokenOff + 8) === 0);
  }
}
