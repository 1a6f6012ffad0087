// A rolldown plugin for scripts/bundle: the Kubernetes client's kubeconfig module in the
// bundle without its generated APIs and models.
//
// vxedge uses one module of @kubernetes/client-node, dist/config.js (src/cluster/kubeconfig.ts)
// (KubeConfig: tokens, client certificates, exec plugins, proxies), and makes its REST calls
// and its watch itself with the options KubeConfig gives (src/cluster/kube-client.ts). But config.js imports
// `createConfiguration` and `ServerConfiguration` from ./gen/index.js for makeApiClient, and
// that index loads every generated API class and ~1 000 model classes: ~45 MB of memory and
// half a second of a gateway's start on a small board (docs/memory.md). Here config.js and its
// own modules are bundled, and its ./gen/index.js is a stand-in whose two exports say, when
// called, that makeApiClient is not available. The client's other dependencies (js-yaml,
// jsonpath-plus, rfc4648, and those below) stay external: loaded from node_modules as installed.
//
// Four of them the client's modules import at their top but use only on paths vxedge rarely
// or never takes: node-fetch (for `Headers`, in applyToFetchOptions: never called; node-fetch 2
// with whatwg-url and its Unicode tables is 1.9 MB of live heap), socks-proxy-agent (a cluster
// reached through a socks5:// proxy-url; 0.9 MB with its socks client), hpagent (an http(s)://
// proxy-url; 0.4 MB anonymous) and openid-client (a kubeconfig user with the oidc auth
// provider; with oauth4webapi, jose and Node's WebCrypto it is 0.5 MB of heap, 1.7 MB
// anonymous and 4.1 MB of Node's binary paged in). The first three are CommonJS: their
// stand-ins load them with a synchronous require() when first constructed, from where the
// chunk is, as the import would have. openid-client is an ES module, which Node 20 cannot
// require; the client calls only two of its functions, both async, so its stand-in's
// functions import it on their first call.
//
// The build fails if config.js no longer imports ./gen/index.js or a module no longer imports
// one of these (a new client moved them): better than loading it all again without anyone noticing.
import path from 'node:path';

const CLIENT_DIST = '/node_modules/@kubernetes/client-node/dist/';
/** The modules src/cluster/kubeconfig.ts imports, bundled (the rest of the package stays external). */
export const KUBE_BUNDLED = ['@kubernetes/client-node/dist/config.js'];
const STUB = '\0vxedge-kube-gen-stub';
/**
 * Packages the client's modules import that are loaded when first used, by package: the
 * client module importing it, and the classes (CommonJS, required when one is first made) or
 * async functions (an ES module, imported at the first call) its stand-in exports.
 */
const LAZY = {
  'node-fetch': { importer: 'config.js', classes: ['Headers'] },
  'socks-proxy-agent': { importer: 'config.js', classes: ['SocksProxyAgent'] },
  hpagent: { importer: 'config.js', classes: ['HttpProxyAgent', 'HttpsProxyAgent'] },
  'openid-client': { importer: 'oidc_auth.js', functions: ['refreshTokenGrant', 'discovery'] },
};
const LAZY_PREFIX = '\0vxedge-kube-lazy:';

const posix = (p) => p.split(path.sep).join('/');
const inClient = (file) => posix(file).includes(CLIENT_DIST);
const isConfig = (importer) => posix(importer).endsWith(CLIENT_DIST + 'config.js');
/** The stand-in for `pkg` when `importer` is the client module that imports it lazily. */
const lazyFor = (pkg, importer) => Object.hasOwn(LAZY, pkg) && posix(importer).endsWith(CLIENT_DIST + LAZY[pkg].importer);

/**
 * For scripts/bundle's `external`: true for a package the client's bundled modules import
 * (js-yaml, node-fetch, …), null when this plugin has no say.
 */
export function kubeExternal(id, importer) {
  if (importer?.startsWith(LAZY_PREFIX)) return true; // a stand-in's import() of its package, as installed
  if (!importer || !inClient(importer)) return null;
  if (lazyFor(id, importer)) return false; // its stand-in is bundled
  return !(id.startsWith('.') || id.startsWith('/') || id.startsWith('\0'));
}

export function kubeSlim() {
  let stubbed = false;
  const lazied = new Set();
  return {
    name: 'vxedge-kube-slim',
    resolveId(source, importer) {
      if (!importer) return null;
      if (lazyFor(source, importer)) {
        lazied.add(source);
        return LAZY_PREFIX + source;
      }
      if (!isConfig(importer) || source !== './gen/index.js') return null;
      stubbed = true;
      return STUB;
    },
    load(id) {
      if (id.startsWith(LAZY_PREFIX)) {
        const pkg = id.slice(LAZY_PREFIX.length);
        const { classes = [], functions = [] } = LAZY[pkg];
        return [
          ...(classes.length ? ["import { createRequire } from 'node:module';", `const load = () => createRequire(import.meta.url)(${JSON.stringify(pkg)});`] : []),
          // A constructor that returns the real object: \`new X(...)\` gives the package's own instance.
          ...classes.map((name) => `export class ${name} { constructor(...a) { return new (load().${name})(...a); } }`),
          ...functions.map((name) => `export async function ${name}(...a) { return (await import(${JSON.stringify(pkg)})).${name}(...a); }`),
        ].join('\n');
      }
      if (id !== STUB) return null;
      return [
        "const why = () => new Error('makeApiClient is not in vxedge\\'s bundle of the Kubernetes client (scripts/kube-slim.mjs): make the request with applyToHTTPSOptions, as src/cluster/kube-client.ts does');",
        'export class ServerConfiguration { constructor() { throw why(); } }',
        'export function createConfiguration() { throw why(); }',
      ].join('\n');
    },
    buildEnd(error) {
      if (error) return;
      if (!stubbed) throw new Error('@kubernetes/client-node changed: its dist/config.js no longer imports ./gen/index.js (scripts/kube-slim.mjs)');
      const missing = Object.keys(LAZY).filter((p) => !lazied.has(p));
      if (missing.length) {
        const what = missing.map((p) => `dist/${LAZY[p].importer} no longer imports ${p}`).join('; ');
        throw new Error(`@kubernetes/client-node changed: its ${what} (scripts/kube-slim.mjs)`);
      }
    },
  };
}
