// `vxedge fleet`'s command line: the flags, the site file's mqtt section (-c) they override,
// and the MQTT.js options of a reader. Kept apart from the session (fleet.ts) because it is pure
// apart from reading the -c file: the unit tests check every flag and mistake without a broker.
//
// A reader connects as the gateway does (mqtt-options.ts buildClientOptions: the same section
// means the same broker, TLS and credentials) but announces nothing: no last will, and a random
// client id unless --client-id is given, so two operators running the command at once do not
// take over each other's session.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { IClientOptions } from 'mqtt';
import { loadConfig } from '../config/index.js';
import {
  MqttSetupError, buildClientOptions, parseBrokerUrl, type BrokerUrl, type MqttConfig, type MqttSecrets, type ProtocolVersion,
} from '../health/mqtt-options.js';
import { formatDuration, parseDuration } from '../util/duration.js';
import { show } from '../util/show.js';
import { checkMqttProxy } from '../config/formats.js';
import { MAX_HEALTH_BYTES, prefixProblem } from './fleet-view.js';

export const FLEET_HELP = `Usage: vxedge fleet (--url URL | -c FILE) [options]

Reads every gateway's retained status and health under {prefix}/{site}/{node}/ from an MQTT
broker and prints one row per gateway: site, node, status (online, offline, or stale when
online but its health is not current), state, peers up/total, age of the last health, and
why it is not ok (the worst peer, down before unknown, and its reason).

Broker (flags override the keys of the site file's mqtt section):
  --url URL              mqtt://, mqtts://, ws:// or wss:// (mqtt.url); user:password@ works too
  -c, --config FILE      a site file: its mqtt section gives url, TLS, credentials, topicPrefix
                         and interval (VXEDGE_MQTT_* variables apply, as for vxedge run)
  --prefix P             first topic level(s) (mqtt.topicPrefix, default "vxedge")
  --ca FILE              CA bundle for mqtts:// and wss:// (mqtt.ca)
  --cert FILE --key FILE client certificate and key for mutual TLS (mqtt.cert, mqtt.key)
  --username NAME        (mqtt.username)
  --password-file FILE   file holding the password (mqtt.passwordFile)
  --proxy URL            a proxy to the broker, http:// or socks5://[USER:PASSWORD@]HOST:PORT,
                         for every scheme (mqtt.proxy; without it, the proxy variables)
  --client-id ID         MQTT client id (default vxedge-fleet-<random>; for broker policies
                         such as AWS IoT Core's that allow only known ids)
Output:
  --json                 a JSON array of {site, node, status, state, peersUp, peersTotal,
                         reason, ts, ok, stale, ageS, worstPeer, error}
  --watch                stay subscribed and print a line for every gateway that changes
                         (with --json: one object a line) until Ctrl-C; the exit code is
                         that of the last state (2 if the broker is not connected then)
Retired gateways:
  --forget SITE/NODE     clear that gateway's retained status and health, so that it is no
                         longer listed (repeatable); refused while it is online and current.
                         Needs publish rights on its topics; its Node or lease in the cluster
                         is not touched (vxedge retire -c its site file does both)
Timing (milliseconds, or "500ms", "2s", "1m"):
  --wait DURATION        longest wait for the retained messages after subscribing (default
                         2s); it ends sooner once the broker has been quiet for 300 ms
  --timeout DURATION     for connecting (TCP, TLS, CONNACK) and subscribing (default 5s)
  --interval DURATION    the gateways' mqtt.interval (default: that of -c FILE, else 30s), for
                         health documents that carry neither an MQTT 5 expiry nor intervalS:
                         such a document is stale when older than 3 × interval

Exit: 0 every gateway online, current and ok; 1 any is not, or none was found;
      2 bad arguments or files, or the broker cannot be reached.
      With --forget: 0 each one forgotten; 1 any not (not found, online, refused).
`;

/** Quiet time after the last retained message (or the SUBACK) that ends the collection. */
const QUIET_MS = 300;
/** CONNECT's maximum packet size (MQTT 5): the largest health document, its topic and properties. */
const MAX_PACKET = MAX_HEALTH_BYTES + 70_000;

const DEFAULT_MQTT: MqttConfig = {
  url: null, proxy: null, topicPrefix: 'vxedge', interval: 30_000, username: null, password: null, passwordFile: null, ca: null, cert: null, key: null,
};

export interface FleetOptions {
  /** The broker, TLS and credentials, in the gateway's config shape; url is set. */
  mqtt: MqttConfig;
  broker: BrokerUrl;
  prefix: string;
  json: boolean;
  watch: boolean;
  /** --forget: "site/node" of gateways whose retained messages are to be cleared. */
  forget: string[];
  clientId: string;
  /** Bound of the retained-message collection after the SUBACK. */
  waitMs: number;
  /** Quiet time that ends the collection sooner. */
  quietMs: number;
  /** Connecting (TCP, TLS, CONNACK) and subscribing. */
  timeoutMs: number;
  /** The publishing interval assumed for documents that do not state theirs. */
  intervalMs: number;
}

/** A mistake on the command line: exit 2 with the message, no stack trace. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The options of one run: flags over the -c file's mqtt section over the defaults. Throws UsageError or ConfigError. */
export function fleetOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): FleetOptions | 'help' {
  let v;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        url: { type: 'string' },
        proxy: { type: 'string' },
        config: { type: 'string', short: 'c' },
        prefix: { type: 'string' },
        ca: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        username: { type: 'string' },
        'password-file': { type: 'string' },
        'client-id': { type: 'string' },
        json: { type: 'boolean' },
        watch: { type: 'boolean' },
        forget: { type: 'string', multiple: true },
        wait: { type: 'string' },
        timeout: { type: 'string' },
        interval: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    // Node's message goes on about positionals after "--"; its first sentence is the point.
    throw new UsageError((e as Error).message.split(/\.\s/)[0]);
  }
  if (v.help) return 'help';
  const cfg = v.config !== undefined ? loadConfig(v.config, env) : null;
  const m: MqttConfig = { ...(cfg?.mqtt ?? DEFAULT_MQTT) };
  if (v.url !== undefined) m.url = v.url;
  if (v.proxy !== undefined) {
    try {
      checkMqttProxy(v.proxy);
    } catch (e) {
      throw new UsageError(`--proxy ${(e as Error).message}`);
    }
    m.proxy = v.proxy;
  }
  if (v.prefix !== undefined) m.topicPrefix = v.prefix;
  if (v.ca !== undefined) m.ca = v.ca;
  if (v.cert !== undefined) m.cert = v.cert;
  if (v.key !== undefined) m.key = v.key;
  if (v.username !== undefined) m.username = v.username;
  if (v['password-file'] !== undefined) {
    m.passwordFile = v['password-file'];
    m.password = null; // the flag replaces whatever password the file gave
  }

  if (m.url === null) {
    throw new UsageError(cfg ? `${v.config} has no mqtt.url (MQTT is off for that site); give the broker with --url URL` : 'no broker: give --url URL (e.g. mqtts://broker.example.com:8883) or -c FILE');
  }
  let broker: BrokerUrl;
  try {
    broker = parseBrokerUrl(m.url);
  } catch (e) {
    // Not echoed: a URL can carry a password.
    const why = e instanceof MqttSetupError ? e.message.replace(/^mqtt\.url /, '') : 'is not a URL (expected e.g. mqtts://broker.example.com:8883)';
    throw new UsageError(`--url ${why}`);
  }
  if (broker.host === '') throw new UsageError('--url names no broker host (expected e.g. mqtts://broker.example.com:8883)');
  const prefixWhy = prefixProblem(m.topicPrefix);
  if (prefixWhy) throw new UsageError(`--prefix ${show(m.topicPrefix)} ${prefixWhy}`);
  if ((m.cert === null) !== (m.key === null)) {
    throw new UsageError(`${m.cert === null ? '--key needs --cert' : '--cert needs --key'}: mutual TLS needs both the client certificate and its key`);
  }
  const forget = v.forget ?? [];
  for (const id of forget) {
    const levels = id.split('/');
    if (levels.length !== 2 || levels.some((l) => l === '' || /[+#\0]/.test(l))) {
      throw new UsageError(`--forget ${show(id)}: give one gateway as SITE/NODE, as vxedge fleet lists it (e.g. --forget lab/edge-1)`);
    }
  }
  if (forget.length && v.watch) throw new UsageError('--forget and --watch do not go together: forget first, then watch');
  const clientId = v['client-id'] ?? `vxedge-fleet-${randomBytes(4).toString('hex')}`;
  if (clientId === '') throw new UsageError('--client-id is empty');
  return {
    mqtt: m,
    broker,
    prefix: m.topicPrefix,
    json: v.json ?? false,
    watch: v.watch ?? false,
    forget,
    clientId,
    waitMs: duration('wait', v.wait, 2000, 0),
    quietMs: QUIET_MS,
    timeoutMs: duration('timeout', v.timeout, 5000, 1),
    intervalMs: duration('interval', v.interval, m.interval, 1),
  };
}

function duration(flag: string, given: string | undefined, fallback: number, min: number): number {
  if (given === undefined) return fallback;
  let ms: number;
  try {
    ms = parseDuration(given);
  } catch (e) {
    throw new UsageError(`--${flag}: ${(e as Error).message}`);
  }
  if (ms < min) throw new UsageError(`--${flag} ${show(given)} is too short (at least ${formatDuration(min)})`);
  return ms;
}

/** The gateway's client options, for a reader: no last will (a reader must announce nothing). */
export function readerClientOptions(o: FleetOptions, secrets: MqttSecrets, protocolVersion: ProtocolVersion): IClientOptions {
  const opts = buildClientOptions({ mqtt: o.mqtt, clientId: o.clientId, statusTopic: null, protocolVersion, secrets, connectTimeoutMs: o.timeoutMs });
  // The broker must not send us more than a health document can be (MQTT 5 §3.1.2.11.4).
  if (protocolVersion === 5) opts.properties = { ...opts.properties, maximumPacketSize: MAX_PACKET };
  return opts;
}
