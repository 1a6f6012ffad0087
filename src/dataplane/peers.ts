// The peer table as the data plane sees it: flat typed arrays indexed by a peer's slot,
// so that routing a packet, recognising a sender and counting traffic allocate nothing,
// and cost the same with 1 peer or 500 (each lookup is a SlotIndex, a hash in typed
// arrays; a Map would box keys above 2^31, i.e. half of all addresses, once per packet):
//   route(dst)      one lookup of (network, prefix length) per distinct prefix length in
//                   use (usually one: /24), longest first, so the longest prefix wins;
//   fromAddress(a)  one lookup by outer source address;
//   fromMac(b, o)   one lookup by the 48-bit MAC.
//
// The table changes in place, one peer at a time (add, update, remove), so that a node
// joining or leaving the cluster, or a SIGHUP, costs that peer's work and leaves every
// other peer's slot, counters and roamed address alone. A removed peer's slot is reused
// by the next one added; the arrays grow by doubling when full.

import type { PeerConfig } from '../config/types.js';
import { ipToInt } from '../util/ipv4.js';
import { macToBytes } from '../util/mac.js';
import { SlotIndex } from './slot-index.js';

export const STAT_RX_PACKETS = 0;
export const STAT_RX_BYTES = 1;
export const STAT_TX_PACKETS = 2;
export const STAT_TX_BYTES = 3;
const STATS_PER_PEER = 4;
const INITIAL_CAPACITY = 8;

/** A 6-byte MAC at buf[off] as a SlotIndex key: its last four bytes, and its first two. */
function macLow(buf: Uint8Array, off: number): number {
  return (buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5];
}
function macHigh(buf: Uint8Array, off: number): number {
  return (buf[off] << 8) | buf[off + 1];
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
  private readonly byAddr = new SlotIndex();
  private readonly byMac = new SlotIndex();
  /** (network, prefix length) -> slot. */
  private readonly bySubnet = new SlotIndex();
  /** Entries of bySubnet per prefix length (0..32). */
  private readonly perLen = new Int32Array(33);
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
      const s = this.bySubnet.get(ip & this.lenMasks[i], lens[i]);
      if (s >= 0) return s;
    }
    return -1;
  }

  /** Peer whose current endpoint address is `addr`, or -1. */
  fromAddress(addr: number): number {
    return this.byAddr.get(addr, 0);
  }

  /** Peer whose VTEP MAC sits at buf[off..off+6), or -1. */
  fromMac(buf: Uint8Array, off: number): number {
    return this.byMac.get(macLow(buf, off), macHigh(buf, off));
  }

  inSubnet(p: number, ip: number): boolean {
    return ((ip & this.mask[p]) >>> 0) === this.net[p];
  }

  countRx(p: number, bytes: number): void {
    const s = p * STATS_PER_PEER;
    this.stats[s + STAT_RX_PACKETS]++;
    this.stats[s + STAT_RX_BYTES] += bytes;
  }

  /** `packets` > 1: a TCP super-packet that leaves as that many datagrams; negative: taken
   *  back, the send was refused (InsidePath.uncountRefused). */
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
    this.unindexAddress(p);
    this.addr[p] = addr;
    this.byAddr.set(addr, 0, p);
  }

  /**
   * Takes slot s's address out of the index. Two peers may share an address (behind one
   * NAT, a port forwarded to each); the index names one of them, so when that one goes
   * another live peer with the address takes the entry over (else its frames would find
   * no peer by address).
   */
  private unindexAddress(s: number): void {
    const a = this.addr[s];
    if (!this.byAddr.deleteIf(a, 0, s)) return;
    for (let t = 0; t < this.names.length; t++) {
      if (t !== s && this.names[t] !== null && this.addr[t] === a) {
        this.byAddr.set(a, 0, t);
        return;
      }
    }
  }

  private fill(s: number, p: PeerConfig, takeAddress: boolean): void {
    this.configs[s] = p;
    this.net[s] = p.subnet.network;
    this.mask[s] = p.subnet.mask;
    this.prefixLen[s] = p.subnet.prefixLen;
    macToBytes(p.vtepMac, this.macs, 6 * s);
    if (takeAddress) this.addr[s] = ipToInt(p.publicIp);
    this.port[s] = p.port;
    this.byAddr.set(this.addr[s], 0, s);
    this.byMac.set(macLow(this.macs, 6 * s), macHigh(this.macs, 6 * s), s);
    const len = p.subnet.prefixLen;
    if (this.bySubnet.set(p.subnet.network, len, s) && this.perLen[len]++ === 0) this.reindexLens();
  }

  private unindex(s: number): void {
    this.unindexAddress(s);
    this.byMac.deleteIf(macLow(this.macs, 6 * s), macHigh(this.macs, 6 * s), s);
    const len = this.prefixLen[s];
    if (this.bySubnet.deleteIf(this.net[s], len, s) && --this.perLen[len] === 0) this.reindexLens();
  }

  private reindexLens(): void {
    const lens: number[] = [];
    for (let l = 32; l >= 0; l--) if (this.perLen[l] > 0) lens.push(l);
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
