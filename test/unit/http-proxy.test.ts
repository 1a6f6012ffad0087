// The HTTP proxy the environment names for the cluster (src/util/http-proxy.ts): which one, for
// etcd by gRPC's rules and for the Kubernetes API by client-go's; the etcd adapter's gRPC
// channel (cluster/grpc-h2.ts) and the Kubernetes client (cluster/kube-client.ts) through a
// CONNECT proxy made here with Node's http server beside servers on 127.0.0.1. The endpoint is
// a name the proxy alone resolves (etcd.example, api.example), so a call that answers went
// through it. A real proxy (tinyproxy) before a real etcd with TLS: test/lab/etcd.test.ts.
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GrpcChannel, GrpcConnectError } from '../../src/cluster/grpc-h2.js';
import { connectNodeApi } from '../../src/cluster/kube-client.js';
import { ConnectTunnel, ProxyConfigError, ProxyTunnelError, connectTarget, kubeProxyUrl, mqttProxy, mqttSocksProxy, proxyFor, proxyUrl, webSocketProxyFor } from '../../src/util/http-proxy.js';
import { probePeerCertificate } from '../../src/util/tls-probe.js';
import { ManualClock } from '../support/clock.js';
import { REPO_ROOT } from '../lab/harness.js';
import { ensureDistCurrent } from '../support/dist.js';
import { makePki } from '../support/kube-pki.mjs';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-http-proxy-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('proxyFor: the proxy the environment names, as gRPC clients read it', () => {
  it('grpc_proxy before https_proxy before http_proxy; none set: direct', () => {
    expect(proxyFor('192.0.2.10', {})).toBeNull();
    expect(proxyFor('192.0.2.10', { http_proxy: 'http://p3:3128' })).toMatchObject({ host: 'p3', port: 3128, from: 'http_proxy=http://p3:3128' });
    expect(proxyFor('192.0.2.10', { http_proxy: 'http://p3:3128', https_proxy: 'http://p2:8080' })).toMatchObject({ host: 'p2', port: 8080 });
    expect(proxyFor('192.0.2.10', { http_proxy: 'http://p3', https_proxy: 'http://p2', grpc_proxy: 'http://p1' })).toMatchObject({ host: 'p1', port: 80 });
  });

  it('user and password become Basic credentials, and are not repeated in messages', () => {
    const p = proxyFor('etcd.example', { https_proxy: 'http://site%2D1:s%40cret@proxy.example:3128/' })!;
    expect(p.authorization).toBe(`Basic ${Buffer.from('site-1:s@cret').toString('base64')}`);
    expect(p.from).toBe('https_proxy=http://site%2D1:***@proxy.example:3128');
    expect(p.from).not.toContain('cret');
  });

  it('no_grpc_proxy (else no_proxy): host suffixes, addresses, IPv4 CIDRs and * go direct; loopback always does', () => {
    const env = { https_proxy: 'http://proxy:3128', no_proxy: 'internal.example, 192.0.2.10,198.51.100.0/24' };
    expect(proxyFor('etcd-1.internal.example', env)).toBeNull();
    expect(proxyFor('192.0.2.10', env)).toBeNull();
    expect(proxyFor('198.51.100.77', env)).toBeNull();
    expect(proxyFor('198.51.101.77', env)).not.toBeNull();
    expect(proxyFor('etcd.example', env)).not.toBeNull();
    // no_grpc_proxy, when set, is the list; no_proxy is not read then.
    expect(proxyFor('192.0.2.10', { ...env, no_grpc_proxy: 'other.example' })).not.toBeNull();
    expect(proxyFor('etcd.example', { ...env, no_proxy: '*' })).toBeNull();
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '[::1]']) expect(proxyFor(h, env), h).toBeNull();
  });

  it('the upper-case names too, after the lower-case ones (grpc-go reads HTTPS_PROXY, grpc-js https_proxy); NO_PROXY', () => {
    expect(proxyFor('etcd.example', { HTTPS_PROXY: 'http://up:3128' })).toMatchObject({ host: 'up', from: 'HTTPS_PROXY=http://up:3128' });
    expect(proxyFor('etcd.example', { HTTPS_PROXY: 'http://up:3128', https_proxy: 'http://low:3128' })).toMatchObject({ host: 'low' });
    expect(proxyFor('etcd.example', { HTTPS_PROXY: 'http://up:3128', NO_PROXY: 'example' })).toBeNull();
    // A bare host:port is http://, as Go reads it.
    expect(proxyFor('etcd.example', { HTTPS_PROXY: 'proxy.example:3128' })).toMatchObject({ host: 'proxy.example', port: 3128 });
  });

  it('no_proxy names as Go matches them: a domain and what is below it, .domain only below, never a mere suffix; a port is not looked at', () => {
    const env = (no_proxy: string) => ({ https_proxy: 'http://proxy:3128', no_proxy });
    expect(proxyFor('example.com', env('example.com'))).toBeNull();
    expect(proxyFor('etcd.example.com', env('example.com'))).toBeNull();
    expect(proxyFor('badexample.com', env('example.com'))).not.toBeNull();
    expect(proxyFor('example.com', env('.example.com'))).not.toBeNull();
    expect(proxyFor('etcd.example.com', env('.example.com'))).toBeNull();
    expect(proxyFor('etcd.example.com', env('*.example.com'))).toBeNull();
    expect(proxyFor('ETCD.Example.COM', env('example.com:2379'))).toBeNull();
    expect(proxyFor('192.0.2.100', env('192.0.2.10'))).not.toBeNull(); // an address is the address, not a prefix of others
  });

  it('kubeProxyUrl: as client-go reads it, HTTPS_PROXY for an https:// server and HTTP_PROXY for http://, socks5 and https proxies too', () => {
    expect(kubeProxyUrl('https://203.0.113.5:6443', {})).toBeNull();
    expect(kubeProxyUrl('https://203.0.113.5:6443', { HTTPS_PROXY: 'http://p:3128', https_proxy: 'http://q:3128' })).toEqual({ url: 'http://p:3128', variable: 'HTTPS_PROXY' });
    expect(kubeProxyUrl('https://203.0.113.5:6443', { https_proxy: 'socks5://p:1080' })).toEqual({ url: 'socks5://p:1080', variable: 'https_proxy' });
    expect(kubeProxyUrl('https://203.0.113.5:6443', { HTTP_PROXY: 'http://p:3128' })).toBeNull();
    expect(kubeProxyUrl('http://203.0.113.5:8080', { HTTP_PROXY: 'http://u:pw@p:3128' })).toEqual({ url: 'http://u:pw@p:3128', variable: 'HTTP_PROXY' });
    expect(kubeProxyUrl('https://203.0.113.5:6443', { HTTPS_PROXY: 'http://p:3128', NO_PROXY: '203.0.113.0/24' })).toBeNull();
    expect(kubeProxyUrl('https://127.0.0.1:6443', { HTTPS_PROXY: 'http://p:3128' })).toBeNull();
    expect(() => kubeProxyUrl('https://k8s.example:6443', { HTTPS_PROXY: 'ftp://p:2121' })).toThrow(/^HTTPS_PROXY=ftp:\/\/p:2121: the Kubernetes API is reached through an http:\/\/, https:\/\/ or socks5:\/\/ proxy/);
  });

  it('webSocketProxyFor (the MQTT broker over ws:// or wss://): HTTPS_PROXY for wss, HTTP_PROXY for ws, NO_PROXY; an http:// or https:// proxy only', () => {
    expect(webSocketProxyFor('wss://broker.example:443/mqtt', { HTTPS_PROXY: 'http://u:pw@p:3128' })).toMatchObject({ host: 'p', port: 3128, from: 'HTTPS_PROXY=http://u:***@p:3128' });
    expect(webSocketProxyFor('wss://broker.example/mqtt', { HTTP_PROXY: 'http://p:3128' })).toBeNull();
    expect(webSocketProxyFor('ws://broker.example:8080/mqtt', { http_proxy: 'http://p:3128' })).toMatchObject({ host: 'p' });
    expect(webSocketProxyFor('wss://broker.example/mqtt', { HTTPS_PROXY: 'http://p:3128', NO_PROXY: '.example' })).toBeNull();
    expect(() => webSocketProxyFor('wss://broker.example/mqtt', { HTTPS_PROXY: 'socks5://p:1080' })).toThrow(/^HTTPS_PROXY=socks5:\/\/p:1080: the MQTT broker over WebSocket is reached through an http:\/\/ or https:\/\/ proxy only/);
    // An https:// proxy, as curl takes it: TLS to the proxy, port 443 unless given.
    expect(webSocketProxyFor('wss://broker.example/mqtt', { HTTPS_PROXY: 'https://p.example' })).toEqual({ host: 'p.example', port: 443, tls: true, from: 'HTTPS_PROXY=https://p.example' });
    expect([connectTarget('broker.example', 443), connectTarget('fd00::1', 8883), connectTarget('[fd00::1]', 8883)]).toEqual(['broker.example:443', '[fd00::1]:8883', '[fd00::1]:8883']);
  });

  it('mqttSocksProxy (MQTT.js\'s MQTTJS_SOCKS_PROXY, for mqtt:// and mqtts://): socks4(a)/socks5(h) with a port; no credentials, which MQTT.js would not send', () => {
    expect(mqttSocksProxy({})).toBeNull();
    expect(mqttSocksProxy({ MQTTJS_SOCKS_PROXY: 'socks5://198.51.100.2:1080' })).toEqual({ url: 'socks5://198.51.100.2:1080', from: 'MQTTJS_SOCKS_PROXY=socks5://198.51.100.2:1080' });
    // MQTT.js refuses a path, even "/": handed on as host and port alone.
    expect(mqttSocksProxy({ MQTTJS_SOCKS_PROXY: 'socks5h://proxy.example:1080/' })?.url).toBe('socks5h://proxy.example:1080');
    expect(mqttSocksProxy({ MQTTJS_SOCKS_PROXY: 'socks4a://[fd00::2]:1080' })?.url).toBe('socks4a://[fd00::2]:1080');
    const bad = (v: string) => () => mqttSocksProxy({ MQTTJS_SOCKS_PROXY: v });
    expect(bad('proxy:1080')).toThrow(/^MQTTJS_SOCKS_PROXY=proxy:1080: MQTT\.js goes through a SOCKS proxy only/);
    expect(bad('not a url')).toThrow(/^MQTTJS_SOCKS_PROXY=not a url is not a URL: set it to socks5:\/\/HOST:PORT/);
    expect(bad('socks5://proxy.example')).toThrow(/: no port \(MQTT\.js has no default\); set it to socks5:\/\/proxy\.example:1080/);
    expect(bad('socks5://site:pw@proxy.example:1080')).toThrow(/^MQTTJS_SOCKS_PROXY=socks5:\/\/site:\*\*\*@proxy\.example:1080: MQTT\.js sends no SOCKS user name or password/);
    expect(bad('socks5://proxy.example:1080/x')).toThrow(/: a SOCKS proxy is named by host and port alone; set it to socks5:\/\/proxy\.example:1080$/);
    expect(bad('socks5://proxy.example:1080/x')).toThrow(ProxyConfigError);
  });

  it('mqttProxy (the key mqtt.proxy): an http:// proxy, port 80 unless given, credentials as Basic; a SOCKS one, port 1080 unless given, with its user and password; anything else said with what to set', () => {
    expect(mqttProxy('http://proxy.example:3128')).toEqual({ kind: 'HTTP', proxy: { host: 'proxy.example', port: 3128, from: 'mqtt.proxy' } });
    expect(mqttProxy('http://proxy.example/').proxy).toEqual({ host: 'proxy.example', port: 80, from: 'mqtt.proxy' });
    expect(mqttProxy('http://[2001:db8::1]:3128').proxy).toMatchObject({ host: '2001:db8::1', port: 3128 });
    expect(mqttProxy('http://site%40x:p%3Aw@proxy.example:3128').proxy).toEqual({
      host: 'proxy.example', port: 3128, authorization: `Basic ${Buffer.from('site@x:p:w').toString('base64')}`, from: 'mqtt.proxy',
    });
    expect(() => mqttProxy('ftp://proxy.example:2121')).toThrow('ftp://proxy.example:2121: the broker is reached through an http:// or https:// proxy (HTTP CONNECT) or a socks5://, socks5h://, socks4:// or socks4a:// one');
    expect(() => mqttProxy('http://u:secret@bad host:3128')).toThrow(/^is not a URL \(expected http:\/\/HOST:PORT/);
    // https://: the same CONNECT over TLS to the proxy, port 443 unless given.
    expect(mqttProxy('https://u:secret@proxy.example:8443')).toEqual({
      kind: 'HTTP', proxy: { host: 'proxy.example', port: 8443, authorization: `Basic ${Buffer.from('u:secret').toString('base64')}`, tls: true, from: 'mqtt.proxy' },
    });
    expect(mqttProxy('https://proxy.example').proxy).toEqual({ host: 'proxy.example', port: 443, tls: true, from: 'mqtt.proxy' });
    expect([proxyUrl(mqttProxy('https://u:pw@proxy.example').proxy), proxyUrl(mqttProxy('http://[2001:db8::1]:3128').proxy), proxyUrl(mqttProxy('socks5h://p:1080').proxy)])
      .toEqual(['https://proxy.example:443', 'http://[2001:db8::1]:3128', 'socks5h://p:1080']);
    expect(mqttProxy('socks5h://site:p%40ss@proxy.example')).toEqual({
      kind: 'SOCKS', proxy: { host: 'proxy.example', port: 1080, from: 'mqtt.proxy', scheme: 'socks5h', type: 5, remoteDns: true, userId: 'site', password: 'p@ss' },
    });
    expect(mqttProxy('socks5://198.51.100.7:1081')).toEqual({ kind: 'SOCKS', proxy: { host: '198.51.100.7', port: 1081, from: 'mqtt.proxy', scheme: 'socks5', type: 5, remoteDns: false } });
    expect(mqttProxy('socks4a://ops@p.example:1080').proxy).toMatchObject({ scheme: 'socks4a', type: 4, remoteDns: true, userId: 'ops' });
    expect(() => mqttProxy('socks4://ops:pw@p.example:1080')).toThrow('socks4://ops:***@p.example:1080: SOCKS4 carries a user id and no password; use socks5:// for a user and password');
    expect(() => mqttProxy('http://proxy.example:3128/path')).toThrow('http://proxy.example:3128/path: a proxy is named by host and port alone; set it to http://proxy.example:3128');
    // The password is never in a message.
    for (const v of ['https://u:secret@p.example/x', 'http://u:secret@p.example/x', 'socks5://u:secret@p.example:1/x']) {
      expect(() => mqttProxy(v)).toThrow(expect.objectContaining({ message: expect.not.stringContaining('secret') }));
    }
  });

  it('a value that cannot be used is an error naming the variable and what to set, never a silent direct connection', () => {
    expect(() => proxyFor('etcd.example', { https_proxy: 'proxy:3128:x' })).toThrow(ProxyConfigError);
    expect(() => proxyFor('etcd.example', { https_proxy: 'not a url' })).toThrow(/^https_proxy=not a url is not a URL: set it to http:\/\/HOST:PORT/);
    expect(() => proxyFor('etcd.example', { grpc_proxy: 'https://u:pw@proxy:8443' })).toThrow(/^grpc_proxy=https:\/\/u:\*\*\*@proxy:8443: etcd is reached through an http:\/\/ proxy only \(HTTP CONNECT\)/);
  });
});

type Proxy = { port: number; connects: { target: string; authorization?: string }[] };
const closers: (() => Promise<unknown>)[] = [];
const channels: GrpcChannel[] = [];
afterEach(async () => {
  for (const c of channels.splice(0)) c.close();
  await Promise.all(closers.splice(0).map((c) => c()));
});

/**
 * A CONNECT proxy on 127.0.0.1 that takes *.example:PORT to 127.0.0.1:PORT (the Kubernetes
 * client's agent tunnels to an http:// server too); `answer` (default 200) is its status
 * line's code; `wanted`: the Proxy-Authorization it requires.
 */
async function proxy(o: { answer?: number; wanted?: string; tls?: { cert: string; key: string } } = {}): Promise<Proxy> {
  const connects: Proxy['connects'] = [];
  const srv = o.tls ? https.createServer({ cert: o.tls.cert, key: o.tls.key }) : http.createServer();
  const sockets = new Set<net.Socket>();
  srv.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    sockets.add(client);
    connects.push({ target: req.url!, ...(req.headers['proxy-authorization'] ? { authorization: req.headers['proxy-authorization'] } : {}) });
    if (o.wanted !== undefined && req.headers['proxy-authorization'] !== o.wanted) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n\r\n');
      return;
    }
    if (o.answer && o.answer !== 200) {
      client.end(`HTTP/1.1 ${o.answer} Forbidden\r\n\r\n`);
      return;
    }
    const [host, port] = req.url!.split(':');
    const up = net.connect(Number(port), host.endsWith('.example') ? '127.0.0.1' : host, () => {
      client.write('HTTP/1.1 200 Connection established\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(client).pipe(up);
    });
    sockets.add(up);
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  closers.push(() => {
    for (const s of sockets) s.destroy();
    srv.closeAllConnections();
    return new Promise((r) => srv.close(r));
  });
  return { port: (srv.address() as net.AddressInfo).port, connects };
}

describe('an https:// proxy: CONNECT spoken over TLS to the proxy', () => {
  const pki = makePki(path.join(TMP, 'proxy-pki'), { ips: ['127.0.0.1'] });
  const at = (port: number) => ({ host: '127.0.0.1', port, tls: true as const, from: 'mqtt.proxy' });

  it('a proxy certificate this machine does not trust: no CONNECT is sent, and the error says whose certificate and what to do', async () => {
    const p = await proxy({ tls: pki });
    const t = new ConnectTunnel(at(p.port), 'broker.example:8883');
    const err = await new Promise<Error>((r) => t.once('error', r));
    expect(err).toBeInstanceOf(ProxyTunnelError);
    expect(err).toMatchObject({
      failure: 'untrusted',
      message: `cannot reach the proxy 127.0.0.1:${p.port} (mqtt.proxy) over TLS: the proxy 127.0.0.1:${p.port}'s certificate is not signed by a CA in the system's CAs or NODE_EXTRA_CA_CERTS`,
      fix: 'add the CA that signed the proxy\'s certificate to the PEM file NODE_EXTRA_CA_CERTS names (in /etc/default/vxedge, then restart)',
    });
    expect(p.connects).toEqual([]);
  });

  it('trusted through NODE_EXTRA_CA_CERTS (Node reads it at start, so in a child process): the credentials go inside TLS, and bytes both ways', async () => {
    ensureDistCurrent();
    const echo = net.createServer((c) => c.pipe(c));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => echo.close(r)));
    const wanted = `Basic ${Buffer.from('site:s3cret').toString('base64')}`;
    const p = await proxy({ tls: pki, wanted });
    const script = [
      `import { ConnectTunnel } from ${JSON.stringify(path.join(REPO_ROOT, 'dist', 'util', 'http-proxy.js'))};`,
      `const t = new ConnectTunnel(${JSON.stringify({ ...at(p.port), authorization: wanted })}, 'echo.example:${(echo.address() as net.AddressInfo).port}');`,
      "t.on('error', (e) => { console.log('error', e.message); process.exit(1); });",
      "t.once('data', (d) => { console.log(String(d)); t.destroy(); });",
      "t.write('hello through TLS');",
    ].join('\n');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.caFile }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    expect({ code, out: out.trim() }).toEqual({ code: 0, out: 'hello through TLS' });
    expect(p.connects).toEqual([{ target: `echo.example:${(echo.address() as net.AddressInfo).port}`, authorization: wanted }]);
  });
});

/** An h2c gRPC server on 127.0.0.1 answering every call with `answer` and status OK. */
async function grpcServer(answer: string): Promise<number> {
  const srv = http2.createServer();
  srv.on('stream', (stream) => {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const b = Buffer.from(answer);
      const h = Buffer.alloc(5);
      h.writeUInt32BE(b.length, 1);
      stream.end(Buffer.concat([h, b]));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => srv.close(r)));
  return (srv.address() as net.AddressInfo).port;
}

function channel(endpoint: string, env: Record<string, string>): GrpcChannel {
  const c = new GrpcChannel({ endpoints: [endpoint], tls: {}, clock: new ManualClock(), env });
  channels.push(c);
  return c;
}

describe('GrpcChannel through an HTTP CONNECT proxy', () => {
  it('calls go through it, one CONNECT for the connection, with the credentials of the URL', async () => {
    const port = await grpcServer('through');
    const p = await proxy({ wanted: `Basic ${Buffer.from('site:pw').toString('base64')}` });
    const c = channel(`http://etcd.example:${port}`, { https_proxy: `http://site:pw@127.0.0.1:${p.port}` });
    for (let i = 0; i < 3; i++) expect((await c.unary('/etcdserverpb.KV/Range', Buffer.from('q'), {}, 5_000)).toString()).toBe('through');
    expect(p.connects).toEqual([{ target: `etcd.example:${port}`, authorization: `Basic ${Buffer.from('site:pw').toString('base64')}` }]);
  });

  it("the proxy's refusal is the connection's error: its status line, the variable, and for 407 what to put in it", async () => {
    const port = await grpcServer('never');
    const p = await proxy({ wanted: 'Basic x' });
    const e = await channel(`http://etcd.example:${port}`, { https_proxy: `http://127.0.0.1:${p.port}` }).unary('/x/Y', Buffer.alloc(0), {}, 5_000).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(GrpcConnectError);
    expect((e as Error).message).toBe(
      `the proxy 127.0.0.1:${p.port} (https_proxy=http://127.0.0.1:${p.port}) answered CONNECT etcd.example:${port} with "HTTP/1.1 407 Proxy Authentication Required": the proxy wants credentials, http://USER:PASSWORD@HOST:PORT in the variable`,
    );
    const q = await proxy({ answer: 403 });
    const f = await channel(`http://etcd.example:${port}`, { grpc_proxy: `http://127.0.0.1:${q.port}` }).unary('/x/Y', Buffer.alloc(0), {}, 5_000).catch((x: unknown) => x);
    expect((f as Error).message).toMatch(/answered CONNECT etcd\.example:\d+ with "HTTP\/1\.1 403 Forbidden"$/);
  });

  it('a proxy that cannot be reached, and a variable that cannot be used: errors that name them', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const dead = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    const e = await channel('http://etcd.example:2379', { http_proxy: `http://127.0.0.1:${dead}` }).unary('/x/Y', Buffer.alloc(0), {}, 5_000).catch((x: unknown) => x);
    expect((e as Error).message).toBe(`cannot reach the proxy 127.0.0.1:${dead} (http_proxy=http://127.0.0.1:${dead}): connect ECONNREFUSED 127.0.0.1:${dead}`);
    const bad = await channel('http://etcd.example:2379', { https_proxy: 'socks5://127.0.0.1:1080' }).unary('/x/Y', Buffer.alloc(0), {}, 5_000).catch((x: unknown) => x);
    expect(bad).toBeInstanceOf(ProxyConfigError);
  });

  it("a certificate handshake whose TLS files the secure context refuses: no answer, and the tunnel to the proxy is closed, not left open", async () => {
    let open = 0;
    let closed = 0;
    const srv = net.createServer((c) => {
      open++;
      c.on('close', () => closed++);
      c.on('error', () => undefined);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => srv.close(r)));
    const port = (srv.address() as net.AddressInfo).port;
    const v = await probePeerCertificate({
      host: 'etcd.example', port: 2379, key: Buffer.from('not a key'), cert: Buffer.from('not a certificate'),
      clock: new ManualClock(), timeoutMs: 5_000, proxy: { host: '127.0.0.1', port, from: 'test' },
    });
    expect(v).toBeNull();
    // A marker connection, made and closed after the probe: accepted after any the probe made,
    // so once it is in, every connection there will be is counted.
    const marker = net.connect(port, '127.0.0.1', () => marker.end());
    const end = Date.now() + 5_000;
    while ((open === 0 || closed < open) && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(closed).toBe(open); // the marker's, and the tunnel's if it got as far as connecting: none left open
  });

  it('the tunnel holds what is written before the proxy answers, and hands on bytes that came with its answer', async () => {
    // A proxy that answers and sends the server's first bytes in the same write.
    const srv = net.createServer((c) => {
      c.once('data', () => c.write('HTTP/1.1 200 OK\r\nVia: test\r\n\r\nhello'));
      c.on('data', (d) => {
        if (!d.toString().startsWith('CONNECT')) c.write(d); // an echo after the answer
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => srv.close(r)));
    const t = new ConnectTunnel({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, from: 'test' }, 'etcd.example:2379');
    expect(t.connecting).toBe(true);
    t.write('early');
    const got: string[] = [];
    t.on('data', (d: Buffer) => got.push(d.toString()));
    await new Promise((r) => t.once('connect', r));
    expect(t.connecting).toBe(false);
    const end = Date.now() + 5_000;
    while (got.join('') !== 'helloearly' && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(got.join('')).toBe('helloearly');
    t.destroy();
  });
});

describe('the Kubernetes client through the proxy the environment names', () => {
  afterEach(() => vi.unstubAllEnvs());

  /** A plain-HTTP API server on 127.0.0.1 answering every GET with {}, and a kubeconfig naming it api.example (with `proxyUrl`, its own proxy-url). */
  async function apiServer(proxyUrl?: string): Promise<{ port: number; kubeconfig: string }> {
    const srv = http.createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"kind":"Node"}'));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    closers.push(() => {
      srv.closeAllConnections();
      return new Promise((r) => srv.close(r));
    });
    const port = (srv.address() as net.AddressInfo).port;
    const kubeconfig = path.join(TMP, `kubeconfig-${port}`);
    writeFileSync(kubeconfig, JSON.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: `http://api.example:${port}`, 'insecure-skip-tls-verify': true, ...(proxyUrl ? { 'proxy-url': proxyUrl } : {}) } }],
      users: [{ name: 'u', user: { token: 't' } }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    }));
    return { port, kubeconfig };
  }
  const get = async (kubeconfig: string) => {
    const api = await connectNodeApi({ kind: 'file', file: kubeconfig, describe: 'kubeconfig' }, new ManualClock(), 5_000);
    return api.get('site-a');
  };

  it('HTTP_PROXY for an http:// API server: the call goes through it', async () => {
    const p = await proxy();
    const { port, kubeconfig } = await apiServer();
    vi.stubEnv('HTTP_PROXY', `http://127.0.0.1:${p.port}`);
    expect(await get(kubeconfig)).toEqual({ kind: 'Node' });
    expect(p.connects.map((c) => c.target)).toEqual([`api.example:${port}`]);
    const api = await connectNodeApi({ kind: 'file', file: kubeconfig, describe: 'kubeconfig' }, new ManualClock(), 5_000);
    expect(api.proxy).toBe(`http://127.0.0.1:${p.port} (HTTP_PROXY)`); // for the log's "following Nodes"
    vi.stubEnv('HTTP_PROXY', `http://gw:s3cret@127.0.0.1:${p.port}`);
    const withPassword = await connectNodeApi({ kind: 'file', file: kubeconfig, describe: 'kubeconfig' }, new ManualClock(), 5_000);
    expect(withPassword.proxy).toBe(`http://gw:***@127.0.0.1:${p.port} (HTTP_PROXY)`);
  });

  it("the kubeconfig's own proxy-url wins over the environment; NO_PROXY names the server: direct", async () => {
    const [envProxy, ownProxy] = [await proxy(), await proxy()];
    const own = await apiServer(`http://127.0.0.1:${ownProxy.port}`);
    vi.stubEnv('HTTP_PROXY', `http://127.0.0.1:${envProxy.port}`);
    expect(await get(own.kubeconfig)).toEqual({ kind: 'Node' });
    expect([envProxy.connects.length, ownProxy.connects.length]).toEqual([0, 1]);
    const api = await connectNodeApi({ kind: 'file', file: own.kubeconfig, describe: 'kubeconfig' }, new ManualClock(), 5_000);
    expect(api.proxy).toBe(`http://127.0.0.1:${ownProxy.port} (the kubeconfig's proxy-url)`);
    const plain = await apiServer();
    vi.stubEnv('NO_PROXY', 'example');
    await expect(get(plain.kubeconfig)).rejects.toThrow(/api\.example/); // no proxy: the name does not resolve here
    expect(envProxy.connects.length).toBe(0);
  });
});
