// The native addon as JavaScript sees it: the one declaration of every native call
// (NativeBinding, in step with the registration table in src/native/addon.c), and the
// only module that loads build/Release/vxedge_native.node.
//
// The addon does only what Node cannot (docs/native.md): open a TUN/TAP device and a UDP
// socket, watch fds on Node's own event loop (uv_poll, no threadpool), and move packets in
// batches (device read/write loops, recvmmsg/sendmmsg) between the kernel and one big
// Buffer addressed by offsets, with the per-byte work of the offloads (TSO segmentation,
// checksums, TCP coalescing). No JS object is created per packet.
//
// Nothing calls the addon through a wrapper: the data plane and the gateway are handed
// the binding (or the part of it they use, e.g. DataplaneIo), so tests hand them an
// in-memory twin of the same type instead (test/unit/fake-io.ts).
//
// Errors: wrong arguments throw TypeError (code ERR_INVALID_ARG_TYPE) or RangeError (code
// ERR_OUT_OF_RANGE, e.g. an offset outside the buffer); a failing set-up syscall throws a
// SystemError-like Error (code 'EADDRINUSE', errno 98, syscall 'bind', message
// "bind 203.0.113.2:8472: address already in use (EADDRINUSE)"). Per-packet errors never
// throw: they are counted, see lastError().
//
// IPv4 addresses are uint32 in numeric order: 203.0.113.1 === 0xcb007101, 0 = any.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** An open TUN/TAP device: its non-blocking fd and the name the kernel gave it. With
 *  queues > 1 the fd is the addon's handle for all of them (an epoll fd over the queues):
 *  pass it to devRead, devWrite, pollStart and close like any device fd. */
export interface TunHandle {
  fd: number;
  name: string;
  queues: number;
}

/** An fd watched by pollStart(); pass it to pollStop(). Opaque. */
export interface PollHandle {
  readonly fd: number;
  readonly __vxedgePollHandle: never;
}

/** The last per-packet error (errno 0 and code '' when none yet) and how many so far. */
export interface NativeLastError {
  errno: number;
  code: string;
  count: number;
}

/** A system call failure thrown by the addon, shaped like Node's own system errors. */
export interface NativeSystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** Called when the fd is readable; `err` is set (and the poll stopped) if libuv saw an
 *  error condition on the fd, e.g. the TUN device was deleted. */
export type OnReadable = (err?: NativeSystemError) => void;

/** TUNSETOFFLOAD flags (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;

/** Counters of the offload paths since the addon was loaded (this thread). */
export interface OffloadStats {
  /** TCP super-packets read from the device and segmented, and the segments made of them. */
  tsoPackets: number;
  tsoSegments: number;
  /** UDP super-packets (GSO_UDP_L4) read from the device and cut, and the datagrams made of
   *  them: only where the kernel has USO for TUN (usoWrite 1). */
  usoPackets: number;
  usoSegments: number;
  /** sendmmsg messages sent with UDP_SEGMENT (the kernel cut them into datagrams). */
  gsoMessages: number;
  /** 1 once the kernel refused UDP_SEGMENT (EIO/EINVAL) or the start-up check did not see it
   *  work (udpCheckOffloads): segments then go one datagram each. */
  gsoRefused: number;
  gsoOff: number;
  /** Partial (NEEDS_CSUM) checksums completed before sending. */
  csumCompleted: number;
  /** Received datagrams that held several coalesced ones (UDP_GRO). */
  groDatagrams: number;
  /** Super-packets written to the device and the segments they joined. */
  coalescedWrites: number;
  coalescedSegments: number;
  /** Segments not joined because an IPv4, TCP or UDP checksum was wrong (the kernel drops them). */
  csumRejects: number;
  /** devRead looks (a look at the device while the underlay drains): packets read, and ready
   *  queues left alone because they hold the ACKs of a download in progress. */
  lookReads: number;
  lookLeft: number;
  /** 1 when the kernel has UDP super-packets (GSO_UDP_L4, Linux 6.2+) for the device, found
   *  when it was opened: UDP datagrams of one flow are then joined on writes, and reads may
   *  hand over UDP super-packets (usoPackets). */
  usoWrite: number;
  /** 1 while the sender thread sends to the underlay (udpSendThread); the batches handed to
   *  it, and the lone datagrams sent on the JS thread while it was idle. */
  sendThread: number;
  sendHanded: number;
  sendInline: number;
  /** Datagrams sent at once past batches the thread held, none of which had their flow, or
   *  before the super-packets read with them were cut (the first pass of udpSend, tso.c). */
  sendPassed: number;
  /** Hand-overs that found all of the thread's batches taken, and the milliseconds the JS
   *  thread waited in them (it reads neither the device nor the underlay meanwhile). */
  sendWaits: number;
  sendWaitMs: number;
}

/** netlinkRead's bits. */
export const NETLINK_LINK = 1;
export const NETLINK_ADDRESS = 2;
export const NETLINK_ROUTE_GONE = 4;
export const NETLINK_LOST = 8;
export const NETLINK_NEIGH_GONE = 16;
export const NETLINK_DEFAULT_ROUTE = 32;

export interface NativeBinding {
  // ---------------------------------------------------------------- device (device.c)

  /** Creates (or attaches to) TUN or TAP device `name` ('' or 'vx%d' lets the kernel
   *  number it), IFF_NO_PI, non-blocking, close-on-exec; the device lives while the fd is
   *  open. offloads != 0 (TUN only, e.g. TUN_F_CSUM | TUN_F_TSO4): IFF_VNET_HDR, a 10-byte
   *  virtio_net_hdr and TUNSETOFFLOAD(offloads); reads may then return TCP super-packets and
   *  partial checksums. Throws (code EPERM, EBUSY, ENOENT, EINVAL...; syscall 'open',
   *  'ioctl(TUNSETIFF)', 'ioctl(TUNSETVNETHDRSZ)' or 'ioctl(TUNSETOFFLOAD)'), after closing
   *  the fd, which removes the device again: the caller can fall back to offloads 0.
   *  queues (1..16, default 1) > 1: IFF_MULTI_QUEUE with that many queues; the kernel keeps
   *  each flow on one queue, devRead takes the ready queues in turn, devWrite puts each
   *  packet on its flow's queue (so the kernel sends that flow's replies there too). */
  tunOpen(name: string, tap: boolean, offloads: number, queues?: number): TunHandle;

  /** Reads packets until EAGAIN, `max`, or less than headroom + room bytes of buf are left.
   *  Packet i lands at buf[offs[i]] with `headroom` free bytes in front, lens[i] bytes long
   *  (-1: larger than `room`, truncated: count it as a drop); packets are packed at 64-byte
   *  boundaries. `vnet` (a device opened with offloads; room 65535): packet i's
   *  virtio_net_hdr lands at vnet[10*i]. Returns the count. Requires max <= offs.length,
   *  lens.length (and vnet.length/10). A multi-queue device is read one packet per ready
   *  queue in turn. An error other than EAGAIN ends the batch (that queue's part) and is
   *  counted in lastError(); only a bad fd (EBADF, or EBADFD once the device is deleted)
   *  with nothing read yet throws. `look` (a multi-queue device): leave alone the queues
   *  devWrite has written bulk TCP to since the last read without `look` (whose ACKs they
   *  hold); a read without it takes every queue and clears those marks. A plain fd is not
   *  read by a look. `segments` (with vnet; 0 or absent: no limit): stop once the packets
   *  read make that many datagrams on the wire, as proto/vnet.ts vnetWireSegments counts
   *  them (a super-packet its segments, anything else 1). */
  devRead(
    fd: number, buf: Uint8Array, headroom: number, room: number, max: number,
    offs: Int32Array, lens: Int32Array, vnet: Uint8Array | null, look?: boolean, segments?: number,
  ): number;

  /** Writes packets buf[offs[i] .. +lens[i]) for i < n; returns how many the kernel
   *  accepted. `vnet` false: one write() each; a packet the kernel rejects (EINVAL, EIO...)
   *  is skipped and counted in lastError(); EAGAIN stops the batch. `vnet` true (a device
   *  opened with offloads; n <= 4096): consecutive in-order TCP segments of one flow
   *  (checksums verified) are joined into super-packets with a GSO_TCPV4 header, which
   *  rewrites the joined heads' IPv4/TCP headers in buf; the rest go with a zero header.
   *  All ranges are checked before writing. */
  devWrite(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number, vnet: boolean): number;

  // ---------------------------------------------------------------- socket (socket.c)

  /** Opens a non-blocking, close-on-exec IPv4 UDP socket bound to address:port (0 = any),
   *  with SO_RCVBUF/SO_SNDBUF of bufBytes (the privileged *FORCE variants first; 0 keeps the
   *  defaults) and DF clear, as the kernel's vxlan sends. Returns the fd. Throws e.g. code
   *  EADDRINUSE, syscall 'bind'. */
  /** A UDP socket bound to address:port; `sockets` > 1 (default 1): a group of that many
   *  SO_REUSEPORT sockets on the port, and the fd returned is an epoll fd over them that the
   *  other calls take as the socket (udpRecv reads the ready ones in turn, udpSend sends from
   *  the first, udpSetGro sets every one, close closes them all). */
  udpOpen(address: number, port: number, bufBytes: number, sockets?: number): number;

  /** setsockopt(SOL_UDP, UDP_GRO): receives may then hold several datagrams of one flow
   *  (see udpRecv's segs). Throws (ENOPROTOOPT on kernels before 5.0). */
  udpSetGro(fd: number, on: boolean): void;

  /** The kernel's drop count of each socket of the group (one entry for a plain socket):
   *  SO_MEMINFO's SK_MEMINFO_DROPS, datagrams dropped at that socket before they were read
   *  (receive buffer full, bad UDP checksum). 32-bit, wrapping; -1 where the kernel refused
   *  to say. */
  udpDrops(fd: number): number[];

  /** Receives up to `max` datagrams with recvmmsg(MSG_DONTWAIT): datagram i lands at
   *  buf[i*slot+headroom]; lens[i] is its length, or -1 if it was truncated (larger than
   *  slot-headroom; count it as a drop); addrs[i]/ports[i] are the sender. `segs` (a socket
   *  with UDP_GRO): segs[i] > 0 says datagram i holds several coalesced datagrams of segs[i]
   *  bytes each, the last possibly shorter; 0 a single one. `ecn` (optional): ecn[i] is the
   *  ECN field of datagram i's outer IPv4 header (IP_RECVTOS; 3 = CE, proto/ecn.ts), 0 where
   *  the kernel did not say. Returns the count. */
  udpRecv(
    fd: number, buf: Uint8Array, slot: number, headroom: number, max: number,
    lens: Int32Array, addrs: Uint32Array, ports: Uint16Array, segs: Int32Array | null, ecn?: Uint8Array | null,
  ): number;

  /** Sends datagram i = buf[offs[i] .. +lens[i]) to addrs[i]:ports[i], for i < n (n <= 4096),
   *  with sendmmsg; consecutive datagrams of one size to one destination (the last may be
   *  shorter) leave as one UDP_SEGMENT message, which the kernel cuts into the same datagrams
   *  (one trip down the stack for a burst of small packets). A datagram the kernel rejects
   *  (EINVAL, EMSGSIZE, ENETUNREACH...) is skipped and counted in lastError(); EAGAIN/ENOBUFS
   *  stops the batch (the rest is not sent). Returns the number sent. `vnet`/`vnetIdx` (both or neither; n <= 4096): datagram i is
   *  `encap` bytes of headers, then an inner IPv4 packet read with offloads whose
   *  virtio_net_hdr is vnet[10*vnetIdx[i]]: partial checksums are completed and TCP
   *  super-packets leave as MTU-sized segments, each behind a copy of the encap bytes, with
   *  UDP_SEGMENT; the count is then of packets that went out entirely. */
  udpSend(
    fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, addrs: Uint32Array, ports: Uint16Array,
    n: number, vnet: Uint8Array | null, vnetIdx: Int32Array | null, encap: number,
  ): number;

  /** Which packets of the last udpSend call did not go out entirely: out[i] = 1 for each, 0
   *  for the others, i < n; returns n, that call's packet count (0 after a call that threw;
   *  at most out.length are written). The refused ones are not always the last: a datagram
   *  the kernel rejects alone may sit before others that left, and with the sender thread a
   *  plain datagram may leave before the super-packets read with it (tso.c send_early). */
  udpSendFailed(out: Uint8Array): number;

  /** Starts (true) or stops (false) the sender thread: from then on udpSend copies what it
   *  was given (or the segments it cut) into one of eight batches and hands the batch to a
   *  second thread, which sends it while the JS thread reads and routes the next. Batches go
   *  out in the order they were made. A batch of one plain datagram is still sent at once
   *  when that thread is idle, and while it holds batches, every datagram whose flow (inner
   *  protocol, addresses, TCP/UDP ports) is in none of them goes at once, past them: no flow
   *  is reordered. A TCP super-packet always goes to the thread. udpSend then returns how many
   *  packets were sent or handed over; what the thread could not send is counted by
   *  udpSendLost(). Stopping waits for what it holds. Returns whether it runs; throws (code,
   *  syscall pthread_create) when it cannot start. */
  udpSendThread(on: boolean): boolean;

  /** Packets the sender thread could not send (socket full, a per-datagram error) since the
   *  last call, after it has sent what it held; 0 without it. */
  udpSendLost(): number;

  /** The start-up check, on two throwaway sockets on 127.0.0.1, that UDP_SEGMENT really cuts
   *  a send into datagrams and that UDP_GRO's segment size really arrives: a syscall layer
   *  such as qemu-user may accept both and lose their control messages. null: seen working;
   *  else why not. Failed segmentation turns UDP_SEGMENT off in the addon (gsoOff 1). Blocks
   *  at most 2 x 500 ms when nothing arrives. */
  udpCheckOffloads(): { segment: string | null; gro: string | null };

  /** Sends `data` as one datagram to the AF_UNIX SOCK_DGRAM socket at `path` (a leading '@'
   *  names the abstract namespace, as systemd's $NOTIFY_SOCKET may), from a fresh
   *  close-on-exec socket, without blocking. Throws e.g. code ENOENT/ECONNREFUSED/EAGAIN,
   *  syscall 'sendto'; RangeError for an empty or over-long (> 107 bytes) path. */
  unixDgramSend(path: string, data: Uint8Array): void;

  // ---------------------------------------------------------------- polls (poll.c)

  /** Calls onReadable (level-triggered) whenever fd is readable, on Node's event loop, with
   *  microtasks and nextTicks run after each call. An exception thrown by onReadable becomes
   *  an uncaught exception. The handle keeps the process alive until pollStop(). Throws
   *  EEXIST if the fd is already polled. */
  pollStart(fd: number, onReadable: OnReadable): PollHandle;
  /** Stops and releases a poll. Idempotent; may be called from inside its own callback. */
  pollStop(h: PollHandle): void;
  /** Closes an fd from tunOpen/udpOpen; any poll on it is stopped first. */
  close(fd: number): void;

  // ---------------------------------------------------------------- diagnostics (addon.c)

  /** The last per-packet errno seen in this thread and how many per-packet errors there
   *  were so far (log when `count` changes). */
  lastError(): NativeLastError;
  offloadStats(): OffloadStats;

  // ---------------------------------------------------------------- memory (pages.c)

  /** madvise(MADV_DONTNEED) over [start, length] pairs of page-aligned user addresses:
   *  the process's page table entries go, the pages stay in the page cache. Only for
   *  private mappings never written (util/startup-pages.ts picks them); returns the bytes
   *  advised. RangeError for a malformed range; a failing madvise throws (syscall 'madvise'). */
  releasePages(ranges: Float64Array): number;

  // ---------------------------------------------------------------- clock (clock.c)

  /** adjtimex(2) with modes 0 (a read, no privilege): `state` its return (TIME_OK 0 …
   *  TIME_ERROR 5), `status` the STA_* bits, the kernel's maximum and estimated error in µs.
   *  util/clock-sync.ts says what they mean. Throws a system error (syscall 'adjtimex'). */
  clockState(): NativeClockState;

  // ---------------------------------------------------------------- passwords (crypt.c)

  /** Whether crypt(3) of `password` with `hash` gives `hash` (the system's libxcrypt:
   *  bcrypt's $2b$, $2y$, $2a$ and the rest it knows), run on libuv's thread pool. Throws
   *  RangeError for a NUL in either or more than 1 KB; rejects with code ENOSYS when
   *  libcrypt.so.1 cannot be loaded, EINVAL for a hash crypt(3) does not take. */
  passwordCheck(password: string, hash: string): Promise<boolean>;
  /** A new bcrypt hash ($2b$, `cost` 4..31, crypt(3)'s own random salt) of `password`, on the thread pool. */
  passwordHash(password: string, cost: number): Promise<string>;

  // ---------------------------------------------------------------- kernel notices (netlink.c)

  /** A non-blocking rtnetlink socket in the link, IPv4 address and IPv4 route groups, and
   *  with `neighbours` the neighbour group (TAP mode); poll it with pollStart and read it with
   *  netlinkRead. Throws a system error (syscall 'socket' or 'bind') where netlink is not
   *  available. */
  netlinkOpen(neighbours?: boolean): number;
  /** Drains the queued notices; returns NETLINK_* bits for what concerns the tunnel device
   *  (its link, its addresses, a route through it deleted, a neighbour of it deleted or made
   *  other than permanent: NETLINK_NEIGH_GONE) or the underlay NIC (its link, its addresses),
   *  or an IPv4 default route of the main table added or deleted (NETLINK_DEFAULT_ROUTE: the
   *  site's router may have changed), 0 when nothing does. NETLINK_LOST: the kernel dropped notices (a storm), so
   *  anything may have changed. */
  netlinkRead(fd: number, device: string, underlay: string): number;

  // ---------------------------------------------------------------- test entry points

  /** Polls not yet stopped in this environment, and poll records not yet freed. */
  _pollCounts(): { open: number; allocated: number };
  /** The datagrams udpSend with offloads would send for buf[off .. +len), copied to out at
   *  outOffs[i]/outLens[i]; -1 when it would drop the packet. */
  _tsoSegment(
    buf: Uint8Array, off: number, len: number, vnet: Uint8Array, vnetOff: number, encap: number,
    out: Uint8Array, outOffs: Int32Array, outLens: Int32Array,
  ): number;
  /** What devWrite with offloads would write (virtio_net_hdr + packet each), copied to out
   *  at outOffs[i]/outLens[i]; -1 when out is too small. */
  _groCoalesce(buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number, out: Uint8Array, outOffs: Int32Array, outLens: Int32Array, udp?: boolean): number;
  /** While on, the sender thread sends nothing it is handed (what may pass it still does);
   *  off, or anything that waits for the thread, lets it go on. At most 7 (TX_SETS - 1)
   *  batches may be handed over under a plain hold; with `ms` the hold ends by itself that
   *  many milliseconds later, so a further hand-over waits for it instead of forever. */
  _senderHold(on: boolean, ms?: number): void;
}

/** The directory holding the package.json nearest above `startDir` (the package root). */
export function findPackageRoot(startDir: string): string {
  for (let dir = startDir; ; ) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`vxedge native: no package.json above ${startDir}`);
    dir = parent;
  }
}

/** Absolute path of the addon file this module loads. Works from src/ (tests) and dist/. */
export function nativeAddonPath(): string {
  const root = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
  return join(root, 'build', 'Release', 'vxedge_native.node');
}

/** What adjtimex(2) reports of the system clock (clockState). */
export interface NativeClockState {
  state: number;
  status: number;
  maxErrorUs: number;
  estErrorUs: number;
}

let binding: NativeBinding | undefined;

/** The addon, loaded on first use (modules that merely import this one work without a build). */
export function nativeBinding(): NativeBinding {
  if (binding !== undefined) return binding;
  const path = nativeAddonPath();
  try {
    binding = createRequire(import.meta.url)(path) as NativeBinding;
  } catch (err) {
    throw new Error(
      `vxedge native addon could not be loaded from ${path} (build it with \`npm run install\`, ` +
        `i.e. node-gyp rebuild): ${(err as Error).message}`,
      { cause: err },
    );
  }
  return binding;
}
