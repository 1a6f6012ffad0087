// The etcd adapter's gRPC client (src/cluster/grpc-h2.ts) against a gRPC server made here with
// Node's http2 (h2c on 127.0.0.1): framing across chunks, status in trailers and in headers
// (Trailers-Only), metadata and grpc-timeout, an endpoint that refuses and the next one, our
// deadline on the test's clock, streams, cancel, pings only while a call is open, answers that
// are not gRPC. The real etcd is in test/lab/etcd.test.ts; this is where the edges are.
import { afterEach, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import net from 'node:net';
import { GrpcChannel, GrpcConnectError, GrpcStatusError, STALLS_TO_LEAVE } from '../../src/cluster/grpc-h2.js';
import { ManualClock } from '../support/clock.js';
import { freePort } from '../support/free-port.js';

type Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body: Buffer[]) => void;

/** A length-prefixed gRPC message. */
const frame = (m: Buffer | string, compressed = 0) => {
  const b = Buffer.from(m);
  const h = Buffer.alloc(5);
  h[0] = compressed;
  h.writeUInt32BE(b.length, 1);
  return Buffer.concat([h, b]);
};

const servers: http2.Http2Server[] = [];
const channels: GrpcChannel[] = [];
afterEach(async () => {
  for (const c of channels.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** An h2c server whose handler sees each call's headers and, once the client half-closed, its messages. */
async function server(handler: Handler, opts: { onSession?: (s: http2.ServerHttp2Session) => void } = {}): Promise<{ url: string; calls: http2.IncomingHttpHeaders[] }> {
  const calls: http2.IncomingHttpHeaders[] = [];
  const srv = http2.createServer();
  srv.on('session', (s) => opts.onSession?.(s));
  srv.on('stream', (stream, headers) => {
    calls.push(headers);
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.on('end', () => handler(stream, headers, parts));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv);
  return { url: `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`, calls };
}

/** A port nothing listens on. */
async function closedPort(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

function channel(endpoints: string[], clock = new ManualClock(), leaveOn?: (e: GrpcStatusError) => boolean, left?: string[][]): GrpcChannel {
  const c = new GrpcChannel({ endpoints, tls: {}, clock, ...(leaveOn ? { leaveOn } : {}), ...(left ? { left: (...a: string[]) => left.push(a) } : {}) });
  channels.push(c);
  return c;
}

/** The answer, in pieces of `size` bytes, then status OK in the trailers. */
const answerInPieces = (answer: Buffer, size: number): Handler => (stream) => {
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  const f = frame(answer);
  for (let i = 0; i < f.length; i += size) stream.write(f.subarray(i, i + size));
  stream.end();
};

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('GrpcChannel unary', () => {
  it('sends the request framed with its metadata and deadline; an answer cut into 1-byte pieces comes back whole', async () => {
    const answer = Buffer.from('the answer '.repeat(100));
    let got: Buffer | null = null;
    const s = await server((stream, _h, body) => {
      got = Buffer.concat(body);
      answerInPieces(answer, 1)(stream, _h, body);
    });
    const out = await channel([s.url]).unary('/etcdserverpb.KV/Range', Buffer.from('req'), { token: 'abc.1' }, 5000);
    expect(out.equals(answer)).toBe(true);
    expect(got!.equals(frame('req'))).toBe(true);
    expect(s.calls[0]).toMatchObject({ ':method': 'POST', ':path': '/etcdserverpb.KV/Range', 'content-type': 'application/grpc', te: 'trailers', token: 'abc.1', 'grpc-timeout': '5000m' });
  });

  it("etcd's refusal in the trailers, percent-encoded: a GrpcStatusError with its code and words", async () => {
    const s = await server((stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '7', 'grpc-message': 'etcdserver:%20permission%20denied' }));
      stream.end();
    });
    const e = await channel([s.url]).unary('/etcdserverpb.KV/Txn', Buffer.alloc(0), {}, 5000).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(GrpcStatusError);
    expect(e).toMatchObject({ code: 7, details: 'etcdserver: permission denied', message: '7 PERMISSION_DENIED: etcdserver: permission denied' });
  });

  it('a status in the headers alone (Trailers-Only)', async () => {
    const s = await server((stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '16', 'grpc-message': 'etcdserver: invalid auth token' }, { endStream: true });
    });
    await expect(channel([s.url]).unary('/x/Y', Buffer.alloc(0), {}, 5000)).rejects.toMatchObject({ code: 16, details: 'etcdserver: invalid auth token' });
  });

  it('an endpoint that refuses the connection: the next one answers, and the calls after go there at once', async () => {
    const dead = await closedPort();
    const s = await server(answerInPieces(Buffer.from('ok'), 100));
    const c = channel([dead, s.url]);
    expect((await c.unary('/x/Y', Buffer.alloc(0), {}, 5000)).toString()).toBe('ok');
    expect(c.endpoint).toBe(s.url);
    expect((await c.unary('/x/Y', Buffer.alloc(0), {}, 5000)).toString()).toBe('ok');
    expect(s.calls).toHaveLength(2);
  });

  it('every endpoint refusing: a GrpcConnectError naming the last, with the connection error', async () => {
    const [a, b] = [await closedPort(), await closedPort()];
    const e = await channel([a, b]).unary('/x/Y', Buffer.alloc(0), {}, 5000).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(GrpcConnectError);
    expect((e as GrpcConnectError).endpoint).toBe(b);
    expect((e as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('an endpoint whose connection never comes up (a TLS handshake never answered): the deadline, then the next endpoint', async () => {
    const held: net.Socket[] = [];
    let ended = 0;
    const silent = net.createServer((sock) => {
      held.push(sock); // takes the TCP connection, says nothing
      sock.resume();
      sock.on('close', () => ended++);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const mute = `https://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
      const s = await server(answerInPieces(Buffer.from('ok'), 100));
      const clock = new ManualClock();
      const c = channel([mute, s.url], clock);
      const first = c.unary('/x/Y', Buffer.alloc(0), {}, 2000).catch((x: unknown) => x);
      await until(() => held.length === 1);
      clock.advance(2000);
      expect(await first).toMatchObject({ code: 4, message: `4 DEADLINE_EXCEEDED: no connection to ${mute} within 2000 ms` });
      expect(c.endpoint).toBe(s.url);
      expect((await c.unary('/x/Y', Buffer.alloc(0), {}, 2000)).toString()).toBe('ok');
      await until(() => ended === 1); // the connection that never came up was ended
    } finally {
      for (const x of held) x.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('no answer: DEADLINE_EXCEEDED when our clock says so, and the call is cancelled on the wire', async () => {
    const clock = new ManualClock();
    let cancelled = false;
    const s = await server((stream) => {
      stream.on('close', () => (cancelled = stream.rstCode === http2.constants.NGHTTP2_CANCEL));
    });
    const p = channel([s.url], clock).unary('/x/Y', Buffer.alloc(0), {}, 2000).catch((x: unknown) => x);
    await until(() => s.calls.length === 1);
    clock.advance(1999);
    clock.advance(1);
    const e = await p;
    expect(e).toMatchObject({ code: 4 });
    expect((e as Error).message).toMatch(/^4 DEADLINE_EXCEEDED: no answer from http:\/\/127\.0\.0\.1:\d+ within 2000 ms$/);
    await until(() => cancelled);
  });

  it.each([
    ['HTTP 404 (not a gRPC server)', (st: http2.ServerHttp2Stream) => st.respond({ ':status': 404 }, { endStream: true }), /answered \/x\/Y with HTTP 404, not gRPC/],
    ['a compressed message, not asked for', (st: http2.ServerHttp2Stream) => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' });
      st.end(frame('zz', 1));
    }, /compressed message/],
    ['two answers to a unary call', (st: http2.ServerHttp2Stream) => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
      st.end(Buffer.concat([frame('a'), frame('b')]));
    }, /more than one message/],
    ['an end inside a message', (st: http2.ServerHttp2Stream) => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
      st.end(frame('abcdef').subarray(0, 7));
    }, /ended inside a message/],
    ['no status at all', (st: http2.ServerHttp2Stream) => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' });
      st.end(frame('a'));
    }, /without a status/],
  ])('%s is an error that says so', async (_what, respond, words) => {
    const s = await server((st) => respond(st));
    await expect(channel([s.url]).unary('/x/Y', Buffer.alloc(0), {}, 5000)).rejects.toThrow(words);
  });
});

describe('GrpcChannel streams', () => {
  it('messages in one chunk and across chunks, in order, with the metadata sent; status OK ends it with null', async () => {
    const s = await server((stream, _h, body) => {
      expect(Buffer.concat(body).equals(frame('create'))).toBe(true);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const three = Buffer.concat([frame('one'), frame('two'), frame('three')]);
      stream.write(three.subarray(0, 12)); // one, and a part of two
      stream.end(three.subarray(12));
    });
    const got: string[] = [];
    let ended: Error | null | undefined;
    const st = channel([s.url]).stream('/etcdserverpb.Lease/LeaseKeepAlive', { hasleader: 'true' }, { onMessage: (m) => got.push(m.toString()), onEnd: (e) => (ended = e) });
    st.write(Buffer.from('create'));
    st.end();
    await until(() => ended !== undefined);
    expect(ended).toBeNull();
    expect(got).toEqual(['one', 'two', 'three']);
    expect(s.calls[0].hasleader).toBe('true');
  });

  it('a watch-like exchange: created, events, and cancel() stops the handlers and resets the stream', async () => {
    let serverStream: http2.ServerHttp2Stream | null = null;
    let reset: number | null = null;
    const srv = http2.createServer();
    srv.on('stream', (stream) => {
      serverStream = stream;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.once('data', () => {
        const two = Buffer.concat([frame('created'), frame('event 1')]);
        stream.write(two.subarray(0, 9));
        stream.write(two.subarray(9));
      });
      stream.on('close', () => (reset = stream.rstCode));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    servers.push(srv);
    const url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
    const got: string[] = [];
    let ended = false;
    const st = channel([url]).stream('/etcdserverpb.Watch/Watch', {}, { onMessage: (m) => got.push(m.toString()), onEnd: () => (ended = true) });
    st.write(Buffer.from('create'));
    await until(() => got.length === 2);
    expect(got).toEqual(['created', 'event 1']);
    st.cancel();
    serverStream!.write(frame('event 2'));
    await until(() => reset !== null);
    expect(reset).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(ended).toBe(false);
    expect(got).toEqual(['created', 'event 1']);
  });

  it('the server going away mid-call: the call ends with an error that is not a connect error (it may have been taken)', async () => {
    let session: http2.ServerHttp2Session | null = null;
    const s = await server(() => undefined, { onSession: (x) => (session = x) });
    let ended: Error | null | undefined;
    const st = channel([s.url]).stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: (e) => (ended = e) });
    st.write(Buffer.from('create'));
    await until(() => s.calls.length === 1);
    session!.destroy();
    await until(() => ended !== undefined);
    expect(ended).toBeInstanceOf(Error);
    expect(ended).not.toBeInstanceOf(GrpcConnectError);
  });

  it('close() ends the open calls (their handlers told) and the connection', async () => {
    let closedSessions = 0;
    const s = await server(() => undefined, { onSession: (x) => x.on('close', () => closedSessions++) });
    const c = channel([s.url]);
    let ended: Error | null | undefined;
    const st = c.stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: (e) => (ended = e) });
    st.write(Buffer.from('create'));
    await until(() => s.calls.length === 1);
    c.close();
    await until(() => ended !== undefined && closedSessions === 1);
    expect(ended).toBeInstanceOf(Error);
    await expect(c.unary('/x/Y', Buffer.alloc(0), {}, 1000)).rejects.toThrow(/the channel is closed/);
  });

  it('pings every 30 s on our clock while a call is open, none while idle', async () => {
    const clock = new ManualClock();
    let pings = 0;
    const s = await server(answerInPieces(Buffer.from('ok'), 100), { onSession: (x) => x.on('ping', () => pings++) });
    const c = channel([s.url], clock);
    await c.unary('/x/Y', Buffer.alloc(0), {}, 5000);
    clock.advance(30_000);
    const st = c.stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: () => undefined });
    st.write(Buffer.from('create'));
    // The stream's HEADERS went on the connection after any ping of the idle 30 s: once the
    // server has the stream, it has had that ping too.
    await until(() => s.calls.length === 2);
    expect(pings).toBe(0); // idle: etcd answers pings on an idle connection with GOAWAY too_many_pings
    clock.advance(30_000);
    await until(() => pings === 1);
    clock.advance(30_000);
    await until(() => pings === 2);
    st.cancel();
  });

  it("a call still finishing on a connection going away does not make the new, idle one ping", async () => {
    const clock = new ManualClock();
    const sessions: http2.ServerHttp2Session[] = [];
    const pings: number[] = [];
    const s = await server(answerInPieces(Buffer.from('ok'), 100), {
      onSession: (x) => {
        const i = sessions.push(x) - 1;
        pings[i] = 0;
        x.on('ping', () => pings[i]++);
      },
    });
    const c = channel([s.url], clock);
    const watch = c.stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: () => undefined });
    watch.write(Buffer.from('create'));
    await until(() => s.calls.length === 1);
    sessions[0].goaway(); // etcd stopping: the watch may finish, new calls go elsewhere
    await until(() => (c as unknown as { session: unknown }).session === null); // the channel saw the GOAWAY
    expect((await c.unary('/x/Y', Buffer.alloc(0), {}, 5000)).toString()).toBe('ok'); // on a second connection
    expect(sessions).toHaveLength(2);
    clock.advance(30_000);
    const probe = c.stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: () => undefined });
    probe.write(Buffer.from('create'));
    // The probe's HEADERS follow any ping of the idle 30 s on that connection.
    await until(() => s.calls.length === 3);
    expect(pings).toEqual([0, 0]);
    watch.cancel();
    probe.cancel();
  });

  it('a ping not answered within 10 s ends the connection, and the open call with it, naming the endpoint', async () => {
    // A peer that speaks just enough HTTP/2 to be connected to (its SETTINGS, and the ack of
    // ours), then nothing: no answer to the call, none to the ping, as over a dead path.
    const sockets: net.Socket[] = [];
    const mute = net.createServer((sock) => {
      sockets.push(sock);
      sock.on('error', () => undefined);
      sock.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // SETTINGS, empty
      sock.write(Buffer.from([0, 0, 0, 4, 1, 0, 0, 0, 0])); // SETTINGS ack
    });
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(mute.address() as net.AddressInfo).port}`;
      const clock = new ManualClock();
      let ended: Error | null | undefined;
      const st = channel([url], clock).stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: (e) => (ended = e) });
      st.write(Buffer.from('create'));
      // The client's preface came: it is connected, and its keepalive runs.
      await until(() => sockets.length === 1 && sockets[0].bytesRead > 24);
      clock.advance(30_000); // the ping
      await new Promise((r) => setImmediate(r));
      expect(ended).toBeUndefined();
      clock.advance(10_000); // its answer's time is up
      await until(() => ended !== undefined);
      expect(ended!.message).toMatch(new RegExp(`keepalive ping to ${url.replace(/[.:/]/g, '\\$&')} not answered within 10 s`));
    } finally {
      for (const x of sockets) x.destroy();
      await new Promise((r) => mute.close(r));
    }
  });
});

describe('GrpcChannel leaving an endpoint that does not serve', () => {
  /** A member cut off from its leader: a watch stays open (until etcd ends it), every unary call is refused so. */
  async function leaderless() {
    const watches: http2.ServerHttp2Stream[] = [];
    const srv = http2.createServer();
    srv.on('stream', (stream, headers) => {
      if (headers[':path'] === '/etcdserverpb.Watch/Watch') {
        watches.push(stream);
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        return;
      }
      stream.on('data', () => undefined);
      stream.on('end', () => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'etcdserver: no leader' }, { endStream: true }));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    servers.push(srv);
    return { url: `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`, watches };
  }
  const noLeader = (e: GrpcStatusError) => /^etcdserver: no leader/.test(e.details);

  it("a status that says so (leaveOn): calls go to the next endpoint at once, and the watch open on the first ends with UNAVAILABLE naming both", async () => {
    const a = await leaderless();
    const b = await server(answerInPieces(Buffer.from('ok'), 100));
    const left: string[][] = [];
    const c = channel([a.url, b.url], new ManualClock(), noLeader, left);
    let ended: Error | null | undefined;
    const watch = c.stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: (e) => (ended = e) });
    watch.write(Buffer.from('create'));
    await until(() => a.watches.length === 1);
    await expect(c.unary('/etcdserverpb.KV/Range', Buffer.alloc(0), {}, 5000)).rejects.toMatchObject({ code: 14, details: 'etcdserver: no leader' });
    expect(c.endpoint).toBe(b.url);
    expect(left).toEqual([[a.url, b.url, 'etcdserver: no leader']]);
    await until(() => ended !== undefined);
    expect(ended).toMatchObject({ code: 14, details: `left ${a.url} for ${b.url}: etcdserver: no leader` });
    expect((await c.unary('/etcdserverpb.KV/Range', Buffer.alloc(0), {}, 5000)).toString()).toBe('ok');
    expect(b.calls).toHaveLength(1);
  });

  it('with one endpoint there is nowhere to go: it stays, and so does its watch', async () => {
    const a = await leaderless();
    const left: string[][] = [];
    const c = channel([a.url], new ManualClock(), noLeader, left);
    let ended: Error | null | undefined;
    const watch = c.stream('/etcdserverpb.Watch/Watch', {}, { onMessage: () => undefined, onEnd: (e) => (ended = e) });
    watch.write(Buffer.from('create'));
    await until(() => a.watches.length === 1);
    await expect(c.unary('/etcdserverpb.KV/Range', Buffer.alloc(0), {}, 5000)).rejects.toMatchObject({ code: 14 });
    await expect(c.unary('/etcdserverpb.KV/Range', Buffer.alloc(0), {}, 5000)).rejects.toMatchObject({ code: 14 });
    expect(c.endpoint).toBe(a.url);
    expect(left).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(ended).toBeUndefined();
    watch.cancel();
  });

  it(`${STALLS_TO_LEAVE} unary calls past their deadlines with none answered between: the next endpoint; an answer between clears the count`, async () => {
    // /slow is never answered (a member waiting for a quorum it lost); /fast is.
    const a = await server((stream, headers) => {
      if (headers[':path'] === '/x/Fast') answerInPieces(Buffer.from('a'), 100)(stream, headers, []);
    });
    const b = await server(answerInPieces(Buffer.from('b'), 100));
    const clock = new ManualClock();
    const c = channel([a.url, b.url], clock);
    const stall = async () => {
      const before = a.calls.length;
      const p = c.unary('/x/Slow', Buffer.alloc(0), {}, 1000).catch((x: unknown) => x);
      await until(() => a.calls.length === before + 1);
      clock.advance(1000);
      expect(await p).toMatchObject({ code: 4 });
    };
    await stall();
    expect(c.endpoint).toBe(a.url);
    expect((await c.unary('/x/Fast', Buffer.alloc(0), {}, 1000)).toString()).toBe('a'); // answered: the count starts again
    for (let i = 1; i < STALLS_TO_LEAVE; i++) {
      await stall();
      expect(c.endpoint).toBe(a.url);
    }
    await stall();
    expect(c.endpoint).toBe(b.url);
    expect((await c.unary('/x/Fast', Buffer.alloc(0), {}, 1000)).toString()).toBe('b');
  });
});
