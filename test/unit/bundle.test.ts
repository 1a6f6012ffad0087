// The shipped command is one bundle (scripts/bundle): dist/cli/main.js and its chunks load
// nothing from tsc's per-module files, every chunk a command may load on demand links, and
// the build leaves no chunk of an earlier build behind. The gateway itself runs from this
// bundle in every lab test (test/lab/vxedge.ts) and from the .deb payload under qemu.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT as REPO } from '../lab/harness.js';
import { CLI, ensureBuilt } from '../lab/vxedge.js';

const CLI_DIR = path.dirname(CLI);
const CHUNKS = path.join(CLI_DIR, 'chunks');
/** Loaded from node_modules, as scripts/bundle says why. */
const EXTERNAL = ['raw-socket', '@kubernetes/client-node'];
/** The Kubernetes client's own dependencies: its bundled kubeconfig and Watch modules load them from node_modules (scripts/kube-slim.mjs). */
const CLIENT_PACKAGE = path.join(REPO, 'node_modules', '@kubernetes', 'client-node');
const KUBE_DEPS = Object.keys((JSON.parse(readFileSync(path.join(CLIENT_PACKAGE, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);

/** Module specifiers of a minified ES module: static imports and re-exports, and import() with a literal. */
function specifiers(file: string): string[] {
  const code = readFileSync(file, 'utf8');
  const found = [...code.matchAll(/\bfrom\s*(["'`])([^"'`]+)\1/g), ...code.matchAll(/\bimport\s*\(\s*(["'`])([^"'`]+)\1\s*\)/g), ...code.matchAll(/\bimport\s*(["'`])([^"'`]+)\1/g)];
  return [...new Set(found.map((m) => m[2]))];
}

const chunkFiles = () => readdirSync(CHUNKS).filter((f) => f.endsWith('.js')).map((f) => path.join(CHUNKS, f));

beforeAll(() => ensureBuilt());

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-bundle-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('the shipped command (dist/cli/main.js)', () => {
  it('imports only its own chunks, Node built-ins and the three packages kept external', () => {
    // A plain `npx tsc` overwrites the bundle with tsc's own main.js: say so plainly.
    expect(specifiers(CLI).some((s) => s.startsWith('../')), 'dist/cli/main.js is tsc\'s, not the bundle: npm run build').toBe(false);
    const files = [CLI, ...chunkFiles()];
    expect(files.length).toBeGreaterThan(5);
    const seen = new Set<string>();
    for (const file of files) {
      for (const s of specifiers(file)) {
        seen.add(s.startsWith('.') ? 'relative' : s);
        if (s.startsWith('.')) {
          const target = path.resolve(path.dirname(file), s);
          expect(existsSync(target), `${path.relative(REPO, file)} imports ${s}: missing`).toBe(true);
          expect(target.startsWith(CHUNKS + path.sep), `${path.relative(REPO, file)} imports ${s}, outside the bundle`).toBe(true);
        } else {
          const builtin = s.startsWith('node:') ? builtinModules.includes(s.slice(5)) : false;
          const kubeDep = KUBE_DEPS.includes(s);
          expect(builtin || EXTERNAL.includes(s) || kubeDep, `${path.relative(REPO, file)} imports ${s}`).toBe(true);
          // From the chunks, a package resolves to node_modules' top level: the copy the
          // client itself uses only when it has none of its own.
          if (kubeDep) expect(existsSync(path.join(CLIENT_PACKAGE, 'node_modules', s)), `the client has its own ${s}: the bundle would load another`).toBe(false);
        }
      }
    }
    expect(seen.has('relative')).toBe(true);
    // MQTT.js, convict and yaml are inside: none of them is imported by name.
    for (const name of ['mqtt', 'convict', 'yaml']) expect(seen.has(name)).toBe(false);
    // Of the Kubernetes client, its kubeconfig and Watch modules are inside, its generated
    // APIs nowhere: nothing imports the package by name.
    expect([...seen].filter((s) => s.startsWith('@kubernetes/client-node'))).toEqual([]);
    expect(seen.has('js-yaml')).toBe(true);
    // Loaded when first used, by their stand-ins (below), not imported: required, or (an ES
    // module) imported by import() alone.
    expect(['node-fetch', 'socks-proxy-agent', 'hpagent'].filter((p) => seen.has(p))).toEqual([]);
    const code = chunkFiles().map((f) => readFileSync(f, 'utf8'));
    expect(code.some((c) => /\bfrom\s*["'`]openid-client["'`]/.test(c)), 'a static import of openid-client').toBe(false);
    expect(code.filter((c) => /\bimport\s*\(\s*["'`]openid-client["'`]\s*\)/.test(c)), 'its stand-in\'s import()').toHaveLength(1);
    expect(code.filter((c) => c.includes('makeApiClient is not in vxedge')), 'the stand-in for the generated index').toHaveLength(1);
    expect(code.some((c) => /ObjectSerializer|V1PodSpec/.test(c)), 'generated APIs or models in the bundle').toBe(false);
  });

  it('keeps no chunk that nothing imports (an earlier build\'s are removed)', () => {
    const reached = new Set<string>();
    const visit = (file: string) => {
      for (const s of specifiers(file)) {
        if (!s.startsWith('.')) continue;
        const target = path.resolve(path.dirname(file), s);
        if (!reached.has(target)) {
          reached.add(target);
          visit(target);
        }
      }
    };
    visit(CLI);
    expect(chunkFiles().filter((f) => !reached.has(f)).map((f) => path.basename(f))).toEqual([]);
  });

  it('every chunk loads (what run, check, fleet, kube and the cluster sources load on demand links)', () => {
    const files = chunkFiles();
    const script = `for (const f of ${JSON.stringify(files)}) await import(f); console.log('loaded', ${files.length});`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(`loaded ${files.length}`);
    expect(r.status).toBe(0);
  });

  it('is ASCII throughout, so V8 keeps each module\'s source as one byte per character', () => {
    // A single character outside Latin-1 makes V8 hold the whole source text (kept for the
    // life of the process) as a two-byte string: 1.4 MB instead of 0.7 for what run loads.
    for (const file of [CLI, ...chunkFiles()]) {
      const bytes = readFileSync(file);
      const at = bytes.findIndex((b) => b > 0x7f);
      expect(at, `${path.relative(REPO, file)}: non-ASCII byte at ${at}`).toBe(-1);
    }
  });

  it('starts with the unit\'s #! line (V8 sized for a board)', () => {
    const first = readFileSync(CLI, 'utf8').split('\n', 1)[0];
    expect(first).toBe('#!/usr/bin/env -S node --max-semi-space-size=1 --single-threaded --max-old-space-size=128');
  });
});

describe('scripts/bundle', () => {
  const bundle = (args: string[]) => spawnSync(path.join(REPO, 'scripts', 'bundle'), args, { cwd: REPO, encoding: 'utf8', timeout: 120_000 });

  it('builds into another directory without source maps (the package does), and that command runs', () => {
    const out = path.join(TMP, 'dist');
    const r = bundle(['--out', out, '--no-sourcemap']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const files = readdirSync(path.join(out, 'cli'), { recursive: true }) as string[];
    expect(files).toContain('main.js');
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    const help = spawnSync(process.execPath, [path.join(out, 'cli', 'main.js'), '--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^vxedge — userspace flannel-compatible VXLAN gateway/);
  });

  it('a bad option: exit 2 with usage, no stack trace', () => {
    const r = bundle(['--bogus']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^bundle: Unknown option '--bogus'/);
    expect(r.stderr).toContain('usage: scripts/bundle [--out DIR] [--no-sourcemap]');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("the Kubernetes client's node-fetch, socks-proxy-agent, hpagent and openid-client load on first use (scripts/kube-slim.mjs)", () => {
  const chunk = () => chunkFiles().find((f) => readFileSync(f, 'utf8').includes('class KubeConfig'))!;
  /**
   * Runs `body` in a child Node with the chunk's KubeConfig (or the one of module `from`) and
   * `loaded()` (the CommonJS packages required so far); its JSON output.
   */
  function run(body: string, from = chunk()): unknown {
    const script = `
      import { createRequire } from 'node:module';
      const cache = createRequire(${JSON.stringify(from)}).cache;
      const loaded = () => ['node-fetch', 'socks-proxy-agent', 'hpagent'].filter((p) => Object.keys(cache).some((k) => k.includes('/node_modules/' + p + '/')));
      const { KubeConfig } = await import(${JSON.stringify(from)});
      const kubeconfig = (cluster, user) => {
        const kc = new KubeConfig();
        kc.loadFromOptions({ clusters: [{ name: 'c', server: 'https://192.0.2.1:6443', skipTLSVerify: false, ...cluster }], users: [{ name: 'u', ...user }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
        return kc;
      };
      ${body}`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout);
  }

  it('none with KubeConfig; a socks5:// proxy-url still gets a SocksProxyAgent, an http:// one hpagent\'s, applyToFetchOptions node-fetch\'s Headers', () => {
    // Required from the chunk, as the import was: the copy at node_modules' top level, the client's own.
    for (const p of ['node-fetch', 'socks-proxy-agent', 'hpagent', 'openid-client']) expect(existsSync(path.join(CLIENT_PACKAGE, 'node_modules', p)), p).toBe(false);
    expect(run(`
      const out = { atLoad: loaded() };
      const agent = async (proxyUrl) => {
        const opts = {};
        await kubeconfig({ proxyUrl }, { token: 't' }).applyToHTTPSOptions(opts);
        return opts.agent.constructor.name;
      };
      out.socks = [await agent('socks5://192.0.2.2:1080'), loaded()];
      out.http = [await agent('http://192.0.2.2:3128'), loaded()];
      const f = await kubeconfig({}, { token: 't' }).applyToFetchOptions({});
      out.authorization = f.headers.get('authorization');
      out.afterFetch = loaded();
      console.log(JSON.stringify(out));`)).toEqual({
      atLoad: [], socks: ['SocksProxyAgent', ['socks-proxy-agent']], http: ['HttpsProxyAgent', ['socks-proxy-agent', 'hpagent']],
      authorization: 'Bearer t', afterFetch: ['node-fetch', 'socks-proxy-agent', 'hpagent'],
    });
  });

  it("an oidc user whose id-token has expired reaches openid-client's discovery, as the client unbundled does", () => {
    // client-node 1.4 hands discovery() the issuer as a string, which openid-client 6 refuses
    // (it wants a URL): that refusal, the same from the package itself, is openid-client's own
    // answer, so the stand-in imported it and called through.
    const body = `
      const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const idToken = [b64({ alg: 'none' }), b64({ exp: 1 }), 'x'].join('.');
      const kc = kubeconfig({}, { authProvider: { name: 'oidc', config: { 'client-id': 'vx', 'idp-issuer-url': 'https://192.0.2.3/', 'id-token': idToken, 'refresh-token': 'r' } } });
      const e = await kc.applyToHTTPSOptions({}).catch((x) => x);
      console.log(JSON.stringify({ code: e.code, message: e.message }));`;
    const bundled = run(body);
    expect(bundled).toEqual({ code: 'ERR_INVALID_ARG_TYPE', message: '"server" must be an instance of URL' });
    expect(run(body, path.join(CLIENT_PACKAGE, 'dist', 'config.js'))).toEqual(bundled);
  });
});

describe('MQTT.js transports load on first use (scripts/lazy-mqtt.mjs)', () => {
  /** Bundles `entry` as scripts/bundle does, with or without the plugin; the built file's path. */
  async function bundleOf(entry: string, out: string, lazy: boolean): Promise<string> {
    const { build } = await import('rolldown');
    const { lazyMqttTransports } = (await import(path.join(REPO, 'scripts', 'lazy-mqtt.mjs'))) as { lazyMqttTransports: () => object };
    await build({
      cwd: REPO, input: { e: entry }, platform: 'node', logLevel: 'silent',
      plugins: lazy ? [lazyMqttTransports() as never] : [],
      output: { dir: out, format: 'es' },
    });
    return path.join(out, 'e.js');
  }

  /**
   * In a child Node: MQTT.js from `file` connects to a closed port over mqtt://, through a SOCKS
   * proxy on a closed port, and over ws://; after each, which of Node's modules are loaded.
   */
  function transports(file: string) {
    const script = `
      import net from 'node:net';
      const { connect } = await import(${JSON.stringify(file)});
      const closed = await new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
      // Loaded since here (finding a closed port has loaded dns already).
      const before = new Set(process.moduleLoadList);
      const loaded = () => ['http', 'https', 'zlib', 'dns'].filter((m) => !before.has('NativeModule ' + m) && process.moduleLoadList.includes('NativeModule ' + m));
      const go = (url, o = {}) => new Promise((res) => {
        const c = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...o });
        c.on('error', (e) => { c.end(true); res(e.code ?? e.message); });
      });
      const out = {};
      out.mqtt = [await go('mqtt://127.0.0.1:' + closed), loaded()];
      out.socks = [await go('mqtt://127.0.0.1:' + closed, { socksProxy: 'socks5://127.0.0.1:' + closed }), loaded()];
      out.ws = [await go('ws://127.0.0.1:' + closed + '/mqtt'), loaded()];
      process.stdout.write(JSON.stringify(out));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, MQTTJS_SOCKS_PROXY: '' } });
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as Record<'mqtt' | 'socks' | 'ws', [string, string[]]>;
  }

  const ENTRY = path.join(REPO, 'test', 'fixtures', 'mqtt-connect-entry.mjs');

  it('mqtt:// loads neither the WebSocket nor the SOCKS transport; both still work when used', async () => {
    const t = transports(await bundleOf(ENTRY, path.join(TMP, 'lazy'), true));
    expect(t.mqtt).toEqual(['ECONNREFUSED', []]);
    expect(t.socks[0]).toMatch(/SOCKS|ECONNREFUSED/); // the proxy was tried (socks reports the refused proxy in its own words)
    expect(t.socks[1]).toEqual([]);
    expect(t.ws).toEqual(['ECONNREFUSED', ['http', 'https', 'zlib']]);
    // Without the plugin, the first connection loaded them all: what the plugin is for.
    const eager = transports(await bundleOf(ENTRY, path.join(TMP, 'eager'), false));
    expect(eager.mqtt).toEqual(['ECONNREFUSED', ['http', 'https', 'zlib']]);
  });

  it('the build fails, naming the plugin, when MQTT.js no longer makes those requires', async () => {
    const entry = path.join(TMP, 'no-mqtt.mjs');
    writeFileSync(entry, 'export const x = 1;\n');
    await expect(bundleOf(entry, path.join(TMP, 'none'), true)).rejects.toThrow(/MQTT\.js changed: no mqtt\/build\/lib\/connect\/index\.js require\('\.\/ws'\).*scripts\/lazy-mqtt\.mjs/s);
  });
});
