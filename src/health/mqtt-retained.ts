// Reading and clearing one gateway's retained messages, for `vxedge retire` and `vxedge fleet
// --forget`: a site gone for good would otherwise stay on the broker, and in every fleet view,
// for as long as the broker runs.
//
// No waiting to guess: a broker sends a subscription's retained message after its SUBACK and
// before it handles the client's next packet, and a connection keeps the order. So once the
// UNSUBACK of the same topic is in, whatever was retained has arrived.
//
// A retained message with an empty payload makes the broker drop what it kept (MQTT 3.1.1
// §3.3.1.3, 5.0 §3.3.1.3). A broker whose ACL refuses the publish says so to an MQTT 5 client
// (PUBACK 0x87) but drops it silently for 3.1.1 (mosquitto), so a clear is read back before it
// counts as done.
import type { MqttClient } from 'mqtt';
import type { Clock } from '../util/clock.js';
import { formatDuration } from '../util/duration.js';

/** `op`, which calls `done` when the broker has answered, with a bound: "no answer to WHAT within …" after waitMs. */
function bounded(clock: Clock, waitMs: number, what: string, op: (done: (err: Error | null) => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let over = false;
    const timer = clock.after(waitMs, () => finish(new Error(`no answer to ${what} within ${formatDuration(waitMs)}`)));
    function finish(err: Error | null) {
      if (over) return;
      over = true;
      timer.cancel();
      if (err) reject(err);
      else resolve();
    }
    op(finish);
  });
}

/** The message retained on `topic` (null: none). Throws when the broker refuses the subscription or does not answer. */
export async function readRetained(client: MqttClient, topic: string, clock: Clock, waitMs: number): Promise<Buffer | null> {
  let payload: Buffer | null = null;
  const onMessage = (t: string, p: Buffer, packet: { retain?: boolean }) => {
    if (t === topic && packet.retain) payload = p.length > 0 ? p : null;
  };
  client.on('message', onMessage);
  try {
    await bounded(clock, waitMs, `the subscription to ${topic}`, (done) => {
      client.subscribe(topic, { qos: 1 }, (err, granted) => {
        if (err) return done(err);
        const code = granted?.[0]?.qos;
        // 0x80 (3.1.1's failure), or an MQTT 5 reason code: 0x87 not authorized, ...
        if (typeof code === 'number' && code >= 0x80) return done(new Error(`the broker refused the subscription (0x${code.toString(16)}): may these credentials read ${topic}?`));
        done(null);
      });
    });
    await bounded(clock, waitMs, `the unsubscription from ${topic}`, (done) => client.unsubscribe(topic, (err?: Error) => done(err ?? null)));
  } finally {
    client.off('message', onMessage);
  }
  return payload;
}

/**
 * Clears what is retained on `topics` (QoS 1 publishes of an empty retained message), then reads
 * each back: throws, naming the topic, when the broker refused or kept it.
 */
export async function clearRetained(client: MqttClient, topics: readonly string[], clock: Clock, waitMs: number): Promise<void> {
  for (const topic of topics) {
    await bounded(clock, waitMs, `the clearing publish to ${topic}`, (done) => {
      client.publish(topic, Buffer.alloc(0), { qos: 1, retain: true }, (err) => done(err ?? null));
    }).catch((e: Error) => {
      throw new Error(`clearing ${topic} failed: ${e.message}; may these credentials publish to it (a broker ACL)?`);
    });
  }
  for (const topic of topics) {
    if ((await readRetained(client, topic, clock, waitMs)) !== null) {
      throw new Error(`the broker still holds ${topic} after it was cleared: these credentials may not publish to it (a broker ACL drops such a publish without a word to an MQTT 3.1.1 client)`);
    }
  }
}
