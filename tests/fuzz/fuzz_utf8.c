/*
 * fuzz_utf8.c -- libFuzzer target for the incremental UTF-8 validator.
 *
 * The first input byte seeds the choice of pieces; the rest is text, fed
 * byte by byte, whole, and in random pieces. Each time the validator must
 * agree with the reference below, RFC 3629's table read plainly: which byte
 * (if any) first makes the text invalid, and whether the text ends on a
 * character boundary. The piece holding that byte is the one that fails,
 * and every later feed fails too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../src/wire/ol_ws.h"

#define VALID -1 /* the whole text is UTF-8 */
#define TRUNC -2 /* valid so far, but it ends inside a character */

/*
 * RFC 3629 section 4:
 *
 *   UTF8-1 = %x00-7F
 *   UTF8-2 = %xC2-DF UTF8-tail
 *   UTF8-3 = %xE0 %xA0-BF UTF8-tail / %xE1-EC 2( UTF8-tail ) /
 *            %xED %x80-9F UTF8-tail / %xEE-EF 2( UTF8-tail )
 *   UTF8-4 = %xF0 %x90-BF 2( UTF8-tail ) / %xF1-F3 3( UTF8-tail ) /
 *            %xF4 %x80-8F 2( UTF8-tail )
 *
 * Returns the index of the first byte no valid text can have there, VALID,
 * or TRUNC.
 */
static long reference(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t tail;
        unsigned lo = 0x80, hi = 0xbf; /* the range of the byte after the lead */
        if (c <= 0x7f) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            tail = 1;
        } else if (c == 0xe0) {
            tail = 2;
            lo = 0xa0;
        } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
            tail = 2;
        } else if (c == 0xed) {
            tail = 2;
            hi = 0x9f;
        } else if (c == 0xf0) {
            tail = 3;
            lo = 0x90;
        } else if (c >= 0xf1 && c <= 0xf3) {
            tail = 3;
        } else if (c == 0xf4) {
            tail = 3;
            hi = 0x8f;
        } else {
            return (long)i;
        }
        for (size_t k = 1; k <= tail; k++) {
            if (i + k == n)
                return TRUNC;
            unsigned b = s[i + k];
            unsigned min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xbf;
            if (b < min || b > max)
                return (long)(i + k);
        }
        i += tail + 1;
    }
    return VALID;
}

static void fail(const char *how, long want, long got)
{
    fprintf(stderr, "%s: reference says %ld, validator %ld\n", how, want, got);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    long want = reference(data + 1, len);

    /* A byte at a time: the first failing feed is at the reference's byte. */
    ol_utf8 u;
    ol_utf8_init(&u);
    long failed = VALID;
    for (size_t i = 0; i < len; i++) {
        int r = ol_utf8_feed(&u, text + i, 1);
        if (failed != VALID && r != OL_WS_EUTF8)
            fail("byte by byte, a byte after the failure", want, (long)i);
        if (r != 0 && failed == VALID)
            failed = (long)i;
    }
    if (failed != (want >= 0 ? want : VALID))
        fail("byte by byte", want, failed);
    if ((ol_utf8_finish(&u) == 0) != (want == VALID))
        fail("finish, byte by byte", want, ol_utf8_finish(&u));

    /* Whole. */
    ol_utf8_init(&u);
    int r = ol_utf8_feed(&u, text, len);
    if ((r != 0) != (want >= 0) || (ol_utf8_finish(&u) == 0) != (want == VALID))
        fail("whole", want, r);

    /* Random pieces, including empty ones. */
    uint32_t x = data[0] * 2654435761u + 1;
    ol_utf8_init(&u);
    size_t at = 0;
    while (at < len) {
        x = x * 1103515245u + 12345u;
        size_t n = (x >> 16) % 40;
        if (n > len - at)
            n = len - at;
        r = ol_utf8_feed(&u, text + at, n);
        int due = want >= 0 && (size_t)want < at + n;
        if ((r != 0) != due)
            fail("in pieces", want, (long)(at + n));
        at += n;
    }
    if ((ol_utf8_finish(&u) == 0) != (want == VALID))
        fail("finish, in pieces", want, ol_utf8_finish(&u));
    return 0;
}
