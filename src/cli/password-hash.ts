// vxedge password-hash [--cost N]: the bcrypt hash of a password, for metrics.webConfig's
// basic_auth_users, made on the box itself by the system's crypt(3) (native/crypt.c): no
// htpasswd (apache2-utils) or Python needed on a gateway. The password comes from stdin, asked
// for twice without echo at a terminal, so that it is in no shell history or process list.
import { MAX_PASSWORD_BYTES } from '../health/basic-auth.js';
import { nativeBinding } from '../native/index.js';
import { EXIT_OK, EXIT_USAGE } from './exit-codes.js';

export const DEFAULT_COST = 10;

/**
 * Lines typed at the terminal without echo, one per prompt; null on Ctrl-C or Ctrl-D. One
 * raw-mode session for all of them: what was typed ahead (or pasted) after a line's end is
 * the next line's, not lost.
 */
function askHidden(prompts: string[]): Promise<string[] | null> {
  return new Promise((resolve) => {
    const input = process.stdin;
    const lines: string[] = [];
    let typed = '';
    process.stderr.write(prompts[0]);
    input.setRawMode(true);
    input.resume();
    const done = (v: string[] | null) => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      process.stderr.write('\n');
      resolve(v);
    };
    const onData = (b: Buffer) => {
      for (const ch of b.toString('utf8')) {
        if (ch === '\u0003' || ch === '\u0004') return done(null);
        if (ch === '\r' || ch === '\n') {
          lines.push(typed);
          typed = '';
          if (lines.length === prompts.length) return done(lines);
          process.stderr.write(`\n${prompts[lines.length]}`);
        } else if (ch === '\u007f' || ch === '\b') {
          typed = typed.slice(0, -1);
        } else {
          typed += ch;
        }
      }
    };
    input.on('data', onData);
  });
}

async function readAll(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Why `password` cannot be hashed for basic auth, or null. */
export function passwordProblem(password: string): string | null {
  if (password === '') return 'the password is empty';
  if (password.includes('\0')) return 'the password holds a NUL byte';
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return `the password is ${Buffer.byteLength(password)} bytes; bcrypt takes at most ${MAX_PASSWORD_BYTES}`;
  return null;
}

export async function runPasswordHash(costOption: string | undefined): Promise<number> {
  const cost = costOption === undefined ? DEFAULT_COST : Number(costOption);
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) {
    process.stderr.write(`vxedge: --cost ${costOption} is not a bcrypt cost (a whole number from 4 to 31; 10 is usual, each step doubles the time)\n`);
    return EXIT_USAGE;
  }
  let password: string | null;
  if (process.stdin.isTTY) {
    const typed = await askHidden(['Password: ', 'Again: ']);
    if (typed === null) return EXIT_USAGE;
    [password] = typed;
    if (typed[1] !== password) {
      process.stderr.write('vxedge: the two passwords differ; nothing printed\n');
      return EXIT_USAGE;
    }
  } else {
    // `echo "$PW" | vxedge password-hash`: the line's end is not part of the password.
    password = (await readAll()).replace(/\r?\n$/, '');
  }
  const problem = passwordProblem(password);
  if (problem) {
    process.stderr.write(`vxedge: ${problem}; nothing printed\n`);
    return EXIT_USAGE;
  }
  process.stdout.write(`${await nativeBinding().passwordHash(password, cost)}\n`);
  return EXIT_OK;
}
