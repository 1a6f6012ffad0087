// `vxedge check`'s clock line where the kernel will not say whether network time keeps the
// clock (the unit's ProtectClock=yes: test/lab/protect-clock.c refuses the clock calls as
// systemd's filter does) and chrony keeps it: a real chronyd (Debian's, unpacked by
// scripts/setup, never installed) answers on its command port in a namespace of this test's.
// Both chronyds run with -x: they never touch this machine's clock. The client follows a
// second chronyd in the same namespace that serves its own clock (`local stratum 8`).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createNamespace, deleteNamespaces, killGroup, nsExec, nsSpawn, skipUnlessRoot, waitExit, waitFor } from './harness.js';
import { checkCommand, protectClock } from './vxedge.js';

const PREFIX = 'vxch';
const CHRONYD = path.join(process.env.VXEDGE_CHRONY_ROOT ?? '/var/cache/vxedge-test/chrony', 'usr', 'sbin', 'chronyd');
const SERVER_PORT = 11123;
/** Each chronyd's lifetime bound (`timeout`), should the test never stop it. */
const CHRONYD_LIFETIME_S = 240;

describe.skipIf(skipUnlessRoot([CHRONYD, 'gcc', 'unshare']))('the clock line with chrony, where the kernel will not say', () => {
  let ns: string;
  let dir: string;
  let file: string;
  const daemons: ChildProcess[] = [];
  let log = '';

  /** chronyd with `conf` in the test's namespace, in the foreground, its log kept. */
  function chronyd(name: string, conf: string[]): ChildProcess {
    const f = path.join(dir, `${name}.conf`);
    // No Unix command socket (bindcmdaddress /), pid and drift files in the test's directory.
    writeFileSync(f, [...conf, 'bindcmdaddress /', `pidfile ${path.join(dir, `${name}.pid`)}`, `driftfile ${path.join(dir, `${name}.drift`)}`, ''].join('\n'));
    const child = nsSpawn(ns, ['timeout', String(CHRONYD_LIFETIME_S), CHRONYD, '-d', '-x', '-u', 'root', '-f', f]);
    for (const s of [child.stdout!, child.stderr!]) s.on('data', (b: Buffer) => (log += `[${name}] ${b.toString()}`));
    daemons.push(child);
    return child;
  }

  async function stop(child: ChildProcess): Promise<void> {
    killGroup(child, 'SIGKILL');
    await waitExit(child, 5_000).catch(() => undefined);
  }

  /** chronyd's tracking as the gateway's client reads it (util/chrony.ts), from the namespace. */
  async function tracking(): Promise<{ synchronised: boolean; stratum: number } | null> {
    const code = `import('${path.resolve('dist/util/chrony.js')}').then((c) => c.askChrony()).then((t) => console.log(JSON.stringify(t)), () => console.log('null'))`;
    const r = await nsExec(ns, ['node', '-e', code], { timeoutMs: 10_000 });
    return JSON.parse(r.stdout) as { synchronised: boolean; stratum: number } | null;
  }

  beforeAll(() => {
    ns = createNamespace(PREFIX);
    dir = mkdtempSync(path.join(tmpdir(), `${PREFIX}-`));
    file = path.join(dir, 'site.json');
    writeFileSync(file, JSON.stringify({
      site: 'lab', stateDir: path.join(dir, 'state'), runDir: path.join(dir, 'run'),
      overlay: { subnet: '10.244.100.0/24' }, nat: { portMapping: 'off' },
    }));
  });

  afterAll(async () => {
    for (const d of daemons) await stop(d);
    deleteNamespaces(PREFIX);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('no chronyd: not known, and the line says both why the kernel would not say and that chronyd does not run', async () => {
    const r = await checkCommand(ns, file, 'clock', { wrap: await protectClock(dir, null) });
    expect(r.line).toMatch(new RegExp(
      String.raw`^ok +clock +this machine's clock says \d{4}-\d\d-\d\d \d\d:\d\d UTC; whether network time keeps it is not known ` +
      String.raw`\(adjtimex: operation not permitted \(EPERM\); chronyd: not running \(nothing answers on 127\.0\.0\.1:323\)\)$`,
    ));
  });

  it('chronyd without a source it trusts: network time does not keep the clock, and chronyc sources says why', async () => {
    chronyd('client', [`server 127.0.0.1 port ${SERVER_PORT} iburst minpoll -4 maxpoll -4`, 'port 0']);
    await waitFor(async () => (await tracking()) !== null, 10_000);
    const r = await checkCommand(ns, file, 'clock', { wrap: await protectClock(dir, null) });
    expect(r.line, log).toMatch(new RegExp(
      String.raw`^ok +clock +this machine's clock says \d{4}-\d\d-\d\d \d\d:\d\d UTC and network time does not keep it: chronyd runs but is not synchronised ` +
      String.raw`\(no source it trusts; \`chronyc sources\` says why\) \(the kernel would not say: adjtimex: operation not permitted \(EPERM\)\)$`,
    ));
  });

  it('chronyd synchronised to its server: kept by network time, with chronyd\'s stratum, source, last update and offset', async () => {
    chronyd('server', ['local stratum 8', 'allow 127.0.0.0/8', `port ${SERVER_PORT}`, 'bindaddress 127.0.0.1', 'cmdport 0']);
    const t = await waitFor(async () => {
      const x = await tracking();
      return x?.synchronised ? x : null;
    }, 30_000, 500).catch((e: Error) => {
      throw new Error(`${e.message}: chronyd did not synchronise\n${log}`);
    });
    expect(t.stratum).toBe(9);
    const r = await checkCommand(ns, file, 'clock', { wrap: await protectClock(dir, null) });
    console.log(`vxedge check, adjtimex refused, chronyd synchronised:\n${r.line}`);
    expect(r.line).toMatch(new RegExp(
      String.raw`^ok +clock +this machine's clock says \d{4}-\d\d-\d\d \d\d:\d\d UTC, kept by network time \(chronyd: stratum 9 from 127\.0\.0\.1, ` +
      String.raw`last updated \d{4}-\d\d-\d\d \d\d:\d\d UTC, [\d.]+ (µs|ms) (fast|slow); the kernel would not say: adjtimex: operation not permitted \(EPERM\)\)$`,
    ));
    // Where the kernel answers (no filter), its word is taken and chronyd is not asked.
    const plain = await checkCommand(ns, file, 'clock');
    expect(plain.line).not.toMatch(/chronyd/);
  }, 60_000);
});
