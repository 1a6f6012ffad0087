/*
 * vxedge_native.c: the small native part of vxedge (plain C, Node-API, libuv).
 *
 * It does only what Node cannot do by itself (see shared docs baselines.md):
 *   1. open a TUN/TAP device (open + ioctl TUNSETIFF) and a non-blocking UDP socket;
 *   2. watch an fd for readability on Node's own libuv loop (uv_poll_t, no threadpool),
 *      calling JS once per wakeup, inside a proper async context;
 *   3. move packets in batches between the kernel and ONE big Buffer addressed by
 *      offsets: readv()/write() loops on the device, recvmmsg()/sendmmsg() on the socket.
 * Everything else (framing, VXLAN headers, peers, policy) is TypeScript.
 *
 * Rules kept here:
 *   - no threads, no per-packet allocation, nothing kept between calls but counters;
 *   - every offset, length and count from JS is bounds-checked before any syscall;
 *   - wrong arguments throw TypeError/RangeError (code ERR_INVALID_ARG_TYPE/ERR_OUT_OF_RANGE);
 *     failing setup syscalls throw an Error with code/errno/syscall, made by sys_error()
 *     (THROW_SYS); per-packet errors never throw: they are counted for lastError();
 *   - never assert/abort: a bad call from JS must not take the process down.
 *
 * The errno of a per-packet failure is remembered per Node environment (main thread or
 * worker) together with a running count, so JS can log "write to device failed: EINVAL"
 * once instead of throwing per packet.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <linux/if_tun.h>

#include <node_api.h>
#include <uv.h>

#include "napi_util.h"
#include "offload.h"

/* The kernel's cap on vlen for one recvmmsg/sendmmsg (UIO_MAXIOV). */
#define MMSG_BATCH 1024

typedef struct poll_ctx poll_ctx;

/* Per-environment state (napi instance data): counters, open polls, mmsg scratch. */
typedef struct {
  int last_errno;          /* last per-packet errno (0: none yet) */
  double error_count;      /* per-packet errors so far */
  poll_ctx *polls;         /* poll handles not yet closing */
  struct mmsghdr msgs[MMSG_BATCH];
  struct iovec iovs[MMSG_BATCH];
  struct sockaddr_in names[MMSG_BATCH];
} vx_state;

/*
 * One pollStart(). Freed when BOTH the uv handle has closed and the JS wrapper object
 * has been finalized (or was never made), whichever comes last, so pollStop() on a
 * stale handle, or GC during a callback, never touches freed memory.
 */
struct poll_ctx {
  uv_poll_t handle;        /* first member: uv callbacks cast back to poll_ctx */
  napi_env env;
  vx_state *st;
  napi_ref callback;
  napi_async_context async;
  napi_async_cleanup_hook_handle cleanup;
  poll_ctx *next;
  int fd;
  int closing;             /* uv_close() called */
  int closed;              /* close callback ran */
  int wrapper_gone;        /* JS object finalized, or never created */
};

static const napi_type_tag POLL_TAG = {0x7678656467655f70ULL, 0x6f6c6c68616e646cULL};
static long polls_allocated; /* process-wide count of poll_ctx not yet freed (atomic) */

/* ------------------------------------------------------------------ errors */

/* Remember a per-packet error for lastError(). */
static void note_error(vx_state *st, int err) {
  st->last_errno = err;
  st->error_count += 1;
}

/* ------------------------------------------------------------- arguments */

#define GET_ARGS(n) GET_ARGS_OF(n, vx_state)

/* Offsets and lengths are checked once up front for a clean error, then read exactly once
 * more where used: a SharedArrayBuffer-backed array could change in between. */
#define READ_ONCE(x) (*(volatile const int32_t *)&(x))

/* Check a packet list [offs[i], offs[i]+lens[i]) for i < n against the buffer. */
static void fmt_ip(char *out, size_t size, uint32_t a) {
  snprintf(out, size, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

/* ------------------------------------------------------------ open/close */

/* tunOpen(name, tap) -> { fd, name } */
static napi_value tun_open(napi_env env, napi_callback_info info) {
  static const char *fn = "tunOpen";
  GET_ARGS(2);
  napi_valuetype t;
  size_t len;
  bool tap;
  struct ifreq ifr;
  napi_value res, v;
  int fd;

  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_string)
    THROW_TYPE(env, "%s: name must be a string", fn);
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_boolean)
    THROW_TYPE(env, "%s: tap must be a boolean", fn);
  napi_get_value_bool(env, argv[1], &tap);

  memset(&ifr, 0, sizeof ifr);
  napi_get_value_string_utf8(env, argv[0], NULL, 0, &len);
  if (len >= IFNAMSIZ)
    THROW_RANGE(env, "%s: interface name is %zu bytes long, Linux allows at most %d", fn, len,
                IFNAMSIZ - 1);
  napi_get_value_string_utf8(env, argv[0], ifr.ifr_name, IFNAMSIZ, &len);
  if (strlen(ifr.ifr_name) != len) THROW_RANGE(env, "%s: interface name contains a NUL", fn);
  ifr.ifr_flags = (short)((tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI);

  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) THROW_SYS(env, errno, "open", "open /dev/net/tun");
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    THROW_SYS(env, err, "ioctl(TUNSETIFF)", "ioctl(TUNSETIFF) %s %s", tap ? "tap" : "tun",
              len ? ifr.ifr_name : "(kernel-chosen name)");
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';

  if (napi_create_object(env, &res) != napi_ok || napi_create_int32(env, fd, &v) != napi_ok ||
      napi_set_named_property(env, res, "fd", v) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_named_property(env, res, "name", v) != napi_ok) {
    close(fd);
    return NULL;
  }
  return res;
}

/* Set a socket buffer size, privileged variant first (ignores net.core.[rw]mem_max). */
static void set_buf(int fd, int force_opt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return;
  (void)setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

/* udpOpen(address, port, bufBytes) -> fd */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  static const char *fn = "udpOpen";
  GET_ARGS(3);
  int64_t addr, port, bytes;
  struct sockaddr_in sin;
  char ip[16];
  int fd;

  ARG_INT(0, "address", 0, UINT32_MAX, &addr);
  ARG_INT(1, "port", 0, 65535, &port);
  ARG_INT(2, "bufBytes", 0, INT_MAX / 2, &bytes);

  fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) THROW_SYS(env, errno, "socket", "socket(AF_INET, SOCK_DGRAM)");
  if (bytes > 0) {
    set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF, (int)bytes);
    set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF, (int)bytes);
  }
  {
    /* DF clear, as the kernel's vxlan sends (flannel-interop.md §0): the path
     * fragments oversize frames instead of a cached PMTU turning them into EMSGSIZE. */
    int pmtu = IP_PMTUDISC_DONT;
    (void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  }
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl((uint32_t)addr);
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
    int err = errno;
    close(fd);
    fmt_ip(ip, sizeof ip, (uint32_t)addr);
    THROW_SYS(env, err, "bind", "bind %s:%u", ip, (unsigned)port);
  }
  return int_result(env, fd);
}

static void poll_close(poll_ctx *ctx);

/* close(fd): stops any poll on fd first (libuv must not watch a closed fd). */
static napi_value fd_close(napi_env env, napi_callback_info info) {
  static const char *fn = "close";
  GET_ARGS(1);
  int64_t fd;
  poll_ctx *p, *next;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  for (p = st->polls; p != NULL; p = next) {
    next = p->next;
    if (p->fd == fd) poll_close(p);
  }
  if (close((int)fd) < 0 && errno != EINTR) /* Linux frees the fd even on EINTR */
    THROW_SYS(env, errno, "close", "close fd %d", (int)fd);
  return NULL;
}

/* ------------------------------------------------------------ device I/O */

/* devRead(fd, buf, slot, headroom, max, lens) -> count; lens[i] = -1: truncated */
static napi_value dev_read(napi_env env, napi_callback_info info) {
  static const char *fn = "devRead";
  GET_ARGS(6);
  int64_t fd, slot, headroom, max;
  uint8_t *buf;
  int32_t *lens;
  size_t buflen, nlens;
  int64_t n = 0;
  struct iovec iov[2];
  uint8_t spare;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(2, "slot", 1, INT32_MAX, &slot);
  ARG_INT(3, "headroom", 0, slot - 1, &headroom);
  ARG_TYPED(5, "lens", napi_int32_array, &lens, &nlens);
  ARG_INT(4, "max", 0, (int64_t)nlens, &max);
  if (slot * max > (int64_t)buflen)
    THROW_RANGE(env, "%s: %lld slots of %lld bytes do not fit in the buffer (%zu bytes)", fn,
                (long long)max, (long long)slot, buflen);

  /* The kernel truncates a TUN/TAP packet larger than the buffer silently (read returns
   * the bytes copied), so one spare byte past the slot tells a truncated packet. */
  iov[0].iov_len = (size_t)(slot - headroom);
  iov[1].iov_base = &spare;
  iov[1].iov_len = 1;
  while (n < max) {
    ssize_t r;
    iov[0].iov_base = buf + n * slot + headroom;
    r = readv((int)fd, iov, 2);
    if (r >= 0) {
      lens[n++] = r > (ssize_t)iov[0].iov_len ? -1 : (int32_t)r;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (n == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "read", "read fd %d", (int)fd);
    note_error(st, errno);
    break;
  }
  return int_result(env, n);
}

/* devWrite(fd, buf, offs, lens, n) -> packets accepted */
static napi_value dev_write(napi_env env, napi_callback_info info) {
  static const char *fn = "devWrite";
  GET_ARGS(5);
  int64_t fd, n, i, sent = 0;
  uint8_t *buf;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_TYPED(2, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(3, "lens", napi_int32_array, &lens, &nlens);
  ARG_INT(4, "n", 0, (int64_t)(noffs < nlens ? noffs : nlens), &n);
  if (check_packets(env, fn, buflen, offs, lens, n) != 0) return NULL;

  for (i = 0; i < n; i++) {
    int32_t off = READ_ONCE(offs[i]), len = READ_ONCE(lens[i]); /* may be shared memory */
    ssize_t r;
    if (off < 0 || len < 0 || (int64_t)off + len > (int64_t)buflen)
      THROW_RANGE(env, "%s: packet %lld changed while being written", fn, (long long)i);
    r = write((int)fd, buf + off, (size_t)len);
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

/* ---------------------------------------------------------------- UDP I/O */

/* udpRecv(fd, buf, slot, headroom, max, lens, addrs, ports) -> count */
static napi_value udp_recv(napi_env env, napi_callback_info info) {
  static const char *fn = "udpRecv";
  GET_ARGS(8);
  int64_t fd, slot, headroom, max, total = 0, room;
  uint8_t *buf;
  int32_t *lens;
  uint32_t *addrs;
  uint16_t *ports;
  size_t buflen, nlens, naddrs, nports, lim;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(2, "slot", 1, INT32_MAX, &slot);
  ARG_INT(3, "headroom", 0, slot - 1, &headroom);
  ARG_TYPED(5, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(6, "addrs", napi_uint32_array, &addrs, &naddrs);
  ARG_TYPED(7, "ports", napi_uint16_array, &ports, &nports);
  lim = nlens < naddrs ? nlens : naddrs;
  lim = lim < nports ? lim : nports;
  ARG_INT(4, "max", 0, (int64_t)lim, &max);
  if (slot * max > (int64_t)buflen)
    THROW_RANGE(env, "%s: %lld slots of %lld bytes do not fit in the buffer (%zu bytes)", fn,
                (long long)max, (long long)slot, buflen);
  room = slot - headroom;

  while (total < max) {
    int want = (int)(max - total < MMSG_BATCH ? max - total : MMSG_BATCH);
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
      st->msgs[j].msg_len = 0;
    }
    r = recvmmsg((int)fd, st->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (total == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "recvmmsg", "recvmmsg fd %d", (int)fd);
      note_error(st, errno);
      break;
    }
    for (j = 0; j < r; j++) {
      const struct msghdr *h = &st->msgs[j].msg_hdr;
      const struct sockaddr_in *sin = &st->names[j];
      int64_t k = total + j;
      lens[k] = (h->msg_flags & MSG_TRUNC) ? -1 : (int32_t)st->msgs[j].msg_len;
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
  return int_result(env, total);
}

/* udpSend(fd, buf, offs, lens, addrs, ports, n) -> datagrams sent */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSend";
  GET_ARGS(7);
  int64_t fd, n, i = 0, sent = 0;
  uint8_t *buf;
  int32_t *offs, *lens;
  uint32_t *addrs;
  uint16_t *ports;
  size_t buflen, noffs, nlens, naddrs, nports, lim;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_TYPED(2, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(3, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(4, "addrs", napi_uint32_array, &addrs, &naddrs);
  ARG_TYPED(5, "ports", napi_uint16_array, &ports, &nports);
  lim = noffs < nlens ? noffs : nlens;
  lim = lim < naddrs ? lim : naddrs;
  lim = lim < nports ? lim : nports;
  ARG_INT(6, "n", 0, (int64_t)lim, &n);
  if (check_packets(env, fn, buflen, offs, lens, n) != 0) return NULL;

  while (i < n) {
    int cnt = (int)(n - i < MMSG_BATCH ? n - i : MMSG_BATCH);
    int j, k = 0;
    for (j = 0; j < cnt; j++) {
      struct msghdr *h = &st->msgs[j].msg_hdr;
      struct sockaddr_in *sin = &st->names[j];
      int32_t off = READ_ONCE(offs[i + j]), len = READ_ONCE(lens[i + j]);
      if (off < 0 || len < 0 || (int64_t)off + len > (int64_t)buflen)
        THROW_RANGE(env, "%s: packet %lld changed while being sent", fn, (long long)(i + j));
      memset(sin, 0, sizeof *sin);
      sin->sin_family = AF_INET;
      sin->sin_addr.s_addr = htonl(addrs[i + j]);
      sin->sin_port = htons(ports[i + j]);
      st->iovs[j].iov_base = buf + off;
      st->iovs[j].iov_len = (size_t)len;
      memset(h, 0, sizeof *h);
      h->msg_name = sin;
      h->msg_namelen = sizeof *sin;
      h->msg_iov = &st->iovs[j];
      h->msg_iovlen = 1;
    }
    while (k < cnt) {
      int r = sendmmsg((int)fd, st->msgs + k, (unsigned)(cnt - k), MSG_DONTWAIT);
      if (r > 0) {
        sent += r;
        k += r;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) goto out;
      if (sent == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "sendmmsg", "sendmmsg fd %d", (int)fd);
      note_error(st, errno); /* message k failed (EINVAL, EMSGSIZE, ENETUNREACH...): skip it */
      k++;
    }
    i += cnt;
  }
out:
  return int_result(env, sent);
}

/* ------------------------------------------------------------------ polls */

static void poll_free_if_done(poll_ctx *ctx) {
  if (ctx->closed && ctx->wrapper_gone) {
    __atomic_fetch_sub(&polls_allocated, 1, __ATOMIC_RELAXED);
    free(ctx);
  }
}

static void poll_closed(uv_handle_t *h) {
  poll_ctx *ctx = (poll_ctx *)h;
  napi_env env = ctx->env;
  if (ctx->callback != NULL) napi_delete_reference(env, ctx->callback);
  if (ctx->async != NULL) napi_async_destroy(env, ctx->async);
  if (ctx->cleanup != NULL) napi_remove_async_cleanup_hook(ctx->cleanup);
  ctx->callback = NULL;
  ctx->async = NULL;
  ctx->cleanup = NULL;
  ctx->closed = 1;
  poll_free_if_done(ctx);
}

/* Stop watching and start closing; idempotent. Safe inside the poll callback. */
static void poll_close(poll_ctx *ctx) {
  poll_ctx **pp;
  if (ctx->closing) return;
  ctx->closing = 1;
  for (pp = &ctx->st->polls; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == ctx) {
      *pp = ctx->next;
      break;
    }
  }
  ctx->next = NULL;
  uv_poll_stop(&ctx->handle);
  uv_close((uv_handle_t *)&ctx->handle, poll_closed);
}

static void poll_wrapper_finalize(napi_env env, void *data, void *hint) {
  poll_ctx *ctx = data;
  (void)env;
  (void)hint;
  ctx->wrapper_gone = 1;
  poll_free_if_done(ctx);
}

/* Environment teardown (process end or worker exit): close what JS left open. The hook
 * is removed in poll_closed(), which tells Node the handle is gone. */
static void poll_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  poll_close((poll_ctx *)arg);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  poll_ctx *ctx = (poll_ctx *)h;
  napi_env env = ctx->env;
  napi_handle_scope scope;
  napi_value cb, recv, result, argv[1];
  size_t argc = 0;
  napi_status s;

  (void)events;
  if (ctx->closing) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, ctx->callback, &cb) == napi_ok && cb != NULL &&
      napi_get_global(env, &recv) == napi_ok) {
    if (status < 0) {
      /* libuv saw POLLERR (e.g. the TUN device was deleted) and stopped the watcher. */
      argv[0] = sys_error(env, -status, "uv_poll", "poll fd %d", ctx->fd);
      argc = argv[0] != NULL ? 1 : 0;
    }
    s = napi_make_callback(env, ctx->async, recv, cb, argc, argv, &result);
    if (s == napi_pending_exception) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
}

/* pollStart(fd, onReadable) -> PollHandle */
static napi_value poll_start(napi_env env, napi_callback_info info) {
  static const char *fn = "pollStart";
  GET_ARGS(2);
  int64_t fd;
  napi_valuetype t;
  napi_value obj, name, resource, v;
  uv_loop_t *loop;
  poll_ctx *ctx;
  int rc;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function)
    THROW_TYPE(env, "%s: onReadable must be a function", fn);
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;

  ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) THROW_SYS(env, ENOMEM, "calloc", "pollStart");
  ctx->env = env;
  ctx->st = st;
  ctx->fd = (int)fd;
  if (napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "VXEDGE_POLL", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_object(env, &obj) != napi_ok || napi_create_int32(env, (int32_t)fd, &v) != napi_ok ||
      napi_set_named_property(env, obj, "fd", v) != napi_ok ||
      napi_type_tag_object(env, obj, &POLL_TAG) != napi_ok ||
      napi_async_init(env, resource, name, &ctx->async) != napi_ok) {
    free(ctx);
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &ctx->callback) != napi_ok) {
    napi_async_destroy(env, ctx->async);
    free(ctx);
    return NULL;
  }
  rc = uv_poll_init(loop, &ctx->handle, (int)fd); /* EEXIST if fd is already polled */
  if (rc != 0) {
    napi_delete_reference(env, ctx->callback);
    napi_async_destroy(env, ctx->async);
    free(ctx);
    THROW_SYS(env, -rc, "uv_poll_init", "poll fd %d", (int)fd);
  }
  /* From here on the handle belongs to the loop: failures go through uv_close. */
  __atomic_fetch_add(&polls_allocated, 1, __ATOMIC_RELAXED);
  ctx->next = st->polls;
  st->polls = ctx;
  rc = uv_poll_start(&ctx->handle, UV_READABLE, poll_cb);
  if (rc == 0 && napi_add_async_cleanup_hook(env, poll_env_cleanup, ctx, &ctx->cleanup) != napi_ok)
    rc = UV_ENOMEM;
  if (rc == 0 && napi_wrap(env, obj, ctx, poll_wrapper_finalize, NULL, NULL) != napi_ok)
    rc = UV_ENOMEM;
  if (rc != 0) {
    ctx->wrapper_gone = 1;
    poll_close(ctx);
    THROW_SYS(env, -rc, "uv_poll_start", "poll fd %d", (int)fd);
  }
  return obj;
}

/* pollStop(handle): idempotent; safe from inside the handle's own callback. */
static napi_value poll_stop(napi_env env, napi_callback_info info) {
  static const char *fn = "pollStop";
  GET_ARGS(1);
  napi_valuetype t;
  bool ok = false;
  void *ctx = NULL;

  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, argv[0], &POLL_TAG, &ok) != napi_ok || !ok ||
      napi_unwrap(env, argv[0], &ctx) != napi_ok || ctx == NULL)
    THROW_TYPE(env, "%s: handle must be a PollHandle returned by pollStart", fn);
  poll_close((poll_ctx *)ctx);
  return NULL;
}

/* ---------------------------------------------------------------- notify */

/* unixDgramSend(path, data): send `data` as one datagram to the AF_UNIX SOCK_DGRAM socket
 * at `path` (a leading '@' names the abstract namespace, as in $NOTIFY_SOCKET), from a
 * fresh close-on-exec socket that is closed again. MSG_DONTWAIT: a full receiver queue
 * throws EAGAIN instead of blocking Node's loop. Failures throw (syscall 'socket'/'sendto'). */
static napi_value unix_dgram_send(napi_env env, napi_callback_info info) {
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

/* ------------------------------------------------------------ diagnostics */

/* lastError() -> { errno, code, count } */
static napi_value last_error(napi_env env, napi_callback_info info) {
  static const char *fn = "lastError";
  GET_ARGS(0);
  char code[48] = "", text[96];
  napi_value res, v;

  if (st->last_errno != 0) errno_strings(st->last_errno, code, sizeof code, text, sizeof text);
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  if (napi_create_int32(env, st->last_errno, &v) == napi_ok) napi_set_named_property(env, res, "errno", v);
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, res, "code", v);
  if (napi_create_double(env, st->error_count, &v) == napi_ok) napi_set_named_property(env, res, "count", v);
  return res;
}

/* _pollCounts() -> { open, allocated }: poll handles not yet stopped in this environment,
 * and poll records not yet freed in the process. For the leak test. */
static napi_value poll_counts(napi_env env, napi_callback_info info) {
  static const char *fn = "_pollCounts";
  GET_ARGS(0);
  int open = 0;
  napi_value res, v;
  for (poll_ctx *p = st->polls; p != NULL; p = p->next) open++;
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  if (napi_create_int32(env, open, &v) == napi_ok) napi_set_named_property(env, res, "open", v);
  if (napi_create_int64(env, __atomic_load_n(&polls_allocated, __ATOMIC_RELAXED), &v) == napi_ok)
    napi_set_named_property(env, res, "allocated", v);
  return res;
}

/* ------------------------------------------------------------------- init */

static void state_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  vx_state *st = calloc(1, sizeof *st);
  if (st == NULL || napi_set_instance_data(env, st, state_finalize, NULL) != napi_ok) {
    free(st);
    napi_throw_error(env, "ENOMEM", "vxedge_native: out of memory");
    return NULL;
  }
#define FN(name, cb) {name, NULL, cb, NULL, NULL, NULL, napi_enumerable, st}
  const napi_property_descriptor props[] = {
      FN("tunOpen", tun_open),     FN("udpOpen", udp_open),     FN("close", fd_close),
      FN("devRead", dev_read),     FN("devWrite", dev_write),   FN("udpRecv", udp_recv),
      FN("udpSend", udp_send),     FN("pollStart", poll_start), FN("pollStop", poll_stop),
      FN("lastError", last_error), FN("_pollCounts", poll_counts),
      FN("unixDgramSend", unix_dgram_send),
  };
#undef FN
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  if (vx_offload_register(env, exports, &st->last_errno, &st->error_count) != napi_ok) return NULL;
  return exports;
}
