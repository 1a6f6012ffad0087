// `vxedge check`'s files and dirs lines: what a run would read or write and could not,
// found before the start instead of as a warning every 2 s or a broker that never connects.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { checkDirs, checkFiles } from '../../src/cli/check.js';
import { configFromObject } from '../../src/config/index.js';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-check-files-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));
const ca = path.join(TMP, 'ca.pem');
writeFileSync(ca, 'pem');
const aFile = path.join(TMP, 'a-file'); // mode 0644: no directory can be made below it
writeFileSync(aFile, 'x');

const cfg = (extra: Record<string, unknown>) =>
  configFromObject({ site: 'lab', node: 'e1', overlay: { subnet: '10.244.100.0/24' }, stateDir: path.join(TMP, 'state'), runDir: path.join(TMP, 'run', 'deeper'), ...extra }, 'site.yaml', {});

describe('checkFiles', () => {
  it('has no line when the config names no file in use', async () => {
    expect(await checkFiles(cfg({}))).toBeNull();
    // An MQTT CA without mqtt.url is not read by a run.
    expect(await checkFiles(cfg({ mqtt: { ca: '/nonexistent/ca.pem' } }))).toBeNull();
  });

  it('passes the readable ones and names each missing one with its key', async () => {
    expect(await checkFiles(cfg({ mqtt: { url: 'mqtts://broker:8883', ca } }))).toEqual({ name: 'files', ok: true, detail: `readable: mqtt.ca ${ca}` });
    const r = await checkFiles(cfg({
      mqtt: { url: 'mqtts://broker:8883', ca, cert: '/nonexistent/c.pem', key: '/nonexistent/k.pem' },
      cluster: { source: 'kubernetes', kubernetes: { kubeconfig: '/nonexistent/kubeconfig' } },
    }));
    expect(r).toMatchObject({
      name: 'files',
      ok: false,
      detail: 'mqtt.cert /nonexistent/c.pem: no such file; mqtt.key /nonexistent/k.pem: no such file; cluster.kubernetes.kubeconfig /nonexistent/kubeconfig: no such file',
    });
    expect(r?.fix).toContain('correct the path');
  });

  it('fails a directory given where a file belongs, which access() alone would pass', async () => {
    expect(await checkFiles(cfg({ mqtt: { url: 'mqtts://broker:8883', ca: TMP } }))).toMatchObject({ ok: false, detail: `mqtt.ca ${TMP}: it is a directory` });
  });

  it("reads etcd's files only with cluster.source etcd", async () => {
    const files = { ca: '/nonexistent/etcd-ca.pem' };
    expect(await checkFiles(cfg({ cluster: { etcd: files } }))).toBeNull();
    expect(await checkFiles(cfg({ cluster: { source: 'etcd', etcd: { endpoints: ['https://10.0.0.5:2379'], ...files } } }))).toMatchObject({ ok: false, detail: 'cluster.etcd.ca /nonexistent/etcd-ca.pem: no such file' });
  });
});

describe('checkDirs', () => {
  it('passes directories that exist or can be made', async () => {
    expect(await checkDirs(cfg({}))).toEqual({ name: 'dirs', ok: true, detail: `writable: stateDir ${TMP}/state, runDir ${TMP}/run/deeper` });
  });

  it('fails one that cannot be made, naming the key and where it stops', async () => {
    const r = await checkDirs(cfg({ runDir: path.join(aFile, 'run') }));
    expect(r).toMatchObject({ name: 'dirs', ok: false, detail: `not writable: runDir ${aFile}/run: ${aFile} is a file, not a directory` });
  });

  it('fails a key that names a file itself', async () => {
    expect(await checkDirs(cfg({ stateDir: aFile }))).toMatchObject({ ok: false, detail: `not writable: stateDir ${aFile}: is a file, not a directory` });
  });
});
