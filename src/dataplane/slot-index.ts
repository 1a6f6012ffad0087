// A hash index from a key of up to 48 bits to a peer slot, in typed arrays: what the peer
// table looks packets up by (outer source address, VTEP MAC, subnet). It replaces Maps
// whose keys V8 had to box: a Map key is a small integer only up to 2^31 (2^30 on 32-bit
// ARM), so every address above 128.0.0.0, every MAC read as a number and every subnet of
// 192.168/16 allocated a number per packet for its lookup. Here a key is two int32 parts
// compared as they are, and a lookup allocates nothing.
//
// Semantics are a Map's: set() replaces the slot of an existing key; deleteIf() removes a
// key only while it still names the given slot (a peer that left must not take away the
// entry of the peer that took its key over). Open addressing with linear probing, kept
// at most half full; deletion shifts the rest of the probe run back, so no tombstones.

/** Mixes both parts of a key into 32 bits (murmur3's finaliser constants). */
function hash(a: number, b: number): number {
  let h = Math.imul(a ^ Math.imul(b, 0xcc9e2d51), 0x1b873593);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca6b);
  return h ^ (h >>> 13);
}

export class SlotIndex {
  private keyA: Int32Array;
  private keyB: Int32Array;
  /** The slot stored under each cell's key; -1: empty cell. */
  private cells: Int32Array;
  private mask: number;
  private n = 0;

  constructor(capacity = 16) {
    let size = 16;
    while (size < 2 * capacity) size *= 2;
    this.keyA = new Int32Array(size);
    this.keyB = new Int32Array(size);
    this.cells = new Int32Array(size).fill(-1);
    this.mask = size - 1;
  }

  get size(): number {
    return this.n;
  }

  /** The slot stored under (a, b), or -1. `a` may be signed or unsigned 32-bit; `b` an int32. */
  get(a: number, b: number): number {
    a |= 0;
    const { keyA, keyB, cells, mask } = this;
    for (let i = hash(a, b) & mask; ; i = (i + 1) & mask) {
      const s = cells[i];
      if (s < 0) return -1;
      if (keyA[i] === a && keyB[i] === b) return s;
    }
  }

  /** Stores `slot` under (a, b), replacing what was there; true when the key is new. */
  set(a: number, b: number, slot: number): boolean {
    a |= 0;
    const i = this.find(a, b);
    if (this.cells[i] >= 0) {
      this.cells[i] = slot;
      return false;
    }
    this.keyA[i] = a;
    this.keyB[i] = b;
    this.cells[i] = slot;
    if (++this.n * 2 > this.cells.length) this.rehash(this.cells.length * 2);
    return true;
  }

  /** Removes (a, b) if it names `slot`; true when it did. */
  deleteIf(a: number, b: number, slot: number): boolean {
    a |= 0;
    let i = this.find(a, b);
    const { keyA, keyB, cells, mask } = this;
    if (cells[i] !== slot || slot < 0) return false;
    cells[i] = -1;
    this.n--;
    // Close the gap: a later entry of the run whose home is not cyclically within (i, j]
    // would no longer be found past the empty cell, so it moves into the gap.
    for (let j = (i + 1) & mask; cells[j] >= 0; j = (j + 1) & mask) {
      const home = hash(keyA[j], keyB[j]) & mask;
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (between) continue;
      keyA[i] = keyA[j];
      keyB[i] = keyB[j];
      cells[i] = cells[j];
      cells[j] = -1;
      i = j;
    }
    return true;
  }

  /** The cell holding (a, b), or the empty cell where it would go. */
  private find(a: number, b: number): number {
    const { keyA, keyB, cells, mask } = this;
    let i = hash(a, b) & mask;
    while (cells[i] >= 0 && !(keyA[i] === a && keyB[i] === b)) i = (i + 1) & mask;
    return i;
  }

  private rehash(size: number): void {
    const { keyA, keyB, cells } = this;
    this.keyA = new Int32Array(size);
    this.keyB = new Int32Array(size);
    this.cells = new Int32Array(size).fill(-1);
    this.mask = size - 1;
    for (let i = 0; i < cells.length; i++) {
      if (cells[i] < 0) continue;
      const j = this.find(keyA[i], keyB[i]);
      this.keyA[j] = keyA[i];
      this.keyB[j] = keyB[i];
      this.cells[j] = cells[i];
    }
  }
}
