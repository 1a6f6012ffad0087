// metrics.webConfig: the exporter-toolkit web configuration (web-config.ts), basic auth and
// the rate limit (basic-auth.ts), and the metrics server with them on loopback: TLS with
// certificates made by openssl, client certificate policies, basic auth against bcrypt hashes
// made by the system's crypt(3) (and by htpasswd, where installed), reloads.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { BasicAuth, parseBasicAuth, RateLimit } from '../../src/health/basic-auth.js';
import { clientRefusal, MetricsServer, sanValues } from '../../src/health/metrics-server.js';
import { renderMetrics } from '../../src/health/metrics.js';
import { loadWebConfig, parseWebConfig, protectionWords, WebConfigError } from '../../src/health/web-config.js';
import { nativeBinding } from '../../src/native/index.js';
import { CaptureLog } from '../support/capture-log.js';
import { freePort } from '../support/free-port.js';
import { sampleHealth as doc } from '../support/health-doc.js';
import { datedCert, makePki } from '../support/kube-pki.mjs';

const FILE = '/etc/vxedge/web.yml';

function parseError(text: string): { message: string; fix: string } {
  try {
    parseWebConfig(text, FILE);
  } catch (e) {
    if (!(e instanceof WebConfigError)) throw e;
    return { message: e.message, fix: e.fix };
  }
  throw new Error('parsed without an error');
}

describe('parseWebConfig: the toolkit\'s web configuration', () => {
  it('an empty file: plain HTTP, no auth', () => {
    expect(parseWebConfig('', FILE)).toEqual({ file: FILE, tls: null, headers: {}, users: new Map(), rateLimit: null });
  });

  it('every key the toolkit documents, files relative to the config\'s directory, Go\'s names turned into OpenSSL\'s', () => {
    const c = parseWebConfig([
      'tls_server_config:',
      '  cert_file: metrics.crt',
      '  key_file: /keys/metrics.key',
      '  client_auth_type: RequireAndVerifyClientCert',
      '  client_ca_file: ca.crt',
      '  client_allowed_sans: [prometheus.example, 192.0.2.9]',
      '  min_version: TLS13',
      '  cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]',
      '  prefer_server_cipher_suites: false',
      '  curve_preferences: [X25519, CurveP256]',
      'http_server_config:',
      '  http2: false',
      '  headers: { X-Frame-Options: deny, Strict-Transport-Security: max-age=31536000 }',
      'basic_auth_users:',
      '  prom: $2y$10$Aioy//OcUyziFdVDtsYB6.Hdx/ZoGUffHSFDIijgSX.15YMC59gqm',
      'rate_limit: { interval: 1s, burst: 5 }',
    ].join('\n'), FILE);
    expect(c.tls).toEqual({
      cert: { file: '/etc/vxedge/metrics.crt' }, key: { file: '/keys/metrics.key' }, clientCa: { file: '/etc/vxedge/ca.crt' },
      clientAuth: 'RequireAndVerifyClientCert', allowedSans: ['prometheus.example', '192.0.2.9'], minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
      ciphers: ['ECDHE-ECDSA-AES128-GCM-SHA256'], preferServerCiphers: false, curves: ['X25519', 'P-256'],
    });
    expect(c.headers).toEqual({ 'X-Frame-Options': 'deny', 'Strict-Transport-Security': 'max-age=31536000' });
    expect([...c.users]).toEqual([['prom', '$2y$10$Aioy//OcUyziFdVDtsYB6.Hdx/ZoGUffHSFDIijgSX.15YMC59gqm']]);
    expect(c.rateLimit).toEqual({ intervalMs: 1000, burst: 5 });
    expect(protectionWords(c)).toBe('TLS, client certificates verified, SANs prometheus.example, 192.0.2.9, basic auth (1 user), at most 5 requests at once, one per 1000 ms after');
    expect(parseWebConfig('tls_server_config: { cert: "-----BEGIN", key: "k", client_auth_type: RequireClientCert }', FILE).tls).toEqual(
      expect.objectContaining({ cert: { inline: '-----BEGIN' }, key: { inline: 'k' }, clientAuth: 'RequireAnyClientCert', minVersion: 'TLSv1.2', ciphers: null, curves: null }),
    );
    expect(parseWebConfig('rate_limit: { interval: "0" }', FILE).rateLimit).toBeNull();
  });

  it('each mistake names the file, the key, what is wrong and what to do', () => {
    const cases: [string, string, RegExp][] = [
      ['tls_server_config: { cert_file: a.crt, key_file: a.key }\nbasic_auth: {}', 'basic_auth: is not a key of the web configuration', /spell one of: tls_server_config, http_server_config, basic_auth_users, rate_limit/],
      ['tls_server_config: { cert_file: a.crt }', 'tls_server_config.key_file: is missing: TLS needs the server\'s private key', /set tls_server_config.key_file/],
      ['tls_server_config: { cert_file: a.crt, cert: x, key_file: k }', 'tls_server_config.cert: is set together with cert_file', /keep one of/],
      ['tls_server_config: { cert_file: a, key_file: b, client_auth_type: Always }', 'tls_server_config.client_auth_type: "Always" is not a client auth type', /RequireAndVerifyClientCert to let in only/],
      ['tls_server_config: { cert_file: a, key_file: b, client_ca_file: c }', 'tls_server_config.client_auth_type: is NoClientCert, but a client CA is set: the CA would never be asked', /RequireAndVerifyClientCert/],
      ['tls_server_config: { cert_file: a, key_file: b, client_auth_type: VerifyClientCertIfGiven, client_allowed_sans: [x] }', 'tls_server_config.client_allowed_sans: needs a client certificate, and client_auth_type VerifyClientCertIfGiven lets a client in without one', /RequireAndVerifyClientCert/],
      ['tls_server_config: { cert_file: a, key_file: b, min_version: TLS1.2 }', 'tls_server_config.min_version: "TLS1.2" is not a TLS version', /TLS10, TLS11, TLS12, TLS13/],
      ['tls_server_config: { cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12 }', 'tls_server_config.min_version: "TLS13" is above max_version "TLS12"', /lower min_version/],
      ['tls_server_config: { cert_file: a, key_file: b, cipher_suites: [TLS_RSA_WITH_RC4_128_SHA] }', 'tls_server_config.cipher_suites: "TLS_RSA_WITH_RC4_128_SHA" is not a cipher suite Go offers', /Go's names/],
      ['tls_server_config: { cert_file: a, key_file: b, curve_preferences: [P-256] }', 'tls_server_config.curve_preferences: "P-256" is not a curve', /CurveP256/],
      ['tls_server_config: { min_version: TLS13 }', 'tls_server_config.min_version: is set, but TLS is not: there is no certificate', /cert_file and key_file/],
      ['http_server_config: { headers: { X-Frame-Options: allow } }', 'http_server_config.headers.X-Frame-Options: "allow" is not allowed', /deny or sameorigin/],
      ['http_server_config: { headers: { Server: vxedge } }', 'http_server_config.headers.Server: is not a key of the web configuration', /Strict-Transport-Security/],
      ['http_server_config: { http2: yes please }', 'http_server_config.http2: "yes please" is not true or false', /true or/],
      ['basic_auth_users: { prom: s3cret }', 'basic_auth_users.prom: is not a bcrypt hash (a password is never written here, only its hash: 60 characters starting $2y$ or $2b$)', /vxedge password-hash/],
      ['basic_auth_users: { prom: "$2y$03$Aioy//OcUyziFdVDtsYB6.Hdx/ZoGUffHSFDIijgSX.15YMC59gqm" }', 'basic_auth_users.prom: has cost 3; bcrypt\'s is 4 to 31', /cost 10 is usual/],
      ['basic_auth_users: { "a:b": "$2y$10$Aioy//OcUyziFdVDtsYB6.Hdx/ZoGUffHSFDIijgSX.15YMC59gqm" }', 'basic_auth_users.a:b: a user name cannot hold a colon (basic auth splits user and password at the first)', /rename/],
      ['basic_auth_users: [prom]', 'basic_auth_users: ["prom"] is not a mapping of user names to bcrypt hashes', /name: hash/],
      ['rate_limit: { interval: 1s }', 'rate_limit.burst: undefined: with an interval, at least 1 request must be let through', /e.g. 5/],
      ['rate_limit: { interval: 1000, burst: 2 }', 'rate_limit.interval: 1000 has no unit', /"1s"/],
      ['rate_limit: { interval: 1 parsec, burst: 2 }', 'rate_limit.interval: "1 parsec" has an unknown unit "parsec" (use ms, s, m or h)', /"1s"/],
      ['rate_limit: { burst: 2 }', 'rate_limit.burst: is set without rate_limit.interval', /set rate_limit.interval/],
      ['tls_server_config: [a]', 'tls_server_config: ["a"] is not a mapping of keys', /as keys under it/],
      ['- a list', '(the file): ["a list"] is not a mapping of keys', /write it as YAML keys: tls_server_config, http_server_config/],
      ['a: [unclosed', '(the file): is not YAML', /fix the YAML/],
    ];
    for (const [text, message, fix] of cases) {
      const e = parseError(text);
      expect(e.message.startsWith(`metrics.webConfig ${FILE}: ${message}`), `${text}\n${e.message}`).toBe(true);
      expect(e.fix).toMatch(fix);
    }
  });

  it('any text: a WebConfig or a WebConfigError, never another throw', () => {
    const value = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }));
    const section = fc.dictionary(fc.constantFrom('cert_file', 'key_file', 'cert', 'key', 'client_auth_type', 'client_ca_file', 'client_allowed_sans', 'min_version', 'max_version', 'cipher_suites', 'curve_preferences', 'interval', 'burst', 'http2', 'headers', 'prom', 'x'), value);
    const docs = fc.oneof(
      fc.string(),
      fc.dictionary(fc.constantFrom('tls_server_config', 'http_server_config', 'basic_auth_users', 'rate_limit', 'other'), fc.oneof(section, value)).map((o) => JSON.stringify(o)),
    );
    fc.assert(fc.property(docs, (text) => {
      try {
        parseWebConfig(text, FILE);
      } catch (e) {
        if (!(e instanceof WebConfigError)) throw e;
      }
    }), { numRuns: 2000 });
  });
});

describe('basic auth and the rate limit', () => {
  it('parseBasicAuth: user and password split at the first colon; anything else is no credentials', () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    expect(parseBasicAuth(`Basic ${b64('prom:pa:ss')}`)).toEqual({ user: 'prom', password: 'pa:ss' });
    expect(parseBasicAuth(`basic ${b64('p:')}`)).toEqual({ user: 'p', password: '' });
    for (const h of [undefined, '', 'Bearer x', `Basic ${b64('nocolon')}`, 'Basic !!!']) expect(parseBasicAuth(h)).toBeNull();
  });

  it('checks each user, hash and password once, unknown users against a decoy, one check at a time', async () => {
    const calls: string[] = [];
    let running = 0;
    let most = 0;
    const check = async (password: string, hash: string) => {
      calls.push(`${password}|${hash.slice(0, 7)}`);
      most = Math.max(most, ++running);
      await new Promise((r) => setImmediate(r));
      running--;
      return password === 'right' && hash === HASH;
    };
    const HASH = '$2y$10$Aioy//OcUyziFdVDtsYB6.Hdx/ZoGUffHSFDIijgSX.15YMC59gqm';
    const users = new Map([['prom', HASH]]);
    const auth = new BasicAuth(check);
    const h = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
    expect(await Promise.all([auth.allows(h('prom', 'right'), users), auth.allows(h('prom', 'wrong'), users), auth.allows(h('ghost', 'right'), users)])).toEqual([true, false, false]);
    expect(most).toBe(1);
    expect(calls).toEqual(['right|$2y$10$', 'wrong|$2y$10$', 'right|$2b$10$']); // the ghost against the decoy
    expect(await auth.allows(h('prom', 'right'), users)).toBe(true);
    expect(await auth.allows(h('prom', 'wrong'), users)).toBe(false);
    expect(calls).toHaveLength(3); // answered from what was kept
    expect(await auth.allows(h('prom', 'x'.repeat(73)), users)).toBe(false);
    expect(await auth.allows(h('prom', 'late'), users, () => true)).toBe(false); // the client left: not checked
    expect(calls).toHaveLength(3);
    auth.clear();
    expect(await auth.allows(h('prom', 'right'), users)).toBe(true);
    expect(calls).toHaveLength(4);
  });

  it('RateLimit: burst at once, then one per interval', () => {
    let t = 0;
    const r = new RateLimit(1000, 2, () => t);
    expect([r.allow(), r.allow(), r.allow()]).toEqual([true, true, false]);
    t = 999;
    expect(r.allow()).toBe(false);
    t = 1000;
    expect([r.allow(), r.allow()]).toEqual([true, false]);
    t = 10_000;
    expect([r.allow(), r.allow(), r.allow()]).toEqual([true, true, false]);
  });

  it('client certificate policies past the handshake, and SANs as Node writes them', () => {
    const base = parseWebConfig('tls_server_config: { cert_file: a, key_file: b }', FILE).tls!;
    const sock = (cert: object, authorized = true) => ({ getPeerCertificate: () => cert, authorized, authorizationError: authorized ? null : 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }) as never;
    const withSan = { subject: { CN: 'p' }, subjectaltname: 'DNS:prometheus.example, IP Address:192.0.2.9' };
    expect(sanValues(withSan.subjectaltname)).toEqual(['prometheus.example', '192.0.2.9']);
    expect(clientRefusal({ ...base, clientAuth: 'RequestClientCert' }, sock({}))).toBeNull();
    expect(clientRefusal({ ...base, clientAuth: 'RequireAnyClientCert' }, sock({}))).toBe('no client certificate');
    expect(clientRefusal({ ...base, clientAuth: 'RequireAnyClientCert' }, sock(withSan, false))).toBeNull();
    expect(clientRefusal({ ...base, clientAuth: 'VerifyClientCertIfGiven' }, sock({}))).toBeNull();
    expect(clientRefusal({ ...base, clientAuth: 'VerifyClientCertIfGiven' }, sock(withSan, false))).toBe('client certificate not verified (UNABLE_TO_VERIFY_LEAF_SIGNATURE)');
    expect(clientRefusal({ ...base, clientAuth: 'RequireAndVerifyClientCert', allowedSans: ['192.0.2.9'] }, sock(withSan))).toBeNull();
    expect(clientRefusal({ ...base, clientAuth: 'RequireAndVerifyClientCert', allowedSans: ['other'] }, sock(withSan))).toBe(
      'client certificate has none of the allowed SANs (it has prometheus.example, 192.0.2.9)');
  });
});

describe('crypt(3) in the addon: bcrypt off the event loop', () => {
  const native = nativeBinding();
  const HTPASSWD = (() => {
    try {
      execFileSync('htpasswd', ['-h'], { stdio: 'ignore' });
      return true;
    } catch (e) {
      return (e as { status?: number }).status !== undefined; // it ran (and said its usage)
    }
  })();

  it('its own $2b$ hashes, Go\'s and htpasswd\'s $2y$, and $2a$: the right password and no other', async () => {
    const made = await native.passwordHash('s3cret', 4);
    expect(made).toMatch(/^\$2b\$04\$[./A-Za-z0-9]{53}$/);
    expect(await native.passwordCheck('s3cret', made)).toBe(true);
    expect(await native.passwordCheck('s3cres', made)).toBe(false);
    // The toolkit's decoy ("fakepassword", by Go's bcrypt), and the same hash as $2a$.
    const go = '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi';
    expect(await native.passwordCheck('fakepassword', go)).toBe(true);
    expect(await native.passwordCheck('fakepassword', go.replace('$2y$', '$2a$'))).toBe(true);
    expect(await native.passwordCheck('Fakepassword', go)).toBe(false);
    await expect(native.passwordCheck('x', '$2y$10$short')).rejects.toMatchObject({ code: 'EINVAL', syscall: 'crypt_rn' });
    expect(() => native.passwordCheck('a\0b', made)).toThrow(/NUL/);
    expect(() => native.passwordHash('x', 3)).toThrow(RangeError);
  });

  it.runIf(HTPASSWD)('a hash htpasswd -B made checks, and htpasswd -v takes the addon\'s', async () => {
    const line = execFileSync('htpasswd', ['-nbBC', '5', 'prom', 'pw with spaces'], { encoding: 'utf8' }).trim();
    const hash = line.slice('prom:'.length);
    expect(hash).toMatch(/^\$2y\$05\$/);
    expect(await native.passwordCheck('pw with spaces', hash)).toBe(true);
    const dir = mkdtempSync(path.join(tmpdir(), 'vx-htpasswd-'));
    try {
      writeFileSync(path.join(dir, 'users'), `prom:${await native.passwordHash('pw with spaces', 5)}\n`);
      expect(execFileSync('htpasswd', ['-vb', path.join(dir, 'users'), 'prom', 'pw with spaces'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the event loop turns while a check runs', async () => {
    const hash = await native.passwordHash('pw', 12); // ~250 ms here, seconds on a board
    let turns = 0;
    let done = false;
    const spin = () => {
      if (done) return;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    expect(await native.passwordCheck('pw', hash)).toBe(true);
    done = true;
    expect(turns).toBeGreaterThan(10);
  });
});

// ------------------------------------------------------------------ the server, protected

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  peerSerial?: string;
}

function get(port: number, o: { ca?: string; cert?: string; key?: string; auth?: string; path?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: o.path ?? '/metrics', ca: o.ca, cert: o.cert, key: o.key, auth: o.auth, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, peerSerial: (res.socket as tls.TLSSocket).getPeerCertificate?.()?.serialNumber }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('MetricsServer with metrics.webConfig (loopback, real TLS and bcrypt)', () => {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  let pem: (f: string) => string;
  let hash: string;
  let sanClient: { certFile: string; keyFile: string };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'vx-webcfg-'));
    pki = makePki(path.join(dir, 'pki'), { ips: ['127.0.0.1'], clients: [{ cn: 'prometheus' }] });
    const now = Date.now();
    sanClient = datedCert(pki.dir, { name: 'withsan', cn: 'scraper', extensions: 'extendedKeyUsage=clientAuth\nsubjectAltName=DNS:prometheus.example', notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 86_400_000) });
    pem = (f) => readFileSync(f, 'utf8');
    hash = await nativeBinding().passwordHash('s3cret', 4);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** TLS with the test CA's client certificates required and verified. */
  const VERIFIED_CLIENTS = [
    'tls_server_config:',
    '  cert_file: server.crt',
    '  key_file: server.key',
    '  client_ca_file: ca.crt',
    '  client_auth_type: RequireAndVerifyClientCert',
  ];

  function writeWeb(lines: string[]): string {
    const file = path.join(pki.dir, 'web.yml');
    writeFileSync(file, lines.join('\n'));
    return file;
  }

  async function serving(webConfig: string, fn: (m: MetricsServer, port: number, log: CaptureLog, calls: { n: number }) => Promise<void>): Promise<void> {
    const port = await freePort();
    const log = new CaptureLog();
    const calls = { n: 0 };
    const m = new MetricsServer({
      listen: { host: '127.0.0.1', port }, log, webConfig,
      passwordCheck: (p, h) => (calls.n++, nativeBinding().passwordCheck(p, h)),
    });
    await m.start();
    m.update(doc());
    try {
      await fn(m, port, log, calls);
    } finally {
      await m.close();
    }
  }

  it('TLS with client certificates verified and basic auth: only a client with both gets the page; bcrypt once for repeated scrapes', async () => {
    const file = writeWeb([
      ...VERIFIED_CLIENTS,
      'http_server_config: { headers: { X-Content-Type-Options: nosniff } }',
      `basic_auth_users: { prom: "${hash}" }`,
    ]);
    await serving(file, async (m, port, log, calls) => {
      expect(m.check()).toEqual({ name: 'metrics', ok: true, detail: `serving Prometheus metrics at https://127.0.0.1:${port}/metrics (TLS, client certificates verified, basic auth (1 user))` });
      const client = { ca: pki.ca, cert: pem(pki.clients.prometheus.certFile), key: pem(pki.clients.prometheus.keyFile) };
      const ok = await get(port, { ...client, auth: 'prom:s3cret' });
      expect([ok.status, ok.body, ok.headers['x-content-type-options']]).toEqual([200, renderMetrics(doc()), 'nosniff']);
      const wrong = await get(port, { ...client, auth: 'prom:s3cres' });
      expect([wrong.status, wrong.headers['www-authenticate'], wrong.headers['x-content-type-options']]).toEqual([401, 'Basic realm="vxedge"', 'nosniff']);
      expect((await get(port, client)).status).toBe(401);
      expect((await get(port, { ...client, auth: 'ghost:s3cret' })).status).toBe(401);
      await expect(get(port, { ca: pki.ca, auth: 'prom:s3cret' })).rejects.toThrow(/certificate|socket hang up|ECONNRESET/);
      for (let i = 0; i < 3; i++) expect((await get(port, { ...client, auth: 'prom:s3cret' })).status).toBe(200);
      expect(calls.n).toBe(3); // s3cret, s3cres, ghost's decoy: each once
      expect(log.lines.filter((l) => l.msg.startsWith('metrics client refused')).map((l) => l.fields?.why)).toEqual(
        expect.arrayContaining(['basic auth: a wrong user or password', 'basic auth: no credentials']),
      );
    });
  });

  it('client_allowed_sans is judged once the handshake is done: a verified certificate without the SAN is cut', async () => {
    const file = writeWeb([
      ...VERIFIED_CLIENTS,
      '  client_allowed_sans: [prometheus.example]',
    ]);
    await serving(file, async (_m, port, log) => {
      expect((await get(port, { ca: pki.ca, cert: pem(sanClient.certFile), key: pem(sanClient.keyFile) })).status).toBe(200);
      await expect(get(port, { ca: pki.ca, cert: pem(pki.clients.prometheus.certFile), key: pem(pki.clients.prometheus.keyFile) })).rejects.toThrow(/socket hang up|ECONNRESET/);
      expect(log.lines.some((l) => l.fields?.why === 'client certificate has none of the allowed SANs (it has none)')).toBe(true);
    });
  });

  it('read again: a renewed certificate is served from the next connection; a broken file keeps the last good one and fails the check; a rate limit', async () => {
    const file = writeWeb(['tls_server_config: { cert_file: server.crt, key_file: server.key }']);
    await serving(file, async (m, port) => {
      const first = await get(port, { ca: pki.ca });
      expect(first.status).toBe(200);
      // Renewed: same key, a new certificate (another serial) for the same addresses.
      execFileSync('openssl', ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30',
        '-extfile', 'server.ext', '-out', 'server.crt'], { cwd: pki.dir, stdio: 'ignore' });
      await m.start();
      const renewed = await get(port, { ca: pki.ca });
      expect(renewed.status).toBe(200);
      expect(renewed.peerSerial).not.toBe(first.peerSerial);

      writeWeb(['tls_server_config: { cert_file: server.crt, key_file: missing.key }']);
      await m.start();
      expect(m.check()).toEqual({
        name: 'metrics', ok: false,
        detail: `metrics.webConfig ${file}: tls_server_config.key_file ${path.join(pki.dir, 'missing.key')}: no such file; the metrics are still served as the file was when last read without an error`,
        fix: `make ${path.join(pki.dir, 'missing.key')} readable by the gateway's user (vxedge), or fix the path (relative paths are from ${pki.dir})`,
      });
      expect((await get(port, { ca: pki.ca })).status).toBe(200);

      writeWeb(['tls_server_config: { cert_file: server.crt, key_file: server.key }', 'rate_limit: { interval: 1h, burst: 2 }']);
      await m.start();
      expect(m.check().ok).toBe(true);
      expect([(await get(port, { ca: pki.ca })).status, (await get(port, { ca: pki.ca })).status, (await get(port, { ca: pki.ca })).status]).toEqual([200, 200, 429]);
    });
  });

  it('a web configuration that cannot be used at start: nothing is served (never without the protection asked for)', async () => {
    const file = writeWeb(['tls_server_config: { cert_file: ca.crt, key_file: server.key }']);
    await serving(file, async (m, port) => {
      expect(m.check()).toEqual({
        name: 'metrics', ok: false,
        detail: `metrics.webConfig ${file}: tls_server_config: the key is not the certificate's; the metrics are not served until it is fixed`,
        fix: 'give key_file the private key the certificate was made for',
      });
      await expect(get(port, { ca: pki.ca })).rejects.toThrow(/ECONNREFUSED/);
      writeWeb(['tls_server_config: { cert_file: server.crt, key_file: server.key }']);
      await m.start();
      expect(m.check().ok).toBe(true);
      expect((await get(port, { ca: pki.ca })).status).toBe(200);
    });
    expect(() => loadWebConfig(path.join(pki.dir, 'nope.yml'))).toThrow(/nope.yml: no such file/);
  });
});
