// The port mapper's I/O edges: exchange()'s retransmission schedule and answer matching on a
// ManualClock, and the Node implementations (dgram, http) against servers on 127.0.0.1:
// ICMP port unreachable, size limits, a response that never ends.
import { afterEach, describe, expect, it } from 'vitest';
import dgram from 'node:dgram';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exchange, nodeHttp, nodeUdp, type UdpFactory, type UdpHandlers, type UdpPeer } from '../../src/nat/portmap/transport.js';
import { ManualClock, flush } from '../support/clock.js';

const SERVER = { address: '192.0.2.1', port: 5351 };

/** A UdpFactory whose one socket the test drives by hand. */
function handSocket() {
  const s = {
    sent: [] as { at: number; data: Buffer; to: UdpPeer }[],
    handlers: null as UdpHandlers | null,
    closed: false,
    opts: null as unknown,
  };
  const clock = new ManualClock();
  const udp: UdpFactory = async (opts, h) => {
    s.handlers = h;
    s.opts = opts;
    return {
      send: (data, to) => void s.sent.push({ at: clock.monotonic(), data, to }),
      close: () => void (s.closed = true),
    };
  };
  return { s, clock, udp };
}

describe('exchange()', () => {
  it('sends on the schedule, then reports the silence', async () => {
    const { s, clock, udp } = handSocket();
    const p = exchange({ udp, clock, localAddress: '192.0.2.10', server: SERVER, request: Buffer.from([0, 0]), waitsMs: [250, 500, 1000], accept: () => 'x' });
    await flush();
    clock.advance(5000);
    expect(await p).toEqual({ kind: 'timeout', sends: 3, waitedMs: 1750, ignored: 0 });
    const t0 = s.sent[0].at;
    expect(s.sent.map((x) => x.at - t0)).toEqual([0, 250, 750]);
    expect(s.opts).toEqual({ localAddress: '192.0.2.10', connect: SERVER });
    expect(s.closed).toBe(true);
    expect(clock.timerCount).toBe(0);
  });

  it('takes the first datagram accept() takes; counts what it ignored', async () => {
    const { s, clock, udp } = handSocket();
    const p = exchange({
      udp, clock, localAddress: '192.0.2.10', server: SERVER, request: Buffer.from([0]), waitsMs: [250, 500],
      accept: (m) => {
        if (m[0] === 9) throw new Error('parser bug');
        return m[0] === 1 ? 'ours' : null;
      },
    });
    await flush();
    clock.advance(250);
    s.handlers!.message(Buffer.from([1]), { address: '192.0.2.66', port: 5351 }); // not the server
    s.handlers!.message(Buffer.from([1]), { address: '192.0.2.1', port: 5352 }); // not its port
    s.handlers!.message(Buffer.from([0]), SERVER); // not an answer
    s.handlers!.message(Buffer.from([9]), SERVER); // the parser threw
    s.handlers!.message(Buffer.from([1]), SERVER);
    expect(await p).toEqual({ kind: 'answer', value: 'ours', sends: 2, ignored: 4 });
    expect(s.closed).toBe(true);
    expect(clock.timerCount).toBe(0);
  });

  it('ends at once on ICMP port unreachable (ECONNREFUSED), and on abort', async () => {
    const a = handSocket();
    const p = exchange({ udp: a.udp, clock: a.clock, localAddress: '192.0.2.10', server: SERVER, request: Buffer.from([0]), waitsMs: [250], accept: () => 1 });
    await flush();
    a.s.handlers!.error(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }));
    expect(await p).toMatchObject({ kind: 'unreachable', sends: 1 });

    const b = handSocket();
    const ac = new AbortController();
    const q = exchange({ udp: b.udp, clock: b.clock, localAddress: '192.0.2.10', server: SERVER, request: Buffer.from([0]), waitsMs: [250], accept: () => 1, signal: ac.signal });
    await flush();
    ac.abort();
    expect(await q).toMatchObject({ kind: 'aborted' });
    expect(b.s.closed).toBe(true);
  });

  it('says so when the socket cannot be opened', async () => {
    const udp: UdpFactory = () => Promise.reject(Object.assign(new Error('bind'), { code: 'EADDRNOTAVAIL' }));
    const r = await exchange({ udp, clock: new ManualClock(), localAddress: '192.0.2.10', server: SERVER, request: Buffer.from([0]), waitsMs: [250], accept: () => 1 });
    expect(r).toEqual({ kind: 'error', message: 'cannot open a UDP socket on 192.0.2.10: EADDRNOTAVAIL', ignored: 0 });
  });
});

describe('nodeUdp (127.0.0.1)', () => {
  const open: { close(): void }[] = [];
  afterEach(() => {
    for (const o of open.splice(0)) o.close();
  });

  it('exchanges with a server, and reports a closed port as unreachable', async () => {
    const server = dgram.createSocket('udp4');
    open.push(server);
    server.on('message', (m, r) => server.send(Buffer.concat([Buffer.from('re:'), m]), r.port, r.address));
    await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    // The retransmission timer is on a ManualClock nobody moves: whenever the answer comes, it
    // answers the first send. A real-time bound (the abort signal) keeps a lost answer from
    // hanging the test; it would show as kind 'aborted'.
    const clock = new ManualClock();
    const base = { udp: nodeUdp, clock, localAddress: '127.0.0.1', request: Buffer.from('hi'), waitsMs: [200, 400, 800], signal: AbortSignal.timeout(5_000) };
    const ok = await exchange({ ...base, server: { address: '127.0.0.1', port }, accept: (m) => m.toString() });
    expect(ok).toMatchObject({ kind: 'answer', value: 're:hi', sends: 1 });
    expect(clock.timerCount).toBe(0);

    // A port nobody listens on: the kernel's ICMP port unreachable ends the exchange at once.
    const probe = dgram.createSocket('udp4');
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
    const closedPort = (probe.address() as AddressInfo).port;
    probe.close();
    const refused = await exchange({ ...base, waitsMs: [60_000], server: { address: '127.0.0.1', port: closedPort }, accept: () => 1 });
    expect(refused).toMatchObject({ kind: 'unreachable', sends: 1 });
  });

  it('cannot bind an address that is not ours', async () => {
    await expect(nodeUdp({ localAddress: '192.0.2.123' }, { message: () => {}, error: () => {} })).rejects.toMatchObject({ code: 'EADDRNOTAVAIL' });
  });
});

describe('nodeHttp (127.0.0.1)', () => {
  let server: http.Server | null = null;
  afterEach(async () => {
    const s = server;
    server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  });

  async function serve(handler: http.RequestListener): Promise<number> {
    server = http.createServer(handler);
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return (server.address() as AddressInfo).port;
  }

  const req = (port: number, maxBytes = 1000) => ({ host: '127.0.0.1', port, path: '/x', method: 'POST' as const, headers: { SOAPAction: '"a#b"' }, body: 'abc', localAddress: '127.0.0.1', maxBytes });

  it('sends the request and returns status and body', async () => {
    let got = '';
    const port = await serve((q, s) => {
      q.on('data', (b: Buffer) => (got += b.toString()));
      q.on('end', () => s.writeHead(500).end(`${q.headers.soapaction} ${q.headers['content-length']}`));
    });
    expect(await nodeHttp(req(port), new AbortController().signal)).toEqual({ status: 500, body: '"a#b" 3' });
    expect(got).toBe('abc');
  });

  it('refuses a body over maxBytes, declared or streamed', async () => {
    const port = await serve((q, s) => {
      q.resume();
      if (q.url === '/x') s.writeHead(200, { 'Content-Length': '5000' }).end('x'.repeat(5000));
    });
    await expect(nodeHttp(req(port), new AbortController().signal)).rejects.toThrow('5000-byte body');
    server?.removeAllListeners('request');
    server?.on('request', (q: http.IncomingMessage, s: http.ServerResponse) => {
      q.resume();
      s.writeHead(200); // chunked: no length declared
      s.write('x'.repeat(800));
      s.end('y'.repeat(800));
    });
    await expect(nodeHttp(req(port), new AbortController().signal)).rejects.toThrow('more than 1000 bytes');
  });

  it('gives up on a response that never ends when the signal aborts', async () => {
    let started!: () => void;
    const begun = new Promise<void>((r) => (started = r));
    const port = await serve((q, s) => {
      q.resume();
      s.writeHead(200);
      s.write('<root>');
      started();
    });
    const ac = new AbortController();
    const p = nodeHttp(req(port), ac.signal);
    await begun;
    ac.abort(new Error('no complete answer within 2 s'));
    await expect(p).rejects.toThrow('no complete answer within 2 s');
  });

  it('rejects with the socket error when nothing listens', async () => {
    const port = await serve(() => {});
    await new Promise((r) => server!.close(r));
    server = null;
    await expect(nodeHttp(req(port), new AbortController().signal)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
