/* csum.c: see csum.h. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <string.h>

#include "csum.h"

void ip_fix_csum(uint8_t *ip, size_t ihl) {
  ip[10] = ip[11] = 0;
  put_csum(ip + 10, (uint16_t)~csum_fold(csum_add(ip, ihl, 0)));
}

bool ip_csum_ok(const uint8_t *ip, size_t ihl) {
  return csum_fold(csum_add(ip, ihl, 0)) == 0xffff;
}

/* The L4 checksum (with the pseudo-header) of an IPv4 packet sums to all ones. */
static inline bool l4_sum_ok(const uint8_t *ip, size_t ihl, size_t len, uint8_t proto) {
  uint64_t acc = pseudo_sum(ip, proto, (uint32_t)(len - ihl));
  return csum_fold(csum_add(ip + ihl, len - ihl, acc)) == 0xffff;
}

bool tcp_csum_ok(const uint8_t *ip, size_t ihl, size_t len) {
  return l4_sum_ok(ip, ihl, len, 6 /* TCP */);
}

bool udp_csum_ok(const uint8_t *ip, size_t ihl, size_t len) {
  return (ip[ihl + 6] == 0 && ip[ihl + 7] == 0) || l4_sum_ok(ip, ihl, len, 17 /* UDP */);
}

void vnet_decode(const uint8_t *b, vnet_hdr *h) {
  h->flags = b[0];
  h->gso_type = b[1];
  memcpy(&h->hdr_len, b + 2, 2);
  memcpy(&h->gso_size, b + 4, 2);
  memcpy(&h->csum_start, b + 6, 2);
  memcpy(&h->csum_offset, b + 8, 2);
}

void vnet_encode(uint8_t *b, const vnet_hdr *h) {
  b[0] = h->flags;
  b[1] = h->gso_type;
  memcpy(b + 2, &h->hdr_len, 2);
  memcpy(b + 4, &h->gso_size, 2);
  memcpy(b + 6, &h->csum_start, 2);
  memcpy(b + 8, &h->csum_offset, 2);
}

/* The field at csum_start + csum_offset holds the pseudo-header sum, to be summed with
 * everything from csum_start. */
int complete_csum(uint8_t *pkt, size_t len, const vnet_hdr *h) {
  size_t cs = h->csum_start, at = (size_t)h->csum_start + h->csum_offset;
  uint16_t c;
  if (cs >= len || at + 2 > len) return -1;
  c = (uint16_t)~csum_fold(csum_add(pkt + cs, len - cs, 0));
  if (c == 0 && h->csum_offset == 6) c = 0xffff; /* UDP: 0 means "no checksum" */
  put_csum(pkt + at, c);
  return 0;
}
