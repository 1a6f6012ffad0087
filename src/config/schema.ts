// The one place that names every config key, its default, its doc, its
// environment variable and its format (interface.md, "Config file"). Formats
// report problems as values rather than throwing, so that load.ts can name
// every bad key at once, down to `peers[1].vtepMac`; the same formats are
// registered with convict, which uses them to coerce environment strings.

import os from 'node:os';
import convict from 'convict';
import { isIPv4, ipToInt, isUnicastIPv4, parseCidr } from '../util/ipv4.js';
import { parseMac } from '../util/mac.js';
import { parseDuration } from '../util/duration.js';

/** One problem inside a value; `at` extends the key ("" for the key itself, "[1].subnet"). */
export interface SubProblem {
  at: string;
  value: unknown;
  message: string;
}

export interface FormatDef {
  /** What a good value looks like, for "is required" / "has no value" messages. */
  expected: string;
  /** Null means "not set" (discover, generate or disable); the walker accepts it. */
  nullable?: boolean;
  /** Problems with a non-null value; empty when the value is good. */
  problems(v: unknown): SubProblem[];
  /** Turns an environment string (or a string in the file) into the value; never throws. */
  coerce?(s: string): unknown;
}

export interface LeafSpec {
  doc: string;
  default: unknown;
  format: string | readonly string[];
  env: string;
  sensitive?: boolean;
}
export type SchemaTree = { [key: string]: LeafSpec | SchemaTree };

export const ID_PATTERN = '[a-z0-9][a-z0-9-]{0,62}';
const ID_RE = new RegExp(`^${ID_PATTERN}$`);
// A Kubernetes node name is a DNS subdomain; `vxedge peers` copies it verbatim.
const NODE_NAME_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const HOST_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
// Linux IFNAMSIZ is 16 including the NUL.
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
export const DEFAULT_STUN_PORT = 3478;
const MQTT_SCHEMES = ['mqtt', 'mqtts', 'ws', 'wss'];
const PEER_KEYS = ['name', 'publicIp', 'port', 'subnet', 'vtepMac'];

import { show } from '../util/show.js';

export { show };

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

/** A format whose check throws an Error naming the value (as the util parsers do). */
function fromParser(expected: string, parse: (s: string) => unknown, nullable = false): FormatDef {
  return {
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
  };
}

function emptyIsNull(s: string): unknown {
  return s.trim() === '' ? null : s;
}

function intCoerce(s: string): unknown {
  return /^\s*\d+\s*$/.test(s) ? Number(s) : s;
}

/** Durations in ms or "25s"; with allowZero, 0 means "off". */
function durationFormat(allowZero: boolean): FormatDef {
  return {
    expected: `a duration: milliseconds or a string like "25s"${allowZero ? '; 0 disables' : ''}`,
    problems(v) {
      try {
        return parseDuration(v) > 0 || allowZero ? [] : bad(v, 'is zero; expected a duration longer than 0');
      } catch (e) {
        return [{ at: '', value: v, message: (e as Error).message }];
      }
    },
    coerce(s) {
      try {
        return parseDuration(s);
      } catch {
        return s; // left for problems() to report with its message
      }
    },
  };
}

function intRange(expected: string, min: number, max: number, nullable = false): FormatDef {
  return {
    expected,
    nullable,
    problems(v) {
      if (typeof v !== 'number' || !Number.isInteger(v)) return bad(v, `is not ${expected}`);
      return v < min || v > max ? bad(v, `is out of range: expected ${expected}`) : [];
    },
    coerce: (s) => (nullable && s.trim() === '' ? null : intCoerce(s)),
  };
}

function checkId(s: string): void {
  if (!ID_RE.test(s)) {
    throw new Error(
      `${show(s)} is not a valid id: lower-case letters, digits and "-", starting with a letter or digit, at most 63 characters`,
    );
  }
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

function checkMqttUrl(s: string): void {
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

function checkTopicPrefix(s: string): void {
  const why =
    s === '' ? 'is empty'
    : /[+#\0]/.test(s) ? 'contains an MQTT wildcard (+ or #) or NUL'
    : s.startsWith('$') ? 'starts with "$", which brokers reserve'
    : s.startsWith('/') || s.endsWith('/') || s.includes('//') ? 'has an empty topic level'
    : '';
  if (why) throw new Error(`${show(s)} ${why}; expected a topic level such as "vxedge"`);
}

/** "stun.example.com:3478" or "192.0.2.1" (port 3478, the STUN default). */
export function parseHostPort(s: string): { host: string; port: number } {
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

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

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
  field('name', str((s) => {
    if (!NODE_NAME_RE.test(s)) throw new Error(`${show(s)} is not a Kubernetes node name (lower-case DNS name)`);
  }));
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

// ------------------------------------------------------------------ formats

export const formats: Record<string, FormatDef> = {
  'site-id': fromParser(`an id matching ${ID_PATTERN}, e.g. "lab"`, checkId),
  path: fromParser('a file system path', checkPath),
  'path-or-null': fromParser('a file system path or null', checkPath, true),
  ifname: fromParser('a network interface name, e.g. "flannel.1"', checkIfname),
  'ifname-or-null': fromParser('a network interface name or null', checkIfname, true),
  ipv4: fromParser('an IPv4 address', ipToInt),
  'ipv4-or-null': fromParser('an IPv4 address or null', ipToInt, true),
  'public-ipv4-or-null': fromParser('a public IPv4 address or null', checkPublicIp, true),
  cidr: fromParser('an IPv4 CIDR such as 10.244.0.0/16', parseCidr),
  'mac-or-null': fromParser('a MAC address aa:bb:cc:dd:ee:ff or null', parseMac, true),
  'mqtt-url-or-null': fromParser('an mqtt://, mqtts://, ws:// or wss:// URL, or null', checkMqttUrl, true),
  'topic-level': fromParser('an MQTT topic level such as "vxedge"', checkTopicPrefix),
  'led-or-null': fromParser('an LED name such as "ACT", an LED directory path, or null', checkLed, true),
  'string-or-null': {
    expected: 'a string or null',
    nullable: true,
    problems: (v) => (typeof v === 'string' ? [] : wrongType(v, 'a string')),
    coerce: emptyIsNull,
  },
  // Overrides convict's own "port": that one accepts 0 and parseInt()s "8472abc".
  port: intRange('a port 1..65535', 1, 65535),
  vni: intRange('a VNI 1..16777215', 1, 16777215),
  'mtu-or-null': intRange('an MTU 576..9000 or null', 576, 9000, true),
  duration: durationFormat(false),
  'duration-or-zero': durationFormat(true),
  bool: {
    expected: 'true or false',
    problems: (v) => (typeof v === 'boolean' ? [] : bad(v, 'is not true or false')),
    coerce(s) {
      const t = s.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(t)) return true;
      if (['false', '0', 'no', 'off'].includes(t)) return false;
      return s;
    },
  },
  'host-port-list': {
    expected: 'a list of "host:port" strings',
    problems(v) {
      if (!Array.isArray(v)) return bad(v, 'is not a list of "host:port" strings');
      return v.flatMap((item, i) => {
        try {
          if (typeof item !== 'string') throw new Error(`${show(item)} is not a "host:port" string`);
          parseHostPort(item);
          return [];
        } catch (e) {
          return [{ at: `[${i}]`, value: item, message: (e as Error).message }];
        }
      });
    },
    // From the environment: a JSON list, or "a:3478,b:3478".
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
  },
  peers: {
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
    coerce(s) {
      try {
        return JSON.parse(s) as unknown;
      } catch {
        return s;
      }
    },
  },
};

function toConvictFormat(name: string, def: FormatDef): convict.Format {
  return {
    name,
    validate(v: unknown) {
      if (v === null && def.nullable) return;
      if (v === null || v === undefined) throw new Error(`is required: expected ${def.expected}`);
      const first = def.problems(v)[0];
      if (first) throw new Error(`${first.at}${first.at ? ': ' : ''}${first.message}`);
    },
    coerce: def.coerce,
  };
}

convict.addFormats(Object.fromEntries(Object.entries(formats).map(([n, d]) => [n, toConvictFormat(n, d)])));

// ------------------------------------------------------------------- schema

/** `underlay.publicIp` -> `VXEDGE_UNDERLAY_PUBLIC_IP`. */
export function envName(path: string): string {
  return `VXEDGE_${path.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/\./g, '_').toUpperCase()}`;
}

export function isLeaf(node: LeafSpec | SchemaTree): node is LeafSpec {
  return Object.hasOwn(node, 'default');
}

/** The schema; `node` defaults to the lower-cased host name, injectable for tests. */
export function buildSchema(hostname: string = os.hostname()): SchemaTree {
  return {
    site: {
      doc: `Site id (${ID_PATTERN}); used in MQTT topics and the Node name vxedge-{site}-{node}. Required.`,
      default: null,
      format: 'site-id',
      env: 'VXEDGE_SITE',
    },
    node: {
      doc: `Gateway id within the site (${ID_PATTERN}). Default: the host name, lower-cased.`,
      default: hostname.toLowerCase(),
      format: 'site-id',
      env: 'VXEDGE_NODE',
    },
    stateDir: {
      doc: 'Persistent state: the VTEP MAC, learned endpoints.',
      default: '/var/lib/vxedge',
      format: 'path',
      env: 'VXEDGE_STATE_DIR',
    },
    runDir: {
      doc: 'Runtime state: status.json.',
      default: '/run/vxedge',
      format: 'path',
      env: 'VXEDGE_RUN_DIR',
    },
    underlay: {
      iface: {
        doc: 'NIC whose IPv4 address carries the tunnel (flannel --iface); null: the NIC of the default route.',
        default: null,
        format: 'ifname-or-null',
        env: 'VXEDGE_UNDERLAY_IFACE',
      },
      address: {
        doc: 'Local IPv4 address to bind; null: the first IPv4 address of underlay.iface.',
        default: null,
        format: 'ipv4-or-null',
        env: 'VXEDGE_UNDERLAY_ADDRESS',
      },
      port: {
        doc: 'Local UDP port (VXLAN, STUN and keepalives share it).',
        default: 8472,
        format: 'port',
        env: 'VXEDGE_UNDERLAY_PORT',
      },
      publicIp: {
        doc: 'Public IPv4 address to announce (flannel --public-ip); null: discovered (STUN), else the local address.',
        default: null,
        format: 'public-ipv4-or-null',
        env: 'VXEDGE_UNDERLAY_PUBLIC_IP',
      },
    },
    vxlan: {
      vni: { doc: 'VXLAN network identifier, 1..16777215.', default: 1, format: 'vni', env: 'VXEDGE_VXLAN_VNI' },
      port: { doc: "UDP port of the peers' VTEPs.", default: 8472, format: 'port', env: 'VXEDGE_VXLAN_PORT' },
      mtu: {
        doc: 'Device MTU, 576..9000; null: underlay MTU - 50.',
        default: null,
        format: 'mtu-or-null',
        env: 'VXEDGE_VXLAN_MTU',
      },
      vtepMac: {
        doc: "This VTEP's MAC (unicast); null: generated once and kept in stateDir.",
        default: null,
        format: 'mac-or-null',
        env: 'VXEDGE_VXLAN_VTEP_MAC',
      },
    },
    overlay: {
      device: { doc: 'TUN/TAP device name.', default: 'flannel.1', format: 'ifname', env: 'VXEDGE_OVERLAY_DEVICE' },
      mode: {
        doc: 'tun: L3 device, vxedge builds the inner Ethernet header; tap: L2 device, the kernel resolves neighbours.',
        default: 'tun',
        format: ['tun', 'tap'],
        env: 'VXEDGE_OVERLAY_MODE',
      },
      network: {
        doc: "The cluster's pod network (flannel Network).",
        default: '10.244.0.0/16',
        format: 'cidr',
        env: 'VXEDGE_OVERLAY_NETWORK',
      },
      subnet: {
        doc: "This site's subnet inside overlay.network; its .0 address is the VTEP's own. Required.",
        default: null,
        format: 'cidr',
        env: 'VXEDGE_OVERLAY_SUBNET',
      },
      mssClamp: {
        doc: 'Clamp the TCP MSS of forwarded SYN and SYN-ACK packets to fit the tunnel MTU.',
        default: true,
        format: 'bool',
        env: 'VXEDGE_OVERLAY_MSS_CLAMP',
      },
      strictPeers: {
        doc:
          "Accept frames only from known peer endpoints, with inner sources inside the sending peer's subnet. " +
          'false accepts any source address and any inner source: only for clusters that route other prefixes via a peer.',
        default: true,
        format: 'bool',
        env: 'VXEDGE_OVERLAY_STRICT_PEERS',
      },
      offload: {
        doc:
          'TUN mode: let the kernel hand over and take TCP super-packets (virtio-net headers, TSO, UDP GSO/GRO); ' +
          'vxedge segments and coalesces them itself. Falls back to the plain path, with a warning, when the kernel refuses. ' +
          'TAP mode is always plain.',
        default: true,
        format: 'bool',
        env: 'VXEDGE_OVERLAY_OFFLOAD',
      },
    },
    peers: {
      doc:
        'The AWS nodes: list of { name, publicIp, port (default vxlan.port), subnet, vtepMac }. ' +
        'From the environment: a JSON list.',
      default: [],
      format: 'peers',
      env: 'VXEDGE_PEERS',
    },
    keepalive: {
      interval: {
        doc: 'Keepalive/probe period per peer (ms, or "25s"); keep it under the NAT UDP timeout. 0 disables probes (peers are then judged by their traffic alone, and NAT mappings are not held open).',
        default: '25s',
        format: 'duration-or-zero',
        env: 'VXEDGE_KEEPALIVE_INTERVAL',
      },
      timeout: {
        doc: 'A peer with no answer for this long is down; longer than keepalive.interval.',
        default: '90s',
        format: 'duration',
        env: 'VXEDGE_KEEPALIVE_TIMEOUT',
      },
    },
    nat: {
      stun: {
        doc:
          'STUN servers "host:port" (port defaults to 3478) for public-endpoint discovery. ' +
          'From the environment: comma-separated or a JSON list.',
        default: [],
        format: 'host-port-list',
        env: 'VXEDGE_NAT_STUN',
      },
    },
    mqtt: {
      url: {
        doc: 'Broker URL: mqtt://, mqtts://, ws:// or wss://; null disables MQTT.',
        default: null,
        format: 'mqtt-url-or-null',
        env: 'VXEDGE_MQTT_URL',
      },
      topicPrefix: {
        doc: 'First topic level: {topicPrefix}/{site}/{node}/status and /health.',
        default: 'vxedge',
        format: 'topic-level',
        env: 'VXEDGE_MQTT_TOPIC_PREFIX',
      },
      interval: {
        doc: 'Health publishing period; also published at once on any state change.',
        default: '30s',
        format: 'duration',
        env: 'VXEDGE_MQTT_INTERVAL',
      },
      username: { doc: 'Broker user name.', default: null, format: 'string-or-null', env: 'VXEDGE_MQTT_USERNAME' },
      password: {
        doc: 'Broker password; prefer mqtt.passwordFile to keep it out of the config.',
        default: null,
        format: 'string-or-null',
        env: 'VXEDGE_MQTT_PASSWORD',
        sensitive: true,
      },
      passwordFile: {
        doc: 'File holding the broker password (not with mqtt.password).',
        default: null,
        format: 'path-or-null',
        env: 'VXEDGE_MQTT_PASSWORD_FILE',
      },
      ca: { doc: 'TLS CA bundle (PEM).', default: null, format: 'path-or-null', env: 'VXEDGE_MQTT_CA' },
      cert: {
        doc: 'TLS client certificate (PEM) for mutual TLS, e.g. AWS IoT Core; needs mqtt.key.',
        default: null,
        format: 'path-or-null',
        env: 'VXEDGE_MQTT_CERT',
      },
      key: {
        doc: 'TLS client private key (PEM); needs mqtt.cert.',
        default: null,
        format: 'path-or-null',
        env: 'VXEDGE_MQTT_KEY',
      },
    },
    board: {
      led: {
        doc:
          'Status LED: a name under /sys/class/leds (Raspberry Pi: "ACT", older kernels "led0") or an LED directory; ' +
          'steady on while every peer is up, blinking when degraded, off when down or stopped. null: the LEDs are left alone.',
        default: null,
        format: 'led-or-null',
        env: 'VXEDGE_BOARD_LED',
      },
    },
    log: {
      level: {
        doc: 'Log level.',
        default: 'info',
        format: ['debug', 'info', 'warn', 'error'],
        env: 'VXEDGE_LOG_LEVEL',
      },
    },
  };
}

/** Every leaf of the tree with its dotted path, in schema order. */
export function leaves(tree: SchemaTree, prefix = ''): Array<{ path: string; spec: LeafSpec }> {
  return Object.entries(tree).flatMap(([k, node]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return isLeaf(node) ? [{ path, spec: node }] : leaves(node, path);
  });
}

/** Problems with one leaf's value (null/undefined handled by the caller). */
export function valueProblems(spec: LeafSpec, v: unknown): SubProblem[] {
  if (Array.isArray(spec.format)) {
    const choices = spec.format.map((x) => `"${x}"`).join(', ');
    return spec.format.includes(v as string) ? [] : bad(v, `is not one of ${choices}`);
  }
  return formats[spec.format as string].problems(v);
}

export function formatOf(spec: LeafSpec): { expected: string; nullable: boolean } {
  if (Array.isArray(spec.format)) return { expected: `one of ${spec.format.join(', ')}`, nullable: false };
  const def = formats[spec.format as string];
  return { expected: def.expected, nullable: def.nullable === true };
}
