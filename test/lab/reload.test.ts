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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labDown, labUp, nsRun, ping, skipUnlessRoot, waitFor, type LabEnv } from './harness.js';
import { labConfig, startGateway, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxrl';

/** Collects the datagrams sent to a unix socket (python3: Node cannot bind AF_UNIX datagram sockets). */
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
    this.child = spawn('python3', ['-c', code, socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let onReady: () => void;
    this.ready = new Promise((r) => (onReady = r));
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
  close(): void {
    this.child.kill('SIGKILL');
  }
}

describe.skipIf(skipUnlessRoot(['python3']))('SIGHUP reload in the lab', () => {
  let env: LabEnv;
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
    env = await labUp({ prefix: PREFIX });
    dir = mkdtempSync(path.join(tmpdir(), 'vxedge-vxrl-'));
    led = path.join(dir, 'leds', 'ACT');
    mkdirSync(led, { recursive: true });
    writeFileSync(path.join(led, 'trigger'), 'none [mmc0] timer');
    writeFileSync(path.join(led, 'brightness'), '0');
    writeFileSync(path.join(led, 'max_brightness'), '1');
    sink = new NotifySink(path.join(dir, 'notify'));
    await sink.ready;
    gw = await startGateway(env, {
      extra: { board: { led } },
      env: { NOTIFY_SOCKET: sink.socket, WATCHDOG_USEC: '4000000' },
    });
    await gw.waitUp();
  }, 120_000);
  afterAll(async () => {
    await gw?.cleanup();
    sink?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await labDown(PREFIX);
  });

  it('tells systemd it is ready, with its state, and pings the watchdog while healthy', async () => {
    const ready = await sink.waitFor((m) => m.startsWith('READY=1'));
    expect(sink.messages[ready]).toMatch(/^READY=1\nSTATUS=(ok|degraded|down): \d\/2 peers up/);
    await sink.waitFor((m) => m === 'STATUS=ok: 2/2 peers up');
    // WATCHDOG_USEC 4 s: a ping at start, then every 2 s.
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
    const pinging = ping(env.NS_HOST, env.POD1_IP, { count: 40, intervalMs: 100 });
    await new Promise((r) => setTimeout(r, 1_000));
    writeConfig(withoutAws2());
    gw.child.kill('SIGHUP');
    const r = await pinging;
    expect(r, gw.output).toMatchObject({ ok: true, sent: 40, received: 40 });

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
    gw.child.kill('SIGHUP');
    await waitFor(() => gw.output.includes('reload refused'), 5_000);
    expect(gw.output).toMatch(/reload refused: the new config is invalid; keeping the running one/);
    expect(gw.output).toMatch(/overlay\.subnet: 10\.244\.100\.5\/24 has host bits set/);
    expect(gw.output).toMatch(/keepalive\.interval/);
    expect(gw.child.exitCode).toBeNull();
    const r = await ping(env.NS_HOST, env.POD1_IP, { count: 5, intervalMs: 100 });
    expect(r).toMatchObject({ ok: true, received: 5 });
    expect(await routes()).toBe(before);
    const s = await gw.waitStatus((d) => Date.parse(d.ts) > Date.now() - 2_500);
    expect(s.peers.map((p) => p.name)).toEqual(['aws-1']);
    expect(s.peers[0].state).toBe('up');
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
    expect(await routes()).toContain(env.AWS2_SUBNET);
    const r = await ping(env.NS_HOST, env.POD2_IP, { count: 3 });
    expect(r).toMatchObject({ ok: true, received: 3 });
    await sink.waitFor((m) => m === 'STATUS=ok: 2/2 peers up' || m.startsWith('READY=1\nSTATUS=ok: 2/2 peers up'), 0, 10_000);
  });

  it('on stop says STOPPING=1 and switches the LED off', async () => {
    expect(await gw.stop()).toBe(0);
    expect(sink.messages).toContain('STOPPING=1');
    expect(ledFile('brightness')).toBe('0');
    expect(ledFile('trigger')).toBe('none');
  });
});
