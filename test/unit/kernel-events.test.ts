// control/kernel-events.ts against a fake binding: the notices' bits reach `changed`, an
// overflow (a poll error the read takes) restarts the poll, and where netlink cannot be had
// or breaks, the gateway goes on with its periodic refresh, saying so once.
import { describe, expect, it } from 'vitest';
import { KernelEvents, type KernelEventsIo } from '../../src/control/kernel-events.js';
import { NETLINK_LINK, NETLINK_LOST, NETLINK_ROUTE_GONE, type PollHandle } from '../../src/native/index.js';
import { CaptureLog } from '../support/capture-log.js';

type OnReadable = (err?: Error) => void;

function fakeIo(opts: { openFails?: Error } = {}) {
  const polls = new Map<PollHandle, OnReadable>();
  const reads: (number | Error)[] = [];
  const calls: string[] = [];
  let closed = 0;
  const io: KernelEventsIo = {
    netlinkOpen: (neighbours) => {
      if (opts.openFails) throw opts.openFails;
      calls.push(`open${neighbours ? ' with neighbours' : ''}`);
      return 42;
    },
    netlinkRead: (fd, device, underlay) => {
      calls.push(`read ${fd} ${device} ${underlay}`);
      const r = reads.shift() ?? 0;
      if (r instanceof Error) throw r;
      return r;
    },
    pollStart: (fd, cb) => {
      const h = { fd } as unknown as PollHandle;
      polls.set(h, cb as OnReadable);
      return h;
    },
    pollStop: (h) => void polls.delete(h),
    close: () => void closed++,
  };
  return {
    io, reads, calls,
    polls: () => polls.size,
    closed: () => closed,
    /** The kernel makes the fd readable (or libuv reports a poll error). */
    fire: (err?: Error) => [...polls.values()][0]!(err),
  };
}

function events(io: KernelEventsIo, neighbours = false) {
  const log = new CaptureLog();
  const changed: number[] = [];
  const ke = new KernelEvents({ io, device: 'flannel.1', underlay: 'eth0', neighbours, changed: (b) => changed.push(b), log });
  return { ke, changed, warnings: () => log.lines.filter((l) => l.level === 'warn').map((l) => l.msg) };
}

const sysError = (code: string, syscall: string) => Object.assign(new Error(`${syscall}: ${code}`), { code, syscall });

describe('KernelEvents', () => {
  it('reads with the two interface names and passes on what concerns them; a read of nothing wakes nobody', () => {
    const f = fakeIo();
    const e = events(f.io);
    expect(e.ke.start()).toBe(true);
    f.reads.push(0, NETLINK_ROUTE_GONE, NETLINK_LINK | NETLINK_ROUTE_GONE);
    f.fire();
    f.fire();
    f.fire();
    expect(f.calls).toEqual(['open', ...Array(3).fill('read 42 flannel.1 eth0')]);
    expect(e.changed).toEqual([NETLINK_ROUTE_GONE, NETLINK_LINK | NETLINK_ROUTE_GONE]);
  });

  it('an overflow (libuv stops the poll with an error) is read as lost notices, and the poll starts again', () => {
    const f = fakeIo();
    const e = events(f.io);
    e.ke.start();
    f.reads.push(NETLINK_LOST | NETLINK_LINK);
    f.fire(sysError('EBADF', 'uv_poll'));
    expect(e.changed).toEqual([NETLINK_LOST | NETLINK_LINK]);
    expect(f.polls()).toBe(1);
    f.reads.push(NETLINK_ROUTE_GONE);
    f.fire();
    expect(e.changed).toEqual([NETLINK_LOST | NETLINK_LINK, NETLINK_ROUTE_GONE]);
    expect(e.warnings()).toEqual([]);
  });

  it('without netlink (a sandbox that refuses the socket) it says once that repairs wait for the periodic refresh', () => {
    const f = fakeIo({ openFails: sysError('EAFNOSUPPORT', 'socket') });
    const e = events(f.io);
    expect(e.ke.start()).toBe(false);
    expect(e.warnings()).toEqual(['no kernel notices of link and route changes: repairs wait for the periodic check refresh (30 s)']);
    expect(f.polls()).toBe(0);
  });

  it('a read that fails, or a poll error that was no overflow, stops listening and closes the socket, said once', () => {
    for (const broken of [
      (f: ReturnType<typeof fakeIo>) => {
        f.reads.push(sysError('EIO', 'recvfrom'));
        f.fire();
      },
      (f: ReturnType<typeof fakeIo>) => {
        f.reads.push(0);
        f.fire(sysError('EBADF', 'uv_poll'));
      },
    ]) {
      const f = fakeIo();
      const e = events(f.io);
      e.ke.start();
      broken(f);
      expect(f.polls()).toBe(0);
      expect(f.closed()).toBe(1);
      expect(e.warnings()).toHaveLength(1);
      expect(e.changed).toEqual([]);
      e.ke.stop(); // idempotent
      expect(f.closed()).toBe(1);
    }
  });

  it('asks for the neighbour notices only when told (TAP mode)', () => {
    const f = fakeIo();
    events(f.io, true).ke.start();
    expect(f.calls).toEqual(['open with neighbours']);
  });

  it('stop() stops the poll and closes the socket', () => {
    const f = fakeIo();
    const e = events(f.io);
    e.ke.start();
    e.ke.stop();
    expect(f.polls()).toBe(0);
    expect(f.closed()).toBe(1);
  });
});
