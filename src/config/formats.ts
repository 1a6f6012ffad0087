// Value formats of the config schema. A format says what a good value looks like
// (`expected`), lists the problems of a given value (as values, never by throwing, so that
// load.ts can name every bad key at once, down to `peers[1].vtepMac`), turns an
// environment string into a value (`coerce`, never throws), and builds the typed value
// the program uses from a checked one (`build`): the Config type is derived from these
// build functions (schema.ts), so a key's type is declared exactly once.

import net from 'node:net';
import { isIPv4, ipToInt, isUnicastIPv4, parseCidr } from '../util/ipv4.js';
import { parseMac } from '../util/mac.js';
import { parseDuration } from '../util/duration.js';
import { isPlainObject } from '../util/plain-object.js';
import { mqttProxy } from '../util/http-proxy.js';
import { show } from '../util/show.js';
import type { Cidr, HostPort, PeerConfig } from './types.js';

export { show };

/** One problem inside a value; `at` extends the key ("" for the key itself, "[1].subnet"). */
export interface SubProblem {
  at: string;
  value: unknown;
  message: string;
}

/** Reads another key's checked raw value while building (e.g. peers' default port). */
export type Lookup = (path: string) => unknown;

export interface FormatDef<T> {
  /** The name convict knows the format by. */
  name: string;
  /** What a good value looks like, for "is required" / "has no value" messages. */
  expected: string;
  /** Null means "not set" (discover, generate or disable); the walker accepts it. */
  nullable?: boolean;
  /** Problems with a non-null value; empty when the value is good. */
  problems(v: unknown): SubProblem[];
  /** Turns an environment string (or a string in the file) into the value; never throws. */
  coerce?(s: string): unknown;
  /** The typed value of a checked one. */
  build(v: unknown, get: Lookup): T;
}

export const ID_PATTERN = '[a-z0-9][a-z0-9-]{0,62}';
const ID_RE = new RegExp(`^${ID_PATTERN}$`);
/** The site's Node name without cluster.kubernetes.nodeName: vxedge-{site}-{node}. */
export function defaultNodeName(site: string, node: string): string {
  return `vxedge-${site}-${node}`;
}

/** flanneld's default --kube-annotation-prefix. */
export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';
/** The longest name flannel puts after its prefix: a key's name part is at most 63 characters. */
const LONGEST_ANNOTATION = 'public-ipv6-overwrite';
const DNS_LABELS_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;

/**
 * flanneld's --kube-annotation-prefix as flannel completes it (pkg/subnet/kube/annotations.go
 * newAnnotations): "example.com" is "example.com/", "example.com/net" is "example.com/net-";
 * its annotations are that plus "public-ip", "backend-data", ... Throws, saying what is wrong,
 * for a prefix flanneld refuses or whose keys the API server would refuse (flannel checks the
 * end only, Kubernetes the whole key: a lower-case domain with a dot, then a name of at most
 * 63 characters).
 */
export function completeAnnotationPrefix(s: string): string {
  const parts = s.split('/');
  if (parts.length > 2) throw new Error(`${show(s)} has more than one "/": flannel takes a domain, optionally followed by "/" and a name (e.g. "example.com/net")`);
  const [domain, name = ''] = parts;
  if (domain.length > 253 || !DNS_LABELS_RE.test(domain)) {
    throw new Error(`${show(s)}: ${show(domain)} is not a lower-case domain name with a dot, which flannel and Kubernetes require before the "/" (e.g. "${DEFAULT_ANNOTATION_PREFIX}")`);
  }
  const completed = name === '' || name.endsWith('-') ? name : `${name}-`;
  if (completed !== '' && !/^[a-z0-9][a-z0-9_-]*-$/.test(completed)) {
    throw new Error(`${show(s)}: the name after "/", ${show(name)}, must start with a lower-case letter or digit and hold only a-z 0-9 _ - (flannel's rule)`);
  }
  if (completed.length + LONGEST_ANNOTATION.length > 63) {
    const longest = completed + LONGEST_ANNOTATION;
    throw new Error(`${show(s)}: the name after "/" is too long: flannel's annotation "${domain}/${longest}" would have a name of ${longest.length} characters, and Kubernetes allows 63`);
  }
  return `${domain}/${completed}`;
}

// A Kubernetes node name is a DNS subdomain; `vxedge peers` copies it verbatim.
export const NODE_NAME_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const HOST_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
// Linux IFNAMSIZ is 16 including the NUL.
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
export const DEFAULT_STUN_PORT = 3478;
const MQTT_SCHEMES = ['mqtt', 'mqtts', 'ws', 'wss'];
const PEER_KEYS = ['name', 'publicIp', 'port', 'subnet', 'vtepMac'];

/** Hides the password in "mqtt://user:secret@host". */
export function maskUrl(s: string): string {
  return s.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, '$1:***@');
}

// ---------------------------------------------------------------- helpers

function bad(v: unknown, what: string, at = ''): SubProblem[] {
  return [{ at, value: v, message: `${show(v)} ${what}` }];
}

function wrongType(v: unknown, expected: string): SubProblem[] {
  // YAML turns unquoted 12345 or "yes" into numbers and booleans; say so.
  const hint = typeof v === 'number' || typeof v === 'boolean' ? ' (quote it in YAML)' : '';
  return bad(v, `is not ${expected}${hint}`);
}

const same = <T>(v: unknown): T => v as T;

/** A string format whose check throws an Error naming the value (as the util parsers do). */
function fromParser<T = string>(name: string, expected: string, parse: (s: string) => unknown, nullable = false, build: (v: unknown) => T = same): FormatDef<T> {
  return {
    name,
    expected,
    nullable,
    problems(v) {
      if (typeof v !== 'string') return wrongType(v, expected);
      try {
        parse(v);
        return [];
      } catch (e) {
        return [{ at: '', value: v, message: (e as Error).message }];
      }
    },
    coerce: nullable ? emptyIsNull : undefined,
    build,
  };
}

function emptyIsNull(s: string): unknown {
  return s.trim() === '' ? null : s;
}

function intCoerce(s: string): unknown {
  return /^\s*\d+\s*$/.test(s) ? Number(s) : s;
}

/**
 * A bare number under a second is refused: every duration key is a period of seconds or
 * more, so `interval: 5` almost certainly means 5 s, and taken as the contract's milliseconds
 * it would probe each peer 200 times a second. The unit written out ("5ms") still says it.
 */
const BARE_MS_BELOW = 1000;

/** Durations in ms or "25s" (built as ms); with allowZero, 0 means "off". Not coerced: the
 *  value stays as written until build, so that a bare number can be told from "500ms". */
function durationFormat(name: string, allowZero: boolean): FormatDef<number> {
  return {
    name,
    expected: `a duration: milliseconds or a string like "25s"${allowZero ? '; 0 disables' : ''}`,
    problems(v) {
      const bare = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : null;
      if (bare !== null && bare > 0 && bare < BARE_MS_BELOW) {
        return bad(v, `is ${bare} ms (a bare number is milliseconds); write "${bare}s" for seconds, or "${bare}ms" if milliseconds are meant`);
      }
      try {
        return parseDuration(v) > 0 || allowZero ? [] : bad(v, 'is zero; expected a duration longer than 0');
      } catch (e) {
        return [{ at: '', value: v, message: (e as Error).message }];
      }
    },
    build: (v) => parseDuration(v),
  };
}

function intRange<T extends number | null = number>(name: string, expected: string, min: number, max: number, nullable = false): FormatDef<T> {
  return {
    name,
    expected,
    nullable,
    problems(v) {
      if (typeof v !== 'number' || !Number.isInteger(v)) return bad(v, `is not ${expected}`);
      return v < min || v > max ? bad(v, `is out of range: expected ${expected}`) : [];
    },
    coerce: (s) => (nullable && s.trim() === '' ? null : intCoerce(s)),
    build: same,
  };
}

/** One of a fixed set of strings. */
export function choice<const C extends readonly string[]>(name: string, choices: C): FormatDef<C[number]> {
  return {
    name,
    expected: `one of ${choices.join(', ')}`,
    problems: (v) => (choices.includes(v as string) ? [] : bad(v, `is not one of ${choices.map((x) => `"${x}"`).join(', ')}`)),
    build: same,
  };
}

/** A list of strings, each checked by `check` (throws with the message); JSON or comma-separated from the environment. */
function stringList<T>(name: string, expected: string, check: (s: string) => T): FormatDef<T[]> {
  return {
    name,
    expected,
    problems(v) {
      if (!Array.isArray(v)) return bad(v, `is not ${expected}`);
      return v.flatMap((item, i) => {
        try {
          if (typeof item !== 'string') throw new Error(`${show(item)} is not a string`);
          check(item);
          return [];
        } catch (e) {
          return [{ at: `[${i}]`, value: item, message: (e as Error).message }];
        }
      });
    },
    coerce(s) {
      const t = s.trim();
      if (t.startsWith('[')) {
        try {
          return JSON.parse(t) as unknown;
        } catch {
          return s;
        }
      }
      return t === '' ? [] : t.split(',').map((x) => x.trim());
    },
    build: (v) => (v as string[]).map(check),
  };
}

// ---------------------------------------------------------------- checks

function checkId(s: string): void {
  if (!ID_RE.test(s)) {
    throw new Error(
      `${show(s)} is not a valid id: lower-case letters, digits and "-", starting with a letter or digit, at most 63 characters`,
    );
  }
}

function checkNodeName(s: string): void {
  if (!NODE_NAME_RE.test(s)) throw new Error(`${show(s)} is not a Kubernetes node name (lower-case DNS name)`);
}

function checkIfname(s: string): void {
  if (!IFNAME_RE.test(s) || s === '.' || s === '..') {
    throw new Error(`${show(s)} is not a network interface name (1 to 15 of A-Z a-z 0-9 _ . -)`);
  }
}

function checkPath(s: string): void {
  if (s.trim() === '' || s.includes('\0')) throw new Error(`${show(s)} is not a usable path`);
}

/** An LED under /sys/class/leds ("ACT", "led0", "mmc0::"), or an absolute LED directory. */
function checkLed(s: string): void {
  if (s.startsWith('/')) return checkPath(s);
  if (!/^[A-Za-z0-9_:.+-]{1,64}$/.test(s) || s === '.' || s === '..') {
    throw new Error(`${show(s)} is not an LED name under /sys/class/leds (e.g. "ACT", "led0") or an absolute path`);
  }
}

function checkPublicIp(s: string): void {
  if (!isUnicastIPv4(ipToInt(s))) {
    throw new Error(`${show(s)} cannot be a public endpoint (0.x, 127.x, multicast and reserved addresses are not)`);
  }
}

/** A URL written without its scheme ("broker.example.com:1883"), which URL would read as scheme
 *  "broker.example.com": say what to put in front instead. Credentials stay masked. */
function checkHasScheme(s: string, scheme: string, alternative: string): void {
  if (s.includes('://')) return;
  const fixed = maskUrl(`${scheme}://${s}`);
  throw new Error(`${show(fixed.slice(scheme.length + 3))} has no scheme; write ${show(fixed)} (or ${alternative})`);
}

function checkMqttUrl(s: string): void {
  checkHasScheme(s, 'mqtt', 'mqtts:// for TLS');
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new Error(`${show(maskUrl(s))} is not a URL (expected e.g. mqtts://broker.example.com:8883)`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (!MQTT_SCHEMES.includes(scheme)) {
    throw new Error(`${show(maskUrl(s))} has scheme "${scheme}"; use mqtt://, mqtts://, ws:// or wss://`);
  }
  if (url.hostname === '') throw new Error(`${show(maskUrl(s))} names no broker host`);
}

/** mqtt.proxy: util/http-proxy.ts says what is wrong with a URL; the value is shown here, its password masked. */
export function checkMqttProxy(s: string): void {
  checkHasScheme(s, 'http', 'socks5:// for a SOCKS proxy');
  try {
    new URL(s);
  } catch {
    throw new Error(`${show(maskUrl(s))} is not a URL (expected http://HOST:PORT or socks5://HOST:PORT, e.g. http://proxy.example:3128)`);
  }
  mqttProxy(s);
}

/** An etcd v3 endpoint: http(s)://host:port. */
function checkEtcdEndpoint(s: string): string {
  checkHasScheme(s, 'https', 'http:// without TLS');
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new Error(`${show(s)} is not a URL (expected e.g. https://10.0.0.5:2379)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`${show(s)} has scheme "${url.protocol.slice(0, -1)}"; etcd endpoints are http:// or https://`);
  }
  if (url.hostname === '') throw new Error(`${show(s)} names no host`);
  return s;
}

function checkTopicPrefix(s: string): void {
  const why =
    s === '' ? 'is empty'
    : /[+#\0]/.test(s) ? 'contains an MQTT wildcard (+ or #) or NUL'
    : s.startsWith('$') ? 'starts with "$", which brokers reserve'
    : s.startsWith('/') || s.endsWith('/') || s.includes('//') ? 'has an empty topic level'
    : '';
  if (why) throw new Error(`${show(s)} ${why}; expected a topic level such as "vxedge"`);
}

function checkEtcdPrefix(s: string): void {
  if (!s.startsWith('/') || s.endsWith('/') || s.includes('//') || /[\0\s]/.test(s)) {
    throw new Error(`${show(s)} is not a key prefix such as "/coreos.com/network" (leading "/", no trailing "/")`);
  }
}

/** "stun.example.com:3478" or "192.0.2.1" (port 3478, the STUN default). */
export function parseHostPort(s: string): HostPort {
  const m = /^([^:\s]+)(?::(\d{1,5}))?$/.exec(s);
  const host = m?.[1] ?? '';
  const port = m?.[2] === undefined ? DEFAULT_STUN_PORT : Number(m[2]);
  const numeric = /^[\d.]+$/.test(host);
  const hostOk = numeric ? isIPv4(host) : HOST_RE.test(host);
  if (!m || !hostOk || port < 1 || port > 65535) {
    throw new Error(`${show(s)} is not host:port (e.g. "stun.l.google.com:19302"; the port defaults to 3478)`);
  }
  return { host: host.toLowerCase(), port };
}

/** Where the metrics endpoint listens: `metrics.listen`. */
export interface ListenAddress {
  /** An IP literal (IPv6 without brackets). */
  host: string;
  port: number;
}

/**
 * `metrics.listen`: "HOST:PORT" with an IP literal ("127.0.0.1:9474", "0.0.0.0:9474",
 * "[::]:9474"), or a bare port (a YAML number too), which means 127.0.0.1: the site's
 * numbers are open to the LAN or the world only when the address says so.
 */
export function parseListen(v: string | number): ListenAddress {
  const s = String(v).trim();
  const example = 'expected HOST:PORT with an IP address, e.g. "127.0.0.1:9474", "0.0.0.0:9474" (every address) or "[::]:9474", or a port alone for 127.0.0.1';
  const m = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):)?(\d{1,5})$/.exec(s);
  if (!m) {
    const hint = /^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? ' (an address to listen on, not a URL)' : /^[^\s:\[\]]+:\d+$/.test(s) ? ' (an IP address, not a host name: the one to listen on)' : '';
    throw new Error(`${show(v)} is not an address to listen on${hint}; ${example}`);
  }
  const host = m[1] ?? m[2] ?? '127.0.0.1';
  const port = Number(m[3]);
  if (m[1] !== undefined ? !net.isIPv6(m[1]) : !isIPv4(host)) throw new Error(`${show(v)}: ${show(host)} is not an IP address; ${example}`);
  if (port < 1 || port > 65535) throw new Error(`${show(v)}: port ${port} is out of range 1..65535`);
  return { host: m[1] ?? host, port };
}

// ------------------------------------------------------------- suggestions

export function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
    }
    prev = cur;
  }
  return prev[b.length];
}

/** `unknown key; did you mean "x"?` when a candidate is close, else a list of what is allowed. */
export function unknownKeyMessage(given: string, candidates: string[], what = 'key'): string {
  const lower = given.toLowerCase();
  const last = lower.slice(lower.lastIndexOf('.') + 1);
  const limit = Math.max(2, Math.floor(given.length / 4));
  const scored = candidates
    .map((c) => {
      const cl = c.toLowerCase();
      // A known leaf name at the wrong level ("port" for "underlay.port") is a match too.
      const sameLeaf = cl.slice(cl.lastIndexOf('.') + 1) === last && cl !== lower;
      return { c, d: sameLeaf ? 1 : levenshtein(lower, cl) };
    })
    .filter((x) => x.d <= limit)
    .sort((x, y) => x.d - y.d || x.c.localeCompare(y.c));
  if (scored.length === 0) return `unknown ${what}`;
  const best = scored.filter((x) => x.d === scored[0].d).slice(0, 2).map((x) => `"${x.c}"`);
  return `unknown ${what}; did you mean ${best.join(' or ')}?`;
}

// -------------------------------------------------------------------- peers

function peerProblems(p: unknown, i: number): SubProblem[] {
  const at = `[${i}]`;
  if (!isPlainObject(p)) {
    return bad(p, 'is not a peer; expected { name, publicIp, port?, subnet, vtepMac }', at);
  }
  const out: SubProblem[] = [];
  for (const key of Object.keys(p)) {
    if (!PEER_KEYS.includes(key)) {
      const full = PEER_KEYS.map((k) => `peers[${i}].${k}`);
      out.push({ at: `${at}.${key}`, value: p[key], message: unknownKeyMessage(`peers[${i}].${key}`, full) });
    }
  }
  const field = (key: string, check: (v: unknown) => void, optional = false): void => {
    const v = p[key];
    if (v === undefined || v === null) {
      const message = 'is required; a peer needs name, publicIp, subnet and vtepMac';
      if (!optional) out.push({ at: `${at}.${key}`, value: v, message });
      return;
    }
    try {
      check(v);
    } catch (e) {
      out.push({ at: `${at}.${key}`, value: v, message: (e as Error).message });
    }
  };
  const str = (f: (s: string) => void) => (v: unknown) => {
    if (typeof v !== 'string') throw new Error(`${show(v)} is not a string`);
    f(v);
  };
  field('name', str(checkNodeName));
  field('publicIp', str(checkPublicIp));
  field('port', (v) => {
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) {
      throw new Error(`${show(v)} is not a port (expected 1..65535; leave it out for vxlan.port)`);
    }
  }, true);
  field('subnet', str((s) => void parseCidr(s)));
  field('vtepMac', str((s) => void parseMac(s)));
  return out;
}

function jsonCoerce(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return s;
  }
}

const peers: FormatDef<PeerConfig[]> = {
  name: 'peers',
  expected: 'a list of peers { name, publicIp, port?, subnet, vtepMac }',
  problems(v) {
    if (typeof v === 'string') {
      let reason = '';
      try {
        JSON.parse(v);
      } catch (e) {
        reason = `: ${(e as Error).message}`;
      }
      return [{ at: '', value: v, message: `${show(v)} is not a JSON list of peers${reason}` }];
    }
    if (!Array.isArray(v)) return bad(v, 'is not a list of peers { name, publicIp, port?, subnet, vtepMac }');
    return v.flatMap((p, i) => peerProblems(p, i));
  },
  coerce: jsonCoerce,
  build: (v, get) =>
    (v as Record<string, unknown>[]).map((p) => ({
      name: p.name as string,
      publicIp: p.publicIp as string,
      // A peer without a port listens where every flannel node does: vxlan.port.
      port: (p.port as number | undefined) ?? (get('vxlan.port') as number),
      subnet: parseCidr(p.subnet as string),
      vtepMac: parseMac(p.vtepMac as string),
    })),
};

// ------------------------------------------------------------------ formats

const nullOr = <T>(f: (v: unknown) => T) => (v: unknown): T | null => (v === null ? null : f(v));

export const formats = {
  siteId: fromParser('site-id', `an id matching ${ID_PATTERN}, e.g. "lab"`, checkId),
  nodeNameOrNull: fromParser<string | null>('node-name-or-null', 'a Kubernetes node name or null', checkNodeName, true),
  path: fromParser('path', 'a file system path', checkPath),
  pathOrNull: fromParser<string | null>('path-or-null', 'a file system path or null', checkPath, true),
  ifname: fromParser('ifname', 'a network interface name, e.g. "flannel.1"', checkIfname),
  ifnameOrNull: fromParser<string | null>('ifname-or-null', 'a network interface name or null', checkIfname, true),
  ipv4OrNull: fromParser<string | null>('ipv4-or-null', 'an IPv4 address or null', ipToInt, true),
  publicIpv4OrNull: fromParser<string | null>('public-ipv4-or-null', 'a public IPv4 address or null', checkPublicIp, true),
  cidr: fromParser<Cidr>('cidr', 'an IPv4 CIDR such as 10.244.0.0/16', parseCidr, false, (v) => parseCidr(v as string)),
  macOrNull: fromParser<string | null>('mac-or-null', 'a MAC address aa:bb:cc:dd:ee:ff or null', parseMac, true, nullOr((v) => parseMac(v as string))),
  mqttUrlOrNull: fromParser<string | null>('mqtt-url-or-null', 'an mqtt://, mqtts://, ws:// or wss:// URL, or null', checkMqttUrl, true),
  mqttProxyOrNull: fromParser<string | null>('mqtt-proxy-or-null', 'an http://, https:// or socks5:// proxy URL, or null', checkMqttProxy, true),
  topicLevel: fromParser('topic-level', 'an MQTT topic level such as "vxedge"', checkTopicPrefix),
  annotationPrefix: fromParser('annotation-prefix', `flanneld's --kube-annotation-prefix, e.g. "${DEFAULT_ANNOTATION_PREFIX}"`, completeAnnotationPrefix),
  etcdPrefix: fromParser('etcd-prefix', 'an etcd key prefix such as "/coreos.com/network"', checkEtcdPrefix),
  ledOrNull: fromParser<string | null>('led-or-null', 'an LED name such as "ACT", an LED directory path, or null', checkLed, true),
  stringOrNull: {
    name: 'string-or-null',
    expected: 'a string or null',
    nullable: true,
    problems: (v) => (typeof v === 'string' ? [] : wrongType(v, 'a string')),
    coerce: emptyIsNull,
    build: same,
  } satisfies FormatDef<string | null> as FormatDef<string | null>,
  // Overrides convict's own "port": that one accepts 0 and parseInt()s "8472abc".
  port: intRange('port', 'a port 1..65535', 1, 65535),
  vni: intRange('vni', 'a VNI 1..16777215', 1, 16777215),
  mtuOrNull: intRange<number | null>('mtu-or-null', 'an MTU 576..9000 or null', 576, 9000, true),
  // The kernel's TUN allows 256 queues; the addon reads at most 16 (DEV_MAX_QUEUES in vx.h).
  deviceQueues: intRange('device-queues', 'a queue count 1..16', 1, 16),
  duration: durationFormat('duration', false),
  durationOrZero: durationFormat('duration-or-zero', true),
  bool: {
    name: 'bool',
    expected: 'true or false',
    problems: (v) => (typeof v === 'boolean' ? [] : bad(v, 'is not true or false')),
    coerce(s) {
      const t = s.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(t)) return true;
      if (['false', '0', 'no', 'off'].includes(t)) return false;
      return s;
    },
    build: same,
  } satisfies FormatDef<boolean> as FormatDef<boolean>,
  metricsListenOrNull: {
    name: 'metrics-listen-or-null',
    expected: 'HOST:PORT (e.g. "127.0.0.1:9474"), a port, or null',
    nullable: true,
    problems(v) {
      if (typeof v !== 'string' && typeof v !== 'number') return wrongType(v, 'HOST:PORT or a port');
      try {
        parseListen(v);
        return [];
      } catch (e) {
        return [{ at: '', value: v, message: (e as Error).message }];
      }
    },
    coerce: emptyIsNull,
    build: (v) => (v === null ? null : parseListen(v as string | number)),
  } satisfies FormatDef<ListenAddress | null> as FormatDef<ListenAddress | null>,
  hostPortList: stringList('host-port-list', 'a list of "host:port" strings', parseHostPort),
  etcdEndpoints: stringList('etcd-endpoints', 'a list of http:// or https:// URLs', checkEtcdEndpoint),
  peers,
};

/** Every format by its convict name (choice formats are registered by the schema). */
export const namedFormats: FormatDef<unknown>[] = Object.values(formats);
