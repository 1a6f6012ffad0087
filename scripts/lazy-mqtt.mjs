// A rolldown plugin for scripts/bundle: MQTT.js's WebSocket and SOCKS transports load on
// their first use instead of with MQTT.js.
//
// MQTT.js requires both when it loads: connect/index.js fills its table of protocols with
// require('./ws') (the ws package, and with it Node's http, https and zlib), and the TCP and
// TLS transports require('./socks') (the socks package, ip-address, smart-buffer and Node's
// dns) for a proxy that is used only with the socksProxy option or MQTTJS_SOCKS_PROXY in the
// environment. A gateway publishing over mqtt:// or mqtts:// never runs either, yet paid for
// both: 1 MB of peak memory with one peer, 1.6 MB with 500 (docs/memory.md). Here those two
// requires get a stand-in with the same exports, each a function that requires the real
// module on its first call; the real module is still in the bundle, as the lazily run
// CommonJS wrapper rolldown makes of every CommonJS module. ws:// and wss:// (and a SOCKS
// proxy) work as before, loaded when first used.
//
// The build fails if MQTT.js no longer has these requires (a new MQTT.js moved them): better
// than bundling the transports eagerly again without anyone noticing.
import path from 'node:path';

/** The requires made lazy: which MQTT.js module makes them, and what the stand-in exports. */
const LAZY = [
  { importer: 'mqtt/build/lib/connect/index.js', source: './ws', exports: ['streamBuilder', 'browserStreamBuilder'] },
  { importer: 'mqtt/build/lib/connect/tcp.js', source: './socks', exports: ['default'] },
  { importer: 'mqtt/build/lib/connect/tls.js', source: './socks', exports: ['default'] },
];
const PREFIX = '\0vxedge-lazy:';

const posix = (p) => p.split(path.sep).join('/');

export function lazyMqttTransports() {
  const seen = new Set();
  return {
    name: 'vxedge-lazy-mqtt-transports',
    resolveId(source, importer) {
      if (!importer || importer.startsWith('\0')) return null;
      const i = LAZY.findIndex((l) => l.source === source && posix(importer).endsWith('/node_modules/' + l.importer));
      if (i < 0) return null;
      seen.add(i);
      const real = path.join(path.dirname(importer), source + '.js');
      return PREFIX + JSON.stringify({ real, exports: LAZY[i].exports });
    },
    load(id) {
      if (!id.startsWith(PREFIX)) return null;
      const { real, exports } = JSON.parse(id.slice(PREFIX.length));
      return [
        '"use strict";',
        'Object.defineProperty(exports, "__esModule", { value: true });',
        'let real;',
        `const load = () => (real ??= require(${JSON.stringify(real)}));`,
        ...exports.map((e) => `exports.${e} = (...args) => load().${e}(...args);`),
      ].join('\n');
    },
    buildEnd(error) {
      if (error) return;
      const missing = LAZY.filter((_, i) => !seen.has(i)).map((l) => `${l.importer} require('${l.source}')`);
      if (missing.length) throw new Error(`MQTT.js changed: no ${missing.join(', ')} to make lazy (scripts/lazy-mqtt.mjs)`);
    },
  };
}
