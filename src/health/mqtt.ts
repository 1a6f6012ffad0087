// Health over MQTT for fleet tooling (docs/contract.md "MQTT topics"):
//   {prefix}/{site}/{node}/status  retained "online"/"offline"; the last will is a retained "offline"
//   {prefix}/{site}/{node}/health  retained JSON health document, every mqtt.interval and at once on change (a burst: one every 5 s)
//
// MQTT never touches the data plane: publishing is fire-and-forget from the event loop, the
// publisher reconnects in the background, and the gateway starts and forwards with the broker
// down. Nothing here throws into the gateway.
//
// Connection handling (docs/health.md "MQTT publisher"):
// - One MQTT.js client per connection attempt, with MQTT.js's own reconnecting off; the next
//   attempt is scheduled with exponential backoff and jitter (mqtt-backoff.ts), also after a
//   CONNACK error (bad credentials, not authorised) and TLS errors. Files (passwordFile, TLS)
//   are read at every attempt.
// - MQTT 5 first; a broker that answers "unsupported protocol version" gets 3.1.1 from then on.
//   With MQTT 5 the health document carries a message expiry of 3 × mqtt.interval, so a stale
//   retained document disappears from the broker.
// - Bounded memory: nothing is queued while offline; only the latest health document is kept,
//   and at most one health publish is in flight. Every (re)connect republishes the retained
//   "online" and the latest health.
// - One log line per distinct failure (repeated at most every 10 minutes), not one per attempt.
// - stop(): a retained "offline" (acknowledged) and a clean DISCONNECT, all within 2 s; if the
//   "offline" is not acknowledged the broker is left to publish the last will.
import type { TLSSocket } from 'node:tls';
import type { IClientOptions, IClientPublishOptions, MqttClient } from 'mqtt';
import { maskUrl } from '../config/formats.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { certValidity, type CertValidity, type SiteCertificate } from '../util/tls-failure.js';
import type { HealthDocument } from './document.js';
import { DEFAULT_BACKOFF, backoffDelay, type BackoffPolicy } from './mqtt-backoff.js';
import { describeMqttFailure, isTakenOver, isUnsupportedProtocol } from './mqtt-errors.js';
import {
  brokerCertificate, buildClientOptions, clientIdFor, closeClient, connectClient, healthExpiryS, proxyUsed, ignoredTlsKeys, loadSecrets, parseBrokerUrl, topics,
  type BrokerUrl, type FileReader, type MqttConfig, type ProtocolVersion, type ProxyUsed,
} from './mqtt-options.js';

export { backoffDelay, DEFAULT_BACKOFF } from './mqtt-backoff.js';
export type { BackoffPolicy } from './mqtt-backoff.js';

/** The `mqtt` field of the health document. */
export interface MqttStatus {
  enabled: boolean;
  connected: boolean;
  /** Health documents the broker acknowledged since start. */
  published: number;
  /** The last connection or publish error (kept after a reconnect, for the record). */
  lastError: string | null;
  /** Health documents waiting for the broker (0 or 1: only the latest is kept). */
  queued: number;
  /** Successful connections after the first one. */
  reconnects: number;
}

export interface PublisherDeps {
  /** MQTT.js connect (tests pass a fake client). */
  connect?: (url: string, opts: IClientOptions) => MqttClient;
  /** For the backoff jitter. */
  random?: () => number;
  readFile?: FileReader;
  backoff?: BackoffPolicy;
  clock?: Clock;
}

export interface HealthPublisherOptions {
  mqtt: MqttConfig;
  site: string;
  node: string;
  log: Logger;
  deps?: PublisherDeps;
  /** A connection was made and its broker's certificate read (the gateway's checks then look at it). */
  connected?: () => void;
}

// The topic names live with the connection pieces the CLI shares, so that `vxedge fleet` and
// `vxedge retire` need not load the publisher for them.
export { topics } from './mqtt-options.js';

/**
 * The publishing rule: when the last publish is at least one interval old; and when `changed`
 * (gateway or peer state), at once, unless the last publish that carried a change is under
 * CHANGE_GAP_MS old (or one interval, if that is shorter): then once it is that old. So a
 * change after a quiet spell goes out at once, as the contract says, also just after a
 * periodic publish; changes that keep coming (500 peers coming back one by one, as each one's
 * next probe is answered) make a document every 5 s, not one of some hundred kB every 250 ms
 * over the site's uplink that the tunnel needs. The slack absorbs the jitter of the gateway's
 * 2 s timer, so that a 30 s interval does not slip to 32 s.
 */
export function healthDue(now: number, last: { publishedAt: number; changeAt: number }, intervalMs: number, changed: boolean): boolean {
  if (now - last.publishedAt >= intervalMs - PUBLISH_SLACK_MS) return true;
  return changed && now - last.changeAt >= Math.min(intervalMs, CHANGE_GAP_MS) - PUBLISH_SLACK_MS;
}
const PUBLISH_SLACK_MS = 250;
const CHANGE_GAP_MS = 5000;

/**
 * The period the health is really published at: the gateway looks whether it is due on its
 * status tick (`tickMs`, 2 s), so an `mqtt.interval` shorter than that (0 included) publishes
 * every tick. The document states this one (`intervalS`), since fleet tooling calls a
 * document stale after 3 × that: the configured 1 s made every gateway look stale to a fleet
 * on an MQTT 3.1.1 broker, and 0 made `intervalS` 0, which `vxedge fleet` rejects.
 */
export function publishPeriodMs(intervalMs: number, tickMs: number): number {
  return Math.max(intervalMs, tickMs);
}

/** Bytes of an MQTT 5 PUBLISH besides its topic and payload (header, packet id, our properties), rounded up. */
const PUBLISH_OVERHEAD = 64;
const STOP_PUBLISH_MS = 1000;
const STOP_DISCONNECT_MS = 500;
const REPEAT_LOG_MS = 10 * 60_000;

export class HealthPublisher {
  private readonly t: { status: string; health: string };
  private readonly broker: BrokerUrl | null;
  private connectFn: ((url: string, opts: IClientOptions) => MqttClient) | null;
  private readonly random: () => number;
  private readonly backoff: BackoffPolicy;
  private readonly clock: Clock;
  /** mqtt.interval, which a reload may change without a new connection (setInterval). */
  private intervalMs: number;

  private running = false;
  private client: MqttClient | null = null;
  /** Bumped for every client, so that late events of an abandoned client are ignored. */
  private gen = 0;
  private retryTimer: Timer | null = null;
  private protocolVersion: ProtocolVersion = 5;
  /** Retries since the last stable connection (the backoff exponent). */
  private failures = 0;
  private retryNow = false;
  private connectedAt = 0;
  private everConnected = false;
  private attemptError: (Error & { code?: string | number }) | null = null;
  /** mqtt.cert's dates as last read, for a TLS failure's words (null: none set). */
  private clientCert: CertValidity | null = null;
  /** The certificate the broker presented at the last connection (mqtts://, wss://). */
  private brokerCert: SiteCertificate | null = null;
  /** wss://: the TLS socket under this attempt's WebSocket (buildClientOptions' onTlsSocket). */
  private wsSocket: TLSSocket | null = null;

  private latest: HealthDocument | null = null;
  /** Documents given to update() so far. */
  private documents = 0;
  private pending = false;
  /** A state change not published yet: it waits for the change gap (healthDue). */
  private changeHeld = false;
  private inflight = false;
  /** The broker's Maximum Packet Size (MQTT 5 CONNACK), null when it stated none. */
  private maxPacket: number | null = null;
  /** Bytes of the health document in flight (for a failure that its size explains). */
  private inflightBytes = 0;
  private lastPublishedAt = -Infinity;
  /** The last publish that carried a state change: changes are at most one per CHANGE_GAP_MS. */
  private lastChangePublishedAt = -Infinity;
  private published = 0;
  private reconnects = 0;
  private lastError: string | null = null;
  private lastLogged: { line: string; at: number; repeats: number } | null = null;
  /** When each warnOnce key was last logged (a refusal: once per topic and cause, every 10 min at most). */
  private readonly refusalsLogged = new Map<string, number>();

  constructor(private readonly o: HealthPublisherOptions) {
    this.t = topics(o.mqtt.topicPrefix, o.site, o.node);
    // MQTT.js (some 15 MB resident) is loaded at the first attempt, never for a site without a broker.
    this.connectFn = o.deps?.connect ?? null;
    this.random = o.deps?.random ?? Math.random;
    this.backoff = o.deps?.backoff ?? DEFAULT_BACKOFF;
    this.clock = o.deps?.clock ?? systemClock;
    this.intervalMs = o.mqtt.interval;
    let broker: BrokerUrl | null = null;
    try {
      broker = o.mqtt.url ? parseBrokerUrl(o.mqtt.url) : null;
    } catch (e) {
      this.lastError = (e as Error).message;
    }
    this.broker = broker;
  }

  get topics(): { status: string; health: string } {
    return this.t;
  }

  /** Starts connecting in the background; never throws for broker trouble. */
  start(): void {
    if (this.running || !this.o.mqtt.url) return;
    if (!this.broker) {
      this.o.log.error('mqtt disabled: invalid mqtt.url', { err: this.lastError });
      return;
    }
    this.running = true;
    const ignored = ignoredTlsKeys(this.o.mqtt);
    if (ignored.length) {
      this.o.log.warn(`mqtt: ${ignored.join(', ')} set but mqtt.url is not mqtts:// or wss://; they are not used`, { url: maskUrl(this.o.mqtt.url) });
    }
    if ((this.o.mqtt.password !== null || this.o.mqtt.passwordFile !== null) && this.o.mqtt.username === null && !/\/\/[^/@]+@/.test(this.o.mqtt.url)) {
      this.o.log.warn('mqtt: a password is set without mqtt.username; MQTT 3.1.1 brokers refuse that');
    }
    void this.attempt();
  }

  /** Called with every fresh health document; `changed` = gateway or peer state changed. Never throws. */
  update(doc: HealthDocument, changed: boolean): void {
    try {
      this.latest = doc;
      this.documents++;
      if (!this.running) return;
      if (changed) this.changeHeld = true;
      const last = { publishedAt: this.lastPublishedAt, changeAt: this.lastChangePublishedAt };
      if (healthDue(this.clock.monotonic(), last, this.intervalMs, this.changeHeld)) this.pending = true;
      this.flush();
      // Nothing waits for this document any more: let it go. Held until the next one (2 s),
      // 500 peers' rows outlived the young generation and became old-generation garbage
      // (docs/memory.md). A reconnect publishes the next document instead (onConnect).
      if (!this.pending) this.latest = null;
    } catch (e) {
      this.lastError = (e as Error).message;
    }
  }

  /**
   * A reload changed mqtt.interval alone: the next document is due by the new period, and
   * carries its expiry; the connection stays (a new one would show the site offline for a
   * moment). Any other mqtt key makes a new publisher (gateway.ts).
   */
  setInterval(intervalMs: number): void {
    this.intervalMs = intervalMs;
  }

  /**
   * The wall clock was set (network time after a boot; util/clock-step.ts): a connection that
   * failed and waits out its backoff is tried now, the backoff started afresh. Its TLS may have
   * failed on the clock (every certificate "not valid yet"), and its next retry could be a
   * minute away. True when it tried.
   */
  clockStepped(): boolean {
    if (!this.running || this.retryTimer === null) return false;
    this.retryTimer.cancel();
    this.failures = 0;
    this.o.log.info('mqtt: connecting again now: the clock was set');
    void this.attempt();
    return true;
  }

  /** The broker's certificate as it presented it at the last connection, for the certificates check. */
  brokerCertificate(): SiteCertificate | null {
    return this.brokerCert;
  }

  status(): MqttStatus {
    return {
      enabled: !!this.o.mqtt.url,
      connected: this.isConnected(),
      published: this.published,
      lastError: this.lastError,
      queued: this.pending && this.latest ? 1 : 0,
      reconnects: this.reconnects,
    };
  }

  /**
   * Publishes a retained "offline" (when connected) and disconnects cleanly, so the broker drops
   * the last will; bounded (< 2 s). Never rejects.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.retryTimer?.cancel();
    this.retryTimer = null;
    const c = this.client;
    this.client = null;
    this.gen++;
    if (!c) return;
    try {
      if (c.connected) {
        const acked = await withTimeout(
          new Promise<boolean>((resolve) => c.publish(this.t.status, 'offline', { qos: 1, retain: true }, (err) => resolve(!err))),
          STOP_PUBLISH_MS,
          false,
          this.clock,
        );
        if (acked) {
          await withTimeout(c.endAsync(false).then(() => true), STOP_DISCONNECT_MS, false, this.clock);
          this.o.log.info('mqtt offline published');
        } else if (this.protocolVersion === 5) {
          // DISCONNECT 0x04 "disconnect with will message": the broker publishes the retained "offline" will.
          await withTimeout(new Promise<boolean>((resolve) => c.end(false, { reasonCode: 4 }, () => resolve(true))), STOP_DISCONNECT_MS, false, this.clock);
          this.o.log.warn('mqtt offline not acknowledged in time; asked the broker for the last will');
        } else {
          this.o.log.warn('mqtt offline not acknowledged in time; closing without DISCONNECT so the broker sends the last will');
        }
      }
    } catch (e) {
      this.o.log.warn('mqtt stop', { err: (e as Error).message });
    } finally {
      closeClient(c);
    }
  }

  // ------------------------------------------------------------------------------------------

  private isConnected(): boolean {
    return this.running && this.connectedAt > 0 && (this.client?.connected ?? false);
  }

  private async attempt(): Promise<void> {
    this.retryTimer = null;
    if (!this.running) return;
    const gen = ++this.gen;
    const m = this.o.mqtt;
    this.attemptError = null;
    this.connectedAt = 0;
    this.wsSocket = null;
    let client: MqttClient;
    let proxy: ProxyUsed | null = null;
    try {
      const secrets = await loadSecrets(m, this.o.deps?.readFile);
      if (!this.running || gen !== this.gen) return;
      this.clientCert = secrets.cert ? certValidity(secrets.cert) : null;
      const opts = buildClientOptions({
        mqtt: m,
        clientId: clientIdFor(this.o.site, this.o.node),
        statusTopic: this.t.status,
        protocolVersion: this.protocolVersion,
        secrets,
        onTlsSocket: (socket) => {
          if (gen === this.gen) this.wsSocket = socket;
        },
      });
      proxy = proxyUsed(opts);
      if (!this.connectFn) {
        const lib = (await import('mqtt')).default;
        this.connectFn = (url, o) => connectClient(lib, url, o);
      }
      if (!this.running || gen !== this.gen) return;
      client = this.connectFn(m.url!, opts);
    } catch (e) {
      this.attemptError = e as Error;
      this.ended(gen, null);
      return;
    }
    this.client = client;
    this.o.log.debug('mqtt connecting', { url: maskUrl(m.url!), protocolVersion: this.protocolVersion });
    client.on('connect', (connack?: { properties?: { maximumPacketSize?: number } }) => this.onConnect(gen, client, connack?.properties?.maximumPacketSize, proxy));
    client.on('error', (e: Error & { code?: string | number }) => {
      if (gen !== this.gen) return;
      // The first error of an attempt is the telling one (a TLS alert, then ECONNRESET).
      this.attemptError ??= e;
      if (isUnsupportedProtocol(e) && this.protocolVersion === 5) {
        this.protocolVersion = 4;
        this.retryNow = true;
        this.o.log.info('mqtt broker does not support MQTT 5; using 3.1.1', { err: e.message });
      }
      // After CONNACK, MQTT.js emits an error only for a connection it cannot go on with, and
      // may leave it open: its parser stops at a packet it cannot read (mosquitto answers a
      // publish over its message_size_limit with PUBACK 0x95, which MQTT 5 does not allow there)
      // and reads nothing after it, so no acknowledgement came and the health stayed in flight,
      // unsaid, until the keepalive gave up. End it now: said, and the next attempt scheduled.
      if (this.connectedAt > 0) this.ended(gen, client);
    });
    client.on('disconnect', (p: { reasonCode?: number }) => {
      // MQTT 5: the broker says why it ends the connection (e.g. session taken over by the same client id).
      if (gen === this.gen) this.attemptError ??= Object.assign(new Error(`broker sent DISCONNECT (reason code ${p.reasonCode ?? '?'})`), { code: p.reasonCode });
    });
    client.on('close', () => this.ended(gen, client));
  }

  /** `proxy`: the proxy the connection went through, for the log. */
  private onConnect(gen: number, client: MqttClient, maximumPacketSize: number | undefined, proxy: ProxyUsed | null): void {
    if (gen !== this.gen || !this.running) return;
    this.maxPacket = typeof maximumPacketSize === 'number' && maximumPacketSize > 0 ? maximumPacketSize : null;
    this.brokerCert = brokerCertificate(this.o.mqtt.url!, client, this.wsSocket) ?? this.brokerCert;
    if (this.brokerCert) this.o.connected?.();
    if (this.everConnected) this.reconnects++;
    this.everConnected = true;
    this.connectedAt = this.clock.monotonic();
    this.attemptError = null;
    this.lastLogged = null;
    this.inflight = false;
    this.o.log.info('mqtt connected', {
      url: maskUrl(this.o.mqtt.url!), protocol: this.protocolVersion === 5 ? '5.0' : '3.1.1', status: this.t.status,
      ...(proxy ? { proxy: `${proxy.url} (${proxy.from})` } : {}),
    });
    try {
      client.publish(this.t.status, 'online', { qos: 1, retain: true }, (err) => {
        if (!err || gen !== this.gen) return;
        this.lastError = `publish online: ${err.message}`;
        if (isRefusal(err)) this.refused(this.t.status, err);
      });
    } catch (e) {
      this.lastError = `publish online: ${(e as Error).message}`;
    }
    // Retained state is republished on every (re)connect: the broker may have lost it. The
    // document waiting, if one is; else the next one (the gateway makes one every 2 s).
    if (this.latest || this.documents > 0) this.pending = true;
    this.flush();
  }

  /** The end of an attempt (closed, or failed before a client existed): log once, schedule the next. */
  private ended(gen: number, client: MqttClient | null): void {
    if (gen !== this.gen) return;
    const wasConnected = this.connectedAt > 0;
    const connectedFor = wasConnected ? this.clock.monotonic() - this.connectedAt : 0;
    const inflightBytes = this.inflight ? this.inflightBytes : undefined;
    this.connectedAt = 0;
    this.inflight = false;
    this.gen++; // late events of this client are ignored from now on
    if (client) {
      this.client = null;
      closeClient(client);
    }
    if (!this.running) return;
    let delay = 0;
    if (this.retryNow) {
      // Protocol fallback (logged already): try again at once.
      this.retryNow = false;
    } else {
      const failure = describeMqttFailure(this.attemptError, this.broker!, wasConnected, {
        gatewayClientId: clientIdFor(this.o.site, this.o.node), healthBytes: inflightBytes, tls: { nowMs: this.clock.now(), synchronised: this.clock.synchronised?.() ?? null, clientCert: this.clientCert },
      });
      // Taken over: another client connected with our id. Two gateways with one id would kick
      // each other out every second; the schedule keeps growing instead.
      const takenOver = wasConnected && isTakenOver(this.attemptError);
      // The log line without its "mqtt connection failed: " lead-in: cause and hint, no OpenSSL noise.
      this.lastError = failure.line.replace(/^mqtt (connection failed: |setup failed: )?/, '').replace(/; (retrying|reconnecting)$/, '');
      if (wasConnected && connectedFor >= this.backoff.stableMs && !takenOver) this.failures = 0;
      delay = backoffDelay(this.failures, this.backoff, this.random);
      this.failures++;
      this.logFailure(failure.line, delay);
    }
    this.retryTimer = this.clock.after(delay, () => void this.attempt());
  }

  private logFailure(line: string, delayMs: number): void {
    const now = this.clock.monotonic();
    const l = this.lastLogged;
    if (l && l.line === line && now - l.at < REPEAT_LOG_MS) {
      l.repeats++;
      this.o.log.debug(line, { retryInS: round1(delayMs / 1000) });
      return;
    }
    const fields: Record<string, unknown> = { retryInS: round1(delayMs / 1000) };
    if (l && l.line === line) fields.repeats = l.repeats + 1;
    this.lastLogged = { line, at: now, repeats: 0 };
    this.o.log.warn(line, fields);
  }

  /** A publish the broker refused: said in the log (once per topic and cause, every 10 min at most) and in lastError. */
  private refused(topic: string, err: Error & { code?: string | number }): void {
    const line =
      `mqtt: the broker refused the publish to ${topic}: ${err.message} (${err.code}); ` +
      `check the broker's ACL: this client (mqtt.username, or the client certificate) must be allowed to write ${this.o.mqtt.topicPrefix}/${this.o.site}/${this.o.node}/#`;
    this.lastError = `broker refused the publish to ${topic}: ${err.message} (${err.code})`;
    this.warnOnce(line, line);
  }

  /** A health document larger than the broker takes (its CONNACK's Maximum Packet Size): said, not sent. */
  private overMaxPacket(bytes: number, maxPacket: number): void {
    this.lastError = `health document not published: ${bytes} bytes, over the broker's maximum packet size of ${maxPacket} bytes`;
    // Keyed without the sizes: the document's changes with every one.
    this.warnOnce(
      'over max packet',
      `mqtt: the health document (${bytes} bytes) is over the broker's maximum packet size (${maxPacket} bytes, from its CONNACK); ` +
        'not published: raise the broker\'s limit (mosquitto: max_packet_size); the document grows with the peers',
    );
  }

  /** Logs `line` unless the same `key` was logged within the last 10 minutes (few keys: two topics, few causes). */
  private warnOnce(key: string, line: string): void {
    const now = this.clock.monotonic();
    const at = this.refusalsLogged.get(key);
    if (at !== undefined && now - at < REPEAT_LOG_MS) return;
    if (this.refusalsLogged.size >= 16) this.refusalsLogged.clear();
    this.refusalsLogged.set(key, now);
    this.o.log.warn(line);
  }

  /** Publishes the latest health document if one is due and none is in flight. Never throws. */
  private flush(): void {
    const c = this.client;
    if (!this.pending || this.inflight || !this.latest || !c || !this.isConnected()) return;
    const gen = this.gen;
    const opts: IClientPublishOptions = { qos: 1, retain: true };
    if (this.protocolVersion === 5) {
      opts.properties = { messageExpiryInterval: healthExpiryS(this.intervalMs), contentType: 'application/json', payloadFormatIndicator: true };
    }
    this.pending = false;
    this.inflight = true;
    this.lastPublishedAt = this.clock.monotonic();
    if (this.changeHeld) this.lastChangePublishedAt = this.lastPublishedAt;
    this.changeHeld = false;
    // The document was made before this publish (maybe while disconnected): its `mqtt` field,
    // which this publisher owns, is brought up to date.
    const doc = this.latest.mqtt ? { ...this.latest, mqtt: this.status() } : this.latest;
    try {
      const payload = JSON.stringify(doc);
      this.inflightBytes = Buffer.byteLength(payload);
      if (this.maxPacket !== null && this.inflightBytes + Buffer.byteLength(this.t.health) + PUBLISH_OVERHEAD > this.maxPacket) {
        // The broker said in its CONNACK that it takes no larger packet, and it ends the
        // connection on one (DISCONNECT 0x95): its will then said "offline" and every new
        // connection met the same. Not sent; tried again when the next document is due.
        this.inflight = false;
        this.overMaxPacket(this.inflightBytes, this.maxPacket);
        return;
      }
      c.publish(this.t.health, payload, opts, (err) => {
        if (gen !== this.gen) return;
        this.inflight = false;
        if (err) {
          this.lastError = `publish health: ${err.message}`;
          if (isRefusal(err)) {
            // The broker answered and said no (MQTT 5 PUBACK ≥ 0x80, e.g. its ACL): not a lost
            // connection. Tried again when the next document is due, not with every one (2 s).
            this.refused(this.t.health, err);
            return;
          }
          this.pending = true; // the next connection republishes it
          return;
        }
        this.published++;
        // A newer document became due while this one was in flight.
        this.flush();
      });
    } catch (e) {
      this.inflight = false;
      this.pending = true;
      this.lastError = `publish health: ${(e as Error).message}`;
    }
  }
}

/** An MQTT 5 PUBACK reason code ≥ 0x80: the broker refused this publish (MQTT.js passes it as err.code). */
function isRefusal(err: Error & { code?: string | number }): boolean {
  return typeof err.code === 'number' && err.code >= 0x80;
}

function withTimeout<T>(p: Promise<T>, ms: number, fallback: T, clock: Clock): Promise<T> {
  return new Promise<T>((resolve) => {
    const timer = clock.after(ms, () => resolve(fallback));
    p.then(
      (v) => {
        timer.cancel();
        resolve(v);
      },
      () => {
        timer.cancel();
        resolve(fallback);
      },
    );
  });
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
