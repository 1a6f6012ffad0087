// The subset of XML that UPnP routers send us: device descriptions (a tree of
// <device>/<service> elements) and SOAP envelopes (an action response or a Fault). We read
// element names and the text of leaf elements, nothing else, so this parser keeps only that:
//
//   - names lose their namespace prefix (<s:Body> is "Body", <u:AddPortMappingResponse> is
//     "AddPortMappingResponse"); attributes are skipped (quotes respected), namespaces unchecked;
//   - text is trimmed, the five predefined entities and numeric references are decoded,
//     CDATA is kept as text, comments and processing instructions are skipped;
//   - a DOCTYPE is refused: no DTD, no entity expansion, no external anything.
//
// Input is untrusted and already bounded in size by the HTTP layer (64 KiB); the parser is
// a single forward scan (each terminator found once, no backtracking), bounded in depth
// and element count, never throws, and returns null for anything it does not understand.
// A hand parser instead of a library: the subset is this small, and it is fuzzed in
// test/unit/portmap-upnp.test.ts.

export interface XmlElement {
  /** Local name, without prefix. */
  name: string;
  children: XmlElement[];
  /** Trimmed character data directly inside this element. */
  text: string;
}

export interface XmlLimits {
  maxDepth: number;
  maxElements: number;
}

export const XML_LIMITS: XmlLimits = { maxDepth: 24, maxElements: 4096 };

interface Open {
  qname: string;
  el: XmlElement;
  text: string[];
}

/** Parses one document. Null when it is malformed or over the limits. Never throws. */
export function parseXml(src: string, limits: XmlLimits = XML_LIMITS): XmlElement | null {
  try {
    return parse(src, limits);
  } catch {
    return null; // a defect here must not take the gateway down
  }
}

function parse(src: string, limits: XmlLimits): XmlElement | null {
  const stack: Open[] = [];
  let root: XmlElement | null = null;
  let elements = 0;
  let i = 0;
  const n = src.length;
  while (i < n) {
    const lt = src.indexOf('<', i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i) {
      const chunk = src.slice(i, textEnd);
      if (stack.length) stack[stack.length - 1].text.push(chunk);
      else if (chunk.trim() !== '') return null; // text outside the root element
    }
    if (lt < 0) break;
    if (src.startsWith('<!--', lt)) {
      const end = src.indexOf('-->', lt + 4);
      if (end < 0) return null;
      i = end + 3;
    } else if (src.startsWith('<![CDATA[', lt)) {
      const end = src.indexOf(']]>', lt + 9);
      if (end < 0 || !stack.length) return null;
      stack[stack.length - 1].text.push(escapeForDecode(src.slice(lt + 9, end)));
      i = end + 3;
    } else if (src.startsWith('<?', lt)) {
      const end = src.indexOf('?>', lt + 2);
      if (end < 0) return null;
      i = end + 2;
    } else if (src.startsWith('<!', lt)) {
      return null; // DOCTYPE and other declarations
    } else if (src.startsWith('</', lt)) {
      const end = src.indexOf('>', lt + 2);
      if (end < 0) return null;
      const qname = src.slice(lt + 2, end).trim();
      const top = stack.pop();
      if (!top || top.qname !== qname) return null;
      const text = decodeEntities(top.text.join('').trim());
      if (text === null) return null;
      top.el.text = text;
      if (!stack.length) root = top.el;
      i = end + 1;
    } else {
      const end = tagEnd(src, lt + 1);
      if (end < 0) return null;
      const selfClosing = src[end - 1] === '/';
      const inner = src.slice(lt + 1, selfClosing ? end - 1 : end);
      const m = /^[^\s/>]+/.exec(inner);
      if (!m) return null;
      const qname = m[0];
      if (root || (stack.length === 0 && elements > 0)) return null; // a second root
      if (++elements > limits.maxElements || stack.length >= limits.maxDepth) return null;
      const el: XmlElement = { name: localName(qname), children: [], text: '' };
      if (stack.length) stack[stack.length - 1].el.children.push(el);
      if (selfClosing) {
        if (!stack.length) root = el;
      } else {
        stack.push({ qname, el, text: [] });
      }
      i = end + 1;
    }
  }
  return stack.length === 0 ? root : null;
}

/**
 * Index of the '>' that ends a start tag opened before `from`, skipping quoted attribute
 * values. A character loop, not indexOf per quote kind: that would rescan the rest of the
 * document for every tag (quadratic on a document of many tags and one late quote).
 */
function tagEnd(src: string, from: number): number {
  let quote = '';
  for (let i = from; i < src.length; i++) {
    const ch = src[i];
    if (quote) {
      if (ch === quote) quote = '';
    } else if (ch === '"' || ch === "'") {
      quote = ch;
    } else if (ch === '>') {
      return i;
    } else if (ch === '<') {
      return -1; // a '<' inside a tag: not XML
    }
  }
  return -1;
}

function localName(qname: string): string {
  const colon = qname.indexOf(':');
  return colon < 0 ? qname : qname.slice(colon + 1);
}

/** CDATA is literal: protect its '&' from the entity decoder that runs over the joined text. */
function escapeForDecode(s: string): string {
  return s.replace(/&/g, '&amp;');
}

const NAMED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** Decodes predefined entities and character references; null on an unknown or broken one. */
function decodeEntities(s: string): string | null {
  if (!s.includes('&')) return s;
  let out = '';
  let i = 0;
  for (;;) {
    const amp = s.indexOf('&', i);
    if (amp < 0) return out + s.slice(i);
    const semi = s.indexOf(';', amp + 1);
    if (semi < 0 || semi - amp > 12) return null;
    out += s.slice(i, amp);
    const ref = s.slice(amp + 1, semi);
    if (ref.startsWith('#')) {
      const code = /^#x[0-9a-fA-F]{1,6}$/.test(ref) ? parseInt(ref.slice(2), 16) : /^#[0-9]{1,7}$/.test(ref) ? parseInt(ref.slice(1), 10) : NaN;
      if (!Number.isInteger(code) || code < 1 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return null;
      out += String.fromCodePoint(code);
    } else {
      const ch = NAMED[ref];
      if (ch === undefined) return null;
      out += ch;
    }
    i = semi + 1;
  }
}

// --------------------------------------------------------------------- queries

/** The first direct child called `name`. */
export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

/** The text of the first direct child called `name`, or undefined. */
export function childText(el: XmlElement, name: string): string | undefined {
  return child(el, name)?.text;
}

/** Every element called `name` below `el`, in document order (the tree is already bounded). */
export function descendants(el: XmlElement, name: string): XmlElement[] {
  const out: XmlElement[] = [];
  const todo: XmlElement[] = [...el.children].reverse();
  while (todo.length) {
    const e = todo.pop()!;
    if (e.name === name) out.push(e);
    for (let k = e.children.length - 1; k >= 0; k--) todo.push(e.children[k]);
  }
  return out;
}
