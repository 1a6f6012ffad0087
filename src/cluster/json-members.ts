// A JSON object read as it streams in, with one array member handed out element by element:
// a Kubernetes list (`{"kind":"NodeList","metadata":{…},"items":[…]}`) without ever holding
// the whole answer, as text or as objects.
//
// Why: JSON.parse of a page of real Nodes (10-25 KB each: kubelet's image list, managedFields)
// builds every Node of the page at once. Objects that live through a young-generation
// collection are promoted, and the page's text, one string of megabytes, is allocated in the
// old generation to begin with; both stay until the next full collection, which V8 puts off
// while the heap may grow. A list of 500 such Nodes took the gateway's peak from 56 to 95 MB
// that way (docs/memory.md "Node lists read Node by Node"). One element at a time, each Node
// is parsed from its own short text, reduced to what is needed, and dropped while still young.
//
// Only the structure is scanned here (strings with their escapes, nesting); the values are
// left to JSON.parse, which validates them: each element on its own, and the rest of the object
// with the member's array left empty (`"items":[]`), so the envelope is checked too.

import { BACKSLASH, CLOSE_ARRAY, CLOSE_OBJECT, COLON, COMMA, OPEN_ARRAY, OPEN_OBJECT, QUOTE } from '../util/json-syntax.js';

const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

export class JsonMemberSplitter {
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** At depth 1 (the top object): the next string is a key. */
  private expectKey = false;
  /** The key being read at depth 1 (its bytes), or null. */
  private keyParts: Buffer[] | null = null;
  private keyStart = -1;
  /** The last key read at depth 1, until its value starts. */
  private lastKey: string | null = null;
  /** The member's array is open: its elements are split out. */
  private inArray = false;
  private seenMember = false;
  /** The element being read (chunks of it), or null between elements. */
  private element: Buffer[] | null = null;
  private elementStart = -1;
  /** The last element ended at a ',': another must follow. */
  private afterComma = false;
  /** Everything outside the member's array, with the array itself kept as []. */
  private readonly rest: Buffer[] = [];
  private restStart = 0;
  private ended = false;

  /**
   * `member`: the top-level key whose array is split (e.g. "items"); `onElement`: called with
   * each element's text, in order, as soon as it is complete.
   */
  constructor(
    private readonly member: string,
    private readonly onElement: (text: string) => void,
  ) {}

  push(chunk: Buffer): void {
    this.restStart = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.ended) {
        if (!isSpace(b)) throw new Error('more after the end of the JSON object');
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (b === BACKSLASH) this.escaped = true;
        else if (b === QUOTE) {
          this.inString = false;
          if (this.keyParts) this.endKey(chunk, i + 1);
        }
        continue;
      }
      if (this.inArray && this.depth === 2) {
        // Between or at the edge of the member's elements.
        if (b === COMMA || b === CLOSE_ARRAY) {
          this.endElement(chunk, i);
          if (b === CLOSE_ARRAY) {
            this.inArray = false;
            this.depth--;
            this.restStart = i; // the ']' goes to the rest
          }
          continue;
        }
        if (this.element === null && !isSpace(b)) {
          this.element = [];
          this.elementStart = i;
        }
      }
      switch (b) {
        case QUOTE:
          this.inString = true;
          if (this.depth === 1 && this.expectKey) {
            this.keyParts = [];
            this.keyStart = i;
          }
          break;
        case OPEN_OBJECT:
        case OPEN_ARRAY:
          this.depth++;
          if (this.depth === 1) {
            if (b !== OPEN_OBJECT) throw new Error('not a JSON object');
            this.expectKey = true;
          } else if (this.depth === 2 && this.lastKey === this.member && b === OPEN_ARRAY) {
            if (this.seenMember) throw new Error(`"${this.member}" twice`);
            this.seenMember = true;
            this.inArray = true;
            this.keepRest(chunk, i + 1); // up to and with the '['
          }
          if (this.depth === 2) this.lastKey = null;
          break;
        case CLOSE_OBJECT:
        case CLOSE_ARRAY:
          this.depth--;
          if (this.depth < 0) throw new Error('unbalanced JSON');
          if (this.depth === 0) this.ended = true;
          break;
        case COMMA:
          if (this.depth === 1) this.expectKey = true;
          break;
        case COLON:
          if (this.depth === 1) this.expectKey = false;
          break;
        default:
          if (this.depth === 1 && !isSpace(b)) this.lastKey = null; // a scalar value
      }
    }
    if (this.element !== null) {
      this.element.push(chunk.subarray(this.elementStart));
      this.elementStart = 0;
    } else if (!this.inArray) this.keepRest(chunk, chunk.length);
    if (this.keyParts) {
      this.keyParts.push(chunk.subarray(this.keyStart));
      this.keyStart = 0;
    }
  }

  /** The object without the member's elements (`"items":[]`), parsed; throws unless the JSON ended cleanly. */
  end(): unknown {
    if (!this.ended || this.inString || this.depth !== 0) throw new Error('the JSON ended early');
    return JSON.parse(Buffer.concat(this.rest).toString('utf8'));
  }

  private keepRest(chunk: Buffer, to: number): void {
    if (to > this.restStart) this.rest.push(chunk.subarray(this.restStart, to));
    this.restStart = to;
  }

  private endKey(chunk: Buffer, to: number): void {
    const raw = Buffer.concat([...this.keyParts!, chunk.subarray(this.keyStart, to)]).toString('utf8');
    this.keyParts = null;
    // Escapes decoded as JSON.parse would ("it\u0065ms" is "items").
    this.lastKey = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
  }

  private endElement(chunk: Buffer, at: number): void {
    if (this.element === null) {
      // "[]" is an empty array; "[," or ",," or ",]" is not JSON.
      if (chunk[at] === CLOSE_ARRAY && !this.afterComma) return;
      throw new Error(`an empty element in "${this.member}"`);
    }
    const text = Buffer.concat([...this.element, chunk.subarray(this.elementStart, at)]).toString('utf8');
    this.element = null;
    this.afterComma = chunk[at] === COMMA;
    this.onElement(text);
  }
}
