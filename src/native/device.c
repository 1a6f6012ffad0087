/*
 * device.c: the overlay device. tunOpen makes (or attaches to) a TUN or TAP device;
 * devRead and devWrite move a batch of packets between it and one big Buffer addressed by
 * offsets. With offloads (a TUN opened with IFF_VNET_HDR) every packet carries a 10-byte
 * virtio_net_hdr: reads may return TCP super-packets of up to 64 KB, and writes join TCP
 * segments of one flow into super-packets (gro.c).
 *
 * Multi-queue (tunOpen with queues > 1): the kernel puts each flow's packets on one of
 * several queues and remembers, per flow, the queue we last wrote that flow's packets to.
 * JS holds one fd, an epoll fd over the queues (dev_set in vx.h); devRead takes one packet
 * from each ready queue in turn, devWrite puts each packet on its flow's queue. A flow that
 * fills its queue then delays only itself, not a ping or a DNS answer beside it.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <linux/if_tun.h>

#ifndef TUN_F_USO4 /* headers older than Linux 6.2 */
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

#include "csum.h"
#include "gro.h"
#include "napi_util.h"
#include "vx.h"

/* Closes every fd opened so far and throws the system error of a failed set-up step. */
#define FAIL_STEP(err, syscall, ...)                  \
  do {                                                \
    int step_err_ = (err);                            \
    close_all(fds, nfds);                             \
    THROW_SYS(env, step_err_, syscall, __VA_ARGS__);  \
  } while (0)

static void close_all(const int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

dev_set *fd_set_find(dev_set *sets, int nsets, int handle) {
  for (int i = 0; i < nsets; i++)
    if (sets[i].n > 0 && sets[i].handle == handle) return &sets[i];
  return NULL;
}

void fd_set_forget(dev_set *sets, int nsets, int handle) {
  dev_set *d = fd_set_find(sets, nsets, handle);
  if (d == NULL) return;
  close_all(d->fds, d->n);
  d->n = 0;
}

dev_set *fd_set_free(dev_set *sets, int nsets) {
  for (int i = 0; i < nsets; i++)
    if (sets[i].n == 0) return &sets[i];
  return NULL;
}

int fd_set_watch(dev_set *d, const int *fds, int n, const char **step) {
  int handle = epoll_create1(EPOLL_CLOEXEC);
  if (handle < 0) {
    *step = "epoll_create1";
    return -1;
  }
  for (int i = 0; i < n; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(handle, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
      int err = errno;
      close(handle);
      errno = err;
      *step = "epoll_ctl";
      return -1;
    }
  }
  d->handle = handle;
  d->rr = 0;
  d->tap = 0;
  d->bulk = 0;
  memcpy(d->fds, fds, sizeof fds[0] * (size_t)n);
  d->n = n;
  return handle;
}

int fd_set_ready(dev_set *d, int *out) {
  struct epoll_event ev[DEV_MAX_QUEUES];
  int n;
  do n = epoll_wait(d->handle, ev, d->n, 0); while (n < 0 && errno == EINTR);
  if (n <= 0) return n;
  d->rr++;
  for (int i = 0; i < n; i++) out[i] = d->fds[ev[(i + d->rr) % (unsigned)n].data.u32];
  return n;
}

dev_set *dev_find(vx_state *st, int fd) {
  return fd_set_find(st->devs, DEV_MAX_SETS, fd);
}

void dev_forget(vx_state *st, int fd) {
  fd_set_forget(st->devs, DEV_MAX_SETS, fd);
}

/* Native byte order: a hash input, not a field value (csum.h's be32 would spread flows
 * differently over the queues). */
static inline uint32_t load32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Symmetric in source and destination (XOR), so a flow's packets in both directions map to
 * one queue: the kernel steers a flow's outgoing packets to the queue its incoming ones were
 * written to. Fragments hash without ports so that all of a datagram stays in order. */
static int queue_index(const dev_set *d, const uint8_t *pkt, size_t len) {
  uint32_t h;
  size_t ihl;
  if (d->tap) {
    if (len < 14 || pkt[12] != 0x08 || pkt[13] != 0x00) return 0;
    pkt += 14;
    len -= 14;
  }
  if (len < 20 || pkt[0] >> 4 != 4) return 0;
  ihl = (size_t)(pkt[0] & 0x0f) * 4;
  h = (load32(pkt + 12) ^ load32(pkt + 16)) + pkt[9];
  if ((pkt[6] & 0x3f) == 0 && pkt[7] == 0 && (pkt[9] == IPPROTO_TCP || pkt[9] == IPPROTO_UDP) && len >= ihl + 4) {
    uint32_t ports = load32(pkt + ihl); /* source and destination port: swapped, the XOR is the same */
    h ^= ports ^ (ports >> 16 | ports << 16);
  }
  /* murmur3's finaliser: every input bit moves every output bit */
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return (int)(((uint64_t)h * (uint32_t)d->n) >> 32);
}

int dev_queue_fd(const dev_set *d, int fd, const uint8_t *pkt, size_t len) {
  return d == NULL ? fd : d->fds[queue_index(d, pkt, len)];
}

/* Bulk: a TCP super-packet, or one segment of 512 bytes or more. The site's ACKs of that
 * download come out of the same queue (the kernel's flow table sends a flow's packets to
 * the queue its other direction was written to); a look at the device (devRead's `look`)
 * leaves such a queue to the device's own turn, so the ACKs still go out in the groups bulk
 * TCP wants, while what waits in the other queues (a ping, an interactive session) is sent
 * at once. A TCP write of fewer bytes (an ACK, a keystroke) marks nothing. */
int dev_write_fd(dev_set *d, int fd, const uint8_t *pkt, size_t len, int segs) {
  int q;
  const uint8_t *ip = pkt;
  if (d == NULL) return fd;
  q = queue_index(d, pkt, len);
  if (d->tap) ip += 14;
  if ((size_t)(ip - pkt) + 20 <= len && ip[0] >> 4 == 4 && ip[9] == IPPROTO_TCP && (segs > 1 || len >= 512)) d->bulk |= 1u << q;
  return d->fds[q];
}

/* Opens one queue (the first creates the device) and sets its virtio-net header size. */
static int open_queue(struct ifreq *ifr, int offloads, int *err, const char **step) {
  int hdrsz = VNET_LEN, fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  *step = "open";
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  *step = "ioctl(TUNSETIFF)";
  if (ioctl(fd, TUNSETIFF, ifr) == 0) {
    *step = "ioctl(TUNSETVNETHDRSZ)";
    if (!offloads || ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) == 0) return fd;
  }
  *err = errno;
  close(fd);
  return -1;
}

/* tunOpen(name, tap, offloads[, queues]) -> { fd, name, queues }
 * IFF_NO_PI, non-blocking, close-on-exec. offloads != 0 (TUN only): IFF_VNET_HDR, a 10-byte
 * header (TUNSETVNETHDRSZ) and TUNSETOFFLOAD(offloads). queues > 1: IFF_MULTI_QUEUE, that
 * many queues, and fd is an epoll fd over them (dev_set). Any refusal closes what was
 * opened, which removes the device again, and throws naming the step, so the caller can
 * fall back. */
napi_value vx_tun_open(napi_env env, napi_callback_info info) {
  static const char *fn = "tunOpen";
  GET_ARGS_OPT(3, 4);
  size_t len;
  bool tap;
  int64_t offloads, queues = 1;
  struct ifreq ifr;
  napi_value res, v;
  int fds[DEV_MAX_QUEUES], nfds = 0, err = 0, handle;
  dev_set *set = NULL;
  const char *step = "open";
  char what[64];

  memset(&ifr, 0, sizeof ifr);
  if (arg_ifname(env, fn, argv[0], ifr.ifr_name, &len) != 0) return NULL;
  ARG_BOOL(1, "tap", &tap);
  ARG_INT(2, "offloads", 0, UINT32_MAX, &offloads);
  if (argc > 3) ARG_INT(3, "queues", 1, DEV_MAX_QUEUES, &queues);
  if (tap && offloads) THROW_RANGE(env, "%s: offloads need a TUN device, not TAP", fn);
  if (queues > 1 && (set = fd_set_free(st->devs, DEV_MAX_SETS)) == NULL)
    THROW_SYS(env, EMFILE, "ioctl(TUNSETIFF)", "%s: %d multi-queue devices are open already", fn, DEV_MAX_SETS);
  ifr.ifr_flags = (short)((tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | (offloads ? IFF_VNET_HDR : 0) |
                          (queues > 1 ? IFF_MULTI_QUEUE : 0));
  snprintf(what, sizeof what, "%s%s%s", tap ? "tap" : "tun", offloads ? " vnet_hdr" : "", queues > 1 ? " multi_queue" : "");

  while (nfds < queues) {
    int fd = open_queue(&ifr, offloads != 0, &err, &step);
    if (fd < 0) {
      if (nfds == 0 && strcmp(step, "open") == 0) FAIL_STEP(err, step, "open /dev/net/tun");
      FAIL_STEP(err, step, "%s %s %s%s", step, what, nfds > 0 || len ? ifr.ifr_name : "(kernel-chosen name)",
                nfds > 0 ? " (attaching a further queue)" : "");
    }
    fds[nfds++] = fd;
    ifr.ifr_name[IFNAMSIZ - 1] = '\0'; /* the kernel's name: the next queues attach to it */
  }
  if (offloads && ioctl(fds[0], TUNSETOFFLOAD, (unsigned long)offloads) < 0)
    FAIL_STEP(errno, "ioctl(TUNSETOFFLOAD)", "ioctl(TUNSETOFFLOAD 0x%llx) %s", (long long)offloads, ifr.ifr_name);
  if (offloads) {
    /* UDP super-packets (GSO_UDP_L4) both ways where the kernel has them: Linux 6.2 brought
     * them to TUN with TUN_F_USO4/6, which it takes only together, so a TUNSETOFFLOAD asking
     * for them tells. A write may then join a flow's datagrams (gro.c), and a read may hand
     * us a UDP super-packet, which the send path cuts (tso.c); without them the kernel cuts
     * those itself before the device. USO6 has nothing to do here (the inside path drops
     * IPv6, one super-packet as one packet). */
    st->uso_write = ioctl(fds[0], TUNSETOFFLOAD, (unsigned long)(offloads | TUN_F_USO4 | TUN_F_USO6)) == 0;
  }
  handle = fds[0];
  if (queues > 1) {
    if ((handle = fd_set_watch(set, fds, (int)queues, &step)) < 0) FAIL_STEP(errno, step, "%s for %s's queues", step, ifr.ifr_name);
    set->tap = tap;
  }
  if (napi_create_object(env, &res) != napi_ok || napi_create_int32(env, handle, &v) != napi_ok ||
      napi_set_named_property(env, res, "fd", v) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_named_property(env, res, "name", v) != napi_ok ||
      napi_create_int32(env, (int32_t)queues, &v) != napi_ok || napi_set_named_property(env, res, "queues", v) != napi_ok) {
    dev_forget(st, handle);
    close(handle);
    return NULL;
  }
  return res;
}

/* The queues of fd with packets waiting, into q (a plain fd: itself). Starts at a rotating
 * queue so that no queue is always first. Returns the count, or -1 with errno set. */
static int ready_queues(vx_state *st, int fd, int *q, bool look) {
  dev_set *d = dev_find(st, fd);
  int n, k = 0;
  if (d == NULL) {
    q[0] = fd;
    return look ? 0 : 1;
  }
  if (!look || d->bulk == 0) {
    if (!look) d->bulk = 0; /* the full read takes what the marked queues hold */
    return fd_set_ready(d, q);
  }
  if ((n = fd_set_ready(d, q)) <= 0) return n;
  for (int i = 0; i < n; i++) {
    int j = 0;
    while (j < d->n && d->fds[j] != q[i]) j++;
    if (!(d->bulk >> j & 1u)) q[k++] = q[i];
  }
  st->look_left += n - k;
  return k;
}

/* devRead(fd, buf, headroom, room, max, offs, lens, vnet[, look[, segments]]) -> count
 * Reads until EAGAIN, `max`, or less than headroom + room bytes of buf are left, or (with
 * vnet and `segments` > 0) once the packets read will make that many datagrams on the wire:
 * a super-packet counts ceil(length / gso_size), anything else 1 (vnet_wire_segments; the
 * TypeScript side counts the same way to tell such a stop from a drained device). Packet i
 * lands at buf[offs[i]] with `headroom` free bytes in front, lens[i] bytes (-1: it was
 * larger than `room`, truncated: count it as a drop). Packets are packed: the next starts
 * at the following 64-byte boundary. vnet (or null): each packet's virtio_net_hdr lands at
 * vnet[10*i] (a device opened with offloads; room should then be 65535). The kernel
 * truncates a packet larger than the buffer silently, so one spare byte past `room` tells
 * a truncated one. A multi-queue device is read one packet per ready queue in turn, so a
 * busy flow's queue cannot fill the batch while another waits. An error other than EAGAIN
 * ends that queue's part of the batch and is counted in lastError(); only a bad fd (EBADF,
 * or EBADFD once the device is deleted) with nothing read throws. */
napi_value vx_dev_read(napi_env env, napi_callback_info info) {
  static const char *fn = "devRead";
  GET_ARGS_OPT(8, 10);
  bool look = false;
  int64_t fd, headroom, room, max, n = 0, budget = 0, wire = 0;
  uint8_t *buf, *vnet, spare;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens, nvnet, lim, pos = 0;
  int q[DEV_MAX_QUEUES], nq, k = 0;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(2, "headroom", 0, 4096, &headroom);
  ARG_INT(3, "room", 1, MAX_IP, &room);
  ARG_TYPED(5, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(6, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED_OR_NULL(7, "vnet", napi_uint8_array, &vnet, &nvnet);
  lim = noffs < nlens ? noffs : nlens;
  if (vnet != NULL && nvnet / VNET_LEN < lim) lim = nvnet / VNET_LEN;
  ARG_INT(4, "max", 0, (int64_t)lim, &max);
  if (argc > 8) ARG_BOOL(8, "look", &look);
  if (argc > 9) ARG_INT(9, "segments", 0, INT32_MAX, &budget);
  if (vnet == NULL) budget = 0;
  if (buflen > INT32_MAX) THROW_RANGE(env, "%s: buf is larger than 2 GB", fn);
  if ((nq = ready_queues(st, (int)fd, q, look)) < 0) THROW_SYS(env, errno, "epoll_wait", "epoll_wait fd %d", (int)fd);

  while (n < max && nq > 0 && (budget == 0 || wire < budget)) {
    size_t start = pos + (size_t)headroom;
    struct iovec iov[3];
    int c = 0;
    size_t hdr = vnet != NULL ? VNET_LEN : 0;
    ssize_t r;
    if (start + (size_t)room > buflen) break;
    if (vnet != NULL) {
      iov[c].iov_base = vnet + n * VNET_LEN;
      iov[c++].iov_len = VNET_LEN;
    }
    iov[c].iov_base = buf + start;
    iov[c++].iov_len = (size_t)room;
    iov[c].iov_base = &spare;
    iov[c++].iov_len = 1;
    r = readv(q[k], iov, c);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        if (n == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "read", "read fd %d", q[k]);
        note_error(st, errno);
      }
      q[k] = q[--nq]; /* this queue is done for this batch */
      if (k >= nq) k = 0;
      continue;
    }
    k = k + 1 < nq ? k + 1 : 0;
    offs[n] = (int32_t)start;
    if ((size_t)r < hdr || (size_t)r > hdr + (size_t)room) {
      lens[n++] = -1;
      continue; /* nothing usable landed: the space is reused */
    }
    lens[n] = (int32_t)((size_t)r - hdr);
    if (budget) wire += vnet_wire_segments(vnet + n * VNET_LEN, (size_t)lens[n]);
    n++;
    pos = (start + ((size_t)r - hdr) + 63) & ~(size_t)63;
  }
  if (look) st->look_reads += (double)n;
  return int_result(env, n);
}

/* devWrite(fd, buf, offs, lens, n, vnet) -> packets accepted
 * Writes packets buf[offs[i] .. +lens[i]) for i < n, each to its flow's queue on a
 * multi-queue device (dev_queue_fd). vnet false: one write() each; a packet
 * the kernel rejects (EINVAL, EIO...) is skipped and counted in lastError(); EAGAIN stops
 * the batch. vnet true (a device opened with offloads): TCP segments of one flow are joined
 * into super-packets first (gro.c), which rewrites the joined heads' headers in buf. */
napi_value vx_dev_write(napi_env env, napi_callback_info info) {
  static const char *fn = "devWrite";
  GET_ARGS(6);
  int64_t fd, n, i, sent = 0;
  uint8_t *buf;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens, lim;
  bool vnet;
  dev_set *d;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_TYPED(2, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(3, "lens", napi_int32_array, &lens, &nlens);
  ARG_BOOL(5, "vnet", &vnet);
  lim = noffs < nlens ? noffs : nlens;
  if (vnet && lim > OF_PKTS) lim = OF_PKTS;
  ARG_INT(4, "n", 0, (int64_t)lim, &n);
  if (check_packets(env, fn, buflen, offs, lens, n) != 0) return NULL;
  d = dev_find(st, (int)fd);
  if (vnet) {
    int64_t r = gro_write(env, st, (int)fd, d, buf, buflen, offs, lens, n);
    return r < 0 ? NULL : int_result(env, r);
  }

  for (i = 0; i < n; i++) {
    int32_t off = READ_ONCE(offs[i]), len = READ_ONCE(lens[i]); /* may be shared memory */
    ssize_t r;
    if (off < 0 || len < 0 || (int64_t)off + len > (int64_t)buflen)
      THROW_RANGE(env, "%s: packet %lld changed while being written", fn, (long long)i);
    r = write(dev_write_fd(d, (int)fd, buf + off, (size_t)len, 1), buf + off, (size_t)len);
    if (r >= 0) {
      sent++;
      continue;
    }
    if (errno == EINTR) {
      i--;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (sent == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "write", "write fd %d", (int)fd);
    note_error(st, errno); /* EINVAL (not IP), EIO, EMSGSIZE...: skip this packet */
  }
  return int_result(env, sent);
}
