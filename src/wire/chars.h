/*
 * chars.h -- byte classes of RFC 9110/9112, shared by the wire layer.
 * Internal: not part of the public header.
 */
#ifndef OL_CHARS_H
#define OL_CHARS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define OL__TOKEN  0x01u /* tchar */
#define OL__TARGET 0x02u /* visible ASCII: what a request-target may hold */
#define OL__VALUE  0x04u /* field-vchar, SP, HTAB: what a field value may hold */
#define OL__HEX    0x08u /* HEXDIG */
#define OL__QDTEXT 0x10u /* qdtext of a quoted-string */

extern const unsigned char ol__chars[256];

static inline int ol__is(unsigned char c, unsigned cls)
{
    return (ol__chars[c] & cls) != 0;
}

/* ASCII lower-casing; bytes >= 0x80 are left alone. */
static inline unsigned char ol__lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* Case-insensitive comparison of s[0..len) with a lower-case literal. */
static inline int ol__ieq(const char *s, size_t len, const char *lower, size_t lower_len)
{
    if (len != lower_len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (ol__lower((unsigned char)s[i]) != (unsigned char)lower[i])
            return 0;
    return 1;
}

#define OL__IEQ(s, len, lit) ol__ieq((s), (len), lit, sizeof(lit) - 1)

static inline int ol__hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ol__lower(c);
    return c - 'a' + 10;
}

/*
 * Scans for the two long runs in a head, request targets and field values:
 * 16 bytes at a time with SSE2 (baseline on x86-64), else 8 at a time with
 * the "has a byte less than n" word trick, which may report false positives
 * (the byte loop then decides) but never misses a byte. Neither reads past
 * end: the tail is scanned a byte at a time.
 */
#if defined(__SSE2__)
#include <emmintrin.h>

/* Mask of the bytes of v that are <= max (unsigned) or equal to eq. */
static inline int ol__mask_le_or_eq(__m128i v, char max, char eq)
{
    __m128i le = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(max)), v);
    return _mm_movemask_epi8(_mm_or_si128(le, _mm_cmpeq_epi8(v, _mm_set1_epi8(eq))));
}

/* First byte at or after p whose 16-byte block has a bit in the mask. */
#define OL__SCAN16(p, end, mask_expr)                                                              \
    while ((end) - (p) >= 16) {                                                                    \
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p));                           \
        int m = (mask_expr);                                                                       \
        if (m) {                                                                                   \
            (p) += __builtin_ctz((unsigned)m);                                                     \
            break;                                                                                 \
        }                                                                                          \
        (p) += 16;                                                                                 \
    }
#else
#define OL__ONES  UINT64_C(0x0101010101010101)
#define OL__HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t ol__has_less(uint64_t w, unsigned n)
{
    return (w - OL__ONES * n) & ~w & OL__HIGHS;
}

static inline uint64_t ol__has_byte(uint64_t w, unsigned char c)
{
    uint64_t x = w ^ (OL__ONES * c);
    return (x - OL__ONES) & ~x & OL__HIGHS;
}
#endif

/* First byte in [p, end) that is not a field-value byte (VCHAR, obs-text, SP, HTAB). */
static inline const char *ol__scan_value(const char *p, const char *end)
{
    for (;;) {
#if defined(__SSE2__)
        OL__SCAN16(p, end, ol__mask_le_or_eq(v, 0x1f, 0x7f));
#else
        for (uint64_t w; end - p >= 8; p += 8) {
            memcpy(&w, p, 8);
            if (ol__has_less(w, 0x20) | ol__has_byte(w, 0x7f))
                break;
        }
#endif
        while (p < end && ol__is((unsigned char)*p, OL__VALUE) && *p != '\t')
            p++;
        if (p == end || *p != '\t') /* HTAB is rare but allowed: step over it */
            return p;
        p++;
    }
}

/* First byte in [p, end) outside 0x21-0x7E. */
static inline const char *ol__scan_target(const char *p, const char *end)
{
#if defined(__SSE2__)
    /* Bytes >= 0x80 compare as negative: treat them as "<= 0x20" by sign. */
    OL__SCAN16(p, end, ol__mask_le_or_eq(v, 0x20, 0x7f) | _mm_movemask_epi8(v));
#else
    for (uint64_t w; end - p >= 8; p += 8) {
        memcpy(&w, p, 8);
        if (ol__has_less(w, 0x21) | ol__has_byte(w, 0x7f) | (w & OL__HIGHS))
            break;
    }
#endif
    while (p < end && ol__is((unsigned char)*p, OL__TARGET))
        p++;
    return p;
}

#endif /* OL_CHARS_H */
