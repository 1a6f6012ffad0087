// A real mosquitto (2.x) for lab tests, started inside a lab namespace (the lab's "internet",
// ${prefix}-inet, on 198.51.100.1), never in the root namespace. Also: TLS material made with
// openssl, password files made with mosquitto_passwd, and mosquitto_sub/mosquitto_pub helpers.
//
//   const b = await startMosquitto({ ns: env.NS_INET, address: env.INET_WAN_IP, port: 1883, dir });
//   const online = await b.retained('vxedge/lab/edge-1/status');
//   await b.publish('some/topic', 'marker');
//   await b.stop();
//
// Every broker is bounded (`timeout`), tracked, and killed by stop(), stopAllBrokers(), or the
// harness's labDown()/process exit (it is started with nsSpawn).
import { spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { nsExec, nsSpawn, waitExit, waitFor } from './harness.js';

export interface BrokerTls {
  cafile: string;
  certfile: string;
  keyfile: string;
  requireCertificate: boolean;
}

export interface BrokerOptions {
  ns: string;
  address: string;
  port: number;
  /** Where the config file goes (a test's temp dir). */
  dir: string;
  tls?: BrokerTls;
  /** mosquitto_passwd file; anonymous clients are refused when set. */
  passwordFile?: string;
  aclFile?: string;
  /** mosquitto's message_size_limit (bytes of payload; 0 or unset: none). */
  messageSizeLimit?: number;
  /** mosquitto's max_packet_size (bytes of a whole packet, stated in the CONNACK to MQTT 5 clients). */
  maxPacketSize?: number;
  /** Hard bound on the broker's life (default 300 s). */
  lifetimeS?: number;
}

/** How a mosquitto_sub client connects (credentials, TLS). */
export interface SubAuth {
  username?: string;
  password?: string;
  cafile?: string;
  cert?: string;
  key?: string;
}

const running = new Set<Broker>();

export class Broker {
  output = '';
  constructor(
    readonly o: BrokerOptions,
    readonly child: ChildProcess,
    readonly configFile: string,
  ) {
    child.stdout!.on('data', (b: Buffer) => (this.output += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (this.output += b.toString()));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL after 3 s. */
  async stop(): Promise<void> {
    running.delete(this);
    if (!this.alive) return;
    try {
      process.kill(-this.child.pid!, 'SIGTERM');
    } catch {
      /* gone */
    }
    await waitExit(this.child, 3_000).catch(() => undefined);
  }

  private subArgs(auth: SubAuth = {}): string[] {
    const a = ['-h', this.o.address, '-p', String(this.o.port)];
    if (auth.username) a.push('-u', auth.username);
    if (auth.password) a.push('-P', auth.password);
    if (auth.cafile) a.push('--cafile', auth.cafile);
    if (auth.cert) a.push('--cert', auth.cert);
    if (auth.key) a.push('--key', auth.key);
    return a;
  }

  /** The retained message on `topic`, or null when there is none (waits up to waitS). */
  async retained(topic: string, auth: SubAuth = {}, waitS = 2): Promise<string | null> {
    const r = await nsExec(this.o.ns, ['mosquitto_sub', ...this.subArgs(auth), '-t', topic, '--retained-only', '-C', '1', '-W', String(waitS), '-V', 'mqttv5'], {
      timeoutMs: waitS * 1000 + 3_000,
    });
    if (r.code !== 0) return null;
    return r.stdout.replace(/\n$/, '');
  }

  /** Polls the retained message on `topic` until `pred` holds; returns it. */
  async waitRetained(topic: string, pred: (payload: string) => boolean, timeoutMs: number, auth: SubAuth = {}): Promise<string> {
    return waitFor(async () => {
      const m = await this.retained(topic, auth, 1);
      return m !== null && pred(m) ? m : null;
    }, timeoutMs, 100);
  }

  /** Publishes one (not retained, QoS 1) message with mosquitto_pub; throws if the broker refused it. */
  async publish(topic: string, payload: string, auth: SubAuth = {}): Promise<void> {
    const r = await nsExec(this.o.ns, ['mosquitto_pub', ...this.subArgs(auth), '-t', topic, '-m', payload, '-q', '1', '-V', 'mqttv5'], { timeoutMs: 5_000 });
    if (r.code !== 0) throw new Error(`mosquitto_pub ${topic}: code ${r.code} ${r.stderr}`);
  }

  /**
   * A live subscriber (mosquitto_sub -v) on `topic` (or several) for at most lifetimeS; `lines`
   * collects "topic payload" lines, in the order the broker sent them. Resolves once the
   * subscription is acknowledged.
   */
  async subscribe(topic: string | string[], lifetimeS: number, auth: SubAuth = {}): Promise<{ lines: string[]; child: ChildProcess; stop: () => Promise<void> }> {
    const topics = (Array.isArray(topic) ? topic : [topic]).flatMap((t) => ['-t', t]);
    // Line-buffered: mosquitto_sub flushes only after a message, and "received SUBACK" must be
    // seen on a topic that has no message yet.
    const child = nsSpawn(this.o.ns, ['timeout', String(lifetimeS), 'stdbuf', '-oL', 'mosquitto_sub', ...this.subArgs(auth), ...topics, '-v', '-d', '-V', 'mqttv5']);
    const lines: string[] = [];
    let buf = '';
    let subscribed = false;
    child.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        if (l.includes('received SUBACK')) subscribed = true;
        else if (!l.startsWith('Client ') && !l.startsWith('Subscribed (')) lines.push(l);
      }
    });
    await waitFor(() => subscribed || child.exitCode !== null, 5_000, 20);
    if (!subscribed) throw new Error(`mosquitto_sub ${topic} did not subscribe`);
    return {
      lines,
      child,
      stop: async () => {
        try {
          process.kill(-child.pid!, 'SIGTERM');
        } catch {
          /* gone */
        }
        await waitExit(child, 2_000).catch(() => undefined);
      },
    };
  }
}

/** Writes a config for `o`, starts `mosquitto -c` in o.ns and waits until it listens. */
export async function startMosquitto(o: BrokerOptions): Promise<Broker> {
  const lines = [
    '# written by test/lab/mosquitto.ts',
    'user root', // stay root: the config and keys are in a 0700 temp dir
    'per_listener_settings false',
    'persistence false', // a restart forgets retained messages: what comes back was republished
    `allow_anonymous ${o.passwordFile ? 'false' : 'true'}`,
    'log_dest stderr',
    'log_type all',
    'log_timestamp true',
    'log_timestamp_format %H:%M:%S',
    'connection_messages true',
  ];
  if (o.passwordFile) lines.push(`password_file ${o.passwordFile}`);
  if (o.aclFile) lines.push(`acl_file ${o.aclFile}`);
  if (o.messageSizeLimit) lines.push(`message_size_limit ${o.messageSizeLimit}`);
  if (o.maxPacketSize) lines.push(`max_packet_size ${o.maxPacketSize}`);
  lines.push(`listener ${o.port} ${o.address}`);
  if (o.tls) {
    lines.push(`cafile ${o.tls.cafile}`, `certfile ${o.tls.certfile}`, `keyfile ${o.tls.keyfile}`);
    lines.push(`require_certificate ${o.tls.requireCertificate}`);
  }
  const configFile = path.join(o.dir, `mosquitto-${o.port}.conf`);
  await writeFile(configFile, lines.join('\n') + '\n');
  const child = nsSpawn(o.ns, ['timeout', String(o.lifetimeS ?? 300), 'mosquitto', '-c', configFile]);
  const b = new Broker(o, child, configFile);
  running.add(b);
  try {
    await waitFor(async () => {
      if (!b.alive) throw new Error(`mosquitto exited (${child.exitCode ?? child.signalCode})`);
      const r = await nsExec(o.ns, ['ss', '-Hltn', `sport = :${o.port}`], { timeoutMs: 2_000 });
      return r.stdout.includes(`${o.address}:${o.port}`);
    }, 5_000, 50);
  } catch (e) {
    await b.stop();
    throw new Error(`mosquitto on ${o.address}:${o.port} did not come up: ${(e as Error).message}\n${b.output}`);
  }
  return b;
}

export async function stopAllBrokers(): Promise<void> {
  await Promise.all([...running].map((b) => b.stop()));
}

function sh(argv: string[], cwd: string): void {
  const r = spawnSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.status ?? r.signal} ${r.stderr}`);
}

export interface TlsFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second CA and a client certificate signed by it (not trusted by the broker). */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
}

/**
 * A CA, a server certificate for serverIp (CN and SAN), and client certificates, with openssl in
 * dir, valid for a year: a gateway's `certificates` check fails within 14 days of an end.
 */
export function makeTls(dir: string, serverIp: string, clientCn: string): TlsFiles {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const mkCa = (name: string) =>
    sh(['openssl', 'req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '365', '-subj', `/CN=vxedge lab ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  const mkCert = (name: string, ca: string, cn: string, ext: string) => {
    sh(['openssl', 'req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    writeFileSync(path.join(dir, `${name}.ext`), ext + '\n');
    sh(['openssl', 'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial',
      '-out', `${name}.crt`, '-days', '365', '-extfile', `${name}.ext`], dir);
  };
  mkCa('ca');
  mkCa('other-ca');
  mkCert('server', 'ca', serverIp, `subjectAltName=IP:${serverIp}\nextendedKeyUsage=serverAuth`);
  mkCert('client', 'ca', clientCn, 'extendedKeyUsage=clientAuth');
  mkCert('other-client', 'other-ca', clientCn, 'extendedKeyUsage=clientAuth');
  const p = (f: string) => path.join(dir, f);
  return {
    ca: p('ca.crt'), serverCert: p('server.crt'), serverKey: p('server.key'), clientCert: p('client.crt'), clientKey: p('client.key'),
    otherCa: p('other-ca.crt'), otherClientCert: p('other-client.crt'), otherClientKey: p('other-client.key'),
  };
}

/** A mosquitto password file with these users (mosquitto_passwd -b). */
export function makePasswordFile(file: string, users: Record<string, string>): void {
  let first = true;
  for (const [user, password] of Object.entries(users)) {
    sh(['mosquitto_passwd', ...(first ? ['-c'] : []), '-b', file, user, password], path.dirname(file));
    first = false;
  }
}
