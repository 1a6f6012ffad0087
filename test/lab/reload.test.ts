// SIGHUP reloads against the real lab (scripts/labnet), as systemd's ExecReload does:
//
//  pod1 -- aws1 [kernel flannel.1] --\                         /-- gw [vxedge, reloaded] -- host
//                                      inet -- nat (MASQUERADE + UDP 8472 forward)
//  pod2 -- aws2 [kernel flannel.1] --/
//
// A continuous ping host -> pod1 loses nothing while a reload removes aws-2; an invalid
// file is refused and the running config kept; putting aws-2 back brings it up again.
// vxedge runs as under systemd: NOTIFY_SOCKET points at a receiver here (READY=1,
// RELOADING=1, STATUS=, WATCHDOG=1, STOPPING=1 are checked) and board.led at a fake LED.
//
// A reload of other keys: keepalive.interval/timeout and overlay.mssClamp take effect at once
// (probes come at the new pace, a peer goes down after the new timeout, SYNs are no longer
// clamped), stateDir and runDir are reported as needing a restart (log and health document).
//
// A reload of the parts beside the tunnel: the gateway moves to another real mosquitto under
// another topic prefix (the old broker's retained status says "offline", the new one's
// "online"), starts serving metrics and moves its status LED, while a continuous ping loses
// nothing and the device is the same; mqtt.interval alone keeps the connection; metrics.listen
// null closes the endpoint.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { killGroup, labDown, labUp, nsExec, nsRun, ping, skipUnlessRoot, snmpCounters, spawnTracked, startCapture, waitExit, waitFor, waitSnmpDelta, type LabEnv } from './harness.js';
import { labConfig, startGateway, tunnelDeviceIndex, type RunningGateway } from './vxedge.js';
import { startMosquitto, stopAllBrokers, type Broker } from './mosquitto.js';
import { nsHttpGet } from './harness.js';

const PREFIX = 'vxrl';

/** The longest the notify receiver lives (`timeout`): the systemd describe takes well under a minute. */
const SINK_LIFETIME_S = 300;

/**
 * Collects the datagrams sent to a unix socket (python3: Node cannot bind AF_UNIX datagram
 * sockets). The receiver is bounded by `timeout` and tracked by the harness, which kills it at
 * process exit if close() never ran; `ready` rejects if it exits or does not bind within 10 s.
 */
class NotifySink {
  readonly messages: string[] = [];
  private readonly child: ChildProcess;
  readonly ready: Promise<void>;
  constructor(readonly socket: string) {
    const code = [
      'import json, socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("ready", flush=True)',
      'while True: print(json.dumps(s.recv(4096).decode()), flush=True)',
    ].join('\n');
    this.child = spawnTracked(['timeout', String(SINK_LIFETIME_S), 'python3', '-c', code, socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let onReady: () => void;
    let onFail: (e: Error) => void;
    this.ready = new Promise((resolve, reject) => ((onReady = resolve), (onFail = reject)));
    const timer = setTimeout(() => onFail(new Error(`the notify receiver did not bind ${socket} within 10 s`)), 10_000);
    this.ready.then(() => clearTimeout(timer), () => clearTimeout(timer));
    this.child.once('exit', (code, signal) => onFail(new Error(`the notify receiver exited (${code ?? signal}) before it was ready`)));
    this.child.once('error', (e) => onFail(e));
    this.child.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'ready') onReady();
        else this.messages.push(JSON.parse(line) as string);
      }
    });
  }
  /** Index of the first message at or after `from` that satisfies pred, waiting for it. */
  async waitFor(pred: (m: string) => boolean, from = 0, timeoutMs = 10_000): Promise<number> {
    return waitFor(() => {
      const i = this.messages.findIndex((m, j) => j >= from && pred(m));
      return i >= 0 ? i + 1 : null; // +1: 0 is falsy
    }, timeoutMs).then((i) => i - 1);
  }
  /** Kills the receiver (its whole process group: timeout and python3) and waits until it is gone. */
  async close(): Promise<void> {
    killGroup(this.child, 'SIGKILL');
    await waitExit(this.child, 5_000).catch(() => undefined);
  }
}

/** An LED directory as sysfs has it (a Pi's ACT with its default trigger), off. */
function makeFakeLed(dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'trigger'), 'none [mmc0] timer');
  writeFileSync(path.join(dir, 'brightness'), '0');
  writeFileSync(path.join(dir, 'max_brightness'), '1');
}

describe.skipIf(skipUnlessRoot(['python3', 'tcpdump', 'socat']))('SIGHUP reload in the lab', () => {
  let env: LabEnv;
  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX });
  }, 120_000);
  afterAll(async () => {
    await labDown(PREFIX);
  });

  describe('under systemd: peers removed and added', () => {
    let gw: RunningGateway;
    let dir: string;
    let sink: NotifySink;
    let led: string;
    const all = () => labConfig(env, gw.dir, { extra: { board: { led } } });
    const writeConfig = (doc: unknown) => writeFileSync(gw.configFile, typeof doc === 'string' ? doc : JSON.stringify(doc, null, 2));
    const withoutAws2 = (): Record<string, unknown> => {
      const c = all();
      return { ...c, peers: (c.peers as Array<{ name: string }>).filter((p) => p.name !== 'aws-2') };
    };
    const routes = () => nsRun(env.NS_GW, ['ip', '-4', 'route', 'show', 'dev', env.VTEP_DEV]);
    const ledFile = (f: string) => readFileSync(path.join(led, f), 'utf8');

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'vxedge-vxrl-'));
      led = path.join(dir, 'leds', 'ACT');
      makeFakeLed(led);
      sink = new NotifySink(path.join(dir, 'notify'));
      await sink.ready;
      gw = await startGateway(env, {
        extra: { board: { led } },
        env: { NOTIFY_SOCKET: sink.socket, WATCHDOG_USEC: '4000000' },
      });
      await gw.waitUp();
    }, 120_000);
    afterAll(async () => {
      try {
        await gw?.cleanup();
      } finally {
        await sink?.close();
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    });

    it('tells systemd it is ready, with its state, and pings the watchdog while healthy', async () => {
      const ready = await sink.waitFor((m) => m.startsWith('READY=1'));
      expect(sink.messages[ready]).toMatch(/^READY=1\nSTATUS=(ok|degraded|down): \d\/2 peers up/);
      await sink.waitFor((m) => m === 'STATUS=ok: 2/2 peers up');
      // WATCHDOG_USEC 4 s: a ping at start, then every 1.33 s.
      await waitFor(() => sink.messages.filter((m) => m === 'WATCHDOG=1').length >= 3, 8_000, 200);
      expect(gw.output).not.toContain('watchdog ping skipped');
    });

    it('shows "all peers up" on the status LED', async () => {
      await waitFor(() => ledFile('brightness') === '1', 5_000);
      expect(ledFile('trigger')).toBe('none');
    });

    it('a reload that removes aws-2 loses no echo of a continuous ping to pod1', async () => {
      expect(await routes()).toContain(env.AWS2_SUBNET);
      const mark = sink.messages.length;
      const host0 = await snmpCounters(env.NS_HOST);
      // When the ping ends, note whether the reload was already done: it must happen mid-ping.
      const pinging = ping(env.NS_HOST, env.POD1_IP, { count: 40, intervalMs: 100 }).then((r) => ({
        r,
        reloadedBefore: gw.output.includes('"msg":"reloaded"'),
      }));
      await waitSnmpDelta(env.NS_HOST, 'Icmp.InEchoReps', host0, 3, 5_000); // the ping is flowing
      writeConfig(withoutAws2());
      gw.child.kill('SIGHUP');
      const { r, reloadedBefore } = await pinging;
      expect(r, gw.output).toMatchObject({ ok: true, sent: 40, received: 40 });
      expect(reloadedBefore, 'the reload finished before the ping did').toBe(true);

      await waitFor(() => gw.output.includes('"msg":"reloaded"'), 5_000);
      expect(gw.output).toMatch(/"msg":"reloaded".*"removed":\["aws-2"\]/);
      expect(await routes()).not.toContain(env.AWS2_SUBNET);
      expect(await routes()).toContain(env.AWS1_SUBNET);
      const s = await gw.waitStatus((d) => d.peers.length === 1);
      expect(s.peers.map((p) => p.name)).toEqual(['aws-1']);
      expect(s.state).toBe('ok');
      // RELOADING=1, then READY=1 again once applied.
      const reloading = await sink.waitFor((m) => m.startsWith('RELOADING=1\nMONOTONIC_USEC='), mark);
      await sink.waitFor((m) => m.startsWith('READY=1\nSTATUS=ok: 1/1 peers up'), reloading);
    });

    it('an invalid new config is reported and the running one kept', async () => {
      const before = await routes();
      const c = withoutAws2();
      writeConfig({ ...c, overlay: { ...(c.overlay as object), subnet: '10.244.100.5/24' }, keepalive: { interval: 'often' } });
      const hupAt = Date.now();
      gw.child.kill('SIGHUP');
      await waitFor(() => gw.output.includes('reload refused'), 5_000);
      expect(gw.output).toMatch(/reload refused: the new config is invalid; keeping the running one/);
      expect(gw.output).toMatch(/overlay\.subnet: 10\.244\.100\.5\/24 has host bits set/);
      expect(gw.output).toMatch(/keepalive\.interval/);
      expect(gw.child.exitCode).toBeNull();
      const r = await ping(env.NS_HOST, env.POD1_IP, { count: 5, intervalMs: 100 });
      expect(r).toMatchObject({ ok: true, received: 5 });
      expect(await routes()).toBe(before);
      const s = await gw.waitStatus((d) => Date.parse(d.ts) > hupAt); // written after the refusal
      expect(s.peers.map((p) => p.name)).toEqual(['aws-1']);
      expect(s.peers[0].state).toBe('up');
      // The health document says so too (`systemctl reload` reports success either way).
      expect(Date.parse(s.reload!.at)).toBeGreaterThan(hupAt - 1_000);
      expect(s.reload!.applied).toEqual([]);
      expect(s.reload!.error).toMatch(/^invalid config \S+ \(2 problems\): .*overlay\.subnet: 10\.244\.100\.5\/24 has host bits set.*; keepalive\.interval: /);
    });

    it('a file that is not even YAML/JSON is refused the same way', async () => {
      const n = gw.output.split('reload refused').length;
      writeConfig('{ "site": "lab", ');
      gw.child.kill('SIGHUP');
      await waitFor(() => gw.output.split('reload refused').length > n, 5_000);
      expect((await ping(env.NS_HOST, env.POD1_IP, { count: 3 })).ok).toBe(true);
    });

    it('re-adding aws-2 brings it back up, with its route', async () => {
      writeConfig(all());
      gw.child.kill('SIGHUP');
      const s = await gw.waitStatus((d) => d.peers.length === 2 && d.peers.every((p) => p.state === 'up'), 15_000);
      expect(s.peers.map((p) => p.name).sort()).toEqual(['aws-1', 'aws-2']);
      expect(gw.output).toMatch(/"msg":"reloaded".*"added":\["aws-2"\]/);
      expect((await gw.waitStatus((d) => d.reload?.applied.includes('peers') === true)).reload!.error).toBeUndefined();
      expect(await routes()).toContain(env.AWS2_SUBNET);
      const r = await ping(env.NS_HOST, env.POD2_IP, { count: 3 });
      expect(r).toMatchObject({ ok: true, received: 3 });
      await sink.waitFor((m) => m === 'STATUS=ok: 2/2 peers up' || m.startsWith('READY=1\nSTATUS=ok: 2/2 peers up'), 0, 10_000);
    });

    it('on stop says STOPPING=1 and switches the LED off', async () => {
      const mark = sink.messages.length;
      expect(await gw.stop()).toBe(0);
      await sink.waitFor((m) => m === 'STOPPING=1', mark, 5_000); // sent before exit, relayed by the sink after
      expect(ledFile('brightness')).toBe('0');
      expect(ledFile('trigger')).toBe('none');
    });
  });
  describe('a reload that changes keepalive, mssClamp, stateDir and runDir', () => {
    let gw: RunningGateway;
    beforeAll(async () => {
      gw = await startGateway(env, { keepaliveInterval: '5s', keepaliveTimeout: '20s' });
      await gw.waitUp();
    });
    afterAll(async () => {
      await gw?.cleanup();
    });

    /** The MSS option of a TCP SYN host -> pod1 as it arrives at pod1 (nothing listens: the pod resets it). */
    async function synMssAtPod(port: number): Promise<number> {
      const cap = startCapture(env.NS_POD1, ['-n', '-c', '1', '-i', env.POD1_IF, `tcp dst port ${port} and tcp[tcpflags] & tcp-syn != 0`], { timeoutMs: 10_000 });
      await cap.ready;
      await nsExec(env.NS_HOST, ['socat', '-u', '/dev/null', `TCP:${env.POD1_IP}:${port},connect-timeout=2`], { timeoutMs: 5_000 });
      const { stdout } = await cap.done;
      const mss = /\bmss (\d+)/.exec(stdout);
      if (!mss) throw new Error(`no SYN with an MSS option seen at pod1:\n${stdout}`);
      return Number(mss[1]);
    }

    it('applies keepalive and mssClamp at once, and reports stateDir and runDir as needing a restart', async () => {
      // Before: SYNs from the site host (MTU 1500, MSS 1460) are clamped to the tunnel's 1450 - 40.
      expect(await synMssAtPod(21_001)).toBe(1410);

      const cfg = labConfig(env, gw.dir, { keepaliveInterval: '1s', keepaliveTimeout: '4s' });
      writeFileSync(gw.configFile, JSON.stringify({
        ...cfg,
        overlay: { ...(cfg.overlay as object), mssClamp: false },
        stateDir: path.join(gw.dir, 'state-new'),
        runDir: path.join(gw.dir, 'run-new'),
      }, null, 2));
      // Everything the gateway sends to aws1:8472 from now on: with no traffic, only keepalive probes.
      const probes = startCapture(env.NS_GW, ['-n', '-i', env.GW_UNDERLAY_IF, `udp and dst host ${env.AWS1_PUBLIC_IP} and dst port ${env.VXLAN_PORT}`], { timeoutMs: 30_000 });
      await probes.ready;
      const hupAt = Date.now();
      gw.child.kill('SIGHUP');

      // The log: what was applied, and what waits for a restart.
      const sorted = (v: unknown) => (Array.isArray(v) ? [...(v as string[])].sort() : v);
      const reloaded = await gw.waitLog(/^reloaded$/);
      expect(sorted(reloaded.applied)).toEqual(['keepalive.interval', 'keepalive.timeout', 'overlay.mssClamp']);
      const restart = await gw.waitLog(/^some changes need a restart to take effect/);
      expect(restart.level).toBe('warn');
      expect(sorted(restart.keys)).toEqual(['runDir', 'stateDir']);
      // The health document says the same, and is still written where it was (runDir is not moved live).
      const s = await gw.waitStatus((d) => d.reload !== undefined);
      expect(sorted(s.reload!.applied)).toEqual(['keepalive.interval', 'keepalive.timeout', 'overlay.mssClamp']);
      expect(sorted(s.reload!.restartNeeded)).toEqual(['runDir', 'stateDir']);
      expect(Date.parse(s.reload!.at)).toBeGreaterThan(hupAt - 1_000);
      expect(existsSync(path.join(gw.dir, 'run-new', 'status.json'))).toBe(false);

      // keepalive.interval 1 s (±20 %): six probes within 10 s of the reload; at 5 s there would be three at most.
      // (tcpdump prints two lines a probe: the outer datagram, then the echo inside.)
      const sent = () => probes.lines.filter((l) => l.includes(` > ${env.AWS1_PUBLIC_IP}.${env.VXLAN_PORT}:`)).length;
      await waitFor(() => sent() >= 6, Math.max(0, hupAt + 10_000 - Date.now()), 100).catch((e: Error) => {
        throw new Error(`${e.message}: ${sent()} probes to aws-1 since the reload:\n${probes.lines.join('\n')}`);
      });
      await probes.stop();

      // overlay.mssClamp false: the same SYN now arrives unclamped.
      expect(await synMssAtPod(21_002)).toBe(1460);

      // keepalive.timeout 4 s: a peer cut off is down within it (+ probe jitter and the 2 s status
      // period), well before the old 20 s.
      const block = ['iptables', '-I', 'INPUT', '-p', 'udp', '--dport', String(env.VXLAN_PORT), '-j', 'DROP'];
      await nsRun(env.NS_AWS2, block);
      try {
        await gw.waitStatus((d) => d.peers.find((p) => p.name === 'aws-2')?.state === 'down', 10_000);
      } finally {
        await nsRun(env.NS_AWS2, ['iptables', '-D', ...block.slice(2)]);
      }
      const up = await gw.waitStatus((d) => d.peers.every((p) => p.state === 'up'), 10_000);
      expect(up.reload).toEqual(s.reload);
    });
  });
  describe('a reload that moves MQTT to another broker, serves metrics and moves the LED', () => {
    let gw: RunningGateway;
    let dir: string;
    let oldBroker: Broker;
    let newBroker: Broker;
    const leds = { a: '', b: '' };
    const METRICS = '127.0.0.1:9474';
    const brokerUrl = (port: number) => `mqtt://${env.INET_WAN_IP}:${port}`;
    const config = (mqtt: Record<string, unknown>, more: Record<string, unknown> = {}) =>
      labConfig(env, gw?.dir ?? dir, { extra: { mqtt: { interval: '30s', ...mqtt }, ...more } });
    const brightness = (led: string) => readFileSync(path.join(led, 'brightness'), 'utf8');
    const mqttConnects = () => gw.output.split('"msg":"mqtt connected"').length - 1;

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'vxedge-vxrl-parts-'));
      for (const k of ['a', 'b'] as const) {
        leds[k] = path.join(dir, 'leds', k);
        makeFakeLed(leds[k]);
      }
      oldBroker = await startMosquitto({ ns: env.NS_INET, address: env.INET_WAN_IP, port: 1883, dir, lifetimeS: 180 });
      newBroker = await startMosquitto({ ns: env.NS_INET, address: env.INET_WAN_IP, port: 1884, dir, lifetimeS: 180 });
      gw = await startGateway(env, { extra: { mqtt: { url: brokerUrl(1883), interval: '30s' }, board: { led: leds.a } } });
      await gw.waitUp();
    }, 120_000);
    afterAll(async () => {
      try {
        await gw?.cleanup();
      } finally {
        await stopAllBrokers();
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    });

    it('moves to the new broker and prefix, serves metrics, moves the LED; the tunnel carries on', async () => {
      await oldBroker.waitRetained('vxedge/lab/edge-1/status', (m) => m === 'online', 15_000);
      await waitFor(() => brightness(leds.a) === '1', 10_000);
      await expect(nsHttpGet(env.NS_GW, `http://${METRICS}/metrics`)).rejects.toThrow(/ECONNREFUSED/);
      const index = await tunnelDeviceIndex(env);
      const host0 = await snmpCounters(env.NS_HOST);
      const pinging = ping(env.NS_HOST, env.POD1_IP, { count: 40, intervalMs: 100 }).then((r) => ({
        r,
        reloadedBefore: gw.output.includes('"msg":"reloaded"'),
      }));
      await waitSnmpDelta(env.NS_HOST, 'Icmp.InEchoReps', host0, 3, 5_000);
      const hupAt = Date.now();
      const reloading = gw.reload(config({ url: brokerUrl(1884), topicPrefix: 'fleet' }, { board: { led: leds.b }, metrics: { listen: METRICS } }));
      const { r, reloadedBefore } = await pinging;
      expect(r, gw.output).toMatchObject({ ok: true, sent: 40, received: 40 });
      expect(reloadedBefore, 'the reload finished before the ping did').toBe(true);

      const reloaded = await reloading;
      expect([...(reloaded.applied as string[])].sort()).toEqual(['board.led', 'metrics.listen', 'mqtt.topicPrefix', 'mqtt.url']);
      expect(gw.output).not.toContain('some changes need a restart');
      // The old broker: the site said goodbye there (retained, as at a clean stop).
      expect(await oldBroker.retained('vxedge/lab/edge-1/status')).toBe('offline');
      // The new one: online, and a document written after the reload that says what it applied.
      await newBroker.waitRetained('fleet/lab/edge-1/status', (m) => m === 'online', 15_000);
      const doc = JSON.parse(await newBroker.waitRetained('fleet/lab/edge-1/health', (m) => {
        const d = JSON.parse(m) as { ts: string; reload?: { applied: string[] } };
        return Date.parse(d.ts) > hupAt - 1_000 && d.reload !== undefined;
      }, 15_000)) as { mqtt: { connected: boolean }; reload: { applied: string[]; restartNeeded: string[] }; peers: { state: string }[] };
      expect(doc.mqtt.connected).toBe(true);
      expect(doc.reload.restartNeeded).toEqual([]);
      expect(doc.peers.map((p) => p.state)).toEqual(['up', 'up']);
      // The same device: nothing of the tunnel was opened again.
      expect(await tunnelDeviceIndex(env)).toBe(index);
      // The metrics endpoint, and the LEDs: the old one off (as at a stop), the new one on.
      const page = await waitFor(() => nsHttpGet(env.NS_GW, `http://${METRICS}/metrics`).catch(() => null), 5_000);
      expect(page.status).toBe(200);
      expect(page.body).toMatch(/^vxedge_peer_up\{peer="aws-1"\} 1$/m);
      expect(brightness(leds.a)).toBe('0');
      await waitFor(() => brightness(leds.b) === '1', 5_000);
    });

    it('mqtt.interval alone keeps the connection; metrics.listen null closes the endpoint', async () => {
      const connects = mqttConnects();
      const reloaded = await gw.reload(config({ url: brokerUrl(1884), topicPrefix: 'fleet', interval: '4s' }, { board: { led: leds.b } }));
      expect(reloaded.applied).toEqual(['mqtt.interval', 'metrics.listen']); // the schema's order
      await expect(nsHttpGet(env.NS_GW, `http://${METRICS}/metrics`)).rejects.toThrow(/ECONNREFUSED/);
      // Three documents 4 s apart on the new broker, with the new period stated, over one connection.
      const sub = await newBroker.subscribe('fleet/lab/edge-1/health', 30);
      try {
        await waitFor(() => sub.lines.filter((l) => l.includes('"intervalS":4')).length >= 3, 20_000, 200);
      } finally {
        await sub.stop();
      }
      expect(mqttConnects()).toBe(connects);
      expect(await newBroker.retained('fleet/lab/edge-1/status')).toBe('online');
    });
  });
});
