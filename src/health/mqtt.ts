// Health over MQTT for fleet tooling (interface.md "MQTT topics"):
//   {prefix}/{site}/{node}/status  retained "online"/"offline"; the last will is a retained "offline"
//   {prefix}/{site}/{node}/health  retained JSON health document, every mqtt.interval and at once on change
// MQTT never touches the data plane: publishing is fire-and-forget from the event
// loop, the client reconnects in the background, and the gateway starts and forwards
// with the broker down.
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Config } from '../config/types.js';
import type { Logger } from '../util/log.js';
import type { HealthDocument } from './document.js';

export interface MqttStatus {
  enabled: boolean;
  connected: boolean;
  published: number;
  lastError: string | null;
}

export interface HealthPublisherOptions {
  mqtt: Config['mqtt'];
  site: string;
  node: string;
  log: Logger;
}

export function topics(prefix: string, site: string, node: string): { status: string; health: string } {
  const base = `${prefix}/${site}/${node}`;
  return { status: `${base}/status`, health: `${base}/health` };
}

export class HealthPublisher {
  private client: MqttClient | null = null;
  private readonly t: { status: string; health: string };
  private lastPublishedAt = 0;
  private latest: HealthDocument | null = null;
  private published = 0;
  private lastError: string | null = null;

  constructor(private readonly o: HealthPublisherOptions) {
    this.t = topics(o.mqtt.topicPrefix, o.site, o.node);
  }

  /** Starts connecting in the background; never throws for broker trouble. */
  start(): void {
    const m = this.o.mqtt;
    if (!m.url) return;
    const opts: IClientOptions = {
      clientId: `vxedge-${this.o.site}-${this.o.node}`,
      clean: true,
      keepalive: 60,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      queueQoSZero: false,
      will: { topic: this.t.status, payload: Buffer.from('offline'), qos: 1, retain: true },
      username: m.username ?? undefined,
      password: m.password ?? undefined,
    };
    this.client = mqtt.connect(m.url, opts);
    this.client.on('connect', () => {
      this.o.log.info('mqtt connected', { url: m.url });
      this.client!.publish(this.t.status, 'online', { qos: 1, retain: true });
      if (this.latest) this.send(this.latest);
    });
    this.client.on('error', (e) => {
      this.lastError = e.message;
      this.o.log.warn('mqtt error', { err: e.message });
    });
  }

  /** Called with every fresh health document; `changed` = gateway or peer state changed. */
  update(doc: HealthDocument, changed: boolean): void {
    this.latest = doc;
    if (!this.client) return;
    if (changed || Date.now() - this.lastPublishedAt >= this.o.mqtt.interval) this.send(doc);
  }

  status(): MqttStatus {
    return { enabled: !!this.o.mqtt.url, connected: this.client?.connected ?? false, published: this.published, lastError: this.lastError };
  }

  /** Publishes a retained "offline" (when connected) and disconnects; bounded in time. */
  async stop(): Promise<void> {
    const c = this.client;
    if (!c) return;
    this.client = null;
    if (c.connected) {
      await Promise.race([
        new Promise<void>((resolve) => c.publish(this.t.status, 'offline', { qos: 1, retain: true }, () => resolve())),
        new Promise<void>((resolve) => setTimeout(resolve, 1500)),
      ]);
    }
    await Promise.race([c.endAsync(), new Promise<void>((resolve) => setTimeout(resolve, 1000))]);
  }

  private send(doc: HealthDocument): void {
    if (!this.client?.connected) return;
    this.lastPublishedAt = Date.now();
    this.client.publish(this.t.health, JSON.stringify(doc), { qos: 1, retain: true }, (err) => {
      if (err) this.lastError = err.message;
      else this.published++;
    });
  }
}
