/* csum.c: see csum.h. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <string.h>

#include "csum.h"

/*
 * RFC 1071 sums in host byte order: adding native 16-bit words and folding gives the
 * byte-swapped big-endian sum on a little-endian host, so a folded sum stored back with
 * memcpy lands as the right bytes on either kind of host (RFC 1071 §2 (B)). `p` must
 * start at an even offset of the checksummed range; only the last chunk may be odd.
 */
uint64_t csum_add(const uint8_t *p, size_t len, uint64_t acc) {
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

uint16_t csum_fold(uint64_t acc) {
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  return (uint16_t)acc;
}

uint64_t pseudo_sum(const uint8_t *ip, uint8_t proto, uint32_t l4len) {
  uint8_t ph[12];
  memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = proto;
  ph[10] = (uint8_t)(l4len >> 8);
  ph[11] = (uint8_t)l4len;
  return csum_add(ph, sizeof ph, 0);
}

void put_csum(uint8_t *at, uint16_t native) {
  memcpy(at, &native, 2);
}

void ip_fix_csum(uint8_t *ip, size_t ihl) {
  ip[10] = ip[11] = 0;
  put_csum(ip + 10, (uint16_t)~csum_fold(csum_add(ip, ihl, 0)));
}

bool ip_csum_ok(const uint8_t *ip, size_t ihl) {
  return csum_fold(csum_add(ip, ihl, 0)) == 0xffff;
}

bool tcp_csum_ok(const uint8_t *ip, size_t ihl, size_t len) {
  uint64_t acc = pseudo_sum(ip, 6 /* TCP */, (uint32_t)(len - ihl));
  return csum_fold(csum_add(ip + ihl, len - ihl, acc)) == 0xffff;
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
