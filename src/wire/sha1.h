/*
 * sha1.h -- SHA-1 (FIPS 180-4) and base64 (RFC 4648), as much of each as the
 * WebSocket handshake needs. Internal: not part of the public headers.
 *
 * SHA-1 is broken for collision resistance; Sec-WebSocket-Accept uses it
 * only to prove that the server read the key, which it still does.
 */
#ifndef OL_SHA1_H
#define OL_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define OL__SHA1_LEN 20

typedef struct ol__sha1 {
    uint32_t h[5];
    uint64_t total; /* bytes hashed */
    unsigned char block[64];
} ol__sha1;

void ol__sha1_init(ol__sha1 *s);
void ol__sha1_update(ol__sha1 *s, const void *data, size_t n);
void ol__sha1_final(ol__sha1 *s, unsigned char digest[OL__SHA1_LEN]);

/* Standard base64 with padding: writes 4 * ceil(n / 3) bytes, returns that. */
size_t ol__base64(const unsigned char *in, size_t n, char *out);

/* The value of a base64 digit, or -1 for any other byte. */
int ol__base64_digit(unsigned char c);

#endif /* OL_SHA1_H */
