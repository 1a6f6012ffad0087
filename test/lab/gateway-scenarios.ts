// vxedge against real kernel flannel peers (lab topology in scripts/labnet), the scenarios
// every build of the gateway must pass: test/lab/gateway.test.ts runs them with the host's
// node and this checkout (amd64), test/arm/arm64.test.ts and armv7.test.ts with the ARM
// .deb payload on the emulated ARM Node 20. Only the launcher differs.
//
//  pod1 -- aws1 [kernel flannel.1] --\                         /-- gw [vxedge flannel.1] -- host
//                                      inet -- nat (MASQUERADE + UDP 8472 forward)
//  pod2 -- aws2 [kernel flannel.1] --/       [mosquitto on 198.51.100.1 for the MQTT scenario]
//
// The AWS nodes' flannel.1 devices are created and programmed exactly as flannel does
// (VNI 1, port 8472, nolearning, neighbour + FDB + onlink route per peer, including the
// site), with tx checksum offload off on their underlay as a real NIC behaves.
//
// What leaves the gateway is read on the wire (tcpdump -w, parsed here): a UDP_SEGMENT send
// whose control message got lost on the way (as under a qemu-user that drops what it does
// not translate) would leave as one datagram of many frames, fragmented on a 1500-byte
// path, and the peer would keep only the first frame. The gateway checks that at start
// (udpCheckOffloads); one scenario loads test/arm/shim/drop-udp-cmsg.c into the gateway to
// make it happen and checks that the gateway fell back and said why, in its health.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Ajv } from 'ajv';
import { labDown, labUp, nsExec, nsRun, nsSpawn, ping, skipUnlessRoot, startCapture, tcpTransfer, waitExit, waitFor, waitForOutput, type LabEnv } from './harness.js';
import { startMosquitto, stopAllBrokers } from './mosquitto.js';
import { CLI, labConfig, startGateway, type GatewayLauncher, type GatewayOptions, type RunningGateway } from './vxedge.js';
import type { HealthDocument } from '../../src/health/document.js';

const FLOOD = path.join(import.meta.dirname, 'flood.mjs');
const SINK = path.join(import.meta.dirname, 'udp-sink.mjs');
const SHIM_SOURCE = path.join(import.meta.dirname, '..', 'arm', 'shim', 'drop-udp-cmsg.c');
const RAW_PING = path.join(import.meta.dirname, 'raw-ping.mjs');
const MB4 = 4 * 1024 * 1024;
/** A cold ARM launcher fetches Node and builds the packages first (test/lab/arm-launcher.ts). */
const PREPARE_TIMEOUT_MS = 10 * 60_000;

export interface ScenarioOptions {
  /** Namespace prefix of the lab, one per test file. */
  prefix: string;
  launcher: GatewayLauncher;
}

async function deviceAndRoutes(env: LabEnv): Promise<{ device: boolean; routes: string }> {
  const link = await nsExec(env.NS_GW, ['ip', 'link', 'show', 'dev', env.VTEP_DEV]);
  const routes = await nsRun(env.NS_GW, ['ip', '-4', 'route', 'show']);
  return { device: link.code === 0, routes };
}

/** One IPv4 packet of a capture: total length, fragment bits, protocol. */
interface WirePacket {
  len: number;
  moreFragments: boolean;
  fragOffset: number;
  proto: number;
}

/** The IPv4 headers of an Ethernet pcap file (tcpdump -w), in order. */
export function readPcapIpv4(file: string): WirePacket[] {
  const b = readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error(`${file}: not a little-endian pcap file`);
  if (b.readUInt32LE(20) !== 1) throw new Error(`${file}: not an Ethernet capture`);
  const out: WirePacket[] = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const incl = b.readUInt32LE(off + 8);
    const p = off + 16;
    off = p + incl;
    if (off > b.length || incl < 14 + 20 || b.readUInt16BE(p + 12) !== 0x0800) continue;
    const ip = p + 14;
    const frag = b.readUInt16BE(ip + 6);
    out.push({ len: b.readUInt16BE(ip + 2), moreFragments: (frag & 0x2000) !== 0, fragOffset: frag & 0x1fff, proto: b[ip + 9] });
  }
  return out;
}

/** Cross-compiles test/arm/shim/drop-udp-cmsg.c with `cc` into dir; returns the library. */
function buildDropCmsgShim(cc: string, dir: string): string {
  const lib = path.join(dir, 'drop-udp-cmsg.so');
  execFileSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror', '-o', lib, SHIM_SOURCE, '-ldl'], { stdio: 'pipe', timeout: 60_000 });
  return lib;
}

export function gatewayScenarios(o: ScenarioOptions): void {
  const { launcher } = o;
  const slow = launcher.slowdown;
  /** Throughput in the log, labelled: under an emulator it says nothing about a board. */
  const rate = (what: string, bytes: number, ms: number) =>
    console.log(
      `${launcher.name}: ${what} ${(bytes / 2 ** 20).toFixed(0)} MiB in ${ms.toFixed(0)} ms = ${(bytes / 2 ** 20 / (ms / 1000)).toFixed(1)} MiB/s` +
        (launcher.emulated ? ' (EMULATED: qemu-user on this x86-64 machine, not a performance figure)' : ''),
    );
  let env: LabEnv;
  let dir: string;
  beforeAll(async () => {
    await launcher.prepare();
    env = await labUp({ prefix: o.prefix });
    dir = mkdtempSync(path.join(tmpdir(), `vxedge-${o.prefix}-scenarios-`));
  }, PREPARE_TIMEOUT_MS);
  afterAll(async () => {
    await stopAllBrokers();
    await labDown(o.prefix);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const start = (x: GatewayOptions = {}) => startGateway(env, { launcher, ...x });
  /** A gateway of a describe block's own: started before its first test (with the options
   *  `opts` gives then) and cleaned up after its last. The block calls `gw()` for it. */
  function ownGateway(opts: () => GatewayOptions = () => ({})): () => RunningGateway {
    let gw: RunningGateway | undefined;
    beforeAll(async () => {
      gw = await start(opts());
      await gw.waitUp();
    });
    afterAll(async () => {
      await gw?.cleanup();
    });
    return () => gw!;
  }

  /**
   * Sends 4 MB host -> pod1 (the gateway encapsulates it) while capturing what the gateway
   * sends on its underlay; asserts it arrived intact and that every datagram that left fits
   * the underlay MTU unfragmented. Returns the number of packets seen.
   */
  async function transferOnTheWire(tag: string): Promise<number> {
    const file = path.join(dir, `${tag}.pcap`);
    // --print: a line per packet besides the file, to see the marker below arrive (tcpdump
    // decodes port 8472 as OTV, whose header is VXLAN's, and prints the inner packet too).
    const cap = startCapture(env.NS_GW, ['-n', '-i', env.GW_UNDERLAY_IF, '-s', '128', '-B', '8192', '--print', '-w', file,
      `src host ${env.GW_UNDERLAY_IP} and (udp port ${env.VXLAN_PORT} or (ip[6:2] & 0x3fff) != 0)`], { timeoutMs: 60_000 * slow });
    await cap.ready;
    const up = await tcpTransfer(env.NS_HOST, env.NS_POD1, env.POD1_IP, MB4, { timeoutMs: 20_000 * slow });
    // tcpdump may still be reading its ring when the transfer ends: stop it only once an echo
    // request sent after the transfer has come out of it.
    const marker = `${env.HOST_IP} > ${env.POD1_IP}: ICMP echo request`;
    expect((await ping(env.NS_HOST, env.POD1_IP, { count: 1 })).ok).toBe(true);
    await waitFor(() => cap.lines.some((l) => l.includes(marker)), 10_000 * slow);
    await cap.stop();
    expect(up.receivedBytes).toBe(MB4);
    expect(up.receivedSha256).toBe(up.sentSha256);
    rate(`${tag}: host -> pod1 (through the gateway's send path)`, MB4, up.ms);
    const pkts = readPcapIpv4(file);
    const biggest = Math.max(...pkts.map((p) => p.len));
    const fragments = pkts.filter((p) => p.moreFragments || p.fragOffset !== 0).length;
    console.log(`${launcher.name}: ${tag}: ${pkts.length} packets from the gateway, the largest ${biggest} bytes, ${fragments} fragments`);
    // 4 MB of TCP in 1450-byte frames is about 2,900 datagrams (a few may be missed by the capture).
    expect(pkts.length).toBeGreaterThan(2_000);
    expect(biggest).toBeLessThanOrEqual(env.UNDERLAY_MTU);
    expect(fragments).toBe(0);
    return pkts.length;
  }

  for (const mode of ['tun', 'tap'] as const) {
    describe(`${mode.toUpperCase()} mode`, () => {
      const gw = ownGateway(() => ({ mode }));

      it('pings both ways between the site host and pods on both AWS nodes', async () => {
        for (const [from, to] of [
          [env.NS_HOST, env.POD1_IP], [env.NS_HOST, env.POD2_IP],
          [env.NS_POD1, env.HOST_IP], [env.NS_POD2, env.HOST_IP],
          [env.NS_HOST, env.AWS1_VTEP_IP], [env.NS_POD1, env.GW_VTEP_IP],
        ]) {
          const r = await ping(from, to, { count: 3 });
          expect(r, `${from} -> ${to}`).toMatchObject({ ok: true, received: 3 });
        }
      });

      it('carries a 4 MB TCP transfer each way intact', async () => {
        const up = await tcpTransfer(env.NS_HOST, env.NS_POD1, env.POD1_IP, MB4, { timeoutMs: 20_000 * slow });
        expect(up.receivedBytes).toBe(MB4);
        expect(up.receivedSha256).toBe(up.sentSha256);
        const down = await tcpTransfer(env.NS_POD2, env.NS_HOST, env.HOST_IP, MB4, { timeoutMs: 20_000 * slow });
        expect(down.receivedBytes).toBe(MB4);
        expect(down.receivedSha256).toBe(down.sentSha256);
        rate(`${mode}: host -> pod1`, MB4, up.ms);
        rate(`${mode}: pod2 -> host`, MB4, down.ms);
      });

      it('sends only datagrams that fit the underlay MTU, unfragmented, under a 4 MB transfer', async () => {
        await transferOnTheWire(mode);
      });

      it('reports both peers up with RTT, zero loss and counters', async () => {
        const s = await gw().waitStatus((d) => d.peers.every((p) => p.rxPackets > 100 && p.lossPct === 0));
        expect(s.state).toBe('ok');
        expect(s.tunnel).toMatchObject({ device: env.VTEP_DEV, mode, vni: 1, mtu: 1450, vtepMac: env.GW_VTEP_MAC, queues: 8 });
        // overlay.queues (default 8), as the kernel has it: one ring per queue, all attached.
        const link = await nsRun(env.NS_GW, ['ip', '-d', 'link', 'show', 'dev', env.VTEP_DEV]);
        expect(link).toMatch(/ multi_queue numqueues 8 numdisabled 0 /);
        for (const p of s.peers) {
          expect(p.state).toBe('up');
          expect(p.rttMs).toBeGreaterThan(0);
          expect(p.reason).toBeNull();
        }
        expect(s.checks.every((c) => c.ok), JSON.stringify(s.checks)).toBe(true);
      });

      it('gave back its start-up pages once the modules were loaded and at READY, and forwards after', async () => {
        if (launcher.emulated) {
          // Under qemu-user /proc/self/smaps is the emulator's own and does not list what the
          // guest's /proc/self/maps does: nothing is given back, the log says so and why, once.
          const e = await gw().waitLog(/^gave back no start-up pages, and will not try again$/, { stage: 'loaded' });
          expect(e).toMatchObject({ level: 'info', skipped: expect.stringContaining('list different mappings') });
        } else {
          // Natively Node's binary at least (its code and read-only data) leaves the resident set.
          const loaded = await gw().waitLog(/^gave back start-up pages of mapped files$/, { stage: 'loaded' });
          const ready = await gw().waitLog(/^gave back start-up pages of mapped files$/, { stage: 'ready' });
          for (const e of [loaded, ready]) {
            expect(e.level).toBe('info');
            const [before, after] = String(e.rssMb).split(' -> ').map(Number);
            expect(e.mappings as number).toBeGreaterThanOrEqual(2);
            expect(e.residentMb as number).toBeGreaterThan(5);
            expect(after).toBeLessThan(before - 5);
          }
        }
        expect(gw().logEntries().filter((e) => e.level === 'warn' && /start-up pages/.test(e.msg))).toEqual([]);
        // The pages come back as the code runs: the data plane still carries traffic both ways.
        expect(await ping(env.NS_POD1, env.HOST_IP, { count: 2 })).toMatchObject({ ok: true, received: 2 });
        const s = await gw().waitStatus((d) => d.memory?.fileMb !== undefined);
        // (Under qemu-user /proc/self/status is the emulator's, not the guest's resident set.)
        if (!launcher.emulated) expect(Math.abs(s.memory!.anonMb! + s.memory!.fileMb! - s.memory!.rssMb)).toBeLessThan(4);
        // Emulated, READY (long past: status.json is written after it) tried nothing more.
        else expect(gw().logEntries().filter((e) => /start-up pages/.test(e.msg)).map((e) => e.stage)).toEqual(['loaded']);
      });

      it('checked UDP_SEGMENT and UDP_GRO at start, and reports the offloads it uses', async () => {
        // The start-up check saw both work (a layer that loses their control messages is the
        // scenario further down) ...
        await gw().waitLog(/^tunnel up$/, { udpCheck: { segment: 'ok', gro: 'ok' } });
        const s = await gw().waitStatus((d) => (d.offload?.counters?.gsoMessages ?? 0) > 0 || mode === 'tap');
        if (mode === 'tun') {
          // ... so the transfers above left through TSO and UDP_SEGMENT, and nothing fell back.
          expect(s.offload).toMatchObject({ tso: true, udpGro: true, reason: null });
          expect(s.offload!.counters).toMatchObject({ gsoOff: 0, gsoRefused: 0 });
          expect(s.offload!.counters!.tsoPackets).toBeGreaterThan(0);
        } else {
          expect(s.offload).toMatchObject({ tso: false, udpGro: false, reason: 'TAP mode has no offloads (TUN only)' });
        }
      });

      it('installs the kernel state flannel would', async () => {
        const routes = await nsRun(env.NS_GW, ['ip', '-4', 'route', 'show', 'dev', env.VTEP_DEV]);
        const addr = await nsRun(env.NS_GW, ['ip', '-4', 'addr', 'show', 'dev', env.VTEP_DEV]);
        expect(addr).toContain(`${env.GW_VTEP_IP}/32`);
        if (mode === 'tap') {
          expect(routes).toContain(`${env.AWS1_SUBNET} via ${env.AWS1_VTEP_IP} onlink`);
          const neigh = await nsRun(env.NS_GW, ['ip', 'neigh', 'show', 'dev', env.VTEP_DEV]);
          expect(neigh).toMatch(new RegExp(`${env.AWS1_VTEP_IP} lladdr ${env.AWS1_VTEP_MAC} PERMANENT`));
        } else {
          expect(routes).toContain(`${env.AWS1_SUBNET} scope link`);
        }
        // A queue of 2000 packets, not the TUN/TAP default of 500 that TCP bursts overflow.
        expect(await nsRun(env.NS_GW, ['ip', 'link', 'show', 'dev', env.VTEP_DEV])).toMatch(/ qlen 2000\b/);
      });

      if (mode === 'tap') it('puts back the peers\' permanent neighbours someone flushed, within seconds', async () => {
        // Without them the kernel asks for the peers' MACs by ARP, which nothing across the
        // tunnel answers: those peers were cut off until a restart.
        const neigh = () => nsRun(env.NS_GW, ['ip', 'neigh', 'show', 'dev', env.VTEP_DEV]);
        const entry = new RegExp(`${env.AWS1_VTEP_IP} lladdr ${env.AWS1_VTEP_MAC} PERMANENT`);
        expect(await neigh()).toMatch(entry);
        await nsRun(env.NS_GW, ['ip', 'neigh', 'flush', 'dev', env.VTEP_DEV, 'nud', 'permanent']);
        expect(await neigh()).not.toMatch(entry);
        // At the kernel's notice of the deletion (the periodic refresh is 30 s away).
        await waitFor(async () => entry.test(await neigh()), 8_000 * slow, 200);
        await gw().waitLog(/^put back peer neighbours that were deleted/); // logged after the kernel has it
        expect((await ping(env.NS_HOST, env.POD1_IP, { count: 3 })).ok).toBe(true);
      });

      it('sends its VXLAN datagrams with DF clear, as the kernel vxlan does', async () => {
        const cap = startCapture(env.NS_GW, ['-n', '-v', '-c', '3', '-i', env.GW_UNDERLAY_IF, 'udp and src port 8472'], { timeoutMs: 8_000 * slow });
        await cap.ready;
        expect((await ping(env.NS_HOST, env.POD1_IP, { count: 3 })).ok).toBe(true);
        // Only the outer headers: tcpdump also decodes the inner packet, whose DF is the sender's.
        const outer = (await cap.done).stdout.split('\n').filter((l) => /proto UDP \(17\)/.test(l));
        expect(outer.length).toBeGreaterThan(0);
        for (const l of outer) expect(l).toMatch(/flags \[none\]/);
      });
    });
  }

  describe('a syscall layer that loses the UDP control messages (as a qemu-user may)', () => {
    const gw = ownGateway(() => {
      const lib = buildDropCmsgShim(launcher.cc, dir);
      return { preload: { lib, env: { VXARM_DROP_CMSG: 'both' } } };
    });

    it('falls back to one datagram per segment and no GRO, says why in health, and still carries 4 MB intact', async () => {
      const warned = await gw().waitLog(/^UDP segmentation off/);
      expect(warned.reason).toMatch(/^UDP_SEGMENT ignored: 2 segments of 1000 bytes sent as one message arrived as one 2000-byte datagram/);
      await transferOnTheWire('lost-cmsg');
      const s = await gw().waitStatus((d) => (d.offload?.counters?.tsoPackets ?? 0) > 0);
      expect(s.state).toBe('ok');
      // TSO from the device stays (we cut the super-packets ourselves); UDP_SEGMENT and GRO are off, each with its reason.
      expect(s.offload).toMatchObject({ tso: true, udpGro: false });
      expect(s.offload!.reason).toMatch(/UDP_GRO not verified: checking it needs a working UDP_SEGMENT/);
      expect(s.offload!.reason).toMatch(/UDP_SEGMENT ignored: .* \(the control message was lost on the way to the kernel\)/);
      expect(s.offload!.counters).toMatchObject({ gsoOff: 1, gsoMessages: 0, groDatagrams: 0 });
    });
  });

  describe('untrusted input', () => {
    const gw = ownGateway();

    const flood = (ns: string, bind: string, kinds: string[], count: number) =>
      nsRun(ns, ['node', FLOOD, '--to', env.GW_PUBLIC_IP, '--bind', bind, '--kinds', kinds.join(','), '--count', String(count),
        '--gw-mac', env.GW_VTEP_MAC, '--peer-mac', env.AWS1_VTEP_MAC, '--src', env.POD1_IP, '--dst', env.HOST_IP], { timeoutMs: 30_000 });

    it('counts a flood of malformed datagrams as drops and keeps forwarding', async () => {
      const before = (await gw().status())!;
      const sink = nsSpawn(env.NS_HOST, ['node', SINK, env.HOST_IP, '9999', String(40 * slow)]);
      let sinkOut = '';
      sink.stdout!.on('data', (b: Buffer) => (sinkOut += b.toString()));
      await waitForOutput(sink, 'stderr', 'listening', 10_000);
      const pinging = ping(env.NS_HOST, env.POD1_IP, { count: 10, intervalMs: 200 });
      const bad = ['truncated', 'badFlags', 'reservedBits', 'wrongVni', 'foreignDstMac', 'foreignSrcMac', 'notIPv4', 'oversized', 'random', 'spoofed'];
      // From aws1's own address (as an attacker who can spoof it would), and from an address that is no peer.
      await flood(env.NS_AWS1, env.AWS1_UNDERLAY_IP, [...bad, 'good'], 200);
      await flood(env.NS_INET, env.INET_AWS_IP, ['good', 'random'], 200);
      expect((await pinging).ok).toBe(true);
      // The gateway has read both floods once the second one's frames are counted (one socket, in order) ...
      const after = await gw().waitStatus((s) => (s.drops.unknownSource ?? 0) - (before.drops.unknownSource ?? 0) >= 200);
      // ... and the sink has everything the gateway let through once a marker sent after them arrives.
      const seenMarker = waitForOutput(sink, 'stderr', 'seen marker', 10_000 * slow);
      await flood(env.NS_AWS1, env.AWS1_UNDERLAY_IP, ['marker'], 3);
      await seenMarker;
      sink.stdin!.end();
      await waitExit(sink, 10_000);
      const { marker, ...got } = JSON.parse(sinkOut.trim()) as Record<string, number>;
      expect(marker).toBeGreaterThan(0);
      // Only well-formed frames from the peer's address with a source in its subnet get through.
      expect(Object.keys(got)).toEqual(['good']);
      expect(got.good).toBeGreaterThanOrEqual(190); // from aws1 only; the 200 from inet were dropped
      expect(got.good).toBeLessThanOrEqual(200);
      const d = (k: string) => (after.drops[k] ?? 0) - (before.drops[k] ?? 0);
      console.log('drops during the flood', Object.fromEntries(Object.keys(after.drops).map((k) => [k, d(k)])));
      expect(d('short')).toBeGreaterThanOrEqual(190);
      expect(d('badFlags')).toBeGreaterThanOrEqual(190);
      expect(d('reservedBits')).toBeGreaterThanOrEqual(190);
      expect(d('wrongVni')).toBeGreaterThanOrEqual(190);
      expect(d('notForUs')).toBeGreaterThanOrEqual(190);
      expect(d('foreignMac')).toBeGreaterThanOrEqual(190);
      expect(d('notIPv4')).toBeGreaterThanOrEqual(190);
      expect(d('oversize')).toBeGreaterThanOrEqual(190);
      expect(d('spoofedSource')).toBeGreaterThanOrEqual(190);
      expect(gw().child.exitCode).toBeNull();
      expect(after.peers.every((p) => p.state === 'up')).toBe(true);
    });
  });

  describe('what the kernel drops before the gateway reads it', () => {
    const gw = ownGateway();

    /** UDP datagrams from a namespace, all of one flow, as fast as Node sends them. */
    const blast = (ns: string, to: string, count: number) =>
      nsRun(ns, ['node', '-e', `
        const s = require('node:dgram').createSocket('udp4');
        const b = Buffer.alloc(32, 7);
        let left = ${count};
        for (let i = 0; i < ${count}; i++) s.send(b, 9, '${to}', () => { if (--left === 0) s.close(); });`], { timeoutMs: 60_000 * slow });
    /** The kernel's own counts in the gateway's namespace: the device's transmit drops (its
     *  queue towards the gateway) and the drops of the sockets on the tunnel port. */
    const kernelCounts = async (dev: string) => {
      const link = JSON.parse(await nsRun(env.NS_GW, ['ip', '-s', '-j', 'link', 'show', 'dev', dev])) as { stats64: { tx: { dropped: number } } }[];
      const ss = await nsRun(env.NS_GW, ['ss', '-uanmH', `sport = :${env.VXLAN_PORT}`]);
      const sockets = [...ss.matchAll(/skmem:\([^)]*\bd(\d+)\)/g)].map((m) => Number(m[1]));
      return { device: link[0].stats64.tx.dropped, underlay: sockets.reduce((a, b) => a + b, 0), sockets: sockets.length };
    };

    it("counts the device queue's and the tunnel sockets' overflows while it was stopped as deviceQueue and underlayReceive, exactly as the kernel does", async () => {
      const before = (await gw().status())!;
      const dev = before.tunnel.device;
      const k0 = await kernelCounts(dev);
      expect(k0.sockets).toBeGreaterThan(0);
      gw().child.kill('SIGSTOP');
      let k1: Awaited<ReturnType<typeof kernelCounts>>;
      try {
        // One flow each way: 4 000 datagrams into one device queue of 2 000, and 30 000 into one
        // tunnel socket (8 MiB of receive buffer, about 1 KiB of it per small datagram).
        await blast(env.NS_HOST, env.POD1_IP, 4_000);
        await blast(env.NS_POD1, env.HOST_IP, 30_000);
        // The namespaces between deliver within the senders' calls; wait until nothing moves.
        let last = '';
        k1 = await waitFor(async () => {
          const k = await kernelCounts(dev);
          const same = JSON.stringify(k) === last;
          last = JSON.stringify(k);
          return same ? k : null;
        }, 10_000 * slow, 200);
      } finally {
        gw().child.kill('SIGCONT');
      }
      const device = k1.device - k0.device;
      const underlay = k1.underlay - k0.underlay;
      console.log('kernel drops while the gateway was stopped', { device, underlay });
      expect(device).toBeGreaterThanOrEqual(1_000);
      // qemu-user does not translate SO_MEMINFO: an emulated gateway cannot read its sockets' drops.
      if (!launcher.emulated) expect(underlay).toBeGreaterThanOrEqual(1_000);
      // Until the gateway has drained its socket, what arrives there (a keepalive's answer) is
      // dropped too: compare with the kernel's counts as they are when the document is read.
      const d = (s: HealthDocument, k: string) => (s.drops[k] ?? 0) - (before.drops[k] ?? 0);
      let seen: { s: HealthDocument; k: Awaited<ReturnType<typeof kernelCounts>> } | null = null;
      const agreed = await waitFor(async () => {
        const now = { s: (await gw().status())!, k: await kernelCounts(dev) };
        seen = now;
        const same = d(now.s, 'deviceQueue') === now.k.device - k0.device && d(now.s, 'underlayReceive') === (launcher.emulated ? 0 : now.k.underlay - k0.underlay);
        return same ? now : null;
      }, 10_000 * slow, 200).catch(() => seen!);
      expect(d(agreed.s, 'deviceQueue')).toBe(agreed.k.device - k0.device);
      expect(d(agreed.s, 'underlayReceive')).toBe(launcher.emulated ? 0 : agreed.k.underlay - k0.underlay);
      expect(agreed.k.device - k0.device).toBe(device); // nothing more found the device's queue full
      // And it still forwards.
      expect((await ping(env.NS_HOST, env.POD1_IP, { count: 2, intervalMs: 100 })).ok).toBe(true);
    });
  });

  it('its raw-socket addon (the ICMP echo that explains a silent peer) answers from a peer over the underlay', async () => {
    const out = await nsRun(env.NS_GW, launcher.nodeArgv([RAW_PING, launcher.appDir, env.AWS1_PUBLIC_IP]), { timeoutMs: 15_000 * slow });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { arch: string; addon: string; reply: string | null };
    expect(r).toMatchObject({ arch: launcher.arch, reply: env.AWS1_PUBLIC_IP });
    expect(r.addon.startsWith(launcher.appDir)).toBe(true);
  });

  describe.skipIf(skipUnlessRoot(['mosquitto', 'mosquitto_sub']))('health over MQTT (a real mosquitto)', () => {
    const STATUS = 'vxedge/lab/edge-1/status';
    const HEALTH = 'vxedge/lab/edge-1/health';
    let gw: RunningGateway | undefined;
    afterAll(async () => {
      await gw?.cleanup();
      await stopAllBrokers();
    });

    it('keeps a retained online and a schema-valid health document with state ok on the broker', async () => {
      const schema = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', '..', 'src', 'health', 'health.schema.json'), 'utf8')) as object;
      const validate = new Ajv({ allErrors: true, strict: true, validateFormats: false }).compile(schema);
      // The broker on the lab's "internet": the gateway reaches it through the site NAT.
      const b = await startMosquitto({ ns: env.NS_INET, address: env.INET_WAN_IP, port: 1883, dir });
      gw = await start({ extra: { mqtt: { url: `mqtt://${env.INET_WAN_IP}:1883`, interval: '5s' } } });
      await gw.waitUp();
      expect(await b.waitRetained(STATUS, (m) => m === 'online', 10_000 * slow)).toBe('online');
      const doc = JSON.parse(await b.waitRetained(HEALTH, (m) => (JSON.parse(m) as HealthDocument).state === 'ok', 15_000 * slow)) as HealthDocument;
      expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
      expect(doc).toMatchObject({ site: 'lab', node: 'edge-1', state: 'ok', tunnel: { device: env.VTEP_DEV, vni: 1, mtu: 1450 } });
      expect(doc.peers.map((p) => [p.name, p.state])).toEqual([['aws-1', 'up'], ['aws-2', 'up']]);
      expect(doc.mqtt).toMatchObject({ enabled: true, connected: true });
      expect(doc.offload).toMatchObject({ tso: true, udpGro: true, reason: null });
      expect(await gw.stop('SIGTERM')).toBe(0);
      expect(await b.retained(STATUS)).toBe('offline');
    });
  });

  describe('lifecycle', () => {
    // Every gateway a test starts is gone before the next test, even when an assertion failed.
    const started: RunningGateway[] = [];
    const startTracked = async (x: GatewayOptions = {}) => {
      const g = await start(x);
      started.push(g);
      return g;
    };
    afterEach(async () => {
      for (const g of started.splice(0)) await g.cleanup();
    });

    it('SIGHUP applies a new peer list without a restart, and forwarding goes on', async () => {
      const gw = await startTracked();
      await gw.waitUp();
      const all = labConfig(env, gw.dir);
      const write = (c: Record<string, unknown>) => writeFileSync(gw.configFile, JSON.stringify(c, null, 2));
      write({ ...all, peers: (all.peers as Array<{ name: string }>).filter((p) => p.name !== 'aws-2') });
      gw.child.kill('SIGHUP');
      const reloaded = await gw.waitLog(/^reloaded$/);
      expect(reloaded.removed).toEqual(['aws-2']);
      await waitFor(async () => !(await nsRun(env.NS_GW, ['ip', '-4', 'route', 'show', 'dev', env.VTEP_DEV])).includes(env.AWS2_SUBNET), 5_000 * slow);
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      const one = await gw.waitStatus((d) => d.reload !== undefined && d.peers.length === 1);
      expect(one.peers.map((p) => p.name)).toEqual(['aws-1']);
      expect(one.reload!.applied).toContain('peers');
      // And back: aws-2 comes up again, without a restart.
      write(all);
      gw.child.kill('SIGHUP');
      await gw.waitLog(/^reloaded$/, { added: ['aws-2'] });
      await gw.waitStatus((d) => d.peers.length === 2 && d.peers.every((p) => p.state === 'up'), 20_000 * slow);
      expect((await ping(env.NS_HOST, env.POD2_IP)).ok).toBe(true);
      expect(gw.child.exitCode).toBeNull();
    });

    it('SIGTERM leaves no device or route behind and exits 0', async () => {
      const gw = await startTracked();
      await gw.waitUp();
      expect((await deviceAndRoutes(env)).device).toBe(true);
      const code = await gw.stop('SIGTERM');
      expect(code).toBe(0);
      const after = await deviceAndRoutes(env);
      expect(after.device).toBe(false);
      expect(after.routes).not.toContain('10.244.1.0/24');
      expect(after.routes).not.toContain('10.244.2.0/24');
      expect(gw.output).toContain('gateway stopped');
    });

    it('a second instance fails cleanly without disturbing the running one', async () => {
      const gw = await startTracked();
      await gw.waitUp();
      // Same port: refused at bind. Other port, same device: refused as "in use".
      const same = await startTracked();
      expect(await waitExit(same.child, 10_000 * slow)).toBe(1);
      expect(same.output).toContain('address already in use');
      const other = await startTracked({ extra: { underlay: { publicIp: env.GW_PUBLIC_IP, port: 8473 } } });
      expect(await waitExit(other.child, 10_000 * slow)).toBe(1);
      expect(other.output).toContain('is in use by another process');
      for (const g of [same, other]) expect(g.output).not.toMatch(/\n\s+at /);
      // `vxedge check` of the running gateway's own config (before a reload, say) passes the
      // device and port it holds; of another config (another runDir), both fail as busy.
      const mine = await nsExec(env.NS_GW, ['node', CLI, 'check', '-c', gw.configFile], { timeoutMs: 20_000 * slow });
      expect(mine.code, mine.stdout).toBe(0);
      expect(mine.stdout).toMatch(/^ok +device +\S+ is held by this config's running gateway \(pid \d+\)$/m);
      expect(mine.stdout).toMatch(/^ok +port +udp \S+ is held by this config's running gateway \(pid \d+\)$/m);
      const theirs = await nsExec(env.NS_GW, ['node', CLI, 'check', '-c', same.configFile], { timeoutMs: 20_000 * slow });
      expect(theirs.code, theirs.stdout).toBe(1);
      expect(theirs.stdout).toMatch(/^FAIL +device +device \S+ is in use by another process/m);
      expect(theirs.stdout).toMatch(/^FAIL +port +udp \S+ is in use$/m);
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      expect(gw.child.exitCode).toBeNull();
      expect(await gw.stop()).toBe(0);
    });

    it('replaces a leftover device after a crash', async () => {
      // A persistent TUN with our name, as a crashed run (or a hand-made test) could leave.
      await nsRun(env.NS_GW, ['ip', 'tuntap', 'add', 'dev', env.VTEP_DEV, 'mode', 'tun']);
      await nsRun(env.NS_GW, ['ip', 'link', 'set', 'dev', env.VTEP_DEV, 'up']);
      await nsRun(env.NS_GW, ['ip', 'route', 'add', env.AWS1_SUBNET, 'dev', env.VTEP_DEV]);
      const gw = await startTracked();
      await gw.waitUp();
      expect(gw.output).toContain('replacing existing device');
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      gw.child.kill('SIGKILL');
      await waitExit(gw.child, 5_000);
      // A non-persistent device dies with its process, and its routes with it.
      await waitFor(async () => !(await deviceAndRoutes(env)).device, 5_000);
      expect((await deviceAndRoutes(env)).routes).not.toContain(env.AWS1_SUBNET);
    });

    it('exits 1 when its device is deleted under it, saying why; a fresh start forwards again', async () => {
      // It lived on, forwarding nothing, until a watchdog killed it, and only systemd has one.
      const gw = await startTracked();
      await gw.waitUp();
      await nsRun(env.NS_GW, ['ip', 'link', 'del', 'dev', env.VTEP_DEV]);
      expect(await waitExit(gw.child, 15_000 * slow)).toBe(1);
      expect(gw.output).toMatch(/data plane stopped: device poll failed: [^"]*; stopping so that the service manager starts a fresh gateway \(exit 1\)/);
      expect(gw.output).not.toMatch(/\n\s+at /);
      const again = await startTracked();
      await again.waitUp();
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      expect(await again.stop()).toBe(0);
    });

    it('puts back a peer route someone deleted (a network manager that removes foreign routes), and its device set down, within seconds; sees its uplink lose its carrier', async () => {
      // The tunnel carried nothing to that peer until a restart.
      const gw = await startTracked();
      await gw.waitUp();
      await nsRun(env.NS_GW, ['ip', 'route', 'del', env.AWS1_SUBNET, 'dev', env.VTEP_DEV]);
      expect((await deviceAndRoutes(env)).routes).not.toContain(env.AWS1_SUBNET);
      // The kernel's notice of the deletion asks for a check refresh at once. The periodic
      // one (every 30 s, the first 30 s after start) is well past these deadlines.
      const REPAIRED_WITHIN = 8_000 * slow;
      await waitFor(async () => (await deviceAndRoutes(env)).routes.includes(`${env.AWS1_SUBNET} dev ${env.VTEP_DEV}`), REPAIRED_WITHIN, 200);
      await gw.waitLog(/^put back peer routes that were deleted/); // logged after the kernel has it
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      // The device set down: the kernel drops every route through it; both come back.
      await nsRun(env.NS_GW, ['ip', 'link', 'set', 'dev', env.VTEP_DEV, 'down']);
      expect((await deviceAndRoutes(env)).routes).not.toContain(env.AWS1_SUBNET);
      await waitFor(async () => {
        const r = (await deviceAndRoutes(env)).routes;
        return r.includes(`${env.AWS1_SUBNET} dev ${env.VTEP_DEV}`) && r.includes(`${env.AWS2_SUBNET} dev ${env.VTEP_DEV}`);
      }, REPAIRED_WITHIN, 200);
      await gw.waitLog(/^set the tunnel device up again: something set it down$/);
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      // The uplink loses its carrier (the router's port goes down): the underlay check says so
      // within seconds, and passes again once the link is back.
      const underlay = (d: HealthDocument) => d.checks.find((c) => c.name === 'underlay');
      await nsRun(env.NS_NAT, ['ip', 'link', 'set', 'dev', env.NAT_LAN_IF, 'down']);
      try {
        const lost = await gw.waitStatus((d) => underlay(d)?.ok === false, REPAIRED_WITHIN);
        expect(underlay(lost)?.detail).toBe(`${env.GW_UNDERLAY_IF} has no carrier (no link to the switch or router): nothing reaches the peers`);
      } finally {
        await nsRun(env.NS_NAT, ['ip', 'link', 'set', 'dev', env.NAT_LAN_IF, 'up']);
      }
      await gw.waitStatus((d) => underlay(d)?.ok === true, REPAIRED_WITHIN);
      // A router that restarts takes its port down too: the port mapping (which this lab's
      // router refuses) is tried again at once, not at its next retry.
      await gw.waitLog(/^trying the port mapping again now$/, { why: 'the uplink is back' });
      expect(await gw.stop()).toBe(0);
    }, 150_000 * slow);

    it('exits 1 for a fresh start when DHCP renumbers its underlay NIC (its sockets are bound to the old address)', async () => {
      // It forwarded nothing, every check but one passing, until someone restarted it by hand.
      const gw = await startTracked();
      await gw.waitUp();
      const dev = env.GW_UNDERLAY_IF;
      const moved = env.GW_UNDERLAY_IP.replace(/\.\d+$/, '.77');
      // A renewal that hands out another address: the new one first, then the old one goes
      // (promote_secondaries, as DHCP clients leave the new one primary).
      await nsRun(env.NS_GW, ['sysctl', '-qw', `net.ipv4.conf.${dev}.promote_secondaries=1`]);
      await nsRun(env.NS_GW, ['ip', 'addr', 'add', `${moved}/24`, 'dev', dev]);
      try {
        await nsRun(env.NS_GW, ['ip', 'addr', 'del', `${env.GW_UNDERLAY_IP}/24`, 'dev', dev]);
        // The kernel's notice of the address change asks for a check refresh at once (the
        // periodic one comes 30 s after start).
        expect(await waitExit(gw.child, 8_000 * slow)).toBe(1);
        expect(gw.output).toContain(`the underlay address ${env.GW_UNDERLAY_IP} the tunnel sockets are bound to is gone, and the NIC now has ${moved} (DHCP renumbering?): a fresh start binds the new one; stopping so that the service manager starts a fresh gateway (exit 1)`);
        expect(gw.output).not.toMatch(/\n\s+at /);
      } finally {
        await nsRun(env.NS_GW, ['ip', 'addr', 'replace', `${env.GW_UNDERLAY_IP}/24`, 'dev', dev]);
        await nsRun(env.NS_GW, ['ip', 'addr', 'del', `${moved}/24`, 'dev', dev]).catch(() => undefined);
        await nsRun(env.NS_GW, ['ip', 'route', 'replace', 'default', 'via', env.NAT_LAN_IP, 'dev', dev]);
      }
      const again = await startTracked();
      await again.waitUp();
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      expect(await again.stop()).toBe(0);
    }, 90_000 * slow);

    it('refuses, and leaves alone, an interface of another kind that has its device name', async () => {
      // The site's own bridge, given overlay.device's name by mistake: removing it could cut
      // the box off its network.
      await nsRun(env.NS_GW, ['ip', 'link', 'add', 'dev', env.VTEP_DEV, 'type', 'bridge']);
      await nsRun(env.NS_GW, ['ip', 'addr', 'add', '192.168.77.1/24', 'dev', env.VTEP_DEV]);
      try {
        const gw = await startTracked();
        expect(await waitExit(gw.child, 10_000 * slow)).toBe(1);
        expect(gw.output).toContain(`overlay.device ${env.VTEP_DEV} names an existing bridge device`);
        expect(gw.output).not.toMatch(/\n\s+at /);
        const left = JSON.parse(await nsRun(env.NS_GW, ['ip', '-j', '-d', 'addr', 'show', 'dev', env.VTEP_DEV])) as { linkinfo?: { info_kind?: string }; addr_info: { local: string }[] }[];
        expect(left[0]?.linkinfo?.info_kind).toBe('bridge');
        expect(left[0]?.addr_info.map((a) => a.local)).toContain('192.168.77.1');
        // `vxedge check` says the same before a start is tried.
        const check = await nsExec(env.NS_GW, ['node', CLI, 'check', '-c', gw.configFile], { timeoutMs: 20_000 * slow });
        expect(check.code).toBe(1);
        expect(check.stdout).toMatch(new RegExp(`^FAIL +device +overlay\\.device ${env.VTEP_DEV.replace('.', '\\.')} names an existing bridge device`, 'm'));
      } finally {
        await nsRun(env.NS_GW, ['ip', 'link', 'del', 'dev', env.VTEP_DEV]);
      }
    });
  });
}
