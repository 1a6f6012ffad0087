// metrics.webConfig: TLS and basic auth for the metrics endpoint, in the web configuration
// format of Prometheus's exporter-toolkit (node_exporter's --web.config.file), so a fleet
// that protects its exporters already writes this file the same way, and Prometheus's
// `scheme: https`, `tls_config` and `basic_auth` scrape it as any exporter.
//
// parseWebConfig is pure (the file's text in, a checked WebConfig or a WebConfigError out,
// which names the key, what is wrong and what to do); loadWebConfig also reads the files
// the config names and builds the TLS options, so that a certificate that does not match
// its key is found when the file is loaded, not at the first scrape.
//
// Served as the toolkit serves it, with these differences (docs/health.md): HTTP/1.1 only
// (`http2` is taken and ignored; Prometheus falls back through ALPN); the file is read again
// at each refresh of the checks (30 s), not at each request; `cipher_suites` and
// `curve_preferences` take Go's names, turned into OpenSSL's.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { parse as parseYaml } from 'yaml';
import { isPlainObject } from '../util/plain-object.js';
import { parseDuration } from '../util/duration.js';
import { fileStamp } from '../util/file-stamp.js';
import { show } from '../util/show.js';
import { whyUnreadable } from '../util/why-unreadable.js';

/** Go's crypto/tls ClientAuthType names, as the toolkit takes them. */
export const CLIENT_AUTH_TYPES = ['NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven', 'RequireAndVerifyClientCert'] as const;
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];

/** A PEM text, from a file (absolute) or written in the config itself. */
export type PemSource = { file: string } | { inline: string };

export interface WebTls {
  cert: PemSource;
  key: PemSource;
  clientCa: PemSource | null;
  clientAuth: ClientAuthType;
  /** A client certificate must carry one of these SANs (DNS, IP, e-mail or URI); null: any. */
  allowedSans: string[] | null;
  minVersion: tls.SecureVersion;
  maxVersion: tls.SecureVersion;
  /** OpenSSL's names of the TLS 1.2 suites, in order; null: OpenSSL's defaults. */
  ciphers: string[] | null;
  preferServerCiphers: boolean;
  /** OpenSSL's names of the ECDHE groups, in order; null: OpenSSL's defaults. */
  curves: string[] | null;
}

export interface WebConfig {
  /** The file, absolute. */
  file: string;
  tls: WebTls | null;
  /** Extra response headers (the toolkit's five). */
  headers: Record<string, string>;
  /** User name -> bcrypt hash; empty: no basic auth. */
  users: Map<string, string>;
  /** A token bucket over every request; null: none. */
  rateLimit: { intervalMs: number; burst: number } | null;
}

export class WebConfigError extends Error {
  constructor(
    message: string,
    readonly fix: string,
  ) {
    super(message);
    this.name = 'WebConfigError';
  }
}

/** Go's crypto/tls names of the suites it offers up to TLS 1.2 -> OpenSSL's. */
const CIPHERS: Record<string, string> = {
  TLS_RSA_WITH_AES_128_CBC_SHA: 'AES128-SHA',
  TLS_RSA_WITH_AES_256_CBC_SHA: 'AES256-SHA',
  TLS_RSA_WITH_AES_128_GCM_SHA256: 'AES128-GCM-SHA256',
  TLS_RSA_WITH_AES_256_GCM_SHA384: 'AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-RSA-CHACHA20-POLY1305',
};
/** TLS 1.3's suites: Go takes their names and always offers all three, as OpenSSL does. */
const TLS13_CIPHERS = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];
const CURVES: Record<string, string> = { CurveP256: 'P-256', CurveP384: 'P-384', CurveP521: 'P-521', X25519: 'X25519' };
const VERSIONS: Record<string, tls.SecureVersion> = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' };
const VERSION_ORDER: tls.SecureVersion[] = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];
/** The headers the toolkit lets a config add, with the values it allows (null: any). */
const HEADERS: Record<string, string[] | null> = {
  'Strict-Transport-Security': null,
  'X-Content-Type-Options': ['nosniff'],
  'X-Frame-Options': ['deny', 'sameorigin'],
  'X-XSS-Protection': null,
  'Content-Security-Policy': null,
};
/** A bcrypt hash as crypt(3), htpasswd -B and Go write it: $2a$, $2b$ or $2y$, a two-digit cost, 53 characters of salt and hash. */
const BCRYPT_RE = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;
export const HASH_HOWTO = '`vxedge password-hash` prints one (or `htpasswd -nBC 10 "" | tr -d \':\\n\'`)';

type Obj = Record<string, unknown>;

/** Walks the file's keys, each error naming where it is. */
class Reader {
  constructor(readonly file: string) {}

  fail(key: string, what: string, fix: string): never {
    throw new WebConfigError(`metrics.webConfig ${this.file}: ${key}: ${what}`, fix);
  }

  /** `v` as an object (null/absent: empty) whose keys are all in `known`. */
  section(key: string, v: unknown, known: readonly string[]): Obj {
    if (v === undefined || v === null) return {};
    if (!isPlainObject(v)) {
      if (key === '') this.fail('(the file)', `${show(v)} is not a mapping of keys`, `write it as YAML keys: ${known.join(', ')}, as in the toolkit's web configuration`);
      this.fail(key, `${show(v)} is not a mapping of keys`, `write ${key} as keys under it, as in the toolkit's web configuration`);
    }
    for (const k of Object.keys(v)) {
      if (!known.includes(k)) {
        const where = key === '' ? k : `${key}.${k}`;
        this.fail(where, 'is not a key of the web configuration', `remove it, or spell one of: ${known.join(', ')}`);
      }
    }
    return v;
  }

  string(key: string, v: unknown): string | null {
    if (v === undefined || v === null || v === '') return null;
    if (typeof v !== 'string') this.fail(key, `${show(v)} is not a string`, `quote it: ${key}: "${String(v)}"`);
    return v;
  }

  bool(key: string, v: unknown, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(key, `${show(v)} is not true or false`, `write ${key}: true or ${key}: false`);
    return v;
  }

  strings(key: string, v: unknown): string[] | null {
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) this.fail(key, `${show(v)} is not a list of strings`, `write ${key} as a YAML list: [a, b]`);
    return v as string[];
  }

  /** A PEM from `inlineKey` or `fileKey` (relative to the config's directory), not both. */
  pem(sec: Obj, inlineKey: string, fileKey: string, required: boolean): PemSource | null {
    const inline = this.string(`tls_server_config.${inlineKey}`, sec[inlineKey]);
    const file = this.string(`tls_server_config.${fileKey}`, sec[fileKey]);
    if (inline !== null && file !== null) {
      this.fail(`tls_server_config.${inlineKey}`, `is set together with ${fileKey}`, `keep one of tls_server_config.${inlineKey} and tls_server_config.${fileKey}`);
    }
    if (file !== null) return { file: path.resolve(path.dirname(this.file), file) };
    if (inline !== null) return { inline };
    if (required) {
      this.fail(`tls_server_config.${fileKey}`, `is missing: TLS needs the server's ${inlineKey === 'cert' ? 'certificate' : 'private key'}`,
        `set tls_server_config.${fileKey} (a PEM file; relative to the web configuration's directory) or ${inlineKey} (the PEM itself)`);
    }
    return null;
  }
}

function parseTls(r: Reader, v: unknown): WebTls | null {
  const known = ['cert', 'key', 'client_ca', 'cert_file', 'key_file', 'client_auth_type', 'client_ca_file', 'client_allowed_sans',
    'min_version', 'max_version', 'cipher_suites', 'prefer_server_cipher_suites', 'curve_preferences'];
  const sec = r.section('tls_server_config', v, known);
  // As the toolkit: TLS is on when any of these is set; then the certificate and key are required.
  const on = ['cert', 'key', 'client_ca', 'cert_file', 'key_file', 'client_ca_file', 'client_auth_type'].some((k) => sec[k] !== undefined && sec[k] !== null && sec[k] !== '');
  if (!on) {
    const stray = Object.keys(sec).find((k) => sec[k] !== undefined && sec[k] !== null);
    if (stray) r.fail(`tls_server_config.${stray}`, 'is set, but TLS is not: there is no certificate', 'set tls_server_config.cert_file and key_file, or remove it');
    return null;
  }
  const cert = r.pem(sec, 'cert', 'cert_file', true)!;
  const key = r.pem(sec, 'key', 'key_file', true)!;
  const clientCa = r.pem(sec, 'client_ca', 'client_ca_file', false);
  let clientAuth = (r.string('tls_server_config.client_auth_type', sec.client_auth_type) ?? 'NoClientCert') as string;
  if (clientAuth === 'RequireClientCert') clientAuth = 'RequireAnyClientCert'; // the toolkit's older name
  if (!(CLIENT_AUTH_TYPES as readonly string[]).includes(clientAuth)) {
    r.fail('tls_server_config.client_auth_type', `${show(clientAuth)} is not a client auth type`, `use one of ${CLIENT_AUTH_TYPES.join(', ')} (RequireAndVerifyClientCert to let in only clients whose certificate client_ca_file signed)`);
  }
  const auth = clientAuth as ClientAuthType;
  if (clientCa && auth === 'NoClientCert') {
    r.fail('tls_server_config.client_auth_type', 'is NoClientCert, but a client CA is set: the CA would never be asked',
      'set client_auth_type: RequireAndVerifyClientCert, or remove the client CA');
  }
  const allowedSans = r.strings('tls_server_config.client_allowed_sans', sec.client_allowed_sans);
  if (allowedSans && auth !== 'RequireAnyClientCert' && auth !== 'RequireAndVerifyClientCert') {
    r.fail('tls_server_config.client_allowed_sans', `needs a client certificate, and client_auth_type ${auth} lets a client in without one`,
      'set client_auth_type: RequireAndVerifyClientCert');
  }
  const version = (k: 'min_version' | 'max_version', dflt: tls.SecureVersion): tls.SecureVersion => {
    const s = r.string(`tls_server_config.${k}`, sec[k]);
    if (s === null) return dflt;
    const v = VERSIONS[s];
    if (!v) r.fail(`tls_server_config.${k}`, `${show(s)} is not a TLS version`, `use one of ${Object.keys(VERSIONS).join(', ')}`);
    return v;
  };
  const minVersion = version('min_version', 'TLSv1.2');
  const maxVersion = version('max_version', 'TLSv1.3');
  if (VERSION_ORDER.indexOf(minVersion) > VERSION_ORDER.indexOf(maxVersion)) {
    r.fail('tls_server_config.min_version', `${show(sec.min_version)} is above max_version ${show(sec.max_version)}`, 'lower min_version or raise max_version');
  }
  const suites = r.strings('tls_server_config.cipher_suites', sec.cipher_suites);
  let ciphers: string[] | null = null;
  if (suites && suites.length > 0) {
    ciphers = [];
    for (const s of suites) {
      if (TLS13_CIPHERS.includes(s)) continue;
      const o = CIPHERS[s];
      if (!o) r.fail('tls_server_config.cipher_suites', `${show(s)} is not a cipher suite Go offers`, `use Go's names (crypto/tls CipherSuites), e.g. ${Object.keys(CIPHERS).slice(-4).join(', ')}`);
      ciphers.push(o);
    }
  }
  const groups = r.strings('tls_server_config.curve_preferences', sec.curve_preferences);
  let curves: string[] | null = null;
  if (groups && groups.length > 0) {
    curves = groups.map((g) => CURVES[g] ?? r.fail('tls_server_config.curve_preferences', `${show(g)} is not a curve`, `use ${Object.keys(CURVES).join(', ')}`));
  }
  return {
    cert, key, clientCa, clientAuth: auth, allowedSans, minVersion, maxVersion, ciphers,
    preferServerCiphers: r.bool('tls_server_config.prefer_server_cipher_suites', sec.prefer_server_cipher_suites, true),
    curves,
  };
}

function parseHeaders(r: Reader, v: unknown): Record<string, string> {
  const sec = r.section('http_server_config.headers', v, Object.keys(HEADERS));
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(sec)) {
    const s = r.string(`http_server_config.headers.${k}`, val);
    if (s === null) continue;
    const allowed = HEADERS[k];
    if (allowed && !allowed.includes(s)) r.fail(`http_server_config.headers.${k}`, `${show(s)} is not allowed`, `use ${allowed.join(' or ')}`);
    out[k] = s;
  }
  return out;
}

function parseUsers(r: Reader, v: unknown): Map<string, string> {
  if (v === undefined || v === null) return new Map();
  if (!isPlainObject(v)) r.fail('basic_auth_users', `${show(v)} is not a mapping of user names to bcrypt hashes`, 'write one "name: hash" line per user under basic_auth_users');
  const out = new Map<string, string>();
  for (const [user, hash] of Object.entries(v)) {
    const key = `basic_auth_users.${user}`;
    if (user.includes(':')) r.fail(key, 'a user name cannot hold a colon (basic auth splits user and password at the first)', 'rename the user');
    if (typeof hash !== 'string' || !BCRYPT_RE.test(hash)) {
      r.fail(key, 'is not a bcrypt hash (a password is never written here, only its hash: 60 characters starting $2y$ or $2b$)', HASH_HOWTO);
    }
    const cost = Number(BCRYPT_RE.exec(hash)![1]);
    if (cost < 4 || cost > 31) r.fail(key, `has cost ${cost}; bcrypt's is 4 to 31`, `${HASH_HOWTO}; cost 10 is usual`);
    out.set(user, hash);
  }
  return out;
}

function parseRateLimit(r: Reader, v: unknown): WebConfig['rateLimit'] {
  const sec = r.section('rate_limit', v, ['interval', 'burst']);
  if (sec.interval === undefined || sec.interval === null) {
    if (sec.burst !== undefined && sec.burst !== null) r.fail('rate_limit.burst', 'is set without rate_limit.interval', 'set rate_limit.interval (e.g. "1s"), or remove the burst');
    return null;
  }
  if (typeof sec.interval !== 'string') r.fail('rate_limit.interval', `${show(sec.interval)} has no unit`, 'write a duration with its unit, e.g. "1s" or "500ms"');
  let intervalMs: number;
  try {
    intervalMs = parseDuration(sec.interval);
  } catch (e) {
    r.fail('rate_limit.interval', (e as Error).message, 'write a duration with its unit, e.g. "1s" or "500ms"');
  }
  if (intervalMs === 0) return null; // the toolkit's way to turn it off
  const burst = sec.burst;
  if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 1) {
    r.fail('rate_limit.burst', `${show(burst)}: with an interval, at least 1 request must be let through`, 'set rate_limit.burst to how many requests may come at once (e.g. 5)');
  }
  return { intervalMs, burst };
}

/** The web configuration in `text` (YAML), read from `file`. Throws WebConfigError. */
export function parseWebConfig(text: string, file: string): WebConfig {
  const abs = path.resolve(file);
  const r = new Reader(abs);
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: false, logLevel: 'error' }); // warnings (an unknown tag) are not for the gateway's stderr
  } catch (e) {
    r.fail('(the file)', `is not YAML: ${(e as Error).message.split('\n')[0]}`, 'fix the YAML (`python3 -c "import yaml,sys; yaml.safe_load(open(sys.argv[1]))" FILE` shows where)');
  }
  const top = r.section('', doc, ['tls_server_config', 'http_server_config', 'basic_auth_users', 'rate_limit']);
  const http = r.section('http_server_config', top.http_server_config, ['http2', 'headers']);
  r.bool('http_server_config.http2', http.http2, true); // checked, not used: HTTP/1.1 is served
  return {
    file: abs,
    tls: parseTls(r, top.tls_server_config),
    headers: parseHeaders(r, http.headers),
    users: parseUsers(r, top.basic_auth_users),
    rateLimit: parseRateLimit(r, top.rate_limit),
  };
}

/** A loaded web configuration: the parsed file and, with TLS, the server's options from the files it names. */
export interface LoadedWebConfig {
  config: WebConfig;
  /** Options for https.createServer; null without TLS. */
  tlsOptions: tls.TlsOptions | null;
  /** The files' versions when read (fileStamp): a change means load again. */
  stamp: string;
}

/** The files `config` reads: itself and the PEM files it names. */
export function webConfigFiles(config: WebConfig): string[] {
  const t = config.tls;
  const named = t ? [t.cert, t.key, t.clientCa].flatMap((s) => (s && 'file' in s ? [s.file] : [])) : [];
  return [config.file, ...named];
}

/** The version of every file in `files`, as one string ('-' for a file that cannot be stat'ed). */
export function filesStamp(files: readonly string[]): string {
  return files.map((f) => fileStamp(f) ?? '-').join(' ');
}

/** The PEM bytes of `source` (`key` of the web configuration `file`); an unreadable file is a WebConfigError. */
export function readPem(source: PemSource, key: string, file: string): Buffer {
  if ('inline' in source) return Buffer.from(source.inline);
  try {
    return readFileSync(source.file);
  } catch (e) {
    throw new WebConfigError(`metrics.webConfig ${file}: ${key} ${source.file}: ${whyUnreadable(e as NodeJS.ErrnoException)}`,
      `make ${source.file} readable by the gateway's user (vxedge), or fix the path (relative paths are from ${path.dirname(file)})`);
  }
}

/** The TLS options of `t`, from its files: the certificate and key checked to belong together. */
export function tlsServerOptions(t: WebTls, file: string): tls.TlsOptions {
  const opts: tls.TlsOptions = {
    cert: readPem(t.cert, 'tls_server_config.cert_file', file),
    key: readPem(t.key, 'tls_server_config.key_file', file),
    minVersion: t.minVersion,
    maxVersion: t.maxVersion,
    honorCipherOrder: t.preferServerCiphers,
    requestCert: t.clientAuth !== 'NoClientCert',
    // Only RequireAndVerifyClientCert refuses in the handshake; the others are judged once it is done (metrics-server.ts).
    rejectUnauthorized: t.clientAuth === 'RequireAndVerifyClientCert',
  };
  if (t.clientCa) opts.ca = readPem(t.clientCa, 'tls_server_config.client_ca_file', file);
  if (t.ciphers) opts.ciphers = [...TLS13_CIPHERS, ...t.ciphers].join(':');
  if (t.curves) opts.ecdhCurve = t.curves.join(':');
  try {
    tls.createSecureContext(opts);
  } catch (e) {
    const why = (e as Error).message;
    const mismatch = /key values mismatch|KEY_VALUES_MISMATCH/i.test(why);
    throw new WebConfigError(`metrics.webConfig ${file}: tls_server_config: ${mismatch ? 'the key is not the certificate\'s' : `OpenSSL refuses it: ${why}`}`,
      mismatch ? 'give key_file the private key the certificate was made for' : 'check the PEM files and cipher_suites/curve_preferences');
  }
  return opts;
}

/** Reads and checks `file` and the files it names. Throws WebConfigError. */
export function loadWebConfig(file: string): LoadedWebConfig {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new WebConfigError(`metrics.webConfig ${abs}: ${whyUnreadable(e as NodeJS.ErrnoException)}`,
      'write the web configuration there (docs/health.md "Prometheus"), make it readable by the gateway\'s user, or fix metrics.webConfig');
  }
  const config = parseWebConfig(text, abs);
  const stamp = filesStamp(webConfigFiles(config));
  return { config, tlsOptions: config.tls ? tlsServerOptions(config.tls, abs) : null, stamp };
}

/** How the endpoint is protected, in a few words for the check and the log: "TLS, client certificates verified, basic auth (1 user)". */
export function protectionWords(config: WebConfig | null): string {
  if (!config) return '';
  const parts: string[] = [];
  const t = config.tls;
  if (t) {
    const client: Record<ClientAuthType, string> = {
      NoClientCert: '',
      RequestClientCert: 'client certificates asked for',
      RequireAnyClientCert: 'a client certificate required',
      VerifyClientCertIfGiven: 'client certificates verified if given',
      RequireAndVerifyClientCert: 'client certificates verified',
    };
    parts.push('TLS', ...(client[t.clientAuth] ? [client[t.clientAuth]] : []), ...(t.allowedSans ? [`SANs ${t.allowedSans.join(', ')}`] : []));
  }
  const n = config.users.size;
  if (n > 0) parts.push(`basic auth (${n} user${n === 1 ? '' : 's'})`);
  if (config.rateLimit) parts.push(`at most ${config.rateLimit.burst} requests at once, one per ${config.rateLimit.intervalMs} ms after`);
  return parts.join(', ');
}
