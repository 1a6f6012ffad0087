// The gateway as it ships for an ARM board, run in the lab: the official ARM Node 20 under
// qemu-user (`qemu-<arch>-static -L <sysroot>`, no binfmt registration needed) running
// /usr/lib/vxedge/dist/cli/main.js of the .deb payload that scripts/package builds, with
// the Node flags of that file's #! line (those systemd's unit uses too). The Node, the
// sysroot and the unpacked packages come from scripts/arm-runtime (cached in
// /var/cache/vxedge-arm). qemu-user forwards the syscalls to this kernel, so the emulated
// gateway opens its TUN device and socket in the lab's gateway namespace like a native one,
// and the native tools it starts (ip) run natively.
import path from 'node:path';
import { REPO_ROOT, run } from './harness.js';
import { preloadEnv, shippedNodeFlags, type GatewayLauncher, type Preload } from './vxedge.js';

export type ArmTarget = 'arm64' | 'armv7';

/** What scripts/arm-runtime TARGET --app prints. */
interface ArmRuntime {
  QEMU: string;
  SYSROOT: string;
  NODE: string;
  NODE_VERSION: string;
  APP: string;
}

/** A cold fetch and package build takes a minute or two; a cached one about a second. */
export const ARM_PREPARE_TIMEOUT_MS = 10 * 60_000;

const CC: Record<ArmTarget, string> = { arm64: 'aarch64-linux-gnu-gcc', armv7: 'arm-linux-gnueabihf-gcc' };
const DEB_ARCH: Record<ArmTarget, string> = { arm64: 'arm64', armv7: 'armhf' };

async function armRuntime(target: ArmTarget): Promise<ArmRuntime> {
  const r = await run([path.join(REPO_ROOT, 'scripts', 'arm-runtime'), target, '--app'], { timeoutMs: ARM_PREPARE_TIMEOUT_MS - 5_000 });
  if (r.code !== 0) throw new Error(`scripts/arm-runtime ${target} --app: code ${r.code}${r.timedOut ? ' (timed out)' : ''}\n${r.stderr}`);
  if (r.stderr) console.log(r.stderr.trimEnd()); // what it fetched or built, and how long that took
  const vars = Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  for (const k of ['QEMU', 'SYSROOT', 'NODE', 'NODE_VERSION', 'APP']) {
    if (!vars[k]) throw new Error(`scripts/arm-runtime printed no ${k}:\n${r.stdout}`);
  }
  return vars as unknown as ArmRuntime;
}

export class EmulatedLauncher implements GatewayLauncher {
  readonly emulated = true;
  readonly arch: string;
  /** Measured: an emulated gateway starts in 2-4 s where the native one takes under 1 s. */
  readonly slowdown = 3;
  readonly cc: string;
  private rt: (ArmRuntime & { flags: string[] }) | null = null;
  private preparing: Promise<void> | null = null;

  constructor(readonly target: ArmTarget) {
    this.cc = CC[target];
    this.arch = target === 'arm64' ? 'arm64' : 'arm';
  }

  get appDir(): string {
    return this.runtime().APP;
  }

  get name(): string {
    const node = this.rt ? `Node ${this.rt.NODE_VERSION}` : 'Node 20';
    return `${node} ${this.target} under qemu-user, the vxedge_*_${DEB_ARCH[this.target]}.deb payload`;
  }

  prepare(): Promise<void> {
    this.preparing ??= (async () => {
      const rt = await armRuntime(this.target);
      const main = path.join(rt.APP, 'dist', 'cli', 'main.js');
      this.rt = { ...rt, flags: shippedNodeFlags(main) };
    })();
    return this.preparing;
  }

  argv(args: string[], preload?: Preload): string[] {
    const { QEMU, SYSROOT, NODE, APP, flags } = this.runtime();
    // -E sets the guest's environment: the preload is for the emulated Node, not for qemu.
    const env = preload ? preloadEnv(preload).flatMap((e) => ['-E', e]) : [];
    return [QEMU, '-L', SYSROOT, ...env, NODE, ...flags, path.join(APP, 'dist', 'cli', 'main.js'), ...args];
  }

  nodeArgv(args: string[]): string[] {
    const { QEMU, SYSROOT, NODE } = this.runtime();
    return [QEMU, '-L', SYSROOT, NODE, ...args];
  }

  private runtime(): ArmRuntime & { flags: string[] } {
    if (!this.rt) throw new Error('EmulatedLauncher: prepare() first');
    return this.rt;
  }
}
