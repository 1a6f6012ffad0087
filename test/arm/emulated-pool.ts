// A vitest pool whose worker is another Node executable: vitest's own `forks` worker
// (ForksPoolWorker), started with child_process.fork's execPath set to `node` (a wrapper
// that runs the ARM Node under qemu-user). The IPC channel (fd inherited through the
// wrapper and qemu) and the structured-clone serialization are Node's own, the same V8
// format on both sides; the worker asks the host vitest for transformed modules over it.
import { fork, type ChildProcess } from 'node:child_process';
import { ForksPoolWorker, type PoolRunnerInitializer } from 'vitest/node';

type PoolOptions = ConstructorParameters<typeof ForksPoolWorker>[0];

/** The fields of ForksPoolWorker its start() uses (they are not part of its public type). */
interface ForksInternals {
  _fork?: ChildProcess;
  entrypoint: string;
  env: NodeJS.ProcessEnv;
  execArgv: string[];
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

class OtherNodeWorker extends ForksPoolWorker {
  override name = 'emulated';
  constructor(
    options: PoolOptions,
    private readonly node: string,
  ) {
    super(options);
  }

  /** ForksPoolWorker.start with `execPath`: the child, its output piped to vitest's. */
  override async start(): Promise<void> {
    const w = this as unknown as ForksInternals;
    if (w._fork) return;
    w._fork = fork(w.entrypoint, [], { execPath: this.node, env: w.env, execArgv: w.execArgv, stdio: 'pipe', serialization: 'advanced' });
    for (const [from, to] of [[w._fork.stdout!, w.stdout], [w._fork.stderr!, w.stderr]] as const) {
      to.setMaxListeners(to.getMaxListeners() + 1); // stop() takes it back
      from.pipe(to);
    }
  }
}

/** The pool for vitest's `pool` option; `node` is the executable that runs the worker. */
export function emulatedPool(node: string): PoolRunnerInitializer {
  if (!node) throw new Error('VXARM_NODE is not set: scripts/arm-test runs this configuration');
  return { name: 'emulated', createPoolWorker: (options) => new OtherNodeWorker(options, node) };
}
