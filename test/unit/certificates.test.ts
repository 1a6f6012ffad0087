// The `certificates` check (health/certificates.ts): which files a site's config makes vxedge
// use, their dates read once per change, and the verdict: fail 14 days before an end, so that
// the fleet hears of it while the health document still reaches the broker.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config/index.js';
import { CERT_WARN_DAYS, CertificateReader, certificateSources, certificatesCheck, type SiteCertificate } from '../../src/health/certificates.js';
import { NETWORK_TIME_FIX } from '../../src/util/tls-failure.js';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-certs-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));
const FIXTURES = path.join(import.meta.dirname, '..', 'fixtures', 'tls');
const ENDED = path.join(FIXTURES, 'ended-2020-01-02.crt');
const FUTURE = path.join(FIXTURES, 'starts-2099-01-01.crt');
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 6, 12);

const cfg = (extra: Record<string, unknown>) =>
  configFromObject({ site: 'lab', node: 'e1', overlay: { subnet: '10.244.100.0/24' }, ...extra }, 'site.yaml', {});
const cert = (what: string, fromMs: number, toMs: number): SiteCertificate => ({ what, validity: { from: new Date(fromMs), to: new Date(toMs) } });

describe('certificatesCheck', () => {
  it('no certificate, no line', () => {
    expect(certificatesCheck([], NOW)).toBeNull();
  });

  it('ok: the first to end, and when', () => {
    expect(certificatesCheck([cert('mqtt.ca', NOW - DAY, NOW + 3650 * DAY), cert('mqtt.cert', NOW - DAY, NOW + 90 * DAY + 1)], NOW)).toEqual({
      name: 'certificates', ok: true, detail: 'mqtt.cert ends on 2027-03-06 12:00 UTC, in 90 days (2 certificates, the first to end)',
    });
    expect(certificatesCheck([cert('cluster.etcd.cert', NOW - DAY, NOW + CERT_WARN_DAYS * DAY)], NOW)?.ok).toBe(true);
  });

  it('fails within 14 days of an end, after it, and before a start; each named, the soonest first', () => {
    const r = certificatesCheck([
      cert('mqtt.ca', NOW - DAY, NOW + 3650 * DAY),
      cert('mqtt.cert', NOW - DAY, NOW + CERT_WARN_DAYS * DAY - 1),
      cert('cluster.etcd.cert', NOW - 400 * DAY, NOW - 35 * DAY),
      cert('cluster.etcd.ca', NOW + 2 * 3_600_000, NOW + 365 * DAY),
    ], NOW);
    expect(r).toEqual({
      name: 'certificates', ok: false,
      detail: 'cluster.etcd.cert expired on 2026-11-01 12:00 UTC; mqtt.cert ends on 2026-12-20 11:59 UTC, in 13 days; ' +
        "cluster.etcd.ca is valid only from 2026-12-06 14:00 UTC (this machine's clock says 2026-12-06 12:00 UTC)",
      fix: "renew cluster.etcd.cert; renew mqtt.cert before then; set this machine's clock (timedatectl), or renew it if the clock is right",
    });
    // What the kernel says of the clock picks the fix: a kept clock is right, an unkept one first.
    const early = [cert('cluster.etcd.ca', NOW + 2 * 3_600_000, NOW + 365 * DAY)];
    expect(certificatesCheck(early, NOW, true)).toMatchObject({
      detail: "cluster.etcd.ca is valid only from 2026-12-06 14:00 UTC (this machine's clock says 2026-12-06 12:00 UTC, kept by network time)",
      fix: 'renew cluster.etcd.ca: it starts in the future',
    });
    expect(certificatesCheck(early, NOW, false)).toMatchObject({
      detail: "cluster.etcd.ca is valid only from 2026-12-06 14:00 UTC (this machine's clock says 2026-12-06 12:00 UTC and network time does not keep it)",
      fix: NETWORK_TIME_FIX,
    });
    expect(certificatesCheck([cert('mqtt.cert', NOW - DAY, NOW + 5 * 3_600_000)], NOW)?.detail).toBe('mqtt.cert ends on 2026-12-06 17:00 UTC, in 5 hours');
    // A server's own: the site cannot renew it.
    expect(certificatesCheck([{ ...cert("the broker's certificate (mqtts://b:8883)", NOW - DAY, NOW + 3 * DAY), presented: true }], NOW)?.fix)
      .toBe("have its operator renew the broker's certificate (mqtts://b:8883) before then");
  });
});

describe('CA bundles', () => {
  const bundle = (what: string, ...anchors: [number, number][]): SiteCertificate => {
    const list = anchors.map(([f, t]) => ({ from: new Date(f), to: new Date(t) }));
    return { what, validity: list[0], anchors: list };
  };

  it('serve while one of their certificates is valid: dated by the one valid now that ends last', () => {
    // An old root that ended, one that ends in 5 days, and its successor: nothing to renew yet.
    const ca = bundle('mqtt.ca', [NOW - 900 * DAY, NOW - 10 * DAY], [NOW - 800 * DAY, NOW + 5 * DAY], [NOW - 30 * DAY, NOW + 3000 * DAY]);
    expect(certificatesCheck([ca], NOW)).toEqual({
      name: 'certificates', ok: true, detail: 'mqtt.ca (the last of its 3 certificates to end) ends on 2035-02-22 12:00 UTC, in 3000 days',
    });
    // Its first certificate alone would have failed the check.
    expect(certificatesCheck([cert('mqtt.ca', NOW - 900 * DAY, NOW - 10 * DAY)], NOW)?.ok).toBe(false);
  });

  it('fail when none is valid: ended at the last end, or valid only from the first start', () => {
    const ended = bundle('cluster.etcd.ca', [NOW - 900 * DAY, NOW - 10 * DAY], [NOW - 800 * DAY, NOW - 2 * DAY]);
    expect(certificatesCheck([ended], NOW)).toMatchObject({ ok: false, detail: 'cluster.etcd.ca (the last of its 2 certificates to end) expired on 2026-12-04 12:00 UTC' });
    // A clock in the past (a board before network time): the first to start names when the file would serve.
    const early = bundle('mqtt.ca', [NOW + 20 * DAY, NOW + 400 * DAY], [NOW - 900 * DAY, NOW - 10 * DAY], [NOW + 2 * DAY, NOW + 300 * DAY]);
    expect(certificatesCheck([early], NOW)?.detail).toBe("mqtt.ca (the first of its 3 certificates to start) is valid only from 2026-12-08 12:00 UTC (this machine's clock says 2026-12-06 12:00 UTC)");
  });

  it('are read whole from the CA files (mqtt.ca, cluster.etcd.ca, a kubeconfig\'s certificate-authority); a client certificate\'s file by its first', async () => {
    const both = path.join(TMP, 'bundle.pem');
    writeFileSync(both, `${readFileSync(ENDED, 'utf8')}\n${readFileSync(FUTURE, 'utf8')}`);
    const certs = await new CertificateReader(certificateSources(cfg({ mqtt: { url: 'mqtts://broker:8883', ca: both, cert: both, key: '/k' } }), {})).read();
    expect(certs.map((c) => [c.what, c.anchors?.length ?? 1, c.validity.to.toISOString()])).toEqual([
      ['mqtt.ca', 2, '2020-01-02T00:00:00.000Z'], ['mqtt.cert', 1, '2020-01-02T00:00:00.000Z'],
    ]);
    expect(certificatesCheck(certs, NOW)?.detail).toMatch(/^mqtt\.cert expired on 2020-01-02 00:00 UTC; mqtt\.ca \(the first of its 2 certificates to start\) is valid only from 2099-01-01/);
    const kc = path.join(TMP, 'bundle-kubeconfig');
    writeFileSync(kc, [
      'apiVersion: v1', 'kind: Config', 'current-context: c',
      'clusters: [{name: k, cluster: {server: "https://192.0.2.1:6443", certificate-authority: bundle.pem}}]',
      'users: [{name: u, user: {token: t}}]', 'contexts: [{name: c, context: {cluster: k, user: u}}]',
    ].join('\n'));
    const kube = await new CertificateReader(certificateSources(cfg({ cluster: { source: 'kubernetes', kubernetes: { kubeconfig: kc } } }), {})).read();
    expect(kube.map((c) => [c.what, c.anchors?.length])).toEqual([[`certificate-authority of kubeconfig ${kc}`, 2]]);
  });
});

describe('certificateSources and CertificateReader', () => {
  it('reads the files a run uses: the broker\'s only over TLS, the cluster source\'s', async () => {
    const read = async (c: ReturnType<typeof cfg>) => (await new CertificateReader(certificateSources(c, {})).read()).map((x) => [x.what, x.validity.to.toISOString()]);
    expect(await read(cfg({ mqtt: { url: 'mqtt://broker:1883', ca: ENDED, cert: ENDED, key: '/k' } }))).toEqual([]);
    expect(await read(cfg({ mqtt: { url: 'mqtts://broker:8883', ca: FUTURE, cert: ENDED, key: '/k' } }))).toEqual([
      ['mqtt.ca', '2099-01-02T00:00:00.000Z'], ['mqtt.cert', '2020-01-02T00:00:00.000Z'],
    ]);
    // etcd's files only with the etcd source; a file that is missing or no certificate is left out.
    const notPem = path.join(TMP, 'not.pem');
    writeFileSync(notPem, 'x');
    expect(await read(cfg({ cluster: { source: 'etcd', etcd: { endpoints: ['https://e:2379'], ca: notPem, cert: ENDED, key: '/nonexistent/k' } } }))).toEqual([
      ['cluster.etcd.cert', '2020-01-02T00:00:00.000Z'],
    ]);
    expect(await read(cfg({ cluster: { source: 'static', etcd: { ca: ENDED } } }))).toEqual([]);
    expect(await read(cfg({ mqtt: { url: 'mqtts://broker:8883', cert: '/nonexistent/cert.pem', key: '/k' } }))).toEqual([]);
  });

  it("a kubeconfig's CA and client certificate, inline or as a file relative to it", async () => {
    const dir = mkdtempSync(path.join(TMP, 'kube-'));
    copyFileSync(FUTURE, path.join(dir, 'ca.crt'));
    const kubeconfig = path.join(dir, 'kubeconfig');
    const user = { 'client-certificate-data': readFileSync(ENDED).toString('base64'), 'client-key-data': 'eA==' };
    writeFileSync(kubeconfig, JSON.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: 'https://k8s.example:6443', 'certificate-authority': 'ca.crt' } }],
      users: [{ name: 'u', user }], contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    }));
    const reader = new CertificateReader(certificateSources(cfg({ cluster: { source: 'kubernetes', kubernetes: { kubeconfig } } }), {}));
    expect((await reader.read()).map((x) => [x.what, x.validity.to.toISOString()])).toEqual([
      [`certificate-authority of kubeconfig ${kubeconfig}`, '2099-01-02T00:00:00.000Z'],
      [`client-certificate of kubeconfig ${kubeconfig}`, '2020-01-02T00:00:00.000Z'],
    ]);
    // $KUBECONFIG when the config names none.
    expect(await new CertificateReader(certificateSources(cfg({ cluster: { source: 'kubernetes' } }), { KUBECONFIG: kubeconfig })).read()).toHaveLength(2);
    // The CA file it names is renewed: read again, though the kubeconfig did not change.
    writeFileSync(path.join(dir, 'ca.crt'), readFileSync(ENDED));
    expect((await reader.read())[0].validity.to.toISOString()).toBe('2020-01-02T00:00:00.000Z');
  });

  it('reads a file again only when it changed', async () => {
    const file = path.join(TMP, 'client.pem');
    copyFileSync(ENDED, file);
    const sources = certificateSources(cfg({ mqtt: { url: 'mqtts://broker:8883', cert: file, key: '/k' } }), {});
    let loads = 0;
    const counted = sources.map((s) => ({ stamp: () => s.stamp(), load: () => (loads++, s.load()) }));
    const reader = new CertificateReader(counted);
    expect((await reader.read())[0].validity.to.getUTCFullYear()).toBe(2020);
    await reader.read();
    expect(loads).toBe(1);
    writeFileSync(file, readFileSync(FUTURE)); // renewed: another mtime
    expect((await reader.read())[0].validity.to.getUTCFullYear()).toBe(2099);
    expect(loads).toBe(2);
  });
});
