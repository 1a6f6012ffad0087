// A key given twice in one JSON object. JSON.parse keeps the later of the two silently, so a
// site file with a second `peers` list would lose the first; RFC 8259 §4 only says names
// SHOULD be unique. This finds the first such key in text JSON.parse has already accepted.
//
// Why not the yaml library (JSON is YAML 1.2, and it reports duplicate keys): its document
// model of a site file with 500 peers took the gateway's start-up peak (VmHWM) from 53 to
// 58 MB, for a check that finds nothing in almost every file. This scan keeps a set of the
// keys of each object still open, and nothing else.

import { BACKSLASH, CLOSE_ARRAY, CLOSE_OBJECT, COMMA, OPEN_ARRAY, OPEN_OBJECT, QUOTE } from '../util/json-syntax.js';

/**
 * The first key an object in `text` holds twice (compared as JSON.parse reads them, escapes
 * decoded), with the offset of its second occurrence's opening quote; null when there is none.
 * `text` must be valid JSON (JSON.parse took it): nothing here validates.
 */
export function firstDuplicateKey(text: string): { key: string; pos: number } | null {
  // One entry per open container: an object's keys so far, or null for an array.
  const open: (Set<string> | null)[] = [];
  // The next string is a key: right after '{', or after ',' inside an object.
  let keyNext = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const start = i;
      let escapes = false;
      for (i++; text.charCodeAt(i) !== QUOTE; i++) {
        if (text.charCodeAt(i) === BACKSLASH) {
          escapes = true;
          i++; // the escaped character, a quote among them
        }
      }
      if (!keyNext) continue;
      keyNext = false;
      const key = escapes ? (JSON.parse(text.slice(start, i + 1)) as string) : text.slice(start + 1, i);
      const keys = open[open.length - 1]!;
      if (keys.has(key)) return { key, pos: start };
      keys.add(key);
    } else if (c === OPEN_OBJECT) {
      open.push(new Set());
      keyNext = true;
    } else if (c === OPEN_ARRAY) {
      open.push(null);
      keyNext = false;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      open.pop();
      keyNext = false;
    } else if (c === COMMA) {
      keyNext = open[open.length - 1] != null;
    }
  }
  return null;
}
