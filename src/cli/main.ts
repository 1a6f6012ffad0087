#!/usr/bin/env -S node --max-semi-space-size=1 --single-threaded --max-old-space-size=128
// vxedge command line: run | check | status | manifest | peers | rbac | fleet | retire | password-hash (docs/contract.md).
// User mistakes end with a short message and the contract's exit code, never a stack trace.
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadConfig, formatConfigError, formatConfigErrorLine } from '../config/index.js';
import { completeAnnotationPrefix } from '../config/formats.js';
import { ConfigError, type Config } from '../config/types.js';
import { readStatus, StatusFileError } from '../health/status-file.js';
import { parseMac } from '../util/mac.js';
import { renderCheckJson, renderStatus } from './render.js';
import { EXIT_FAIL, EXIT_OK, EXIT_USAGE } from './exit-codes.js';

// Each command's modules are loaded when it runs: `vxedge run` on a board never pays for
// fleet's or the cluster CLI's code, `vxedge status` never for the gateway's.
const command = {
  run: () => import('./run.js'),
  check: () => import('./check.js'),
  kube: () => import('./kube.js'),
  fleet: () => import('./fleet.js'),
  retire: () => import('./retire.js'),
  passwordHash: () => import('./password-hash.js'),
};

const HELP = `vxedge — userspace flannel-compatible VXLAN gateway for edge sites

Usage:
  vxedge run -c FILE              run the gateway in the foreground (SIGTERM/SIGINT stop, SIGHUP reloads)
  vxedge check -c FILE [--json]   validate the config and run the preflight checks
  vxedge status [-c FILE] [--json]  show the running gateway's status
  vxedge manifest -c FILE [--json] [--etcd]
                                  print the site's Kubernetes Node object for kubectl apply
                                  (--etcd: the etcdctl put of its lease, for flannel's etcd subnet manager)
  vxedge peers [FILE] [-c FILE] [--kube-annotation-prefix P]
                                  turn \`kubectl get nodes -o json\` (FILE or stdin) into the peers list
  vxedge rbac [-c FILE | --node-name NAME]
                                  print the least-privilege ServiceAccount, ClusterRole and binding for cluster.source kubernetes
                                  (an etcd site file: the etcdctl commands for its role and user)
  vxedge fleet (--url URL | -c FILE) [--prefix P] [--json] [--watch]
                                  the whole fleet from the broker's retained status and health (vxedge fleet --help)
  vxedge retire -c FILE [--dry-run] [--force] [--mac MAC]
                                  take a site that is gone for good out of the cluster (its own Node or etcd lease)
                                  and the fleet (its retained MQTT status and health); the gateway must be stopped
  vxedge password-hash [--cost N]
                                  the bcrypt hash of a password (stdin; asked for twice at a terminal)
                                  for metrics.webConfig's basic_auth_users
  vxedge --version | --help

Options:
  -c, --config FILE   site config (.json, .yaml, .yml); every key can be overridden by VXEDGE_* variables
  --json              machine-readable output
  --run-dir DIR       where to find status.json (default: the config's runDir, else /run/vxedge)
  --node-name NAME    rbac without a config: the site's Node name (vxedge-{site}-{node})
  --kube-annotation-prefix P
                      peers: flanneld's --kube-annotation-prefix, when not flannel.alpha.coreos.com
                      (default: the config's cluster.kubernetes.annotationPrefix)
  --dry-run           retire: read everything, say what would be removed, change nothing
  --force             retire: go on although the broker's retained status says the gateway is online
  --mac MAC           retire: the VTEP MAC of the box being retired, when not this machine's (a replaced box)
  --cost N            password-hash: bcrypt's cost, 4 to 31 (default 10; each step doubles the time)

Exit codes: 0 ok, 1 failure (or no gateway running for status), 2 invalid config or input.
`;

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** What each command takes besides -c, --help and --version: options, and how many arguments. */
const TAKES: Record<string, { options: string[]; args: number }> = {
  run: { options: [], args: 0 },
  check: { options: ['json'], args: 0 },
  status: { options: ['json', 'run-dir'], args: 0 },
  manifest: { options: ['json', 'etcd'], args: 0 },
  peers: { options: ['kube-annotation-prefix'], args: 1 },
  rbac: { options: ['node-name'], args: 0 },
  retire: { options: ['dry-run', 'force', 'mac'], args: 0 },
  'password-hash': { options: ['cost'], args: 0 },
};

/** An option or argument the command would silently ignore: a slip the user should hear of. */
function misused(cmd: string, takes: { options: string[]; args: number }, o: Record<string, unknown>, rest: string[]): string | null {
  const stray = Object.keys(o).filter((k) => o[k] !== undefined && !['config', 'help', 'version', ...takes.options].includes(k));
  if (stray.length) return `${cmd} does not take --${stray[0]}`;
  if (rest.length > takes.args) return `${cmd} takes ${takes.args ? 'one FILE' : 'no arguments'}, not "${rest[takes.args]}"`;
  return null;
}

function load(file: string | undefined): Config {
  if (!file) throw new UsageError('missing -c FILE (the site config)');
  return loadConfig(file);
}

class UsageError extends Error {}

/** --mac's value, normalised; a usage error naming the flag when it is no unicast MAC. */
function macOption(value: string): string {
  try {
    return parseMac(value);
  } catch (e) {
    throw new UsageError(`--mac ${(e as Error).message}`);
  }
}

/** --kube-annotation-prefix's value, as the config checks cluster.kubernetes.annotationPrefix. */
function prefixOption(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    completeAnnotationPrefix(value);
    return value;
  } catch (e) {
    throw new UsageError(`--kube-annotation-prefix ${(e as Error).message}`);
  }
}

export async function main(argv: string[]): Promise<number> {
  // fleet has options of its own (--url, --prefix, ...): it parses them itself.
  if (argv[0] === 'fleet') return (await command.fleet()).runFleet(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean' },
        etcd: { type: 'boolean' },
        'run-dir': { type: 'string' },
        'node-name': { type: 'string' },
        'kube-annotation-prefix': { type: 'string' },
        'dry-run': { type: 'boolean' },
        force: { type: 'boolean' },
        mac: { type: 'string' },
        cost: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    });
  } catch (e) {
    // parseArgs explains how to pass a positional that starts with "-"; none of ours does.
    const m = /^Unknown option '([^']+)'/.exec((e as Error).message);
    process.stderr.write(`vxedge: ${m ? `unknown option ${m[1]}` : (e as Error).message}\n\n${HELP}`);
    return EXIT_USAGE;
  }
  const { values: o, positionals } = parsed;
  const [cmd, ...rest] = positionals;
  const misuse = cmd !== undefined && Object.hasOwn(TAKES, cmd) ? misused(cmd, TAKES[cmd], o, rest) : null;
  if (misuse) {
    process.stderr.write(`vxedge: ${misuse} (vxedge --help)\n`);
    return EXIT_USAGE;
  }
  if (o.version) {
    process.stdout.write(`vxedge ${version()}\n`);
    return EXIT_OK;
  }
  if (o.help || cmd === 'help') {
    process.stdout.write(HELP);
    return EXIT_OK;
  }
  try {
    switch (cmd) {
      case 'run':
        return await (await command.run()).runGateway(load(o.config), o.config!, version());
      case 'check':
        return await (await command.check()).runCheck(load(o.config), o.json ?? false);
      case 'status':
        return await status(o.config, o['run-dir'], o.json ?? false);
      case 'manifest':
        return await (await command.kube()).runManifest(load(o.config), o.json ?? false, o.etcd ?? false);
      case 'peers':
        return await (await command.kube()).runPeers(rest[0], o.config ? load(o.config) : null, prefixOption(o['kube-annotation-prefix']));
      case 'rbac':
        return (await command.kube()).runRbac(o.config ? load(o.config) : null, o['node-name']);
      case 'retire':
        return await (await command.retire()).runRetire(load(o.config), { dryRun: o['dry-run'] ?? false, force: o.force ?? false, mac: o.mac === undefined ? null : macOption(o.mac) });
      case 'password-hash':
        return await (await command.passwordHash()).runPasswordHash(o.cost);
      case undefined:
        process.stderr.write(HELP);
        return EXIT_USAGE;
      default:
        process.stderr.write(`vxedge: unknown command "${cmd}"\n\n${HELP}`);
        return EXIT_USAGE;
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(formatConfigError(e) + '\n');
      // A tool that reads `check --json` gets a document for a file that does not load, too.
      if (cmd === 'check' && o.json) {
        process.stdout.write(renderCheckJson([{ name: 'config', ok: false, detail: formatConfigErrorLine(e), fix: 'correct each key named, then run vxedge check -c again' }]));
      }
      return EXIT_USAGE;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`vxedge: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

async function status(configFile: string | undefined, runDirOpt: string | undefined, json: boolean): Promise<number> {
  // --run-dir wins over the config's runDir, as rbac's --node-name over its Node name (it was
  // ignored beside -c); the file is then not read, so a config mid-edit does not hide the gateway.
  const runDir = runDirOpt ?? (configFile ? load(configFile).runDir : '/run/vxedge');
  let doc;
  try {
    doc = await readStatus(runDir);
  } catch (e) {
    if (!(e instanceof StatusFileError)) throw e;
    process.stderr.write(`vxedge: ${e.message}\n`);
    return EXIT_FAIL;
  }
  if (!doc) {
    // A file where the directory belongs read as "no gateway", which sends one looking for a gateway.
    if ((await stat(runDir).catch(() => null))?.isFile()) {
      process.stderr.write(`vxedge: ${runDirOpt !== undefined ? '--run-dir' : 'runDir'} ${runDir} is a file; give the directory that holds status.json (the config's runDir, /run/vxedge by default)\n`);
      return EXIT_USAGE;
    }
    process.stderr.write(`vxedge: no gateway is running (no live ${runDir}/status.json)\n`);
    return EXIT_FAIL;
  }
  process.stdout.write(json ? JSON.stringify(doc, null, 2) + '\n' : renderStatus(doc));
  return EXIT_OK;
}

// Run when executed, not when imported by tests.
if (process.argv[1] && new URL(import.meta.url).pathname === (await import('node:fs')).realpathSync(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`vxedge: internal error: ${(e as Error).stack ?? e}\n`);
      process.exitCode = EXIT_FAIL;
    },
  );
}
