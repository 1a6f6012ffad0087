/*
 * csum.h: Internet checksums (RFC 1071) and the virtio_net_hdr that a TUN device with
 * IFF_VNET_HDR puts in front of every packet. Pure functions, no state: used by the TSO
 * send path (tso.c) and the GRO write path (gro.c).
 */
#ifndef VXEDGE_CSUM_H
#define VXEDGE_CSUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <linux/virtio_net.h>

#ifndef VIRTIO_NET_HDR_GSO_UDP_L4 /* headers older than Linux 6.2 */
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* The per-byte and per-segment helpers are inline: the TSO and GRO loops call them for
 * every segment, and a call across files costs ~3 % of those paths (callgrind). */
/*
 * The bulk of a sum, 32 bytes at a time: every native 32-bit word of p[0, len & ~31) added to
 * acc, which stays a plain 64-bit sum (a packet's words cannot carry out of it). With SIMD
 * where every CPU of the architecture has it: on arm64 NEON's pairwise add-and-widen
 * (uadalp) takes 16 bytes per instruction; on x86-64 SSE2, through GCC's vector types, the
 * halves of two 64-bit lanes. The loop per 32 bytes (GCC 12, -O2): 6 instructions on arm64
 * against 17 scalar; 16 on x86-64 against 24, with fewer dependent adds. 32-bit ARM keeps the
 * scalar loop (Debian's armhf assumes no NEON).
 */
#if defined(__aarch64__) && defined(__ARM_NEON) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <arm_neon.h>
static inline uint64_t csum_add32s(const uint8_t *p, size_t len, uint64_t acc) {
  uint64x2_t s0 = vdupq_n_u64(0), s1 = vdupq_n_u64(0);
  for (; len >= 32; p += 32, len -= 32) {
    s0 = vpadalq_u32(s0, vreinterpretq_u32_u8(vld1q_u8(p)));
    s1 = vpadalq_u32(s1, vreinterpretq_u32_u8(vld1q_u8(p + 16)));
  }
  s0 = vaddq_u64(s0, s1);
  return acc + vgetq_lane_u64(s0, 0) + vgetq_lane_u64(s0, 1);
}
#elif defined(__x86_64__) && defined(__SSE2__)
typedef uint64_t csum_v2u64 __attribute__((vector_size(16)));
static inline uint64_t csum_add32s(const uint8_t *p, size_t len, uint64_t acc) {
  const csum_v2u64 low = {0xffffffffu, 0xffffffffu};
  csum_v2u64 s0 = {0, 0}, s1 = {0, 0}, s2 = {0, 0}, s3 = {0, 0};
  for (; len >= 32; p += 32, len -= 32) {
    csum_v2u64 x, y;
    memcpy(&x, p, 16);
    memcpy(&y, p + 16, 16);
    s0 += x & low;
    s1 += x >> 32;
    s2 += y & low;
    s3 += y >> 32;
  }
  s0 += s1 + s2 + s3;
  return acc + s0[0] + s0[1];
}
#else
static inline uint64_t csum_add32s(const uint8_t *p, size_t len, uint64_t acc) {
  for (; len >= 32; p += 32, len -= 32) {
    uint64_t a, b, c, d;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    memcpy(&c, p + 16, 8);
    memcpy(&d, p + 24, 8);
    acc += (a & 0xffffffffu) + (a >> 32) + (b & 0xffffffffu) + (b >> 32) + (c & 0xffffffffu) +
           (c >> 32) + (d & 0xffffffffu) + (d >> 32);
  }
  return acc;
}
#endif

/*
 * RFC 1071 sums in host byte order: adding native 16-bit words and folding gives the
 * byte-swapped big-endian sum on a little-endian host, so a folded sum stored back with
 * memcpy lands as the right bytes on either kind of host (RFC 1071 §2 (B)). `p` must
 * start at an even offset of the checksummed range; only the last chunk may be odd.
 * Sums under 32 bytes (headers, small datagrams) never set up the SIMD registers.
 */
static inline uint64_t csum_add(const uint8_t *p, size_t len, uint64_t acc) {
  if (len >= 32) {
    acc = csum_add32s(p, len, acc);
    p += len & ~(size_t)31;
    len &= 31;
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

static inline uint16_t csum_fold(uint64_t acc) {
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  return (uint16_t)acc;
}

/* The native 16-bit word that memcpy reads from v stored big-endian: what csum_add adds
 * for a 16-bit field holding v, so a field's value can be summed without storing it first. */
static inline uint64_t be16_word(uint32_t v) {
  uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  uint16_t w;
  memcpy(&w, b, 2);
  return w;
}

/* The IPv4 pseudo-header's sum: the addresses from the packet, protocol and length as
 * values (a 12-byte copy summed back would make the loads wait for its stores). */
static inline uint64_t pseudo_sum(const uint8_t *ip, uint8_t proto, uint32_t l4len) {
  return csum_add(ip + 12, 8, 0) + be16_word(proto) + be16_word(l4len);
}

static inline void put_csum(uint8_t *at, uint16_t native) {
  memcpy(at, &native, 2);
}

void ip_fix_csum(uint8_t *ip, size_t ihl);
bool ip_csum_ok(const uint8_t *ip, size_t ihl);
bool tcp_csum_ok(const uint8_t *ip, size_t ihl, size_t len);
/* A UDP checksum of 0 means none was computed (IPv4): that is fine too. */
bool udp_csum_ok(const uint8_t *ip, size_t ihl, size_t len);

/* The header as the TUN driver writes it: host byte order (we never set TUNSETVNETLE/BE). */
typedef struct {
  uint8_t flags, gso_type;
  uint16_t hdr_len, gso_size, csum_start, csum_offset;
} vnet_hdr;

void vnet_decode(const uint8_t *b, vnet_hdr *h);
void vnet_encode(uint8_t *b, const vnet_hdr *h);
/* The datagrams a packet of `len` bytes read behind header `b` makes on the wire: a
 * super-packet ceil(len / gso_size) (its headers counted in: an estimate from above that
 * TypeScript makes the same way, proto/vnet.ts vnetWireSegments), anything else 1. */
static inline int64_t vnet_wire_segments(const uint8_t *b, size_t len) {
  vnet_hdr h;
  vnet_decode(b, &h);
  if ((h.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN) == VIRTIO_NET_HDR_GSO_NONE || h.gso_size == 0) return 1;
  return (int64_t)((len + h.gso_size - 1) / h.gso_size);
}
/* Completes the partial checksum of a NEEDS_CSUM packet in place. 0, or -1 (bad offsets). */
int complete_csum(uint8_t *pkt, size_t len, const vnet_hdr *h);

#endif
