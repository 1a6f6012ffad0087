// One plain-words log line per MQTT failure: what failed and which config key or what on
// the broker side to check. Pure, so the wording can be tested without a broker.
import { MQTT_SOCKS_VARIABLE, ProxyTunnelError, proxyNamedBy } from '../util/http-proxy.js';
import { explainTls, opensslReason, TLS_VERIFY_CODES, type TlsContext, type TlsWords } from '../util/tls-failure.js';
import { MqttSetupError, type BrokerUrl } from './mqtt-options.js';

export type MqttFailureKind = 'setup' | 'tls' | 'auth' | 'refused' | 'network' | 'closed' | 'lost';

export interface MqttFailure {
  kind: MqttFailureKind;
  /** The whole log line, e.g. "mqtt connection failed: …; check mqtt.ca/cert/key". */
  line: string;
}

/** CONNACK codes (3.1.1 return codes and MQTT 5 reason codes) that mean "who you are". */
const AUTH_CODES = new Set([4, 5, 134, 135, 138, 140]);
/** 3.1.1 "unacceptable protocol version" and MQTT 5 "unsupported protocol version". */
export const UNSUPPORTED_PROTOCOL_CODES = new Set([1, 132]);

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EPIPE', 'EADDRNOTAVAIL',
]);

export type ErrLike = Error & { code?: string | number; reason?: unknown };

/** The broker's TLS settings, for the shared words (util/tls-failure.ts). */
const TLS_WORDS: TlsWords = { peer: 'the broker', ca: 'mqtt.ca', cert: 'mqtt.cert', key: 'mqtt.key', host: 'mqtt.url', files: 'check mqtt.ca/cert/key' };

/**
 * A tunnel the proxy did not open (mqtt.proxy, or HTTP(S)_PROXY for a WebSocket): the proxy's
 * own words (util/http-proxy.ts ConnectTunnel, SocksTunnel), and what to do about them. A
 * refusal of credentials already says what to put where.
 */
function tunnelFailure(err: ErrLike | null, broker: BrokerUrl): string | null {
  if (!(err instanceof ProxyTunnelError)) return null;
  if (err.failure === 'unreachable') return `${err.message}; is the proxy up and reachable? Check ${proxyNamedBy(err.proxy)}`;
  if (err.failure === 'untrusted') return `${err.message}: ${err.fix}`;
  if (err.failure === 'credentials') return err.message;
  if (err.status === 403) {
    return `${err.message}; it does not let CONNECT through to port ${broker.port} (many proxies allow 443 only): have it allowed, or use a port of the broker it allows`;
  }
  return `${err.message}; it could not or would not reach the broker at ${broker.host}:${broker.port}`;
}

/**
 * A failure of the SOCKS proxy MQTTJS_SOCKS_PROXY names (the socks package's SocksClientError,
 * which carries the proxy in `options.proxy`), in words: the proxy not answering, refusing to
 * reach the broker, or asking for credentials MQTT.js does not send. null: not one.
 */
function socksFailure(err: ErrLike | null, where: string): string | null {
  const proxy = (err as { options?: { proxy?: { host?: unknown; port?: unknown } } } | null)?.options?.proxy;
  if (!err || typeof proxy?.host !== 'string') return null;
  const at = `through the SOCKS proxy ${proxy.host}:${String(proxy.port)} (${MQTT_SOCKS_VARIABLE}): ${err.message}`;
  if (/authentication/i.test(err.message)) {
    return `${at}; the proxy asks for a user name and password, which MQTT.js does not send: name the proxy in mqtt.proxy instead (socks5://USER:PASSWORD@HOST:PORT), which sends them, or let it admit this host without them`;
  }
  if (/rejected/i.test(err.message)) return `${at}; the proxy would not or could not reach the broker at ${where}: check mqtt.url and what the proxy allows`;
  return `${at}; is the proxy up and reachable? Check ${MQTT_SOCKS_VARIABLE}, or unset it to reach the broker directly`;
}

/** The short reason of a TLS error: OpenSSL's reason string, not its "80AC…:error:0A000418:SSL routines:…" line. */
export function tlsReason(err: ErrLike): string {
  if (typeof err.reason === 'string' && err.reason) return err.reason;
  return opensslReason(err.message) ?? err.message.split('\n')[0];
}

/** MQTT.js's (mqtt-packet's) error for a PUBACK whose reason code MQTT 5 does not allow there. */
const INVALID_PUBACK = /^Invalid puback reason code$/;

/** MQTT 5 DISCONNECT reason 0x8E: a client with the same client id connected, and the broker dropped us for it. */
export const SESSION_TAKEN_OVER = 142;

/** Whether the broker ended the connection because another client connected with our client id. */
export function isTakenOver(err: ErrLike | null): boolean {
  return !!err && err.code === SESSION_TAKEN_OVER;
}

/** Whether a CONNACK error says the broker does not speak the protocol version we asked for. */
export function isUnsupportedProtocol(err: ErrLike | null): boolean {
  return !!err && typeof err.code === 'number' && UNSUPPORTED_PROTOCOL_CODES.has(err.code) && /protocol/i.test(err.message);
}

export function isTlsError(err: ErrLike | null): boolean {
  if (!err) return false;
  const code = typeof err.code === 'string' ? err.code : '';
  return (
    TLS_VERIFY_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code === 'EPROTO' ||
    /\b(TLS|SSL|certificate)\b/i.test(err.message)
  );
}

/** What else a failure's words may name. */
export interface MqttFailureContext {
  /** The gateway's own client id, named with what to do when another client took the session over (a second gateway with the same site and node). */
  gatewayClientId?: string;
  /** The size of the health document in flight when the connection ended, if one was. */
  healthBytes?: number;
  /** The clock and mqtt.cert's dates, which a TLS failure's words name when they may be its cause. */
  tls?: TlsContext;
}

/**
 * Describes why an attempt ended. `err` is the error of the attempt (null if the connection just
 * closed); `connected` whether the attempt had got a CONNACK (then this is a lost connection).
 */
export function describeMqttFailure(err: ErrLike | null, broker: BrokerUrl, connected: boolean, ctx: MqttFailureContext = {}): MqttFailure {
  const { gatewayClientId, healthBytes, tls } = ctx;
  const where = `${broker.host}:${broker.port}`;
  if (err instanceof MqttSetupError) {
    return { kind: 'setup', line: `mqtt setup failed: ${err.message}; retrying` };
  }
  if (connected) {
    if (isTakenOver(err)) {
      // Most likely a second gateway with the same site and node (a cloned SD card keeps the
      // host name, node's default).
      const hint = gatewayClientId === undefined
        ? ''
        : `: is another gateway running with the same site and node (client id ${gatewayClientId})? ` +
          'Give each gateway its own node (default: the host name, which cloned images share)';
      return { kind: 'lost', line: `mqtt connection to ${where} taken over by another client with the same client id (DISCONNECT ${SESSION_TAKEN_OVER})${hint}; reconnecting` };
    }
    if (healthBytes !== undefined && err && INVALID_PUBACK.test(err.message)) {
      // mqtt-packet refuses PUBACK 0x95 "packet too large" (MQTT 5 allows it only in DISCONNECT),
      // mosquitto 2.0's answer to a message over message_size_limit.
      return {
        kind: 'lost',
        line: `mqtt connection to ${where} lost: the broker answered the health publish (${healthBytes} bytes) with a reason code MQTT.js cannot read (${err.message}): ` +
          'mosquitto does so for a message over its message_size_limit, which the document (it grows with the peers) must fit in; reconnecting',
      };
    }
    const why = err ? `: ${err.message}` : '';
    return { kind: 'lost', line: `mqtt connection to ${where} lost${why}; reconnecting` };
  }
  if (err && typeof err.code === 'number') {
    if (AUTH_CODES.has(err.code)) {
      return {
        kind: 'auth',
        line: `mqtt connection failed: ${err.message} (CONNACK ${err.code}); check mqtt.username and mqtt.password/passwordFile (or the client certificate) and the broker's ACL`,
      };
    }
    return { kind: 'refused', line: `mqtt connection failed: ${err.message} (CONNACK ${err.code}) from ${where}` };
  }
  const socks = socksFailure(err, where);
  if (socks) return { kind: 'network', line: `mqtt connection failed: ${socks}` };
  const tunnel = tunnelFailure(err, broker);
  if (tunnel) return { kind: 'network', line: `mqtt connection failed: ${tunnel}` };
  if (isTlsError(err)) {
    const reason = tlsReason(err!);
    const e = explainTls(`${reason} ${String(err!.code ?? '')}`, TLS_WORDS, tls);
    return { kind: 'tls', line: `mqtt connection failed: TLS: ${reason}${e ? ` (${e.why})` : ''}; ${e?.fix ?? TLS_WORDS.files}` };
  }
  if (err && broker.secure && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
    // Where TLS 1.3 is used, the broker checks the client certificate after the client's handshake ended.
    return { kind: 'tls', line: `mqtt connection failed: ${err.message} during TLS; check mqtt.ca/cert/key (the broker may have refused the client certificate)` };
  }
  if (err && (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN')) {
    // "getaddrinfo EAI_AGAIN b.example" asks the operator to know getaddrinfo's codes.
    const why = err.code === 'ENOTFOUND' ? 'no such host' : 'no DNS answer (no network yet, or the DNS server is unreachable)';
    return { kind: 'network', line: `mqtt connection failed: cannot resolve ${broker.host}: ${why} (${err.code}); check the host in mqtt.url and this box's DNS (/etc/resolv.conf)` };
  }
  if (err && (NETWORK_CODES.has(String(err.code)) || /connack timeout/i.test(err.message))) {
    return { kind: 'network', line: `mqtt connection failed: ${err.message}; is the broker up and reachable at ${where}?` };
  }
  if (!err) {
    const hint = broker.secure
      ? 'check mqtt.ca/cert/key (the broker may have refused the client certificate)'
      : 'the broker may refuse this client (client id, protocol or listener settings); see its log';
    return { kind: 'closed', line: `mqtt connection failed: ${where} closed the connection before accepting it; ${hint}` };
  }
  return { kind: 'network', line: `mqtt connection failed: ${err.message}${err.code ? ` (${err.code})` : ''}; broker ${where}` };
}
