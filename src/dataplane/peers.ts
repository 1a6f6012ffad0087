// The peer table as the data plane sees it: flat typed arrays indexed by a peer's slot,
// so that routing a packet, recognising a sender and counting traffic allocate nothing,
// and cost the same with 1 peer or 500:
//   route(dst)      one Map lookup per distinct prefix length in use (usually one: /24),
//                   longest first, so the longest prefix wins;
//   fromAddress(a)  one Map lookup by outer source address;
//   fromMac(b, o)   one Map lookup by the 48-bit MAC read as a number.
//
// The table changes in place, one peer at a time (add, update, remove), so that a node
// joining or leaving the cluster, or a SIGHUP, costs that peer's work and leaves every
// other peer's slot, counters and roamed address alone. A removed peer's slot is reused
// by the next one added; the arrays grow by doubling when full.

import type { PeerConfig } from '../config/types.js';
import { ipToInt } from '../util/ipv4.js';
import { macToBytes } from '../util/mac.js';

export const STAT_RX_PACKETS = 0;
export const STAT_RX_BYTES = 1;
export const STAT_TX_PACKETS = 2;
export const STAT_TX_BYTES = 3;
const STATS_PER_PEER = 4;
const INITIAL_CAPACITY = 8;

/** A 6-byte MAC at buf[off] as one exact number (48 bits fit a double). */
function macKey(buf: Uint8Array, off: number): number {
  const low = ((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0;
  return (buf[off] * 256 + buf[off + 1]) * 4294967296 + low;
}

export class PeerTable {
  /** Peer name by slot; null for a free slot. */
  names: (string | null)[] = [];
  /** The configuration each live slot was made from (for endpoint/reason text). */
  configs: (PeerConfig | null)[] = [];
  net = new Uint32Array(0);
  mask = new Uint32Array(0);
  prefixLen = new Uint8Array(0);
  /** VTEP MACs, 6 bytes per slot. */
  macs = Buffer.alloc(0);
  /** Current outer destination of each peer (roaming may change the address, never the port). */
  addr = new Uint32Array(0);
  port = new Uint16Array(0);
  stats = new Float64Array(0);
  /** Monotonic time (ms, per batch) of the last valid frame from each peer: proof of life. */
  lastRx = new Float64Array(0);

  private readonly bySlotName = new Map<string, number>();
  private readonly byAddr = new Map<number, number>();
  private readonly byMac = new Map<number, number>();
  /** Per prefix length: network -> slot. */
  private readonly byPrefix = new Map<number, Map<number, number>>();
  /** Prefix lengths in use, longest first, with their masks. */
  private lens = new Uint8Array(0);
  private lenMasks = new Uint32Array(0);
  private free: number[] = [];
  private count = 0;

  constructor(peers: readonly PeerConfig[] = []) {
    this.grow(Math.max(INITIAL_CAPACITY, peers.length));
    for (const p of peers) this.add(p);
  }

  /** Live peers. */
  get size(): number {
    return this.count;
  }

  /** Slots in use so far (live or free): iterate 0..capacityUsed and skip null names. */
  get slotCount(): number {
    return this.names.length;
  }

  /** Live slots, in slot order. */
  *slots(): IterableIterator<number> {
    for (let s = 0; s < this.names.length; s++) if (this.names[s] !== null) yield s;
  }

  indexOf(name: string): number {
    return this.bySlotName.get(name) ?? -1;
  }

  /** Adds a peer (its name must be new); returns its slot. Counters start at zero. */
  add(p: PeerConfig): number {
    if (this.bySlotName.has(p.name)) throw new Error(`peer ${p.name} is already in the table`);
    let s = this.free.pop();
    if (s === undefined) {
      s = this.names.length;
      if (s >= this.net.length) this.grow(this.net.length * 2);
      this.names.push(null);
      this.configs.push(null);
    }
    this.stats.fill(0, s * STATS_PER_PEER, (s + 1) * STATS_PER_PEER);
    this.lastRx[s] = 0;
    this.names[s] = p.name;
    this.bySlotName.set(p.name, s);
    this.count++;
    this.fill(s, p, true);
    return s;
  }

  /**
   * Applies a changed configuration of a known peer in place: counters, last life and the
   * slot stay; a roamed address stays unless the configured address itself changed.
   */
  update(p: PeerConfig): number {
    const s = this.indexOf(p.name);
    if (s < 0) return this.add(p);
    const old = this.configs[s]!;
    this.unindex(s);
    this.fill(s, p, old.publicIp !== p.publicIp);
    return s;
  }

  /** Removes a peer; its slot is free for the next add. */
  remove(name: string): void {
    const s = this.indexOf(name);
    if (s < 0) return;
    this.unindex(s);
    this.bySlotName.delete(name);
    this.names[s] = null;
    this.configs[s] = null;
    this.free.push(s);
    this.count--;
  }

  /** Peer whose subnet holds `ip` (longest prefix), or -1. */
  route(ip: number): number {
    const lens = this.lens;
    for (let i = 0; i < lens.length; i++) {
      const s = this.byPrefix.get(lens[i])!.get((ip & this.lenMasks[i]) >>> 0);
      if (s !== undefined) return s;
    }
    return -1;
  }

  /** Peer whose current endpoint address is `addr`, or -1. */
  fromAddress(addr: number): number {
    const s = this.byAddr.get(addr);
    return s === undefined ? -1 : s;
  }

  /** Peer whose VTEP MAC sits at buf[off..off+6), or -1. */
  fromMac(buf: Uint8Array, off: number): number {
    const s = this.byMac.get(macKey(buf, off));
    return s === undefined ? -1 : s;
  }

  inSubnet(p: number, ip: number): boolean {
    return ((ip & this.mask[p]) >>> 0) === this.net[p];
  }

  countRx(p: number, bytes: number): void {
    const s = p * STATS_PER_PEER;
    this.stats[s + STAT_RX_PACKETS]++;
    this.stats[s + STAT_RX_BYTES] += bytes;
  }

  /** `packets` > 1: a TCP super-packet that leaves as that many datagrams. */
  countTx(p: number, bytes: number, packets = 1): void {
    const s = p * STATS_PER_PEER;
    this.stats[s + STAT_TX_PACKETS] += packets;
    this.stats[s + STAT_TX_BYTES] += bytes;
  }

  stat(p: number, which: number): number {
    return this.stats[p * STATS_PER_PEER + which];
  }

  /** Moves a peer's endpoint to a new address (after path validation). */
  setAddress(p: number, addr: number): void {
    if (this.byAddr.get(this.addr[p]) === p) this.byAddr.delete(this.addr[p]);
    this.addr[p] = addr;
    this.byAddr.set(addr, p);
  }

  private fill(s: number, p: PeerConfig, takeAddress: boolean): void {
    this.configs[s] = p;
    this.net[s] = p.subnet.network;
    this.mask[s] = p.subnet.mask;
    this.prefixLen[s] = p.subnet.prefixLen;
    macToBytes(p.vtepMac, this.macs, 6 * s);
    if (takeAddress) this.addr[s] = ipToInt(p.publicIp);
    this.port[s] = p.port;
    this.byAddr.set(this.addr[s], s);
    this.byMac.set(macKey(this.macs, 6 * s), s);
    let m = this.byPrefix.get(p.subnet.prefixLen);
    if (!m) {
      m = new Map();
      this.byPrefix.set(p.subnet.prefixLen, m);
      this.reindexLens();
    }
    m.set(p.subnet.network, s);
  }

  private unindex(s: number): void {
    if (this.byAddr.get(this.addr[s]) === s) this.byAddr.delete(this.addr[s]);
    const mk = macKey(this.macs, 6 * s);
    if (this.byMac.get(mk) === s) this.byMac.delete(mk);
    const m = this.byPrefix.get(this.prefixLen[s]);
    if (m && m.get(this.net[s]) === s) {
      m.delete(this.net[s]);
      if (m.size === 0) {
        this.byPrefix.delete(this.prefixLen[s]);
        this.reindexLens();
      }
    }
  }

  private reindexLens(): void {
    const lens = [...this.byPrefix.keys()].sort((a, b) => b - a);
    this.lens = Uint8Array.from(lens);
    this.lenMasks = Uint32Array.from(lens.map((l) => (l === 0 ? 0 : (0xffffffff << (32 - l)) >>> 0)));
  }

  private grow(capacity: number): void {
    const copy = <T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(a: T, n: number, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.net = copy(this.net, capacity, (n) => new Uint32Array(n));
    this.mask = copy(this.mask, capacity, (n) => new Uint32Array(n));
    this.prefixLen = copy(this.prefixLen, capacity, (n) => new Uint8Array(n));
    this.addr = copy(this.addr, capacity, (n) => new Uint32Array(n));
    this.port = copy(this.port, capacity, (n) => new Uint16Array(n));
    this.lastRx = copy(this.lastRx, capacity, (n) => new Float64Array(n));
    this.stats = copy(this.stats, capacity * STATS_PER_PEER, (n) => new Float64Array(n));
    const macs = Buffer.alloc(6 * capacity);
    this.macs.copy(macs);
    this.macs = macs;
  }
}
