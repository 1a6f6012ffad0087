// The tokens of a peer's keepalive probes that may still be answered, kept as numbers.
//
// Every probe carries 8 unpredictable bytes that its answer must carry back (an off-path
// sender cannot make a peer look alive). They used to be one `randomBytes(8)` Buffer per
// probe, held in a Map until the probe left the loss window: with 500 peers that was ~10 000
// Buffers, each with its own ArrayBuffer and backing store (1–1.5 MB of the live heap, see
// docs/memory.md), and 250 new ones a second at a 2 s interval. Here a peer's tokens are one
// small typed array, filled from one shared pool of random words.
import { randomFillSync } from 'node:crypto';
import { WINDOW } from './keepalive-machine.js';

/** An entry's first word: the sequence number with this bit set; 0 = empty. */
const USED = 0x10000;
/** Words per entry: seq | USED, the token's first and last 4 bytes (big-endian). */
const W = 3;

/**
 * What the keepalive machine can still count (keepalive-machine.ts): the last WINDOW small
 * probes, in the order sent, and the one full-size probe it keeps. An entry is taken by its
 * answer, so a replayed answer counts once.
 */
export class ProbeTokens {
  private readonly words = new Uint32Array((WINDOW + 1) * W);
  /** The small-probe entry the next small probe overwrites (the oldest). */
  private nextSmall = 0;

  /** Remembers probe `seq`'s token; `big`: it is the full-size probe the machine now keeps. */
  add(seq: number, big: boolean, hi: number, lo: number): void {
    const i = big ? WINDOW * W : this.nextSmall * W;
    if (!big) this.nextSmall = (this.nextSmall + 1) % WINDOW;
    this.words[i] = (seq & 0xffff) | USED;
    this.words[i + 1] = hi;
    this.words[i + 2] = lo;
  }

  /** True, once, if probe `seq` is remembered and `buf` carries its token at `off`. */
  take(seq: number, buf: Buffer, off: number): boolean {
    const key = (seq & 0xffff) | USED;
    const w = this.words;
    for (let i = 0; i < w.length; i += W) {
      if (w[i] !== key) continue;
      if (w[i + 1] !== buf.readUInt32BE(off) || w[i + 2] !== buf.readUInt32BE(off + 4)) return false;
      w[i] = 0;
      return true;
    }
    return false;
  }
}

/** Random 32-bit words from a pool refilled 256 at a time (no allocation per probe). */
export class RandomWords {
  private readonly pool = new Uint32Array(256);
  private at = this.pool.length;

  next(): number {
    if (this.at === this.pool.length) {
      randomFillSync(this.pool);
      this.at = 0;
    }
    return this.pool[this.at++];
  }
}
