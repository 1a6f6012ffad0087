// The addon's packet code under the sanitizers (scripts/fuzz-native, docs/native.md
// "Fuzzing"): gro.c, tso.c and csum.c built into a standalone harness with AddressSanitizer
// and UBSan, driven for a few seconds with valid packets and mutations of them; and udpSend's
// path through the sender thread (sender.c) under ThreadSanitizer, which no test through the
// loaded addon can see: a data race leaves no trace in the bytes sent. No Node addon, no
// network (the sends go to a pair of AF_UNIX sockets), no privileges; needs gcc with its
// sanitizer runtimes, which node-gyp's compiler brings on Debian.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO } from './scenario.js';

function fuzz(seconds: number, ...targets: string[]): { status: number | null; out: string } {
  const r = spawnSync('scripts/fuzz-native/run', [String(seconds), ...targets], {
    cwd: REPO,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, FUZZ_UNIX: '1' },
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe.skipIf(process.platform !== 'linux')('native packet code under the sanitizers (scripts/fuzz-native)', () => {
  it('gro, tso and udpSend on mutated packets: no memory error, no undefined behaviour, every output well formed', () => {
    const r = fuzz(3, 'gro', 'tso', 'send');
    expect(r.status, r.out).toBe(0);
    for (const t of ['gro', 'tso', 'send']) expect(r.out, r.out).toMatch(new RegExp(`harness ${t}: \\d+ iterations, no error`));
    // The send checks saw outer ECN fields: on single datagrams, on UDP_SEGMENT messages, and on
    // messages of joined datagrams (the join's ECN test), not only Not-ECT.
    expect(r.out, r.out).toMatch(/harness send: sendmmsg checked: [1-9]\d* messages with IP_TOS \([1-9]\d* with UDP_SEGMENT, [1-9]\d* of joined datagrams\)/);
  }, 120_000);

  it('the sender thread: no data race between the JS thread and the thread sending its batches (TSan)', () => {
    // Before the fix the thread cleared a set's flow filter (tx_send -> tx_reset) while the
    // JS thread read it (sender_held_flows): TSan reported it within a second or two.
    const r = fuzz(4, 'thread');
    expect(r.out, r.out).not.toMatch(/ThreadSanitizer/);
    expect(r.status, r.out).toBe(0);
    expect(r.out, r.out).toMatch(/harness thread: \d+ iterations, no error/);
    expect(r.out, r.out).toMatch(/harness thread: sendmmsg checked: [1-9]\d* messages with IP_TOS \([1-9]\d* with UDP_SEGMENT, [1-9]\d* of joined datagrams\)/);
  }, 120_000);
});
