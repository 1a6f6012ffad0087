// Driver for test/lab/etcd.test.ts. The test process lives in the root namespace and etcd in a
// namespace of its own, so the production etcd adapter and EtcdSource (compiled, dist/) run
// here, in a child started inside that namespace (`ip netns exec NS node etcd-child.mjs ...`).
//
//   node etcd-child.mjs follow '<options JSON>'   runs an EtcdSource; prints one JSON line per view
//                                                 ({"type":"view"}) and per status change
//                                                 ({"type":"status"}); reads commands on stdin, one
//                                                 JSON object a line: {"cmd":"setOwnLease","lease":{...}},
//                                                 {"cmd":"clockStepped"} (what the gateway calls when
//                                                 the wall clock was set), {"cmd":"stop"} (prints
//                                                 {"type":"stopped"} and exits 0)
//   node etcd-child.mjs bench '<options JSON>'    writes options.leases flannel leases with the etcd3
//                                                 client, then times start -> first view and one change
//                                                 -> view; prints one JSON line
//   node etcd-child.mjs fill '<options JSON>'     puts the keys and values of the JSON file options.file
//                                                 ([{key, value}], flanneld's leases) with the etcd3
//                                                 client, 50 at a time; prints {"type":"filled"}
//   node etcd-child.mjs contract '<options JSON>' the adapter's behaviour (cluster/etcd-grpc-kv.js) that
//                                                 the unit tests' fake copies; prints one JSON line
//   node etcd-child.mjs rss                       whether importing the source or its adapter loads gRPC
//                                                 (neither may), and RSS and live heap before and after
//                                                 importing the adapter
//   node etcd-child.mjs probe '<options JSON>'    reads options.endpoint's certificate options.times
//                                                 times in turn with the certificate reader's handshake
//                                                 (util/tls-probe.js); prints {"type":"probed","read":N}
//
// Lines of the source's own log are JSON too but carry "level" instead of "type". Every run is
// bounded: a watchdog prints {"type":"error","error":"timeout"} and exits 3 (default after 60 s).
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { dist, guard, out } from './child-io.mjs';

const mode = process.argv[2];
const opts = process.argv[3] ? JSON.parse(process.argv[3]) : {};
guard(opts.lifetimeMs);

const { parseCidr } = await import(new URL('util/ipv4.js', dist));
const { systemClock } = await import(new URL('util/clock.js', dist));
const { Logger } = await import(new URL('util/log.js', dist));

function viewJson(v) {
  return {
    nodes: v.nodes,
    peers: v.peers.map((p) => ({ name: p.name, publicIp: p.publicIp, port: p.port, subnet: p.subnet.text, vtepMac: p.vtepMac })),
    skipped: v.skipped,
  };
}

async function makeSource() {
  const { EtcdSource } = await import(new URL('cluster/etcd.js', dist));
  return new EtcdSource({
    endpoints: opts.endpoints,
    prefix: opts.prefix ?? '/coreos.com/network',
    tls: opts.tls,
    auth: opts.auth,
    network: parseCidr(opts.network ?? '10.244.0.0/16'),
    subnet: parseCidr(opts.subnet ?? '10.244.100.0/24'),
    vni: opts.vni ?? 1,
    port: opts.port ?? 8472,
    register: opts.register ?? false,
    leaseTtlS: opts.leaseTtlS,
    renewMarginS: opts.renewMarginS,
    backoff: opts.backoff ?? { initialMs: 200, maxMs: 1_000 },
    callTimeoutMs: opts.callTimeoutMs,
    clock: systemClock,
    log: new Logger(opts.logLevel ?? 'info', true),
  });
}

function ownLease(l) {
  return { name: l.name ?? 'site', subnet: parseCidr(l.subnet), vni: l.vni ?? 1, vtepMac: l.vtepMac, publicIp: l.publicIp ?? null };
}

async function follow() {
  const src = await makeSource();
  let seq = 0;
  src.onView((v) => out({ type: 'view', seq: ++seq, view: viewJson(v) }));
  let last = '';
  let lastCerts = '[]';
  const poll = setInterval(() => {
    const s = JSON.stringify(src.status());
    if (s !== last) {
      last = s;
      out({ type: 'status', status: JSON.parse(s) });
    }
    const c = JSON.stringify(src.serverCertificates());
    if (c !== lastCerts) {
      lastCerts = c;
      out({ type: 'certs', certs: JSON.parse(c) });
    }
  }, 50);
  if (opts.own) src.setOwnLease(ownLease(opts.own));
  src.start();
  const rl = createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    let c;
    try {
      c = JSON.parse(line);
    } catch {
      return out({ type: 'error', error: `not a command: ${line}` });
    }
    if (c.cmd === 'setOwnLease') src.setOwnLease(ownLease(c.lease));
    if (c.cmd === 'clockStepped') src.clockStepped();
    if (c.cmd === 'stop') {
      await src.stop();
      clearInterval(poll);
      out({ type: 'stopped' });
      process.exit(0);
    }
  });
}

/** Puts every {key, value}, 50 requests at a time. */
async function putAll(client, kvs) {
  for (let i = 0; i < kvs.length; i += 50) await Promise.all(kvs.slice(i, i + 50).map((l) => client.put(l.key).value(l.value)));
}

async function fill() {
  const { readFileSync } = await import('node:fs');
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({ hosts: opts.endpoints });
  await putAll(client, JSON.parse(readFileSync(opts.file, 'utf8')));
  client.close();
  out({ type: 'filled' });
  process.exit(0);
}

async function bench() {
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({ hosts: opts.endpoints });
  const prefix = opts.prefix ?? '/coreos.com/network';
  await client.put(`${prefix}/config`).value('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  const lease = (i) => ({
    // /27s in 10.244.128.0/17, clear of the site's 10.244.100.0/24
    key: `${prefix}/subnets/10.244.${128 + (i >> 3)}.${(i & 7) * 32}-27`,
    value: JSON.stringify({ PublicIP: `203.0.${i >> 8}.${(i & 255) || 1}`, PublicIPv6: null, BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: `0e:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` } }),
  });
  const n = opts.leases;
  await putAll(client, Array.from({ length: n }, (_, i) => lease(i)));
  const rssBefore = process.memoryUsage().rss;
  const src = await makeSource();
  const views = [];
  let resolveView;
  src.onView((v) => {
    views.push({ at: performance.now(), peers: v.peers.length });
    resolveView?.();
  });
  const nextView = () => new Promise((r) => (resolveView = r));
  const t0 = performance.now();
  let p = nextView();
  src.start();
  await p;
  const firstViewMs = performance.now() - t0;
  p = nextView();
  const t1 = performance.now();
  const extra = lease(n);
  await client.put(extra.key).value(extra.value);
  await p;
  const changeMs = performance.now() - t1;
  const rssAfter = process.memoryUsage().rss;
  await src.stop();
  client.close();
  out({ type: 'bench', leases: n, firstViewMs, firstViewPeers: views[0].peers, changeMs, changePeers: views[1].peers, rssBefore, rssAfter });
  process.exit(0);
}

/** Resolves once cond() holds, or when timeoutMs has passed (the caller reports what it got). */
async function until(cond, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!cond() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
}

/**
 * The adapter's contract, the one the in-memory fake of the unit tests copies: compare-and-put
 * (absent, by mod revision, lost), a put on a lease etcd does not know, asking whether a key
 * may be written (it writes nothing), keepalive of a revoked lease, watch events (put, delete, in order), and a watch from a compacted revision.
 */
async function contract() {
  const { connectEtcdGrpc } = await import(new URL('cluster/etcd-grpc-kv.js', dist));
  const kv = await connectEtcdGrpc({ endpoints: opts.endpoints, clock: systemClock, callTimeoutMs: 5_000 });
  const p = opts.prefix;
  const r = {};
  const lease = await kv.grant(30);
  r.grantTtl = lease.ttlS;
  r.putAbsent = await kv.putIf(`${p}/a`, 'v1', lease.id, 0n);
  r.putAbsentAgain = await kv.putIf(`${p}/a`, 'v2', lease.id, 0n);
  r.putByRevision = await kv.putIf(`${p}/a`, 'v3', lease.id, r.putAbsent.revision);
  r.putStaleRevision = await kv.putIf(`${p}/a`, 'v4', lease.id, r.putAbsent.revision);
  r.got = await kv.get(`${p}/a`);
  r.badLease = await kv.putIf(`${p}/b`, 'x', 12345n, 0n).then(() => 'ok', (e) => e.kind);
  const beforeAsking = await kv.range(`${p}/`);
  r.mayPutExisting = await kv.mayPut(`${p}/a`);
  r.mayPutAbsent = await kv.mayPut(`${p}/z`);
  const afterAsking = await kv.range(`${p}/`);
  r.mayPutWrote = afterAsking.revision !== beforeAsking.revision || JSON.stringify(afterAsking.entries, (_k, v) => (typeof v === 'bigint' ? String(v) : v)) !== JSON.stringify(beforeAsking.entries, (_k, v) => (typeof v === 'bigint' ? String(v) : v));
  const events = [];
  let started = false;
  const from = (await kv.range(`${p}/`)).revision + 1n;
  const w = kv.watch(`${p}/`, from, {
    onStarted: () => (started = true),
    onEvents: (evs) => events.push(...evs),
    onCompacted: () => events.push('compacted?'),
    onError: (e) => events.push(`error ${e.kind}`),
  });
  // Conditions with a deadline, not sleeps: the watch has started, then both events (the put
  // of c, the delete of a by the revoke) have arrived, or something else did (an error, a
  // compaction, a third event). Whatever is there at the deadline goes to the test.
  await until(() => started || events.length > 0, 10_000);
  await kv.putIf(`${p}/c`, 'vc', 0n, 0n);
  r.leaseKeys = await kv.leaseKeys(lease.id);
  const empty = await kv.grant(30);
  r.emptyLeaseKeys = await kv.leaseKeys(empty.id);
  await kv.revoke(empty.id);
  await kv.revoke(lease.id); // deletes a
  r.keepAliveRevoked = await kv.keepAliveOnce(lease.id);
  r.revokedLeaseKeys = await kv.leaseKeys(lease.id);
  await until(() => events.length >= 2, 10_000);
  w.cancel();
  r.watchStarted = started;
  r.events = events.map((e) => (typeof e === 'string' ? e : { type: e.type, key: e.key, value: e.value, lease: String(e.lease), modRevision: String(e.modRevision) }));
  const { Etcd3 } = await import('etcd3');
  const raw = new Etcd3({ hosts: opts.endpoints });
  const head = (await kv.range(`${p}/`)).revision;
  await raw.kv.compact({ revision: String(head) });
  raw.close();
  r.compacted = await new Promise((res) => {
    const w2 = kv.watch(`${p}/`, 2n, {
      onStarted: () => undefined,
      onEvents: () => res('events'),
      onCompacted: (rev) => res(`compacted at ${rev === head}`),
      onError: (e) => res(`error ${e.kind}: ${e.message}`),
    });
    setTimeout(() => {
      w2.cancel();
      res('nothing');
    }, 3_000);
  });
  await kv.close();
  out({ type: 'contract', ...JSON.parse(JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? String(v) : v))) });
  process.exit(0);
}

async function rss() {
  // Neither the source module nor its adapter may load gRPC: the adapter speaks etcd's JSON API.
  const cache = createRequire(import.meta.url).cache;
  const grpcLoaded = () => Object.keys(cache).some((k) => k.includes('/@grpc/grpc-js/') || k.includes('/node_modules/etcd3/'));
  await import(new URL('cluster/etcd.js', dist));
  const loadedWithSource = grpcLoaded();
  global.gc?.();
  const before = process.memoryUsage();
  await import(new URL('cluster/etcd-grpc-kv.js', dist));
  global.gc?.();
  const after = process.memoryUsage();
  out({
    type: 'rss', loadedWithSource, loadedWithAdapter: grpcLoaded(), before: before.rss, after: after.rss,
    deltaMiB: (after.rss - before.rss) / 1048576, heapDeltaMiB: (after.heapUsed - before.heapUsed) / 1048576,
  });
  process.exit(0);
}

async function probe() {
  const { readFileSync } = await import('node:fs');
  const { probePeerCertificate } = await import(new URL('util/tls-probe.js', dist));
  const u = new URL(opts.endpoint);
  const file = (f) => (f ? readFileSync(f) : undefined);
  let read = 0;
  for (let i = 0; i < (opts.times ?? 1); i++) {
    const v = await probePeerCertificate({
      host: u.hostname, port: Number(u.port), ca: file(opts.tls?.ca), cert: file(opts.tls?.cert), key: file(opts.tls?.key), alpn: ['h2'],
      clock: systemClock, timeoutMs: 5_000,
    });
    if (v) read++;
  }
  out({ type: 'probed', read });
  process.exit(0);
}

if (mode === 'follow') await follow();
else if (mode === 'probe') await probe();
else if (mode === 'bench') await bench();
else if (mode === 'fill') await fill();
else if (mode === 'rss') await rss();
else if (mode === 'contract') await contract();
else {
  out({ type: 'error', error: `unknown mode ${mode}` });
  process.exit(2);
}
