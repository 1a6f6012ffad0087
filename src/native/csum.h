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

/* Sums `len` bytes into acc in host byte order (see csum.c); fold with csum_fold. */
uint64_t csum_add(const uint8_t *p, size_t len, uint64_t acc);
uint16_t csum_fold(uint64_t acc);
/* The IPv4 pseudo header of an L4 segment of `l4len` bytes, summed. */
uint64_t pseudo_sum(const uint8_t *ip, uint8_t proto, uint32_t l4len);
/* Stores a folded sum at `at` (2 bytes), as the bytes the wire wants on any host. */
void put_csum(uint8_t *at, uint16_t native);
void ip_fix_csum(uint8_t *ip, size_t ihl);
bool ip_csum_ok(const uint8_t *ip, size_t ihl);
bool tcp_csum_ok(const uint8_t *ip, size_t ihl, size_t len);

/* The header as the TUN driver writes it: host byte order (we never set TUNSETVNETLE/BE). */
typedef struct {
  uint8_t flags, gso_type;
  uint16_t hdr_len, gso_size, csum_start, csum_offset;
} vnet_hdr;

void vnet_decode(const uint8_t *b, vnet_hdr *h);
void vnet_encode(uint8_t *b, const vnet_hdr *h);
/* Completes the partial checksum of a NEEDS_CSUM packet in place. 0, or -1 (bad offsets). */
int complete_csum(uint8_t *pkt, size_t len, const vnet_hdr *h);

#endif
