/*
 * socket.c: the underlay socket. One non-blocking UDP socket on underlay.port carries
 * VXLAN, keepalives and STUN; udpRecv and udpSend move a batch of datagrams between it and
 * one big Buffer with recvmmsg/sendmmsg. With UDP_GRO a received datagram may hold several
 * frames of one sender; with offloads a send may cut TCP super-packets into segments
 * (tso.c). udpCheckOffloads proves at start that UDP_SEGMENT and UDP_GRO really work here.
 * Also unixDgramSend, for systemd's notify socket, which Node's dgram cannot reach.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/sock_diag.h> /* SK_MEMINFO_DROPS */

#include "napi_util.h"
#include "tso.h"
#include "vx.h"

static void fmt_ip(char *out, size_t size, uint32_t a) {
  snprintf(out, size, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

/* Set a socket buffer size, privileged variant first (ignores net.core.[rw]mem_max). */
static void set_buf(int fd, int force_opt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return;
  (void)setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

/* One underlay socket, bound; -1 with *err and *step set. */
static int open_member(uint32_t addr, int port, int bytes, int reuse, int *err, const char **step) {
  struct sockaddr_in sin;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1;
  if (fd < 0) {
    *err = errno;
    *step = "socket";
    return -1;
  }
  if (bytes > 0) {
    set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF, bytes);
    set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF, bytes);
  }
  {
    /* DF clear, as the kernel's vxlan sends (docs/dataplane.md "Wire format"): the path
     * fragments oversize frames instead of a cached PMTU turning them into EMSGSIZE. */
    int pmtu = IP_PMTUDISC_DONT;
    (void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
    /* Each datagram's TOS as a control message, for its ECN field: a CE mark the path put on
     * the outer header is carried to the inner packet (RFC 6040, as the kernel's vxlan
     * decapsulates; udpRecv's ecn). Without it (an old kernel) the field reads 0. */
    (void)setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof on);
  }
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) {
    *err = errno;
    *step = "setsockopt(SO_REUSEPORT)";
    close(fd);
    return -1;
  }
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(addr);
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
    *err = errno;
    *step = "bind";
    close(fd);
    return -1;
  }
  return fd;
}

static int bound_port(int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  return getsockname(fd, (struct sockaddr *)&sin, &len) < 0 ? -1 : ntohs(sin.sin_port);
}

dev_set *udp_group(vx_state *st, int fd) {
  return fd_set_find(st->socks, UDP_MAX_SETS, fd);
}

int udp_send_fd(vx_state *st, int fd) {
  dev_set *g = udp_group(st, fd);
  return g != NULL ? g->fds[0] : fd;
}

void udp_forget(vx_state *st, int fd) {
  fd_set_forget(st->socks, UDP_MAX_SETS, fd);
}

/* udpOpen(address, port, bufBytes[, sockets]) -> fd
 * sockets > 1: that many SO_REUSEPORT sockets on the port, among which the kernel spreads
 * datagrams by their source address and port (a peer's kernel VXLAN picks the source port
 * per inner flow), and fd is an epoll fd over them that JS uses as the socket: udpRecv reads
 * the ready members in turn, so a ping's answer does not queue behind a bulk stream's
 * backlog in one socket; udpSend sends from the first. A plain socket is bound first and
 * closed: SO_REUSEPORT would let a second vxedge (same user) join the group instead of
 * failing with EADDRINUSE. */
napi_value vx_udp_open(napi_env env, napi_callback_info info) {
  static const char *fn = "udpOpen";
  GET_ARGS_OPT(3, 4);
  int64_t addr, port, bytes, n = 1;
  const char *step = NULL;
  char ip[16];
  int fds[DEV_MAX_QUEUES], nfds = 0, err = 0, handle = -1;
  dev_set *set;

  ARG_INT(0, "address", 0, UINT32_MAX, &addr);
  ARG_INT(1, "port", 0, 65535, &port);
  ARG_INT(2, "bufBytes", 0, INT_MAX / 2, &bytes);
  if (argc > 3) ARG_INT(3, "sockets", 1, DEV_MAX_QUEUES, &n);
  fmt_ip(ip, sizeof ip, (uint32_t)addr);
  if (n == 1) {
    int fd = open_member((uint32_t)addr, (int)port, (int)bytes, 0, &err, &step);
    if (fd < 0) THROW_SYS(env, err, step, "%s %s:%u", step, ip, (unsigned)port);
    return int_result(env, fd);
  }
  if ((set = fd_set_free(st->socks, UDP_MAX_SETS)) == NULL)
    THROW_SYS(env, EMFILE, "bind", "%s: %d socket groups are open already", fn, UDP_MAX_SETS);
  {
    int probe = open_member((uint32_t)addr, (int)port, 0, 0, &err, &step);
    if (probe < 0) THROW_SYS(env, err, step, "%s %s:%u", step, ip, (unsigned)port);
    if (port == 0) port = bound_port(probe); /* the group takes the port the kernel chose */
    close(probe);
  }
  while (nfds < n && err == 0) {
    int fd = open_member((uint32_t)addr, (int)port, (int)bytes, 1, &err, &step);
    if (fd >= 0) fds[nfds++] = fd;
  }
  if (err == 0 && (handle = fd_set_watch(set, fds, (int)n, &step)) < 0) err = errno;
  if (err != 0) {
    for (int i = 0; i < nfds; i++) close(fds[i]);
    THROW_SYS(env, err, step, "%s %s:%u (a group of %d sockets, %d opened)", step, ip, (unsigned)port, (int)n, nfds);
  }
  return int_result(env, handle);
}

/* udpSetGro(fd, on): setsockopt(SOL_UDP, UDP_GRO). Throws (e.g. ENOPROTOOPT: kernel < 5.0). */
napi_value vx_udp_set_gro(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSetGro";
  GET_ARGS(2);
  int64_t fd;
  bool on;
  int v;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_BOOL(1, "on", &on);
  v = on ? 1 : 0;
  {
    dev_set *g = udp_group(st, (int)fd);
    for (int i = 0; i < (g != NULL ? g->n : 1); i++) {
      int m = g != NULL ? g->fds[i] : (int)fd;
      if (setsockopt(m, SOL_UDP, UDP_GRO, &v, sizeof v) < 0)
        THROW_SYS(env, errno, "setsockopt(UDP_GRO)", "setsockopt(UDP_GRO) fd %d", m);
    }
  }
  return NULL;
}

/* udpDrops(fd) -> number[]: the kernel's drop count of each socket of the group (one entry for
 * a plain socket), SO_MEMINFO's SK_MEMINFO_DROPS: datagrams it dropped at that socket before
 * anyone read them, its receive buffer full or the UDP checksum wrong. 32-bit counters that
 * wrap; the caller keeps the running sum (dataplane/kernel-drops.ts). An entry is -1 when the
 * kernel refused to say (a kernel before 4.14, or a syscall translator without SO_MEMINFO). */
napi_value vx_udp_drops(napi_env env, napi_callback_info info) {
  static const char *fn = "udpDrops";
  GET_ARGS(1);
  int64_t fd;
  napi_value arr;
  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  {
    dev_set *g = udp_group(st, (int)fd);
    int n = g != NULL ? g->n : 1;
    if (napi_create_array_with_length(env, (size_t)n, &arr) != napi_ok) return NULL;
    for (int i = 0; i < n; i++) {
      uint32_t mem[SK_MEMINFO_VARS] = {0};
      socklen_t len = sizeof mem;
      int m = g != NULL ? g->fds[i] : (int)fd;
      int ok = getsockopt(m, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0 && len > SK_MEMINFO_DROPS * sizeof mem[0];
      napi_value v;
      if (napi_create_double(env, ok ? (double)mem[SK_MEMINFO_DROPS] : -1, &v) != napi_ok ||
          napi_set_element(env, arr, (uint32_t)i, v) != napi_ok)
        return NULL;
    }
  }
  return arr;
}

/* From a received message's control data: the UDP_GRO segment size (or 0) into *seg, and the
 * outer header's ECN field (IP_TOS & 3, or 0) into *ecn. */
static void rx_control(struct msghdr *h, int32_t len, int32_t *seg, uint8_t *ecn) {
  *seg = 0;
  *ecn = 0;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm != NULL; cm = CMSG_NXTHDR(h, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int g;
      memcpy(&g, CMSG_DATA(cm), sizeof g);
      if (g > 0 && g < len) *seg = g;
    } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TOS && cm->cmsg_len >= CMSG_LEN(1)) {
      *ecn = CMSG_DATA(cm)[0] & 3;
    }
  }
}

/* recvmmsg into slots total .. limit-1 until EAGAIN or the limit; returns the new total.
 * A fatal error (a bad fd) before anything was read sets *fatal (udpRecv throws it); other
 * errors end the read and are counted in lastError(). */
static int64_t recv_some(vx_state *st, int fd, uint8_t *buf, int64_t slot, int64_t room, int64_t headroom,
                         int64_t total, int64_t limit, int32_t *lens, uint32_t *addrs, uint16_t *ports,
                         int32_t *segs, uint8_t *ecn, int *fatal) {
  while (total < limit) {
    int want = (int)(limit - total < MMSG_BATCH ? limit - total : MMSG_BATCH);
    int j, r;
    for (j = 0; j < want; j++) {
      struct msghdr *h = &st->msgs[j].msg_hdr;
      st->iovs[j].iov_base = buf + (total + j) * slot + headroom;
      st->iovs[j].iov_len = (size_t)room;
      memset(h, 0, sizeof *h);
      h->msg_name = &st->names[j];
      h->msg_namelen = sizeof st->names[j];
      h->msg_iov = &st->iovs[j];
      h->msg_iovlen = 1;
      if (segs != NULL || ecn != NULL) {
        h->msg_control = st->ctls[j].buf;
        h->msg_controllen = sizeof st->ctls[j].buf;
      }
      st->msgs[j].msg_len = 0;
    }
    r = recvmmsg(fd, st->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (total == 0 && fd_fatal(errno)) *fatal = errno;
      else note_error(st, errno);
      break;
    }
    for (j = 0; j < r; j++) {
      struct msghdr *h = &st->msgs[j].msg_hdr;
      const struct sockaddr_in *sin = &st->names[j];
      int64_t k = total + j;
      lens[k] = (h->msg_flags & MSG_TRUNC) ? -1 : (int32_t)st->msgs[j].msg_len;
      if (segs != NULL || ecn != NULL) {
        int32_t g;
        uint8_t e;
        rx_control(h, lens[k] < 0 ? 0 : lens[k], &g, &e);
        if (segs != NULL) {
          segs[k] = g;
          if (g > 0) st->gro_datagrams += 1;
        }
        if (ecn != NULL) ecn[k] = e;
      }
      if (h->msg_namelen >= sizeof *sin && sin->sin_family == AF_INET) {
        addrs[k] = ntohl(sin->sin_addr.s_addr);
        ports[k] = ntohs(sin->sin_port);
      } else {
        addrs[k] = 0;
        ports[k] = 0;
      }
    }
    total += r;
    if (r < want) break;
  }
  return total;
}

/* udpRecv(fd, buf, slot, headroom, max, lens, addrs, ports, segs[, ecn]) -> count
 * recvmmsg(MSG_DONTWAIT), from each ready member of a socket group in turn (udpOpen):
 * datagram i lands at buf[i*slot+headroom]; lens[i] is its length, or -1 if it was
 * truncated (larger than slot-headroom; count it as a drop); addrs[i]/ports[i] are the
 * sender. segs (or null; a socket with UDP_GRO): segs[i] > 0 says datagram i holds
 * several coalesced datagrams of segs[i] bytes each, the last possibly shorter; 0 a single one.
 * ecn (a Uint8Array, or null/absent): ecn[i] is the ECN field of datagram i's outer IPv4
 * header (3 = CE), 0 where the kernel did not say. */
napi_value vx_udp_recv(napi_env env, napi_callback_info info) {
  static const char *fn = "udpRecv";
  GET_ARGS_OPT(9, 10);
  int64_t fd, slot, headroom, max, total = 0, room;
  uint8_t *buf;
  int32_t *lens, *segs;
  uint8_t *ecn = NULL;
  uint32_t *addrs;
  uint16_t *ports;
  size_t buflen, nlens, naddrs, nports, nsegs, necn = 0, lim;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(2, "slot", 1, INT32_MAX, &slot);
  ARG_INT(3, "headroom", 0, slot - 1, &headroom);
  ARG_TYPED(5, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(6, "addrs", napi_uint32_array, &addrs, &naddrs);
  ARG_TYPED(7, "ports", napi_uint16_array, &ports, &nports);
  ARG_TYPED_OR_NULL(8, "segs", napi_int32_array, &segs, &nsegs);
  lim = nlens < naddrs ? nlens : naddrs;
  lim = lim < nports ? lim : nports;
  if (segs != NULL && nsegs < lim) lim = nsegs;
  if (argc > 9) ARG_TYPED_OR_NULL(9, "ecn", napi_uint8_array, &ecn, &necn);
  if (ecn != NULL && necn < lim) lim = necn;
  ARG_INT(4, "max", 0, (int64_t)lim, &max);
  if (slot * max > (int64_t)buflen)
    THROW_RANGE(env, "%s: %lld slots of %lld bytes do not fit in the buffer (%zu bytes)", fn,
                (long long)max, (long long)slot, buflen);
  room = slot - headroom;
  {
    dev_set *g = udp_group(st, (int)fd);
    int fatal = 0;
    if (g == NULL) {
      total = recv_some(st, (int)fd, buf, slot, room, headroom, 0, max, lens, addrs, ports, segs, ecn, &fatal);
    } else {
      /* The ready members in turn, from a first one that moves on at every call, each read
       * until it runs dry or the batch is full. Not an even share of each batch: a peer's
       * kernel sends a flow's segments back to back, and the device write joins consecutive
       * segments of a flow; shares of four flows made four times as many writes of a
       * quarter the size, and 4-stream downloads 11-20 % slower. A ping's answer in its own
       * member waits for at most one batch per other ready member, not for the backlog. */
      int ready[DEV_MAX_QUEUES], nr = fd_set_ready(g, ready);
      if (nr < 0) THROW_SYS(env, errno, "epoll_wait", "epoll_wait fd %d", (int)fd);
      for (int k = 0; k < nr && total < max && !fatal; k++)
        total = recv_some(st, ready[k], buf, slot, room, headroom, total, max, lens, addrs, ports, segs, ecn, &fatal);
    }
    if (fatal) THROW_SYS(env, fatal, "recvmmsg", "recvmmsg fd %d", (int)fd);
  }
  return int_result(env, total);
}

/* udpSend(fd, buf, offs, lens, addrs, ports, n, vnet, vnetIdx, encap) -> sent
 * Sends datagram i = buf[offs[i] .. +lens[i]) to addrs[i]:ports[i], for i < n (n <= 4096);
 * consecutive datagrams of one size to one destination leave as one UDP_SEGMENT message
 * (tso.c). A datagram the kernel rejects (EINVAL, EMSGSIZE, ENETUNREACH...) is skipped and
 * counted in lastError(); EAGAIN/ENOBUFS stops the batch (the rest is not sent). Returns the
 * number sent.
 * vnet and vnetIdx (or both null): datagram i is `encap` bytes of headers, then an inner IPv4
 * packet read with offloads whose virtio_net_hdr is vnet[10*vnetIdx[i]]: partial checksums are
 * completed and TCP super-packets leave as MTU-sized segments with UDP_SEGMENT (tso.c); the
 * count is then of packets that went out entirely. */
napi_value vx_udp_send(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSend";
  GET_ARGS(10);
  st->failed_n = 0; /* until tso_send says which of this call's packets failed */
  int64_t fd, n, encap;
  uint8_t *buf, *vnet;
  int32_t *offs, *lens, *vidx;
  uint32_t *addrs;
  uint16_t *ports;
  size_t buflen, noffs, nlens, naddrs, nports, nvnet, nvidx, lim;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_TYPED(2, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(3, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(4, "addrs", napi_uint32_array, &addrs, &naddrs);
  ARG_TYPED(5, "ports", napi_uint16_array, &ports, &nports);
  ARG_TYPED_OR_NULL(7, "vnet", napi_uint8_array, &vnet, &nvnet);
  ARG_TYPED_OR_NULL(8, "vnetIdx", napi_int32_array, &vidx, &nvidx);
  ARG_INT(9, "encap", 0, 64, &encap);
  fd = udp_send_fd(st, (int)fd); /* a socket group sends from its first member */
  if ((vnet == NULL) != (vidx == NULL)) THROW_TYPE(env, "%s: vnet and vnetIdx go together (both or neither)", fn);
  lim = noffs < nlens ? noffs : nlens;
  lim = lim < naddrs ? lim : naddrs;
  lim = lim < nports ? lim : nports;
  if (vnet != NULL) lim = lim < nvidx ? lim : nvidx;
  lim = lim < OF_PKTS ? lim : OF_PKTS;
  ARG_INT(6, "n", 0, (int64_t)lim, &n);
  if (check_packets(env, fn, buflen, offs, lens, n) != 0) return NULL;
  {
    int64_t r = tso_send(env, st, (int)fd, buf, buflen, offs, lens, addrs, ports, vnet, nvnet, vidx, encap, n);
    return r < 0 ? NULL : int_result(env, r);
  }
}

/* udpSendFailed(out) -> n
 * Which packets of the last udpSend call did not go out entirely: out[i] = 1 for each, 0 for
 * the others, for i < n (n: that call's packet count, 0 after a call that threw; at most
 * out.length are written). On the JS thread only, like udpSend: the sender thread's later
 * failures are udpSendLost's. udpSend returns how many went out, not which: a datagram the
 * kernel rejects alone (EMSGSIZE, EACCES...) may sit before others that left, and with the
 * sender thread a plain datagram sent before the super-packets of its batch (tso.c
 * send_early) may leave while one of those does not. */
napi_value vx_udp_send_failed(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSendFailed";
  GET_ARGS(1);
  uint8_t *out;
  size_t nout;
  ARG_TYPED(0, "out", napi_uint8_array, &out, &nout);
  memcpy(out, st->failed, (size_t)st->failed_n < nout ? (size_t)st->failed_n : nout);
  return int_result(env, st->failed_n);
}

/* ------------------------------------------------------------------ udpCheckOffloads
 *
 * A kernel without UDP_SEGMENT or UDP_GRO says so (EINVAL, ENOPROTOOPT...), and the send
 * path falls back by itself (tso.c). A syscall translator between us and the kernel may
 * not: qemu-user running an ARM build on another machine accepts the setsockopt, but it
 * may drop or mangle a control message it does not know. A UDP_SEGMENT send whose cmsg is
 * lost leaves as ONE datagram holding every segment (the peer keeps the first frame and
 * drops the rest), and a UDP_GRO receive whose cmsg is lost looks like one oversized frame.
 * Neither fails a syscall, so it is checked once at start, end to end, on loopback with two
 * throwaway sockets:
 *   1. two segments sent as one UDP_SEGMENT message to a socket without UDP_GRO must arrive
 *      as two datagrams of the segment size, each with its own bytes;
 *   2. with UDP_GRO on that socket, the same send must arrive as one datagram carrying a
 *      UDP_GRO cmsg with the segment size (or as two datagrams: the kernel may segment).
 * Only the path through this process is checked: the egress NIC's refusal (EIO before
 * Linux 6.11 without checksum offload) is still handled when it happens (tso.c). */

#define PROBE_SEG 1000  /* bytes per segment: any size below the loopback MTU */
#define PROBE_WAIT_MS 500

typedef struct {
  int n;              /* datagrams received */
  int len[4], gro[4]; /* their lengths, and UDP_GRO segment sizes (-1: no cmsg) */
  int bytes_ok;       /* every datagram holds the bytes sent at its place */
  int err;            /* errno of a failed poll/recvmmsg, 0 */
} probe_rx;

/* Sends buf[0 .. 2*PROBE_SEG) as one message with UDP_SEGMENT = PROBE_SEG; 0 or errno. */
static int probe_send(int fd, const struct sockaddr_in *to, uint8_t *buf) {
  struct mmsghdr m;
  struct iovec iov = {buf, 2 * PROBE_SEG};
  ctl_buf ctl;
  int r;
  memset(&m, 0, sizeof m);
  m.msg_hdr.msg_name = (void *)to;
  m.msg_hdr.msg_namelen = sizeof *to;
  m.msg_hdr.msg_iov = &iov;
  m.msg_hdr.msg_iovlen = 1;
  put_control(&m.msg_hdr, &ctl, PROBE_SEG, 0);
  do r = sendmmsg(fd, &m, 1, 0); while (r < 0 && errno == EINTR);
  return r == 1 ? 0 : r < 0 ? errno : EAGAIN;
}

/* Receives until 2*PROBE_SEG bytes arrived or PROBE_WAIT_MS passed, at most 4 datagrams,
 * comparing each with what was sent at its place (`sent`). */
static void probe_recv(int fd, const uint8_t *sent, probe_rx *rx) {
  uint8_t data[4][2 * PROBE_SEG + 1];
  int total = 0;
  memset(rx, 0, sizeof *rx);
  rx->bytes_ok = 1;
  while (total < 2 * PROBE_SEG && rx->n < 4) {
    struct mmsghdr m[4];
    struct iovec iov[4];
    ctl_buf ctl[4];
    struct pollfd p = {fd, POLLIN, 0};
    int want = 4 - rx->n, r, j;
    r = poll(&p, 1, PROBE_WAIT_MS);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      rx->err = r < 0 ? errno : 0;
      return;
    }
    memset(m, 0, sizeof m);
    for (j = 0; j < want; j++) {
      iov[j].iov_base = data[rx->n + j];
      iov[j].iov_len = sizeof data[0];
      m[j].msg_hdr.msg_iov = &iov[j];
      m[j].msg_hdr.msg_iovlen = 1;
      m[j].msg_hdr.msg_control = ctl[j].buf;
      m[j].msg_hdr.msg_controllen = sizeof ctl[j].buf;
    }
    r = recvmmsg(fd, m, (unsigned)want, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      rx->err = errno;
      return;
    }
    for (j = 0; j < r; j++) {
      int k = rx->n++, len = (int)m[j].msg_len, g;
      uint8_t ecn; /* not asked about here */
      rx->len[k] = len;
      rx_control(&m[j].msg_hdr, len, &g, &ecn);
      rx->gro[k] = g > 0 ? g : -1;
      if (total + len > 2 * PROBE_SEG || memcmp(data[k], sent + total, (size_t)len) != 0) rx->bytes_ok = 0;
      total += len;
    }
  }
}

/* Two segments, each with its own bytes, came back as two datagrams: nothing is needed from
 * a receive cmsg for that. */
static int probe_split(const probe_rx *rx) {
  return rx->n == 2 && rx->len[0] == PROBE_SEG && rx->len[1] == PROBE_SEG && rx->bytes_ok;
}

/* What arrived, for a reason: "one 2000-byte datagram", "datagrams of 1000, 600 bytes". */
static void probe_seen(const probe_rx *rx, char *out, size_t size) {
  char code[48], text[96];
  if (rx->err != 0) {
    errno_strings(rx->err, code, sizeof code, text, sizeof text);
    snprintf(out, size, "receiving failed: %s (%s)", text, code);
  } else if (rx->n == 0) {
    snprintf(out, size, "nothing arrived within %d ms", PROBE_WAIT_MS);
  } else if (rx->n == 1) {
    snprintf(out, size, "one %d-byte datagram%s", rx->len[0], rx->bytes_ok ? "" : " with other bytes");
  } else {
    int at = snprintf(out, size, "datagrams of");
    for (int k = 0; k < rx->n && at > 0 && (size_t)at < size; k++)
      at += snprintf(out + at, size - (size_t)at, "%s %d", k ? "," : "", rx->len[k]);
    if (at > 0 && (size_t)at < size) snprintf(out + at, size - (size_t)at, " bytes%s", rx->bytes_ok ? "" : ", other bytes");
  }
}

static napi_value probe_result(napi_env env, const char *segment, const char *gro) {
  napi_value res, v;
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  if ((segment ? napi_create_string_utf8(env, segment, NAPI_AUTO_LENGTH, &v) : napi_get_null(env, &v)) != napi_ok ||
      napi_set_named_property(env, res, "segment", v) != napi_ok)
    return NULL;
  if ((gro ? napi_create_string_utf8(env, gro, NAPI_AUTO_LENGTH, &v) : napi_get_null(env, &v)) != napi_ok ||
      napi_set_named_property(env, res, "gro", v) != napi_ok)
    return NULL;
  return res;
}

/* udpCheckOffloads() -> { segment, gro }: null when that offload was seen working, else why
 * not. When segmentation was not seen working, UDP_SEGMENT is off for this environment from
 * now on (every datagram its own message), as after a refusal (offloadStats().gsoOff). */
napi_value vx_udp_check_offloads(napi_env env, napi_callback_info info) {
  static const char *fn = "udpCheckOffloads";
  GET_ARGS(0);
  char segment[400] = "", gro[400] = "", seen[200], code[48], text[96];
  uint8_t sent[2 * PROBE_SEG];
  struct sockaddr_in rx_addr;
  socklen_t alen = sizeof rx_addr;
  probe_rx rx;
  int tx = -1, rfd = -1, err, on = 1;

  for (int i = 0; i < 2 * PROBE_SEG; i++) sent[i] = (uint8_t)(i * 7 + i / PROBE_SEG * 101);
  memset(&rx_addr, 0, sizeof rx_addr);
  rx_addr.sin_family = AF_INET;
  rx_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  rfd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (tx < 0 || rfd < 0 || bind(rfd, (struct sockaddr *)&rx_addr, sizeof rx_addr) < 0 ||
      getsockname(rfd, (struct sockaddr *)&rx_addr, &alen) < 0) {
    errno_strings(errno, code, sizeof code, text, sizeof text);
    snprintf(segment, sizeof segment, "UDP_SEGMENT not verified: no UDP socket on 127.0.0.1: %s (%s); is lo up?", text, code);
    snprintf(gro, sizeof gro, "UDP_GRO not verified: no UDP socket on 127.0.0.1: %s (%s); is lo up?", text, code);
    goto done;
  }

  /* 1. UDP_SEGMENT, to a socket without UDP_GRO. */
  if ((err = probe_send(tx, &rx_addr, sent)) != 0) {
    errno_strings(err, code, sizeof code, text, sizeof text);
    if (err == EINVAL || err == EIO || err == ENOPROTOOPT || err == EOPNOTSUPP || err == EMSGSIZE)
      snprintf(segment, sizeof segment, "UDP_SEGMENT refused: sendmmsg: %s (%s)", text, code);
    else
      snprintf(segment, sizeof segment, "UDP_SEGMENT not verified: sendmmsg to 127.0.0.1: %s (%s); is lo up?", text, code);
  } else {
    probe_recv(rfd, sent, &rx);
    if (!probe_split(&rx)) {
      probe_seen(&rx, seen, sizeof seen);
      snprintf(segment, sizeof segment,
               rx.n == 1 && rx.len[0] == 2 * PROBE_SEG
                   ? "UDP_SEGMENT ignored: 2 segments of %d bytes sent as one message arrived as %s (the control message was lost on the way to the kernel)"
                   : "UDP_SEGMENT not verified: 2 segments of %d bytes sent as one message, %s arrived",
               PROBE_SEG, seen);
    }
  }

  /* 2. UDP_GRO: only a working UDP_SEGMENT can make the coalesced datagram to look at. */
  if (segment[0] != '\0') {
    snprintf(gro, sizeof gro, "UDP_GRO not verified: checking it needs a working UDP_SEGMENT");
  } else if (setsockopt(rfd, SOL_UDP, UDP_GRO, &on, sizeof on) < 0) {
    errno_strings(errno, code, sizeof code, text, sizeof text);
    snprintf(gro, sizeof gro, "UDP_GRO refused: setsockopt: %s (%s)", text, code);
  } else if ((err = probe_send(tx, &rx_addr, sent)) != 0) {
    errno_strings(err, code, sizeof code, text, sizeof text);
    snprintf(gro, sizeof gro, "UDP_GRO not verified: the second sendmmsg failed: %s (%s)", text, code);
  } else {
    probe_recv(rfd, sent, &rx);
    if (!(rx.n == 1 && rx.len[0] == 2 * PROBE_SEG && rx.bytes_ok && rx.gro[0] == PROBE_SEG) && !probe_split(&rx)) {
      probe_seen(&rx, seen, sizeof seen);
      if (rx.n == 1 && rx.len[0] == 2 * PROBE_SEG && rx.gro[0] < 0)
        snprintf(gro, sizeof gro, "UDP_GRO lost its control message: %s arrived without its segment size (%d)", seen, PROBE_SEG);
      else
        snprintf(gro, sizeof gro, "UDP_GRO not verified: 2 segments of %d bytes were sent, %s arrived (segment size %d)",
                 PROBE_SEG, seen, rx.n > 0 ? rx.gro[0] : 0);
    }
  }

done:
  if (tx >= 0) close(tx);
  if (rfd >= 0) close(rfd);
  if (segment[0] != '\0') st->gso_off = 1;
  return probe_result(env, segment[0] ? segment : NULL, gro[0] ? gro : NULL);
}

/* unixDgramSend(path, data): send `data` as one datagram to the AF_UNIX SOCK_DGRAM socket
 * at `path` (a leading '@' names the abstract namespace, as in $NOTIFY_SOCKET), from a
 * fresh close-on-exec socket that is closed again. MSG_DONTWAIT: a full receiver queue
 * throws EAGAIN instead of blocking Node's loop. Failures throw (syscall 'socket'/'sendto'). */
napi_value vx_unix_dgram_send(napi_env env, napi_callback_info info) {
  static const char *fn = "unixDgramSend";
  GET_ARGS(2);
  struct sockaddr_un sun;
  size_t plen;
  void *data;
  size_t len;
  napi_valuetype t;
  socklen_t alen;
  ssize_t n;
  int fd, err, abstract;

  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_string)
    THROW_TYPE(env, "%s: path must be a string", fn);
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &plen) != napi_ok) return NULL;
  if (plen == 0) THROW_RANGE(env, "%s: path is empty", fn);
  if (plen >= sizeof sun.sun_path)
    THROW_RANGE(env, "%s: path is %zu bytes long, a unix socket address allows at most %zu", fn,
                plen, sizeof sun.sun_path - 1);
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (napi_get_value_string_utf8(env, argv[0], sun.sun_path, sizeof sun.sun_path, &plen) != napi_ok)
    return NULL;
  ARG_TYPED(1, "data", napi_uint8_array, &data, &len);

  abstract = sun.sun_path[0] == '@';
  if (!abstract && strlen(sun.sun_path) != plen) THROW_RANGE(env, "%s: path contains a NUL", fn);
  {
    char shown[sizeof sun.sun_path];
    memcpy(shown, sun.sun_path, sizeof shown);
    if (abstract) sun.sun_path[0] = '\0'; /* abstract: no trailing NUL, the length says where it ends */
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (abstract ? 0 : 1));

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) THROW_SYS(env, errno, "socket", "socket(AF_UNIX, SOCK_DGRAM)");
    do {
      n = sendto(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
    } while (n < 0 && errno == EINTR);
    err = errno;
    close(fd);
    if (n < 0) THROW_SYS(env, err, "sendto", "sendto %s", shown);
  }
  return NULL;
}
