// stateDir or runDir on a file system that is read-only for vxedge (EROFS): under the systemd
// unit (ProtectSystem=strict) every directory but /var/lib/vxedge and /run/vxedge is, so a
// stateDir on a /data partition made the gateway fail at start with a bare "read-only file
// system" that `vxedge check`, run as root outside the unit, does not reproduce. The error
// names the drop-in that fixes it. (writeFileAtomic is mocked to fail as the kernel does.)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';

vi.mock('../../src/util/atomic-file.js', async (orig) => ({
  ...(await orig<typeof import('../../src/util/atomic-file.js')>()),
  writeFileAtomic: async (file: string) => {
    throw Object.assign(new Error(`EROFS: read-only file system, open '${file}'`), { code: 'EROFS', errno: -30 });
  },
}));

const { loadOrCreateVtepMac, StateError } = await import('../../src/control/state.js');
const { readOnlyHint } = await import('../../src/util/read-only.js');

const dir = mkdtempSync(path.join(tmpdir(), 'vxedge-ro-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a read-only stateDir', () => {
  it('the VTEP MAC that cannot be stored: the error names the unit and ReadWritePaths for that directory', async () => {
    const stateDir = path.join(dir, 'data', 'vxedge');
    const err = await loadOrCreateVtepMac(stateDir, null).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(StateError);
    const msg = (err as Error).message;
    expect(msg).toContain(`cannot store the generated VTEP MAC in ${stateDir}/vtep-mac: EROFS`);
    expect(msg).toContain(`ReadWritePaths=${stateDir}`);
    expect(msg).toMatch(/systemctl edit vxedge/);
    expect(msg).toMatch(/make stateDir writable or set vxlan\.vtepMac$/);
  });

  it('says nothing more for other errors', () => {
    expect(readOnlyHint(Object.assign(new Error('x'), { code: 'EACCES' }), 'runDir', '/run/x')).toBe('');
    expect(readOnlyHint(null, 'runDir', '/run/x')).toBe('');
    expect(readOnlyHint(Object.assign(new Error('x'), { code: 'EROFS' }), 'runDir', '/srv/run')).toMatch(/runDir elsewhere needs .*ReadWritePaths=\/srv\/run/);
  });
});
