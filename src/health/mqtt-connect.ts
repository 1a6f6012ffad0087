// One bounded MQTT connection attempt: resolves with the connected client, or with the
// attempt's first error (the telling one: a TLS alert comes before the ECONNRESET that follows
// it). Shared by `vxedge fleet` (a reader) and `vxedge check` (a connection test); the
// gateway's publisher keeps its own loop, with reconnects and the session's handlers.
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Clock } from '../util/clock.js';
import { formatDuration } from '../util/duration.js';
import type { ErrLike } from './mqtt-errors.js';
import { closeClient } from './mqtt-options.js';

/** Backstop over MQTT.js's own connect timeout (opts.connectTimeout). */
const CONNECT_GUARD_MS = 1000;

export interface ConnectIo {
  /** MQTT.js connect (unit tests pass a fake client). */
  connect(url: string, opts: IClientOptions): MqttClient;
  clock: Clock;
}

export interface ConnectResult {
  client: MqttClient | null;
  err: ErrLike | null;
}

/**
 * Connects once, within timeoutMs (plus a second's backstop). A failed client is closed; a
 * connected one keeps an 'error' listener until the caller adds its own (an 'error' without a
 * listener would throw).
 */
export function connectOnce(io: ConnectIo, url: string, opts: IClientOptions, timeoutMs: number): Promise<ConnectResult> {
  return new Promise((resolve) => {
    let client: MqttClient;
    try {
      client = io.connect(url, opts);
    } catch (e) {
      resolve({ client: null, err: e as ErrLike });
      return;
    }
    let err: ErrLike | null = null;
    let done = false;
    const onError = (e: ErrLike) => void (err ??= e);
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      guard.cancel();
      client.off('connect', onConnect);
      client.off('close', onClose);
      if (ok) return resolve({ client, err: null });
      closeClient(client);
      resolve({ client: null, err });
    };
    const onConnect = () => finish(true);
    const onClose = () => finish(false);
    const guard = io.clock.after(timeoutMs + CONNECT_GUARD_MS, () => {
      err ??= Object.assign(new Error(`no answer within ${formatDuration(timeoutMs)}`), { code: 'ETIMEDOUT' });
      finish(false);
    }, { keepAlive: true });
    client.on('error', onError);
    client.on('connect', onConnect);
    client.on('close', onClose);
  });
}
