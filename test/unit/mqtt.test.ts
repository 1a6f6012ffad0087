// The MQTT health publisher without a broker: backoff schedule, client options (TLS, ALPN,
// credentials), failure wording, the publishing rule with fake time and a fake client, the
// MQTT 5 -> 3.1.1 fallback against a tiny fake broker, and the health document's JSON Schema.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Ajv } from 'ajv';
import type { IClientOptions, MqttClient } from 'mqtt';
import { HealthPublisher, healthDue, publishPeriodMs, topics } from '../../src/health/mqtt.js';

/** healthDue's memory of a publish at `ms` that carried a change. */
const at = (ms: number) => ({ publishedAt: ms, changeAt: ms });
import { DEFAULT_BACKOFF, backoffDelay } from '../../src/health/mqtt-backoff.js';
import {
  MqttSetupError, buildClientOptions, clientIdFor, connectClient, healthExpiryS, ignoredTlsKeys, loadSecrets, parseBrokerUrl, proxyUsed, wantsAwsAlpn,
  type MqttConfig, type MqttSecrets,
} from '../../src/health/mqtt-options.js';
import { describeMqttFailure, isUnsupportedProtocol } from '../../src/health/mqtt-errors.js';
import { ProxyTunnelError } from '../../src/util/http-proxy.js';
import type { HealthDocument } from '../../src/health/document.js';
import { CaptureLog } from '../support/capture-log.js';
import { ManualClock, drive } from '../support/clock.js';

const SCHEMA = JSON.parse(readFileSync(new URL('../../src/health/health.schema.json', import.meta.url), 'utf8')) as object;

// A throwaway self-signed EC certificate and its key (CN=vxedge-unit-test), for option parsing only.
const CERT = `-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUEPRuGvWNpA4FPHTUyCcgdW9aMbQwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQdnhlZGdlLXVuaXQtdGVzdDAgFw0yNjExMjYwNDAwMjVaGA8y
MTI2MTEwMjA0MDAyNVowGzEZMBcGA1UEAwwQdnhlZGdlLXVuaXQtdGVzdDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABKiANa3an8apZeIl7GBfP9K5IoLzkN192FuD
DnAyHwCwcEjounTK1qHHkH72COg0PWRUHtdPdk/zj0Z58e0sQq6jUzBRMB0GA1Ud
DgQWBBRoewzZLaIkN9VIWl6gmFoTx7qkxDAfBgNVHSMEGDAWgBRoewzZLaIkN9VI
Wl6gmFoTx7qkxDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDO
lWvraa7L7nhHmhhuU1nwlZ2smQJNubpoqVgx8mr/wgIgONy/05+84sP1eifyZEFk
c0SRo+HLUT+hXOFCuHCU/Tg=
-----END CERTIFICATE-----
`;
const KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0KdTFn8MluqtZ1Rt
0AwE7R3YIZN98vu8KJCm55lZETOhRANCAASogDWt2p/GqWXiJexgXz/SuSKC85Dd
fdhbgw5wMh8AsHBI6Lp0ytahx5B+9gjoND1kVB7XT3ZP849GefHtLEKu
-----END PRIVATE KEY-----
`;

function mqttConfig(over: Partial<MqttConfig> = {}): MqttConfig {
  return {
    url: 'mqtt://broker.example:1883', proxy: null, topicPrefix: 'vxedge', interval: 30_000,
    username: null, password: null, passwordFile: null, ca: null, cert: null, key: null, ...over,
  };
}

const NO_SECRETS: MqttSecrets = { password: null, ca: null, cert: null, key: null };

function sampleDoc(over: Partial<HealthDocument> = {}): HealthDocument {
  return {
    site: 'lab', node: 'edge-1', version: '0.1.0', ts: '2026-11-24T12:00:00.000Z', uptimeS: 3600, state: 'degraded',
    tunnel: {
      device: 'flannel.1', mode: 'tun', vni: 1, mtu: 1450, subnet: '10.244.100.0/24', vtepMac: '0e:5c:aa:00:00:01',
      localEndpoint: '192.168.50.10:8472', publicEndpoint: '198.51.100.2:8472',
    },
    peers: [
      { name: 'aws-1', endpoint: '203.0.113.10:8472', subnet: '10.244.1.0/24', state: 'up', rttMs: 1.3, lossPct: 0,
        lastSeen: '2026-11-24T11:59:58.000Z', rxPackets: 10, txPackets: 12, rxBytes: 980, txBytes: 1100, reason: null },
      { name: 'aws-2', endpoint: '203.0.113.20:8472', subnet: '10.244.2.0/24', state: 'down', rttMs: null, lossPct: 100,
        lastSeen: null, rxPackets: 0, txPackets: 40, rxBytes: 0, txBytes: 4000,
        reason: 'no answer to keepalive probes for 90s: check that the AWS security group allows UDP 8472' },
    ],
    checks: [
      { name: 'ip_forward', ok: true, detail: 'net.ipv4.ip_forward=1' },
      { name: 'mtu', ok: true, detail: 'device 1450 + 50 <= underlay eth0 1500' },
      { name: 'device', ok: true, detail: 'flannel.1 tun mtu 1450 up' },
      { name: 'routes', ok: true, detail: '2 routes' },
      { name: 'underlay', ok: true, detail: 'eth0 192.168.50.10:8472' },
      { name: 'public_endpoint', ok: false, detail: 'unknown', fix: 'set underlay.publicIp' },
    ],
    pid: 1234,
    drops: { unknownSource: 3 },
    mqtt: { enabled: true, connected: true, published: 7, lastError: null, queued: 0, reconnects: 1 } as HealthDocument['mqtt'],
    ...over,
  };
}

// ---------------------------------------------------------------------------------------------

describe('backoffDelay', () => {
  const mid = () => 0.5; // no jitter
  it.each([
    [0, 1000], [1, 2000], [2, 4000], [3, 8000], [4, 16_000], [5, 32_000], [6, 60_000], [7, 60_000], [50, 60_000], [5000, 60_000], [-3, 1000],
  ])('attempt %i without jitter: %i ms', (attempt, ms) => {
    expect(backoffDelay(attempt, DEFAULT_BACKOFF, mid)).toBe(ms);
  });

  it.each([
    // attempt, random, expected: nominal × (1 + 0.3 × (2r − 1))
    [0, 0, 700], [0, 0.25, 850], [0, 0.75, 1150], [0, 1, 1300],
    [3, 0, 5600], [3, 1, 10_400],
    [10, 0, 42_000], [10, 1, 78_000],
  ])('attempt %i with random %d: %i ms', (attempt, r, ms) => {
    expect(backoffDelay(attempt, DEFAULT_BACKOFF, () => r)).toBe(ms);
  });

  it('stays within ±30 % of the nominal delay for any random value', () => {
    for (let a = 0; a < 12; a++) {
      const nominal = Math.min(60_000, 1000 * 2 ** a);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(a);
        expect(d).toBeGreaterThanOrEqual(Math.floor(nominal * 0.7));
        expect(d).toBeLessThanOrEqual(Math.ceil(nominal * 1.3));
      }
    }
  });

  it('follows a custom policy', () => {
    const p = { initialMs: 100, maxMs: 500, jitter: 0, stableMs: 1000 };
    expect([0, 1, 2, 3, 4].map((a) => backoffDelay(a, p, Math.random))).toEqual([100, 200, 400, 500, 500]);
  });
});

describe('client options', () => {
  it('parses broker URLs with default ports', () => {
    expect(parseBrokerUrl('mqtt://b.example')).toEqual({ scheme: 'mqtt', host: 'b.example', port: 1883, secure: false });
    expect(parseBrokerUrl('mqtts://b.example')).toEqual({ scheme: 'mqtts', host: 'b.example', port: 8883, secure: true });
    expect(parseBrokerUrl('ws://b.example/mqtt')).toEqual({ scheme: 'ws', host: 'b.example', port: 80, secure: false });
    expect(parseBrokerUrl('wss://u:p@b.example:8443/mqtt')).toEqual({ scheme: 'wss', host: 'b.example', port: 8443, secure: true });
    expect(parseBrokerUrl('mqtt://[2001:db8::1]:1884').host).toBe('2001:db8::1');
  });

  it.each([
    ['mqtts://a1b2c3-ats.iot.eu-west-1.amazonaws.com:443', true],
    ['mqtts://A1B2C3-ATS.IOT.EU-WEST-1.AMAZONAWS.COM.:443', true],
    ['mqtts://a1b2c3-ats.iot.eu-west-1.amazonaws.com', false], // 8883: plain mutual TLS, no ALPN
    ['mqtts://a1b2c3-ats.iot.eu-west-1.amazonaws.com:8883', false],
    ['wss://a1b2c3-ats.iot.eu-west-1.amazonaws.com:443/mqtt', false], // WebSockets use http/1.1
    ['mqtts://broker.example:443', false],
    ['mqtts://notamazonaws.com:443', false],
    ['mqtt://x.amazonaws.com:443', false],
  ])('ALPN x-amzn-mqtt-ca for %s: %s', (url, want) => {
    expect(wantsAwsAlpn(parseBrokerUrl(url))).toBe(want);
    const o = buildClientOptions({ mqtt: mqttConfig({ url }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets: NO_SECRETS });
    expect(o.ALPNProtocols).toEqual(want ? ['x-amzn-mqtt-ca'] : undefined);
  });

  it('mqtt:// and mqtts:// through the SOCKS proxy MQTTJS_SOCKS_PROXY names, within the connect timeout; ws:// and wss:// never (they take the HTTP proxy variables)', () => {
    const build = (url: string) => buildClientOptions({ mqtt: mqttConfig({ url }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets: NO_SECRETS, connectTimeoutMs: 7_000 });
    vi.stubEnv('MQTTJS_SOCKS_PROXY', 'socks5h://proxy.example:1080/');
    try {
      for (const url of ['mqtt://b.example', 'mqtts://b.example:8883']) expect(build(url)).toMatchObject({ socksProxy: 'socks5h://proxy.example:1080', socksTimeout: 7_000 });
      for (const url of ['ws://b.example/mqtt', 'wss://b.example/mqtt']) expect(build(url).socksProxy).toBeUndefined();
      // MQTT.js hands tls.connect the proxy's socket without the broker's host: the certificate
      // is checked against the host in mqtt.url (an address gets no SNI name to stand in).
      const check = (build('mqtts://198.51.100.1:8883') as { checkServerIdentity?: (h: string, c: object) => Error | undefined }).checkServerIdentity!;
      expect(check('localhost', { subject: { CN: '198.51.100.1' }, subjectaltname: 'IP Address:198.51.100.1' })).toBeUndefined();
      expect(check('localhost', { subject: { CN: 'localhost' }, subjectaltname: 'DNS:localhost' })).toBeInstanceOf(Error);
      expect(build('mqtt://b.example')).not.toHaveProperty('checkServerIdentity');
      vi.stubEnv('MQTTJS_SOCKS_PROXY', 'http://proxy.example:3128');
      expect(() => build('mqtt://b.example')).toThrow(MqttSetupError);
      expect(() => build('mqtt://b.example')).toThrow(/^MQTTJS_SOCKS_PROXY=http:\/\/proxy\.example:3128: MQTT\.js goes through a SOCKS proxy only/);
      expect(build('wss://b.example/mqtt').socksProxy).toBeUndefined(); // not its variable: no error either
    } finally {
      vi.unstubAllEnvs();
    }
    expect(build('mqtt://b.example').socksProxy).toBeUndefined();
  });

  it('mqtt.proxy: every scheme through the HTTP proxy it names, winning over the proxy variables; said as the proxy used', () => {
    const build = (url: string, proxy: string | null = 'http://site:pw@proxy.example:3128') =>
      buildClientOptions({ mqtt: mqttConfig({ url, proxy }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets: NO_SECRETS });
    const ours = { kind: 'HTTP', url: 'http://proxy.example:3128', from: 'mqtt.proxy' };
    vi.stubEnv('MQTTJS_SOCKS_PROXY', 'socks5://socks.example:1080');
    vi.stubEnv('HTTPS_PROXY', 'http://other.example:8080');
    try {
      for (const url of ['mqtt://b.example', 'mqtts://b.example:8883', 'ws://b.example/mqtt', 'wss://b.example/mqtt']) {
        const o = build(url);
        expect(proxyUsed(o), url).toEqual(ours);
        expect(o.socksProxy, url).toBeUndefined();
      }
      // Without it, the variables as before, each said with its name.
      expect(proxyUsed(build('mqtts://b.example', null))).toEqual({ kind: 'SOCKS', url: 'socks5://socks.example:1080', from: 'MQTTJS_SOCKS_PROXY' });
      expect(proxyUsed(build('wss://b.example/mqtt', null))).toEqual({ kind: 'HTTP', url: 'http://other.example:8080', from: 'HTTPS_PROXY' });
      vi.stubEnv('NO_PROXY', 'b.example');
      expect(proxyUsed(build('wss://b.example/mqtt', null))).toBeNull();
      expect(proxyUsed(build('wss://b.example/mqtt'))).toEqual(ours); // the key is asked for by name: NO_PROXY does not undo it
      // A SOCKS one in the key: every scheme too, WebSockets over a connection of vxedge's own
      // (MQTT.js's socksProxy, which sends no credentials, stays unset).
      for (const url of ['mqtt://b.example', 'mqtts://b.example:8883', 'ws://b.example/mqtt', 'wss://b.example/mqtt']) {
        const o = build(url, 'socks5h://site:pw@socks.example:1081');
        expect(proxyUsed(o), url).toEqual({ kind: 'SOCKS', url: 'socks5h://socks.example:1081', from: 'mqtt.proxy' });
        expect(o.socksProxy, url).toBeUndefined();
        if (url.startsWith('ws')) expect(typeof (o.wsOptions as { createConnection?: unknown } | undefined)?.createConnection, url).toBe('function');
      }
    } finally {
      vi.unstubAllEnvs();
    }
    expect(proxyUsed(build('mqtt://b.example', null))).toBeNull();
  });

  it("mqtt:// and mqtts:// through mqtt.proxy: connectClient builds the client over a CONNECT tunnel (MQTT.js's own transports have none); the proxy's refusal reaches the client's 'error'", async () => {
    // A broker that records what arrives, and a proxy that tunnels to it, or refuses.
    const got: Buffer[] = [];
    const broker = net.createServer((s) => s.on('data', (d) => got.push(d)));
    const asked: string[] = [];
    let refuse = false;
    const proxy = net.createServer((s) => {
      s.once('data', (d) => {
        asked.push(d.toString('latin1').split('\r\n\r\n')[0]);
        if (refuse) return void s.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        const up = net.connect((broker.address() as net.AddressInfo).port, '127.0.0.1', () => {
          s.write('HTTP/1.1 200 Connection established\r\n\r\n');
          s.pipe(up).pipe(s);
        });
      });
    });
    await Promise.all([broker, proxy].map((srv) => new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))));
    const brokerPort = (broker.address() as net.AddressInfo).port;
    const url = `mqtt://127.0.0.1:${brokerPort}`;
    const opts = buildClientOptions({
      mqtt: mqttConfig({ url, proxy: `http://edge:pw@127.0.0.1:${(proxy.address() as net.AddressInfo).port}` }), clientId: 'vxedge-lab-edge-1', statusTopic: 's', protocolVersion: 5, secrets: NO_SECRETS,
    });
    const mqtt = (await import('mqtt')).default;
    let direct = 0;
    const lib = { MqttClient: mqtt.MqttClient, connect: () => (direct++, null as unknown as MqttClient) };
    const clients: MqttClient[] = [];
    try {
      const c = connectClient(lib, url, opts);
      clients.push(c);
      c.on('error', () => {});
      await vi.waitFor(() => expect(Buffer.concat(got).includes(Buffer.from('vxedge-lab-edge-1'))).toBe(true), { timeout: 5_000 });
      expect(got[0]![0]! >> 4).toBe(1); // an MQTT CONNECT, through the tunnel
      expect(asked[0]).toBe(`CONNECT 127.0.0.1:${brokerPort} HTTP/1.1\r\nHost: 127.0.0.1:${brokerPort}\r\nProxy-Authorization: Basic ${Buffer.from('edge:pw').toString('base64')}`);
      expect(direct).toBe(0);
      refuse = true;
      const refused = connectClient(lib, url, opts);
      clients.push(refused);
      const err = await new Promise<Error>((r) => refused.once('error', r));
      expect(err.message).toBe(`the proxy 127.0.0.1:${(proxy.address() as net.AddressInfo).port} (mqtt.proxy) answered CONNECT 127.0.0.1:${brokerPort} with "HTTP/1.1 403 Forbidden"`);
      // Options without a stream of their own go to MQTT.js's connect.
      connectClient(lib, url, buildClientOptions({ mqtt: mqttConfig({ url }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets: NO_SECRETS }));
      expect(direct).toBe(1);
    } finally {
      for (const c of clients) c.end(true);
      await Promise.all([broker, proxy].map((srv) => new Promise((r) => srv.close(r))));
    }
  });

  it('builds mutual TLS options with SNI for mqtts', () => {
    const secrets = { password: null, ca: Buffer.from('CA'), cert: Buffer.from('CERT'), key: Buffer.from('KEY') };
    const o = buildClientOptions({
      mqtt: mqttConfig({ url: 'mqtts://a1-ats.iot.eu-west-1.amazonaws.com:443', ca: '/ca', cert: '/c', key: '/k' }),
      clientId: 'vxedge-lab-edge-1', statusTopic: 'vxedge/lab/edge-1/status', protocolVersion: 5, secrets,
    });
    expect(o).toMatchObject({
      clientId: 'vxedge-lab-edge-1', protocolVersion: 5, clean: true, reconnectPeriod: 0, queueQoSZero: false,
      rejectUnauthorized: true, ca: secrets.ca, cert: secrets.cert, key: secrets.key,
      servername: 'a1-ats.iot.eu-west-1.amazonaws.com', ALPNProtocols: ['x-amzn-mqtt-ca'],
      will: { topic: 'vxedge/lab/edge-1/status', qos: 1, retain: true },
      properties: { sessionExpiryInterval: 0 },
    });
    expect(String(o.will!.payload)).toBe('offline');
  });

  it('sends no SNI for an IP address, and no TLS options for plain mqtt:// or ws://', () => {
    const secrets = { password: null, ca: Buffer.from('CA'), cert: null, key: null };
    const ip = buildClientOptions({ mqtt: mqttConfig({ url: 'mqtts://198.51.100.1:8883' }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets });
    expect(ip.servername).toBeUndefined();
    expect(ip.ca).toBe(secrets.ca);
    for (const url of ['mqtt://b.example', 'ws://b.example/mqtt']) {
      const o = buildClientOptions({ mqtt: mqttConfig({ url }), clientId: 'c', statusTopic: 's', protocolVersion: 4, secrets });
      expect(o.ca).toBeUndefined();
      expect(o.rejectUnauthorized).toBeUndefined();
      expect(o.properties).toBeUndefined(); // 3.1.1: no MQTT 5 properties
      expect(o.protocolVersion).toBe(4);
    }
    expect(ignoredTlsKeys(mqttConfig({ url: 'mqtt://b.example', ca: '/ca', key: '/k' }))).toEqual(['mqtt.ca', 'mqtt.key']);
    expect(ignoredTlsKeys(mqttConfig({ url: 'wss://b.example', ca: '/ca' }))).toEqual([]);
  });

  it('wss:// opens its TLS connection itself when asked for the socket (the broker\'s certificate), without the URL path, with SNI only for a name', async () => {
    const secrets = { password: null, ca: null, cert: null, key: null };
    const sockets: unknown[] = [];
    const build = (url: string) => buildClientOptions({ mqtt: mqttConfig({ url }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets, onTlsSocket: (s) => sockets.push(s) });
    for (const url of ['mqtts://b.example', 'ws://b.example/mqtt', 'mqtt://b.example']) expect(build(url).wsOptions).toBeUndefined();
    expect(buildClientOptions({ mqtt: mqttConfig({ url: 'wss://b.example/mqtt' }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets }).wsOptions).toBeUndefined();
    const connect = (build('wss://b.example/mqtt').wsOptions as { createConnection: (o: object) => import('node:tls').TLSSocket }).createConnection;
    // A TLS server on loopback that notes the SNI each client sent.
    const tls = await import('node:tls');
    const sni: (string | false)[] = [];
    const server = tls.createServer({ cert: CERT, key: KEY }, (s) => {
      sni.push((s as import('node:tls').TLSSocket & { servername?: string | false }).servername ?? false);
      s.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      for (const [i, host] of ['127.0.0.1', 'localhost'].entries()) {
        // ws hands over its request options: the URL's path among them, which net would take for a Unix socket.
        const s = connect({ host, port, path: '/mqtt', rejectUnauthorized: false });
        s.on('error', () => undefined); // the server's end
        expect(sockets.at(-1)).toBe(s);
        await drive(null, () => sni.length === i + 1, `the handshake from ${host} at the server`);
        s.destroy();
      }
      expect(sni).toEqual([false, 'localhost']);
    } finally {
      server.close();
    }
  });

  it('passes username and password only when set', () => {
    const none = buildClientOptions({ mqtt: mqttConfig(), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets: NO_SECRETS });
    expect('username' in none || 'password' in none).toBe(false);
    const both = buildClientOptions({
      mqtt: mqttConfig({ username: 'edge-1' }), clientId: 'c', statusTopic: 's', protocolVersion: 5, secrets: { ...NO_SECRETS, password: 's3cret' },
    });
    expect(both).toMatchObject({ username: 'edge-1', password: 's3cret' });
  });

  it('reads passwordFile (without its trailing newline) and the TLS files', async () => {
    const files: Record<string, string> = { '/pw': 's3cret\n', '/pw2': 'two\r\n', '/ca': CERT, '/crt': CERT, '/key': KEY };
    const reads: string[] = [];
    const reader = async (p: string) => {
      reads.push(p);
      if (!(p in files)) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${p}'`), { code: 'ENOENT' });
      return Buffer.from(files[p]);
    };
    expect((await loadSecrets(mqttConfig({ passwordFile: '/pw' }), reader)).password).toBe('s3cret');
    expect((await loadSecrets(mqttConfig({ passwordFile: '/pw2' }), reader)).password).toBe('two');
    expect((await loadSecrets(mqttConfig({ password: 'inline' }), reader)).password).toBe('inline');
    const tls = await loadSecrets(mqttConfig({ url: 'mqtts://b.example', ca: '/ca', cert: '/crt', key: '/key' }), reader);
    expect(tls.ca!.toString()).toBe(CERT);
    expect(tls.key!.toString()).toBe(KEY);
    reads.length = 0;
    // Plain mqtt://: the TLS files are not used, so not read either.
    expect(await loadSecrets(mqttConfig({ ca: '/ca', cert: '/crt', key: '/key' }), reader)).toEqual(NO_SECRETS);
    expect(reads).toEqual([]);
  });

  it('names the key and the path of a missing, empty or malformed file', async () => {
    const reader = async (p: string) => {
      if (p === '/empty') return Buffer.from('\n');
      if (p === '/garbage') return Buffer.from('not a pem\n');
      if (p === '/cert') return Buffer.from(CERT);
      if (p === '/etc/vxedge') throw Object.assign(new Error('EISDIR: illegal operation on a directory, read'), { code: 'EISDIR' });
      throw Object.assign(new Error(`EACCES: permission denied, open '${p}'`), { code: p === '/locked' ? 'EACCES' : 'ENOENT' });
    };
    const fail = (m: Partial<MqttConfig>) => loadSecrets(mqttConfig(m), reader);
    await expect(fail({ passwordFile: '/nope' })).rejects.toThrow(new MqttSetupError('cannot read mqtt.passwordFile /nope: no such file'));
    await expect(fail({ passwordFile: '/locked' })).rejects.toThrow('cannot read mqtt.passwordFile /locked: permission denied');
    await expect(fail({ passwordFile: '/empty' })).rejects.toThrow('mqtt.passwordFile /empty is empty');
    await expect(fail({ passwordFile: '/etc/vxedge' })).rejects.toThrow('cannot read mqtt.passwordFile /etc/vxedge: it is a directory');
    await expect(fail({ url: 'mqtts://b.example', ca: '/missing' })).rejects.toThrow('cannot read mqtt.ca /missing: no such file');
    await expect(fail({ url: 'mqtts://b.example', ca: '/garbage' })).rejects.toThrow(/mqtt\.ca \/garbage holds no PEM certificate; check mqtt\.ca\/cert\/key/);
    await expect(fail({ url: 'mqtts://b.example', cert: '/cert', key: '/garbage' })).rejects.toThrow(/invalid TLS material .*check mqtt\.ca\/cert\/key/);
    await expect(fail({ url: 'mqtts://b.example', cert: '/cert', key: '/cert' })).rejects.toBeInstanceOf(MqttSetupError);
  });

  it('keeps client ids within 128 bytes and the expiry at 3 intervals', () => {
    expect(clientIdFor('lab', 'edge-1')).toBe('vxedge-lab-edge-1');
    const long = clientIdFor('s'.repeat(63), 'n'.repeat(63));
    expect(long.length).toBe(128);
    expect(long).not.toBe(clientIdFor('s'.repeat(63), 'n'.repeat(62) + 'x'));
    expect(healthExpiryS(30_000)).toBe(90);
    expect(healthExpiryS(25_500)).toBe(77);
    expect(healthExpiryS(1000)).toBe(10);
  });
});

const OUR_PROXY = { host: '198.51.100.9', port: 3128, from: 'mqtt.proxy' };

describe('failure descriptions', () => {
  const plain = parseBrokerUrl('mqtt://b.example:1883');
  const secure = parseBrokerUrl('mqtts://b.example:8883');
  const err = (message: string, code?: string | number) => Object.assign(new Error(message), code === undefined ? {} : { code });
  it.each([
    [err('connect ECONNREFUSED 1.2.3.4:1883', 'ECONNREFUSED'), plain, 'network', /is the broker up and reachable at b\.example:1883/],
    [err('connack timeout'), plain, 'network', /reachable/],
    [err('getaddrinfo EAI_AGAIN b.example', 'EAI_AGAIN'), plain, 'network',
      /^mqtt connection failed: cannot resolve b\.example: no DNS answer \(no network yet, or the DNS server is unreachable\) \(EAI_AGAIN\); check the host in mqtt\.url and this box's DNS/],
    [err('getaddrinfo ENOTFOUND b.example', 'ENOTFOUND'), plain, 'network', /^mqtt connection failed: cannot resolve b\.example: no such host \(ENOTFOUND\)/],
    [err('Connection refused: Bad username or password', 4), plain, 'auth', /CONNACK 4\).*check mqtt\.username and mqtt\.password\/passwordFile/],
    [err('Connection refused: Not authorized', 135), plain, 'auth', /CONNACK 135/],
    [err('Connection refused: Server unavailable', 3), plain, 'refused', /Server unavailable \(CONNACK 3\)/],
    [err('unable to verify the first certificate', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'), secure, 'tls',
      /^mqtt connection failed: TLS: unable to verify the first certificate \(the broker's certificate is not signed by a CA in mqtt\.ca\); check mqtt\.ca\/cert\/key$/],
    [Object.assign(err('80AC6A85B77F0000:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 48\n', 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA')),
      secure, 'tls', /^mqtt connection failed: TLS: tlsv1 alert unknown ca \(the broker does not trust the client certificate in mqtt\.cert\); check mqtt\.ca\/cert\/key$/],
    // Not the TLS files: the URL's host, the clock.
    [Object.assign(err("Hostname/IP does not match certificate's altnames: Host: b.example. is not in the cert's altnames: DNS:broker.example", 'ERR_TLS_CERT_ALTNAME_INVALID'),
      { reason: "Host: b.example. is not in the cert's altnames: DNS:broker.example" }), secure, 'tls',
      /^mqtt connection failed: TLS: Host: b\.example\. is not in the cert's altnames: DNS:broker\.example \(the broker's certificate does not name the host of mqtt\.url\); put in mqtt\.url a host name \(or address\) that the broker's certificate names$/],
    [err('certificate is not yet valid', 'CERT_NOT_YET_VALID'), secure, 'tls', /\(the broker's certificate is not valid yet, or this machine's clock is wrong\); check this machine's clock \(timedatectl/],
    [err('certificate has expired', 'CERT_HAS_EXPIRED'), secure, 'tls', /; check this machine's clock \(timedatectl\), else the broker's certificate needs renewing$/],
    [err('self-signed certificate in certificate chain', 'SELF_SIGNED_CERT_IN_CHAIN'), secure, 'tls', /check mqtt\.ca\/cert\/key/],
    [err('tlsv13 alert certificate required', 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), secure, 'tls', /check mqtt\.ca\/cert\/key/],
    [err('read ECONNRESET', 'ECONNRESET'), secure, 'tls', /during TLS; check mqtt\.ca\/cert\/key/],
    [null, secure, 'closed', /closed the connection before accepting it; check mqtt\.ca\/cert\/key/],
    [null, plain, 'closed', /closed the connection before accepting it/],
    [new MqttSetupError('cannot read mqtt.passwordFile /x: no such file'), plain, 'setup', /^mqtt setup failed: cannot read mqtt\.passwordFile \/x: no such file; retrying$/],
    // The socks package's SocksClientError (name "Error") carries the proxy in options.proxy.
    [Object.assign(err('connect ECONNREFUSED 198.51.100.9:1080', 'ECONNREFUSED'), { options: { proxy: { host: '198.51.100.9', port: 1080, type: 5 } } }), secure, 'network',
      /^mqtt connection failed: through the SOCKS proxy 198\.51\.100\.9:1080 \(MQTTJS_SOCKS_PROXY\): connect ECONNREFUSED 198\.51\.100\.9:1080; is the proxy up and reachable\? Check MQTTJS_SOCKS_PROXY, or unset it/],
    [Object.assign(err('Socks5 proxy rejected connection - ConnectionRefused'), { options: { proxy: { host: 'p', port: 1080 } } }), plain, 'network',
      /: Socks5 proxy rejected connection - ConnectionRefused; the proxy would not or could not reach the broker at b\.example:1883: check mqtt\.url/],
    [Object.assign(err('Received invalid Socks5 initial handshake (no accepted authentication type)'), { options: { proxy: { host: 'p', port: 1081 } } }), plain, 'network',
      /; the proxy asks for a user name and password, which MQTT\.js does not send: name the proxy in mqtt\.proxy instead \(socks5:\/\/USER:PASSWORD@HOST:PORT\), which sends them, or let it admit this host without them$/],
    // ConnectTunnel's refusals (mqtt.proxy, or a WebSocket's HTTPS_PROXY): what the proxy said, and what to do.
    [new ProxyTunnelError('the proxy 198.51.100.9:3128 (mqtt.proxy) answered CONNECT b.example:8883 with "HTTP/1.1 403 Forbidden"', OUR_PROXY, 'refused', 403), secure, 'network',
      /^mqtt connection failed: the proxy 198\.51\.100\.9:3128 \(mqtt\.proxy\) answered CONNECT b\.example:8883 with "HTTP\/1\.1 403 Forbidden"; it does not let CONNECT through to port 8883 \(many proxies allow 443 only\): have it allowed, or use a port of the broker it allows$/],
    [new ProxyTunnelError('the proxy 198.51.100.9:3128 (mqtt.proxy) answered CONNECT b.example:8883 with "HTTP/1.1 407 Proxy Authentication Required": the proxy wants credentials, http://USER:PASSWORD@HOST:PORT in mqtt.proxy', OUR_PROXY, 'credentials', 407),
      secure, 'network', /^mqtt connection failed: the proxy [^;]*: the proxy wants credentials, http:\/\/USER:PASSWORD@HOST:PORT in mqtt\.proxy$/],
    [new ProxyTunnelError('the proxy 198.51.100.9:3128 (mqtt.proxy) answered CONNECT b.example:1883 with "HTTP/1.1 502 Bad Gateway"', OUR_PROXY, 'refused', 502), plain, 'network',
      /with "HTTP\/1\.1 502 Bad Gateway"; it could not or would not reach the broker at b\.example:1883$/],
    [new ProxyTunnelError('cannot reach the proxy 198.51.100.9:3128 (HTTPS_PROXY=http://198.51.100.9:3128): connect ECONNREFUSED 198.51.100.9:3128', { ...OUR_PROXY, from: 'HTTPS_PROXY=http://198.51.100.9:3128' }, 'unreachable'),
      secure, 'network', /^mqtt connection failed: cannot reach the proxy [^;]*; is the proxy up and reachable\? Check HTTPS_PROXY$/],
  ])('%s', (e, broker, kind, line) => {
    const f = describeMqttFailure(e, broker, false);
    expect(f.kind).toBe(kind);
    expect(f.line).toMatch(line);
  });

  it("with the clock and mqtt.cert's dates: the clock's reading, and a refused certificate's end", () => {
    const nowMs = Date.UTC(2026, 11, 6, 11, 20);
    const ended = { from: new Date('2020-01-01T00:00:00Z'), to: new Date('2020-01-02T00:00:00Z') };
    // mosquitto (OpenSSL) answers an expired client certificate with the certificate_expired alert.
    const alert = err('80AC6A85B77F0000:error:0A000415:SSL routines:ssl3_read_bytes:sslv3 alert certificate expired:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 45\n', 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED');
    expect(describeMqttFailure(alert, secure, false, { tls: { nowMs, clientCert: ended } }).line).toBe(
      'mqtt connection failed: TLS: sslv3 alert certificate expired (the broker refused our client certificate: the one in mqtt.cert expired on 2020-01-02 00:00 UTC, ' +
        "and this machine's clock says 2026-12-06 11:20 UTC); renew mqtt.cert (or, if this machine's clock is what is wrong, set it: timedatectl)",
    );
    // A certificate valid by our clock: the broker's words only.
    const valid = { from: new Date('2026-01-01T00:00:00Z'), to: new Date('2027-01-01T00:00:00Z') };
    expect(describeMqttFailure(alert, secure, false, { tls: { nowMs, clientCert: valid } }).line).toMatch(/\(the broker says the client certificate has expired or was revoked\); check mqtt\.ca\/cert\/key$/);
    expect(describeMqttFailure(err('certificate is not yet valid', 'CERT_NOT_YET_VALID'), secure, false, { tls: { nowMs } }).line).toBe(
      "mqtt connection failed: TLS: certificate is not yet valid (the broker's certificate is not valid yet, or this machine's clock is wrong: it says 2026-12-06 11:20 UTC); " +
        "check this machine's clock (timedatectl; a board without a battery-backed clock needs network time first)",
    );
  });

  it('calls a drop after CONNACK a lost connection', () => {
    expect(describeMqttFailure(null, plain, true)).toEqual({ kind: 'lost', line: 'mqtt connection to b.example:1883 lost; reconnecting' });
  });

  it('recognises "unsupported protocol version" in 3.1.1 and MQTT 5 wording', () => {
    expect(isUnsupportedProtocol(err('Connection refused: Unacceptable protocol version', 1))).toBe(true);
    expect(isUnsupportedProtocol(err('Connection refused: Unsupported Protocol Version', 132))).toBe(true);
    expect(isUnsupportedProtocol(err('Connection refused: Not authorized', 5))).toBe(false);
    expect(isUnsupportedProtocol(null)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// The publisher with a fake MQTT.js client and fake time.

interface Sent { topic: string; payload: string; opts: { qos?: number; retain?: boolean; properties?: Record<string, unknown> } }

class FakeClient extends EventEmitter {
  connected = false;
  sent: Sent[] = [];
  pendingAcks: ((err?: Error) => void)[] = [];
  autoAck = true;
  ended: { force: boolean; opts: unknown }[] = [];
  stream = { destroy: () => {} };
  constructor(readonly url: string, readonly opts: IClientOptions) {
    super();
  }
  publish(topic: string, payload: string, opts: Sent['opts'], cb?: (err?: Error) => void): this {
    this.sent.push({ topic, payload: String(payload), opts });
    if (cb) {
      if (this.autoAck) queueMicrotask(() => cb());
      else this.pendingAcks.push(cb);
    }
    return this;
  }
  end(force?: boolean, opts?: unknown, cb?: () => void): this {
    this.ended.push({ force: !!force, opts });
    this.connected = false;
    if (cb) queueMicrotask(cb);
    return this;
  }
  endAsync(force?: boolean): Promise<void> {
    this.end(force);
    return Promise.resolve();
  }
  // Test helpers: what the broker does.
  accept(properties?: Record<string, unknown>): void {
    this.connected = true;
    this.emit('connect', { cmd: 'connack', returnCode: 0, ...(properties ? { properties } : {}) });
  }
  fail(err: Error & { code?: string | number }): void {
    this.emit('error', err);
    this.connected = false;
    this.emit('close');
  }
  drop(): void {
    this.connected = false;
    this.emit('close');
  }
}

function harness(mqttOver: Partial<MqttConfig> = {}, random = () => 0.5) {
  const clients: FakeClient[] = [];
  const log = new CaptureLog();
  const lines = log.lines;
  clock = new ManualClock();
  const p = new HealthPublisher({
    mqtt: mqttConfig({ interval: 30_000, ...mqttOver }),
    site: 'lab',
    node: 'edge-1',
    log,
    deps: {
      connect: (url, opts) => {
        const c = new FakeClient(url, opts);
        clients.push(c);
        return c as unknown as MqttClient;
      },
      random,
      clock,
      readFile: async (path) => {
        if (path === '/run/secrets/mqtt') return Buffer.from('s3cret\n');
        throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
      },
    },
  });
  const last = () => clients[clients.length - 1];
  const health = (c: FakeClient) => c.sent.filter((s) => s.topic === 'vxedge/lab/edge-1/health');
  return { p, clients, last, lines, health, warns: () => lines.filter((l) => l.level === 'warn').map((l) => l.msg) };
}

/** The current harness's clock: time moves only when a test says so. */
let clock = new ManualClock();

/** Lets the publisher's async attempt (file reads) run. */
async function settle(): Promise<void> {
  await clock.advanceAsync(0);
}

/** A harness whose publisher is connected (the broker accepted), with that client. */
async function connected(mqttOver: Partial<MqttConfig> = {}) {
  const h = harness(mqttOver);
  h.p.start();
  await settle();
  h.last().accept();
  await settle();
  return { h, c: h.last() };
}

describe('HealthPublisher', () => {

  it('is disabled without a URL and never connects', () => {
    const h = harness({ url: null });
    h.p.start();
    h.p.update(sampleDoc(), true);
    expect(h.clients).toHaveLength(0);
    expect(h.p.status()).toEqual({ enabled: false, connected: false, published: 0, lastError: null, queued: 0, reconnects: 0 });
  });

  it('publishes retained online, then the latest health, on connect (MQTT 5 with message expiry)', async () => {
    const h = harness();
    h.p.start();
    await settle();
    expect(h.clients).toHaveLength(1);
    expect(h.last().opts).toMatchObject({ protocolVersion: 5, clientId: 'vxedge-lab-edge-1', reconnectPeriod: 0, queueQoSZero: false });
    // Documents while connecting: nothing is sent, only the latest is kept.
    h.p.update(sampleDoc({ uptimeS: 1 }), true);
    h.p.update(sampleDoc({ uptimeS: 2 }), true);
    expect(h.p.status()).toMatchObject({ connected: false, queued: 1 });
    h.last().accept();
    await settle();
    const c = h.last();
    expect(c.sent.map((s) => [s.topic, s.opts.retain, s.opts.qos])).toEqual([
      ['vxedge/lab/edge-1/status', true, 1],
      ['vxedge/lab/edge-1/health', true, 1],
    ]);
    expect(c.sent[0].payload).toBe('online');
    expect(JSON.parse(c.sent[1].payload).uptimeS).toBe(2);
    // The document was made while disconnected; its mqtt field is refreshed when it is published.
    expect(JSON.parse(c.sent[1].payload).mqtt).toEqual({ enabled: true, connected: true, published: 0, lastError: null, queued: 0, reconnects: 0 });
    expect(c.sent[1].opts.properties).toMatchObject({ messageExpiryInterval: 90, contentType: 'application/json' });
    expect(h.p.status()).toEqual({ enabled: true, connected: true, published: 1, lastError: null, queued: 0, reconnects: 0 });
  });

  /** A connected publisher fed by the gateway's 2 s status tick for `untilMs`, `changedAt` a
   *  state change: when (ms from the first tick) a health document was published. */
  async function publishTimes(interval: number, untilMs: number, changedAt = -1): Promise<number[]> {
    const { h, c } = await connected({ interval });
    const publishedAt: number[] = [];
    const t0 = clock.monotonic();
    for (let t = 0; t <= untilMs; t += 2000) {
      const before = h.health(c).length;
      h.p.update(sampleDoc({ uptimeS: t / 1000 }), t === changedAt);
      await settle();
      if (h.health(c).length > before) publishedAt.push(clock.monotonic() - t0);
      await clock.advanceAsync(2000);
    }
    return publishedAt;
  }

  it('publishes at once on a change, otherwise every interval', async () => {
    // The gateway calls update every 2 s; a state change at 12 s.
    const publishedAt = await publishTimes(30_000, 70_000, 12_000);
    // first document at once (nothing published yet), the change at 12 s, then every 30 s from there.
    expect(publishedAt).toEqual([0, 12_000, 42_000]);
    expect(healthDue(1000, at(0), 30_000, false)).toBe(false);
    expect(healthDue(29_800, at(0), 30_000, false)).toBe(true); // timer jitter slack
    expect(healthDue(5000, at(0), 30_000, true)).toBe(true);
    expect(healthDue(1, { publishedAt: 0, changeAt: -Infinity }, 30_000, true)).toBe(true); // a change just after a periodic publish
  });

  it('a reload of mqtt.interval alone takes the new period and expiry on the same connection', async () => {
    const { h, c } = await connected({ interval: 30_000 });
    const publishedAt: number[] = [];
    const t0 = clock.monotonic();
    for (let t = 0; t <= 40_000; t += 2000) {
      if (t === 10_000) h.p.setInterval(6_000);
      const before = h.health(c).length;
      h.p.update(sampleDoc({ uptimeS: t / 1000 }), false);
      await settle();
      if (h.health(c).length > before) publishedAt.push(clock.monotonic() - t0);
      await clock.advanceAsync(2000);
    }
    // 30 s before the reload (nothing due until 30 s), 6 s after it: the first document
    // published at 0 is 10 s old at the reload, so due at once.
    expect(publishedAt).toEqual([0, 10_000, 16_000, 22_000, 28_000, 34_000, 40_000]);
    expect(h.clients).toHaveLength(1);
    const expiries = h.health(c).map((s) => (s.opts.properties as { messageExpiryInterval: number }).messageExpiryInterval);
    expect(expiries).toEqual([90, 18, 18, 18, 18, 18, 18]);
  });

  it('changes that keep coming (500 peers coming back one by one) are published at most once per 5 s, the last one included', async () => {
    const { h, c } = await connected({ interval: 30_000 });
    const publishedAt: number[] = [];
    const t0 = clock.monotonic();
    // The gateway coalesces transitions into a document every 250 ms at most: a peer changes in
    // every window for 30 s (an uplink back, each peer's next probe answered on its own schedule).
    for (let t = 0; t < 30_000; t += 250) {
      const before = h.health(c).length;
      h.p.update(sampleDoc({ uptimeS: t }), true);
      await settle();
      if (h.health(c).length > before) publishedAt.push(clock.monotonic() - t0);
      await clock.advanceAsync(250);
    }
    // Then only the 2 s status tick, unchanged documents: the last change still goes out.
    for (let t = 30_000; t <= 40_000; t += 2000) {
      const before = h.health(c).length;
      h.p.update(sampleDoc({ uptimeS: t }), false);
      await settle();
      if (h.health(c).length > before) publishedAt.push(clock.monotonic() - t0);
      await clock.advanceAsync(2000);
    }
    // Every 5 s less the 250 ms timer slack; the change at 29.75 s waits for the tick at 34 s.
    expect(publishedAt).toEqual([0, 4750, 9500, 14_250, 19_000, 23_750, 28_500, 34_000]);
    // The first change after a quiet spell is still published at once.
    await clock.advanceAsync(6000);
    const before = h.health(c).length;
    h.p.update(sampleDoc({ uptimeS: 99 }), true);
    await settle();
    expect(h.health(c).length).toBe(before + 1);
    expect(healthDue(4000, at(0), 30_000, true)).toBe(false);
    expect(healthDue(4800, at(0), 30_000, true)).toBe(true); // the same timer slack
    expect(healthDue(1000, at(0), 1000, true)).toBe(true); // an interval under 5 s is the bound
  });

  it('a change just after a periodic publish still goes out at once (the gap counts from the last change)', async () => {
    const { h, c } = await connected({ interval: 10_000 });
    h.p.update(sampleDoc({ uptimeS: 0 }), true);
    await settle();
    const publishes: number[] = [];
    const t0 = clock.monotonic();
    for (let t = 0; t <= 12_000; t += 2000) {
      const before = h.health(c).length;
      // The 2 s status tick; at 11 s a peer goes down, 1 s after the periodic publish at 10 s.
      h.p.update(sampleDoc({ uptimeS: t }), false);
      await settle();
      if (h.health(c).length > before) publishes.push(clock.monotonic() - t0);
      if (t === 10_000) {
        await clock.advanceAsync(1000);
        const n = h.health(c).length;
        h.p.update(sampleDoc({ uptimeS: 11 }), true);
        await settle();
        expect(h.health(c).length).toBe(n + 1);
        await clock.advanceAsync(1000);
      } else {
        await clock.advanceAsync(2000);
      }
    }
    expect(publishes).toEqual([10_000]);
  });

  it.each([0, 1000])('mqtt.interval %i ms: published every 2 s status tick, the period the document states (publishPeriodMs)', async (interval) => {
    expect(await publishTimes(interval, 10_000)).toEqual([0, 2000, 4000, 6000, 8000, 10_000]);
    expect(publishPeriodMs(interval, 2000)).toBe(2000);
    expect(publishPeriodMs(30_000, 2000)).toBe(30_000);
  });

  it('a publish the broker refuses (MQTT 5 PUBACK 0x87, its ACL) is logged with the topic, once, and retried only when due', async () => {
    const h = harness({ interval: 30_000 });
    h.p.start();
    await settle();
    const c = h.last();
    c.autoAck = false;
    c.accept();
    const notAuthorized = () => Object.assign(new Error('Publish error: Not authorized'), { code: 135 });
    const healthAcks = () => c.pendingAcks.splice(0);
    c.pendingAcks.splice(0)[0](notAuthorized()); // "online" refused too
    await settle();
    const t0 = clock.monotonic();
    const publishedAt: number[] = [];
    for (let t = 0; t <= 62_000; t += 2000) {
      const before = h.health(c).length;
      h.p.update(sampleDoc({ uptimeS: t / 1000 }), false);
      await settle();
      if (h.health(c).length > before) publishedAt.push(clock.monotonic() - t0);
      for (const ack of healthAcks()) ack(notAuthorized());
      await settle();
      await clock.advanceAsync(2000);
    }
    // Not every 2 s: a refusal is not a lost connection; the next try is the next due one.
    expect(publishedAt).toEqual([0, 30_000, 60_000]);
    const warns = h.warns();
    expect(warns).toEqual([
      expect.stringMatching(/broker refused the publish to vxedge\/lab\/edge-1\/status: Publish error: Not authorized \(135\).*ACL/),
      expect.stringMatching(/broker refused the publish to vxedge\/lab\/edge-1\/health: Publish error: Not authorized \(135\).*ACL/),
    ]);
    expect(h.p.status()).toMatchObject({ connected: true, published: 0, lastError: expect.stringMatching(/refused.*health/) });
  });

  it('an error after CONNACK ends the connection at once, said with its cause: the PUBACK 0x95 MQTT.js cannot read (mosquitto\'s message_size_limit) names the size', async () => {
    const h = harness({ interval: 30_000 }, () => 0.5);
    h.p.start();
    await settle();
    const c = h.last();
    c.autoAck = false;
    c.accept();
    h.p.update(sampleDoc(), true);
    await settle();
    const bytes = Buffer.byteLength(h.health(c)[0].payload);
    // MQTT.js's parser stops at a PUBACK with a reason code MQTT 5 does not allow there, emits
    // this, and reads nothing more from that connection: no close comes, no acknowledgement,
    // and the publisher would wait with its health in flight until the keepalive gave up.
    c.emit('error', new Error('Invalid puback reason code'));
    await settle();
    expect(c.ended.some((e) => e.force)).toBe(true);
    expect(h.warns()).toEqual([
      `mqtt connection to broker.example:1883 lost: the broker answered the health publish (${bytes} bytes) with a reason code MQTT.js cannot read (Invalid puback reason code): ` +
        'mosquitto does so for a message over its message_size_limit, which the document (it grows with the peers) must fit in; reconnecting',
    ]);
    expect(h.p.status()).toMatchObject({ connected: false, lastError: expect.stringMatching(/message_size_limit/) });
    await clock.advanceAsync(1000);
    await settle();
    expect(h.clients).toHaveLength(2);
    // Any other error after CONNACK: the same, without that hint.
    h.last().accept();
    await settle();
    h.last().emit('error', new Error('Keepalive timeout'));
    await settle();
    expect(h.warns()[1]).toBe('mqtt connection to broker.example:1883 lost: Keepalive timeout; reconnecting');
  });

  it('a health document over the Maximum Packet Size of the CONNACK is not sent (the broker would end the connection): said once with both sizes, tried again when due', async () => {
    const h = harness({ interval: 30_000 });
    h.p.start();
    await settle();
    const c = h.last();
    c.accept({ maximumPacketSize: 1000 });
    await settle();
    const big = sampleDoc({ peers: [...sampleDoc().peers, ...sampleDoc().peers, ...sampleDoc().peers] });
    const bytes = Buffer.byteLength(JSON.stringify({ ...big, mqtt: h.p.status() }));
    expect(bytes).toBeGreaterThan(1000);
    h.p.update(big, true);
    await settle();
    expect(h.health(c)).toHaveLength(0);
    expect(c.sent.map((x) => x.payload)).toEqual(['online']);
    expect(c.ended).toEqual([]); // the connection (and the retained "online") stays
    expect(h.warns()).toEqual([
      `mqtt: the health document (${bytes} bytes) is over the broker's maximum packet size (1000 bytes, from its CONNACK); ` +
        "not published: raise the broker's limit (mosquitto: max_packet_size); the document grows with the peers",
    ]);
    expect(h.p.status()).toMatchObject({ connected: true, lastError: `health document not published: ${bytes} bytes, over the broker's maximum packet size of 1000 bytes` });
    // Not tried with every document: when the next is due, and said once.
    for (let t = 2000; t <= 30_000; t += 2000) {
      await clock.advanceAsync(2000);
      h.p.update(big, false);
      await settle();
    }
    expect(h.warns()).toHaveLength(1);
    // A document that fits is published.
    await clock.advanceAsync(30_000);
    h.p.update(sampleDoc({ peers: [], checks: [] }), false);
    await settle();
    expect(h.health(c)).toHaveLength(1);
  });

  it('keeps at most one health publish in flight and sends the newest when it is acknowledged', async () => {
    const h = harness();
    h.p.start();
    await settle();
    const c = h.last();
    c.autoAck = false;
    c.accept();
    h.p.update(sampleDoc({ uptimeS: 1 }), true);
    // Still unacknowledged when the next documents are due (changes, 5 s later).
    await clock.advanceAsync(5000);
    h.p.update(sampleDoc({ uptimeS: 2 }), true);
    h.p.update(sampleDoc({ uptimeS: 3 }), true);
    expect(h.health(c)).toHaveLength(1);
    expect(h.p.status().queued).toBe(1);
    // Ack online, then the first health.
    for (const ack of c.pendingAcks.splice(0)) ack();
    await settle();
    expect(h.health(c).map((s) => JSON.parse(s.payload).uptimeS)).toEqual([1, 3]);
    expect(h.p.status()).toMatchObject({ published: 1, queued: 0 });
  });

  it('reconnects with exponential backoff and jitter, logging a repeated failure once', async () => {
    const h = harness({}, () => 0.5);
    h.p.start();
    await settle();
    const attemptsAt: number[] = [clock.monotonic()];
    const refused = () => Object.assign(new Error('connect ECONNREFUSED 198.51.100.1:1883'), { code: 'ECONNREFUSED' });
    for (let i = 0; i < 7; i++) {
      const n = h.clients.length;
      h.last().fail(refused());
      // Wait for the next attempt.
      for (let waited = 0; h.clients.length === n && waited < 120_000; waited += 100) await clock.advanceAsync(100);
      attemptsAt.push(clock.monotonic());
    }
    const gaps = attemptsAt.slice(1).map((t, i) => t - attemptsAt[i]);
    expect(gaps).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000]);
    expect(h.warns()).toEqual(['mqtt connection failed: connect ECONNREFUSED 198.51.100.1:1883; is the broker up and reachable at broker.example:1883?']);
    expect(h.p.status()).toMatchObject({
      connected: false, lastError: 'connect ECONNREFUSED 198.51.100.1:1883; is the broker up and reachable at broker.example:1883?',
    });
    // A different error gets its own line.
    h.last().fail(Object.assign(new Error('Connection refused: Not authorized'), { code: 5 }));
    await settle();
    expect(h.warns()).toHaveLength(2);
    expect(h.warns()[1]).toMatch(/Not authorized \(CONNACK 5\); check mqtt\.username/);
  });

  it('the clock set while a failed connection waits out its backoff: tried again at once, the backoff started afresh', async () => {
    const h = harness({ url: 'mqtts://broker.example:8883' }, () => 0.5);
    clock.setWall(Date.UTC(2026, 0, 1)); // booted in the past
    h.p.start();
    await settle();
    const notYetValid = () => Object.assign(new Error('certificate is not yet valid'), { code: 'CERT_NOT_YET_VALID' });
    for (let i = 0; i < 5; i++) {
      const n = h.clients.length;
      h.last().fail(notYetValid());
      for (let waited = 0; h.clients.length === n && waited < 120_000; waited += 100) await clock.advanceAsync(100);
    }
    h.last().fail(notYetValid()); // the sixth attempt fails: the next is 32 s away
    await settle();
    const n = h.clients.length;
    expect(h.p.status().lastError).toMatch(/it says 2026-01-01/);
    await clock.advanceAsync(10_000);
    expect(h.clients).toHaveLength(n);
    clock.setWall(Date.UTC(2026, 10, 24, 12, 0, 0)); // network time
    expect(h.p.clockStepped()).toBe(true);
    await settle();
    expect(h.clients).toHaveLength(n + 1);
    expect(h.lines.map((l) => l.msg)).toContain('mqtt: connecting again now: the clock was set');
    // Failing again, it waits the first step of the backoff, not the 60 s that came next.
    h.last().fail(notYetValid());
    await clock.advanceAsync(1000);
    expect(h.clients).toHaveLength(n + 2);
    // Connected, or waiting for nothing: a step changes nothing.
    h.last().accept();
    await settle();
    expect(h.p.clockStepped()).toBe(false);
    expect(h.clients).toHaveLength(n + 2);
    await h.p.stop();
    expect(h.p.clockStepped()).toBe(false);
  });

  it('lets a published document go: after a reconnect the next document is published, retained, at once', async () => {
    const h = harness({ interval: 30_000 }, () => 0);
    h.p.start();
    await settle();
    h.last().accept();
    await settle();
    h.p.update(sampleDoc({ uptimeS: 1 }), true);
    await settle();
    expect(h.last().sent.map((s) => s.topic)).toEqual(['vxedge/lab/edge-1/status', 'vxedge/lab/edge-1/health']);
    h.last().drop();
    await clock.advanceAsync(700);
    await settle();
    h.last().accept();
    await settle();
    // Nothing held the old document (500 peers' rows, every 2 s): only "online" so far ...
    expect(h.last().sent.map((s) => s.topic)).toEqual(['vxedge/lab/edge-1/status']);
    // ... and the next document goes out although it is unchanged and within the interval.
    h.p.update(sampleDoc({ uptimeS: 3 }), false);
    await settle();
    expect(h.last().sent.map((s) => s.topic)).toEqual(['vxedge/lab/edge-1/status', 'vxedge/lab/edge-1/health']);
    expect(JSON.parse(h.last().sent[1].payload).uptimeS).toBe(3);
    expect(h.last().sent[1].opts.retain).toBe(true);
  });

  it('retries after a CONNACK error and republishes online + health on the new connection', async () => {
    const h = harness({}, () => 0);
    h.p.start();
    await settle();
    h.p.update(sampleDoc(), false);
    h.last().fail(Object.assign(new Error('Connection refused: Bad User Name or Password'), { code: 134 }));
    await clock.advanceAsync(700); // 1 s − 30 %
    await settle();
    expect(h.clients).toHaveLength(2);
    h.last().accept();
    await settle();
    expect(h.last().sent.map((s) => s.topic)).toEqual(['vxedge/lab/edge-1/status', 'vxedge/lab/edge-1/health']);
    // Lost after a stable connection: the schedule starts again at 1 s; lost again at once: it grows.
    await clock.advanceAsync(DEFAULT_BACKOFF.stableMs);
    h.last().drop();
    await clock.advanceAsync(700);
    await settle();
    expect(h.clients).toHaveLength(3);
    h.last().accept();
    await settle();
    h.last().drop();
    await clock.advanceAsync(700);
    await settle();
    expect(h.clients).toHaveLength(3);
    await clock.advanceAsync(700); // 2 s − 30 % in all
    await settle();
    expect(h.clients).toHaveLength(4);
    h.last().accept();
    await settle();
    expect(h.p.status()).toMatchObject({ connected: true, reconnects: 2 });
    expect(h.warns().some((w) => w.includes('lost; reconnecting'))).toBe(true);
  });

  it('a session taken over by another client with our id (a second gateway with the same site/node) is said plainly and backs off', async () => {
    const h = harness({}, () => 0.5);
    h.p.start();
    await settle();
    const takenOver = (c: FakeClient) => {
      c.emit('disconnect', { cmd: 'disconnect', reasonCode: 142 });
      c.drop();
    };
    const nextAttemptAfter = async (): Promise<number> => {
      const n = h.clients.length;
      const from = clock.monotonic();
      for (let waited = 0; h.clients.length === n && waited < 120_000; waited += 100) await clock.advanceAsync(100);
      return clock.monotonic() - from;
    };
    const gaps: number[] = [];
    for (let i = 0; i < 3; i++) {
      h.last().accept();
      await settle();
      await clock.advanceAsync(DEFAULT_BACKOFF.stableMs * 2); // connected long enough to count as stable
      takenOver(h.last());
      gaps.push(await nextAttemptAfter());
    }
    // Two gateways kicking each other out must not do so every second: the schedule grows.
    expect(gaps).toEqual([1000, 2000, 4000]);
    const warns = h.warns();
    expect(warns).toHaveLength(3); // one per takeover: each is a lost connection
    expect(new Set(warns).size).toBe(1);
    expect(warns[0]).toMatch(/taken over by another client with the same client id/);
    expect(warns[0]).toMatch(/vxedge-lab-edge-1/);
    expect(warns[0]).toMatch(/same site and node/);
    expect(warns[0]).toMatch(/\bnode\b.*host name/);
    expect(h.p.status().lastError).toMatch(/taken over/);
    // An ordinary loss after a stable connection still starts the schedule again at 1 s.
    h.last().accept();
    await settle();
    await clock.advanceAsync(DEFAULT_BACKOFF.stableMs * 2);
    h.last().drop();
    expect(await nextAttemptAfter()).toBe(1000);
  });

  it('reads passwordFile at each attempt; a missing file is logged once and retried, never thrown', async () => {
    const h = harness({ username: 'edge-1', passwordFile: '/missing' });
    expect(() => h.p.start()).not.toThrow();
    await settle();
    await clock.advanceAsync(10_000);
    expect(h.clients).toHaveLength(0);
    expect(h.warns()).toEqual(['mqtt setup failed: cannot read mqtt.passwordFile /missing: no such file; retrying']);
    expect(h.p.status().lastError).toBe('cannot read mqtt.passwordFile /missing: no such file');

    const ok = harness({ username: 'edge-1', passwordFile: '/run/secrets/mqtt' });
    ok.p.start();
    await settle();
    expect(ok.last().opts).toMatchObject({ username: 'edge-1', password: 's3cret' });
  });

  it('stop() publishes a retained offline and disconnects cleanly', async () => {
    const h = harness();
    h.p.start();
    await settle();
    h.last().accept();
    await settle();
    const c = h.last();
    const done = h.p.stop();
    await settle();
    await done;
    expect(c.sent.at(-1)).toMatchObject({ topic: 'vxedge/lab/edge-1/status', payload: 'offline', opts: { qos: 1, retain: true } });
    expect(c.ended[0]).toEqual({ force: false, opts: undefined }); // DISCONNECT: the broker drops the will
    expect(h.p.status().connected).toBe(false);
    // Nothing happens after stop.
    h.p.update(sampleDoc(), true);
    await clock.advanceAsync(120_000);
    expect(h.clients).toHaveLength(1);
  });

  it('stop() is bounded when the broker does not acknowledge, and asks for the will (MQTT 5)', async () => {
    const h = harness();
    h.p.start();
    await settle();
    const c = h.last();
    c.autoAck = false;
    c.accept();
    const t0 = clock.monotonic();
    let finishedAt: number | null = null;
    void h.p.stop().then(() => (finishedAt = clock.monotonic() - t0));
    // The clock moves on in 10 ms steps: stop() waits for the offline's acknowledgement
    // (1 s) and then for the DISCONNECT to go out, never as long as 2 s.
    for (let waited = 0; finishedAt === null && waited < 2000; waited += 10) await clock.advanceAsync(10);
    expect(finishedAt).not.toBeNull();
    expect(finishedAt).toBeGreaterThanOrEqual(1000); // it did wait for the acknowledgement
    expect(finishedAt).toBeLessThan(2000);
    expect(c.ended[0]).toMatchObject({ force: false, opts: { reasonCode: 4 } });
    expect(h.warns()).toContain('mqtt offline not acknowledged in time; asked the broker for the last will');
  });

  it('stop() while disconnected returns at once and cancels the retry', async () => {
    const h = harness();
    h.p.start();
    await settle();
    h.last().fail(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    await h.p.stop();
    await clock.advanceAsync(120_000);
    expect(h.clients).toHaveLength(1);
  });

  it('never throws into the gateway, whatever the client does', async () => {
    const h = harness();
    h.p.start();
    await settle();
    const c = h.last();
    c.accept();
    c.publish = () => {
      throw new Error('boom');
    };
    expect(() => h.p.update(sampleDoc(), true)).not.toThrow();
    expect(h.p.status()).toMatchObject({ lastError: 'publish health: boom', queued: 1 });
    // An error event after the client was abandoned has a listener.
    c.drop();
    expect(() => c.emit('error', new Error('late'))).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------

describe('MQTT 5 -> 3.1.1 fallback (real MQTT.js, fake broker)', () => {
  it('reconnects at once with 3.1.1 when the broker refuses protocol level 5', async () => {
    const levels: number[] = [];
    const packets: number[] = [];
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.once('data', (b) => {
        // CONNECT: type, 1-byte remaining length, "\0\4MQTT", protocol level.
        const level = b[8];
        levels.push(level);
        if (level === 5) s.end(Buffer.from([0x20, 0x02, 0x00, 0x01])); // 3.1.1 CONNACK "unacceptable protocol version"
        else {
          s.write(Buffer.from([0x20, 0x02, 0x00, 0x00]));
          s.on('data', (d) => packets.push(d[0])); // never acknowledges: stop() must still be bounded
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const log = new CaptureLog();
    const { lines } = log;
    // Real sockets, but the publisher's own timers (the retry, stop()'s bounds) on a ManualClock
    // that `drive` moves on in 10 ms steps while real I/O runs, every wait bounded in real time.
    const pclock = new ManualClock();
    const p = new HealthPublisher({ mqtt: mqttConfig({ url: `mqtt://127.0.0.1:${port}` }), site: 'lab', node: 'edge-1', log, deps: { clock: pclock } });
    let stoppedAfter: number | null = null;
    try {
      p.start();
      await drive(pclock, () => p.status().connected, 'connected with MQTT 3.1.1', { timeoutMs: 5_000 });
      expect(levels).toEqual([5, 4]);
      expect(lines.some((l) => l.msg === 'mqtt broker does not support MQTT 5; using 3.1.1')).toBe(true);
      expect(lines.filter((l) => l.level === 'warn')).toEqual([]);
      await drive(null, () => packets.length > 0, 'a packet after CONNACK', { timeoutMs: 5_000 });
      expect(packets[0]).toBe(0x33); // PUBLISH QoS 1 retained: "online"
    } finally {
      // The broker never acknowledges the "offline": stop() gives up after its 1 s bound (on
      // the publisher's clock) and closes without DISCONNECT (3.1.1 has no "send the will").
      const t0 = pclock.monotonic();
      void p.stop().then(() => (stoppedAfter = pclock.monotonic() - t0));
      await drive(pclock, () => stoppedAfter !== null, 'stop() to return', { timeoutMs: 5_000 });
      server.close();
    }
    expect(stoppedAfter).toBeGreaterThanOrEqual(1000);
    expect(stoppedAfter).toBeLessThan(2000);
    expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([
      'mqtt offline not acknowledged in time; closing without DISCONNECT so the broker sends the last will',
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('health document schema', () => {
  const ajv = new Ajv({ allErrors: true, strict: true, validateFormats: false });
  const validate = ajv.compile(SCHEMA);

  it('accepts the documented document, with and without the mqtt field', () => {
    expect(validate(sampleDoc()), JSON.stringify(validate.errors)).toBe(true);
    const { mqtt: _mqtt, ...noMqtt } = sampleDoc();
    expect(validate(noMqtt), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ ...sampleDoc(), state: 'ok', peers: [], drops: {} }), JSON.stringify(validate.errors)).toBe(true);
    const tunnel = { ...sampleDoc().tunnel, publicEndpoint: null };
    expect(validate({ ...sampleDoc(), tunnel }), JSON.stringify(validate.errors)).toBe(true);
  });

  it('matches the topics of the contract', () => {
    expect(topics('vxedge', 'lab', 'edge-1')).toEqual({ status: 'vxedge/lab/edge-1/status', health: 'vxedge/lab/edge-1/health' });
  });

  const broken: [string, (d: Record<string, any>) => void][] = [
    ['a missing field', (d) => delete d.uptimeS],
    ['an unknown state', (d) => (d.state = 'fine')],
    ['an unknown field', (d) => (d.extra = 1)],
    ['a peer state outside up/down/unknown', (d) => (d.peers[0].state = 'UP')],
    ['a down peer without a reason', (d) => (d.peers[1].reason = null)],
    ['an up peer with a reason', (d) => (d.peers[0].reason = 'why')],
    ['a bad endpoint', (d) => (d.tunnel.localEndpoint = '192.168.50.10')],
    ['a bad MAC', (d) => (d.tunnel.vtepMac = '0E-5C-AA-00-00-01')],
    ['a local timestamp', (d) => (d.ts = '2026-11-24 12:00:00')],
    ['a string counter', (d) => (d.peers[0].rxPackets = '10')],
    ['a missing required check', (d) => (d.checks = d.checks.filter((c: { name: string }) => c.name !== 'routes'))],
    ['an mqtt field without lastError', (d) => delete d.mqtt.lastError],
    ['a negative drop counter', (d) => (d.drops.wrongVni = -1)],
  ];
  it.each(broken)('rejects a document with %s', (_what, breakIt) => {
    const d = structuredClone(sampleDoc()) as Record<string, any>;
    breakIt(d);
    expect(validate(d)).toBe(false);
  });
});
