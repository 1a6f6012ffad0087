/*
 * offload.c: the offload half of vxedge's native addon: the per-byte work of the
 * data plane, which JS cannot do fast enough (measured: README "Offloads").
 *
 * A TUN device opened with IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)
 * hands us, behind a 10-byte virtio_net_hdr, TCP "super-packets" of up to 64 KB (the
 * site's TSO/GRO output, left unsegmented) and packets whose L4 checksum is still
 * partial. It takes, the same way, super-packets we assemble. This file
 *
 *   inside (device -> underlay)
 *     devReadVnet   reads packets with their virtio_net_hdr, packed into one Buffer;
 *     udpSendVnet   after TypeScript has routed each packet and written its VXLAN +
 *                   inner Ethernet header in front: completes partial checksums, cuts
 *                   each super-packet into MTU-sized TCP segments (headers copied, IP
 *                   length/id/checksum, TCP seq and flags fixed, every TCP checksum
 *                   computed in full: the peer's kernel verifies inner checksums), each
 *                   prefixed with the 22-byte encapsulation, contiguous in a scratch
 *                   buffer, and sends them with sendmmsg, one message per super-packet
 *                   carrying UDP_SEGMENT (the kernel cuts it into datagrams), split only
 *                   where the kernel's limits (64 segments, 65507 bytes) require;
 *   outside (underlay -> device)
 *     udpRecvGro    recvmmsg on a socket with UDP_GRO: a datagram may hold several VXLAN
 *                   frames of gso_size bytes each (TypeScript splits and validates each);
 *     devWriteVnet  writes the validated inner packets, coalescing consecutive TCP
 *                   segments of one flow (checksums verified first: the network is not
 *                   trusted) into one super-packet with a GSO_TCPV4 virtio_net_hdr,
 *                   gathered with writev, without copying the payload.
 *
 * Fallbacks: tunOpenVnet throws when the kernel refuses a step (the caller opens the
 * plain device instead); udpSetGro throws when UDP_GRO is unknown (the caller keeps
 * plain receives); a UDP_SEGMENT send refused with EIO/EINVAL (an egress device without
 * checksum offload on kernels before 6.11, an MTU smaller than the segments) is sent
 * again one datagram per segment, and segmentation stays per datagram from then on.
 *
 * Same rules as vxedge_native.c: no threads, no allocation per packet (one scratch
 * area per environment), every offset and length from JS checked before use, per-packet
 * errors counted for lastError() rather than thrown.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

#include <uv.h>

#include "napi_util.h"
#include "offload.h"

#define VNET_LEN 10                /* sizeof(struct virtio_net_hdr), no num_buffers */
#define MAX_IP 65535               /* largest IPv4 packet, hence largest TSO super-packet */
#define OF_MSGS 256                /* messages per sendmmsg/recvmmsg call */
#define OF_PKTS 4096               /* packets per devWriteVnet/udpSendVnet call */
#define OF_SCRATCH (512 * 1024)    /* segmented output waiting for one sendmmsg */
#define UDP_GSO_MAX_SEGS 64        /* UDP_MAX_SEGMENTS before Linux 6.9 (128 since) */
#define UDP_GSO_MAX_BYTES 65507    /* 65535 - IPv4 header - UDP header */
#define GRO_ITEMS 64               /* open coalescing flows per write batch */
#define GRO_MAX_SEGS 64            /* segments per coalesced super-packet */

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

typedef union {
  char buf[CMSG_SPACE(sizeof(int))];
  struct cmsghdr align;
} ctl_buf;

/* One open coalescing flow of a devWriteVnet batch: its head packet and what follows. */
typedef struct {
  int32_t head, tail;
  uint32_t seq_next;       /* sequence number the next segment must carry */
  uint32_t total;          /* IP length of the coalesced packet */
  uint16_t gso;            /* payload of every segment but the last */
  uint16_t segs;
  uint8_t ihl, thl;
  uint8_t closed;          /* a short or PSH segment ended it */
  uint8_t checked;         /* the head's checksums were verified */
  uint8_t psh;
  uint8_t vnet[VNET_LEN];
} gro_item;

typedef struct {
  int *last_errno;
  double *error_count;
  int gso_off;             /* UDP_SEGMENT was refused: one datagram per segment from now on */
  /* counters for offloadStats() */
  double tso_packets, tso_segments, gso_messages, gso_refused, csum_completed;
  double gro_datagrams, coalesced_writes, coalesced_segments, csum_rejects;
  /* sendmmsg/recvmmsg */
  int nmsgs;
  struct mmsghdr msgs[OF_MSGS];
  struct iovec iovs[OF_MSGS];
  struct sockaddr_in names[OF_MSGS];
  ctl_buf ctls[OF_MSGS];
  int32_t msg_pkt[OF_MSGS];
  uint16_t msg_seg[OF_MSGS];
  struct mmsghdr split_msgs[UDP_GSO_MAX_SEGS * 2];
  struct iovec split_iovs[UDP_GSO_MAX_SEGS * 2];
  uint8_t *scratch;
  size_t used;
  uint8_t failed[OF_PKTS];
  /* coalescing */
  int nitems;
  gro_item items[GRO_ITEMS];
  int32_t link[OF_PKTS];
  int16_t item_of[OF_PKTS];
  uint8_t role[OF_PKTS];
  struct iovec wiov[GRO_MAX_SEGS + 2];
  int32_t po[OF_PKTS], pl[OF_PKTS]; /* private copy of a write batch's packet list */
} of_state;

enum { ROLE_SINGLE = 0, ROLE_HEAD = 1, ROLE_MERGED = 2 };

static const uint8_t zero_vnet[VNET_LEN];

/* ------------------------------------------------------------------ errors */

static void note_error(of_state *s, int err) {
  *s->last_errno = err;
  *s->error_count += 1;
}

#define GET_ARGS(n) GET_ARGS_OF(n, of_state)

/* --------------------------------------------------------------- checksums */

/*
 * RFC 1071 sums in host byte order: adding native 16-bit words and folding gives the
 * byte-swapped big-endian sum on a little-endian host, so a folded sum stored back with
 * memcpy lands as the right bytes on either kind of host (RFC 1071 §2 (B)). `p` must
 * start at an even offset of the checksummed range; only the last chunk may be odd.
 */
static uint64_t csum_add(const uint8_t *p, size_t len, uint64_t acc) {
  while (len >= 32) {
    uint64_t a, b, c, d;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    memcpy(&c, p + 16, 8);
    memcpy(&d, p + 24, 8);
    acc += (a & 0xffffffffu) + (a >> 32) + (b & 0xffffffffu) + (b >> 32) + (c & 0xffffffffu) +
           (c >> 32) + (d & 0xffffffffu) + (d >> 32);
    p += 32;
    len -= 32;
  }
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    acc += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    acc += w;
    p += 2;
    len -= 2;
  }
  if (len) {
    uint8_t t[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, t, 2);
    acc += w;
  }
  return acc;
}

static uint16_t csum_fold(uint64_t acc) {
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  return (uint16_t)acc;
}

/* The IPv4 pseudo header of an L4 segment of `l4len` bytes, summed. */
static uint64_t pseudo_sum(const uint8_t *ip, uint8_t proto, uint32_t l4len) {
  uint8_t ph[12];
  memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = proto;
  ph[10] = (uint8_t)(l4len >> 8);
  ph[11] = (uint8_t)l4len;
  return csum_add(ph, sizeof ph, 0);
}

static void put_csum(uint8_t *at, uint16_t native) {
  memcpy(at, &native, 2);
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static void ip_fix_csum(uint8_t *ip, size_t ihl) {
  ip[10] = ip[11] = 0;
  put_csum(ip + 10, (uint16_t)~csum_fold(csum_add(ip, ihl, 0)));
}

static bool ip_csum_ok(const uint8_t *ip, size_t ihl) {
  return csum_fold(csum_add(ip, ihl, 0)) == 0xffff;
}

static bool tcp_csum_ok(const uint8_t *ip, size_t ihl, size_t len) {
  uint64_t acc = pseudo_sum(ip, IPPROTO_TCP, (uint32_t)(len - ihl));
  return csum_fold(csum_add(ip + ihl, len - ihl, acc)) == 0xffff;
}

/* ------------------------------------------------------ virtio_net_hdr */

/* The header as the TUN driver writes it: host byte order (we never set TUNSETVNETLE/BE). */
typedef struct {
  uint8_t flags, gso_type;
  uint16_t hdr_len, gso_size, csum_start, csum_offset;
} vnet_hdr;

static void vnet_decode(const uint8_t *b, vnet_hdr *h) {
  h->flags = b[0];
  h->gso_type = b[1];
  memcpy(&h->hdr_len, b + 2, 2);
  memcpy(&h->gso_size, b + 4, 2);
  memcpy(&h->csum_start, b + 6, 2);
  memcpy(&h->csum_offset, b + 8, 2);
}

static void vnet_encode(uint8_t *b, const vnet_hdr *h) {
  b[0] = h->flags;
  b[1] = h->gso_type;
  memcpy(b + 2, &h->hdr_len, 2);
  memcpy(b + 4, &h->gso_size, 2);
  memcpy(b + 6, &h->csum_start, 2);
  memcpy(b + 8, &h->csum_offset, 2);
}

/* Completes the partial checksum of a NEEDS_CSUM packet in place: the field holds the
 * pseudo-header sum, to be summed with everything from csum_start. 0 or -1 (bad offsets). */
static int complete_csum(uint8_t *pkt, size_t len, const vnet_hdr *h) {
  size_t cs = h->csum_start, at = (size_t)h->csum_start + h->csum_offset;
  uint16_t c;
  if (cs >= len || at + 2 > len) return -1;
  c = (uint16_t)~csum_fold(csum_add(pkt + cs, len - cs, 0));
  if (c == 0 && h->csum_offset == 6) c = 0xffff; /* UDP: 0 means "no checksum" */
  put_csum(pkt + at, c);
  return 0;
}

/* ------------------------------------------------------------ segmentation */

/* A TCP/IPv4 super-packet to cut into segments. The header length is taken from the
 * packet itself, not from hdr_len: on the forwarding path the kernel may report the whole
 * linear part there (wireguard-go does the same). */
typedef struct {
  const uint8_t *ip;
  size_t iplen, ihl, thl, hdrlen, payload;
  uint32_t gso, nsegs, seq0;
  uint16_t id0;
} tso_job;

static int tso_prepare(tso_job *j, const uint8_t *ip, size_t iplen, uint32_t gso) {
  if (iplen < 40 || (ip[0] >> 4) != 4 || ip[9] != IPPROTO_TCP || be16(ip + 2) != iplen) return -1;
  if (be16(ip + 6) & 0x3fff) return -1; /* a fragment is no super-packet */
  j->ihl = (size_t)(ip[0] & 0x0f) * 4;
  if (j->ihl < 20 || j->ihl + 20 > iplen) return -1;
  j->thl = (size_t)(ip[j->ihl + 12] >> 4) * 4;
  if (j->thl < 20 || j->ihl + j->thl > iplen || gso == 0) return -1;
  j->ip = ip;
  j->iplen = iplen;
  j->hdrlen = j->ihl + j->thl;
  j->payload = iplen - j->hdrlen;
  j->gso = gso;
  j->nsegs = j->payload == 0 ? 1 : (uint32_t)((j->payload + gso - 1) / gso);
  j->seq0 = be32(ip + j->ihl + 4);
  j->id0 = be16(ip + 4);
  return 0;
}

/* Writes segment k: `encap` bytes copied from in front of the super-packet, then a complete
 * IPv4/TCP packet. Returns its length. */
static size_t tso_write(const tso_job *j, size_t encap, uint32_t k, uint8_t *out) {
  size_t start = j->hdrlen + (size_t)k * j->gso;
  size_t chunk = j->payload == 0 ? 0 : (j->iplen - start < j->gso ? j->iplen - start : j->gso);
  uint8_t *ip = out + encap, *th = ip + j->ihl;
  memcpy(out, j->ip - encap, encap);
  memcpy(ip, j->ip, j->hdrlen);
  memcpy(ip + j->hdrlen, j->ip + start, chunk);
  put16(ip + 2, (uint32_t)(j->hdrlen + chunk));
  put16(ip + 4, (uint16_t)(j->id0 + k)); /* as the kernel's TSO: one id per segment */
  ip_fix_csum(ip, j->ihl);
  put32(th + 4, j->seq0 + k * j->gso);
  if (k + 1 != j->nsegs) th[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
  if (k != 0) th[13] &= (uint8_t)~TCP_CWR;
  th[16] = th[17] = 0;
  {
    uint64_t acc = pseudo_sum(ip, IPPROTO_TCP, (uint32_t)(j->thl + chunk));
    put_csum(th + 16, (uint16_t)~csum_fold(csum_add(th, j->thl + chunk, acc)));
  }
  return encap + j->hdrlen + chunk;
}

/* ------------------------------------------------------------------- send */

static void msg_add(of_state *s, uint8_t *p, size_t len, uint32_t addr, uint16_t port, uint16_t seg,
                    int32_t pkt) {
  int m = s->nmsgs++;
  struct msghdr *h = &s->msgs[m].msg_hdr;
  struct sockaddr_in *sin = &s->names[m];
  memset(h, 0, sizeof *h);
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(addr);
  sin->sin_port = htons(port);
  s->iovs[m].iov_base = p;
  s->iovs[m].iov_len = len;
  h->msg_name = sin;
  h->msg_namelen = sizeof *sin;
  h->msg_iov = &s->iovs[m];
  h->msg_iovlen = 1;
  if (seg) {
    struct cmsghdr *cm;
    memset(&s->ctls[m], 0, sizeof s->ctls[m]);
    h->msg_control = s->ctls[m].buf;
    h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    cm = CMSG_FIRSTHDR(h);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  s->msg_seg[m] = seg;
  s->msg_pkt[m] = pkt;
}

/* Sends message m's segments as separate datagrams (UDP_SEGMENT refused). 0 or an errno. */
static int send_split(of_state *s, int fd, int m) {
  uint8_t *base = s->iovs[m].iov_base;
  size_t total = s->iovs[m].iov_len, seg = s->msg_seg[m], off;
  int cnt = 0, k = 0, err = 0;
  for (off = 0; off < total && cnt < UDP_GSO_MAX_SEGS * 2; off += seg, cnt++) {
    struct msghdr *h = &s->split_msgs[cnt].msg_hdr;
    memset(h, 0, sizeof *h);
    s->split_iovs[cnt].iov_base = base + off;
    s->split_iovs[cnt].iov_len = total - off < seg ? total - off : seg;
    h->msg_name = &s->names[m];
    h->msg_namelen = sizeof s->names[m];
    h->msg_iov = &s->split_iovs[cnt];
    h->msg_iovlen = 1;
  }
  while (k < cnt) {
    int r = sendmmsg(fd, s->split_msgs + k, (unsigned)(cnt - k), MSG_DONTWAIT);
    if (r > 0) {
      k += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    err = r == 0 ? EAGAIN : errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || fd_fatal(err)) return err;
    note_error(s, err);
    k++;
  }
  return err;
}

/* Sends every queued message. Returns 0, or the errno that stopped it early (EAGAIN,
 * ENOBUFS: socket full; EBADF...: fatal); unsent messages mark their packets failed. */
static int flush(of_state *s, int fd) {
  int k = 0, stop = 0;
  while (k < s->nmsgs) {
    int r = sendmmsg(fd, s->msgs + k, (unsigned)(s->nmsgs - k), MSG_DONTWAIT);
    int err;
    if (r > 0) {
      for (int q = 0; q < r; q++) s->gso_messages += s->msg_seg[k + q] ? 1 : 0;
      k += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    err = r == 0 ? EAGAIN : errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || fd_fatal(err)) {
      stop = err;
      break;
    }
    if (s->msg_seg[k] && (err == EIO || err == EINVAL || err == EMSGSIZE || err == ENOPROTOOPT)) {
      /* The kernel will not segment for us here: from now on neither do we ask it to. */
      int e2;
      if (!s->gso_off) s->gso_refused += 1;
      s->gso_off = 1;
      e2 = send_split(s, fd, k);
      if (e2 == EAGAIN || e2 == EWOULDBLOCK || e2 == ENOBUFS || fd_fatal(e2)) {
        stop = e2;
        break;
      }
      k++;
      continue;
    }
    note_error(s, err);
    s->failed[s->msg_pkt[k]] = 1;
    k++;
  }
  for (; k < s->nmsgs; k++) s->failed[s->msg_pkt[k]] = 1;
  s->nmsgs = 0;
  s->used = 0;
  return stop;
}

/*
 * Queues datagram i (buf[off, off+len): encap bytes, then the inner IPv4 packet described
 * by vnet header `h`): a plain packet as it is (checksum completed), a super-packet as
 * segments in the scratch area. `out` non-NULL: copy the wire datagrams there instead
 * (test entry point), returning their count through *nout. Returns 0 or -1 (bad packet).
 */
typedef struct {
  uint8_t *buf;       /* copy target of _tsoSegment, NULL when sending */
  size_t cap, used;
  int32_t *offs, *lens;
  size_t nmax, n;
} copy_sink;

static int sink_put(copy_sink *c, const uint8_t *p, size_t len) {
  if (c->n >= c->nmax || c->used + len > c->cap) return -1;
  memcpy(c->buf + c->used, p, len);
  c->offs[c->n] = (int32_t)c->used;
  c->lens[c->n] = (int32_t)len;
  c->used += len;
  c->n++;
  return 0;
}

static int queue_datagram(of_state *s, int fd, uint8_t *d, size_t len, size_t encap, const vnet_hdr *h,
                          uint32_t addr, uint16_t port, int32_t pkt, copy_sink *sink, int *stop) {
  uint8_t *ip = d + encap;
  size_t iplen = len - encap;
  uint8_t type = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
  tso_job j;
  size_t stride;
  uint32_t per_msg, k;

  if (type == VIRTIO_NET_HDR_GSO_NONE) {
    if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      if (complete_csum(ip, iplen, h) != 0) return -1;
      s->csum_completed += 1;
    }
    if (sink) return sink_put(sink, d, len);
    if (s->nmsgs >= OF_MSGS && (*stop = flush(s, fd)) != 0) return 0;
    msg_add(s, d, len, addr, port, 0, pkt);
    return 0;
  }
  if (type != VIRTIO_NET_HDR_GSO_TCPV4 || tso_prepare(&j, ip, iplen, h->gso_size) != 0) return -1;
  s->tso_packets += 1;
  s->tso_segments += j.nsegs;
  stride = encap + j.hdrlen + j.gso;
  per_msg = s->gso_off || sink ? 1 : (uint32_t)(UDP_GSO_MAX_BYTES / stride);
  if (per_msg > UDP_GSO_MAX_SEGS) per_msg = UDP_GSO_MAX_SEGS;
  if (per_msg < 1) per_msg = 1;
  for (k = 0; k < j.nsegs;) {
    uint32_t m = j.nsegs - k < per_msg ? j.nsegs - k : per_msg, q;
    size_t total = 0;
    uint8_t *base;
    if (sink) {
      if (sink->n >= sink->nmax || sink->used + stride > sink->cap) return -1;
      sink->offs[sink->n] = (int32_t)sink->used;
      sink->lens[sink->n] = (int32_t)tso_write(&j, encap, k, sink->buf + sink->used);
      sink->used += (size_t)sink->lens[sink->n++];
      k++;
      continue;
    }
    if (s->nmsgs >= OF_MSGS || s->used + (size_t)m * stride > OF_SCRATCH) {
      if ((*stop = flush(s, fd)) != 0) return 0;
    }
    base = s->scratch + s->used;
    for (q = 0; q < m; q++) total += tso_write(&j, encap, k + q, base + total);
    s->used += (total + 63) & ~(size_t)63;
    msg_add(s, base, total, addr, port, m > 1 ? (uint16_t)stride : 0, pkt);
    k += m;
  }
  return 0;
}

/* udpSendVnet(fd, buf, offs, lens, addrs, ports, vnet, vnetIdx, encap, n) -> packets sent */
static napi_value udp_send_vnet(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSendVnet";
  GET_ARGS(10);
  int64_t fd, n, encap, i, sent = 0;
  uint8_t *buf, *vnet;
  int32_t *offs, *lens, *vidx;
  uint32_t *addrs;
  uint16_t *ports;
  size_t buflen, noffs, nlens, naddrs, nports, nvnet, nvidx, lim;
  int stop = 0;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_TYPED(2, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(3, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(4, "addrs", napi_uint32_array, &addrs, &naddrs);
  ARG_TYPED(5, "ports", napi_uint16_array, &ports, &nports);
  ARG_TYPED(6, "vnet", napi_uint8_array, &vnet, &nvnet);
  ARG_TYPED(7, "vnetIdx", napi_int32_array, &vidx, &nvidx);
  ARG_INT(8, "encap", 0, 64, &encap);
  lim = noffs < nlens ? noffs : nlens;
  lim = lim < naddrs ? lim : naddrs;
  lim = lim < nports ? lim : nports;
  lim = lim < nvidx ? lim : nvidx;
  lim = lim < OF_PKTS ? lim : OF_PKTS;
  ARG_INT(9, "n", 0, (int64_t)lim, &n);
  if (check_packets(env, fn, buflen, offs, lens, n) != 0) return NULL;
  for (i = 0; i < n; i++) {
    if (vidx[i] < 0 || (int64_t)vidx[i] * VNET_LEN + VNET_LEN > (int64_t)nvnet)
      THROW_RANGE(env, "%s: vnetIdx[%lld] = %d is outside vnet (%zu bytes)", fn, (long long)i, vidx[i], nvnet);
    if (lens[i] < encap) THROW_RANGE(env, "%s: packet %lld is shorter than encap", fn, (long long)i);
  }

  st->nmsgs = 0;
  st->used = 0;
  memset(st->failed, 0, sizeof st->failed);
  for (i = 0; i < n && !stop; i++) {
    int32_t off = offs[i], len = lens[i], vi = vidx[i];
    vnet_hdr h;
    if (off < 0 || len < encap || (int64_t)off + len > (int64_t)buflen || vi < 0 ||
        (int64_t)vi * VNET_LEN + VNET_LEN > (int64_t)nvnet)
      THROW_RANGE(env, "%s: packet %lld changed while being sent", fn, (long long)i);
    vnet_decode(vnet + (size_t)vi * VNET_LEN, &h);
    if (queue_datagram(st, (int)fd, buf + off, (size_t)len, (size_t)encap, &h, addrs[i], ports[i], (int32_t)i,
                       NULL, &stop) != 0) {
      note_error(st, EPROTO);
      st->failed[i] = 1;
    }
    if (stop) st->failed[i] = 1; /* the socket filled up before all of it was queued */
  }
  if (!stop) stop = flush(st, (int)fd);
  for (; i < n; i++) st->failed[i] = 1; /* never queued: the socket was full */
  if (fd_fatal(stop)) {
    int any = 0;
    for (i = 0; i < n; i++) any |= !st->failed[i];
    if (!any) THROW_SYS(env, stop, "sendmmsg", "sendmmsg fd %d", (int)fd);
    note_error(st, stop);
  }
  for (i = 0; i < n; i++) sent += !st->failed[i];
  return int_result(env, sent);
}

/* _tsoSegment(buf, off, len, vnet, vnetOff, encap, out, outOffs, outLens) -> datagrams
 * The datagrams udpSendVnet would send for one packet, copied into `out` (for tests);
 * -1 when the packet would be dropped. Completes a partial checksum in buf in place. */
static napi_value tso_segment(napi_env env, napi_callback_info info) {
  static const char *fn = "_tsoSegment";
  GET_ARGS(9);
  int64_t off, len, voff, encap;
  uint8_t *buf, *vnet, *out;
  int32_t *ooffs, *olens;
  size_t buflen, nvnet, nout, nooffs, nolens;
  vnet_hdr h;
  copy_sink sink;
  int stop = 0;

  ARG_TYPED(0, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(1, "off", 0, (int64_t)buflen, &off);
  ARG_INT(2, "len", 0, (int64_t)buflen - off, &len);
  ARG_TYPED(3, "vnet", napi_uint8_array, &vnet, &nvnet);
  ARG_INT(4, "vnetOff", 0, (int64_t)nvnet - VNET_LEN, &voff);
  ARG_INT(5, "encap", 0, len < 64 ? len : 64, &encap);
  ARG_TYPED(6, "out", napi_uint8_array, &out, &nout);
  ARG_TYPED(7, "outOffs", napi_int32_array, &ooffs, &nooffs);
  ARG_TYPED(8, "outLens", napi_int32_array, &olens, &nolens);
  vnet_decode(vnet + voff, &h);
  sink.buf = out;
  sink.cap = nout;
  sink.used = 0;
  sink.offs = ooffs;
  sink.lens = olens;
  sink.nmax = nooffs < nolens ? nooffs : nolens;
  sink.n = 0;
  if (queue_datagram(st, -1, buf + off, (size_t)len, (size_t)encap, &h, 0, 0, 0, &sink, &stop) != 0)
    return int_result(env, -1);
  return int_result(env, (int64_t)sink.n);
}

/* ---------------------------------------------------------------- coalescing */

/* Can packet `p` (len bytes, already known to be an IPv4/TCP candidate) follow item `it`? */
static bool gro_fits(const gro_item *it, const uint8_t *h, const uint8_t *p, size_t thl, uint32_t seq,
                     size_t payload) {
  const uint8_t *hth = h + it->ihl, *th = p + 20;
  if (it->closed || it->thl != thl || seq != it->seq_next || payload > it->gso) return false;
  if (it->segs >= GRO_MAX_SEGS || it->total + payload > MAX_IP) return false;
  if (memcmp(h + 12, p + 12, 8) != 0 || memcmp(hth, th, 4) != 0) return false; /* addresses, ports */
  if (memcmp(hth + 8, th + 8, 4) != 0 || memcmp(hth + 14, th + 14, 2) != 0) return false; /* ack, window */
  if (h[1] != p[1] || (h[6] >> 5) != (p[6] >> 5) || h[8] != p[8]) return false; /* TOS, DF, TTL */
  return thl == 20 || memcmp(hth + 20, th + 20, thl - 20) == 0; /* options, timestamps included */
}

/* Same flow as item head `h`: addresses and ports (both are IPv4 with a 20-byte header). */
static bool gro_same_flow(const uint8_t *h, const uint8_t *p) {
  return memcmp(h + 12, p + 12, 8) == 0 && memcmp(h + 20, p + 20, 4) == 0;
}

/*
 * A packet of a flow that is not joined ends that flow's open chain, as it flushes the
 * kernel's GRO: joining a later segment across it would reorder the flow (data written
 * before a pure ACK, FIN or out-of-order segment that came first).
 */
static void gro_close_flow(of_state *s, uint8_t *buf, const int32_t *offs, const uint8_t *p) {
  for (int k = s->nitems - 1; k >= 0; k--) {
    gro_item *it = &s->items[k];
    if (it->head >= 0 && gro_same_flow(buf + offs[it->head], p)) {
      it->closed = 1;
      return;
    }
  }
}

/*
 * Plans the writes of one batch: packets that can be coalesced become ROLE_MERGED links
 * of an item's chain; each head gets its virtio_net_hdr. Like the kernel's GRO, only
 * in-order ACK or ACK|PSH segments with data of one flow (same addresses, ports, ack,
 * window, TOS, DF, TTL and TCP options) are joined, each no longer than the first, and a
 * short or PSH segment ends the chain. Both checksums of every joined packet are verified
 * first: the kernel trusts a NEEDS_CSUM packet, and these come from the network.
 */
static void gro_plan(of_state *s, uint8_t *buf, const int32_t *offs, const int32_t *lens, int64_t n) {
  int64_t i;
  s->nitems = 0;
  for (i = 0; i < n; i++) {
    uint8_t *p = buf + offs[i];
    size_t len = (size_t)lens[i], thl, payload;
    uint8_t flags;
    uint32_t seq;
    int k, joined = 0;

    s->role[i] = ROLE_SINGLE;
    s->link[i] = -1;
    if (len < 40 || p[0] != 0x45 || p[9] != IPPROTO_TCP || be16(p + 2) != len || (be16(p + 6) & 0x3fff))
      continue;
    thl = (size_t)(p[32] >> 4) * 4;
    flags = p[33];
    if (thl < 20 || 20 + thl >= len || (flags != TCP_ACK && flags != (TCP_ACK | TCP_PSH))) {
      /* No data, or SYN/FIN/RST/URG...: never joined, and it ends its flow's chain. */
      gro_close_flow(s, buf, offs, p);
      continue;
    }
    payload = len - 20 - thl;
    seq = be32(p + 24);
    for (k = s->nitems - 1; k >= 0; k--) {
      gro_item *it = &s->items[k];
      uint8_t *h;
      if (it->head < 0) continue;
      h = buf + offs[it->head];
      if (!gro_same_flow(h, p)) continue;
      /* Only the flow's latest chain may take it; if it does not fit, that chain ends here. */
      if (!gro_fits(it, h, p, thl, seq, payload)) {
        it->closed = 1;
        break;
      }
      if (!it->checked) {
        if (!ip_csum_ok(h, 20) || !tcp_csum_ok(h, 20, it->total)) {
          s->csum_rejects += 1;
          s->role[it->head] = ROLE_SINGLE;
          it->head = -1; /* written as it came; the kernel will drop it */
          continue;
        }
        it->checked = 1;
      }
      if (!ip_csum_ok(p, 20) || !tcp_csum_ok(p, 20, len)) {
        s->csum_rejects += 1;
        joined = -1;
        break;
      }
      s->link[it->tail] = (int32_t)i;
      it->tail = (int32_t)i;
      it->seq_next = seq + (uint32_t)payload;
      it->total += (uint32_t)payload;
      it->segs++;
      if (payload < it->gso || (flags & TCP_PSH)) it->closed = 1;
      if (flags & TCP_PSH) it->psh = 1;
      s->role[i] = ROLE_MERGED;
      joined = 1;
      break;
    }
    if (joined != 0 || (flags & TCP_PSH) || s->nitems >= GRO_ITEMS) continue;
    {
      gro_item *it = &s->items[s->nitems];
      memset(it, 0, sizeof *it);
      it->head = it->tail = (int32_t)i;
      it->seq_next = seq + (uint32_t)payload;
      it->total = (uint32_t)len;
      it->gso = (uint16_t)payload;
      it->segs = 1;
      it->ihl = 20;
      it->thl = (uint8_t)thl;
      s->item_of[i] = (int16_t)s->nitems;
      s->role[i] = ROLE_HEAD;
      s->nitems++;
    }
  }
  /* Heads of more than one segment become super-packets: IP length and checksum, the
   * pseudo-header sum in the TCP checksum field (the kernel completes it), PSH if the
   * last segment had it, and a GSO_TCPV4 header. */
  for (int k = 0; k < s->nitems; k++) {
    gro_item *it = &s->items[k];
    uint8_t *h;
    vnet_hdr v;
    if (it->head < 0) continue;
    if (it->segs < 2) {
      s->role[it->head] = ROLE_SINGLE;
      continue;
    }
    h = buf + offs[it->head];
    put16(h + 2, it->total);
    ip_fix_csum(h, 20);
    if (it->psh) h[33] |= TCP_PSH;
    put_csum(h + 36, csum_fold(pseudo_sum(h, IPPROTO_TCP, it->total - 20)));
    v.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    v.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    v.hdr_len = (uint16_t)(20 + it->thl);
    v.gso_size = it->gso;
    v.csum_start = 20;
    v.csum_offset = 16;
    vnet_encode(it->vnet, &v);
    s->coalesced_writes += 1;
    s->coalesced_segments += it->segs;
  }
}

/* The iovecs of output packet i (a ROLE_SINGLE or ROLE_HEAD packet); returns their count
 * and, through *npkts, how many input packets it carries. */
static int gro_iov(of_state *s, uint8_t *buf, const int32_t *offs, const int32_t *lens, int64_t i,
                   int *npkts) {
  int c = 0;
  if (s->role[i] == ROLE_HEAD) {
    gro_item *it = &s->items[s->item_of[i]];
    s->wiov[c].iov_base = it->vnet;
    s->wiov[c++].iov_len = VNET_LEN;
    s->wiov[c].iov_base = buf + offs[i];
    s->wiov[c++].iov_len = (size_t)lens[i];
    for (int32_t j = s->link[i]; j >= 0; j = s->link[j]) {
      size_t hl = 20 + (size_t)it->thl;
      s->wiov[c].iov_base = buf + offs[j] + hl;
      s->wiov[c++].iov_len = (size_t)lens[j] - hl;
    }
    *npkts = c - 1;
    return c;
  }
  s->wiov[c].iov_base = (void *)zero_vnet;
  s->wiov[c++].iov_len = VNET_LEN;
  s->wiov[c].iov_base = buf + offs[i];
  s->wiov[c++].iov_len = (size_t)lens[i];
  *npkts = 1;
  return c;
}

static int gro_args(napi_env env, const char *fn, napi_value *argv, uint8_t **buf, size_t *buflen,
                    int32_t **offs, int32_t **lens, int64_t *n, int argn) {
  size_t noffs, nlens, lim;
  if (arg_typed(env, fn, argv[0], "buf", napi_uint8_array, (void **)buf, buflen) != 0 ||
      arg_typed(env, fn, argv[1], "offs", napi_int32_array, (void **)offs, &noffs) != 0 ||
      arg_typed(env, fn, argv[2], "lens", napi_int32_array, (void **)lens, &nlens) != 0)
    return -1;
  lim = noffs < nlens ? noffs : nlens;
  lim = lim < OF_PKTS ? lim : OF_PKTS;
  if (arg_int(env, fn, argv[argn], "n", 0, (int64_t)lim, n) != 0) return -1;
  return check_packets(env, fn, *buflen, *offs, *lens, *n);
}

/* devWriteVnet(fd, buf, offs, lens, n) -> packets accepted */
static napi_value dev_write_vnet(napi_env env, napi_callback_info info) {
  static const char *fn = "devWriteVnet";
  GET_ARGS(5);
  int64_t fd, n, i, accepted = 0;
  uint8_t *buf;
  int32_t *offs, *lens;
  size_t buflen;
  int32_t *po = st->po, *pl = st->pl;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  if (gro_args(env, fn, argv + 1, &buf, &buflen, &offs, &lens, &n, 3) != 0) return NULL;
  /* Work on a private copy of the packet list (JS could change shared arrays meanwhile). */
  {
    for (i = 0; i < n; i++) {
      po[i] = offs[i];
      pl[i] = lens[i];
      if (po[i] < 0 || pl[i] < 0 || (int64_t)po[i] + pl[i] > (int64_t)buflen)
        THROW_RANGE(env, "%s: packet %lld changed while being written", fn, (long long)i);
    }
    gro_plan(st, buf, po, pl, n);
    for (i = 0; i < n; i++) {
      int cnt, npk;
      ssize_t r;
      if (st->role[i] == ROLE_MERGED) continue;
      cnt = gro_iov(st, buf, po, pl, i, &npk);
      do r = writev((int)fd, st->wiov, cnt); while (r < 0 && errno == EINTR);
      if (r >= 0) {
        accepted += npk;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (accepted == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "write", "write fd %d", (int)fd);
      note_error(st, errno);
    }
  }
  return int_result(env, accepted);
}

/* _groCoalesce(buf, offs, lens, n, out, outOffs, outLens) -> packets
 * What devWriteVnet would write (virtio_net_hdr + packet each), copied into `out` (tests).
 * Rewrites the headers of coalesced heads in buf, as devWriteVnet does. -1: out too small. */
static napi_value gro_coalesce(napi_env env, napi_callback_info info) {
  static const char *fn = "_groCoalesce";
  GET_ARGS(7);
  int64_t n, i;
  uint8_t *buf, *out;
  int32_t *offs, *lens, *ooffs, *olens;
  size_t buflen, nout, nooffs, nolens, used = 0, w = 0;

  if (gro_args(env, fn, argv, &buf, &buflen, &offs, &lens, &n, 3) != 0) return NULL;
  ARG_TYPED(4, "out", napi_uint8_array, &out, &nout);
  ARG_TYPED(5, "outOffs", napi_int32_array, &ooffs, &nooffs);
  ARG_TYPED(6, "outLens", napi_int32_array, &olens, &nolens);
  gro_plan(st, buf, offs, lens, n);
  for (i = 0; i < n; i++) {
    int cnt, npk;
    size_t start = used;
    if (st->role[i] == ROLE_MERGED) continue;
    if (w >= nooffs || w >= nolens) return int_result(env, -1);
    cnt = gro_iov(st, buf, offs, lens, i, &npk);
    for (int c = 0; c < cnt; c++) {
      if (used + st->wiov[c].iov_len > nout) return int_result(env, -1);
      memcpy(out + used, st->wiov[c].iov_base, st->wiov[c].iov_len);
      used += st->wiov[c].iov_len;
    }
    ooffs[w] = (int32_t)start;
    olens[w] = (int32_t)(used - start);
    w++;
  }
  return int_result(env, (int64_t)w);
}

/* ------------------------------------------------------------------ receive */

/* devReadVnet(fd, buf, headroom, max, offs, lens, vnet) -> count
 * Packet i: its virtio_net_hdr at vnet[10*i], the packet at buf[offs[i]] (headroom free
 * bytes in front), lens[i] bytes (-1: truncated). Packets are packed: each read needs
 * headroom + 65535 bytes free, and the next starts at the following 64-byte boundary. */
static napi_value dev_read_vnet(napi_env env, napi_callback_info info) {
  static const char *fn = "devReadVnet";
  GET_ARGS(7);
  int64_t fd, headroom, max, n = 0;
  uint8_t *buf, *vnet, spare;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens, nvnet, lim, pos = 0;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(2, "headroom", 0, 4096, &headroom);
  ARG_TYPED(4, "offs", napi_int32_array, &offs, &noffs);
  ARG_TYPED(5, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(6, "vnet", napi_uint8_array, &vnet, &nvnet);
  lim = noffs < nlens ? noffs : nlens;
  lim = lim < nvnet / VNET_LEN ? lim : nvnet / VNET_LEN;
  ARG_INT(3, "max", 0, (int64_t)lim, &max);
  if (buflen > INT32_MAX) THROW_RANGE(env, "%s: buf is larger than 2 GB", fn);

  while (n < max) {
    size_t start = pos + (size_t)headroom;
    struct iovec iov[3];
    ssize_t r;
    if (start + MAX_IP > buflen) break;
    iov[0].iov_base = vnet + n * VNET_LEN;
    iov[0].iov_len = VNET_LEN;
    iov[1].iov_base = buf + start;
    iov[1].iov_len = MAX_IP;
    iov[2].iov_base = &spare;
    iov[2].iov_len = 1;
    r = readv((int)fd, iov, 3);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (n == 0 && fd_fatal(errno)) THROW_SYS(env, errno, "read", "read fd %d", (int)fd);
      note_error(st, errno);
      break;
    }
    offs[n] = (int32_t)start;
    if (r < VNET_LEN || r > VNET_LEN + MAX_IP) {
      lens[n++] = -1;
      continue; /* nothing usable landed: the slot is reused */
    }
    lens[n++] = (int32_t)(r - VNET_LEN);
    pos = (start + (size_t)(r - VNET_LEN) + 63) & ~(size_t)63;
  }
  return int_result(env, n);
}

/* udpRecvGro(fd, buf, slot, headroom, max, lens, addrs, ports, segs) -> count
 * recvmmsg like udpRecv, and segs[i] = the UDP_GRO segment size when datagram i holds
 * several coalesced datagrams of that size (the last may be shorter), else 0. */
static napi_value udp_recv_gro(napi_env env, napi_callback_info info) {
  static const char *fn = "udpRecvGro";
  GET_ARGS(9);
  int64_t fd, slot, headroom, max, total = 0, room;
  uint8_t *buf;
  int32_t *lens, *segs;
  uint32_t *addrs;
  uint16_t *ports;
  size_t buflen, nlens, naddrs, nports, nsegs, lim;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  ARG_TYPED(1, "buf", napi_uint8_array, &buf, &buflen);
  ARG_INT(2, "slot", 1, INT32_MAX, &slot);
  ARG_INT(3, "headroom", 0, slot - 1, &headroom);
  ARG_TYPED(5, "lens", napi_int32_array, &lens, &nlens);
  ARG_TYPED(6, "addrs", napi_uint32_array, &addrs, &naddrs);
  ARG_TYPED(7, "ports", napi_uint16_array, &ports, &nports);
  ARG_TYPED(8, "segs", napi_int32_array, &segs, &nsegs);
  lim = nlens < naddrs ? nlens : naddrs;
  lim = lim < nports ? lim : nports;
  lim = lim < nsegs ? lim : nsegs;
  ARG_INT(4, "max", 0, (int64_t)lim, &max);
  if (slot * max > (int64_t)buflen)
    THROW_RANGE(env, "%s: %lld slots of %lld bytes do not fit in the buffer (%zu bytes)", fn,
                (long long)max, (long long)slot, buflen);
  room = slot - headroom;

  while (total < max) {
    int want = (int)(max - total < OF_MSGS ? max - total : OF_MSGS);
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
      h->msg_control = st->ctls[j].buf;
      h->msg_controllen = sizeof st->ctls[j].buf;
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
      struct msghdr *h = &st->msgs[j].msg_hdr;
      const struct sockaddr_in *sin = &st->names[j];
      struct cmsghdr *cm;
      int64_t k = total + j;
      lens[k] = (h->msg_flags & MSG_TRUNC) ? -1 : (int32_t)st->msgs[j].msg_len;
      segs[k] = 0;
      for (cm = CMSG_FIRSTHDR(h); cm != NULL; cm = CMSG_NXTHDR(h, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
          int g;
          memcpy(&g, CMSG_DATA(cm), sizeof g);
          if (g > 0 && g < lens[k]) {
            segs[k] = g;
            st->gro_datagrams += 1;
          }
        }
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
  return int_result(env, total);
}

/* ------------------------------------------------------------------ set-up */

/* tunOpenVnet(name, offloads) -> { fd, name }: a TUN device with IFF_VNET_HDR, a 10-byte
 * virtio_net_hdr (TUNSETVNETHDRSZ) and TUNSETOFFLOAD(offloads). Any refusal closes the fd
 * (which removes the device) and throws, naming the step: the caller falls back to tunOpen. */
static napi_value tun_open_vnet(napi_env env, napi_callback_info info) {
  static const char *fn = "tunOpenVnet";
  GET_ARGS(2);
  napi_valuetype t;
  size_t len;
  int64_t flags;
  struct ifreq ifr;
  napi_value res, v;
  int fd, hdrsz = VNET_LEN;

  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_string)
    THROW_TYPE(env, "%s: name must be a string", fn);
  ARG_INT(1, "offloads", 0, UINT32_MAX, &flags);
  memset(&ifr, 0, sizeof ifr);
  napi_get_value_string_utf8(env, argv[0], NULL, 0, &len);
  if (len >= IFNAMSIZ)
    THROW_RANGE(env, "%s: interface name is %zu bytes long, Linux allows at most %d", fn, len, IFNAMSIZ - 1);
  napi_get_value_string_utf8(env, argv[0], ifr.ifr_name, IFNAMSIZ, &len);
  if (strlen(ifr.ifr_name) != len) THROW_RANGE(env, "%s: interface name contains a NUL", fn);
  ifr.ifr_flags = (short)(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR);

  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) THROW_SYS(env, errno, "open", "open /dev/net/tun");
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    THROW_SYS(env, err, "ioctl(TUNSETIFF)", "ioctl(TUNSETIFF) tun vnet_hdr %s", len ? ifr.ifr_name : "(kernel-chosen name)");
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0) {
    int err = errno;
    close(fd);
    THROW_SYS(env, err, "ioctl(TUNSETVNETHDRSZ)", "ioctl(TUNSETVNETHDRSZ) %s", ifr.ifr_name);
  }
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) {
    int err = errno;
    close(fd);
    THROW_SYS(env, err, "ioctl(TUNSETOFFLOAD)", "ioctl(TUNSETOFFLOAD 0x%llx) %s", (long long)flags, ifr.ifr_name);
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

/* udpSetGro(fd, on): setsockopt(SOL_UDP, UDP_GRO). Throws (e.g. ENOPROTOOPT: kernel < 5.0). */
static napi_value udp_set_gro(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSetGro";
  GET_ARGS(2);
  int64_t fd;
  bool on;
  int v;
  napi_valuetype t;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_boolean) THROW_TYPE(env, "%s: on must be a boolean", fn);
  napi_get_value_bool(env, argv[1], &on);
  v = on ? 1 : 0;
  if (setsockopt((int)fd, SOL_UDP, UDP_GRO, &v, sizeof v) < 0)
    THROW_SYS(env, errno, "setsockopt(UDP_GRO)", "setsockopt(UDP_GRO) fd %d", (int)fd);
  return NULL;
}

/* offloadStats() -> counters since start (per environment). */
static napi_value offload_stats(napi_env env, napi_callback_info info) {
  static const char *fn = "offloadStats";
  size_t argc = 0;
  of_state *st;
  napi_value res, v;
  (void)fn;
  if (napi_get_cb_info(env, info, &argc, NULL, NULL, (void **)&st) != napi_ok) return NULL;
  if (napi_create_object(env, &res) != napi_ok) return NULL;
#define STAT(name, val) \
  if (napi_create_double(env, (val), &v) == napi_ok) napi_set_named_property(env, res, name, v)
  STAT("tsoPackets", st->tso_packets);
  STAT("tsoSegments", st->tso_segments);
  STAT("gsoMessages", st->gso_messages);
  STAT("gsoRefused", st->gso_refused);
  STAT("gsoOff", st->gso_off);
  STAT("csumCompleted", st->csum_completed);
  STAT("groDatagrams", st->gro_datagrams);
  STAT("coalescedWrites", st->coalesced_writes);
  STAT("coalescedSegments", st->coalesced_segments);
  STAT("csumRejects", st->csum_rejects);
#undef STAT
  return res;
}

/* ------------------------------------------------------------------- init */

static void state_free(void *data) {
  of_state *s = data;
  free(s->scratch);
  free(s);
}

napi_status vx_offload_register(napi_env env, napi_value exports, int *last_errno, double *error_count) {
  of_state *st = calloc(1, sizeof *st);
  napi_status status;
  if (st == NULL || (st->scratch = malloc(OF_SCRATCH)) == NULL) {
    free(st);
    napi_throw_error(env, "ENOMEM", "vxedge_native: out of memory (offload state)");
    return napi_generic_failure;
  }
  st->last_errno = last_errno;
  st->error_count = error_count;
  status = napi_add_env_cleanup_hook(env, state_free, st);
  if (status != napi_ok) {
    state_free(st);
    return status;
  }
#define FN(name, cb) {name, NULL, cb, NULL, NULL, NULL, napi_enumerable, st}
  {
    const napi_property_descriptor props[] = {
        FN("tunOpenVnet", tun_open_vnet),   FN("udpSetGro", udp_set_gro),
        FN("devReadVnet", dev_read_vnet),   FN("devWriteVnet", dev_write_vnet),
        FN("udpRecvGro", udp_recv_gro),     FN("udpSendVnet", udp_send_vnet),
        FN("offloadStats", offload_stats),  FN("_tsoSegment", tso_segment),
        FN("_groCoalesce", gro_coalesce),
    };
#undef FN
    return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  }
}
