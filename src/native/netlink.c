/*
 * netlink.c: the kernel's notices of link, address and route changes (rtnetlink's
 * multicast groups), so that the running gateway looks at its device, its routes and its
 * underlay NIC as soon as someone sets the device down, deletes a peer route, or the NIC
 * loses its carrier or address, not at the next 30 s check refresh. Only what JavaScript
 * cannot do: Node has no netlink socket. Reading them is not privileged.
 *
 * netlinkRead does not hand the messages to JavaScript: it says which kinds of change
 * concern the two interfaces it is given (a bit mask), and JavaScript then reads the state
 * the usual way (`ip -j`). A box's other interfaces (a Wi-Fi NIC scanning, a container's
 * veths) send their own notices, and those wake nothing.
 */
#define _GNU_SOURCE /* struct mmsghdr in vx.h: before any system header */
#include <errno.h>
#include <stdbool.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/neighbour.h> /* struct ndmsg, NUD_PERMANENT */
#include <linux/rtnetlink.h>

#include "napi_util.h"
#include "vx.h"

/* What netlinkRead reports (src/native/index.ts NETLINK_*). */
enum { NL_LINK = 1, NL_ADDRESS = 2, NL_ROUTE_GONE = 4, NL_LOST = 8, NL_NEIGH_GONE = 16, NL_DEFAULT_ROUTE = 32 };

/* Notices arrive in bursts (a device set down, a networkd reconfigure deleting a table's
 * worth of routes); the buffer holds one burst's worth so that only a storm overflows it,
 * and an overflow is reported as NL_LOST, never as silence. */
#define NL_RCVBUF (256 * 1024)
/* Receives per call: the poll is level-triggered, so a storm is read across wake-ups
 * instead of holding the loop. */
#define NL_MAX_RECVS 64

/* netlinkOpen([neighbours]) -> fd: a non-blocking NETLINK_ROUTE socket in the link, IPv4
 * address and IPv4 route groups, and with `neighbours` the neighbour group (TAP mode, whose
 * peers are permanent neighbours; elsewhere the LAN's ARP traffic would wake us for nothing). */
napi_value vx_netlink_open(napi_env env, napi_callback_info info) {
  static const char fn[] = "netlinkOpen";
  GET_ARGS_UPTO(0, 1, vx_state);
  bool neighbours = false;
  if (argc > 0) ARG_BOOL(0, "neighbours", &neighbours);
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) THROW_SYS(env, errno, "socket", "%s: netlink socket", fn);
  int bytes = NL_RCVBUF;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | (neighbours ? RTMGRP_NEIGH : 0);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = errno;
    close(fd);
    THROW_SYS(env, err, "bind", "%s: rtnetlink groups", fn);
  }
  return int_result(env, fd);
}

/* The interface name of a link message, or NULL; *wireless is set for a Wi-Fi driver's
 * event (a scan's results, an association's details), which comes as a link message too but
 * changes nothing the checks read, and may come several times a second. */
static const char *link_name(struct nlmsghdr *h, int *wireless) {
  struct ifinfomsg *ifi = NLMSG_DATA(h);
  int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *ifi);
  const char *name = NULL;
  *wireless = 0;
  for (struct rtattr *a = IFLA_RTA(ifi); len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == IFLA_WIRELESS) *wireless = 1;
    if (a->rta_type != IFLA_IFNAME) continue;
    const char *s = RTA_DATA(a);
    size_t n = RTA_PAYLOAD(a);
    if (n > 0 && memchr(s, '\0', n) != NULL) name = s;
  }
  return name;
}

/* The output interface of a route message, or 0. */
static int route_oif(struct nlmsghdr *h) {
  struct rtmsg *rt = NLMSG_DATA(h);
  int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *rt);
  for (struct rtattr *a = RTM_RTA(rt); len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len))
    if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= sizeof(int)) return *(int *)RTA_DATA(a);
  return 0;
}

/* What one message says about the two interfaces (their names and, when they exist, indexes). */
static int classify(struct nlmsghdr *h, const char *const names[2], const int idx[2]) {
  switch (h->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK: {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg))) return 0;
      struct ifinfomsg *ifi = NLMSG_DATA(h);
      int wireless;
      /* By name too: a NIC unplugged has no index left to compare with. */
      const char *name = link_name(h, &wireless);
      if (wireless) return 0;
      for (int i = 0; i < 2; i++)
        if ((idx[i] > 0 && ifi->ifi_index == idx[i]) || (name != NULL && strcmp(name, names[i]) == 0)) return NL_LINK;
      return 0;
    }
    case RTM_NEWADDR:
    case RTM_DELADDR: {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifaddrmsg))) return 0;
      struct ifaddrmsg *ifa = NLMSG_DATA(h);
      for (int i = 0; i < 2; i++)
        if (idx[i] > 0 && (int)ifa->ifa_index == idx[i]) return NL_ADDRESS;
      return 0;
    }
    case RTM_NEWROUTE:
    case RTM_DELROUTE: {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg))) return 0;
      struct rtmsg *rt = NLMSG_DATA(h);
      /* A default route of the main table added or deleted, whatever its interface (a
       * multipath one names none): the site's router may have changed (a DHCP lease naming
       * another, the router was replaced), and the port mapping must ask the new one. Rare by
       * nature. */
      if (rt->rtm_family == AF_INET && rt->rtm_dst_len == 0 && rt->rtm_table == RT_TABLE_MAIN) return NL_DEFAULT_ROUTE;
      if (h->nlmsg_type != RTM_DELROUTE) return 0; /* our own peer routes going in wake nothing */
      /* Only routes through the device, the peers': the underlay's own routes go with its
       * address or link, whose notices come anyway. */
      return idx[0] > 0 && route_oif(h) == idx[0] ? NL_ROUTE_GONE : 0;
    }
    case RTM_DELNEIGH:
    case RTM_NEWNEIGH: {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ndmsg))) return 0;
      struct ndmsg *nd = NLMSG_DATA(h);
      /* A neighbour of the device deleted, or made something else than permanent: our own
       * (permanent) entries going in wake nothing. */
      if (idx[0] <= 0 || nd->ndm_ifindex != idx[0]) return 0;
      return h->nlmsg_type == RTM_DELNEIGH || !(nd->ndm_state & NUD_PERMANENT) ? NL_NEIGH_GONE : 0;
    }
    default:
      return 0;
  }
}

/* netlinkRead(fd, device, underlay) -> mask of NL_* for what changed on the tunnel device
 * (link, address, a route through it deleted, a neighbour of it deleted or no longer
 * permanent) and the underlay NIC (link, address), and a default route added or deleted;
 * 0 when nothing concerns them. Drains what is queued, up to NL_MAX_RECVS receives. */
napi_value vx_netlink_read(napi_env env, napi_callback_info info) {
  static const char fn[] = "netlinkRead";
  GET_ARGS_OF(3, vx_state);
  int64_t fd;
  char names[2][IFNAMSIZ];
  size_t len;
  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  if (arg_ifname(env, fn, argv[1], names[0], &len) != 0) return NULL;
  if (arg_ifname(env, fn, argv[2], names[1], &len) != 0) return NULL;
  const char *const name_of[2] = {names[0], names[1]};
  const int idx[2] = {(int)if_nametoindex(names[0]), (int)if_nametoindex(names[1])};
  /* Aligned for nlmsghdr; static: one JS thread, and 16 KiB is too much for its stack. */
  static char buf[16384] __attribute__((aligned(NLMSG_ALIGNTO * 4)));
  int mask = 0;
  for (int r = 0; r < NL_MAX_RECVS; r++) {
    struct sockaddr_nl from;
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom((int)fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) { /* the kernel dropped notices: whatever they said, look */
        mask |= NL_LOST;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      THROW_SYS(env, errno, "recvfrom", "%s: fd %d", fn, (int)fd);
    }
    /* Only the kernel sends to rtnetlink's groups, but a root process may send to us. */
    if (from.nl_pid != 0) continue;
    int left = (int)n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left))
      mask |= classify(h, name_of, idx);
  }
  return int_result(env, mask);
}
