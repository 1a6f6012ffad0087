// `vxedge check`'s mqtt line (src/cli/check-mqtt.ts) against a scripted client: what it connects
// with (its own client id, no will), MQTT 5 then 3.1.1, and what each answer becomes. The same
// against real mosquitto (password + ACL, mutual TLS): test/lab/mqtt.test.ts.
import { EventEmitter } from 'node:events';
import type { IClientOptions, MqttClient } from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkClientId, mqttPreflight } from '../../src/cli/check-mqtt.js';
import { configFromObject } from '../../src/config/index.js';
import { ManualClock } from '../support/clock.js';

type Script = (c: FakeClient) => void;

class FakeClient extends EventEmitter {
  stream: object = { destroy: () => {} };
  ended = false;
  constructor(readonly url: string, readonly options: IClientOptions) {
    super();
  }
  end(): void {
    this.ended = true;
  }
}

function rig(scripts: Script[]) {
  const clock = new ManualClock();
  const clients: FakeClient[] = [];
  const io = {
    clock,
    connect: (url: string, opts: IClientOptions) => {
      const c = new FakeClient(url, opts);
      clients.push(c);
      const script = scripts[clients.length - 1];
      if (script) queueMicrotask(() => script(c));
      return c as unknown as MqttClient;
    },
  };
  return { clock, clients, io };
}

const cfg = (mqtt: Record<string, unknown>) => configFromObject({ site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' }, mqtt }, 'site.yaml', {});
const accept = (max?: number): Script => (c) => {
  // MQTT.js keeps the CONNACK's Maximum Packet Size in the client's options.
  if (max !== undefined) c.options.properties = { ...c.options.properties, maximumPacketSize: max };
  c.emit('connect', {});
};
const refuse = (code: number, message: string): Script => (c) => {
  c.emit('error', Object.assign(new Error(message), { code }));
  c.emit('close');
};

describe('vxedge check: the mqtt line', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('no mqtt.url, no line', async () => {
    expect(await mqttPreflight(cfg({ url: null }), rig([]).io)).toBeNull();
  });

  it('connects as a client of its own, without the last will, and says what the broker allows', async () => {
    const r = rig([accept(65_536)]);
    const c = cfg({ url: 'mqtt://broker.test:1883', username: 'edge-1', password: 'pw' });
    const line = await mqttPreflight(c, r.io);
    expect(line).toEqual({ check: { name: 'mqtt', ok: true, detail: 'mqtt://broker.test:1883: connected (MQTT 5.0, as edge-1); the broker takes packets up to 65536 bytes' }, presented: null });
    const o = r.clients[0]!.options;
    expect(o.clientId).toBe('vxedge-lab-edge-1-check');
    expect(o.will).toBeUndefined();
    expect(o).toMatchObject({ protocolVersion: 5, username: 'edge-1', password: 'pw', clean: true });
    expect(r.clients[0]!.ended).toBe(true); // closed again at once
  });

  it('through the SOCKS proxy MQTTJS_SOCKS_PROXY names, for mqtt:// and mqtts:// only: the line says so; ws:// and wss://, which MQTT.js hands it too but do not use it, do not', async () => {
    vi.stubEnv('MQTTJS_SOCKS_PROXY', 'socks5://198.51.100.9:1080');
    // As MQTT.js does: it copies the variable into the options of a client that has none.
    const copied = (): Script => (c) => {
      c.options.socksProxy ??= process.env.MQTTJS_SOCKS_PROXY;
      c.emit('connect', {});
    };
    const plain = rig([copied()]);
    expect((await mqttPreflight(cfg({ url: 'mqtt://broker.test:1883' }), plain.io))?.check.detail)
      .toBe('mqtt://broker.test:1883: connected (MQTT 5.0) through the SOCKS proxy socks5://198.51.100.9:1080 (MQTTJS_SOCKS_PROXY)');
    const ws = rig([copied()]);
    expect((await mqttPreflight(cfg({ url: 'ws://broker.test:8080/mqtt' }), ws.io))?.check.detail).toBe('ws://broker.test:8080/mqtt: connected (MQTT 5.0)');
    expect(ws.clients[0]!.options.socksProxy).toBe('socks5://198.51.100.9:1080'); // there, and unused
  });

  it('a broker that speaks only 3.1.1 is asked again in 3.1.1', async () => {
    const r = rig([refuse(132, 'Unsupported Protocol Version'), accept()]);
    const line = await mqttPreflight(cfg({ url: 'mqtt://broker.test:1883' }), r.io);
    expect(r.clients.map((x) => x.options.protocolVersion)).toEqual([5, 4]);
    expect(line?.check).toEqual({ name: 'mqtt', ok: true, detail: 'mqtt://broker.test:1883: connected (MQTT 3.1.1)' });
  });

  it('a refused login names what to check, and that the check used its own client id', async () => {
    const r = rig([refuse(135, 'Connection refused: Not authorized')]);
    const line = await mqttPreflight(cfg({ url: 'mqtt://broker.test:1883', username: 'edge-1', password: 'bad' }), r.io);
    expect(line?.check).toMatchObject({ ok: false, detail: expect.stringMatching(/^mqtt:\/\/broker\.test:1883: Connection refused: Not authorized \(CONNACK 135\); check mqtt\.username and mqtt\.password\/passwordFile .*connects as vxedge-lab-edge-1-check/) });
  });

  it('a broker that never answers: fails after the wait, not before', async () => {
    const r = rig([() => {}]);
    let done: unknown;
    const p = mqttPreflight(cfg({ url: 'mqtts://broker.test:8883' }), r.io, 8_000).then((v) => (done = v));
    await r.clock.advanceAsync(8_000);
    expect(done).toBeUndefined();
    await r.clock.advanceAsync(1_100);
    await p;
    expect(done).toMatchObject({ check: { ok: false, detail: expect.stringMatching(/^mqtts:\/\/broker\.test:8883: no answer within 8s; is the broker up and reachable at broker\.test:8883\?$/) }, presented: null });
  });

  it("over mqtts: the certificate the broker presented, for the certificates line", async () => {
    const tlsAccept: Script = (c) => {
      // What Node's TLSSocket gives: the dates as OpenSSL prints them.
      c.stream = Object.assign(c.stream, { getPeerCertificate: () => ({ valid_from: 'Dec  1 00:00:00 2026 GMT', valid_to: 'Dec 11 00:00:00 2026 GMT' }) });
      c.emit('connect', {});
    };
    const line = await mqttPreflight(cfg({ url: 'mqtts://edge:secret@broker.test:8883' }), rig([tlsAccept]).io);
    expect(line?.check.ok).toBe(true);
    expect(line?.presented).toEqual({
      what: "the broker's certificate (mqtts://edge:***@broker.test:8883)",
      validity: { from: new Date('2026-12-01T00:00:00Z'), to: new Date('2026-12-11T00:00:00Z') },
      presented: true,
    });
  });

  it('a proxy variable that cannot be used (wss://): the line fails naming it, nothing is tried, nothing thrown', async () => {
    vi.stubEnv('HTTPS_PROXY', 'socks5://p:1080');
    const r = rig([]);
    const line = await mqttPreflight(cfg({ url: 'wss://broker.test/mqtt' }), r.io);
    expect(line?.check).toEqual({
      name: 'mqtt', ok: false,
      detail: expect.stringContaining('HTTPS_PROXY=socks5://p:1080: the MQTT broker over WebSocket is reached through an http:// or https:// proxy only (HTTP CONNECT); set it to http://HOST:PORT, or unset it'),
    });
  });

  it('a client id at the 128-byte limit stays within it with the mark', () => {
    const id = checkClientId({ site: 's'.repeat(60), node: 'n'.repeat(60) });
    expect(id.endsWith('-check')).toBe(true);
    expect(Buffer.byteLength(id)).toBeLessThanOrEqual(128);
  });
});
