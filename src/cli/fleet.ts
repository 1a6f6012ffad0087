#!/usr/bin/env node
// `vxedge fleet`: the whole fleet from the broker, for operators and monitoring. Every gateway
// keeps two retained messages (src/health/mqtt.ts): {prefix}/{site}/{node}/status and
// …/health. This subscribes to both for every site and node, takes what the broker holds
// retained, prints one row per gateway (rules and rendering: fleet-view.ts) and exits:
//   0  gateways were found and every one is online, current and ok
//   1  any is offline, stale, not ok or malformed, or none was found
//   2  bad arguments, unreadable files, or the broker cannot be reached / refuses us
// so that a monitoring system can run it as a check. With --watch it stays subscribed and
// prints a line for every gateway that changes, until SIGINT/SIGTERM.
//
// The command line (flags over the -c site file's `mqtt` section) and the reader's client
// options are fleet-options.ts; this file is the session: connect, collect, print, watch.
// Connecting is the gateway's own code (mqtt-options.ts). MQTT 5 first (a retained health then
// arrives with the expiry time the broker has left, the clock-free way to tell a stale
// document), 3.1.1 when the broker does not speak 5.
//
// MQTT has no "end of the retained messages" marker, and a read-only user may not publish a
// sentinel of its own. Brokers send the retained messages right after the SUBACK, so the
// collection ends after a short quiet period after the SUBACK, and at the latest after --wait.
import { realpathSync } from 'node:fs';
import { readFile as fsReadFile } from 'node:fs/promises';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { formatConfigError } from '../config/index.js';
import { ConfigError } from '../config/types.js';
import { DEFAULT_BACKOFF, backoffDelay } from '../health/mqtt-backoff.js';
import { connectOnce, type ConnectResult } from '../health/mqtt-connect.js';
import { describeMqttFailure, isUnsupportedProtocol } from '../health/mqtt-errors.js';
import { MqttSetupError, closeClient, connectClient, ignoredTlsKeys, loadSecrets, topics, type FileReader, type MqttSecrets, type ProtocolVersion } from '../health/mqtt-options.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import { formatDuration } from '../util/duration.js';
import { certValidity } from '../util/tls-failure.js';
import { clearRetained } from '../health/mqtt-retained.js';
import { FleetRecords, fleetExitCode, fleetFilters, formatAge, renderChange, renderRemoved, renderTable, rowJson, rowSignature, type FleetRow } from './fleet-view.js';
import { FLEET_HELP, UsageError, fleetOptions, readerClientOptions, type FleetOptions } from './fleet-options.js';

export { FLEET_HELP, UsageError, fleetOptions, readerClientOptions, type FleetOptions } from './fleet-options.js';

export const EXIT_OK = 0;
export const EXIT_NOT_OK = 1;
export const EXIT_UNREACHABLE = 2;

const DISCONNECT_MS = 500;
/** How often --watch re-evaluates staleness (a document goes stale without a message). */
const WATCH_TICK_MS = 1000;

export interface FleetIo {
  stdout(s: string): void;
  stderr(s: string): void;
  clock: Clock;
  /** For -c: the VXEDGE_* overrides, as for `vxedge run`. */
  env: NodeJS.ProcessEnv;
  /** MQTT.js connect (unit tests pass a fake client). */
  connect(url: string, opts: IClientOptions): MqttClient;
  readFile: FileReader;
  /** In [0, 1): the jitter of --watch's reconnect backoff. */
  random(): number;
  /** --watch: resolves on SIGINT or SIGTERM; dispose() removes the handlers. */
  interrupted(): { promise: Promise<void>; dispose(): void };
}

const defaultIo: FleetIo = {
  stdout: (s) => void process.stdout.write(s),
  stderr: (s) => void process.stderr.write(s),
  clock: systemClock,
  env: process.env,
  connect: (url, opts) => connectClient(mqtt, url, opts),
  readFile: fsReadFile,
  random: Math.random,
  interrupted: () => {
    let resolve!: () => void;
    let fired = false;
    const promise = new Promise<void>((r) => (resolve = r));
    const on = () => {
      // Node's own teardown, after the event loop has emptied, closes the signal handles and
      // so gives SIGINT back its default action: a signal that comes in that window kills the
      // process and loses the exit code (timeout(1) forwards the one the process group got a
      // little later; on a busy machine, late enough). process.exit() from 'beforeExit' ends
      // the process with process.exitCode without that teardown.
      if (!fired) process.once('beforeExit', () => process.exit());
      fired = true;
      resolve();
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
    // Once a signal came, the handlers stay: the process is on its way out, and a second SIGINT
    // must not kill it by signal and lose the exit code.
    return { promise, dispose: () => void (fired || (process.off('SIGINT', on), process.off('SIGTERM', on))) };
  },
};

/** `vxedge fleet ARGV…` → the exit code. Never throws for a user's mistake or the broker's trouble. */
export async function runFleet(argv: string[], io: Partial<FleetIo> = {}): Promise<number> {
  const x: FleetIo = { ...defaultIo, ...io };
  let o: FleetOptions | 'help';
  try {
    o = fleetOptions(argv, x.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      x.stderr(formatConfigError(e) + '\n');
      return EXIT_UNREACHABLE;
    }
    if (e instanceof UsageError) {
      x.stderr(`vxedge fleet: ${e.message}\n(vxedge fleet --help shows the options)\n`);
      return EXIT_UNREACHABLE;
    }
    throw e;
  }
  if (o === 'help') {
    x.stdout(FLEET_HELP);
    return EXIT_OK;
  }
  const ignored = ignoredTlsKeys(o.mqtt);
  if (ignored.length) x.stderr(`vxedge fleet: ${ignored.join(', ')} (--ca/--cert/--key) not used: the URL is not mqtts:// or wss://\n`);
  return new FleetSession(o, x).run();
}

type ErrLike = Error & { code?: string | number };

/** One run: connect, collect, print; with --watch, keep going. */
class FleetSession {
  private readonly records: FleetRecords;
  private client: MqttClient | null = null;
  private protocolVersion: ProtocolVersion = 5;
  private lastError: ErrLike | null = null;
  /** Called on every message while a collection waits for quiet. */
  private onActivity: (() => void) | null = null;
  /** The client's collection is done: from now on a close is a lost connection (collect() handles earlier ones). */
  private established = false;
  private watching = false;
  private closing = false;
  /** --watch: what was last printed per gateway ("site/node" → signature). */
  private readonly shown = new Map<string, string>();
  private retryTimer: Timer | null = null;
  private failures = 0;
  private lastFailureLine = '';

  constructor(
    private readonly o: FleetOptions,
    private readonly io: FleetIo,
  ) {
    this.records = new FleetRecords(o.prefix);
  }

  async run(): Promise<number> {
    // Installed first, so that Ctrl-C during the first collection ends --watch cleanly too.
    const stop = this.o.watch ? this.io.interrupted() : null;
    try {
      const failure = await this.session();
      if (failure) {
        this.io.stderr(`vxedge fleet: ${failure}\n`);
        return EXIT_UNREACHABLE;
      }
      if (this.o.forget.length) return await this.forget();
      const rows = this.rows();
      this.printSnapshot(rows);
      if (!stop) return fleetExitCode(rows);
      return await this.watch(stop.promise);
    } finally {
      stop?.dispose();
      await this.close();
    }
  }

  private now() {
    return { wall: this.io.clock.now(), mono: this.io.clock.monotonic() };
  }

  private rows(): FleetRow[] {
    return this.records.rows(this.now(), this.o.intervalMs);
  }

  /** Secrets, connection (5, else 3.1.1), subscription and collection. A failure in words, or null. */
  private async session(): Promise<string | null> {
    let secrets: MqttSecrets;
    let r: ConnectResult;
    try {
      // Read at every attempt, as the gateway does: a rotated certificate needs no restart of --watch.
      secrets = await loadSecrets(this.o.mqtt, this.io.readFile);
      // Its options are made first: a proxy variable that cannot be used is a setup error too.
      r = await this.connect(secrets);
    } catch (e) {
      if (e instanceof MqttSetupError) return e.message;
      throw e;
    }
    if (!r.client && this.protocolVersion === 5 && isUnsupportedProtocol(r.err)) {
      this.protocolVersion = 4;
      r = await this.connect(secrets);
    }
    if (!r.client) {
      const tls = { nowMs: this.io.clock.now(), synchronised: this.io.clock.synchronised?.() ?? null, clientCert: secrets.cert ? certValidity(secrets.cert) : null };
      return describeMqttFailure(r.err, this.o.broker, false, { tls }).line.replace(/^mqtt /, '');
    }
    this.attach(r.client);
    const failure = await this.collect(r.client);
    if (failure) {
      this.client = null;
      closeClient(r.client);
      return failure;
    }
    this.established = true;
    return null;
  }

  /** One connection attempt, bounded; resolves with the connected client or the attempt's error. */
  private connect(secrets: MqttSecrets): Promise<ConnectResult> {
    return connectOnce(this.io, this.o.mqtt.url!, readerClientOptions(this.o, secrets, this.protocolVersion), this.o.timeoutMs);
  }

  /** The handlers of a connected client for its whole life. */
  private attach(client: MqttClient): void {
    this.client = client;
    this.established = false;
    this.lastError = null;
    client.on('error', (e: ErrLike) => {
      if (client === this.client) this.lastError ??= e;
    });
    client.on('message', (topic: string, payload: Buffer, packet: { properties?: { messageExpiryInterval?: number } }) => {
      if (client !== this.client) return;
      const expiry = packet?.properties?.messageExpiryInterval;
      const key = this.records.apply(topic, payload, {
        receivedAt: this.io.clock.monotonic(),
        expiryS: typeof expiry === 'number' && Number.isFinite(expiry) ? expiry : null,
      });
      this.onActivity?.();
      if (key !== null && this.watching) this.showChanges([key]);
    });
    client.on('close', () => {
      if (client !== this.client || this.closing || !this.established) return;
      this.established = false;
      this.client = null;
      closeClient(client);
      if (this.watching) this.connectionLost();
    });
  }

  /**
   * Subscribes to every gateway's status and health and waits until the retained messages have
   * arrived: a quiet period after the SUBACK (reset by every message), at most waitMs.
   */
  private collect(client: MqttClient): Promise<string | null> {
    const f = fleetFilters(this.o.prefix);
    const clock = this.io.clock;
    return new Promise((resolve) => {
      let subacked = false;
      let quiet: Timer | null = null;
      let bound: Timer | null = null;
      let done = false;
      const finish = (failure: string | null) => {
        if (done) return;
        done = true;
        for (const t of [guard, quiet, bound]) t?.cancel();
        this.onActivity = null;
        client.off('close', onClose);
        resolve(failure);
      };
      const quietFor = (ms: number) => {
        quiet?.cancel();
        quiet = clock.after(ms, () => finish(null), { keepAlive: true });
      };
      const onClose = () => {
        const why = this.lastError ? `: ${this.lastError.message}` : '';
        finish(`${this.where()} closed the connection ${subacked ? 'while sending the retained messages' : 'before acknowledging the subscription'}${why}`);
      };
      const guard = clock.after(this.o.timeoutMs, () => finish(`${this.where()} did not acknowledge the subscription to ${f.status} within ${formatDuration(this.o.timeoutMs)}`), {
        keepAlive: true,
      });
      client.on('close', onClose);
      this.onActivity = () => {
        if (subacked) quietFor(this.o.quietMs);
      };
      try {
        client.subscribe([f.status, f.health], { qos: 1 }, (err) => {
          if (err) {
            finish(`${this.where()} refused the subscription to ${f.status} and ${f.health} (${err.message}); this user needs read access to ${this.o.prefix}/#`);
            return;
          }
          subacked = true;
          guard.cancel();
          bound = clock.after(this.o.waitMs, () => finish(null), { keepAlive: true });
          quietFor(Math.min(this.o.quietMs, this.o.waitMs));
        });
      } catch (e) {
        finish(`subscribing failed: ${(e as Error).message}`);
      }
    });
  }

  private where(): string {
    return `the broker at ${this.o.broker.host}:${this.o.broker.port}`;
  }

  private printSnapshot(rows: FleetRow[]): void {
    if (this.o.json) {
      this.io.stdout(this.o.watch ? '' : JSON.stringify(rows.map(rowJson), null, 2) + '\n');
    } else if (rows.length > 0) {
      this.io.stdout(renderTable(rows));
    }
    if (this.o.watch) this.showChanges(rows.map(key), !this.o.json);
    if (rows.length === 0) {
      const f = fleetFilters(this.o.prefix);
      this.io.stderr(`vxedge fleet: no gateway found: ${this.where()} holds no retained ${f.status} or ${f.health}${this.o.watch ? '; watching' : ''}\n`);
    }
    if (this.records.ignored > 0) {
      this.io.stderr(`vxedge fleet: more than ${this.records.max} gateways; messages of ${this.records.ignored} more were ignored\n`);
    }
  }

  /**
   * --watch: prints the gateways among `keys` whose row changed since it was last printed (or
   * that were removed); `silent` only records them (the table shows them already).
   */
  private showChanges(keys: Iterable<string>, silent = false): void {
    const now = this.now();
    for (const k of keys) {
      const row = this.records.row(k, now, this.o.intervalMs);
      if (!row) {
        if (!this.shown.delete(k)) continue;
        if (silent) continue;
        const [site, node] = k.split('/');
        this.io.stdout(this.o.json ? JSON.stringify({ site, node, removed: true, at: iso(now.wall) }) + '\n' : renderRemoved(k, now.wall));
        continue;
      }
      const sig = rowSignature(row);
      if (this.shown.get(k) === sig) continue;
      this.shown.set(k, sig);
      if (silent) continue;
      this.io.stdout(this.o.json ? JSON.stringify({ ...rowJson(row), at: iso(now.wall) }) + '\n' : renderChange(row, now.wall));
    }
  }

  /**
   * --forget: clears each named gateway's retained status and health, read back to be sure
   * (mqtt-retained.ts), unless it is online with a current health document: a gateway that
   * runs would publish them again, and hiding it would be wrong.
   */
  private async forget(): Promise<number> {
    const rows = new Map(this.rows().map((r) => [key(r), r]));
    let code = EXIT_OK;
    const refuse = (id: string, why: string) => {
      this.io.stderr(`vxedge fleet: ${id} not forgotten: ${why}\n`);
      code = EXIT_NOT_OK;
    };
    for (const id of this.o.forget) {
      const row = rows.get(id);
      if (!row) {
        refuse(id, `${this.where()} holds no retained status or health under ${this.o.prefix}/${id}/`);
        continue;
      }
      if (row.status === 'online' && !row.stale) {
        refuse(id, 'it is online and its health is current; stop that gateway first (or retire it: vxedge retire -c its site file)');
        continue;
      }
      const [site, node] = id.split('/');
      const t = topics(this.o.prefix, site, node);
      try {
        await clearRetained(this.client!, [t.health, t.status], this.io.clock, this.o.timeoutMs);
      } catch (e) {
        refuse(id, (e as Error).message);
        continue;
      }
      const was = `${row.status ?? 'no status'}${row.ageMs !== null ? `, last health ${formatAge(row.ageMs)} ago` : ''}`;
      this.io.stdout(`forgot ${id} (${was}): its retained status and health are cleared; its Node or lease in the cluster is not touched (vxedge retire -c its site file removes both)\n`);
    }
    return code;
  }

  private async watch(stopped: Promise<void>): Promise<number> {
    this.watching = true;
    // Rows also change without a message: a document goes stale.
    const tick = this.io.clock.every(WATCH_TICK_MS, () => {
      if (this.established) this.showChanges(new Set([...this.shown.keys(), ...this.rows().map(key)]));
    }, { keepAlive: true });
    await stopped;
    tick.cancel();
    this.watching = false;
    this.retryTimer?.cancel();
    if (!this.established || !this.client?.connected) {
      this.io.stderr(`vxedge fleet: not connected to ${this.where()} at the end; the fleet's state is unknown\n`);
      return EXIT_UNREACHABLE;
    }
    return fleetExitCode(this.rows());
  }

  /** --watch: the connection dropped; say so and reconnect with backoff (jittered, 1 s up to 60 s). */
  private connectionLost(): void {
    const line = describeMqttFailure(this.lastError, this.o.broker, true).line.replace(/^mqtt /, '');
    this.io.stderr(`vxedge fleet: ${line}\n`);
    this.lastFailureLine = '';
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.failures++, DEFAULT_BACKOFF, this.io.random);
    this.retryTimer = this.io.clock.after(delay, () => void this.reconnect(), { keepAlive: true });
  }

  private async reconnect(): Promise<void> {
    this.retryTimer = null;
    if (!this.watching) return;
    let failure: string | null;
    try {
      failure = await this.session();
    } catch (e) {
      failure = (e as Error).message;
    }
    if (!this.watching || this.closing) {
      // Stopped while this attempt ran: close() has been, so the new client is ended here.
      const c = this.client;
      this.client = null;
      if (c) closeClient(c);
      return;
    }
    if (failure) {
      // One line per distinct failure, not one per attempt.
      if (failure !== this.lastFailureLine) this.io.stderr(`vxedge fleet: ${failure}; retrying\n`);
      this.lastFailureLine = failure;
      this.scheduleReconnect();
      return;
    }
    this.failures = 0;
    this.io.stderr(`vxedge fleet: reconnected to ${this.where()}\n`);
    this.showChanges(new Set([...this.shown.keys(), ...this.rows().map(key)]));
  }

  /** A clean DISCONNECT, bounded; then the socket is closed regardless. */
  private async close(): Promise<void> {
    this.closing = true;
    this.retryTimer?.cancel();
    const c = this.client;
    this.client = null;
    if (!c) return;
    if (c.connected) {
      await new Promise<void>((resolve) => {
        const t = this.io.clock.after(DISCONNECT_MS, resolve, { keepAlive: true });
        try {
          c.end(false, {}, () => {
            t.cancel();
            resolve();
          });
        } catch {
          t.cancel();
          resolve();
        }
      });
    }
    closeClient(c);
  }
}

function key(r: FleetRow): string {
  return `${r.site}/${r.node}`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

// Run when executed (`node dist/cli/fleet.js …`), not when imported (by main.ts or tests).
if (process.argv[1] && new URL(import.meta.url).pathname === realpathSync(process.argv[1])) {
  runFleet(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`vxedge fleet: internal error: ${(e as Error).stack ?? e}\n`);
      // Not 1: that would say "the fleet is not ok", which is not known.
      process.exitCode = EXIT_UNREACHABLE;
    },
  );
}
