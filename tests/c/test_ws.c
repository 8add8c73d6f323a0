/*
 * test_ws.c -- the WebSocket wire layer, one row per rule: frame headers,
 * unmasking, UTF-8, close payloads, the handshake, the permessage-deflate
 * negotiation, and whole client streams through tests/c/ws_stream.c,
 * compressed or not.
 *
 * Every parse row runs whole, split in two at every byte boundary and fed a
 * byte at a time: a header parsed from each prefix, UTF-8 fed in pieces,
 * streams fed in pieces (so payloads are unmasked and inflated in pieces at
 * every offset). Stream rows are written with a zero masking key, so their
 * payloads read as sent; each also runs masked again with a real key.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../../src/wire/sha1.h"
#include "ws_stream.h"

#define K   "\0\0\0\0"         /* a zero masking key: the payload as written */
#define KEY "\x37\xfa\x21\x3d" /* the key of RFC 6455 section 5.7's examples */

static const uint8_t rfc_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* 25 and 125 printable bytes, for payloads at the length boundaries. */
#define B25  "abcdefghijklmnopqrstuvwxy"
#define B125 B25 B25 B25 B25 B25

/* ------------------------------------------------------------------------ */
/* Frame headers                                                            */

typedef struct hrow {
    const char *input;
    size_t len;
    unsigned flags;
    int result; /* header length, or an error */
    const char *render;
    const char *why;
} hrow;

#define H(input, ...)                                                                              \
    {                                                                                              \
        input, sizeof(input) - 1, __VA_ARGS__                                                      \
    }

#define DEF OL_WS_DEFLATE
#define IN  OL_WS_IN_MESSAGE

/* clang-format off */
static const hrow header_rows[] = {
    H("\x81\x85" KEY "\x7f\x9f\x4d\x51\x58", 0, 6, "fin=1 rsv1=0 op=1 len=5 mask=37fa213d",
      "RFC 6455 5.7: a masked Hello"),
    H("\x01\x83" K, 0, 6, "fin=0 rsv1=0 op=1 len=3 mask=00000000", "first fragment"),
    H("\x00\x80" K, IN, 6, "fin=0 rsv1=0 op=0 len=0 mask=00000000", "empty middle fragment"),
    H("\x80\x82" K, IN, 6, "fin=1 rsv1=0 op=0 len=2 mask=00000000", "last fragment"),
    H("\x89\x80" K, 0, 6, "fin=1 rsv1=0 op=9 len=0 mask=00000000", "empty ping"),
    H("\x89\x80" K, IN, 6, "fin=1 rsv1=0 op=9 len=0 mask=00000000", "ping inside a message"),
    H("\x8a\xfd" K, 0, 6, "fin=1 rsv1=0 op=10 len=125 mask=00000000", "longest control frame"),
    H("\x88\x82" K, IN, 6, "fin=1 rsv1=0 op=8 len=2 mask=00000000", "close inside a message"),
    H("\x82\xfd" K, 0, 6, "fin=1 rsv1=0 op=2 len=125 mask=00000000", "longest 7-bit length"),
    H("\x82\xfe\x00\x7e" K, 0, 8, "fin=1 rsv1=0 op=2 len=126 mask=00000000", "16-bit length"),
    H("\x82\xfe\xff\xff" KEY, 0, 8, "fin=1 rsv1=0 op=2 len=65535 mask=37fa213d", "longest 16-bit"),
    H("\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00" K, 0, 14,
      "fin=1 rsv1=0 op=2 len=65536 mask=00000000", "64-bit length"),
    H("\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff" K, 0, 14,
      "fin=1 rsv1=0 op=2 len=9223372036854775807 mask=00000000", "longest 64-bit length"),
    H("\x82\xfe\x00\x05" K, 0, 8, "fin=1 rsv1=0 op=2 len=5 mask=00000000",
      "a length not in its shortest form is still one length"),
    H("\x82\xff\x00\x00\x00\x00\x00\x00\x00\x05" K, 0, 14,
      "fin=1 rsv1=0 op=2 len=5 mask=00000000", "5 in 64 bits"),
    H("\xc1\x80" K, DEF, 6, "fin=1 rsv1=1 op=1 len=0 mask=00000000", "RSV1 marks a compressed text"),
    H("\x42\x80" K, DEF, 6, "fin=0 rsv1=1 op=2 len=0 mask=00000000",
      "RSV1 on the first fragment of a binary"),
    H("\x80\x80" K, DEF | IN, 6, "fin=1 rsv1=0 op=0 len=0 mask=00000000",
      "continuation of a compressed message has RSV1 clear"),

    H("\x83\x80" K, 0, OL_WS_EOPCODE, NULL, "opcode 3"),
    H("\x87\x80" K, 0, OL_WS_EOPCODE, NULL, "opcode 7"),
    H("\x8b\x80" K, 0, OL_WS_EOPCODE, NULL, "opcode 11"),
    H("\x8f\x80" K, 0, OL_WS_EOPCODE, NULL, "opcode 15"),
    H("\x05", 0, OL_WS_EOPCODE, NULL, "reserved opcode seen in the first byte"),
    H("\xf3\x80" K, 0, OL_WS_EOPCODE, NULL, "reserved opcode and RSV bits: the opcode first"),
    H("\x09\x80" K, 0, OL_WS_ECONTROL_FRAGMENTED, NULL, "ping without FIN"),
    H("\x08\x80" K, 0, OL_WS_ECONTROL_FRAGMENTED, NULL, "close without FIN"),
    H("\x0a\x80" K, 0, OL_WS_ECONTROL_FRAGMENTED, NULL, "pong without FIN"),
    H("\x49\x80" K, DEF, OL_WS_ECONTROL_FRAGMENTED, NULL, "fragmented control before its RSV1"),
    H("\xc1\x80" K, 0, OL_WS_ERSV, NULL, "RSV1 without permessage-deflate"),
    H("\xa1\x80" K, 0, OL_WS_ERSV, NULL, "RSV2"),
    H("\x91\x80" K, 0, OL_WS_ERSV, NULL, "RSV3"),
    H("\xe1\x80" K, DEF, OL_WS_ERSV, NULL, "RSV2 with permessage-deflate"),
    H("\xc0\x80" K, DEF | IN, OL_WS_ERSV, NULL, "RSV1 on a continuation (RFC 7692 6.1)"),
    H("\xc9\x80" K, DEF, OL_WS_ERSV, NULL, "RSV1 on a ping"),
    H("\xc8\x80" K, DEF, OL_WS_ERSV, NULL, "RSV1 on a close"),
    H("\x80\x80" K, 0, OL_WS_EFRAGMENT, NULL, "continuation without a message"),
    H("\x00\x80" K, 0, OL_WS_EFRAGMENT, NULL, "continuation without FIN or message"),
    H("\x81\x80" K, IN, OL_WS_EFRAGMENT, NULL, "text inside a fragmented message"),
    H("\x02\x80" K, IN, OL_WS_EFRAGMENT, NULL, "binary fragment inside a fragmented message"),
    H("\x81\x05Hello", 0, OL_WS_EUNMASKED, NULL, "client frame without a mask"),
    H("\x89\x7e\x00\x7e", 0, OL_WS_EUNMASKED, NULL, "the mask bit is checked first"),
    H("\x89\xfe\x00\x7d" K, 0, OL_WS_ECONTROL_LEN, NULL, "control frame with a 16-bit length"),
    H("\x88\xff", 0, OL_WS_ECONTROL_LEN, NULL, "control frame with a 64-bit length"),
    H("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00" K, 0, OL_WS_ELENGTH, NULL, "length of 2^63"),
    H("\x82\xff\xff", 0, OL_WS_ELENGTH, NULL, "top bit seen at its byte"),
};
/* clang-format on */

static void render_frame(char *out, size_t cap, const ol_ws_frame *f)
{
    snprintf(out, cap, "fin=%u rsv1=%u op=%u len=%llu mask=%02x%02x%02x%02x", f->fin, f->rsv1,
             f->opcode, (unsigned long long)f->length, f->mask[0], f->mask[1], f->mask[2],
             f->mask[3]);
}

static void check_header_row(const hrow *r, guard_buf *g)
{
    /* Each prefix, then the whole: a prefix shorter than the header says
     * OL_INCOMPLETE or gives the row's error early; one that holds the
     * header parses it the same as the whole. */
    for (size_t n = 0; n <= r->len; n++) {
        ol_ws_frame f;
        memset(&f, 0xaa, sizeof(f));
        int got = ol_ws_parse_header(guard_place(g, r->input, n), n, r->flags, &f);
        if (r->result < 0) {
            int ok = n == r->len ? got == r->result : got == r->result || got == OL_INCOMPLETE;
            CHECK(ok, "%s: %zu of %zu bytes give %d (%s)", r->why, n, r->len, got,
                  ol_ws_strerror(got));
            continue;
        }
        if (n < (size_t)r->result) {
            CHECK(got == OL_INCOMPLETE, "%s: %zu bytes give %d, want incomplete", r->why, n, got);
            continue;
        }
        char text[128];
        render_frame(text, sizeof(text), &f);
        CHECK(got == r->result && f.header_len == (size_t)got && strcmp(text, r->render) == 0,
              "%s: %zu bytes give %d: %s", r->why, n, got, text);
    }
}

/* Every length encoding, through whole streams: lengths at the edges of
 * the 7-, 16- and 64-bit forms, payload masked for real. */
static void check_length_encodings(void)
{
    static const size_t lengths[] = {0, 1, 125, 126, 127, 65535, 65536, 70001};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        size_t n = lengths[i];
        char head[OL_WS_MAX_SERVER_HEADER];
        size_t hl = ol_ws_frame_header(head, 1, 0, OL_WS_BINARY, n);
        head[1] = (char)(head[1] | 0x80); /* a client frame: set MASK, add the key */
        bytes frame = {0}, want = {0};
        bytes_put(&frame, head, hl);
        bytes_put(&frame, (const char *)rfc_key, 4);
        bytes_puts(&want, "binary ");
        for (size_t j = 0; j < n; j++) {
            char c = (char)('a' + j % 26);
            bytes_put(&want, &c, 1);
            c = (char)(c ^ rfc_key[j % 4]);
            bytes_put(&frame, &c, 1);
        }
        bytes_puts(&want, "\n");
        CHECK(hl == (n < 126 ? 2u : n < 65536 ? 4u : 10u), "length %zu: %zu header bytes", n, hl);

        ol_ws_frame f;
        int r = ol_ws_parse_header(frame.p, frame.len, 0, &f);
        CHECK(r == (int)hl + 4 && f.length == n, "length %zu parses to %llu", n,
              (unsigned long long)f.length);

        size_t splits[3] = {1, hl + 3, frame.len - 1};
        for (size_t nsplits = 0; nsplits <= 3; nsplits += 3) {
            ws_stream s;
            ws_stream_init(&s, WS_PLAIN);
            ws_stream_run(&s, frame.p, frame.len, splits, nsplits);
            CHECK(s.phase == WS_OPEN && s.messages == 1 && bytes_eq(&s.out, want.p, want.len),
                  "length %zu (%zu splits): phase %d error %d, %zu bytes out", n, nsplits, s.phase,
                  s.error, s.out.len);
            ws_stream_free(&s);
        }
        bytes_free(&frame);
        bytes_free(&want);
    }
}

/* ------------------------------------------------------------------------ */
/* Unmasking                                                                */

static void check_unmask(void)
{
    char hello[] = "\x7f\x9f\x4d\x51\x58";
    ol_ws_unmask(hello, 5, rfc_key, 0);
    CHECK(memcmp(hello, "Hello", 5) == 0, "RFC 6455 5.7 example unmasks to Hello");

    /* Every length to 80, every start alignment within 16 bytes, offsets
     * in each phase of the key, including ones past 2^32 and 2^64 - 3,
     * against a byte-at-a-time XOR. The bytes around must not change. */
    static const uint64_t offsets[] = {
        0, 1, 2, 3, 4, 5, 6, 7, 4099, UINT64_C(0x100000001), UINT64_C(0xfffffffffffffffd)};
    unsigned char buf[128], want[128];
    int bad = 0;
    for (size_t o = 0; o < sizeof(offsets) / sizeof(offsets[0]); o++) {
        for (size_t align = 0; align < 16; align++) {
            for (size_t len = 0; len <= 80; len++) {
                for (size_t i = 0; i < sizeof(buf); i++)
                    buf[i] = want[i] = (unsigned char)(i * 31 + len);
                for (size_t i = 0; i < len; i++)
                    want[align + i] ^= rfc_key[(offsets[o] + i) % 4];
                ol_ws_unmask((char *)buf + align, len, rfc_key, offsets[o]);
                if (memcmp(buf, want, sizeof(buf)) != 0 && bad++ < 5)
                    CHECK(0, "unmask offset %llu, alignment %zu, length %zu",
                          (unsigned long long)offsets[o], align, len);
            }
        }
    }
    CHECK(bad == 0, "%d unmask cases wrong", bad);

    /* In pieces: unmasking the pieces at their offsets is unmasking the whole. */
    unsigned char whole[100], parts[100];
    for (size_t i = 0; i < sizeof(whole); i++)
        whole[i] = parts[i] = (unsigned char)(i * 7);
    ol_ws_unmask((char *)whole, sizeof(whole), rfc_key, 0);
    for (size_t at = 0, step = 1; at < sizeof(parts); at += step, step++) {
        size_t n = sizeof(parts) - at < step ? sizeof(parts) - at : step;
        ol_ws_unmask((char *)parts + at, n, rfc_key, at);
    }
    CHECK(memcmp(whole, parts, sizeof(whole)) == 0, "unmasked in pieces of 1, 2, 3, ...");
}

/* ------------------------------------------------------------------------ */
/* Server frame headers                                                     */

typedef struct srow {
    int fin, rsv1, opcode;
    uint64_t length;
    const char *want;
    size_t want_len;
    const char *why;
} srow;

#define S(fin, rsv1, op, length, want, why)                                                        \
    {                                                                                              \
        fin, rsv1, op, length, want, sizeof(want) - 1, why                                         \
    }

/* clang-format off */
static const srow serialize_rows[] = {
    S(1, 0, OL_WS_TEXT, 5, "\x81\x05", "text"),
    S(1, 1, OL_WS_TEXT, 5, "\xc1\x05", "compressed text"),
    S(0, 1, OL_WS_BINARY, 0, "\x42\x00", "first fragment of a compressed binary"),
    S(1, 0, OL_WS_CONT, 3, "\x80\x03", "last fragment"),
    S(1, 0, OL_WS_BINARY, 125, "\x82\x7d", "longest 7-bit"),
    S(1, 0, OL_WS_BINARY, 126, "\x82\x7e\x00\x7e", "shortest 16-bit"),
    S(1, 0, OL_WS_BINARY, 65535, "\x82\x7e\xff\xff", "longest 16-bit"),
    S(1, 0, OL_WS_BINARY, 65536, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", "shortest 64-bit"),
    S(1, 0, OL_WS_BINARY, UINT64_C(0x7fffffffffffffff), "\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff",
      "longest 64-bit"),
    S(1, 0, OL_WS_CLOSE, 2, "\x88\x02", "close"),
    S(1, 0, OL_WS_PING, 125, "\x89\x7d", "longest ping"),
    S(1, 0, OL_WS_PONG, 0, "\x8a\x00", "empty pong"),
    S(1, 0, OL_WS_BINARY, UINT64_C(0x8000000000000000), "", "2^63 has no encoding"),
    S(1, 0, OL_WS_PING, 126, "", "control frame over 125"),
    S(0, 0, OL_WS_CLOSE, 0, "", "control frame without FIN"),
    S(1, 1, OL_WS_PING, 0, "", "RSV1 on a control frame"),
    S(1, 1, OL_WS_CONT, 0, "", "RSV1 on a continuation"),
    S(1, 0, 3, 0, "", "reserved opcode"),
    S(1, 0, 16, 0, "", "not an opcode"),
    S(1, 0, -1, 0, "", "negative opcode"),
};
/* clang-format on */

static void check_serializer(void)
{
    for (size_t i = 0; i < sizeof(serialize_rows) / sizeof(serialize_rows[0]); i++) {
        const srow *r = &serialize_rows[i];
        char out[OL_WS_MAX_SERVER_HEADER];
        size_t n = ol_ws_frame_header(out, r->fin, r->rsv1, r->opcode, r->length);
        CHECK(n == r->want_len && memcmp(out, r->want, n) == 0, "%s: %zu bytes", r->why, n);
    }
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */

#define VALID -1 /* the whole text is UTF-8 */
#define TRUNC -2 /* valid so far, but it ends inside a character */

typedef struct urow {
    const char *input;
    size_t len;
    int fail_at; /* index of the byte that makes the text invalid, VALID or TRUNC */
    const char *why;
} urow;

#define U(input, ...)                                                                              \
    {                                                                                              \
        input, sizeof(input) - 1, __VA_ARGS__                                                      \
    }

/* clang-format off */
static const urow utf8_rows[] = {
    U("", VALID, "empty"),
    U("Hello-\x7f", VALID, "ASCII"),
    U("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", VALID, "kosme (Autobahn 6.2)"),
    U("\x00", VALID, "NUL is a character"),
    U("\xc2\x80", VALID, "U+0080, first of two bytes"),
    U("\xdf\xbf", VALID, "U+07FF, last of two bytes"),
    U("\xe0\xa0\x80", VALID, "U+0800, first of three bytes"),
    U("\xed\x9f\xbf", VALID, "U+D7FF, before the surrogates"),
    U("\xee\x80\x80", VALID, "U+E000, after the surrogates"),
    U("\xef\xbb\xbf", VALID, "BOM"),
    U("\xef\xbf\xbf", VALID, "U+FFFF, a noncharacter, is valid"),
    U("\xf0\x90\x80\x80", VALID, "U+10000, first of four bytes"),
    U("\xf3\xbf\xbf\xbf", VALID, "U+FFFFF"),
    U("\xf4\x8f\xbf\xbf", VALID, "U+10FFFF, the last code point"),
    U("\xf0\x9f\x98\x80 ok", VALID, "emoji"),

    U("\x80", 0, "lone continuation byte"),
    U("\xbf", 0, "lone continuation byte BF"),
    U("ab\x80", 2, "continuation byte after ASCII"),
    U("\xc0", 0, "C0 can only start an overlong"),
    U("\xc1\xbf", 0, "C1 can only start an overlong"),
    U("\xc0\xaf", 0, "overlong '/' fails at its lead"),
    U("\xe0\x80\xaf", 1, "overlong three-byte '/' fails at the second byte"),
    U("\xe0\x9f\xbf", 1, "overlong U+07FF"),
    U("\xf0\x80\x80\xaf", 1, "overlong four-byte '/'"),
    U("\xf0\x8f\xbf\xbf", 1, "overlong U+FFFF"),
    U("\xed\xa0\x80", 1, "U+D800, first surrogate"),
    U("\xed\xbf\xbf", 1, "U+DFFF, last surrogate"),
    U("\xed\xa0\x80\xed\xb0\x80", 1, "a surrogate pair is no character"),
    U("\xf4\x90\x80\x80", 1, "U+110000, past the last code point"),
    U("\xf5\x80\x80\x80", 0, "F5 leads only past U+10FFFF"),
    U("\xf7\xbf\xbf\xbf", 0, "F7"),
    U("\xf8\x88\x80\x80\x80", 0, "five-byte form"),
    U("\xfc\x84\x80\x80\x80\x80", 0, "six-byte form"),
    U("\xfe", 0, "FE"),
    U("\xff", 0, "FF"),
    U("\xc2\x41", 1, "two-byte lead then ASCII"),
    U("\xe1\x80\x41", 2, "three-byte lead, one continuation, then ASCII"),
    U("\xf1\x80\x80\x41", 3, "four-byte lead, two continuations, then ASCII"),
    U("\xc2\xc2\x80", 1, "a lead where a continuation is due"),
    U("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", 12,
      "Autobahn 6.3.1: fails at the surrogate's second byte"),
    U("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64", 12,
      "Autobahn 6.4.1: fails at F4 90"),
    U("0123456789abcdef0123456789\xff", 26, "after a run of ASCII"),

    U("\xc2", TRUNC, "two-byte lead at the end"),
    U("\xe0", TRUNC, "E0 at the end"),
    U("\xed", TRUNC, "ED at the end"),
    U("\xe1\x80", TRUNC, "three-byte character missing its last byte"),
    U("\xf0\x90\x80", TRUNC, "four-byte character missing its last byte"),
    U("\xf4", TRUNC, "F4 at the end"),
    U("\xf4\x8f", TRUNC, "F4 8F at the end"),
    U("Hello\xce", TRUNC, "text cut inside its last character"),
};
/* clang-format on */

/* Feed text split at `at`; returns the result of the piece that failed
 * (-1 first, -2 second) or 0, then finish's result in *finish. */
static int feed_split(const char *text, size_t len, size_t at, int *finish)
{
    ol_utf8 u;
    ol_utf8_init(&u);
    int a = ol_utf8_feed(&u, text, at);
    int b = ol_utf8_feed(&u, text + at, len - at);
    *finish = ol_utf8_finish(&u);
    if (a != 0)
        return b == OL_WS_EUTF8 ? -1 : -3; /* an error must stay */
    return b != 0 ? -2 : 0;
}

static void check_utf8_text(const char *text, size_t len, int fail_at, const char *why,
                            guard_buf *g)
{
    const char *p = guard_place(g, text, len);
    /* A byte at a time: the failing byte is the one the row names. */
    ol_utf8 u;
    ol_utf8_init(&u);
    int failed = VALID;
    for (size_t i = 0; i < len; i++) {
        int r = ol_utf8_feed(&u, p + i, 1);
        if (r != 0 && failed == VALID)
            failed = (int)i;
        if (failed != VALID && r != OL_WS_EUTF8)
            CHECK(0, "%s: byte %zu accepted after the failure", why, i);
    }
    CHECK(failed == (fail_at >= 0 ? fail_at : VALID), "%s: fails at byte %d, want %d", why, failed,
          fail_at);
    CHECK((ol_utf8_finish(&u) == 0) == (fail_at == VALID), "%s: finish byte by byte", why);
    /* Whole, and split at every byte: the failure is in the piece that
     * holds the failing byte. */
    for (size_t at = 0; at <= len; at++) {
        int finish;
        int r = feed_split(p, len, at, &finish);
        int want = fail_at < 0 ? 0 : (size_t)fail_at < at ? -1 : -2;
        CHECK(r == want && (finish == 0) == (fail_at == VALID),
              "%s: split at %zu gives %d (finish %d), want %d", why, at, r, finish, want);
    }
}

static void check_utf8(guard_buf *g)
{
    static const char suffix[] = "0123456789abcdefghij";
    char text[128];
    for (size_t i = 0; i < sizeof(utf8_rows) / sizeof(utf8_rows[0]); i++) {
        const urow *r = &utf8_rows[i];
        check_utf8_text(r->input, r->len, r->fail_at, r->why, g);
        /* Behind 0-40 bytes of ASCII and before 20 more, so that the row
         * falls at every position of the 16- and 8-byte ASCII scans. A
         * character cut short by ASCII fails at the ASCII byte. */
        for (size_t k = 0; k <= 40; k++) {
            memset(text, 'a', k);
            memcpy(text + k, r->input, r->len);
            memcpy(text + k + r->len, suffix, sizeof(suffix) - 1);
            int fail = r->fail_at >= 0       ? (int)k + r->fail_at
                       : r->fail_at == TRUNC ? (int)(k + r->len)
                                             : VALID;
            check_utf8_text(text, k + r->len + sizeof(suffix) - 1, fail, r->why, g);
        }
    }

    /* Every code point, encoded: all valid but the surrogates. */
    int bad = 0;
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        unsigned char e[4];
        size_t n;
        if (cp < 0x80) {
            e[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            e[0] = (unsigned char)(0xc0 | cp >> 6);
            e[1] = (unsigned char)(0x80 | (cp & 0x3f));
            n = 2;
        } else if (cp < 0x10000) {
            e[0] = (unsigned char)(0xe0 | cp >> 12);
            e[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            e[2] = (unsigned char)(0x80 | (cp & 0x3f));
            n = 3;
        } else {
            e[0] = (unsigned char)(0xf0 | cp >> 18);
            e[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
            e[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            e[3] = (unsigned char)(0x80 | (cp & 0x3f));
            n = 4;
        }
        ol_utf8 u;
        ol_utf8_init(&u);
        int ok = ol_utf8_feed(&u, (const char *)e, n) == 0 && ol_utf8_finish(&u) == 0;
        if (ok != !(cp >= 0xd800 && cp <= 0xdfff) && bad++ < 5)
            CHECK(0, "U+%04X: %s", cp, ok ? "accepted" : "refused");
    }
    CHECK(bad == 0, "%d code points judged wrong", bad);
}

/* ------------------------------------------------------------------------ */
/* Close frames                                                             */

typedef struct crow {
    const char *payload;
    size_t len;
    int result;
    int code;
    const char *reason;
    const char *why;
} crow;

#define C(payload, ...)                                                                            \
    {                                                                                              \
        payload, sizeof(payload) - 1, __VA_ARGS__                                                  \
    }

/* clang-format off */
static const crow close_rows[] = {
    C("", 0, OL_WS_CLOSE_NO_STATUS, "", "empty: no status"),
    C("\x03\xe8", 0, 1000, "", "code only"),
    C("\x03\xe8" "bye", 0, 1000, "bye", "code and reason"),
    C("\x0f\xa0\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 0, 4000,
      "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", "UTF-8 reason"),
    C("\x03\xe8" B25 B25 B25 B25 "abcdefghijklmnopqrstuvw", 0, 1000,
      B25 B25 B25 B25 "abcdefghijklmnopqrstuvw", "longest reason, 123 bytes"),
    C("\x03\xe8" B25 B25 B25 B25 "abcdefghijklmnopqrstuvwx", OL_WS_ECONTROL_LEN, 0, NULL,
      "126 bytes"),
    C("\x03", OL_WS_ECLOSE_PAYLOAD, 0, NULL, "one byte"),
    C("\x03\xe8\xed\xa0\x80", OL_WS_EUTF8, 0, NULL, "surrogate in the reason"),
    C("\x03\xe8\xce", OL_WS_EUTF8, 0, NULL, "reason cut inside a character"),
    C("\x03\xe8\xff", OL_WS_EUTF8, 0, NULL, "FF in the reason"),
    C("\x03\xed", OL_WS_ECLOSE_CODE, 0, NULL, "1005 is never sent"),
    C("\x03\xee" "x", OL_WS_ECLOSE_CODE, 0, NULL, "1006 is never sent"),
    C("\x00\x00", OL_WS_ECLOSE_CODE, 0, NULL, "code 0"),
    C("\xff\xff", OL_WS_ECLOSE_CODE, 0, NULL, "code 65535"),
};
/* clang-format on */

static void check_close(void)
{
    for (size_t i = 0; i < sizeof(close_rows) / sizeof(close_rows[0]); i++) {
        const crow *r = &close_rows[i];
        int code = -1;
        const char *reason = NULL;
        size_t reason_len = 0;
        int got = ol_ws_parse_close(r->payload, r->len, &code, &reason, &reason_len);
        CHECK(got == r->result, "%s: %d (%s)", r->why, got, ol_ws_strerror(got));
        if (r->result == 0 && got == 0)
            CHECK(code == r->code && reason_len == strlen(r->reason) &&
                      memcmp(reason, r->reason, reason_len) == 0 &&
                      reason == r->payload + (r->len ? 2 : 0),
                  "%s: code %d, reason of %zu bytes", r->why, code, reason_len);
    }

    /* The codes of Autobahn 7.7 (valid) and 7.9 (invalid), the registered
     * 1012-1014, and the edges of every range. */
    static const int valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const int invalid[] = {-1,   0,    999,  1004, 1005, 1006, 1015,
                                  1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
        CHECK(ol_ws_close_code_sendable(valid[i]), "code %d is valid", valid[i]);
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        CHECK(!ol_ws_close_code_sendable(invalid[i]), "code %d is not", invalid[i]);
    /* Parsing agrees with the rule for every 16-bit code. */
    for (int c = 0; c < 65536; c++) {
        char p[2] = {(char)(c >> 8), (char)(c & 0xff)};
        int code;
        const char *reason;
        size_t reason_len;
        int r = ol_ws_parse_close(p, 2, &code, &reason, &reason_len);
        if ((r == 0) != ol_ws_close_code_sendable(c) || (r == 0 && code != c))
            CHECK(0, "close code %d parses to %d", c, r);
    }
}

typedef struct cprow {
    int code;
    size_t ascii;     /* bytes of 'a' before the tail */
    const char *tail; /* then this */
    int result;       /* payload length or an error */
    const char *why;
} cprow;

/* clang-format off */
static const cprow close_payload_rows[] = {
    {1000, 0, "bye", 5, "code and reason"},
    {1000, 0, "", 2, "code only"},
    {OL_WS_CLOSE_NO_STATUS, 3, "", 0, "no status: an empty payload"},
    {1006, 0, "", OL_WS_ECLOSE_CODE, "1006 is never sent"},
    {999, 0, "", OL_WS_ECLOSE_CODE, "999"},
    {5000, 0, "", OL_WS_ECLOSE_CODE, "5000"},
    {4000, 123, "", 125, "reason of 123 bytes fits"},
    {4000, 124, "", 125, "124 bytes are cut to 123"},
    {4000, 121, "\xc3\xa9", 125, "two-byte character that just fits"},
    {4000, 122, "\xc3\xa9", 124, "two-byte character that does not fit is dropped whole"},
    {4000, 120, "\xe2\x82\xac", 125, "three-byte character that just fits"},
    {4000, 121, "\xe2\x82\xac", 123, "three-byte character cut: dropped whole"},
    {4000, 119, "\xf0\x9f\x98\x80", 125, "four-byte character that just fits"},
    {4000, 122, "\xf0\x9f\x98\x80", 124, "four-byte character after 122 bytes"},
    {4000, 120, "\xf0\x9f\x98\x80xyz", 122, "four-byte character cut after its second byte"},
};
/* clang-format on */

static void check_close_payload(void)
{
    for (size_t i = 0; i < sizeof(close_payload_rows) / sizeof(close_payload_rows[0]); i++) {
        const cprow *r = &close_payload_rows[i];
        char reason[256], out[OL_WS_MAX_CONTROL];
        memset(reason, 'a', r->ascii);
        memcpy(reason + r->ascii, r->tail, strlen(r->tail));
        size_t n = r->ascii + strlen(r->tail);
        int got = ol_ws_close_payload(out, r->code, reason, n);
        CHECK(got == r->result, "%s: %d, want %d", r->why, got, r->result);
        if (got >= 2) {
            int code;
            const char *back;
            size_t back_len;
            CHECK(ol_ws_parse_close(out, (size_t)got, &code, &back, &back_len) == 0 &&
                      code == r->code && memcmp(back, reason, back_len) == 0,
                  "%s: parses back", r->why);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Handshake                                                                */

static void hex(char *out, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

static void check_sha1(void)
{
    /* FIPS 180 / RFC 3174 vectors, then lengths around the padding's edges
     * (55, 56, 63, 64, 65 bytes). */
    static const struct {
        const char *text;
        size_t repeat;
        const char *digest;
    } rows[] = {
        {"abc", 1, "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"", 1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"01234567012345670123456701234567", 20, "dea356a2cddd90c7a7ecedc5ebb563934f460452"},
        {"a", 55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {"a", 56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {"a", 63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
        {"a", 64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {"a", 65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
        {"a", 119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
        {"a", 120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
        {"a", 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t unit = strlen(rows[i].text);
        bytes text = {0};
        for (size_t k = 0; k < rows[i].repeat; k++)
            bytes_put(&text, rows[i].text, unit);
        /* Whole, and split at each byte for the short ones. */
        size_t last = text.len <= 130 ? text.len : 0;
        for (size_t at = 0; at <= last; at++) {
            ol__sha1 s;
            unsigned char d[OL__SHA1_LEN];
            char h[2 * OL__SHA1_LEN + 1];
            ol__sha1_init(&s);
            ol__sha1_update(&s, text.p, at);
            ol__sha1_update(&s, text.p + at, text.len - at);
            ol__sha1_final(&s, d);
            hex(h, d, sizeof(d));
            CHECK(strcmp(h, rows[i].digest) == 0, "SHA-1 of %zu x \"%s\" split at %zu: %s",
                  rows[i].repeat, rows[i].text, at, h);
        }
        bytes_free(&text);
    }

    /* RFC 4648 section 10. */
    /* clang-format off */
    static const char *const b64[][2] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
        char out[16];
        size_t n = ol__base64((const unsigned char *)b64[i][0], strlen(b64[i][0]), out);
        CHECK(n == strlen(b64[i][1]) && memcmp(out, b64[i][1], n) == 0, "base64 of \"%s\"",
              b64[i][0]);
    }
}

typedef struct arow {
    const char *key;
    const char *accept; /* NULL: OL_WS_EKEY */
    const char *why;
} arow;

/* clang-format off */
static const arow accept_rows[] = {
    {"dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455 1.3"},
    {" \tdGhlIHNhbXBsZSBub25jZQ==\t ", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "surrounding OWS"},
    {"AAECAwQFBgcICQoLDA0ODw==", "Bz3qJYTGdOe8gUSpLosEdiLKDrk=", "bytes 0..15"},
    {"AQIDBAUGBwgJCgsMDQ4PEB==", "Hr/jsZ2+siiaKEsQ3H5eyTaEFIw=",
     "padding bits not zero: still 16 bytes, hashed as sent"},
    {"", NULL, "empty"},
    {"dGhlIHNhbXBsZSBub25jZQ=", NULL, "23 characters"},
    {"dGhlIHNhbXBsZSBub25jZQ===", NULL, "25 characters"},
    {"dGhlIHNhbXBsZSBub25jZQ", NULL, "padding missing"},
    {"dGhlIHNhbXBsZSBub25jZQ=A", NULL, "digit after padding"},
    {"dGhlIHNhbXBs+SBub25j-Q==", NULL, "URL-safe alphabet"},
    {"dGhlIHNhbXBs ZSBub25jZQ=", NULL, "space inside"},
    {"MTIzNDU2Nzg5MDEyMzQ1Njc4", NULL, "24 characters, but 18 bytes"},
    {"dGhlIHNhbXBsZSBub25jZQ==\r", NULL, "CR is not whitespace here"},
};
/* clang-format on */

static void check_accept(void)
{
    for (size_t i = 0; i < sizeof(accept_rows) / sizeof(accept_rows[0]); i++) {
        const arow *r = &accept_rows[i];
        char out[OL_WS_ACCEPT_LEN];
        int got = ol_ws_accept(r->key, strlen(r->key), out);
        if (r->accept == NULL)
            CHECK(got == OL_WS_EKEY, "%s: %d", r->why, got);
        else
            CHECK(got == OL_WS_ACCEPT_LEN && memcmp(out, r->accept, OL_WS_ACCEPT_LEN) == 0,
                  "%s: %d %.28s", r->why, got, out);
    }
}

#define WS_HEAD(method, version, extra)                                                            \
    method " /chat HTTP/" version "\r\nHost: server.example.com\r\n" extra "\r\n"
#define WS_FIELDS                                                                                  \
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"                                                \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

typedef struct qrow {
    const char *request;
    int result;
    const char *why;
} qrow;

/* clang-format off */
static const qrow request_rows[] = {
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
             "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n"),
     0, "RFC 6455 1.2"},
    {WS_HEAD("GET", "1.1", "Upgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
     0, "any case, upgrade in a list"},
    {WS_HEAD("GET", "1.1", "Upgrade: h2c\r\nUpgrade: foo/2, websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
     0, "websocket in a later Upgrade list"},
    {WS_HEAD("GET", "1.2", WS_FIELDS), 0, "HTTP/1.2 is 1.1"},
    {WS_HEAD("POST", "1.1", WS_FIELDS), OL_WS_EHANDSHAKE, "POST"},
    {WS_HEAD("GET", "1.0", WS_FIELDS), OL_WS_EHANDSHAKE, "HTTP/1.0"},
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"),
     OL_WS_EHANDSHAKE, "no Connection: upgrade"},
    {WS_HEAD("GET", "1.1", "Upgrade: h2c, websocket2\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"),
     OL_WS_EHANDSHAKE, "Upgrade without websocket"},
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"),
     OL_WS_EVERSION, "version 8"},
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
     OL_WS_EVERSION, "no version"},
    {WS_HEAD("GET", "1.1", WS_FIELDS "Sec-WebSocket-Version: 13\r\n"), OL_WS_EVERSION,
     "version twice"},
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13, 8\r\n"),
     OL_WS_EVERSION, "a version list"},
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\n"),
     OL_WS_EKEY, "no key"},
    {WS_HEAD("GET", "1.1", WS_FIELDS "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
     OL_WS_EKEY, "key twice"},
    {WS_HEAD("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\nSec-WebSocket-Version: 13\r\n"),
     OL_WS_EKEY, "key not 16 bytes"},
};
/* clang-format on */

static void check_requests(void)
{
    for (size_t i = 0; i < sizeof(request_rows) / sizeof(request_rows[0]); i++) {
        const qrow *r = &request_rows[i];
        ol_header headers[32];
        ol_request req = {.headers = headers};
        ol_limits limits;
        ol_limits_default(&limits);
        ol_parser ps;
        ol_parser_init(&ps);
        int n = ol_parse_request(&ps, r->request, strlen(r->request), &req, &limits);
        CHECK(n == (int)strlen(r->request), "%s: request parses (%d)", r->why, n);
        ol_span key = {NULL, 0};
        int got = ol_ws_check_request(&req, &key);
        CHECK(got == r->result, "%s: %d (%s)", r->why, got, ol_ws_strerror(got));
        if (got == 0)
            CHECK(key.len == 24 && memcmp(key.base, "dGhlIHNhbXBsZSBub25jZQ==", 24) == 0,
                  "%s: the key", r->why);
    }
}

/* ------------------------------------------------------------------------ */
/* permessage-deflate negotiation                                           */

typedef struct nrow {
    const char *value;
    ol_ws_deflate_params server; /* {snct, cnct, server bits, client bits} */
    int result;
    const char *response; /* when result is 1 */
    const char *why;
} nrow;

#define PMD "permessage-deflate"

/* clang-format off */
static const nrow negotiate_rows[] = {
    {PMD, {0, 0, 0, 0}, 1, PMD, "plain offer"},
    {PMD "; client_max_window_bits", {0, 0, 0, 0}, 1, PMD, "client may be limited; we do not"},
    {PMD "; client_max_window_bits", {0, 0, 0, 10}, 1, PMD "; client_max_window_bits=10",
     "client may be limited; we want 10"},
    {PMD "; client_max_window_bits=12", {0, 0, 0, 0}, 1, PMD "; client_max_window_bits=12",
     "client says 12"},
    {PMD "; client_max_window_bits=12", {0, 0, 0, 10}, 1, PMD "; client_max_window_bits=10",
     "client says 12, we want 10"},
    {PMD "; client_max_window_bits=\"10\"", {0, 0, 0, 0}, 1, PMD "; client_max_window_bits=10",
     "quoted value"},
    {PMD "; client_max_window_bits=\"1\\0\"", {0, 0, 0, 0}, 1, PMD "; client_max_window_bits=10",
     "quoted value with a quoted-pair"},
    {PMD "; client_max_window_bits=8", {0, 0, 0, 0}, 1, PMD "; client_max_window_bits=8",
     "a client window of 8 is fine to inflate"},
    {PMD "; server_max_window_bits=10", {0, 0, 0, 0}, 1, PMD "; server_max_window_bits=10",
     "server window asked for"},
    {PMD "; server_max_window_bits=14", {0, 0, 12, 0}, 1, PMD "; server_max_window_bits=12",
     "asked 14, ours is smaller"},
    {PMD "; server_max_window_bits=9", {0, 0, 12, 0}, 1, PMD "; server_max_window_bits=9",
     "asked 9, ours is larger"},
    {PMD, {0, 0, 12, 0}, 1, PMD "; server_max_window_bits=12",
     "our window said though not asked (RFC 7692 7.1.2.1)"},
    {PMD, {0, 0, 8, 0}, 1, PMD "; server_max_window_bits=9", "our 8 counts as 9"},
    {PMD "; server_max_window_bits=8", {0, 0, 0, 0}, 0, NULL, "8 cannot be granted with zlib"},
    {PMD "; server_max_window_bits=8, " PMD, {0, 0, 0, 0}, 1, PMD, "so the next offer is taken"},
    {PMD "; server_no_context_takeover", {0, 0, 0, 0}, 1, PMD "; server_no_context_takeover",
     "server_no_context_takeover must be echoed"},
    {PMD "; client_no_context_takeover", {0, 0, 0, 0}, 1, PMD "; client_no_context_takeover",
     "client_no_context_takeover is echoed"},
    {PMD, {1, 1, 0, 0}, 1, PMD "; server_no_context_takeover; client_no_context_takeover",
     "ours, though not asked"},
    {PMD "; client_max_window_bits; server_max_window_bits=10, " PMD "; client_max_window_bits",
     {0, 0, 0, 0}, 1, PMD "; server_max_window_bits=10", "RFC 7692 5.2: two offers, the first taken"},
    {"x-webkit-deflate-frame, " PMD "; client_no_context_takeover", {0, 0, 0, 0}, 1,
     PMD "; client_no_context_takeover", "another extension first"},
    {"PerMessage-Deflate; Client_Max_Window_Bits", {0, 0, 0, 11}, 1,
     PMD "; client_max_window_bits=11", "names in any case"},
    {PMD " ; client_max_window_bits = 10 , foo", {0, 0, 0, 0}, 1, PMD "; client_max_window_bits=10",
     "whitespace around separators"},
    {" ,, " PMD " ,,", {0, 0, 0, 0}, 1, PMD, "empty list elements"},
    {PMD "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; "
     "client_max_window_bits=15", {0, 0, 0, 0}, 1,
     PMD "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; "
     "client_max_window_bits=15", "every parameter"},

    {"", {0, 0, 0, 0}, 0, NULL, "nothing offered"},
    {"x-webkit-deflate-frame", {0, 0, 0, 0}, 0, NULL, "another extension only"},
    {PMD "; foo", {0, 0, 0, 0}, 0, NULL, "unknown parameter declines"},
    {PMD "; server_no_context_takeover=1", {0, 0, 0, 0}, 0, NULL, "value on a flag"},
    {PMD "; client_no_context_takeover=\"x\"", {0, 0, 0, 0}, 0, NULL, "quoted value on a flag"},
    {PMD "; server_max_window_bits", {0, 0, 0, 0}, 0, NULL, "server window without a value"},
    {PMD "; server_max_window_bits=16", {0, 0, 0, 0}, 0, NULL, "server window 16"},
    {PMD "; server_max_window_bits=7", {0, 0, 0, 0}, 0, NULL, "server window 7"},
    {PMD "; server_max_window_bits=010", {0, 0, 0, 0}, 0, NULL, "leading zero"},
    {PMD "; server_max_window_bits=09", {0, 0, 0, 0}, 0, NULL, "leading zero, one digit"},
    {PMD "; client_max_window_bits=16", {0, 0, 0, 0}, 0, NULL, "client window 16"},
    {PMD "; client_max_window_bits=abc", {0, 0, 0, 0}, 0, NULL, "client window not a number"},
    {PMD "; client_no_context_takeover; client_no_context_takeover", {0, 0, 0, 0}, 0, NULL,
     "repeated flag"},
    {PMD "; server_max_window_bits=10; server_max_window_bits=10", {0, 0, 0, 0}, 0, NULL,
     "repeated window"},
    {PMD "; foo, " PMD "; bar", {0, 0, 0, 0}, 0, NULL, "every offer declined"},

    {PMD ";", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "empty parameter"},
    {PMD "; a=", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "empty value"},
    {PMD "; a=\"\"", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "empty quoted value"},
    {PMD "; a=\"b", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "unterminated quoted value"},
    {PMD "; a=\"b c\"", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "quoted value not a token"},
    {PMD " x", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "junk after the name"},
    {PMD "; a b", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "junk after a parameter"},
    {"; a", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "parameter without a name"},
    {PMD "/1", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "name not a token"},
    {PMD ", " PMD "; @", {0, 0, 0, 0}, OL_WS_EEXTENSION, NULL, "bad syntax after an acceptable offer"},
};
/* clang-format on */

static void check_negotiation(void)
{
    for (size_t i = 0; i < sizeof(negotiate_rows) / sizeof(negotiate_rows[0]); i++) {
        const nrow *r = &negotiate_rows[i];
        ol_ws_deflate_params out;
        memset(&out, 0xee, sizeof(out));
        int got = ol_ws_negotiate_deflate(r->value, strlen(r->value), &r->server, &out);
        CHECK(got == r->result, "%s: %d (%s)", r->why, got, got < 0 ? ol_ws_strerror(got) : "");
        if (got == 1 && r->result == 1) {
            char text[128];
            int n = ol_ws_deflate_response(&out, text, sizeof(text));
            CHECK(n == (int)strlen(r->response) && memcmp(text, r->response, (size_t)n) == 0,
                  "%s: response %.*s", r->why, n > 0 ? n : 0, text);
            CHECK(ol_ws_deflate_response(&out, text, (size_t)n - 1) == OL_ENOSPACE,
                  "%s: one byte short", r->why);
        }
    }
    ol_ws_deflate_params out;
    CHECK(ol_ws_negotiate_deflate(PMD, sizeof(PMD) - 1, NULL, &out) == 1 &&
              out.server_max_window_bits == 0 && out.client_max_window_bits == 0,
          "no server configuration: defaults");
}

/* ------------------------------------------------------------------------ */
/* Client streams                                                           */

typedef struct wrow {
    const char *input;
    size_t len;
    unsigned config; /* WS_PLAIN, WS_DEFLATE, ... | WS_SMALL */
    int phase;
    int error;
    const char *events;
    const char *why;
} wrow;

#define W(input, ...)                                                                              \
    {                                                                                              \
        input, sizeof(input) - 1, __VA_ARGS__                                                      \
    }

#define OPEN   WS_OPEN, 0
#define CLOSED WS_CLOSED, 0
#define ERROR  WS_ERROR

/* "Hello" compressed, RFC 7692 7.2.3.1. */
#define HELLO_Z "\xf2\x48\xcd\xc9\xc9\x07\x00"

/* clang-format off */
static const wrow stream_rows[] = {
    /* Messages (Autobahn 1.x, 5.x). */
    W("\x81\x85" K "Hello", WS_PLAIN, OPEN, "text Hello\n", "text"),
    W("\x81\x85" KEY "\x7f\x9f\x4d\x51\x58", WS_PLAIN, OPEN, "text Hello\n",
      "RFC 6455 5.7, masked"),
    W("\x82\x83" K "\x00\x01\xff", WS_PLAIN, OPEN, "binary \\x00\\x01\\xff\n", "binary"),
    W("\x81\x80" K "\x82\x80" K, WS_PLAIN, OPEN, "text \nbinary \n", "empty messages"),
    W("\x01\x83" K "Hel" "\x80\x82" K "lo", WS_PLAIN, OPEN, "text Hello\n", "two fragments"),
    W("\x01\x83" K "Hel" "\x00\x80" K "\x00\x80" K "\x80\x82" K "lo", WS_PLAIN, OPEN,
      "text Hello\n", "empty fragments between"),
    W("\x01\x80" K "\x80\x80" K, WS_PLAIN, OPEN, "text \n", "a message of empty fragments"),
    W("\x01\x83" K "Hel" "\x89\x84" K "ping" "\x80\x82" K "lo", WS_PLAIN, OPEN,
      "ping ping\ntext Hello\n", "ping between fragments"),
    W("\x02\x81" K "1" "\x8a\x80" K "\x89\x80" K "\x00\x81" K "2" "\x80\x81" K "3", WS_PLAIN, OPEN,
      "pong \nping \nbinary 123\n", "pong and ping between fragments"),
    W("\x89\x80" K "\x8a\x80" K "\x81\x81" K "a" "\x82\x81" K "b", WS_PLAIN, OPEN,
      "ping \npong \ntext a\nbinary b\n", "frames back to back"),
    W("\x81\xfe\x00\x05" K "Hello", WS_PLAIN, OPEN, "text Hello\n", "5 in 16 bits"),
    W("\x81\xff\x00\x00\x00\x00\x00\x00\x00\x05" K "Hello", WS_PLAIN, OPEN, "text Hello\n",
      "5 in 64 bits"),
    W("\x82\xfe\x00\x7e" K B125 "z", WS_PLAIN, OPEN, "binary " B125 "z\n", "126 bytes in 16 bits"),
    W("\x81\x90" K "0123456789abcdef", WS_SMALL, OPEN, "text 0123456789abcdef\n",
      "message at the limit"),
    W("\x01\x88" K "01234567" "\x80\x88" K "89abcdef", WS_SMALL, OPEN, "text 0123456789abcdef\n",
      "fragments at the limit"),

    /* UTF-8 (Autobahn 6.x). */
    W("\x81\x8b" K "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", WS_PLAIN, OPEN,
      "text \\xce\\xba\\xe1\\xbd\\xb9\\xcf\\x83\\xce\\xbc\\xce\\xb5\n", "kosme"),
    W("\x01\x82" K "\xce\xba" "\x00\x81" K "\xe1" "\x00\x81" K "\xbd" "\x80\x81" K "\xb9",
      WS_PLAIN, OPEN, "text \\xce\\xba\\xe1\\xbd\\xb9\n",
      "a three-byte character across three fragments"),
    W("\x01\x81" K "\xf0" "\x89\x80" K "\x80\x83" K "\x9f\x98\x80", WS_PLAIN, OPEN,
      "ping \ntext \\xf0\\x9f\\x98\\x80\n", "a four-byte character around a ping"),
    W("\x01\x83" K "a\xed\xa0", WS_PLAIN, ERROR, OL_WS_EUTF8, "",
      "surrogate in a first fragment fails before the message ends"),
    W("\x01\x82" K "\xce\xba" "\x00\x82" K "\xf4\x90", WS_PLAIN, ERROR, OL_WS_EUTF8, "",
      "beyond U+10FFFF in a middle fragment"),
    W("\x81\x82" K "a\xce", WS_PLAIN, ERROR, OL_WS_EUTF8, "", "text ends inside a character"),
    W("\x01\x81" K "\xce" "\x80\x80" K, WS_PLAIN, ERROR, OL_WS_EUTF8, "",
      "last fragment empty, character unfinished"),
    W("\x01\x81" K "\xce" "\x89\x80" K "\x80\x81" K "a", WS_PLAIN, ERROR, OL_WS_EUTF8, "ping \n",
      "ASCII where a continuation is due"),
    W("\x81\x81" K "\xff" "\x81\x81" K "a", WS_PLAIN, ERROR, OL_WS_EUTF8, "", "FF"),
    W("\x82\x82" K "\xed\xa0", WS_PLAIN, OPEN, "binary \\xed\\xa0\n", "binary is not UTF-8"),

    /* Control frames (Autobahn 2.x). */
    W("\x89\xfd" K B125, WS_PLAIN, OPEN, "ping " B125 "\n", "ping of 125 bytes"),
    W("\x89\xfe\x00\x7e" K B125 "z", WS_PLAIN, ERROR, OL_WS_ECONTROL_LEN, "", "ping of 126 bytes"),
    W("\x09\x80" K "\x80\x80" K, WS_PLAIN, ERROR, OL_WS_ECONTROL_FRAGMENTED, "",
      "fragmented ping"),
    W("\x8a\x83" K "abc", WS_PLAIN, OPEN, "pong abc\n", "unsolicited pong"),
    W("\x89\x82" K "\xff\x00", WS_PLAIN, OPEN, "ping \\xff\\x00\n", "ping payload is binary"),

    /* Framing (Autobahn 3.x, 4.x, 5.x). */
    W("\x81\x82" K "ok" "\xc1\x80" K, WS_PLAIN, ERROR, OL_WS_ERSV, "text ok\n",
      "RSV1 without compression, after a message"),
    W("\xa2\x80" K, WS_PLAIN, ERROR, OL_WS_ERSV, "", "RSV2"),
    W("\x91\x80" K, WS_PLAIN, ERROR, OL_WS_ERSV, "", "RSV3"),
    W("\x89\x80" K "\x83\x80" K, WS_PLAIN, ERROR, OL_WS_EOPCODE, "ping \n", "opcode 3"),
    W("\x87\x80" K, WS_PLAIN, ERROR, OL_WS_EOPCODE, "", "opcode 7"),
    W("\x8b\x80" K, WS_PLAIN, ERROR, OL_WS_EOPCODE, "", "opcode 11"),
    W("\x8f\x80" K, WS_PLAIN, ERROR, OL_WS_EOPCODE, "", "opcode 15"),
    W("\x80\x82" K "lo", WS_PLAIN, ERROR, OL_WS_EFRAGMENT, "", "continuation first"),
    W("\x81\x80" K "\x80\x80" K, WS_PLAIN, ERROR, OL_WS_EFRAGMENT, "text \n",
      "continuation after a whole message"),
    W("\x01\x83" K "Hel" "\x81\x82" K "lo", WS_PLAIN, ERROR, OL_WS_EFRAGMENT, "",
      "text inside a fragmented message"),
    W("\x01\x83" K "Hel" "\x02\x82" K "lo", WS_PLAIN, ERROR, OL_WS_EFRAGMENT, "",
      "binary fragment inside a fragmented text"),
    W("\x81\x05" "Hello", WS_PLAIN, ERROR, OL_WS_EUNMASKED, "", "unmasked"),
    W("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00" K, WS_PLAIN, ERROR, OL_WS_ELENGTH, "",
      "64-bit length with the top bit"),
    W("\x81\x91" K "0123456789abcdefg", WS_SMALL, ERROR, OL_WS_ETOO_BIG, "",
      "message over the limit, refused at its header"),
    W("\x01\x88" K "01234567" "\x80\x89" K "89abcdefg", WS_SMALL, ERROR, OL_WS_ETOO_BIG, "",
      "fragments over the limit"),

    /* Close (Autobahn 7.x). */
    W("\x88\x80" K, WS_PLAIN, CLOSED, "close 1005 \n", "empty close"),
    W("\x88\x82" K "\x03\xe8", WS_PLAIN, CLOSED, "close 1000 \n", "close 1000"),
    W("\x88\x85" K "\x03\xe8" "bye" "\x81\x85" K "Hello\xff\xff", WS_PLAIN, CLOSED,
      "close 1000 bye\n", "nothing after a close is read"),
    W("\x88\x82" K "\x0b\xb8" "\x88\x82" K "\x13\x87", WS_PLAIN, CLOSED, "close 3000 \n",
      "close 3000"),
    W("\x88\x82" K "\x13\x87", WS_PLAIN, CLOSED, "close 4999 \n", "close 4999"),
    W("\x88\x82" K "\x03\xf3", WS_PLAIN, CLOSED, "close 1011 \n", "close 1011"),
    W("\x01\x83" K "Hel" "\x88\x82" K "\x03\xe8", WS_PLAIN, CLOSED, "close 1000 \n",
      "close inside a fragmented message"),
    W("\x88\x81" K "\x03", WS_PLAIN, ERROR, OL_WS_ECLOSE_PAYLOAD, "", "close payload of 1 byte"),
    W("\x88\x82" K "\x03\xe7", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 999"),
    W("\x88\x82" K "\x03\xec", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 1004"),
    W("\x88\x82" K "\x03\xed", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 1005"),
    W("\x88\x82" K "\x03\xee", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 1006"),
    W("\x88\x82" K "\x03\xf7", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 1015"),
    W("\x88\x82" K "\x0b\xb7", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 2999"),
    W("\x88\x82" K "\x13\x88", WS_PLAIN, ERROR, OL_WS_ECLOSE_CODE, "", "close 5000"),
    W("\x88\x84" K "\x03\xe8\xed\xa0", WS_PLAIN, ERROR, OL_WS_EUTF8, "",
      "close reason not UTF-8"),
    W("\x08\x80" K, WS_PLAIN, ERROR, OL_WS_ECONTROL_FRAGMENTED, "", "fragmented close"),

    /* permessage-deflate (RFC 7692 7.2.3, Autobahn 12.x, 13.x). */
    W("\xc1\x87" K HELLO_Z, WS_DEFLATE, OPEN, "text Hello\n", "RFC 7692 7.2.3.1"),
    W("\xc1\x87" K HELLO_Z "\xc1\x85" K "\xf2\x00\x11\x00\x00", WS_DEFLATE, OPEN,
      "text Hello\ntext Hello\n", "RFC 7692 7.2.3.2: the second refers to the first"),
    W("\xc1\x87" K HELLO_Z "\xc1\x85" K "\xf2\x00\x11\x00\x00", WS_DEFLATE_NCT, ERROR,
      OL_WS_EDEFLATE, "text Hello\n", "the same without context takeover: a reference too far"),
    W("\xc1\x8b" K "\x00\x05\x00\xfa\xff" "Hello" "\x00", WS_DEFLATE, OPEN, "text Hello\n",
      "RFC 7692 7.2.3.3: a stored block"),
    W("\xc1\x88" K "\xf3\x48\xcd\xc9\xc9\x07\x00\x00" "\xc1\x87" K HELLO_Z, WS_DEFLATE, OPEN,
      "text Hello\ntext Hello\n", "RFC 7692 7.2.3.4: a final block, and the stream goes on"),
    W("\xc1\x87" K "\xf3\x48\xcd\xc9\xc9\x07\x00" "\xc1\x87" K HELLO_Z, WS_DEFLATE, OPEN,
      "text Hello\ntext Hello\n", "a message ending with its final block"),
    W("\xc1\x8d" K "\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00", WS_DEFLATE, OPEN,
      "text Hello\n", "RFC 7692 7.2.3.5: two blocks"),
    W("\x41\x83" K "\xf2\x48\xcd" "\x80\x84" K "\xc9\xc9\x07\x00", WS_DEFLATE, OPEN,
      "text Hello\n", "compressed message in two fragments"),
    W("\x41\x83" K "\xf2\x48\xcd" "\x89\x80" K "\x00\x80" K "\x80\x84" K "\xc9\xc9\x07\x00",
      WS_DEFLATE, OPEN, "ping \ntext Hello\n", "ping and an empty fragment in between"),
    W("\xc2\x87" K HELLO_Z, WS_DEFLATE_NCT, OPEN, "binary Hello\n", "compressed binary"),
    W("\x81\x85" K "Hello" "\xc1\x87" K HELLO_Z, WS_DEFLATE, OPEN, "text Hello\ntext Hello\n",
      "uncompressed, then compressed"),
    W("\xc1\x87" K HELLO_Z, WS_DEFLATE_9, OPEN, "text Hello\n", "client window of 9 bits"),
    W("\xc1\x80" K "\xc1\x81" K "\x00", WS_DEFLATE, OPEN, "text \ntext \n",
      "empty compressed messages: no bytes, or an empty block"),
    W("\x41\x83" K "\xf2\x48\xcd" "\xc0\x84" K "\xc9\xc9\x07\x00", WS_DEFLATE, ERROR, OL_WS_ERSV,
      "", "RSV1 on a continuation"),
    W("\xc9\x80" K, WS_DEFLATE, ERROR, OL_WS_ERSV, "", "RSV1 on a ping"),
    W("\xc1\x83" K "\xff\xff\xff", WS_DEFLATE, ERROR, OL_WS_EDEFLATE, "", "block type 3"),
    W("\xc1\x86" K "\xf2\x48\xcd\xc9\xc9\x07", WS_DEFLATE, ERROR, OL_WS_EDEFLATE, "",
      "message cut inside a block"),
    W("\xc1\x89" K "\x00\x03\x00\xfc\xff\xed\xa0\x80\x00", WS_DEFLATE, ERROR, OL_WS_EUTF8, "",
      "compressed text that is not UTF-8"),
    W("\xc1\x96" K "\x00\x10\x00\xef\xff" "0123456789abcdef" "\x00", WS_DEFLATE | WS_SMALL, OPEN,
      "text 0123456789abcdef\n", "inflated to the limit"),
    W("\xc1\x97" K "\x00\x11\x00\xee\xff" "0123456789abcdefg" "\x00", WS_DEFLATE | WS_SMALL, ERROR,
      OL_WS_ETOO_BIG, "", "inflated past the limit"),
};
/* clang-format on */

static void run_stream_row(ws_stream *s, const wrow *r, const char *input, const size_t *splits,
                           size_t nsplits)
{
    ws_stream_init(s, r->config);
    ws_stream_run(s, input, r->len, splits, nsplits);
}

static void check_stream_run(const wrow *r, ws_stream *s, const char *how)
{
    CHECK(s->phase == r->phase, "%s (%s): ends in phase %d (error %d %s), want %d", r->why, how,
          s->phase, s->error, ol_ws_strerror(s->error), r->phase);
    if (r->phase == WS_ERROR)
        CHECK(s->error == r->error, "%s (%s): error %d (%s), want %d (%s)", r->why, how, s->error,
              ol_ws_strerror(s->error), r->error, ol_ws_strerror(r->error));
    CHECK(bytes_eq(&s->out, r->events, strlen(r->events)), "%s (%s): got\n%s", r->why, how,
          s->out.p ? s->out.p : "");
    CHECK(s->violation == NULL, "%s (%s): %s", r->why, how, s->violation);
    ws_stream_free(s);
}

static void check_streams(void)
{
    size_t nrows = sizeof(stream_rows) / sizeof(stream_rows[0]);
    bytes masked = {0};
    for (size_t i = 0; i < nrows; i++) {
        const wrow *r = &stream_rows[i];
        ws_remask(&masked, r->input, r->len, rfc_key);
        CHECK(masked.len == r->len, "%s: masked again to the same length", r->why);
        const char *inputs[2] = {r->input, masked.p};
        for (int m = 0; m < 2; m++) {
            ws_stream s;
            run_stream_row(&s, r, inputs[m], NULL, 0);
            check_stream_run(r, &s, m ? "masked, whole" : "whole");
            size_t *splits = malloc(r->len * sizeof(size_t));
            for (size_t at = 1; at < r->len; at++) {
                run_stream_row(&s, r, inputs[m], &at, 1);
                check_stream_run(r, &s, m ? "masked, split" : "split");
                splits[at - 1] = at;
            }
            run_stream_row(&s, r, inputs[m], splits, r->len - 1);
            check_stream_run(r, &s, m ? "masked, byte by byte" : "byte by byte");
            free(splits);
        }
    }
    bytes_free(&masked);
    printf("websocket streams: %zu rows, each whole, split at every byte and byte by byte, "
           "masked two ways\n",
           nrows);
}

/* ------------------------------------------------------------------------ */
/* Compression                                                              */

/* What a client's compressor sends: raw DEFLATE, sync flush, tail removed. */
static void client_deflate(z_stream *z, const char *msg, size_t n, bytes *out)
{
    unsigned char buf[1 << 16];
    bytes_clear(out);
    z->next_in = (unsigned char *)(uintptr_t)msg;
    z->avail_in = (uInt)n;
    do {
        z->next_out = buf;
        z->avail_out = sizeof(buf);
        deflate(z, Z_SYNC_FLUSH);
        bytes_put(out, (const char *)buf, sizeof(buf) - z->avail_out);
    } while (z->avail_out == 0);
    if (out->len >= 4 && memcmp(out->p + out->len - 4, "\x00\x00\xff\xff", 4) == 0)
        out->len -= 4;
}

/* A client's inflater: payload plus the tail. Returns Z_OK or an error. */
static int client_inflate(z_stream *z, const char *payload, size_t n, bytes *out)
{
    unsigned char buf[1 << 16];
    bytes_clear(out);
    for (int part = 0; part < 2; part++) {
        z->next_in = (unsigned char *)(uintptr_t)(part ? "\x00\x00\xff\xff" : payload);
        z->avail_in = part ? 4u : (uInt)n;
        do {
            z->next_out = buf;
            z->avail_out = sizeof(buf);
            int r = inflate(z, Z_SYNC_FLUSH);
            if (r != Z_OK && r != Z_BUF_ERROR)
                return r;
            bytes_put(out, (const char *)buf, sizeof(buf) - z->avail_out);
        } while (z->avail_out == 0 || z->avail_in != 0);
    }
    return Z_OK;
}

/* Messages that make context takeover and the window matter: text with
 * repeats near and far (up to 1500 bytes back), then the first again. */
static void make_messages(bytes msgs[3])
{
    uint32_t x = 12345;
    for (int i = 0; i < 3; i++)
        bytes_clear(&msgs[i]);
    char run[1500];
    for (size_t i = 0; i < sizeof(run); i++) {
        x = x * 1103515245u + 12345u;
        run[i] = (char)('a' + (x >> 16) % 26);
    }
    bytes_put(&msgs[0], run, sizeof(run));
    bytes_put(&msgs[0], run, sizeof(run)); /* the same 1500 bytes, 1500 bytes back */
    bytes_puts(&msgs[0], " the end");
    bytes_put(&msgs[1], msgs[0].p, msgs[0].len);
    for (int i = 0; i < 300; i++)
        bytes_printf(&msgs[2], "line %d of the third message\n", i % 7);
}

/* Inflate payload in pieces of `piece` bytes (0: whole) into out. */
static int inflate_pieces(ol_ws_deflate *d, const bytes *payload, size_t piece, size_t max,
                          ol_ws_buf *out)
{
    out->len = 0;
    if (piece == 0 || piece > payload->len)
        piece = payload->len ? payload->len : 1;
    size_t at = 0;
    do {
        size_t n = payload->len - at < piece ? payload->len - at : piece;
        int r = ol_ws_inflate(d, payload->p + at, n, at + n == payload->len, max, out);
        if (r != 0)
            return r;
        at += n;
    } while (at < payload->len);
    return 0;
}

/* The client compresses with zlib, we inflate: every window, with and
 * without context takeover, payloads in pieces. */
static void check_inflate_round_trips(void)
{
    bytes msgs[3] = {{0}}, payload = {0};
    make_messages(msgs);
    static const size_t pieces[] = {0, 1, 7, 100};
    for (int bits = 8; bits <= 15; bits++) {
        for (int nct = 0; nct <= 1; nct++) {
            for (size_t pc = 0; pc < sizeof(pieces) / sizeof(pieces[0]); pc++) {
                z_stream client = {0};
                /* zlib compresses a request for 8 bits with 9 (the window
                 * it can do), whose farthest reference, 250 bytes, is
                 * within 256 all the same. */
                deflateInit2(&client, 9, Z_DEFLATED, -(bits < 9 ? 9 : bits), 8, Z_DEFAULT_STRATEGY);
                ol_ws_deflate_params p = {0, (uint8_t)nct, 0, (uint8_t)bits};
                ol_ws_deflate *d = ol_ws_deflate_new(&p, 6);
                ol_ws_buf out = {0};
                size_t sizes[3];
                for (int m = 0; m < 3; m++) {
                    client_deflate(&client, msgs[m].p, msgs[m].len, &payload);
                    sizes[m] = payload.len;
                    if (nct)
                        deflateReset(&client);
                    int r = inflate_pieces(d, &payload, pieces[pc], WS_LARGE_MAX, &out);
                    CHECK(r == 0 && out.len == msgs[m].len &&
                              memcmp(out.data, msgs[m].p, out.len) == 0,
                          "inflate, %d bits, nct %d, pieces of %zu, message %d: %d (%s)", bits, nct,
                          pieces[pc], m, r, ol_ws_strerror(r));
                }
                if (!nct && (1u << bits) > msgs[1].len)
                    CHECK(sizes[1] < sizes[0] / 10, "%d bits: the repeat is a reference (%zu)",
                          bits, sizes[1]);
                free(out.data);
                ol_ws_deflate_free(d);
                deflateEnd(&client);
            }
        }
    }
    for (int i = 0; i < 3; i++)
        bytes_free(&msgs[i]);
    bytes_free(&payload);
}

/* We compress, zlib inflates with exactly the window we announced. */
static void check_deflate_round_trips(void)
{
    bytes msgs[3] = {{0}}, payload = {0}, back = {0};
    make_messages(msgs);
    for (int bits = 9; bits <= 15; bits++) {
        for (int nct = 0; nct <= 1; nct++) {
            ol_ws_deflate_params p = {(uint8_t)nct, 0, (uint8_t)bits, 0};
            ol_ws_deflate *d = ol_ws_deflate_new(&p, 9);
            z_stream client = {0};
            inflateInit2(&client, -bits);
            ol_ws_buf out = {0};
            for (int m = 0; m < 3; m++) {
                out.len = 0;
                int r = ol_ws_deflate_message(d, msgs[m].p, msgs[m].len, &out);
                bytes_clear(&payload);
                bytes_put(&payload, out.data, out.len);
                int zr = client_inflate(&client, payload.p, payload.len, &back);
                CHECK(r == 0 && zr == Z_OK && bytes_eq(&back, msgs[m].p, msgs[m].len),
                      "deflate, %d bits, nct %d, message %d: %d, zlib %d, %zu bytes back", bits,
                      nct, m, r, zr, back.len);
                if (nct) { /* each message stands alone */
                    z_stream fresh = {0};
                    inflateInit2(&fresh, -bits);
                    zr = client_inflate(&fresh, payload.p, payload.len, &back);
                    CHECK(zr == Z_OK && bytes_eq(&back, msgs[m].p, msgs[m].len),
                          "deflate, %d bits, message %d stands alone", bits, m);
                    inflateEnd(&fresh);
                    inflateReset(&client);
                }
            }
            free(out.data);
            inflateEnd(&client);
            ol_ws_deflate_free(d);
        }
    }

    /* Our own inflater reads what our compressor writes; an empty message
     * is one byte. */
    ol_ws_deflate_params p = {0};
    ol_ws_deflate *server = ol_ws_deflate_new(&p, -1), *client = ol_ws_deflate_new(&p, -1);
    ol_ws_buf z = {0}, plain = {0};
    ol_ws_deflate_message(server, "", 0, &z);
    CHECK(z.len == 1 && z.data[0] == 0, "empty message compresses to one byte (%zu)", z.len);
    for (int m = 0; m < 3; m++) {
        z.len = 0;
        plain.len = 0;
        int r = ol_ws_deflate_message(server, msgs[m].p, msgs[m].len, &z);
        int r2 = ol_ws_inflate(client, z.data, z.len, 1, WS_LARGE_MAX, &plain);
        CHECK(r == 0 && r2 == 0 && plain.len == msgs[m].len &&
                  memcmp(plain.data, msgs[m].p, plain.len) == 0,
              "our compressor to our inflater, message %d", m);
    }
    /* Appending: the output goes after what out holds. */
    memcpy(z.data, "HEAD", 4);
    z.len = 4;
    ol_ws_deflate_message(server, "x", 1, &z);
    CHECK(z.len > 4 && memcmp(z.data, "HEAD", 4) == 0, "output is appended");
    free(z.data);
    free(plain.data);
    ol_ws_deflate_free(server);
    ol_ws_deflate_free(client);

    /* A server window of 8 in the parameters compresses with 9. */
    ol_ws_deflate_params eight = {0, 0, 8, 0};
    ol_ws_deflate *d = ol_ws_deflate_new(&eight, 6);
    ol_ws_buf out = {0};
    CHECK(ol_ws_deflate_message(d, msgs[0].p, msgs[0].len, &out) == 0, "window 8 compresses");
    free(out.data);
    ol_ws_deflate_free(d);

    for (int i = 0; i < 3; i++)
        bytes_free(&msgs[i]);
    bytes_free(&payload);
    bytes_free(&back);
}

/* Data the inflater must refuse: references beyond the window it was
 * given, across a reset it was told of, and errors that stay. */
static void check_inflate_refusals(void)
{
    bytes msgs[3] = {{0}}, payload = {0};
    make_messages(msgs);
    ol_ws_buf out = {0};

    /* A client that compresses with 15 bits, though it agreed to 9. zlib
     * resolves a reference from the output of the same call, so fed whole
     * the message may pass (and then right); a byte at a time, each call
     * has too little output to reach 1500 bytes back. */
    z_stream client = {0};
    deflateInit2(&client, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    client_deflate(&client, msgs[0].p, msgs[0].len, &payload);
    ol_ws_deflate_params nine = {0, 0, 0, 9};
    ol_ws_deflate *d = ol_ws_deflate_new(&nine, 6);
    int r = ol_ws_inflate(d, payload.p, payload.len, 1, WS_LARGE_MAX, &out);
    CHECK(r == OL_WS_EDEFLATE ||
              (r == 0 && out.len == msgs[0].len && memcmp(out.data, msgs[0].p, out.len) == 0),
          "reference beyond a 9-bit window, whole: %d", r);
    ol_ws_deflate_free(d);
    d = ol_ws_deflate_new(&nine, 6);
    r = inflate_pieces(d, &payload, 1, WS_LARGE_MAX, &out);
    CHECK(r == OL_WS_EDEFLATE, "reference beyond a 9-bit window, byte by byte: %d", r);
    out.len = 0;
    r = ol_ws_inflate(d, "\x00", 1, 1, WS_LARGE_MAX, &out);
    CHECK(r == OL_WS_EDEFLATE, "the error stays: %d", r);
    ol_ws_deflate_free(d);

    /* A client that keeps its context, though it agreed not to. */
    deflateReset(&client);
    ol_ws_deflate_params nct = {0, 1, 0, 0};
    d = ol_ws_deflate_new(&nct, 6);
    for (int m = 0; m < 2; m++) {
        client_deflate(&client, msgs[m].p, msgs[m].len, &payload);
        out.len = 0;
        r = ol_ws_inflate(d, payload.p, payload.len, 1, WS_LARGE_MAX, &out);
        CHECK(r == (m == 0 ? 0 : OL_WS_EDEFLATE), "context kept though not agreed, message %d: %d",
              m, r);
    }
    ol_ws_deflate_free(d);
    deflateEnd(&client);

    /* A final block, then a message that refers back past it: the window
     * outlives the block, unless context takeover was declined. */
    for (int reset = 0; reset <= 1; reset++) {
        ol_ws_deflate_params p = {0, (uint8_t)reset, 0, 0};
        d = ol_ws_deflate_new(&p, 6);
        z_stream fin = {0};
        deflateInit2(&fin, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        unsigned char buf[8192];
        fin.next_in = (unsigned char *)msgs[2].p;
        fin.avail_in = (uInt)msgs[2].len;
        fin.next_out = buf;
        fin.avail_out = sizeof(buf);
        deflate(&fin, Z_FINISH);
        size_t n = sizeof(buf) - fin.avail_out;
        deflateEnd(&fin);
        out.len = 0;
        r = ol_ws_inflate(d, (const char *)buf, n, 1, WS_LARGE_MAX, &out);
        CHECK(r == 0 && out.len == msgs[2].len, "a message ending in a final block: %d", r);

        z_stream dict = {0};
        deflateInit2(&dict, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        deflateSetDictionary(&dict, (const unsigned char *)msgs[2].p, (uInt)msgs[2].len);
        client_deflate(&dict, msgs[2].p, msgs[2].len, &payload);
        deflateEnd(&dict);
        out.len = 0;
        r = ol_ws_inflate(d, payload.p, payload.len, 1, WS_LARGE_MAX, &out);
        if (reset)
            CHECK(r == OL_WS_EDEFLATE, "no window after a reset: %d", r);
        else
            CHECK(r == 0 && out.len == msgs[2].len && payload.len < 100,
                  "back past a final block: %d, %zu bytes from %zu", r, out.len, payload.len);
        ol_ws_deflate_free(d);
    }

    free(out.data);
    for (int i = 0; i < 3; i++)
        bytes_free(&msgs[i]);
    bytes_free(&payload);
}

/* DEFLATE written bit by bit: fixed Huffman codes (RFC 1951 3.2.6). */
typedef struct bitw {
    bytes *b;
    uint32_t acc;
    int n;
} bitw;

static void put_bits(bitw *w, uint32_t v, int n)
{
    w->acc |= v << w->n;
    w->n += n;
    for (; w->n >= 8; w->n -= 8, w->acc >>= 8) {
        char c = (char)(w->acc & 0xff);
        bytes_put(w->b, &c, 1);
    }
}

/* Huffman codes go most significant bit first. */
static void put_code(bitw *w, uint32_t code, int n)
{
    uint32_t r = 0;
    for (int i = 0; i < n; i++)
        r |= ((code >> i) & 1u) << (n - 1 - i);
    put_bits(w, r, n);
}

/* A message of one zero and `matches` copies of 258 zeros: 13 bits each,
 * a ratio of about 160 to 1, then the empty stored block that a sync flush
 * ends with, less its 00 00 FF FF. */
static void make_bomb(bytes *out, size_t matches)
{
    bitw w = {out, 0, 0};
    bytes_clear(out);
    put_bits(&w, 0, 1);    /* BFINAL 0 */
    put_bits(&w, 1, 2);    /* BTYPE 01: fixed codes */
    put_code(&w, 0x30, 8); /* literal 0 */
    for (size_t i = 0; i < matches; i++) {
        put_code(&w, 0xc5, 8); /* length code 285: 258 bytes */
        put_code(&w, 0, 5);    /* distance code 0: 1 byte back */
    }
    put_code(&w, 0, 7); /* end of block */
    put_bits(&w, 0, 3); /* stored block header, then pad to the byte */
    if (w.n)
        put_bits(&w, 0, 8 - w.n);
}

static void check_bomb(void)
{
    bytes bomb = {0};
    ol_ws_buf out = {0};
    ol_ws_deflate_params p = {0};

    /* A small one, to prove the construction: exactly at the limit passes,
     * one byte under it does not. */
    make_bomb(&bomb, 1000);
    size_t size = 1 + 258 * 1000;
    for (int under = 0; under <= 1; under++) {
        ol_ws_deflate *d = ol_ws_deflate_new(&p, 6);
        out.len = 0;
        int r = ol_ws_inflate(d, bomb.p, bomb.len, 1, size - (size_t)under, &out);
        CHECK(r == (under ? OL_WS_ETOO_BIG : 0) && out.len == size,
              "%zu zeros, limit %zu: %d, %zu out", size, size - (size_t)under, r, out.len);
        ol_ws_deflate_free(d);
    }
    free(out.data);

    /* 100 MB of zeros in 630 KB, fed in 64 KB pieces, with a 1 MB limit:
     * refused within the first piece, having grown the buffer to the limit
     * and one byte, no more. */
    make_bomb(&bomb, 100000000 / 258);
    ol_ws_buf bounded = {0};
    ol_ws_deflate *d = ol_ws_deflate_new(&p, 6);
    size_t max = 1 << 20, at = 0, calls = 0;
    int r = 0;
    while (r == 0 && at < bomb.len) {
        size_t n = bomb.len - at < 65536 ? bomb.len - at : 65536;
        r = ol_ws_inflate(d, bomb.p + at, n, at + n == bomb.len, max, &bounded);
        at += n;
        calls++;
    }
    CHECK(r == OL_WS_ETOO_BIG && calls == 1 && bounded.len == max + 1 && bounded.cap <= max + 1,
          "bomb of %zu bytes: %d after %zu calls, %zu out, %zu allocated", bomb.len, r, calls,
          bounded.len, bounded.cap);
    ol_ws_deflate_free(d);
    free(bounded.data);
    bytes_free(&bomb);
}

/* ------------------------------------------------------------------------ */

static void check_errors(void)
{
    for (int code = OL_WS_ERROR_MAX; code >= OL_WS_ERROR_MIN; code--)
        CHECK(strcmp(ol_ws_strerror(code), "unknown error") != 0, "code %d has a description",
              code);
    CHECK(strcmp(ol_ws_strerror(OL_ECHUNK_SIZE), ol_strerror(OL_ECHUNK_SIZE)) == 0,
          "HTTP codes are described as ol_strerror does");
    CHECK(ol_ws_close_code_for(OL_WS_EUTF8) == 1007, "1007");
    CHECK(ol_ws_close_code_for(OL_WS_ETOO_BIG) == 1009, "1009");
    CHECK(ol_ws_close_code_for(OL_WS_ENOMEM) == 1011, "1011");
    CHECK(ol_ws_close_code_for(OL_WS_EOPCODE) == 1002, "1002");
    CHECK(ol_ws_close_code_for(OL_WS_EDEFLATE) == 1002, "1002 for corrupt data");
    CHECK(ol_ws_error_status(OL_WS_EVERSION) == 426, "426");
    CHECK(ol_ws_error_status(OL_WS_EKEY) == 400, "400");
    CHECK(ol_ws_error_status(OL_EURI_TOO_LONG) == 414, "HTTP codes keep their status");
    CHECK((int)OL_WS_ERROR_MAX < (int)OL_ERROR_MIN, "codes do not collide with ol_http.h");
}

void suite_ws(void)
{
    guard_buf g;
    guard_init(&g, 1 << 16);
    for (size_t i = 0; i < sizeof(header_rows) / sizeof(header_rows[0]); i++)
        check_header_row(&header_rows[i], &g);
    check_utf8(&g);
    guard_free(&g);
    check_length_encodings();
    check_unmask();
    check_serializer();
    check_close();
    check_close_payload();
    check_sha1();
    check_accept();
    check_requests();
    check_negotiation();
    check_streams();
    check_inflate_round_trips();
    check_deflate_round_trips();
    check_inflate_refusals();
    check_bomb();
    check_errors();
    printf("websocket: %zu header rows from every prefix, %zu UTF-8 rows split at every byte, "
           "%zu negotiation rows\n",
           sizeof(header_rows) / sizeof(header_rows[0]), sizeof(utf8_rows) / sizeof(utf8_rows[0]),
           sizeof(negotiate_rows) / sizeof(negotiate_rows[0]));
}

void seeds_ws(const char *dir)
{
    char name[32];
    for (size_t i = 0; i < sizeof(stream_rows) / sizeof(stream_rows[0]); i++) {
        snprintf(name, sizeof(name), "row-%03zu", i);
        write_seed(dir, "ws_frame", name, (unsigned char)stream_rows[i].config,
                   stream_rows[i].input, stream_rows[i].len);
    }
    for (size_t i = 0; i < sizeof(negotiate_rows) / sizeof(negotiate_rows[0]); i++) {
        snprintf(name, sizeof(name), "offer-%03zu", i);
        write_seed(dir, "ws_frame", name, 0, negotiate_rows[i].value,
                   strlen(negotiate_rows[i].value));
    }
    for (size_t i = 0; i < sizeof(accept_rows) / sizeof(accept_rows[0]); i++) {
        snprintf(name, sizeof(name), "key-%03zu", i);
        write_seed(dir, "ws_frame", name, 0, accept_rows[i].key, strlen(accept_rows[i].key));
    }
    for (size_t i = 0; i < sizeof(utf8_rows) / sizeof(utf8_rows[0]); i++) {
        snprintf(name, sizeof(name), "row-%03zu", i);
        write_seed(dir, "utf8", name, (unsigned char)i, utf8_rows[i].input, utf8_rows[i].len);
    }
}
