/*
 * gro.c: GRO write. Validated inner packets from the underlay (UDP_GRO may have handed
 * us many segments of one flow at once) are written to a TUN device with virtio-net
 * headers, joining consecutive TCP segments of one flow into one super-packet with a
 * GSO_TCPV4 header, and on kernels that take them (st->uso_write) consecutive UDP
 * datagrams of one flow into one with a GSO_UDP_L4 header, gathered with writev so the
 * payload is not copied. Checksums of every joined segment are verified first: the kernel
 * trusts a NEEDS_CSUM packet, and these come from the network.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/uio.h>
#include <linux/virtio_net.h>

#include "csum.h" /* also VIRTIO_NET_HDR_GSO_UDP_L4 where the headers predate it */
#include "gro.h"
#include "napi_util.h"

enum { ROLE_SINGLE = 0, ROLE_HEAD = 1, ROLE_MERGED = 2 };

static const uint8_t zero_vnet[VNET_LEN];


/* What any packet (TCP segment or UDP datagram, `payload` bytes after its headers) needs to
 * follow item `it` (head h): the chain still open, no longer than its first, room left, and
 * the same TOS, DF and TTL. */
static inline bool gro_room(const gro_item *it, const uint8_t *h, const uint8_t *p, size_t payload) {
  if (it->closed || payload > it->gso) return false;
  if (it->segs >= GRO_MAX_SEGS || it->total + payload > MAX_IP) return false;
  return h[1] == p[1] && (h[6] >> 5) == (p[6] >> 5) && h[8] == p[8]; /* TOS, DF, TTL */
}

/* Can TCP segment `p` (already known to be an IPv4/TCP candidate) follow item `it`? */
static bool gro_fits(const gro_item *it, const uint8_t *h, const uint8_t *p, size_t thl, uint32_t seq,
                     size_t payload) {
  const uint8_t *hth = h + it->ihl, *th = p + 20;
  if (it->thl != thl || seq != it->seq_next || !gro_room(it, h, p, payload)) return false;
  if (memcmp(h + 12, p + 12, 8) != 0 || memcmp(hth, th, 4) != 0) return false; /* addresses, ports */
  if (memcmp(hth + 8, th + 8, 4) != 0 || memcmp(hth + 14, th + 14, 2) != 0) return false; /* ack, window */
  /* The data-offset byte whole: its low bits are reserved ones and AccECN's AE flag, which the
   * kernel's GRO compares with the rest of the flag word. The head's would stand for all. */
  if (hth[12] != th[12]) return false;
  return thl == 20 || memcmp(hth + 20, th + 20, thl - 20) == 0; /* options, timestamps included */
}

/* Same flow as item head `h`: protocol, addresses and ports (both are IPv4 with a 20-byte
 * header). */
static bool gro_same_flow(const uint8_t *h, const uint8_t *p) {
  return h[9] == p[9] && memcmp(h + 12, p + 12, 8) == 0 && memcmp(h + 20, p + 20, 4) == 0;
}

/*
 * A packet of a flow that is not joined ends that flow's open chain, as it flushes the
 * kernel's GRO: joining a later segment across it would reorder the flow (data written
 * before a pure ACK, FIN or out-of-order segment that came first).
 */
static void gro_close_flow(vx_state *s, uint8_t *buf, const int32_t *offs, const uint8_t *p) {
  for (int k = s->nitems - 1; k >= 0; k--) {
    gro_item *it = &s->items[k];
    if (it->head >= 0 && gro_same_flow(buf + offs[it->head], p)) {
      it->closed = 1;
      return;
    }
  }
}

/* Ends every open chain between the same two addresses: for a TCP packet whose ports we
 * cannot read at the usual place (IP options), any flow between them may be its own. */
static void gro_close_addrs(vx_state *s, uint8_t *buf, const int32_t *offs, const uint8_t *p) {
  for (int k = 0; k < s->nitems; k++) {
    gro_item *it = &s->items[k];
    if (it->head >= 0 && memcmp(buf + offs[it->head] + 12, p + 12, 8) == 0) it->closed = 1;
  }
}

enum { CSUM_JOIN, CSUM_HEAD_BAD, CSUM_PKT_BAD };

static inline bool l4_csum_ok(uint8_t proto, const uint8_t *ip, size_t len) {
  return proto == IPPROTO_UDP ? udp_csum_ok(ip, 20, len) : tcp_csum_ok(ip, 20, len);
}

/* Before packet p (len bytes) joins chain `it` (head h): the head's checksums, once, and
 * p's. CSUM_HEAD_BAD: the head is written as it came and leaves the plan (the kernel will
 * drop it), look at the flow's earlier chains; CSUM_PKT_BAD: p is not joined. */
static inline int gro_csums(vx_state *s, gro_item *it, const uint8_t *h, const uint8_t *p, size_t len) {
  if (!it->checked) {
    if (!ip_csum_ok(h, 20) || !l4_csum_ok(it->proto, h, it->total)) {
      s->csum_rejects += 1;
      s->role[it->head] = ROLE_SINGLE;
      it->head = -1;
      return CSUM_HEAD_BAD;
    }
    it->checked = 1;
  }
  if (!ip_csum_ok(p, 20) || !l4_csum_ok(it->proto, p, len)) {
    s->csum_rejects += 1;
    return CSUM_PKT_BAD;
  }
  return CSUM_JOIN;
}

/* Packet i (payload bytes after its headers) joins chain `it`. */
static inline void gro_link(vx_state *s, gro_item *it, int64_t i, size_t payload) {
  s->link[it->tail] = (int32_t)i;
  it->tail = (int32_t)i;
  it->total += (uint32_t)payload;
  it->segs++;
  s->role[i] = ROLE_MERGED;
}

/*
 * The chain packet p (len bytes; TCP: header length thl and sequence number seq) joins: its
 * flow's latest chain, if p fits there and every checksum is good. NULL otherwise; *bad is
 * set when p's own checksums are wrong (it is then written as it came). Only the flow's
 * latest chain may take p; one that p does not fit ends here.
 */
static inline gro_item *gro_chain_for(vx_state *s, uint8_t *buf, const int32_t *offs, const uint8_t *p, size_t len,
                                      size_t thl, uint32_t seq, size_t payload, bool *bad) {
  *bad = false;
  for (int k = s->nitems - 1; k >= 0; k--) {
    gro_item *it = &s->items[k];
    const uint8_t *h;
    if (it->head < 0) continue;
    h = buf + offs[it->head];
    if (!gro_same_flow(h, p)) continue;
    if (!(p[9] == IPPROTO_UDP ? gro_room(it, h, p, payload) : gro_fits(it, h, p, thl, seq, payload))) {
      it->closed = 1;
      return NULL;
    }
    switch (gro_csums(s, it, h, p, len)) {
    case CSUM_HEAD_BAD:
      continue;
    case CSUM_PKT_BAD:
      *bad = true;
      return NULL;
    default:
      return it;
    }
  }
  return NULL;
}

/* Packet i (len bytes, `payload` after `thl` bytes of L4 header) starts a chain, if there is room. */
static gro_item *gro_start(vx_state *s, int64_t i, size_t len, size_t payload, size_t thl, uint8_t proto) {
  gro_item *it;
  if (s->nitems >= GRO_ITEMS) return NULL;
  it = &s->items[s->nitems];
  memset(it, 0, sizeof *it);
  it->head = it->tail = (int32_t)i;
  it->total = (uint32_t)len;
  it->gso = (uint16_t)payload;
  it->segs = 1;
  it->ihl = 20;
  it->thl = (uint8_t)thl;
  it->proto = proto;
  s->item_of[i] = (int16_t)s->nitems;
  s->role[i] = ROLE_HEAD;
  s->nitems++;
  return it;
}

/*
 * UDP datagram i (p, len bytes) in the plan: joined to its flow's open chain when it is the
 * same size as the chain's first datagram or shorter (a shorter one ends the chain), with
 * the same TOS, DF and TTL; else it starts a chain. The kernel cuts such a super-packet
 * (GSO_UDP_L4) back into the same datagrams, each `gso` bytes but the last, as the UDP GRO
 * of a NIC would have handed them over. Both checksums of every joined datagram are
 * verified first (0: the sender computed none, allowed for IPv4).
 */
static void gro_plan_udp(vx_state *s, uint8_t *buf, const int32_t *offs, int64_t i, uint8_t *p, size_t len) {
  size_t payload;
  gro_item *it;
  bool bad;
  if (len < 29 || p[0] != 0x45 || be16(p + 2) != len || (be16(p + 6) & 0x3fff) || be16(p + 24) != len - 20) {
    /* Not joined (IP options, a fragment, a bad length, no payload): it ends the chains
     * between its addresses, or a later datagram of its flow would be joined across it. */
    gro_close_addrs(s, buf, offs, p);
    return;
  }
  payload = len - 28;
  it = gro_chain_for(s, buf, offs, p, len, 8, 0, payload, &bad);
  if (it != NULL) {
    gro_link(s, it, i, payload);
    if (payload < it->gso) it->closed = 1;
  } else if (!bad) {
    gro_start(s, i, len, payload, 8, IPPROTO_UDP);
  }
}

/*
 * Plans the writes of one batch: packets that can be coalesced become ROLE_MERGED links
 * of an item's chain; each head gets its virtio_net_hdr. Like the kernel's GRO, only
 * in-order ACK or ACK|PSH segments with data of one flow (same addresses, ports, ack,
 * window, reserved bits, TOS, DF, TTL and TCP options) are joined, each no longer than the first, and a
 * short or PSH segment ends the chain. Both checksums of every joined packet are verified
 * first: the kernel trusts a NEEDS_CSUM packet, and these come from the network.
 */
static void gro_plan(vx_state *s, uint8_t *buf, const int32_t *offs, const int32_t *lens, int64_t n) {
  int64_t i;
  s->nitems = 0;
  for (i = 0; i < n; i++) {
    uint8_t *p = buf + offs[i];
    size_t len = (size_t)lens[i], thl, payload;
    uint8_t flags;
    uint32_t seq;
    gro_item *it;
    bool bad;

    s->role[i] = ROLE_SINGLE;
    s->link[i] = -1;
    if (len < 20 || (p[0] >> 4) != 4) continue;
    if (p[9] == IPPROTO_UDP && s->uso_write) {
      gro_plan_udp(s, buf, offs, i, p, len);
      continue;
    }
    if (p[9] != IPPROTO_TCP) continue;
    if (len < 40 || p[0] != 0x45 || be16(p + 2) != len || (be16(p + 6) & 0x3fff)) {
      /* TCP we do not join (IP options, a fragment, a bad length): like any other packet of
       * its flow it ends the flow's chain, or a later segment would be joined across it. */
      gro_close_addrs(s, buf, offs, p);
      continue;
    }
    thl = (size_t)(p[32] >> 4) * 4;
    flags = p[33];
    if (thl < 20 || 20 + thl >= len || (flags != TCP_ACK && flags != (TCP_ACK | TCP_PSH))) {
      /* No data, or SYN/FIN/RST/URG...: never joined, and it ends its flow's chain. */
      gro_close_flow(s, buf, offs, p);
      continue;
    }
    payload = len - 20 - thl;
    seq = be32(p + 24);
    it = gro_chain_for(s, buf, offs, p, len, thl, seq, payload, &bad);
    if (it != NULL) {
      gro_link(s, it, i, payload);
      if (payload < it->gso || (flags & TCP_PSH)) it->closed = 1;
      if (flags & TCP_PSH) it->psh = 1;
    } else {
      if (bad || (flags & TCP_PSH)) continue; /* a PSH segment alone is written as it came */
      it = gro_start(s, i, len, payload, thl, IPPROTO_TCP);
      if (it == NULL) continue;
    }
    it->seq_next = seq + (uint32_t)payload;
  }
  /* Heads of more than one segment become super-packets: IP length and checksum, the
   * pseudo-header sum in the TCP or UDP checksum field (the kernel completes it; the UDP
   * length too), PSH if the last TCP segment had it, and a GSO_TCPV4 or GSO_UDP_L4 header. */
  for (int k = 0; k < s->nitems; k++) {
    gro_item *it = &s->items[k];
    uint8_t *h;
    vnet_hdr v;
    bool udp;
    if (it->head < 0) continue;
    if (it->segs < 2) {
      s->role[it->head] = ROLE_SINGLE;
      continue;
    }
    h = buf + offs[it->head];
    udp = it->proto == IPPROTO_UDP;
    put16(h + 2, it->total);
    ip_fix_csum(h, 20);
    if (udp) put16(h + 24, it->total - 20); /* the kernel gives each datagram its own length */
    else if (it->psh) h[33] |= TCP_PSH;
    v.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    v.gso_type = udp ? VIRTIO_NET_HDR_GSO_UDP_L4 : VIRTIO_NET_HDR_GSO_TCPV4;
    v.hdr_len = (uint16_t)(20 + it->thl);
    v.gso_size = it->gso;
    v.csum_start = 20;
    v.csum_offset = udp ? 6 : 16;
    put_csum(h + 20 + v.csum_offset, csum_fold(pseudo_sum(h, it->proto, it->total - 20)));
    vnet_encode(it->vnet, &v);
    s->coalesced_writes += 1;
    s->coalesced_segments += it->segs;
  }
}

/* The iovecs of output packet i (a ROLE_SINGLE or ROLE_HEAD packet); returns their count
 * and, through *npkts, how many input packets it carries. */
static int gro_iov(vx_state *s, uint8_t *buf, const int32_t *offs, const int32_t *lens, int64_t i,
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

/* The plan works on a private copy of the packet list (st->po, st->pl), checked once more:
 * JS could change shared arrays meanwhile, and offs or lens may even be views of buf itself,
 * whose heads' headers the plan rewrites (then the offsets read after the rewrite would be
 * other numbers than the ones checked). 0, or -1 with a RangeError pending. */
static int gro_copy_list(napi_env env, const char *fn, vx_state *st, size_t buflen, const int32_t *offs,
                         const int32_t *lens, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    st->po[i] = READ_ONCE(offs[i]);
    st->pl[i] = READ_ONCE(lens[i]);
    if (st->po[i] < 0 || st->pl[i] < 0 || (int64_t)st->po[i] + st->pl[i] > (int64_t)buflen) {
      throw_fmt(env, 1, "%s: packet %lld changed while being written", fn, (long long)i);
      return -1;
    }
  }
  return 0;
}

/*
 * The offload half of devWrite (device.c parsed and bounds-checked the arguments): writes
 * inner IPv4 packets buf[offs[i] .. +lens[i]) to a device with virtio-net headers, joining
 * consecutive in-order TCP segments of one flow into super-packets with a GSO_TCPV4 header
 * (and UDP datagrams with a GSO_UDP_L4 one where the kernel takes them);
 * the others go with a zero header, each to its flow's queue when d is a multi-queue device. Returns how many input packets the kernel accepted, or
 * -1 with an exception pending (a fatal fd error before anything was written).
 */
int64_t gro_write(napi_env env, vx_state *st, int fd, dev_set *d, uint8_t *buf, size_t buflen,
                  const int32_t *offs, const int32_t *lens, int64_t n) {
  static const char *fn = "devWrite";
  int64_t i, accepted = 0;
  int32_t *po = st->po, *pl = st->pl;
  if (gro_copy_list(env, fn, st, buflen, offs, lens, n) != 0) return -1;
  gro_plan(st, buf, po, pl, n);
  for (i = 0; i < n; i++) {
    int cnt, npk;
    ssize_t r;
    if (st->role[i] == ROLE_MERGED) continue;
    cnt = gro_iov(st, buf, po, pl, i, &npk);
    do r = writev(dev_write_fd(d, fd, buf + po[i], (size_t)pl[i], npk), st->wiov, cnt); while (r < 0 && errno == EINTR);
    if (r >= 0) {
      accepted += npk;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (accepted == 0 && fd_fatal(errno)) {
      napi_value e = sys_error(env, errno, "write", "write fd %d", fd);
      if (e != NULL) napi_throw(env, e);
      return -1;
    }
    note_error(st, errno);
  }
  return accepted;
}

/* _groCoalesce(buf, offs, lens, n, out, outOffs, outLens[, udp]) -> packets
 * What devWrite with offloads would write (virtio_net_hdr + packet each), copied into `out` (tests).
 * Rewrites the headers of coalesced heads in buf, as devWrite does. -1: out too small.
 * udp: join UDP datagrams as on a kernel that takes GSO_UDP_L4 writes (default: as this
 * environment's last tunOpen with offloads found). */
napi_value vx_gro_coalesce(napi_env env, napi_callback_info info) {
  static const char *fn = "_groCoalesce";
  GET_ARGS_OPT(7, 8);
  int64_t n, i;
  uint8_t *buf, *out;
  int32_t *offs, *lens, *ooffs, *olens;
  size_t buflen, nout, nooffs, nolens, used = 0, w = 0;
  int uso = st->uso_write;
  bool udp = uso != 0;

  if (gro_args(env, fn, argv, &buf, &buflen, &offs, &lens, &n, 3) != 0) return NULL;
  ARG_TYPED(4, "out", napi_uint8_array, &out, &nout);
  ARG_TYPED(5, "outOffs", napi_int32_array, &ooffs, &nooffs);
  ARG_TYPED(6, "outLens", napi_int32_array, &olens, &nolens);
  if (argc > 7) ARG_BOOL(7, "udp", &udp);
  if (gro_copy_list(env, fn, st, buflen, offs, lens, n) != 0) return NULL;
  offs = st->po;
  lens = st->pl;
  st->uso_write = udp; /* for this plan only */
  gro_plan(st, buf, offs, lens, n);
  st->uso_write = uso;
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

