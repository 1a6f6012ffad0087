// Persistent state in stateDir. Today that is our VTEP MAC: it is announced to the
// cluster in the Node object's backend-data, so it must survive restarts (flannel
// learned this the hard way: flannel-io/flannel#1795, stale VtepMAC drops traffic).
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';
import { readOnlyHint } from '../util/read-only.js';
import { parseMac, randomLocalMac } from '../util/mac.js';

export class StateError extends Error {
  override name = 'StateError';
}

/** The configured VTEP MAC, else the one kept in stateDir, else null (none made yet). */
export async function readVtepMac(stateDir: string, configured: string | null): Promise<{ mac: string; source: 'config' | 'state' } | null> {
  if (configured) return { mac: configured, source: 'config' };
  const file = join(stateDir, 'vtep-mac');
  try {
    return { mac: parseMac((await readFile(file, 'utf8')).trim()), source: 'state' };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StateError(`cannot read ${file}: ${(e as Error).message}; fix or delete the file, or set vxlan.vtepMac`);
  }
}

export async function loadOrCreateVtepMac(stateDir: string, configured: string | null): Promise<{ mac: string; source: 'config' | 'state' | 'generated' }> {
  const known = await readVtepMac(stateDir, configured);
  if (known) return known;
  const file = join(stateDir, 'vtep-mac');
  const mac = randomLocalMac();
  try {
    await mkdir(stateDir, { recursive: true });
    await writeFileAtomic(file, mac + '\n');
  } catch (e) {
    throw new StateError(`cannot store the generated VTEP MAC in ${file}: ${(e as Error).message}${readOnlyHint(e, 'stateDir', stateDir)}; make stateDir writable or set vxlan.vtepMac`);
  }
  return { mac, source: 'generated' };
}

/**
 * The PCP mapping nonce (RFC 6887 §11.1), kept in stateDir: a router that checks nonces
 * lets only the same nonce renew or delete a mapping, so a restarted gateway must reuse it.
 */
export async function loadOrCreatePcpNonce(stateDir: string): Promise<Uint8Array> {
  const file = join(stateDir, 'pcp-nonce');
  try {
    const hex = (await readFile(file, 'utf8')).trim();
    if (/^[0-9a-f]{24}$/.test(hex)) return Buffer.from(hex, 'hex');
  } catch {
    // none yet (or unreadable): a new one
  }
  const nonce = randomBytes(12);
  try {
    await mkdir(stateDir, { recursive: true });
    await writeFileAtomic(file, nonce.toString('hex') + '\n');
  } catch {
    // Not kept: this run still works; a restart just cannot renew the old mapping.
  }
  return nonce;
}
