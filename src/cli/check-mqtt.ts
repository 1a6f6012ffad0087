// `vxedge check`'s `mqtt` line: can this box reach the broker in mqtt.url with the configured
// credentials and TLS files? One connection as the gateway makes it (its options builder,
// MQTT 5 then 3.1.1), without its last will and under a client id of its own, so that a
// running gateway's session is not taken over and nothing is ever published: the broker's
// answer (CONNACK, a TLS alert, silence) is the result, in the words the gateway would log.
import type { TLSSocket } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { maskUrl } from '../config/formats.js';
import type { Config } from '../config/types.js';
import type { CheckResult } from '../health/document.js';
import { connectOnce, type ConnectIo, type ConnectResult } from '../health/mqtt-connect.js';
import { describeMqttFailure, isUnsupportedProtocol } from '../health/mqtt-errors.js';
import { MqttSetupError, brokerCertificate, buildClientOptions, closeClient, connectClient, proxyUsed, type ProxyUsed, markedClientId, loadSecrets, parseBrokerUrl, type MqttSecrets, type ProtocolVersion } from '../health/mqtt-options.js';
import { systemClock } from '../util/clock.js';
import { certValidity, type SiteCertificate } from '../util/tls-failure.js';

/** How long `vxedge check` waits for the broker's answer. */
export const MQTT_CHECK_WAIT_MS = 8_000;

/** The client id `vxedge check` connects with: the gateway's, marked, so that it takes nothing over. */
export function checkClientId(cfg: Pick<Config, 'site' | 'node'>): string {
  return markedClientId(cfg.site, cfg.node, 'check');
}

export interface MqttPreflight {
  check: CheckResult;
  /** The certificate the broker presented (mqtts:// and connected), for the certificates line. */
  presented: SiteCertificate | null;
}

/** A connection as the gateway makes it, or the failure in the gateway's words (without "retrying"). */
export type GatewayConnection =
  | { client: MqttClient; version: ProtocolVersion; wsSocket: TLSSocket | null; proxy: ProxyUsed | null; error?: undefined }
  | { error: string; client?: undefined };

/**
 * Connects once to mqtt.url with the gateway's TLS files and credentials, MQTT 5 then 3.1.1,
 * under `clientId` (`who` is the command, for the words of a refusal) and without a last will: nothing may be published in the gateway's name by
 * the broker. Shared by `vxedge check` and `vxedge retire`.
 */
export async function connectAsGateway(m: Config['mqtt'] & { url: string }, who: string, clientId: string, io: ConnectIo, waitMs: number): Promise<GatewayConnection> {
  let secrets: MqttSecrets;
  let wsSocket: TLSSocket | null = null;
  // The proxy the options chose (MQTT.js copies MQTTJS_SOCKS_PROXY into a ws:// client's
  // options too, where it is not used: not o.socksProxy).
  let proxy: ProxyUsed | null = null;
  const options = (protocolVersion: ProtocolVersion) => {
    const o = buildClientOptions({
      mqtt: m, clientId, statusTopic: null, protocolVersion, secrets, connectTimeoutMs: waitMs, onTlsSocket: (socket) => (wsSocket = socket),
    });
    proxy = proxyUsed(o);
    return o;
  };
  let version: ProtocolVersion = 5;
  let r: ConnectResult;
  try {
    secrets = await loadSecrets(m);
    // Its options are made first: a proxy variable that cannot be used is a setup error too.
    r = await connectOnce(io, m.url, options(version), waitMs);
  } catch (e) {
    if (e instanceof MqttSetupError) return { error: e.message };
    throw e;
  }
  if (!r.client && isUnsupportedProtocol(r.err)) {
    version = 4;
    r = await connectOnce(io, m.url, options(version), waitMs);
  }
  if (r.client) return { client: r.client, version, wsSocket, proxy };
  const f = describeMqttFailure(r.err, parseBrokerUrl(m.url), false, {
    tls: { nowMs: io.clock.now(), synchronised: io.clock.synchronised?.() ?? null, clientCert: secrets.cert ? certValidity(secrets.cert) : null },
  });
  const line = f.line.replace(/^mqtt connection failed: /, '').replace(/; retrying$/, '');
  // A broker may admit only the gateway's own client id (an AWS IoT policy on
  // client/${iot:ClientId}): then this refusal says nothing about the gateway's.
  const idNote = f.kind === 'auth' ? ` (${who} connects as ${clientId}; a broker that admits only the gateway's own client id refuses that id alone; the gateway's own attempt is in its log)` : '';
  return { error: line + idNote };
}

/** The `mqtt` check; null when mqtt.url is not set. */
export async function mqttPreflight(cfg: Config, io: ConnectIo = { connect: (url, opts) => connectClient(mqtt, url, opts), clock: systemClock }, waitMs = MQTT_CHECK_WAIT_MS): Promise<MqttPreflight | null> {
  const m = cfg.mqtt;
  if (!m.url) return null;
  const where = maskUrl(m.url);
  // The failure sentences carry what to check, as the gateway's log does: no separate fix.
  const r = await connectAsGateway({ ...m, url: m.url }, 'vxedge check', checkClientId(cfg), io, waitMs);
  if (r.error !== undefined) return { check: { name: 'mqtt', ok: false, detail: `${where}: ${r.error}` }, presented: null };
  const max = r.client.options.properties?.maximumPacketSize;
  const presented = brokerCertificate(m.url, r.client, r.wsSocket);
  closeClient(r.client);
  const as = m.username !== null ? `, as ${m.username}` : '';
  const via = r.proxy ? ` through the ${r.proxy.kind} proxy ${r.proxy.url} (${r.proxy.from})` : '';
  return {
    check: {
      name: 'mqtt', ok: true,
      detail: `${where}: connected (MQTT ${r.version === 5 ? '5.0' : '3.1.1'}${as})${via}${typeof max === 'number' ? `; the broker takes packets up to ${max} bytes` : ''}`,
    },
    presented,
  };
}
