/*
 * device.c: the overlay device. tunOpen makes (or attaches to) a TUN or TAP device;
 * devRead and devWrite move a batch of packets between it and one big Buffer addressed by
 * offsets. With offloads (a TUN opened with IFF_VNET_HDR) every packet carries a 10-byte
 * virtio_net_hdr: reads may return TCP super-packets of up to 64 KB, and writes join TCP
 * segments of one flow into super-packets (gro.c).
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <linux/if_tun.h>

#include "gro.h"
#include "napi_util.h"
#include "vx.h"

/* Closes fd and throws the system error of a failed set-up step. */
#define FAIL_STEP(err, syscall, ...)                  \
  do {                                                \
    int step_err_ = (err);                            \
    close(fd);                                        \
    THROW_SYS(env, step_err_, syscall, __VA_ARGS__);  \
  } while (0)

/* tunOpen(name, tap, offloads) -> { fd, name }
 * IFF_NO_PI, non-blocking, close-on-exec. offloads != 0 (TUN only): IFF_VNET_HDR, a 10-byte
 * header (TUNSETVNETHDRSZ) and TUNSETOFFLOAD(offloads); any refusal closes the fd, which
 * removes the device again, and throws naming the step, so the caller can fall back. */
napi_value vx_tun_open(napi_env env, napi_callback_info info) {
  static const char *fn = "tunOpen";
  GET_ARGS(3);
  size_t len;
  bool tap;
  int64_t offloads;
  struct ifreq ifr;
  napi_value res, v;
  int fd, hdrsz = VNET_LEN;

  memset(&ifr, 0, sizeof ifr);
  if (arg_ifname(env, fn, argv[0], ifr.ifr_name, &len) != 0) return NULL;
  ARG_BOOL(1, "tap", &tap);
  ARG_INT(2, "offloads", 0, UINT32_MAX, &offloads);
  if (tap && offloads) THROW_RANGE(env, "%s: offloads need a TUN device, not TAP", fn);
  ifr.ifr_flags = (short)((tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | (offloads ? IFF_VNET_HDR : 0));

  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) THROW_SYS(env, errno, "open", "open /dev/net/tun");
  if (ioctl(fd, TUNSETIFF, &ifr) < 0)
    FAIL_STEP(errno, "ioctl(TUNSETIFF)", "ioctl(TUNSETIFF) %s%s %s", tap ? "tap" : "tun",
              offloads ? " vnet_hdr" : "", len ? ifr.ifr_name : "(kernel-chosen name)");
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  if (offloads) {
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0)
      FAIL_STEP(errno, "ioctl(TUNSETVNETHDRSZ)", "ioctl(TUNSETVNETHDRSZ) %s", ifr.ifr_name);
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0)
      FAIL_STEP(errno, "ioctl(TUNSETOFFLOAD)", "ioctl(TUNSETOFFLOAD 0x%llx) %s", (long long)offloads, ifr.ifr_name);
  }
  if (napi_create_object(env, &res) != napi_ok || napi_create_int32(env, fd, &v) != napi_ok ||
      napi_set_named_property(env, res, "fd", v) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_named_property(env, res, "name", v) != napi_ok) {
    close(fd);
    return NULL;
  }
  return res;
}

/* devRead(fd, buf, headroom, room, max, offs, lens, vnet) -> count
 * Reads until EAGAIN, `max`, or less than headroom + room bytes of buf are left. Packet i
 * lands at buf[offs[i]] with `headroom` free bytes in front, lens[i] bytes (-1: it was
 * larger than `room`, truncated: count it as a drop). Packets are packed: the next starts
 * at the following 64-byte boundary. vnet (or null): each packet's virtio_net_hdr lands at
 * vnet[10*i] (a device opened with offloads; room should then be 65535). The kernel
 * truncates a packet larger than the buffer silently, so one spare byte past `room` tells
 * a truncated one. An error other than EAGAIN ends the batch and is counted in lastError();
 * only a bad fd (EBADF, or EBADFD once the device is deleted) with nothing read throws. */
napi_value vx_dev_read(napi_env env, napi_callback_info info) {
  static const char *fn = "devRead";
  GET_ARGS(8);
  int64_t fd, headroom, room, max, n = 0;
  uint8_t *buf, *vnet, spare;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens, nvnet, lim, pos = 0;

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
  if (buflen > INT32_MAX) THROW_RANGE(env, "%s: buf is larger than 2 GB", fn);

  while (n < max) {
    size_t start = pos + (size_t)headroom;
    struct iovec iov[3];
    int k = 0;
    size_t hdr = vnet != NULL ? VNET_LEN : 0;
    ssize_t r;
    if (start + (size_t)room > buflen) break;
    if (vnet != NULL) {
      iov[k].iov_base = vnet + n * VNET_LEN;
      iov[k++].iov_len = VNET_LEN;
    }
    iov[k].iov_base = buf + start;
    iov[k++].iov_len = (size_t)room;
    iov[k].iov_base = &spare;
    iov[k++].iov_len = 1;
    r = readv((int)fd, iov, k);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (n == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "read", "read fd %d", (int)fd);
      note_error(st, errno);
      break;
    }
    offs[n] = (int32_t)start;
    if ((size_t)r < hdr || (size_t)r > hdr + (size_t)room) {
      lens[n++] = -1;
      continue; /* nothing usable landed: the space is reused */
    }
    lens[n++] = (int32_t)((size_t)r - hdr);
    pos = (start + ((size_t)r - hdr) + 63) & ~(size_t)63;
  }
  return int_result(env, n);
}

/* devWrite(fd, buf, offs, lens, n, vnet) -> packets accepted
 * Writes packets buf[offs[i] .. +lens[i]) for i < n. vnet false: one write() each; a packet
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

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_TYPED(2, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(3, "lens", napi_int32_array, &lens, &nlens);
  ARG_BOOL(5, "vnet", &vnet);
  lim = noffs < nlens ? noffs : nlens;
  if (vnet && lim > OF_PKTS) lim = OF_PKTS;
  ARG_INT(4, "n", 0, (int64_t)lim, &n);
  if (check_packets(env, fn, buflen, offs, lens, n) != 0) return NULL;
  if (vnet) {
    int64_t r = gro_write(env, st, (int)fd, buf, buflen, offs, lens, n);
    return r < 0 ? NULL : int_result(env, r);
  }

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
