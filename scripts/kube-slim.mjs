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
// node-fetch, the proxy agents, openid-client, jsonpath-plus) stay external: loaded from
// node_modules as installed.
//
// The build fails if config.js no longer imports ./gen/index.js (a new client moved it):
// better than loading the whole client again without anyone noticing.
import path from 'node:path';

const CLIENT_DIST = '/node_modules/@kubernetes/client-node/dist/';
/** The modules src/cluster/kubeconfig.ts imports, bundled (the rest of the package stays external). */
export const KUBE_BUNDLED = ['@kubernetes/client-node/dist/config.js'];
const STUB = '\0vxedge-kube-gen-stub';

const posix = (p) => p.split(path.sep).join('/');
const inClient = (file) => posix(file).includes(CLIENT_DIST);

/**
 * For scripts/bundle's `external`: true for a package the client's bundled modules import
 * (js-yaml, node-fetch, …), null when this plugin has no say.
 */
export function kubeExternal(id, importer) {
  if (!importer || !inClient(importer)) return null;
  return !(id.startsWith('.') || id.startsWith('/') || id.startsWith('\0'));
}

export function kubeSlim() {
  let stubbed = false;
  return {
    name: 'vxedge-kube-slim',
    resolveId(source, importer) {
      if (source !== './gen/index.js' || !importer || !posix(importer).endsWith(CLIENT_DIST + 'config.js')) return null;
      stubbed = true;
      return STUB;
    },
    load(id) {
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
    },
  };
}
