// Config file + VXEDGE_* environment -> a validated, typed Config, or one
// ConfigError that names every bad key at once: operators fix a site config
// over a slow link, and one round trip per typo is too many.
//
// Stages: parse the file; drop unknown keys (reported with a suggestion) and
// values convict cannot hold; let convict merge defaults, file and
// environment; check each key with its schema format; check the keys against
// each other; build the typed Config.

import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import convict from 'convict';
import YAML from 'yaml';
import { ConfigError, type Cidr, type Config, type ConfigProblem } from './types.js';
import { ID_PATTERN, NODE_NAME_RE, defaultNodeName, maskUrl, show, unknownKeyMessage } from './formats.js';
import {
  allPaths,
  buildSchema,
  buildValues,
  convictSchema,
  envAlias,
  isLeaf,
  isRequired,
  leaves,
  valueProblems,
  type Leaf,
  type SchemaTree,
} from './schema.js';
import { cidrContains, cidrOverlaps, parseCidr, prefixMask } from '../util/ipv4.js';
import { parseMac } from '../util/mac.js';
import { formatDuration, parseDuration } from '../util/duration.js';
import { whyUnreadable } from '../util/why-unreadable.js';
import { firstDuplicateKey } from './json-duplicates.js';
import { isPlainObject } from '../util/plain-object.js';

export type ConfigFormat = 'json' | 'yaml';

export interface LoadOptions {
  /** Stands in for os.hostname(), the default of `node`. */
  hostname?: string;
}

const FILE = '(file)';
const MASK = '***';
const SENSITIVE_KEYS = new Set(['mqtt.password']);

type Tree = Record<string, unknown>;


function getPath(obj: Tree, dotted: string): unknown {
  let cur: unknown = obj;
  for (const k of dotted.split('.')) cur = isPlainObject(cur) && Object.hasOwn(cur, k) ? cur[k] : undefined;
  return cur;
}

function fileError(source: string, message: string): ConfigError {
  return new ConfigError(source, [{ key: FILE, value: source, message }]);
}

// ------------------------------------------------------------------ parsing

function lineCol(text: string, pos: number): string {
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  return `line ${line}, column ${pos - before.lastIndexOf('\n')}`;
}

/**
 * The refusal of a key a mapping holds twice. JSON.parse keeps the later of the two silently
 * (a second `peers` list would drop the first); YAML refuses them but names only the position.
 */
function duplicateKeyMessage(key: string, where: string): string {
  return `duplicate key ${JSON.stringify(key)}${where}: a key may appear once in each mapping, and the later would silently replace the earlier; keep one (merging what both hold)`;
}

/** The key that starts at `pos` of a YAML text (YAML's DUPLICATE_KEY error gives only where). */
function yamlKeyAt(body: string, pos: number): string {
  const at = body.slice(pos);
  const quoted = /^"(?:[^"\\]|\\.)*"/.exec(at);
  try {
    return quoted ? (JSON.parse(quoted[0]) as string) : (/^'?([^:'\n]*?)'?\s*:/.exec(at)?.[1] ?? at.split(/\s/)[0] ?? '');
  } catch {
    return quoted![0];
  }
}

function parseText(text: string, source: string, format: ConfigFormat): unknown {
  const body = text.replace(/^\uFEFF/, '');
  if (body.trim() === '') throw fileError(source, 'the file is empty; it needs at least site and overlay.subnet');
  if (format === 'json') {
    let value: unknown;
    try {
      value = JSON.parse(body) as unknown;
    } catch (e) {
      const msg = (e as Error).message.replace(/, ".*" is not valid JSON$/s, '');
      const pos = /at position (\d+)/.exec(msg);
      const where = pos ? ` at ${lineCol(body, Number(pos[1]))}` : '';
      // JSON has no comments, and a site file is where people want them.
      const comments = /^\s*(\/\/|\/\*|#)/m.test(body) ? '; JSON has no comments: write the file as YAML (site.yaml, # comments; the same keys)' : '';
      throw fileError(source, `JSON syntax error${where}: ${msg.replace(/ in JSON at position \d+.*$/, '')}${comments}`);
    }
    const dup = firstDuplicateKey(body);
    if (dup) throw fileError(source, duplicateKeyMessage(dup.key, ` at ${lineCol(body, dup.pos)}`));
    return value;
  }
  try {
    return YAML.parse(body) as unknown;
  } catch (e) {
    const err = e as Error & { code?: string; pos?: [number, number]; linePos?: Array<{ line: number; col: number }> };
    if (err.code === 'DUPLICATE_KEY' && err.pos) {
      const at = err.linePos?.[0];
      throw fileError(source, duplicateKeyMessage(yamlKeyAt(body, err.pos[0]), at ? ` at line ${at.line}, column ${at.col}` : ''));
    }
    // The library's own advice ("use YAML.parseAllDocuments()") means nothing to an operator.
    const reason = err.code === 'MULTIPLE_DOCS'
      ? 'the file holds several YAML documents ("---" between them); a site file is one document'
      : (err.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    const at = err.linePos?.[0];
    const where = at ? ` at line ${at.line}, column ${at.col}` : '';
    throw fileError(source, `YAML syntax error${where}: ${reason}`);
  }
}

function formatOfFile(file: string): ConfigFormat | null {
  const ext = path.extname(file).toLowerCase();
  return ext === '.json' ? 'json' : ext === '.yaml' || ext === '.yml' ? 'yaml' : null;
}

// ------------------------------------------------------------- unknown keys

/**
 * Copies the known part of the file's tree. Unknown keys, mappings where a
 * key holds a plain value, and plain values where a section belongs are
 * reported here, because convict would otherwise keep or choke on them.
 */
function knownPart(raw: Tree, tree: SchemaTree, prefix: string, known: string[], out: ConfigProblem[]): Tree {
  const copy: Tree = {};
  for (const [k, v] of Object.entries(raw)) {
    const p = prefix ? `${prefix}.${k}` : k;
    const node = Object.hasOwn(tree, k) ? tree[k] : undefined;
    if (node === undefined) {
      out.push({ key: p, value: v, message: unknownKeyMessage(p, known) });
    } else if (isLeaf(node)) {
      if (isPlainObject(v)) out.push(...leafProblems(p, node, v));
      else copy[k] = v;
    } else if (isPlainObject(v)) {
      copy[k] = knownPart(v, node, p, known, out);
    } else if (v !== null) {
      // null is a section whose keys are all commented out: defaults apply.
      const keys = Object.keys(node).join(', ');
      out.push({ key: p, value: v, message: `${show(v)} is not a section; expected a mapping of ${keys}` });
    }
  }
  return copy;
}

/**
 * The environment with every key's alias (`VXEDGE_UNDERLAY_PUBLICIP`, envAlias) moved to its
 * variable (`VXEDGE_UNDERLAY_PUBLIC_IP`), which is the one convict reads; `from` names the
 * variable a value came from, for messages. Both set to different values is a problem: which
 * one wins would be a guess.
 */
function resolveEnvAliases(env: NodeJS.ProcessEnv, tree: SchemaTree, out: ConfigProblem[]): { env: NodeJS.ProcessEnv; from: Map<string, string> } {
  const resolved = { ...env };
  const from = new Map<string, string>();
  for (const { path: key, env: name } of leaves(tree)) {
    const alias = envAlias(key);
    if (alias === name || env[alias] === undefined) continue;
    if (env[name] !== undefined && env[name] !== env[alias]) {
      out.push({ key: alias, value: mask(key, env[alias]), message: `is set, and so is ${name}, to another value (both set ${key}): unset one of them` });
      continue;
    }
    resolved[name] = env[alias];
    from.set(name, alias);
  }
  return { env: resolved, from };
}

/** VXEDGE_* variables that name no key are ignored unless they look like a typo of one. */
function envTypos(env: NodeJS.ProcessEnv, known: string[]): ConfigProblem[] {
  const names = new Set(known);
  return Object.keys(env)
    .filter((k) => k.startsWith('VXEDGE_') && !names.has(k) && env[k] !== undefined)
    .map((k) => ({ key: k, value: env[k], message: unknownKeyMessage(k, known, 'environment variable') }))
    .filter((p) => p.message.includes('did you mean'));
}

// -------------------------------------------------------------- leaf checks

function mask(key: string, v: unknown): unknown {
  if (SENSITIVE_KEYS.has(key) && v !== null && v !== undefined) return MASK;
  return (key === 'mqtt.url' || key === 'mqtt.proxy') && typeof v === 'string' ? maskUrl(v) : v;
}

function leafProblems(key: string, spec: Leaf<unknown>, v: unknown): ConfigProblem[] {
  if (v === null || v === undefined) {
    const { expected, nullable } = spec.format;
    if (nullable) return [];
    const message = isRequired(spec)
      ? `is required: expected ${expected}`
      : `has no value: expected ${expected}, or leave it out for the default ${show(spec.default)}`;
    return [{ key, value: v, message }];
  }
  return valueProblems(spec, v).map((p) => {
    let message = p.message;
    if (spec.sensitive) {
      const shown = show(p.value);
      message = message.startsWith(shown)
        ? MASK + message.slice(shown.length)
        : `${MASK} is not ${spec.format.expected}`;
    }
    return { key: key + p.at, value: mask(key, p.value), message };
  });
}

function checkLeaves(
  values: Tree,
  tree: SchemaTree,
  raw: Tree,
  env: NodeJS.ProcessEnv,
  envFrom: Map<string, string>,
  skip: Set<string>,
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const { path: key, spec, env: name } of leaves(tree)) {
    if (skip.has(key)) continue;
    const envVar = envFrom.get(name) ?? name;
    const fromEnv = env[name] !== undefined;
    let found = leafProblems(key, spec, getPath(values, key));
    if (key === 'node' && !fromEnv && getPath(raw, 'node') === undefined) {
      found = found.map((p) => ({
        ...p,
        message: `the host name ${show(p.value)} is not a valid node id (${ID_PATTERN}); set "node" explicitly in the config (or VXEDGE_NODE)`,
      }));
    }
    // Name the variable, or the operator hunts for a value that is not in the file.
    if (fromEnv) found = found.map((p) => ({ ...p, message: `${p.message} (from ${envVar})` }));
    out.push(...found);
  }
  return out;
}

// ------------------------------------------------------------- cross checks

function attempt<T>(f: () => T): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}

interface PeerView {
  i: number;
  name: string | null;
  subnet: Cidr | null;
  vtepMac: string | null;
}

function peerViews(peers: unknown): PeerView[] {
  if (!Array.isArray(peers)) return [];
  return peers.map((p: unknown, i) => {
    const o = isPlainObject(p) ? p : {};
    return {
      i,
      name: typeof o.name === 'string' ? o.name : null,
      subnet: attempt(() => parseCidr(o.subnet as string)),
      vtepMac: attempt(() => parseMac(o.vtepMac as string)),
    };
  });
}

/**
 * The earliest of the prefixes added so far that overlaps a given one, in time linear in the
 * number of prefixes (a site file of thousands of peers was checked pairwise: 16 000 took 5 s).
 * Two IPv4 prefixes overlap exactly when one contains the other, so the earlier one is either
 * one of the 33 prefixes around the given one (`exact`) or inside it (`under`, which keeps,
 * for every prefix around each added one, the earliest added below it).
 */
class EarliestOverlap {
  private readonly exact = new Map<string, number>();
  private readonly under = new Map<string, number>();

  /** Adds prefix `c` as number `i`; numbers must be added in increasing order. */
  add(c: Cidr, i: number): void {
    const key = `${c.network}/${c.prefixLen}`;
    if (!this.exact.has(key)) this.exact.set(key, i);
    for (let len = 0; len <= c.prefixLen; len++) {
      const around = `${(c.network & prefixMask(len)) >>> 0}/${len}`;
      if (!this.under.has(around)) this.under.set(around, i);
    }
  }

  /** The number of the earliest added prefix that overlaps `c`, or undefined. */
  find(c: Cidr): number | undefined {
    let best = this.under.get(`${c.network}/${c.prefixLen}`);
    for (let len = 0; len < c.prefixLen; len++) {
      const i = this.exact.get(`${(c.network & prefixMask(len)) >>> 0}/${len}`);
      if (i !== undefined && (best === undefined || i < best)) best = i;
    }
    return best;
  }
}

function checkPeersAgainst(
  peers: PeerView[],
  network: Cidr | null,
  subnet: Cidr | null,
  ourMac: string | null,
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const problem = (key: string, value: unknown, message: string): void => {
    out.push({ key, value, message });
  };
  const ownMac = 'every VTEP needs its own MAC';
  // The earliest peer with each name and MAC, and the subnets so far: each peer is compared
  // with the ones before it, and a twin is named by its first occurrence.
  const byName = new Map<string, PeerView>();
  const byMac = new Map<string, PeerView>();
  const subnets = new EarliestOverlap();
  peers.forEach((p, n) => {
    const key = `peers[${p.i}]`;
    const sameName = p.name === null ? undefined : byName.get(p.name);
    if (sameName) {
      problem(`${key}.name`, p.name, `${show(p.name)} is already the name of peers[${sameName.i}]; peer names must be unique`);
    } else if (p.name !== null) {
      byName.set(p.name, p);
    }
    if (p.subnet !== null) {
      const s = p.subnet;
      const twinAt = subnets.find(s);
      const twin = twinAt === undefined ? undefined : peers[twinAt];
      if (network && !cidrContains(network, s)) {
        problem(`${key}.subnet`, s.text, `${show(s.text)} is not inside overlay.network ${network.text}`);
      } else if (subnet && cidrOverlaps(subnet, s)) {
        problem(`${key}.subnet`, s.text, `${show(s.text)} overlaps this site's overlay.subnet ${subnet.text}`);
      } else if (twin?.subnet) {
        problem(`${key}.subnet`, s.text, `${show(s.text)} overlaps peers[${twin.i}].subnet ${twin.subnet.text}`);
      }
      subnets.add(s, n);
    }
    if (p.vtepMac !== null) {
      const twin = byMac.get(p.vtepMac);
      if (p.vtepMac === ourMac) {
        problem(`${key}.vtepMac`, p.vtepMac, `${show(p.vtepMac)} is this site's own vxlan.vtepMac; ${ownMac}`);
      } else if (twin) {
        problem(`${key}.vtepMac`, p.vtepMac, `${show(p.vtepMac)} is already the vtepMac of peers[${twin.i}]; ${ownMac}`);
      }
      if (!twin) byMac.set(p.vtepMac, p);
    }
  });
  return out;
}

function crossChecks(v: Tree, bad: (key: string) => boolean): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const ok = (...keys: string[]): boolean => keys.every((k) => !bad(k));
  const network = ok('overlay.network') ? parseCidr(getPath(v, 'overlay.network') as string) : null;
  const subnet = ok('overlay.subnet') ? parseCidr(getPath(v, 'overlay.subnet') as string) : null;

  if (network && subnet && !cidrContains(network, subnet)) {
    out.push({
      key: 'overlay.subnet',
      value: subnet.text,
      message: `${show(subnet.text)} is not inside overlay.network ${network.text}; pick a subnet of the cluster's pod network`,
    });
  }
  const ourMac = ok('vxlan.vtepMac') ? attempt(() => parseMac(getPath(v, 'vxlan.vtepMac') as string)) : null;
  const peers = peerViews(getPath(v, 'peers'));
  out.push(...checkPeersAgainst(peers, network, subnet, ourMac).filter((p) => !bad(p.key)));

  if (ok('keepalive.interval', 'keepalive.timeout')) {
    const interval = parseDuration(getPath(v, 'keepalive.interval'));
    const timeout = parseDuration(getPath(v, 'keepalive.timeout'));
    if (timeout <= interval) {
      out.push({
        key: 'keepalive.timeout',
        value: timeout,
        message: `${formatDuration(timeout)} must be longer than keepalive.interval (${formatDuration(interval)}), or every peer flaps`,
      });
    }
  }
  const set = (key: string): boolean => ok(key) && getPath(v, key) !== null;
  // The site's Node name (defaultNodeName) unless cluster.kubernetes.nodeName is set: ids the
  // contract allows can still make one Kubernetes refuses (a node id ending in "-"), and
  // manifest, rbac and registration would carry it.
  if (ok('site', 'node', 'cluster.kubernetes.nodeName') && getPath(v, 'cluster.kubernetes.nodeName') === null) {
    const name = defaultNodeName(String(getPath(v, 'site')), String(getPath(v, 'node')));
    if (!NODE_NAME_RE.test(name)) {
      out.push({
        key: 'node',
        value: getPath(v, 'node'),
        message: `${show(getPath(v, 'node'))} makes the site's Node name ${show(name)}, which Kubernetes refuses (it must end with a letter or digit); change it, or set cluster.kubernetes.nodeName`,
      });
    }
  }
  if (set('underlay.iface') && ok('overlay.device') && getPath(v, 'underlay.iface') === getPath(v, 'overlay.device')) {
    out.push({
      key: 'overlay.device',
      value: getPath(v, 'overlay.device'),
      message: `${show(getPath(v, 'overlay.device'))} is also underlay.iface: the tunnel device needs a name of its own (flannel's is flannel.1)`,
    });
  }
  if (set('mqtt.password') && set('mqtt.passwordFile')) {
    out.push({ key: 'mqtt.password', value: MASK, message: 'is set together with mqtt.passwordFile; keep only one of them' });
  }
  const pair = (a: string, b: string, why: string): void => {
    if (set(a) !== set(b) && ok(a, b)) {
      const [has, lacks] = set(a) ? [a, b] : [b, a];
      out.push({ key: lacks, value: null, message: `is required when ${has} is set: ${why}` });
    }
  };
  pair('mqtt.cert', 'mqtt.key', 'mutual TLS needs both the certificate and its key');
  pair('cluster.etcd.cert', 'cluster.etcd.key', 'client certificate authentication needs both the certificate and its key');
  pair('cluster.etcd.username', 'cluster.etcd.passwordFile', 'etcd authenticates a user name with its password');
  if (set('metrics.webConfig') && !set('metrics.listen') && ok('metrics.webConfig', 'metrics.listen')) {
    out.push({ key: 'metrics.listen', value: null, message: 'is required when metrics.webConfig is set: the web configuration protects the address metrics.listen serves' });
  }
  const endpoints = getPath(v, 'cluster.etcd.endpoints');
  if (ok('cluster.source', 'cluster.etcd.endpoints') && getPath(v, 'cluster.source') === 'etcd' && Array.isArray(endpoints) && endpoints.length === 0) {
    out.push({ key: 'cluster.etcd.endpoints', value: [], message: 'is empty, but cluster.source is etcd: list the etcd v3 endpoints flannel uses (its --etcd-endpoints), e.g. ["https://10.0.0.5:2379"]' });
  }
  return out;
}

// --------------------------------------------------------------------- API

/** Validates an already parsed document (the file's top-level value). */
export function configFromObject(
  raw: unknown,
  source: string,
  env: NodeJS.ProcessEnv = process.env,
  options: LoadOptions = {},
): Config {
  if (!isPlainObject(raw)) {
    const what = raw === null ? 'holds no settings' : `holds ${show(raw)}`;
    throw fileError(source, `the file ${what}; expected a mapping of settings such as site and overlay.subnet`);
  }
  const tree = buildSchema(options.hostname);
  const known = allPaths(tree);
  const problems: ConfigProblem[] = [];
  const clean = knownPart(raw, tree, '', known, problems);
  problems.push(...envTypos(env, [...new Set(leaves(tree).flatMap((l) => [l.env, envAlias(l.path)]))]));
  const { env: envResolved, from: envFrom } = resolveEnvAliases(env, tree, problems);

  const conf = convict(convictSchema(tree), { env: envResolved, args: [] });
  conf.load(clean);
  const values = conf.getProperties();

  const skip = new Set(problems.map((p) => p.key));
  problems.push(...checkLeaves(values, tree, raw, envResolved, envFrom, skip));
  // A key is bad when it, or anything inside it ("peers[1].subnet" inside "peers"), has a
  // problem: every problem's key marks itself and each key around it, so that asking is a
  // lookup however many problems a long peer list has.
  const badKeys = new Set<string>();
  for (const { key } of problems) {
    for (let at = 1; at < key.length; at++) if (key[at] === '.' || key[at] === '[') badKeys.add(key.slice(0, at));
    badKeys.add(key);
  }
  const bad = (key: string): boolean => badKeys.has(key);
  problems.push(...crossChecks(values, bad));

  if (problems.length > 0) throw new ConfigError(source, problems);
  return buildValues(tree, values);
}

/** Parses and validates config text; `source` names it in messages. */
export function parseConfigText(
  text: string,
  source: string,
  format: ConfigFormat,
  env: NodeJS.ProcessEnv = process.env,
  options: LoadOptions = {},
): Config {
  return configFromObject(parseText(text, source, format), source, env, options);
}

/** Reads a .json/.yaml/.yml site config, merges VXEDGE_* variables over it and validates it. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Config {
  const format = formatOfFile(file);
  if (format === null) {
    // A path that is no file says so first: `-c /etc/vxedge` is not a file of an unknown type.
    let dir: boolean;
    try {
      dir = statSync(file).isDirectory();
    } catch (e) {
      throw unreadable(file, e); // missing, below a file, or under a directory this user may not search
    }
    if (dir) throw unreadable(file, { code: 'EISDIR' });
    throw fileError(file, `unknown file type "${path.extname(file) || path.basename(file)}"; use .json, .yaml or .yml`);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw unreadable(file, e);
  }
  return parseConfigText(text, file, format, env, options);
}

function unreadable(file: string, e: unknown): ConfigError {
  const hint = (e as NodeJS.ErrnoException).code === 'EISDIR' ? `; give the config file itself, e.g. ${path.join(file, 'site.yaml')}` : '';
  return fileError(file, `cannot read the file: ${whyUnreadable(e)}${hint}`);
}

/** The block printed on stderr before exit 2: one line per bad key, secrets masked, no stack. */
/** Problems listed in full in the block; the rest are counted (a peers list pasted with one
 *  systematic mistake gives one problem per peer, and 60 000 lines help nobody). */
const BLOCK_PROBLEMS = 100;
/** The same for the one-line form, which goes into the health document (and over MQTT). */
const LINE_PROBLEMS = 10;

export function formatConfigError(err: ConfigError, most = BLOCK_PROBLEMS): string {
  const n = err.problems.length;
  const lines = err.problems.slice(0, most).map((p) => {
    let message = p.message;
    if (SENSITIVE_KEYS.has(p.key) && typeof p.value === 'string' && p.value !== MASK && p.value !== '') {
      message = message.split(p.value).join(MASK);
    }
    return `  - ${p.key}: ${message}`;
  });
  if (n > most) lines.push(`  - and ${n - most} more; fix these first (the rest are often the same mistake) and run vxedge check -c again`);
  return [`vxedge: invalid config ${err.source} (${n} problem${n === 1 ? '' : 's'}):`, ...lines].join('\n');
}

/** The same on one line, for the health document: "invalid config F (1 problem): key: why; key: why". */
export function formatConfigErrorLine(err: ConfigError): string {
  const [head = '', ...items] = formatConfigError(err, LINE_PROBLEMS).split('\n');
  return `${head.replace(/^vxedge: /, '')} ${items.map((l) => l.replace(/^ {2}- /, '')).join('; ')}`;
}
