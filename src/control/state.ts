// Persistent state in stateDir. Today that is our VTEP MAC: it is announced to the
// cluster in the Node object's backend-data, so it must survive restarts (flannel
// learned this the hard way: flannel-io/flannel#1795, stale VtepMAC drops traffic).
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';
import { parseMac, randomLocalMac } from '../util/mac.js';

export class StateError extends Error {
  override name = 'StateError';
}

export async function loadOrCreateVtepMac(stateDir: string, configured: string | null): Promise<{ mac: string; source: 'config' | 'state' | 'generated' }> {
  if (configured) return { mac: configured, source: 'config' };
  const file = join(stateDir, 'vtep-mac');
  try {
    return { mac: parseMac((await readFile(file, 'utf8')).trim()), source: 'state' };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new StateError(`cannot read ${file}: ${(e as Error).message}; fix or delete the file, or set vxlan.vtepMac`);
    }
  }
  const mac = randomLocalMac();
  try {
    await mkdir(stateDir, { recursive: true });
    await writeFileAtomic(file, mac + '\n');
  } catch (e) {
    throw new StateError(`cannot store the generated VTEP MAC in ${file}: ${(e as Error).message}; make stateDir writable or set vxlan.vtepMac`);
  }
  return { mac, source: 'generated' };
}
