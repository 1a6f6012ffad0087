// The only module that loads vxedge's native addon (build/Release/vxedge_native.node,
// built from src/native/vxedge_native.c by `node-gyp rebuild`, which `npm ci` runs).
//
// The addon does only what Node cannot: open a TUN/TAP device, open a UDP socket, watch
// fds on Node's own event loop (uv_poll, no threadpool) and move packets in batches
// (read/write loops on the device, recvmmsg/sendmmsg on the socket) between the kernel and
// one big Buffer addressed by offsets. No JS object is created per packet.
//
// Errors: wrong arguments throw TypeError (code ERR_INVALID_ARG_TYPE) or RangeError (code
// ERR_OUT_OF_RANGE, e.g. an offset outside the buffer); a failing setup syscall throws a
// SystemError-like Error (code 'EADDRINUSE', errno 98, syscall 'bind', message
// "bind 203.0.113.2:8472: address already in use (EADDRINUSE)"). Per-packet errors never
// throw: they are counted, see lastError(). The addon loads lazily, on the first call, so
// modules that merely import this one work without a build.
//
// IPv4 addresses are uint32 in numeric order: 203.0.113.1 === 0xcb007101, 0 = any.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** An open TUN/TAP device: its non-blocking fd and the name the kernel gave it. */
export interface TunHandle {
  fd: number;
  name: string;
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

interface NativeBinding {
  tunOpen(name: string, tap: boolean): TunHandle;
  udpOpen(address: number, port: number, bufBytes: number): number;
  close(fd: number): void;
  devRead(fd: number, buf: Uint8Array, slot: number, headroom: number, max: number, lens: Int32Array): number;
  devWrite(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number): number;
  udpRecv(
    fd: number,
    buf: Uint8Array,
    slot: number,
    headroom: number,
    max: number,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
  ): number;
  udpSend(
    fd: number,
    buf: Uint8Array,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    n: number,
  ): number;
  pollStart(fd: number, onReadable: OnReadable): PollHandle;
  pollStop(h: PollHandle): void;
  lastError(): NativeLastError;
  unixDgramSend(path: string, data: Uint8Array): void;
  tunOpenVnet(name: string, offloads: number): TunHandle;
  udpSetGro(fd: number, on: boolean): void;
  devReadVnet(fd: number, buf: Uint8Array, headroom: number, max: number, offs: Int32Array, lens: Int32Array, vnet: Uint8Array): number;
  devWriteVnet(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number): number;
  udpRecvGro(
    fd: number,
    buf: Uint8Array,
    slot: number,
    headroom: number,
    max: number,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    segs: Int32Array,
  ): number;
  udpSendVnet(
    fd: number,
    buf: Uint8Array,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    vnet: Uint8Array,
    vnetIdx: Int32Array,
    encap: number,
    n: number,
  ): number;
  offloadStats(): OffloadStats;
  _tsoSegment(
    buf: Uint8Array,
    off: number,
    len: number,
    vnet: Uint8Array,
    vnetOff: number,
    encap: number,
    out: Uint8Array,
    outOffs: Int32Array,
    outLens: Int32Array,
  ): number;
  _groCoalesce(buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number, out: Uint8Array, outOffs: Int32Array, outLens: Int32Array): number;
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

let binding: NativeBinding | undefined;

function native(): NativeBinding {
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

/** Create (or attach to) TUN or TAP device `name` ('' or 'vx%d' lets the kernel number it),
 *  with IFF_NO_PI, non-blocking and close-on-exec. The device lives while the fd is open.
 *  Throws (code EPERM, EBUSY, ENOENT...; syscall 'open' or 'ioctl(TUNSETIFF)'). */
export function tunOpen(name: string, tap: boolean): TunHandle {
  return native().tunOpen(name, tap);
}

/** Open a non-blocking, close-on-exec IPv4 UDP socket bound to address:port (address 0 =
 *  any), with SO_RCVBUF/SO_SNDBUF of bufBytes (the privileged *FORCE variants first; 0 keeps
 *  the defaults). Returns the fd. Throws e.g. code EADDRINUSE, syscall 'bind'. */
export function udpOpen(address: number, port: number, bufBytes: number): number {
  return native().udpOpen(address, port, bufBytes);
}

/** Close an fd from tunOpen/udpOpen. Any pollStart() on it is stopped first. */
export function close(fd: number): void {
  native().close(fd);
}

/** Read device packets until EAGAIN or `max`: packet i lands at buf[i*slot+headroom], with
 *  room for slot-headroom bytes, and lens[i] is its length, or -1 if it was larger than that
 *  room (truncated: count it as a drop). Returns the count (0: nothing). Requires
 *  max <= lens.length and slot*max <= buf.length. An error other than EAGAIN ends the batch
 *  and is counted in lastError(); only a bad fd (EBADF, or EBADFD once the device is
 *  deleted) with nothing read yet throws. */
export function devRead(
  fd: number,
  buf: Uint8Array,
  slot: number,
  headroom: number,
  max: number,
  lens: Int32Array,
): number {
  return native().devRead(fd, buf, slot, headroom, max, lens);
}

/** Write packets buf[offs[i] .. offs[i]+lens[i]) for i < n, one write() each. Returns how
 *  many the kernel accepted. A packet the kernel rejects (EINVAL, EIO...) is skipped and
 *  counted in lastError(); EAGAIN stops the batch. All ranges are checked before writing. */
export function devWrite(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number): number {
  return native().devWrite(fd, buf, offs, lens, n);
}

/** Receive up to `max` datagrams with recvmmsg(MSG_DONTWAIT): datagram i lands at
 *  buf[i*slot+headroom]; lens[i] is its length, or -1 if it was truncated (larger than
 *  slot-headroom; count it as a drop); addrs[i]/ports[i] are the sender. Returns the count. */
export function udpRecv(
  fd: number,
  buf: Uint8Array,
  slot: number,
  headroom: number,
  max: number,
  lens: Int32Array,
  addrs: Uint32Array,
  ports: Uint16Array,
): number {
  return native().udpRecv(fd, buf, slot, headroom, max, lens, addrs, ports);
}

/** Send datagram i = buf[offs[i] .. offs[i]+lens[i]) to addrs[i]:ports[i], for i < n, with
 *  sendmmsg (up to 1024 per call). A datagram the kernel rejects (EINVAL, EMSGSIZE,
 *  ENETUNREACH...) is skipped and counted in lastError(); EAGAIN/ENOBUFS stops the batch
 *  (the rest is not sent). Returns the number sent. */
export function udpSend(
  fd: number,
  buf: Uint8Array,
  offs: Int32Array,
  lens: Int32Array,
  addrs: Uint32Array,
  ports: Uint16Array,
  n: number,
): number {
  return native().udpSend(fd, buf, offs, lens, addrs, ports, n);
}

/** Call onReadable (level-triggered) whenever fd is readable, on Node's event loop, with
 *  microtasks and nextTicks run after each call. An exception thrown by onReadable becomes
 *  an uncaught exception. The handle keeps the process alive until pollStop(). Throws
 *  EEXIST if the fd is already polled. */
export function pollStart(fd: number, onReadable: OnReadable): PollHandle {
  return native().pollStart(fd, onReadable);
}

/** Stop and release a poll. Idempotent; may be called from inside its own callback. */
export function pollStop(h: PollHandle): void {
  native().pollStop(h);
}

/** The last per-packet errno seen by devRead/devWrite/udpRecv/udpSend in this thread and
 *  how many per-packet errors there were so far (log when `count` changes). */
export function lastError(): NativeLastError {
  return native().lastError();
}

/** Send `data` as one datagram to the AF_UNIX SOCK_DGRAM socket at `path` (a leading '@'
 *  names the abstract namespace, as systemd's $NOTIFY_SOCKET may), from a fresh
 *  close-on-exec socket, without blocking. Throws e.g. code ENOENT/ECONNREFUSED/EAGAIN,
 *  syscall 'sendto'; RangeError for an empty or over-long (> 107 bytes) path. */
export function unixDgramSend(path: string, data: Uint8Array): void {
  native().unixDgramSend(path, data);
}

// ---------------------------------------------------------------------------------------------
// Offloads (src/native/offload.c): TUN virtio-net headers with TSO, UDP GSO sends, UDP GRO
// receives, TCP coalescing on device writes. The per-byte work (segmenting, checksums) is C.

/** TUNSETOFFLOAD flags (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;

/** Counters of the offload paths since the addon was loaded (this thread). */
export interface OffloadStats {
  /** TCP super-packets read from the device and segmented, and the segments made of them. */
  tsoPackets: number;
  tsoSegments: number;
  /** sendmmsg messages sent with UDP_SEGMENT (the kernel cut them into datagrams). */
  gsoMessages: number;
  /** 1 once the kernel refused UDP_SEGMENT (EIO/EINVAL): segments then go one datagram each. */
  gsoRefused: number;
  gsoOff: number;
  /** Partial (NEEDS_CSUM) checksums completed before sending. */
  csumCompleted: number;
  /** Received datagrams that held several coalesced ones (UDP_GRO). */
  groDatagrams: number;
  /** Super-packets written to the device and the segments they joined. */
  coalescedWrites: number;
  coalescedSegments: number;
  /** Segments not joined because an IPv4 or TCP checksum was wrong (the kernel drops them). */
  csumRejects: number;
}

/** Like tunOpen(name, false), but with IFF_VNET_HDR, a 10-byte virtio_net_hdr and
 *  TUNSETOFFLOAD(offloads): reads may then return TCP super-packets (TUN_F_TSO4) and packets
 *  with a partial checksum (TUN_F_CSUM). Throws when the kernel refuses any step (syscall
 *  'ioctl(TUNSETIFF)', 'ioctl(TUNSETVNETHDRSZ)' or 'ioctl(TUNSETOFFLOAD)'; EINVAL for flags
 *  it does not know), after closing the fd, which removes the device again. */
export function tunOpenVnet(name: string, offloads: number): TunHandle {
  return native().tunOpenVnet(name, offloads);
}

/** setsockopt(SOL_UDP, UDP_GRO): receives may then hold several datagrams of one flow
 *  (see udpRecvGro). Throws (ENOPROTOOPT on kernels before 5.0). */
export function udpSetGro(fd: number, on: boolean): void {
  native().udpSetGro(fd, on);
}

/** Reads a tunOpenVnet() device until EAGAIN, `max`, or less than headroom + 65535 bytes of
 *  buf are left: packet i lands at buf[offs[i]] (offs[i] - headroom bytes free in front,
 *  packed at 64-byte boundaries), lens[i] bytes (-1: truncated), its virtio_net_hdr at
 *  vnet[10*i]. Returns the count. Errors as devRead. */
export function devReadVnet(
  fd: number,
  buf: Uint8Array,
  headroom: number,
  max: number,
  offs: Int32Array,
  lens: Int32Array,
  vnet: Uint8Array,
): number {
  return native().devReadVnet(fd, buf, headroom, max, offs, lens, vnet);
}

/** Writes inner IPv4 packets buf[offs[i] .. +lens[i]) to a tunOpenVnet() device, joining
 *  consecutive in-order TCP segments of one flow (checksums verified) into super-packets
 *  with a GSO_TCPV4 header; the others go with a zero header. Rewrites the IPv4/TCP headers
 *  of joined heads in buf. Returns how many input packets the kernel accepted. */
export function devWriteVnet(fd: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, n: number): number {
  return native().devWriteVnet(fd, buf, offs, lens, n);
}

/** udpRecv, plus segs[i]: when > 0, datagram i holds several coalesced datagrams of segs[i]
 *  bytes each, the last possibly shorter (the socket has UDP_GRO). */
export function udpRecvGro(
  fd: number,
  buf: Uint8Array,
  slot: number,
  headroom: number,
  max: number,
  lens: Int32Array,
  addrs: Uint32Array,
  ports: Uint16Array,
  segs: Int32Array,
): number {
  return native().udpRecvGro(fd, buf, slot, headroom, max, lens, addrs, ports, segs);
}

/** Sends datagram i = buf[offs[i] .. +lens[i]) (encap bytes of headers, then an inner IPv4
 *  packet read from a tunOpenVnet() device with virtio_net_hdr vnet[10*vnetIdx[i]]) to
 *  addrs[i]:ports[i]: partial checksums completed, TCP super-packets cut into segments (each
 *  with a copy of the encap bytes) sent with UDP_SEGMENT. Returns how many of the n packets
 *  went out entirely; errors as udpSend. */
export function udpSendVnet(
  fd: number,
  buf: Uint8Array,
  offs: Int32Array,
  lens: Int32Array,
  addrs: Uint32Array,
  ports: Uint16Array,
  vnet: Uint8Array,
  vnetIdx: Int32Array,
  encap: number,
  n: number,
): number {
  return native().udpSendVnet(fd, buf, offs, lens, addrs, ports, vnet, vnetIdx, encap, n);
}

export function offloadStats(): OffloadStats {
  return native().offloadStats();
}

/** Test entry point: the datagrams udpSendVnet would send for buf[off .. +len), copied to
 *  out at outOffs[i]/outLens[i]; -1 when it would drop the packet. */
export function _tsoSegment(
  buf: Uint8Array,
  off: number,
  len: number,
  vnet: Uint8Array,
  vnetOff: number,
  encap: number,
  out: Uint8Array,
  outOffs: Int32Array,
  outLens: Int32Array,
): number {
  return native()._tsoSegment(buf, off, len, vnet, vnetOff, encap, out, outOffs, outLens);
}

/** Test entry point: what devWriteVnet would write (virtio_net_hdr + packet each), copied
 *  to out at outOffs[i]/outLens[i]; -1 when out is too small. */
export function _groCoalesce(
  buf: Uint8Array,
  offs: Int32Array,
  lens: Int32Array,
  n: number,
  out: Uint8Array,
  outOffs: Int32Array,
  outLens: Int32Array,
): number {
  return native()._groCoalesce(buf, offs, lens, n, out, outOffs, outLens);
}
