/*
 * drop-udp-cmsg.c: what the emulated gateway would see under a qemu-user that drops the
 * control messages it does not translate (Debian 12's qemu 7.2 logs UDP_SEGMENT and UDP_GRO
 * as "Unsupported ancillary data: 17/103, 17/104" and happens to pass them on unchanged;
 * nothing promises that of another build). LD_PRELOADed into the emulated Node only
 * (qemu -E LD_PRELOAD=...), it sits where qemu sits, between the addon and the kernel:
 *   VXARM_DROP_CMSG=send  SOL_UDP cmsgs vanish from sendmsg/sendmmsg (UDP_SEGMENT: one
 *                         message of N segments leaves as ONE datagram);
 *   VXARM_DROP_CMSG=recv  every cmsg vanishes from recvmsg/recvmmsg (UDP_GRO's segment size);
 *   anything else: both.
 * The setsockopt calls pass, as they do under qemu. The constructor removes LD_PRELOAD and
 * VXARM_DROP_CMSG from the environment, so the native tools the gateway runs (ip) do not
 * try to preload an ARM library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/udp.h> /* SOL_UDP */
#include <sys/socket.h>

static int drop_send = 1, drop_recv = 1;

__attribute__((constructor)) static void init(void) {
  const char *m = getenv("VXARM_DROP_CMSG");
  if (m != NULL && strcmp(m, "send") == 0) drop_recv = 0;
  if (m != NULL && strcmp(m, "recv") == 0) drop_send = 0;
  unsetenv("LD_PRELOAD");
  unsetenv("VXARM_DROP_CMSG");
}

/* h without its SOL_UDP control messages (ours are only ever SOL_UDP). */
static void strip_udp(struct msghdr *h) {
  struct cmsghdr *cm;
  for (cm = CMSG_FIRSTHDR(h); cm != NULL; cm = CMSG_NXTHDR(h, cm))
    if (cm->cmsg_level == SOL_UDP) {
      h->msg_control = NULL;
      h->msg_controllen = 0;
      return;
    }
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  static ssize_t (*real)(int, const struct msghdr *, int);
  struct msghdr h = *msg;
  if (real == NULL) real = (ssize_t(*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
  if (drop_send) strip_udp(&h);
  return real(fd, &h, flags);
}

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags) {
  static int (*real)(int, struct mmsghdr *, unsigned int, int);
  struct mmsghdr *copy;
  int r;
  if (real == NULL) real = (int (*)(int, struct mmsghdr *, unsigned int, int))dlsym(RTLD_NEXT, "sendmmsg");
  if (!drop_send || n == 0) return real(fd, vec, n, flags);
  copy = malloc(n * sizeof *copy);
  if (copy == NULL) return real(fd, vec, n, flags);
  memcpy(copy, vec, n * sizeof *copy);
  for (unsigned int i = 0; i < n; i++) strip_udp(&copy[i].msg_hdr);
  r = real(fd, copy, n, flags);
  for (int i = 0; i < r; i++) vec[i].msg_len = copy[i].msg_len;
  free(copy);
  return r;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  static ssize_t (*real)(int, struct msghdr *, int);
  ssize_t r;
  if (real == NULL) real = (ssize_t(*)(int, struct msghdr *, int))dlsym(RTLD_NEXT, "recvmsg");
  r = real(fd, msg, flags);
  if (r >= 0 && drop_recv) msg->msg_controllen = 0;
  return r;
}

int recvmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags, struct timespec *timeout) {
  static int (*real)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
  int r;
  if (real == NULL) real = (int (*)(int, struct mmsghdr *, unsigned int, int, struct timespec *))dlsym(RTLD_NEXT, "recvmmsg");
  r = real(fd, vec, n, flags, timeout);
  for (int i = 0; drop_recv && i < r; i++) vec[i].msg_hdr.msg_controllen = 0;
  return r;
}
