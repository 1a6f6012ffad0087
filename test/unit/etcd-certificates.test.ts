// EtcdCertificates (cluster/etcd-certificates.ts): which endpoints are asked, when, and what is
// kept when one does not answer. The handshake itself against a real etcd: test/lab/etcd.test.ts.
import { describe, expect, it } from 'vitest';
import { EtcdCertificates } from '../../src/cluster/etcd-certificates.js';
import type { CertValidity } from '../../src/util/tls-failure.js';
import type { TlsProbeOptions } from '../../src/util/tls-probe.js';
import { ManualClock } from '../support/clock.js';

const HOUR = 3_600_000;
const validity = (toMs: number): CertValidity => ({ from: new Date(0), to: new Date(toMs) });

function rig(endpoints: string[]) {
  const clock = new ManualClock();
  const asked: string[] = [];
  const answers = new Map<string, CertValidity | null>();
  const certs = new EtcdCertificates({
    endpoints, clock,
    probe: async (o: TlsProbeOptions) => {
      asked.push(`${o.host}:${o.port} ${o.alpn?.join(',')}`);
      return answers.get(`${o.host}:${o.port}`) ?? null;
    },
  });
  return { clock, asked, answers, certs };
}

describe('EtcdCertificates', () => {
  it('asks every https:// endpoint at start and every 6 hours, one without a port on 443 as the client connects to it; plain http:// ones never', async () => {
    const r = rig(['https://10.0.0.1:2379', 'http://10.0.0.2:2379', 'https://[fd00::3]']);
    r.answers.set('10.0.0.1:2379', validity(1_000));
    r.answers.set('fd00::3:443', validity(2_000));
    r.certs.start();
    await r.clock.advanceAsync(0);
    expect(r.asked).toEqual(['10.0.0.1:2379 h2', 'fd00::3:443 h2']);
    expect(r.certs.list()).toEqual([
      { what: "etcd's certificate (https://10.0.0.1:2379)", validity: validity(1_000), presented: true },
      { what: "etcd's certificate (https://[fd00::3])", validity: validity(2_000), presented: true },
    ]);
    await r.clock.advanceAsync(6 * HOUR - 1);
    expect(r.asked).toHaveLength(2);
    await r.clock.advanceAsync(1);
    expect(r.asked).toHaveLength(4);
  });

  it('an endpoint that does not answer keeps what it presented last; a renewed one is seen at the next read', async () => {
    const r = rig(['https://10.0.0.1:2379']);
    r.answers.set('10.0.0.1:2379', validity(1_000));
    r.certs.start();
    await r.clock.advanceAsync(0);
    r.answers.set('10.0.0.1:2379', null);
    await r.clock.advanceAsync(6 * HOUR);
    expect(r.certs.list().map((c) => c.validity.to.getTime())).toEqual([1_000]);
    r.answers.set('10.0.0.1:2379', validity(9_000));
    await r.clock.advanceAsync(6 * HOUR);
    expect(r.certs.list().map((c) => c.validity.to.getTime())).toEqual([9_000]);
  });

  it('nothing without an https:// endpoint, and nothing after stop', async () => {
    const plain = rig(['http://10.0.0.1:2379']);
    plain.certs.start();
    await plain.clock.advanceAsync(24 * HOUR);
    expect(plain.asked).toEqual([]);
    const r = rig(['https://10.0.0.1:2379']);
    r.answers.set('10.0.0.1:2379', validity(1_000));
    r.certs.start();
    r.certs.stop();
    await r.clock.advanceAsync(24 * HOUR);
    expect(r.asked).toHaveLength(1); // the one at start, whose answer is dropped
    expect(r.certs.list()).toEqual([]);
  });
});
