/*
 * tso.c: TSO send. A TUN device with offloads hands us TCP "super-packets" of up to
 * 64 KB (the site's TSO/GRO output, left unsegmented) and packets whose L4 checksum is
 * still partial. After TypeScript has routed each one and written the VXLAN + inner
 * Ethernet header in front, this file completes partial checksums, cuts every
 * super-packet into MTU-sized TCP segments (headers copied, IP length/id/checksum, TCP
 * seq and flags fixed, every TCP checksum computed in full: the peer's kernel verifies
 * inner checksums), each behind a copy of the encapsulation, back to back in a scratch
 * buffer, and sends them with sendmmsg, one message per super-packet carrying
 * UDP_SEGMENT (the kernel cuts it into datagrams), split only where the kernel's limits
 * (64 segments, 65507 bytes) require.
 *
 * With TUN_F_USO4/6 (Linux 6.2+, device.c) the device also hands us UDP super-packets
 * (GSO_UDP_L4): a local sender's UDP_SEGMENT send, or the site's datagrams joined by GRO on
 * the LAN interface (rx-udp-gro-forwarding). They are cut the same way into datagrams of
 * gso_size payload bytes, each with its own IP length, id and checksum and UDP length and
 * checksum, as the kernel's own UDP GSO would cut them.
 *
 * Fallback: a UDP_SEGMENT send refused with EIO/EINVAL (an egress device without checksum
 * offload on kernels before 6.11, an MTU smaller than the segments) is sent again one
 * datagram per segment, and segmentation stays per datagram from then on (gso_off).
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <linux/virtio_net.h>

#include "csum.h"
#include "napi_util.h"
#include "tso.h"


/* A TCP/IPv4 or UDP/IPv4 super-packet to cut into segments. The header length is taken
 * from the packet itself, not from hdr_len: on the forwarding path the kernel may report the
 * whole linear part there (wireguard-go does the same). */
typedef struct {
  const uint8_t *ip;
  size_t iplen, ihl, thl, hdrlen, payload;
  uint32_t gso, nsegs, seq0;
  uint16_t id0;
  uint8_t udp;             /* GSO_UDP_L4: thl is 8, no sequence numbers or flags */
  uint8_t off, flags;      /* the TCP header's data offset byte and flags */
  uint64_t ip_sum, l4_sum; /* the headers' sums (IP; TCP or UDP) without the fields each segment sets */
} tso_job;

/* What TCP and UDP super-packets check alike: IPv4, its total length, no fragment, the IP
 * header and `minl4` bytes of L4 header inside. Sets ihl. */
static int gso_ip_ok(tso_job *j, const uint8_t *ip, size_t iplen, uint8_t proto, size_t minl4, uint32_t gso) {
  if (iplen < 20 + minl4 || (ip[0] >> 4) != 4 || ip[9] != proto || be16(ip + 2) != iplen || gso == 0) return -1;
  if (be16(ip + 6) & 0x3fff) return -1; /* a fragment is no super-packet */
  j->ihl = (size_t)(ip[0] & 0x0f) * 4;
  if (j->ihl < 20 || j->ihl + minl4 > iplen) return -1;
  return 0;
}

/* What TCP and UDP super-packets fill alike once their L4 header (`thl` bytes) is checked:
 * where the packet is, its sizes, the segment count, the head's IP id, and the IP header's
 * sum without the fields each segment sets (length, id, checksum; all at even offsets, so
 * the pieces sum as the whole would). */
static void gso_fill(tso_job *j, const uint8_t *ip, size_t iplen, size_t thl, uint32_t gso) {
  j->ip = ip;
  j->iplen = iplen;
  j->thl = thl;
  j->hdrlen = j->ihl + thl;
  j->payload = iplen - j->hdrlen;
  j->gso = gso;
  j->nsegs = j->payload == 0 ? 1 : (uint32_t)((j->payload + gso - 1) / gso);
  j->id0 = be16(ip + 4);
  j->ip_sum = csum_add(ip + 12, j->ihl - 12, csum_add(ip + 6, 4, csum_add(ip, 2, 0)));
}

/* A UDP super-packet: the datagrams share the UDP header but for length and checksum. */
static int uso_prepare(tso_job *j, const uint8_t *ip, size_t iplen, uint32_t gso) {
  if (gso_ip_ok(j, ip, iplen, IPPROTO_UDP, 8, gso) != 0) return -1;
  gso_fill(j, ip, iplen, 8, gso);
  j->udp = 1;
  j->seq0 = 0;
  j->off = j->flags = 0;
  /* The ports, and the pseudo-header's addresses and protocol; uso_seg_write adds the length
   * twice (pseudo-header and UDP header). */
  j->l4_sum = csum_add(ip + j->ihl, 4, 0) + pseudo_sum(ip, IPPROTO_UDP, 0);
  return 0;
}

static int tso_prepare(tso_job *j, const uint8_t *ip, size_t iplen, uint32_t gso) {
  const uint8_t *th;
  size_t thl;
  if (gso_ip_ok(j, ip, iplen, IPPROTO_TCP, 20, gso) != 0) return -1;
  th = ip + j->ihl;
  thl = (size_t)(th[12] >> 4) * 4;
  if (thl < 20 || j->ihl + thl > iplen) return -1;
  gso_fill(j, ip, iplen, thl, gso);
  j->udp = 0;
  j->seq0 = be32(th + 4);
  j->off = th[12];
  j->flags = th[13];
  /* Without sequence number, offset and flags, and checksum: all at even offsets. The sum
   * holds the pseudo-header's addresses and protocol; tso_write adds its length. */
  j->l4_sum = csum_add(th + 18, thl - 18, csum_add(th + 14, 2, csum_add(th + 8, 4, csum_add(th, 4, 0))));
  j->l4_sum += pseudo_sum(ip, IPPROTO_TCP, 0);
  return 0;
}

/* The writers of segment k (tso_write, uso_seg_write): `encap` bytes copied from in front of
 * the super-packet, then a complete IPv4/TCP or IPv4/UDP packet; each returns its length.
 *
 * Nothing is loaded from `out` or from bytes just stored. Summing headers that had been
 * copied and then patched field by field made every load of the sums span several earlier
 * stores, which the CPU cannot forward: each waited for those stores to land. That one load
 * in ip_fix_csum was 14 % of the JS thread's samples during an upload (perf record), and a
 * copy of the headers on the stack changed nothing (11 %). So the sums of the fields that
 * stay the same come from tso_prepare, the fields that change are added as values, the
 * payload is summed from its source, and `out` is only written. */

/* What a TCP segment and a UDP datagram cut from a super-packet share: `encap` bytes copied
 * from in front of it, the headers and chunk k of the payload, and the IP length, id (the
 * head's + k, as the kernel's TSO and UDP GSO number them) and checksum. Returns the chunk's
 * length, and where its bytes are in the super-packet (they are summed from there). */
static inline __attribute__((always_inline)) size_t seg_copy(const tso_job *j, size_t encap, uint32_t k, uint8_t *out,
                                                           const uint8_t **payload) {
  size_t start = j->hdrlen + (size_t)k * j->gso;
  size_t chunk = j->payload == 0 ? 0 : (j->iplen - start < j->gso ? j->iplen - start : j->gso);
  uint8_t *ip = out + encap;
  uint32_t len = (uint32_t)(j->hdrlen + chunk);
  uint16_t id = (uint16_t)(j->id0 + k);
  memcpy(out, j->ip - encap, encap);
  memcpy(ip, j->ip, j->hdrlen);
  memcpy(ip + j->hdrlen, j->ip + start, chunk);
  put16(ip + 2, len);
  put16(ip + 4, id);
  put_csum(ip + 10, (uint16_t)~csum_fold(j->ip_sum + be16_word(len) + be16_word(id)));
  *payload = j->ip + start;
  return chunk;
}

/* Segment k of a TCP super-packet: seg_copy, then the sequence number, the flags (FIN/PSH
 * only on the last, CWR only on the first) and the TCP checksum. */
static size_t tso_write(const tso_job *j, size_t encap, uint32_t k, uint8_t *out) {
  const uint8_t *payload;
  size_t chunk = seg_copy(j, encap, k, out, &payload);
  uint8_t *th = out + encap + j->ihl;
  uint32_t seq = j->seq0 + k * j->gso;
  uint8_t flags = j->flags;
  uint64_t acc;
  if (k + 1 != j->nsegs) flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
  if (k != 0) flags &= (uint8_t)~TCP_CWR;
  put32(th + 4, seq);
  th[13] = flags;
  acc = j->l4_sum + be16_word((uint32_t)(j->thl + chunk)); /* the pseudo-header's length */
  acc += be16_word(seq >> 16) + be16_word(seq & 0xffff) + be16_word((uint32_t)j->off << 8 | flags);
  acc = csum_add(payload, chunk, acc); /* headers are a multiple of 4 bytes: an even offset */
  put_csum(th + 16, (uint16_t)~csum_fold(acc));
  return encap + j->hdrlen + chunk;
}

/* Datagram k of a UDP super-packet: seg_copy, then the UDP length and a complete checksum;
 * one that sums to 0 goes as 0xffff (0 would mean none). */
static size_t uso_seg_write(const tso_job *j, size_t encap, uint32_t k, uint8_t *out) {
  const uint8_t *payload;
  size_t chunk = seg_copy(j, encap, k, out, &payload);
  uint8_t *uh = out + encap + j->ihl;
  uint32_t ulen = (uint32_t)(8 + chunk);
  uint16_t c;
  put16(uh + 4, ulen);
  c = (uint16_t)~csum_fold(csum_add(payload, chunk, j->l4_sum + 2 * be16_word(ulen)));
  put_csum(uh + 6, c == 0 ? 0xffff : c);
  return encap + j->hdrlen + chunk;
}

static inline size_t gso_write(const tso_job *j, size_t encap, uint32_t k, uint8_t *out) {
  return j->udp ? uso_seg_write(j, encap, k, out) : tso_write(j, encap, k, out);
}

/* ------------------------------------------------------------------- send */

void put_control(struct msghdr *h, ctl_buf *ctl, uint16_t seg, uint8_t tos) {
  struct cmsghdr *cm = (struct cmsghdr *)ctl->buf;
  size_t n = (seg ? CMSG_SPACE(sizeof seg) : 0) + (tos ? CMSG_SPACE(sizeof(int)) : 0);
  h->msg_control = n ? ctl->buf : NULL;
  h->msg_controllen = n;
  if (n == 0) return;
  memset(ctl->buf, 0, n);
  if (seg) {
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof seg);
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
    cm = (struct cmsghdr *)(ctl->buf + CMSG_SPACE(sizeof seg));
  }
  if (tos) {
    int v = tos;
    cm->cmsg_level = IPPROTO_IP;
    cm->cmsg_type = IP_TOS;
    cm->cmsg_len = CMSG_LEN(sizeof v);
    memcpy(CMSG_DATA(cm), &v, sizeof v);
  }
}

static void set_segment(tx_set *t, int m, uint16_t seg) {
  t->msg_seg[m] = seg;
  put_control(&t->msgs[m].msg_hdr, &t->ctls[m], seg, t->msg_tos[m]);
}

/*
 * The outer TOS byte of VXLAN datagram d, as the kernel's vxlan sets it with flannel's
 * configuration (no `tos`, so DSCP 0): the inner IPv4 or IPv6 packet's ECN field copied out,
 * CE sent as ECT(0) (ip_tunnel_ecn_encap -> INET_ECN_encapsulate, RFC 3168's full-functionality
 * mode; RFC 6040 decapsulates both alike). So a router on the internet that is congested marks
 * an ECN-capable flow's datagrams instead of dropping them, and the peer's decapsulation
 * (ours: proto/ecn.ts) carries the mark to the receiver. Anything else (ARP, a datagram too
 * short to hold the field, a STUN request, whose first byte is 0x00 or 0x01 where VXLAN's is
 * 0x08, its I flag) goes Not-ECT.
 *
 * It runs for every datagram, and a joined one pays it on top of the join's test: written so
 * that the IPv4 frame falls through (the hints), with the EtherType compared as one 16-bit load
 * in network byte order and CE folded by a table, a datagram pays 13 instructions here and in
 * the join's test instead of 18 (callgrind, scripts/bench-instructions udpsend: 205 -> 200).
 */
static inline uint8_t outer_tos(const uint8_t *d, size_t len) {
  static const uint8_t out[4] = {0, 1, 2, 2}; /* Not-ECT, ECT(1), ECT(0); CE goes as ECT(0) */
  uint16_t type;
  if (__builtin_expect(len < 24 || d[0] != 0x08, 0)) return 0;
  memcpy(&type, d + 20, sizeof type);
  if (__builtin_expect(type == htons(0x0800), 1)) return out[d[23] & 3];
  return type == htons(0x86dd) ? out[(d[23] >> 4) & 3] : 0;
}

/* Queues a new message of one buffer: a datagram, or `seg`-sized segments (TSO). `open`:
 * datagrams of the same size may join it. */
static void msg_add(tx_set *t, uint8_t *p, size_t len, uint32_t addr, uint16_t port, uint16_t seg,
                    uint8_t tos, int32_t pkt, int open) {
  int m = t->nmsgs++;
  struct msghdr *h = &t->msgs[m].msg_hdr;
  struct sockaddr_in *sin = &t->names[m];
  int v = t->niovs++;
  memset(h, 0, sizeof *h);
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(addr);
  sin->sin_port = htons(port);
  t->iovs[v].iov_base = p;
  t->iovs[v].iov_len = len;
  h->msg_name = sin;
  h->msg_namelen = sizeof *sin;
  h->msg_iov = &t->iovs[v];
  h->msg_iovlen = 1;
  t->msg_tos[m] = tos;
  /* Most messages carry neither (h was cleared above): skipping put_control for them saves
   * 11 instructions per datagram that joins no other (udpsend-apart: 280 -> 269). */
  if (seg | tos) set_segment(t, m, seg);
  else t->msg_seg[m] = 0;
  t->msg_pkt[m] = pkt;
  t->msg_npkt[m] = 1;
  t->msg_iov0[m] = v;
  t->msg_open[m] = seg == 0 && open;
  t->msg_bytes[m] = (uint32_t)len;
}

/*
 * A flow's two bits in a set's Bloom filter (tx_set.flows, one 64-bit word per bit). A
 * datagram may pass the batches the sender thread holds when its flow is in none of them,
 * and a filter answers "in none" for certain: a flow that was queued has both its bits set,
 * so it never passes itself. With the two to six flows of the held batches of bulk data,
 * another flow finds both of its bits set by chance under 1 % of the time ((k/64)^2); it
 * then only waits, as every datagram did before the sender thread.
 *
 * The flow of a VXLAN frame (8 bytes of VXLAN, 14 of inner Ethernet, IPv4) is its inner
 * protocol and addresses, with the ports of TCP and UDP; a fragment has no ports, so all
 * fragments of one pair of addresses are one flow. Anything else (a STUN request) is one
 * flow of its own.
 */
static inline void flow_bits(const uint8_t *d, size_t len, uint64_t b[2]) {
  const uint8_t *ip = d + 22;
  uint32_t h = 0x5354554eu; /* "STUN" */
  if (len >= 22 + 20 && d[20] == 0x08 && d[21] == 0x00) {
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    uint32_t ports = 0;
    if ((ip[9] == IPPROTO_TCP || ip[9] == IPPROTO_UDP) && (be16(ip + 6) & 0x3fff) == 0 && 22 + ihl + 4 <= len)
      ports = be32(ip + ihl);
    h = (be32(ip + 12) * 0x9e3779b1u) ^ be32(ip + 16);
    h = (h ^ ports) * 0x85ebca6bu;
    h ^= ip[9] * 0xc2b2ae35u;
  }
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  b[0] = 1ULL << (h & 63);
  b[1] = 1ULL << ((h >> 6) & 63);
}

/* Whether flow `b` may be among the flows of filter `set`: "no" is certain. */
static inline int flow_maybe_in(const uint64_t set[2], const uint64_t b[2]) {
  return (set[0] & b[0]) != 0 && (set[1] & b[1]) != 0;
}

/* Records in t (a set for the sender thread) and in the call's held_flows that flow `b` is
 * queued there: from now on it waits for the thread like what is queued before it. */
static inline void flow_queued(vx_state *s, tx_set *t, const uint64_t b[2]) {
  t->flows[0] |= b[0];
  t->flows[1] |= b[1];
  s->held_flows[0] |= b[0];
  s->held_flows[1] |= b[1];
}

/*
 * Queues one datagram (packet `pkt`): joined to the message before it when that one goes to
 * the same address and port with datagrams of the same size (the last may be shorter), so
 * that a burst of small packets to one peer leaves as one UDP_SEGMENT send: one trip down
 * the stack instead of one per datagram. The datagrams are not copied: each is an iov
 * (except for the sender thread, which needs them after udpSend has returned: t->copy).
 */
static inline void msg_put(tx_set *t, uint8_t *p, size_t len, uint32_t addr, uint16_t port, int32_t pkt,
                           int gso_off) {
  int m = t->nmsgs - 1;
  uint8_t tos = outer_tos(p, len);
  if (t->copy) { /* for the sender thread (never the express set, sent within the call) */
    uint8_t *c = t->scratch + t->used;
    memcpy(c, p, len);
    t->used += (len + 63) & ~(size_t)63;
    p = c;
  }
  if (m >= 0 && t->msg_open[m] && t->niovs < MMSG_BATCH && t->names[m].sin_addr.s_addr == htonl(addr) &&
      t->names[m].sin_port == htons(port) && t->msg_tos[m] == tos && t->msg_pkt[m] + t->msg_npkt[m] == pkt) {
    struct msghdr *h = &t->msgs[m].msg_hdr;
    size_t first = t->iovs[t->msg_iov0[m]].iov_len;
    if (len <= first && h->msg_iovlen < UDP_GSO_MAX_SEGS && t->msg_bytes[m] + len <= UDP_GSO_MAX_BYTES) {
      int v = t->niovs++;
      t->iovs[v].iov_base = p;
      t->iovs[v].iov_len = len;
      h->msg_iovlen++;
      t->msg_npkt[m]++;
      t->msg_bytes[m] += (uint32_t)len;
      if (h->msg_iovlen == 2) set_segment(t, m, (uint16_t)first);
      if (len < first) t->msg_open[m] = 0; /* a shorter one must be the last */
      return;
    }
  }
  msg_add(t, p, len, addr, port, 0, tos, pkt, !gso_off);
}

/* The socket's buffer is full: the send stops there (the rest of the batch is dropped). */
static inline bool socket_full(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

static void note_tx_error(tx_set *t, int err) {
  t->last_errno = err;
  t->errors += 1;
}

/* Sends message m's datagrams one by one (UDP_SEGMENT refused). 0 or an errno. */
static int send_split(tx_set *t, int fd, int m) {
  struct msghdr *mh = &t->msgs[m].msg_hdr;
  int cnt = 0, k = 0, err = 0;
  struct msghdr tos_only;
  put_control(&tos_only, &t->split_ctl, 0, t->msg_tos[m]);
  for (size_t i = 0; i < mh->msg_iovlen; i++) {
    uint8_t *base = mh->msg_iov[i].iov_base;
    size_t total = mh->msg_iov[i].iov_len, seg = mh->msg_iovlen > 1 ? total : t->msg_seg[m], off;
    for (off = 0; off < total && cnt < UDP_GSO_MAX_SEGS * 2; off += seg, cnt++) {
      struct msghdr *h = &t->split_msgs[cnt].msg_hdr;
      memset(h, 0, sizeof *h);
      t->split_iovs[cnt].iov_base = base + off;
      t->split_iovs[cnt].iov_len = total - off < seg ? total - off : seg;
      h->msg_name = &t->names[m];
      h->msg_namelen = sizeof t->names[m];
      h->msg_iov = &t->split_iovs[cnt];
      h->msg_iovlen = 1;
      h->msg_control = tos_only.msg_control;
      h->msg_controllen = tos_only.msg_controllen;
    }
  }
  while (k < cnt) {
    int r = sendmmsg(fd, t->split_msgs + k, (unsigned)(cnt - k), MSG_DONTWAIT);
    if (r > 0) {
      k += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    err = r == 0 ? EAGAIN : errno;
    if (socket_full(err) || fd_fatal(err)) return err;
    note_tx_error(t, err);
    k++;
  }
  return err;
}

static void mark_failed(tx_set *t, int m, uint8_t *failed) {
  if (failed == NULL) {
    t->lost_pkts += t->msg_npkt[m];
    return;
  }
  for (int32_t q = 0; q < t->msg_npkt[m]; q++) failed[t->msg_pkt[m] + q] = 1;
}

/* What t still holds never left (the send stopped early): its packets failed. */
static void tx_discard(tx_set *t, uint8_t *failed) {
  for (int m = 0; m < t->nmsgs; m++) mark_failed(t, m, failed);
  tx_reset(t);
}

/* Empties t, all but its flow filter: what tx_send does when it is done with t, on either
 * thread. The sender thread still counts as holding t until tx_send returns, and while it
 * holds t the JS thread reads t's filter (sender_held_flows); so only the JS thread clears
 * the filter, when it takes t back (tx_reset). Clearing it here was a data race: the thread
 * wrote the filter while the JS thread read it under the lock the thread did not take. */
static void tx_empty(tx_set *t) {
  t->nmsgs = 0;
  t->niovs = 0;
  t->used = 0;
}

void tx_reset(tx_set *t) {
  tx_empty(t);
  t->flows[0] = t->flows[1] = 0;
}

void tx_fold(vx_state *st, tx_set *t) {
  st->gso_messages += t->sent_gso;
  st->snd_lost += t->lost_pkts;
  st->error_count += t->errors;
  if (t->last_errno != 0) st->last_errno = t->last_errno;
  if (t->refused_gso && !st->gso_off) {
    st->gso_refused += 1;
    st->gso_off = 1;
  }
  t->sent_gso = t->lost_pkts = t->errors = 0;
  t->last_errno = t->refused_gso = 0;
}

int tx_send(tx_set *t, int fd, uint8_t *failed) {
  int k = 0, stop = 0;
  while (k < t->nmsgs) {
    int r = sendmmsg(fd, t->msgs + k, (unsigned)(t->nmsgs - k), MSG_DONTWAIT);
    int err;
    if (r > 0) {
      for (int q = 0; q < r; q++) t->sent_gso += t->msg_seg[k + q] ? 1 : 0;
      k += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    err = r == 0 ? EAGAIN : errno;
    if (socket_full(err) || fd_fatal(err)) {
      stop = err;
      break;
    }
    if (t->msg_seg[k] && (err == EIO || err == EINVAL || err == EMSGSIZE || err == ENOPROTOOPT)) {
      /* The kernel will not segment for us here: from now on neither do we ask it to. */
      int e2;
      t->refused_gso = 1;
      e2 = send_split(t, fd, k);
      if (socket_full(e2) || fd_fatal(e2)) {
        stop = e2;
        break;
      }
      k++;
      continue;
    }
    note_tx_error(t, err);
    mark_failed(t, k, failed);
    k++;
  }
  /* A full socket drops the rest, as the kernel's own VXLAN drops what its queue cannot
   * take; counted, and reported once per batch (not per packet) for a fatal error. */
  if (stop != 0 && failed == NULL && !socket_full(stop)) note_tx_error(t, stop);
  for (; k < t->nmsgs; k++) mark_failed(t, k, failed);
  tx_empty(t); /* not the flow filter: see tx_empty */
  return stop;
}

/* Sends every queued message: on this thread (inline), or hands them to the sender thread.
 * Returns 0, or the errno that stopped it early (EAGAIN, ENOBUFS: socket full; EBADF...:
 * fatal); unsent messages mark their packets failed. */
static int flush(vx_state *s, int fd) {
  int stop;
  if (s->snd != NULL) {
    /* What passed the thread's batches leaves before this one joins them: a flow that went
     * express earlier in the call may have later datagrams in it. */
    if (s->express.nmsgs > 0 && (stop = sender_express(s, fd)) != 0) return stop;
    return sender_flush(s, fd);
  }
  stop = tx_send(s->tx, fd, s->failed);
  tx_fold(s, s->tx);
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

/* Makes room in the express set for one more message (sends it when full): 0, or the errno
 * that stopped that send. */
static inline int express_room(vx_state *s, int fd) {
  const tx_set *e = &s->express;
  return e->nmsgs >= OF_MSGS || e->niovs >= MMSG_BATCH ? sender_express(s, fd) : 0;
}

/* Always inlined: it runs once per datagram, and GCC's own choice flips with the size of
 * its callers. When the first pass (send_early) grew tso_send, GCC stopped inlining it, and a
 * plain datagram cost 38 more instructions (callgrind, scripts/bench-instructions: 196 -> 234
 * per 114-byte datagram) until a smaller tso_write brought the inlining back. */
static inline __attribute__((always_inline)) int queue_datagram(vx_state *s, int fd, uint8_t *d, size_t len, size_t encap,
                                                               const vnet_hdr *h, uint32_t addr, uint16_t port, int32_t pkt,
                                                               copy_sink *sink, int *stop) {
  uint8_t *ip = d + encap;
  size_t iplen = len - encap;
  uint8_t type = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
  tx_set *t;
  tso_job j;
  size_t stride;
  uint32_t per_msg, k;
  uint64_t fb[2] = {0, 0};

  if (type == VIRTIO_NET_HDR_GSO_NONE) {
    if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      if (complete_csum(ip, iplen, h) != 0) return -1;
      s->csum_completed += 1;
    }
    if (sink) return sink_put(sink, d, len);
    if (s->snd != NULL) flow_bits(d, len, fb);
    if (s->express_ok && !flow_maybe_in(s->held_flows, fb)) {
      /* Its flow is in none of the batches the thread holds: it need not wait behind them. */
      t = &s->express;
      if ((*stop = express_room(s, fd)) != 0) return 0;
    } else {
      t = s->tx;
      if ((t->nmsgs >= OF_MSGS || t->niovs >= MMSG_BATCH || (t->copy && t->used + len + 64 > OF_SCRATCH)) &&
          (*stop = flush(s, fd)) != 0)
        return 0;
      t = s->tx; /* flush may have moved on to the next set */
      if (t->copy) flow_queued(s, t, fb);
    }
    msg_put(t, d, len, addr, port, pkt, s->gso_off);
    return 0;
  }
  if (type == VIRTIO_NET_HDR_GSO_TCPV4) {
    if (tso_prepare(&j, ip, iplen, h->gso_size) != 0) return -1;
    s->tso_packets += 1;
    s->tso_segments += j.nsegs;
  } else if (type == VIRTIO_NET_HDR_GSO_UDP_L4) {
    if (uso_prepare(&j, ip, iplen, h->gso_size) != 0) return -1;
    s->uso_packets += 1;
    s->uso_segments += j.nsegs;
  } else {
    return -1;
  }
  if (s->snd != NULL && !sink) flow_bits(d, len, fb);
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
      sink->lens[sink->n] = (int32_t)gso_write(&j, encap, k, sink->buf + sink->used);
      sink->used += (size_t)sink->lens[sink->n++];
      k++;
      continue;
    }
    if (s->tx->nmsgs >= OF_MSGS || s->tx->niovs >= MMSG_BATCH || s->tx->used + (size_t)m * stride > OF_SCRATCH) {
      if ((*stop = flush(s, fd)) != 0) return 0;
    }
    base = s->tx->scratch + s->tx->used;
    for (q = 0; q < m; q++) total += gso_write(&j, encap, k + q, base + total);
    s->tx->used += (total + 63) & ~(size_t)63;
    msg_add(s->tx, base, total, addr, port, m > 1 ? (uint16_t)stride : 0, outer_tos(base, total), pkt, !s->gso_off);
    if (s->tx->copy) flow_queued(s, s->tx, fb);
    k += m;
  }
  return 0;
}

/*
 * The first pass over a udpSend batch that mixes TCP super-packets with plain datagrams,
 * while the sender thread runs: the plain datagrams whose flow is in none of the batches the
 * thread holds and in no super-packet before them in this batch are sent at once, from the
 * express set, before any segment is cut; st->early marks them for the second pass to skip.
 * A ping or a keystroke that a device read returned beside an upload's data then waits
 * neither for the cutting (the copy and checksums of ~45 segments per 64 KB super-packet)
 * nor, when the thread is idle, for its wake-up after the hand-over. What shares a flow with
 * a super-packet before it stays behind that one's segments, as in the second pass: no flow
 * is reordered. Returns 0 or the errno that stopped the send; st->early is all 0 on entry.
 */
static int send_early(vx_state *st, int fd, uint8_t *buf, size_t buflen, const int32_t *offs, const int32_t *lens,
                      const uint32_t *addrs, const uint16_t *ports, const uint8_t *vnet, size_t nvnet,
                      const int32_t *vidx, int64_t encap, int64_t n) {
  uint64_t queued[2] = {st->held_flows[0], st->held_flows[1]};
  int gso = 0, plain = 0;
  for (int64_t i = 0; i < n; i++) {
    int32_t vi = READ_ONCE(vidx[i]);
    if (vi < 0 || (int64_t)vi * VNET_LEN + VNET_LEN > (int64_t)nvnet) continue;
    if ((vnet[(size_t)vi * VNET_LEN + 1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN) == VIRTIO_NET_HDR_GSO_NONE) plain = 1;
    else gso = 1;
  }
  if (!gso || !plain) return 0;
  for (int64_t i = 0; i < n; i++) {
    int32_t off = READ_ONCE(offs[i]), len = READ_ONCE(lens[i]), vi = READ_ONCE(vidx[i]);
    uint64_t fb[2];
    vnet_hdr h;
    int stop;
    /* Anything odd is left to the second pass, which checks and reports it. */
    if (off < 0 || len < encap || (int64_t)off + len > (int64_t)buflen || vi < 0 ||
        (int64_t)vi * VNET_LEN + VNET_LEN > (int64_t)nvnet)
      continue;
    vnet_decode(vnet + (size_t)vi * VNET_LEN, &h);
    flow_bits(buf + off, (size_t)len, fb);
    if ((h.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN) != VIRTIO_NET_HDR_GSO_NONE) {
      queued[0] |= fb[0];
      queued[1] |= fb[1];
      continue;
    }
    if (flow_maybe_in(queued, fb)) continue; /* its flow may be queued: in order */
    if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      if (complete_csum(buf + off + encap, (size_t)(len - encap), &h) != 0) continue; /* the second pass counts it */
      st->csum_completed += 1;
    }
    if ((stop = express_room(st, fd)) != 0) return stop;
    msg_put(&st->express, buf + off, (size_t)len, addrs[i], ports[i], (int32_t)i, st->gso_off);
    st->early[i] = 1;
  }
  return st->express.nmsgs > 0 ? sender_express(st, fd) : 0;
}

/*
 * udpSend's work (socket.c parsed and bounds-checked the arguments): datagram i =
 * buf[offs[i] .. +lens[i]) goes to addrs[i]:ports[i]. With `vnet` (packets read from a device
 * with offloads) it is `encap` bytes of headers, then an inner IPv4 packet read with
 * virtio_net_hdr vnet[10*vidx[i]]: partial checksums are completed and TCP super-packets cut
 * into segments. Without, it goes as it is. Either way consecutive datagrams of one size to one
 * peer are joined into UDP_SEGMENT sends. Returns how many of the n packets went out
 * entirely, or -1 with an exception pending (a fatal socket error before anything was sent).
 */
int64_t tso_send(napi_env env, vx_state *st, int fd, uint8_t *buf, size_t buflen, const int32_t *offs,
                 const int32_t *lens, const uint32_t *addrs, const uint16_t *ports, const uint8_t *vnet,
                 size_t nvnet, const int32_t *vidx, int64_t encap, int64_t n) {
  static const char *fn = "udpSend";
  static const vnet_hdr plain = {0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0};
  int64_t i, sent = 0;
  int stop = 0;
  for (i = 0; vnet != NULL && i < n; i++) {
    if (vidx[i] < 0 || (int64_t)vidx[i] * VNET_LEN + VNET_LEN > (int64_t)nvnet) {
      throw_fmt(env, 1, "%s: vnetIdx[%lld] = %d is outside vnet (%zu bytes)", fn, (long long)i, vidx[i], nvnet);
      return -1;
    }
    if (lens[i] < encap) {
      throw_fmt(env, 1, "%s: packet %lld is shorter than encap", fn, (long long)i);
      return -1;
    }
  }

  tx_reset(st->tx);
  tx_reset(&st->express);
  st->express_ok = sender_held_flows(st, st->held_flows);
  memset(st->failed, 0, (size_t)n); /* only the first n are read below, and by udpSendFailed */
  st->failed_n = n;
  memset(st->early, 0, (size_t)n);
  i = 0;
  if (st->snd != NULL && vnet != NULL && (stop = send_early(st, fd, buf, buflen, offs, lens, addrs, ports, vnet, nvnet, vidx, encap, n)) != 0) {
    /* The socket is full (or gone): what was not sent early never leaves either. */
    for (; i < n; i++) st->failed[i] |= !st->early[i];
  }
  for (; i < n && !stop; i++) {
    int32_t off = READ_ONCE(offs[i]), len = READ_ONCE(lens[i]), vi = vnet != NULL ? READ_ONCE(vidx[i]) : 0;
    vnet_hdr h = plain;
    if (st->early[i]) continue; /* sent by send_early */
    if (off < 0 || len < 0 || (int64_t)off + len > (int64_t)buflen ||
        (vnet != NULL && (len < encap || vi < 0 || (int64_t)vi * VNET_LEN + VNET_LEN > (int64_t)nvnet))) {
      throw_fmt(env, 1, "%s: packet %lld changed while being sent", fn, (long long)i);
      return -1;
    }
    if (vnet != NULL) vnet_decode(vnet + (size_t)vi * VNET_LEN, &h);
    if (queue_datagram(st, fd, buf + off, (size_t)len, vnet != NULL ? (size_t)encap : 0, &h, addrs[i], ports[i],
                       (int32_t)i, NULL, &stop) != 0) {
      note_error(st, EPROTO);
      st->failed[i] = 1;
    }
    if (stop) st->failed[i] = 1; /* the socket filled up before all of it was queued */
  }
  if (!stop && st->express.nmsgs > 0) stop = sender_express(st, fd);
  if (!stop) stop = flush(st, fd);
  if (stop) {
    /* One set's send stopped: what the other still queues (the TCP of this call while the
     * express set filled up, or the reverse) never left either. */
    tx_discard(&st->express, st->failed);
    tx_discard(st->tx, st->failed);
  }
  for (; i < n; i++) st->failed[i] = 1; /* never queued: the socket was full */
  if (fd_fatal(stop)) {
    int any = 0;
    for (i = 0; i < n; i++) any |= !st->failed[i];
    if (!any) {
      napi_value e = sys_error(env, stop, "sendmmsg", "sendmmsg fd %d", fd);
      if (e != NULL) napi_throw(env, e);
      return -1;
    }
    note_error(st, stop);
  }
  for (i = 0; i < n; i++) sent += !st->failed[i];
  return sent;
}

/* _tsoSegment(buf, off, len, vnet, vnetOff, encap, out, outOffs, outLens) -> datagrams
 * The datagrams udpSend with offloads would send for one packet, copied into `out` (for tests);
 * -1 when the packet would be dropped. Completes a partial checksum in buf in place. */
napi_value vx_tso_segment(napi_env env, napi_callback_info info) {
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

