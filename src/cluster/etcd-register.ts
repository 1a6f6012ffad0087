// Registration (cluster.register): keeps the site's own subnet lease in etcd, as flanneld keeps
// its node's. Our key `{prefix}/subnets/<our subnet>` carries exactly what flanneld writes
// (flannel-lease.ts encodeLease), on an etcd lease with a TTL (flannel: 24 h) renewed
// renewMarginS before expiry.
//
// Put-if-absent-or-ours: the key is written only when it is absent or already ours, in one
// transaction (compare the mod revision we saw, or version 0, then put), so two writers cannot
// both win; when someone else holds it we never overwrite it, and the error names the holder and
// what to do. If our key disappears (lease expired during an outage, etcd restarted without its
// data, someone deleted it) or our lease is gone, we write it again; a new public IP or MAC
// (setOwnLease) rewrites our value by the same rules. stop() stops renewing but leaves the key:
// the TTL frees it if we never come back, and a restarting gateway finds it and keeps its subnet.
//
// "Ours" means: the value's VtepMAC is our VTEP MAC (or one we wrote earlier in this run), or
// the key is attached to our etcd lease. The MAC is the one identity that survives a restart
// (it is generated once and kept in stateDir, or set in vxlan.vtepMac), while the public IP
// behind a NAT may change at any time; a different gateway, or a flannel node, has another
// MAC. (Two gateways configured with the same vxlan.vtepMac and overlay.subnet would both
// count as the owner: that configuration is broken anyway, as their traffic would mix.)
//
// The key as etcd holds it comes from the lease table the follower keeps (etcd-follow.ts);
// our writes' answers go into the same table, so a lost compare shows the key as it is now.
import type { Cidr } from '../config/types.js';
import type { Timer } from '../util/clock.js';
import { formatDuration } from '../util/duration.js';
import type { OwnLease } from './types.js';
import { cidrOverlaps } from '../util/ipv4.js';
import { describeHolder, encodeLease, leaseVtepMac, parseSubnetKey } from './flannel-lease.js';
import { EtcdKvError, leaseHex as hex, type EtcdKv, type KvEntry } from './etcd-kv.js';
import { OpError, type EtcdConnection } from './etcd-connection.js';
import type { LeaseTable } from './etcd-follow.js';

export interface RegistrarOptions {
  conn: EtcdConnection;
  leases: LeaseTable;
  /** Our key, and the subnet and VNI it is for (setOwnLease refuses another). */
  ownKey: string;
  subnet: Cidr;
  vni: number;
  /** cluster.register: false only checks setOwnLease and never writes. */
  register: boolean;
  /** TTL of the etcd lease we grant, and how long before expiry we renew it. */
  ttlS: number;
  marginMs: number;
  /** The table is listed and the config fits (writes are based on what the table holds). */
  synced(): boolean;
  /** Our key was written or found in place: the view may change. */
  changed(): void;
}

/** The site's subnet key held by another node, in words naming the holder. */
export function heldByAnother(subnet: Cidr, cur: KvEntry): string {
  return `the site's subnet ${subnet.text} is held in etcd by another node (${describeHolder(cur.value)}; key ${cur.key})`;
}

/** What frees it (the registrar takes the subnet only when the key is absent or ours); `holderMac`: the holder's VTEP MAC. */
export function freeTheSubnet(key: string, holderMac: string | null): string {
  const retire = holderMac ? ` or vxedge retire -c FILE --mac ${holderMac}, as for a box this one replaced` : '';
  return `If that node is alive, give this site a free overlay.subnet; if it is gone for good, delete the key (etcdctl del ${key}${retire}) or wait for its lease to expire`;
}

export class EtcdRegistrar {
  /** What is wrong with our registration, for status().error; null when nothing is. */
  registerError: string | null = null;

  private own: OwnLease | null = null;
  /** The value we last aimed to write (kept while the public IP is unknown again). */
  private desired: string | null = null;
  private leaseId: bigint | null = null;
  /** Monotonic ms when our lease expires at the latest; 0 when unknown. */
  private leaseExpiresAt = 0;
  private readonly writtenMacs = new Set<string>();
  private reconciling = false;
  private reconcileAgain = false;
  private regTimer: Timer | null = null;
  /**
   * Lost three compares in a row and waiting out the backoff: every write of the other
   * writer comes back as a watch event, and answering each at once would be a write war at
   * network speed (two boxes cloned with one VTEP MAC both take the key for theirs). Until
   * the timer, watch events do not start a pass.
   */
  private contended = false;
  private regFailures = 0;
  private renewTimer: Timer | null = null;
  private renewFailures = 0;
  /** The key of someone else's lease on our subnet that keeps us from registering; null when none. */
  private blockedBy: string | null = null;
  /** The renewal trouble last logged as a warning: 'failing' (before expiry), 'expired', or none. */
  private renewProblem: 'failing' | 'expired' | null = null;

  constructor(private readonly o: RegistrarOptions) {}

  private get conn(): EtcdConnection {
    return this.o.conn;
  }

  stop(): void {
    for (const t of [this.regTimer, this.renewTimer]) t?.cancel();
    this.regTimer = this.renewTimer = null;
  }

  setOwnLease(lease: OwnLease): void {
    if (lease.subnet.text !== this.o.subnet.text || lease.vni !== this.o.vni) {
      this.registerError = `our lease changed to subnet ${lease.subnet.text} VNI ${lease.vni}, but this etcd source follows ` +
        `${this.o.subnet.text} VNI ${this.o.vni}: restart the gateway to move the site to another subnet or VNI`;
      this.conn.log.error(this.registerError);
      return;
    }
    const o = this.own;
    if (o && o.publicIp === lease.publicIp && o.vtepMac === lease.vtepMac && o.name === lease.name) return; // nothing new
    this.own = { ...lease };
    this.registerError = null; // the next pass says again what is wrong, if anything
    if (lease.publicIp !== null) {
      try {
        this.desired = encodeLease({ publicIp: lease.publicIp, vni: lease.vni, vtepMac: lease.vtepMac });
      } catch (e) {
        this.registerError = `cannot announce our lease: ${(e as Error).message}`;
        this.conn.log.error(this.registerError);
        return;
      }
    }
    this.reconcile();
  }

  isOurs(e: KvEntry): boolean {
    if (this.leaseId !== null && e.lease === this.leaseId) return true;
    const mac = leaseVtepMac(e.value);
    return mac !== null && (mac === this.own?.vtepMac || this.writtenMacs.has(mac));
  }

  isRegistered(): boolean {
    const cur = this.o.leases.get(this.o.ownKey);
    if (!cur || this.desired === null || cur.value !== this.desired) return false;
    if (cur.lease === 0n) return true; // an operator's permanent reservation, with our value
    return cur.lease === this.leaseId && this.conn.clock.monotonic() < this.leaseExpiresAt;
  }

  /** Brings our key in line (serialised: one pass at a time, another one if asked meanwhile). */
  reconcile(): void {
    if (this.contended && this.regTimer !== null) return;
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = true;
    void (async () => {
      try {
        do {
          this.reconcileAgain = false;
          await this.reconcileOnce();
        } while (this.reconcileAgain && !this.conn.stopped);
      } catch (e) {
        this.conn.log.error('internal error registering our lease', { err: (e as Error).stack });
      } finally {
        this.reconciling = false;
      }
    })();
  }

  private wantRegistration(): boolean {
    return this.o.register && !this.conn.stopped && this.o.synced() && this.conn.kv !== null && this.own !== null && this.desired !== null;
  }

  private async reconcileOnce(): Promise<void> {
    if (!this.wantRegistration()) return;
    const { conn, leases, ownKey: key } = this.o;
    const kv = conn.kv!;
    const desired = this.desired!;
    try {
      // A few rounds: a lost compare (someone wrote in between) shows us the key as it is now.
      for (let round = 0; round < 3; round++) {
        const cur = leases.get(key) ?? null;
        if (cur && !this.isOurs(cur)) return this.conflict(cur);
        const other = this.overlapping();
        if (other) return this.conflict(other);
        this.blockedBy = null;
        // A key without an etcd lease is a permanent reservation (flannel's documented way to
        // pin a subnet): keep it permanent. Otherwise adopt the lease of a key we wrote in an
        // earlier run, if it still lives, rather than moving the key to a new one.
        const permanent = cur !== null && cur.lease === 0n;
        if (cur && !permanent && this.leaseId === null) {
          this.leaseId = cur.lease;
          this.leaseExpiresAt = 0;
        }
        if (!permanent) await this.ensureLease(kv);
        if (conn.stopped) return;
        if (cur && cur.value === desired && (permanent || cur.lease === this.leaseId)) return this.registeredAs(desired, permanent, false);
        const lease = permanent ? 0n : this.leaseId!;
        const r = await conn.call(kv.putIf(key, desired, lease, cur?.modRevision ?? 0n), `write ${key}`);
        if (conn.stopped) return;
        if (r.ok) {
          leases.apply(key, { key, value: desired, modRevision: r.revision, lease }, r.revision);
          return this.registeredAs(desired, permanent, true);
        }
        leases.apply(key, r.current, r.current?.modRevision ?? r.revision);
      }
      // Three compares lost in a row: something keeps writing our key. Said like any other
      // failure, so the health and `check` do not show a site that is not registered as fine.
      const delay = conn.backoff(this.regFailures++);
      this.registerError =
        `cannot register ${key}: another writer changed it in each of 3 attempts (a second gateway with this site's ` +
        `overlay.subnet and VTEP MAC? each box needs its own stateDir/vtep-mac); retrying in ${formatDuration(delay)}`;
      conn.log.warn(this.registerError);
      this.scheduleReconcile(delay);
      this.contended = true;
      this.reconcileAgain = false;
    } catch (e) {
      const cause = e instanceof OpError ? e.reason : e;
      if (cause instanceof EtcdKvError && cause.kind === 'lease-not-found') {
        conn.log.info('our etcd lease is gone (expired, revoked, or etcd lost its data); granting a new one', { lease: this.leaseId === null ? null : hex(this.leaseId) });
        this.leaseId = null;
        this.leaseExpiresAt = 0;
        this.reconcileAgain = true;
        return;
      }
      if (conn.stopped) return;
      const delay = conn.backoff(this.regFailures++);
      this.registerError = `cannot register ${key}: ${conn.describe(e)}; retrying in ${formatDuration(delay)}`;
      conn.log.warn(this.registerError);
      this.scheduleReconcile(delay);
    }
  }

  /**
   * Waiting out the backoff after a failed write or renewal: try now, the backoff started
   * afresh. True when it will.
   */
  retryNow(): boolean {
    let again = false;
    if (this.regTimer !== null && this.regFailures > 0) {
      this.regFailures = 0;
      this.scheduleReconcile(0);
      again = true;
    }
    if (this.renewTimer !== null && this.renewFailures > 0) {
      this.renewFailures = 0;
      this.renewAfter(0);
      again = true;
    }
    return again;
  }

  private scheduleReconcile(ms: number): void {
    this.regTimer?.cancel();
    this.contended = false;
    this.regTimer = this.conn.clock.after(ms, () => {
      this.regTimer = null;
      this.reconcile();
    });
  }

  /** Makes sure leaseId names a live etcd lease: renews one of unknown state, grants one when there is none. */
  private async ensureLease(kv: EtcdKv): Promise<void> {
    const now = this.conn.clock.monotonic();
    if (this.leaseId !== null && this.leaseExpiresAt > now + 1_000) return;
    if (this.leaseId !== null) {
      const ttl = await this.conn.call(kv.keepAliveOnce(this.leaseId), `renew lease ${hex(this.leaseId)}`);
      if (ttl > 0) {
        this.leaseExpiresAt = now + ttl * 1000;
        return;
      }
      this.leaseId = null;
    }
    const g = await this.conn.call(kv.grant(this.o.ttlS), `grant a ${this.o.ttlS} s lease`);
    this.leaseId = g.id;
    this.leaseExpiresAt = now + g.ttlS * 1000;
  }

  private registeredAs(value: string, permanent: boolean, wrote: boolean): void {
    const mac = this.own?.vtepMac;
    if (mac) this.writtenMacs.add(mac);
    this.regFailures = 0;
    this.regTimer?.cancel();
    this.regTimer = null;
    if (this.registerError !== null || wrote) {
      this.conn.log.info(wrote ? 'our subnet lease is written in etcd' : 'our subnet lease is in place in etcd', {
        key: this.o.ownKey, value, lease: permanent ? 'none (permanent reservation)' : hex(this.leaseId!),
      });
    }
    this.registerError = null;
    if (permanent) {
      this.renewTimer?.cancel();
      this.renewTimer = null;
    } else {
      this.scheduleRenew();
    }
    this.o.changed();
  }

  /**
   * Another node's lease under another key whose IPv4 subnet overlaps ours: a dual-stack key
   * ("10.244.100.0-24&fc00::-64", as flanneld writes with EnableIPv6) for our very subnet, or a
   * larger or smaller one around it. Writing ours next to it would give the flannel nodes two
   * routes for the same addresses.
   */
  private overlapping(): KvEntry | null {
    const { leases, ownKey, subnet } = this.o;
    const prefix = ownKey.slice(0, ownKey.lastIndexOf('/') + 1);
    for (const k of leases.keys()) {
      if (k === ownKey || !k.startsWith(prefix)) continue;
      const parsed = parseSubnetKey(k.slice(prefix.length));
      if (!parsed.ok || !cidrOverlaps(parsed.subnet, subnet)) continue;
      const e = leases.get(k)!;
      if (!this.isOurs(e)) return e;
    }
    return null;
  }

  /** Registration waits for a key to go (someone else's lease on our subnet). */
  isBlocked(): boolean {
    return this.blockedBy !== null;
  }

  private conflict(cur: KvEntry): void {
    const key = cur.key;
    this.blockedBy = key;
    this.registerError = `${heldByAnother(this.o.subnet, cur)}: vxedge does not take it over. ${freeTheSubnet(key, leaseVtepMac(cur.value))}, and vxedge registers at once`;
    this.conn.warnOnce(this.registerError);
    // A lease we granted for this key holds nothing now: give it back rather than leave it for a day.
    this.renewTimer?.cancel();
    this.renewTimer = null;
    const id = this.leaseId;
    this.leaseId = null;
    this.leaseExpiresAt = 0;
    if (id !== null && this.conn.kv) void this.conn.call(this.conn.kv.revoke(id), 'revoke our unused lease').catch(() => undefined);
  }

  private scheduleRenew(): void {
    const remaining = this.leaseExpiresAt - this.conn.clock.monotonic();
    this.renewAfter(Math.max(1_000, remaining - this.o.marginMs));
  }

  /** The next renewal in `ms` (replacing one pending); renew() arms the one after it, failing or not. */
  private renewAfter(ms: number): void {
    this.renewTimer?.cancel();
    this.renewTimer = this.conn.clock.after(ms, () => {
      this.renewTimer = null;
      void this.renew();
    });
  }

  private async renew(): Promise<void> {
    const { conn } = this;
    const kv = conn.kv;
    const id = this.leaseId;
    if (conn.stopped || !kv || id === null) return;
    const sent = conn.clock.monotonic();
    try {
      const ttl = await conn.call(kv.keepAliveOnce(id), `renew lease ${hex(id)}`);
      if (conn.stopped || this.leaseId !== id) return;
      this.renewFailures = 0;
      this.renewProblem = null;
      if (ttl > 0) {
        this.leaseExpiresAt = sent + ttl * 1000;
        this.scheduleRenew();
        return;
      }
      conn.log.info('our etcd lease expired; writing our key on a new one', { lease: hex(id) });
      this.leaseId = null;
      this.leaseExpiresAt = 0;
      this.reconcile();
    } catch (e) {
      if (conn.stopped || this.leaseId !== id) return;
      const left = this.leaseExpiresAt - conn.clock.monotonic();
      // Before expiry, retry often enough to get a try in before it (a third of what is left);
      // after it, etcd has dropped the lease if it is up at all, and hurrying buys nothing: the
      // plain backoff, not a call a second for as long as etcd is away.
      const backoff = conn.backoff(this.renewFailures++);
      const delay = left > 0 ? Math.max(1_000, Math.min(backoff, left / 3)) : backoff;
      const text = `cannot renew our etcd lease: ${conn.describe(e)}; ` +
        `${left > 0 ? `it expires in ${formatDuration(Math.round(left))}` : 'it may have expired'}; retrying in ${formatDuration(Math.round(delay))}`;
      // Once when renewal starts failing and once when the lease runs out, not on every retry.
      const stage = left > 0 ? 'failing' : 'expired';
      if (stage !== this.renewProblem) conn.log.warn(text);
      else conn.log.debug(text);
      this.renewProblem = stage;
      this.renewAfter(delay);
    }
  }
}
