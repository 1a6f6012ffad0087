/*
 * scripts/fuzz-native/harness.c: the packet code of the addon (gro.c, tso.c, csum.c, and the
 * sender thread's hand-over in sender.c) in a standalone program, driven with valid packets
 * and with mutations of them (bits flipped, bytes set to edge values, lengths cut or grown,
 * header fields made to lie), under AddressSanitizer + UBSan (or ThreadSanitizer). Every
 * packet sits between poisoned gaps, so a read one byte past its length is caught even
 * inside the one big buffer. Besides memory errors it checks what the output must be: every
 * joined packet's IP length equals the bytes written, every cut segment is an IPv4 packet
 * with a good header checksum and its own length, and the segments' payloads add up.
 * Every sendmmsg of tso.c goes through checked_sendmmsg first: each message's control data must
 * be what the kernel accepts, and the outer TOS (IP_TOS) of every datagram the kernel would cut
 * from it what the kernel's vxlan would set for that datagram (ref_outer_tos).
 * Run by scripts/fuzz-native/run (docs/native.md "Fuzzing").
 *
 *   harness gro|tso|send|thread SECONDS [SEED]
 */
#define sendmmsg checked_sendmmsg /* tso.c's sends (and <sys/socket.h>'s declaration): below */
#include "../../src/native/gro.c"
#include "../../src/native/tso.c"
#include "../../src/native/sender.c"
#undef sendmmsg
int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags);

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <arpa/inet.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define FAIL(...) do { fprintf(stderr, "harness: " __VA_ARGS__); fprintf(stderr, " (seed %llu, iteration %llu)\n", (unsigned long long)seed0, (unsigned long long)iter); abort(); } while (0)

static uint64_t rs, seed0, iter;
static int quick; /* thread target: small super-packets, so that batches change hands often */
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs >> 11); }
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }
static int chance(int pct) { return (int)below(100) < pct; }

/* ---------------------------------------------------------------- valid packets */

static void l4_fix(uint8_t *ip, size_t len) {
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  uint8_t proto = ip[9];
  size_t at;
  if (len < 20 || ihl < 20 || ihl > len) return;
  if (proto == IPPROTO_TCP) at = ihl + 16;
  else if (proto == IPPROTO_UDP) at = ihl + 6;
  else return;
  if (at + 2 > len) return;
  ip[at] = ip[at + 1] = 0;
  {
    uint16_t c = (uint16_t)~csum_fold(csum_add(ip + ihl, len - ihl, pseudo_sum(ip, proto, (uint32_t)(len - ihl))));
    if (proto == IPPROTO_UDP && c == 0) c = 0xffff;
    put_csum(ip + at, c);
  }
}

static void ip_fix(uint8_t *ip, size_t len) {
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  if (len >= 20 && ihl >= 20 && ihl <= len) ip_fix_csum(ip, ihl);
}

typedef struct { uint32_t src, dst; uint16_t sport, dport; uint32_t seq, ack; uint8_t proto, tsopt, ipopt, tos; } flow;

/* IPv4 + TCP/UDP with `payload` random bytes into p; returns the length. */
static size_t make_packet(uint8_t *p, flow *f, size_t payload, uint8_t flags) {
  size_t ihl = f->ipopt ? 24 : 20, thl = f->proto == IPPROTO_UDP ? 8 : (f->tsopt ? 32 : 20), len = ihl + thl + payload;
  uint8_t *l4 = p + ihl;
  memset(p, 0, ihl + thl);
  p[0] = (uint8_t)(0x40 | ihl / 4);
  p[1] = f->tos;
  put16(p + 2, (uint32_t)len);
  put16(p + 4, rnd());
  p[6] = 0x40;
  p[8] = 64;
  p[9] = f->proto;
  put32(p + 12, f->src);
  put32(p + 16, f->dst);
  if (f->ipopt) p[20] = 1, p[21] = 1, p[22] = 1, p[23] = 0;
  put16(l4, f->sport);
  put16(l4 + 2, f->dport);
  if (f->proto == IPPROTO_UDP) {
    put16(l4 + 4, (uint32_t)(8 + payload));
  } else {
    put32(l4 + 4, f->seq);
    put32(l4 + 8, f->ack);
    l4[12] = (uint8_t)((thl / 4) << 4);
    l4[13] = flags;
    put16(l4 + 14, 502);
    if (f->tsopt) { l4[20] = 1; l4[21] = 1; l4[22] = 8; l4[23] = 10; put32(l4 + 24, 1234); put32(l4 + 28, 5678); }
    f->seq += (uint32_t)payload;
  }
  for (size_t i = 0; i < payload; i++) l4[thl + i] = (uint8_t)rnd();
  ip_fix_csum(p, ihl);
  l4_fix(p, len);
  return len;
}

static const uint8_t edge[] = {0x00, 0x01, 0x02, 0x04, 0x05, 0x08, 0x0f, 0x10, 0x14, 0x18, 0x40, 0x41, 0x44, 0x45,
                               0x46, 0x4f, 0x50, 0x5f, 0x7f, 0x80, 0xf0, 0xfe, 0xff};
static const uint8_t hot[] = {0, 1, 2, 3, 6, 7, 9, 10, 20, 21, 24, 25, 26, 27, 32, 33, 36, 37};

/* Mutates packet p (len bytes, room for cap): returns the new length. */
static size_t mutate(uint8_t *p, size_t len, size_t cap) {
  int k = 1 + (int)below(4);
  while (k--) {
    switch (below(9)) {
    case 0: if (len) p[below((uint32_t)len)] ^= (uint8_t)(1u << below(8)); break;
    case 1: if (len) p[below((uint32_t)len)] = (uint8_t)rnd(); break;
    case 2: { size_t at = hot[below(sizeof hot)]; if (at < len) p[at] = edge[below(sizeof edge)]; } break;
    case 3: len = below((uint32_t)len + 1); break;                                           /* truncate anywhere */
    case 4: if (len > 0) len -= 1 + below(len < 8 ? (uint32_t)len : 8); break;              /* a few bytes short */
    case 5: { size_t add = 1 + below(64); if (len + add <= cap) { for (size_t i = 0; i < add; i++) p[len + i] = (uint8_t)rnd(); len += add; } } break;
    case 6: if (len >= 4) put16(p + 2, chance(50) ? (uint32_t)len + below(3) - 1 : rnd()); break; /* IP length lies */
    case 7: if (len >= 28) put16(p + 24, chance(50) ? (uint32_t)len - 20 + below(3) - 1 : rnd()); break; /* UDP length lies */
    default: if (len >= 34) p[32] = (uint8_t)(below(16) << 4 | (p[32] & 15)); break;       /* TCP data offset */
    }
  }
  if (chance(60)) { ip_fix(p, len); l4_fix(p, len); } /* past the checksum checks, to the logic behind them */
  return len;
}

/* ---------------------------------------------------------------- a batch in one buffer */

#define GAP 64
typedef struct { uint8_t *buf; size_t size; int32_t offs[OF_PKTS], lens[OF_PKTS]; int n; } batch;

/* Lays out packets (pk[i], ln[i]) with `front` bytes free before each, poisoned gaps between. */
static void batch_make(batch *b, uint8_t **pk, const size_t *ln, int n, size_t front) {
  size_t at = GAP, size = GAP;
  for (int i = 0; i < n; i++) size += ((front + ln[i] + 63) & ~(size_t)63) + GAP;
  b->buf = malloc(size);
  b->size = size;
  b->n = n;
  POISON(b->buf, size);
  for (int i = 0; i < n; i++) {
    UNPOISON(b->buf + at, front + ln[i]);
    memcpy(b->buf + at, pk[i], front + ln[i]);
    b->offs[i] = (int32_t)at;
    b->lens[i] = (int32_t)(front + ln[i]);
    at += ((front + ln[i] + 63) & ~(size_t)63) + GAP;
  }
}

static void batch_free(batch *b) {
  UNPOISON(b->buf, b->size);
  free(b->buf);
}

static vx_state *st;
static uint8_t *pool[OF_PKTS];
static size_t pool_len[OF_PKTS];
#define PKT_CAP (MAX_IP + 128)

static void state_init(void) {
  st = calloc(1, sizeof *st);
  st->sets[0].scratch = malloc(OF_SCRATCH);
  st->tx = &st->sets[0];
  for (int i = 0; i < OF_PKTS; i++) pool[i] = malloc(PKT_CAP);
}

static void random_flow(flow *f) {
  f->src = 0x0af40102 + below(3);
  f->dst = 0x0af4640a + below(2);
  f->sport = (uint16_t)(40000 + below(3));
  f->dport = (uint16_t)(5201 + below(2));
  f->seq = rnd();
  f->ack = rnd();
  f->proto = chance(70) ? IPPROTO_TCP : IPPROTO_UDP;
  f->tsopt = (uint8_t)chance(50);
  f->ipopt = (uint8_t)chance(5);
  /* Not-ECT half the time, else an ECN field (ECT(1), ECT(0), CE) and now and then a DSCP */
  f->tos = chance(50) ? 0 : (uint8_t)(chance(70) ? below(4) : rnd());
}

/* ---------------------------------------------------------------- GRO */

static uint8_t *gro_out;

static void fuzz_gro(void) {
  int n = 1 + (int)below(chance(80) ? 48 : OF_PKTS);
  flow flows[4];
  int nf = 1 + (int)below(4), mutated = chance(70);
  size_t mss = chance(50) ? 1448 : 1 + below(2000);
  batch b;
  int64_t carried = 0;
  for (int f = 0; f < nf; f++) random_flow(&flows[f]);
  for (int i = 0; i < n; i++) {
    flow *f = &flows[below((uint32_t)nf)];
    size_t payload = chance(85) ? mss : below((uint32_t)mss + 1);
    uint8_t flags = chance(90) ? TCP_ACK : chance(50) ? (TCP_ACK | TCP_PSH) : (uint8_t)rnd();
    if (payload > 65535 - 60) payload = 65535 - 60;
    if (chance(3)) f->seq += 1000; /* out of order */
    pool_len[i] = make_packet(pool[i], f, payload, flags);
    if (mutated && chance(20)) pool_len[i] = mutate(pool[i], pool_len[i], PKT_CAP);
  }
  batch_make(&b, pool, pool_len, n, 0);
  st->uso_write = chance(50);
  gro_plan(st, b.buf, b.offs, b.lens, n);
  for (int64_t i = 0; i < n; i++) {
    int cnt, npk;
    size_t used = 0;
    if (st->role[i] == ROLE_MERGED) continue;
    cnt = gro_iov(st, b.buf, b.offs, b.lens, i, &npk);
    if (cnt > GRO_MAX_SEGS + 2) FAIL("gro: %d iovecs", cnt);
    for (int c = 0; c < cnt; c++) {
      if (used + st->wiov[c].iov_len > 2 * PKT_CAP) FAIL("gro: output packet %lld longer than %d bytes", (long long)i, 2 * PKT_CAP);
      memcpy(gro_out + used, st->wiov[c].iov_base, st->wiov[c].iov_len);
      used += st->wiov[c].iov_len;
    }
    carried += npk;
    if (st->role[i] == ROLE_HEAD) {
      const uint8_t *ip = gro_out + VNET_LEN;
      size_t iplen = used - VNET_LEN;
      vnet_hdr v;
      vnet_decode(gro_out, &v);
      if (iplen > MAX_IP) FAIL("gro: joined packet of %zu bytes", iplen);
      if (be16(ip + 2) != iplen) FAIL("gro: joined packet says %u bytes, %zu written", be16(ip + 2), iplen);
      if (!ip_csum_ok(ip, 20)) FAIL("gro: joined packet's IP checksum is wrong");
      if (v.gso_size == 0 || v.hdr_len > iplen || (size_t)v.csum_start + v.csum_offset + 2 > iplen)
        FAIL("gro: virtio_net_hdr outside the packet (gso %u hdr %u csum %u+%u, %zu bytes)", v.gso_size, v.hdr_len,
             v.csum_start, v.csum_offset, iplen);
      if ((iplen - v.hdr_len + v.gso_size - 1) / v.gso_size != (size_t)npk)
        FAIL("gro: %d packets joined, the kernel would cut %zu", npk, (iplen - v.hdr_len + v.gso_size - 1) / v.gso_size);
      /* What the other direction would do with it: cut it again (tso.c), as the round trip of
       * test/native/offload.test.ts, here on mutated input too. */
      {
        copy_sink sink;
        static uint8_t *cut;
        static int32_t co[GRO_MAX_SEGS + 1], cl[GRO_MAX_SEGS + 1];
        int stop = 0;
        size_t tot = 0;
        if (cut == NULL) cut = malloc(4 * PKT_CAP);
        sink = (copy_sink){cut, 4 * PKT_CAP, 0, co, cl, GRO_MAX_SEGS + 1, 0};
        if (queue_datagram(st, -1, gro_out + VNET_LEN, iplen, 0, &v, 0, 0, 0, &sink, &stop) != 0)
          FAIL("gro: a joined packet (%d segments) that tso refuses", npk);
        if ((int)sink.n != npk) FAIL("gro: %d joined, cut into %zu", npk, sink.n);
        for (size_t s = 0; s < sink.n; s++) tot += (size_t)cl[s] - v.hdr_len;
        if (tot != iplen - v.hdr_len) FAIL("gro: cut payload %zu, joined %zu", tot, iplen - v.hdr_len);
        /* and each cut piece is the packet that was joined there: payload, sequence number */
        {
          int32_t j = (int32_t)i;
          for (size_t s = 0; s < sink.n; s++, j = st->link[j]) {
            const uint8_t *o = b.buf + b.offs[j], *c = cut + co[s];
            size_t ol = (size_t)b.lens[j], cl2 = (size_t)cl[s];
            if (j < 0) FAIL("gro: chain shorter than its cut");
            if (ol - v.hdr_len != cl2 - v.hdr_len || memcmp(o + v.hdr_len, c + v.hdr_len, ol - v.hdr_len) != 0)
              FAIL("gro: piece %zu of a joined packet is not packet %d's payload", s, j);
            if (o[9] == IPPROTO_TCP && (be32(o + 24) != be32(c + 24) || memcmp(o + 12, c + 12, 8) || memcmp(o + 20, c + 20, 4) ||
                                        memcmp(o + 28, c + 28, 4) || o[32] != c[32] || memcmp(o + 34, c + 34, 2) ||
                                        memcmp(o + 40, c + 40, v.hdr_len - 40)))
              FAIL("gro: piece %zu's TCP header differs from packet %d's", s, j);
            if (o[9] == IPPROTO_UDP && (memcmp(o + 12, c + 12, 8) || memcmp(o + 20, c + 20, 4)))
              FAIL("gro: piece %zu's UDP header differs from packet %d's", s, j);
            if (o[1] != c[1] || o[8] != c[8] || o[9] != c[9] || (o[6] & 0xe0) != (c[6] & 0xe0))
              FAIL("gro: piece %zu's IP header differs from packet %d's", s, j);
          }
        }
      }
    }
  }
  if (carried != n) FAIL("gro: %lld of %d packets written", (long long)carried, n);
  batch_free(&b);
}

/* ---------------------------------------------------------------- TSO (_tsoSegment's path) */

#define ENC 22
/* VXLAN (flags 0x08) and inner Ethernet in front: mostly IPv4, some IPv6 (the outer ECN field
 * is read there too), the rest anything. */
static void fill_encap(uint8_t *e) {
  for (int i = 0; i < ENC; i++) e[i] = (uint8_t)rnd();
  if (chance(90)) e[0] = 0x08;
  if (chance(90)) e[20] = 0x08, e[21] = 0x00;
  else if (chance(50)) e[20] = 0x86, e[21] = 0xdd;
}

/* A packet read from the device: encap, then IPv4 (often a super-packet), and its header. */
static size_t make_read(uint8_t *p, uint8_t *vn) {
  flow f;
  vnet_hdr h = {0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0};
  size_t len, payload, hl;
  uint32_t gso;
  random_flow(&f);
  f.ipopt = (uint8_t)chance(10);
  hl = (f.ipopt ? 24 : 20) + (f.proto == IPPROTO_UDP ? 8 : f.tsopt ? 32 : 20);
  gso = chance(60) ? 1448 : chance(50) ? 1 + below(9000) : (uint32_t)edge[below(sizeof edge)] << (below(2) * 8);
  payload = chance(10) ? below(2000) : below((uint32_t)(MAX_IP - hl) + 1);
  if (chance(5)) payload = MAX_IP - hl;
  if (quick) { /* many small hand-overs: the thread target */
    gso = 1448;
    payload = below(8 * 1448);
  }
  fill_encap(p);
  len = make_packet(p + ENC, &f, payload, chance(70) ? TCP_ACK | TCP_PSH : (uint8_t)rnd());
  if (chance(80)) {
    h.gso_type = f.proto == IPPROTO_UDP ? VIRTIO_NET_HDR_GSO_UDP_L4 : VIRTIO_NET_HDR_GSO_TCPV4;
    h.gso_size = (uint16_t)gso;
    h.hdr_len = (uint16_t)hl;
    if (chance(10)) h.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
  }
  if (chance(50)) {
    /* the partial checksum the kernel leaves */
    size_t ihl = (size_t)(p[ENC] & 15) * 4;
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.csum_start = (uint16_t)ihl;
    h.csum_offset = f.proto == IPPROTO_UDP ? 6 : 16;
    put_csum(p + ENC + ihl + h.csum_offset, csum_fold(pseudo_sum(p + ENC, f.proto, (uint32_t)(len - ihl))));
  }
  if (chance(50)) len = mutate(p + ENC, len, PKT_CAP - ENC);
  if (chance(20)) {
    switch (below(6)) {
    case 0: h.gso_size = (uint16_t)rnd(); break;
    case 1: h.gso_size = 0; break;
    case 2: h.csum_start = (uint16_t)rnd(); break;
    case 3: h.csum_offset = (uint16_t)rnd(); break;
    case 4: h.gso_type = (uint8_t)rnd(); break;
    default: h.hdr_len = (uint16_t)rnd(); h.flags = (uint8_t)rnd(); break;
    }
  }
  vnet_encode(vn, &h);
  return ENC + len;
}

static uint8_t *tso_out;
static int32_t tso_offs[MAX_IP + 1], tso_lens[MAX_IP + 1];
#define TSO_OUT (MAX_IP + 1) * (ENC + 60 + 60 + 1) + 65536

static void fuzz_tso(void) {
  uint8_t vn[VNET_LEN], *pk[1];
  size_t ln[1];
  batch b;
  vnet_hdr h;
  copy_sink sink = {tso_out, TSO_OUT, 0, tso_offs, tso_lens, MAX_IP + 1, 0};
  int stop = 0, r;
  ln[0] = make_read(pool[0], vn);
  pk[0] = pool[0];
  /* encap and packet back to back, poisoned around: the cut copies the encap from in front */
  batch_make(&b, pk, ln, 1, 0);
  vnet_decode(vn, &h);
  r = queue_datagram(st, -1, b.buf + b.offs[0], (size_t)b.lens[0], ENC, &h, 0, 0, 0, &sink, &stop);
  if (r == 0) {
    size_t payload = 0, hl = 0;
    for (size_t s = 0; s < sink.n; s++) {
      const uint8_t *d = tso_out + tso_offs[s], *ip = d + ENC;
      size_t dl = (size_t)tso_lens[s];
      if ((h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) == VIRTIO_NET_HDR_GSO_NONE) {
        if (sink.n != 1 || dl != (size_t)b.lens[0] || memcmp(d, b.buf + b.offs[0], dl) != 0) FAIL("tso: a plain packet changed");
      } else {
        if (dl < ENC + 20 || memcmp(d, b.buf + b.offs[0], ENC) != 0) FAIL("tso: datagram %zu without its encap", s);
        if (be16(ip + 2) != dl - ENC) FAIL("tso: datagram %zu says %u bytes, is %zu", s, be16(ip + 2), dl - ENC);
        size_t ihl = (size_t)(ip[0] & 15) * 4, thl = ip[9] == IPPROTO_UDP ? 8 : (size_t)(ip[ihl + 12] >> 4) * 4;
        if (!ip_csum_ok(ip, ihl)) FAIL("tso: datagram %zu has a bad IP checksum", s);
        if (ip[9] == IPPROTO_TCP ? !tcp_csum_ok(ip, ihl, dl - ENC) : !udp_csum_ok(ip, ihl, dl - ENC))
          FAIL("tso: datagram %zu has a bad L4 checksum", s);
        if (dl - ENC - ihl - thl > h.gso_size) FAIL("tso: datagram %zu carries more than gso_size", s);
        hl = ihl + thl;
        payload += dl - ENC - hl;
      }
    }
    if (hl && payload + hl != (size_t)b.lens[0] - ENC) FAIL("tso: %zu payload bytes cut from %zu", payload, (size_t)b.lens[0] - ENC - hl);
  }
  batch_free(&b);
}

/* ---------------------------------------------------------------- what reaches sendmmsg */

/* The outer TOS the kernel's vxlan sets, with flannel's configuration (tos 0), for VXLAN
 * datagram d of len bytes: ip_tunnel_ecn_encap(0, inner) = INET_ECN_encapsulate(0, the inner
 * packet's DS field) by the inner EtherType; written apart from tso.c's outer_tos on purpose.
 * Anything that is not a VXLAN frame of ours (flags 0x08) or is too short: 0. */
static int ref_outer_tos(const uint8_t *d, size_t len) {
  unsigned ds;
  if (len < 8 + 14 + 2 || d[0] != 0x08) return 0;
  switch ((unsigned)d[20] << 8 | d[21]) {
  case 0x0800: ds = d[23]; break;                                      /* iph->tos */
  case 0x86dd: ds = (((unsigned)d[22] << 8 | d[23]) >> 4) & 0xff; break; /* ipv6_get_dsfield */
  default: return 0;
  }
  return (ds & 3) == 3 ? 2 : (int)(ds & 3); /* CE goes as ECT(0), the DSCP stays 0 */
}

/* n bytes at offset `at` of message h's data (its iovs back to back) into out. */
static void msg_bytes_at(const struct msghdr *h, size_t at, uint8_t *out, size_t n) {
  for (size_t i = 0; i < h->msg_iovlen && n > 0; i++) {
    size_t l = h->msg_iov[i].iov_len;
    if (at >= l) { at -= l; continue; }
    size_t k = l - at < n ? l - at : n;
    memcpy(out, (const uint8_t *)h->msg_iov[i].iov_base + at, k);
    out += k;
    n -= k;
    at = 0;
  }
}

/* Counted by checked_sendmmsg (from either thread): messages with IP_TOS, of them with
 * UDP_SEGMENT and of those joined datagrams (an iov each), and datagrams sent with an IP_TOS
 * and without one. */
static uint64_t seen_tos_msgs, seen_tos_gso, seen_tos_joined, seen_tos_dgrams, seen_plain_dgrams;
static uint64_t seen_rx; /* datagrams drain checked as received (over UDP only) */

/* Message h's control data as the kernel reads it (for_each_cmsghdr, CMSG_OK, udp_cmsg_send,
 * ip_cmsg_send): NULL and the UDP_SEGMENT size (0: none) and the IP_TOS (-1: none), or what
 * the kernel would refuse or tso.c never means to send. */
static const char *control_of(const struct msghdr *h, unsigned *seg, int *tos) {
  const uint8_t *c = h->msg_control;
  size_t len = h->msg_controllen, at = 0;
  *seg = 0;
  *tos = -1;
  if (len == 0) return NULL;
  if (c == NULL) return "msg_controllen without msg_control";
  if ((uintptr_t)c % _Alignof(struct cmsghdr) != 0) return "misaligned control data";
  while (at + sizeof(struct cmsghdr) <= len) {
    const struct cmsghdr *cm = (const struct cmsghdr *)(c + at);
    if (cm->cmsg_len < sizeof *cm || cm->cmsg_len > len - at) return "a cmsg_len outside msg_controllen (EINVAL)";
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_SEGMENT) {
      uint16_t v;
      if (cm->cmsg_len != CMSG_LEN(sizeof v)) return "UDP_SEGMENT not of 2 bytes (EINVAL)";
      if (*seg != 0) return "two UDP_SEGMENT";
      memcpy(&v, CMSG_DATA(cm), sizeof v);
      if (v == 0) return "UDP_SEGMENT 0";
      *seg = v;
    } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TOS) {
      int v;
      if (cm->cmsg_len == CMSG_LEN(sizeof(int))) memcpy(&v, CMSG_DATA(cm), sizeof v);
      else if (cm->cmsg_len == CMSG_LEN(1)) v = *CMSG_DATA(cm);
      else return "IP_TOS neither an int nor a byte (EINVAL)";
      if (v < 0 || v > 255) return "IP_TOS outside 0..255 (EINVAL)";
      if (v == 0) return "IP_TOS 0 (the socket's own TOS is 0 already)";
      if (*tos >= 0) return "two IP_TOS";
      *tos = v;
    } else {
      return "a control message tso.c does not send";
    }
    at += CMSG_ALIGN(cm->cmsg_len);
  }
  if (at != len) return "msg_controllen is not the sum of its messages' CMSG_SPACE";
  return NULL;
}

/* tso.c's sendmmsg: sends, then checks each message the kernel took or refused (the first
 * r, or the first one that failed: what the next call gets again is checked again then;
 * checking all vlen every time made the refusal loop of the AF_UNIX pair quadratic). Runs on
 * the sender thread too. */
int checked_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags) {
  int r = sendmmsg(fd, msgs, vlen, flags);
  for (unsigned m = 0; m < vlen && m < (r > 0 ? (unsigned)r : 1u); m++) {
    const struct msghdr *h = &msgs[m].msg_hdr;
    unsigned seg;
    int tos;
    size_t total = 0, piece;
    const char *bad = control_of(h, &seg, &tos);
    if (bad != NULL) FAIL("sendmmsg: message %u: %s", m, bad);
    for (size_t i = 0; i < h->msg_iovlen; i++) total += h->msg_iov[i].iov_len;
    if (h->msg_iovlen > 1 && seg == 0) FAIL("sendmmsg: message %u: %zu iovs without UDP_SEGMENT go as one datagram", m, (size_t)h->msg_iovlen);
    if (tos >= 0) {
      __atomic_add_fetch(&seen_tos_msgs, 1, __ATOMIC_RELAXED);
      if (seg != 0) __atomic_add_fetch(&seen_tos_gso, 1, __ATOMIC_RELAXED);
      if (h->msg_iovlen > 1) __atomic_add_fetch(&seen_tos_joined, 1, __ATOMIC_RELAXED);
    }
    /* the datagrams the kernel cuts from it: seg bytes each, the last maybe shorter */
    piece = seg != 0 ? seg : total;
    for (size_t at = 0; at == 0 || at < total; at += piece) {
      uint8_t head[24];
      size_t len = total - at < piece ? total - at : piece;
      int want;
      msg_bytes_at(h, at, head, len < sizeof head ? len : sizeof head);
      want = ref_outer_tos(head, len);
      if ((tos < 0 ? 0 : tos) != want)
        FAIL("sendmmsg: message %u (%zu iovs, UDP_SEGMENT %u), datagram at %zu (%zu bytes): outer TOS %d, the kernel's vxlan sets %d",
             m, (size_t)h->msg_iovlen, seg, at, len, tos < 0 ? 0 : tos, want);
      __atomic_add_fetch(tos < 0 ? &seen_plain_dgrams : &seen_tos_dgrams, 1, __ATOMIC_RELAXED);
      if (piece == 0) break;
    }
  }
  return r;
}

/* ---------------------------------------------------------------- udpSend (tso_send), optional thread */

static int tx_fd = -1, rx_fd = -1;
static uint16_t rx_port;

/* The underlay: a UDP socket to one on 127.0.0.1 (run it in a network namespace of its own:
 * `unshare -n`, lo up), or with FUZZ_UNIX=1 a pair of AF_UNIX datagram sockets, which touches
 * no network: every send then fails (EINVAL: an IPv4 address), which runs the refusal and
 * the per-datagram fallback paths instead. */
static void sockets_open(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  int big = 4 << 20;
  if (getenv("FUZZ_UNIX") != NULL && strcmp(getenv("FUZZ_UNIX"), "1") == 0) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) < 0) { perror("socketpair"); exit(2); }
    tx_fd = sv[0];
    rx_fd = sv[1];
    rx_port = 9;
    return;
  }
  tx_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  rx_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(rx_fd, IPPROTO_IP, IP_RECVTOS, &(int){1}, sizeof(int)); /* drain checks each outer TOS */
  if (bind(rx_fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(rx_fd, (struct sockaddr *)&a, &al) < 0)
    fprintf(stderr, "harness: no socket on 127.0.0.1 (lo down?): sends will fail, which is exercised too\n");
  rx_port = ntohs(a.sin_port);
}

/* Reads what arrived; over UDP each datagram's outer TOS, as the kernel sent it, must be what
 * the kernel's vxlan would have set (the check before the send is of what tso.c asked for). */
static void drain(void) {
  static uint8_t sink[65536];
  for (;;) {
    rx_ctl_buf ctl;
    struct iovec iov = {sink, sizeof sink};
    struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t r = recvmsg(rx_fd, &h, MSG_DONTWAIT);
    if (r <= 0) break;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&h); cm != NULL; cm = CMSG_NXTHDR(&h, cm)) {
      if (cm->cmsg_level != IPPROTO_IP || cm->cmsg_type != IP_TOS) continue;
      if (ref_outer_tos(sink, (size_t)r) != *CMSG_DATA(cm))
        FAIL("received a datagram of %zd bytes with outer TOS %d, the kernel's vxlan sets %d", r, *CMSG_DATA(cm), ref_outer_tos(sink, (size_t)r));
      seen_rx++;
    }
  }
}

static uint8_t vnets[OF_PKTS * VNET_LEN];
static int32_t vidx[OF_PKTS];
static uint32_t addrs[OF_PKTS];
static uint16_t ports[OF_PKTS];

static void fuzz_send(int thread) {
  int n = 1 + (int)below(thread ? 8 : chance(80) ? 32 : 400);
  /* without vnet headers (a plain TUN or TAP, the keepalive, a STUN request): any length */
  int plain = chance(15);
  flow last;
  size_t last_payload = 0;
  batch b;
  quick = thread;
  int64_t sent;
  if (thread && st->snd == NULL && sender_start(st) != 0) FAIL("cannot start the sender thread");
  if (!thread && st->snd != NULL) sender_stop(st);
  /* A refused UDP_SEGMENT (every one, on the AF_UNIX pair) turns it off for good: turned on
   * again most of the time, so that joins, segments and the one-by-one split keep running. */
  if (chance(80)) st->gso_off = 0;
  for (int i = 0; i < n; i++) {
    if (plain && chance(10)) {
      /* short, or no VXLAN frame (a STUN request starts 0x00 0x01) */
      pool_len[i] = chance(50) ? below(30) : 20 + below(60);
      for (size_t k = 0; k < pool_len[i]; k++) pool[i][k] = (uint8_t)rnd();
      if (chance(50) && pool_len[i] > 0) pool[i][0] = chance(50) ? 0x08 : 0x00;
      memset(vnets + i * VNET_LEN, 0, VNET_LEN);
    } else if (plain || chance(50)) {
      /* a small plain datagram: a ping, a keystroke; often as long as the one before, and of
       * its flow with maybe another ECN field, so that it may join its message or must not */
      flow f;
      size_t payload = below(200);
      if (i > 0 && last_payload > 0 && chance(60)) {
        payload = last_payload;
        f = last;
        if (chance(30)) f.tos = (uint8_t)(chance(80) ? below(4) : rnd());
      } else {
        random_flow(&f);
      }
      fill_encap(pool[i]);
      pool_len[i] = ENC + make_packet(pool[i] + ENC, &f, payload, TCP_ACK);
      last = f;
      last_payload = payload;
      memset(vnets + i * VNET_LEN, 0, VNET_LEN);
    } else {
      pool_len[i] = make_read(pool[i], vnets + i * VNET_LEN);
    }
    vidx[i] = i;
    addrs[i] = chance(90) ? INADDR_LOOPBACK : 0x7f000002;
    ports[i] = chance(95) ? rx_port : 9;
  }
  batch_make(&b, pool, pool_len, n, 0);
  if (plain) sent = tso_send(NULL, st, tx_fd, b.buf, b.size, b.offs, b.lens, addrs, ports, NULL, 0, NULL, 0, n);
  else sent = tso_send(NULL, st, tx_fd, b.buf, b.size, b.offs, b.lens, addrs, ports, vnets, sizeof vnets, vidx, ENC, n);
  if (sent < 0 || sent > n) FAIL("send: %lld of %d sent", (long long)sent, n);
  /* with the thread the batch's bytes may still be in its hands: copied, so they are ours
   * to free now; poison them to catch a set that still points here */
  batch_free(&b);
  if (chance(10)) sender_sync(st);
  if (thread && chance(2)) sender_stop(st); /* and started again by the next call */
  drain();
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "gro";
  double secs = argc > 2 ? atof(argv[2]) : 10;
  struct timespec t0, t;
  rs = seed0 = argc > 3 ? strtoull(argv[3], NULL, 0) : ((uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid() << 20) | 1;
  fprintf(stderr, "harness %s: %.0f s, seed %llu\n", what, secs, (unsigned long long)seed0);
  state_init();
  gro_out = malloc(2 * PKT_CAP);
  tso_out = malloc(TSO_OUT);
  if (strcmp(what, "send") == 0 || strcmp(what, "thread") == 0) sockets_open();
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (iter = 0;; iter++) {
    if ((iter & 63) == 0) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 >= secs) break;
    }
    if (strcmp(what, "gro") == 0) fuzz_gro();
    else if (strcmp(what, "tso") == 0) fuzz_tso();
    else if (strcmp(what, "send") == 0) fuzz_send(0);
    else if (strcmp(what, "thread") == 0) fuzz_send(1);
    else { fprintf(stderr, "harness: gro|tso|send|thread SECONDS [SEED]\n"); return 2; }
  }
  sender_stop(st);
  fprintf(stderr, "harness %s: %llu iterations, no error (last errno %d; tso %.0f/%.0f segs, uso %.0f, coalesced %.0f writes, csum rejects %.0f, errors %.0f, handed %.0f)\n",
          what, (unsigned long long)iter, st->last_errno, st->tso_packets, st->tso_segments, st->uso_packets, st->coalesced_writes,
          st->csum_rejects, st->error_count, st->snd_handed);
  if (seen_tos_msgs + seen_plain_dgrams > 0)
    fprintf(stderr, "harness %s: sendmmsg checked: %llu messages with IP_TOS (%llu with UDP_SEGMENT, %llu of joined datagrams), %llu datagrams with an outer ECN field, %llu Not-ECT\n",
            what, (unsigned long long)seen_tos_msgs, (unsigned long long)seen_tos_gso, (unsigned long long)seen_tos_joined,
            (unsigned long long)seen_tos_dgrams, (unsigned long long)seen_plain_dgrams);
  if (seen_rx > 0) fprintf(stderr, "harness %s: %llu datagrams received with the outer TOS the kernel's vxlan sets\n", what, (unsigned long long)seen_rx);
  return 0;
}
