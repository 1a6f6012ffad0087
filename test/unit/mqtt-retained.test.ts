// Reading and clearing retained messages (src/health/mqtt-retained.ts) against a scripted
// broker that keeps MQTT's order on a connection: a subscription's retained message comes after
// its SUBACK and before the next packet's answer. What the lab's mosquitto cannot show: a
// broker that drops a refused publish without a word (an ACL, MQTT 3.1.1), and one that never
// answers. The real broker: test/lab/fleet.test.ts ("--forget"), test/lab/cluster-etcd.test.ts.
import { EventEmitter } from 'node:events';
import type { MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { clearRetained, readRetained } from '../../src/health/mqtt-retained.js';
import { ManualClock } from '../support/clock.js';

/** A client over an in-memory broker: `retained` is what the broker keeps; `mayPublish` its ACL. */
class ScriptedClient extends EventEmitter {
  readonly retained = new Map<string, Buffer>();
  readonly log: string[] = [];
  mayPublish = true;
  /** 3.1.1: a refused publish is acknowledged all the same; 5: PUBACK 0x87. */
  v5 = false;
  subackCode = 1;
  silent = false;

  subscribe(topic: string, _o: unknown, cb: (err: Error | null, granted: { topic: string; qos: number }[]) => void): void {
    this.log.push(`sub ${topic}`);
    if (this.silent) return;
    queueMicrotask(() => {
      cb(null, [{ topic, qos: this.subackCode }]);
      const kept = this.retained.get(topic);
      if (kept && this.subackCode < 0x80) queueMicrotask(() => this.emit('message', topic, kept, { retain: true }));
    });
  }

  unsubscribe(topic: string, cb: (err?: Error) => void): void {
    this.log.push(`unsub ${topic}`);
    // After the retained message, as the connection orders them.
    queueMicrotask(() => queueMicrotask(() => cb()));
  }

  publish(topic: string, payload: Buffer, o: { retain: boolean }, cb: (err?: Error) => void): void {
    this.log.push(`pub ${topic} ${payload.length}`);
    if (this.silent) return;
    queueMicrotask(() => {
      if (!this.mayPublish) return cb(this.v5 ? new Error('Publish error: Not authorized') : undefined);
      if (o.retain) {
        if (payload.length === 0) this.retained.delete(topic);
        else this.retained.set(topic, payload);
      }
      cb();
    });
  }
}

const as = (c: ScriptedClient) => c as unknown as MqttClient;
const T = ['p/lab/e1/health', 'p/lab/e1/status'];

describe('retained messages: read and clear', () => {
  it('reads what is retained, and null when nothing is, with no wait on the clock', async () => {
    const c = new ScriptedClient();
    const clock = new ManualClock();
    c.retained.set('p/lab/e1/status', Buffer.from('offline'));
    expect((await readRetained(as(c), 'p/lab/e1/status', clock, 8_000))?.toString()).toBe('offline');
    expect(await readRetained(as(c), 'p/lab/e1/health', clock, 8_000)).toBeNull();
    expect(c.log).toEqual(['sub p/lab/e1/status', 'unsub p/lab/e1/status', 'sub p/lab/e1/health', 'unsub p/lab/e1/health']);
    expect(c.listenerCount('message')).toBe(0);
  });

  it('a refused subscription says so', async () => {
    const c = new ScriptedClient();
    c.subackCode = 0x87;
    await expect(readRetained(as(c), 'p/lab/e1/status', new ManualClock(), 8_000)).rejects.toThrow(/refused the subscription \(0x87\): may these credentials read p\/lab\/e1\/status\?/);
  });

  it('clears both topics and reads them back', async () => {
    const c = new ScriptedClient();
    for (const t of T) c.retained.set(t, Buffer.from('x'));
    await clearRetained(as(c), T, new ManualClock(), 8_000);
    expect(c.retained.size).toBe(0);
    expect(c.log.filter((l) => l.startsWith('pub'))).toEqual(['pub p/lab/e1/health 0', 'pub p/lab/e1/status 0']);
  });

  it('a publish the broker drops without a word (3.1.1 and an ACL) is caught by the read-back', async () => {
    const c = new ScriptedClient();
    c.mayPublish = false;
    for (const t of T) c.retained.set(t, Buffer.from('x'));
    await expect(clearRetained(as(c), T, new ManualClock(), 8_000)).rejects.toThrow(/the broker still holds p\/lab\/e1\/health after it was cleared: these credentials may not publish to it/);
    c.v5 = true;
    await expect(clearRetained(as(c), T, new ManualClock(), 8_000)).rejects.toThrow(/clearing p\/lab\/e1\/health failed: Publish error: Not authorized; may these credentials publish to it/);
    expect(c.retained.size).toBe(2);
  });

  it('a broker that never answers: bounded by the wait, on the clock', async () => {
    const c = new ScriptedClient();
    c.silent = true;
    const clock = new ManualClock();
    const read = readRetained(as(c), 'p/lab/e1/status', clock, 8_000);
    const clear = clearRetained(as(c), T, clock, 8_000);
    const settled = { read: false, clear: false };
    read.catch(() => (settled.read = true));
    clear.catch(() => (settled.clear = true));
    clock.advance(7_999);
    await Promise.resolve();
    expect(settled).toEqual({ read: false, clear: false });
    clock.advance(1);
    await expect(read).rejects.toThrow(/no answer to the subscription to p\/lab\/e1\/status within 8s/);
    await expect(clear).rejects.toThrow(/clearing p\/lab\/e1\/health failed: no answer to the clearing publish/);
  });
});
