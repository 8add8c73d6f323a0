/*
 * ws.c -- the WebSocket protocol (RFC 6455) without compression: frame
 * headers, unmasking, UTF-8, close payloads, the opening handshake and the
 * permessage-deflate negotiation (RFC 7692 section 5 and 7.1).
 *
 * Nothing here allocates. A frame header is small and is parsed only once
 * it is complete; payloads are the caller's, unmasked and validated in
 * whatever pieces arrive, so the only state kept between pieces is the
 * caller's offset and the UTF-8 automaton's one word.
 */
#include <string.h>

#include "internal.h"
#include "ol_ws.h"
#include "sha1.h"

/* ------------------------------------------------------------------------ */
/* Result codes                                                             */

typedef struct ws_error {
    int code;
    int close_code;
    int status;
    const char *text;
} ws_error;

static const ws_error errors[] = {
    {OL_WS_ERSV, 1002, 400, "reserved bit set"},
    {OL_WS_EOPCODE, 1002, 400, "reserved opcode"},
    {OL_WS_ECONTROL_LEN, 1002, 400, "control frame payload over 125 bytes"},
    {OL_WS_ECONTROL_FRAGMENTED, 1002, 400, "fragmented control frame"},
    {OL_WS_EFRAGMENT, 1002, 400, "data frame out of sequence"},
    {OL_WS_EUNMASKED, 1002, 400, "client frame not masked"},
    {OL_WS_ELENGTH, 1002, 400, "payload length with the top bit set"},
    {OL_WS_EUTF8, 1007, 400, "invalid UTF-8"},
    {OL_WS_ECLOSE_PAYLOAD, 1002, 400, "close payload of one byte"},
    {OL_WS_ECLOSE_CODE, 1002, 400, "close code not allowed"},
    {OL_WS_ETOO_BIG, 1009, 400, "message too big"},
    {OL_WS_EDEFLATE, 1002, 400, "corrupt compressed data"},
    {OL_WS_ENOMEM, 1011, 500, "out of memory"},
    {OL_WS_EHANDSHAKE, 1002, 400, "not a WebSocket upgrade request"},
    {OL_WS_EVERSION, 1002, 426, "unsupported Sec-WebSocket-Version"},
    {OL_WS_EKEY, 1002, 400, "invalid Sec-WebSocket-Key"},
    {OL_WS_EEXTENSION, 1002, 400, "invalid Sec-WebSocket-Extensions"},
};

static const ws_error *find_error(int code)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].code == code)
            return &errors[i];
    return NULL;
}

const char *ol_ws_strerror(int code)
{
    const ws_error *e = find_error(code);
    return e != NULL ? e->text : ol_strerror(code);
}

int ol_ws_close_code_for(int code)
{
    const ws_error *e = find_error(code);
    return e != NULL ? e->close_code : 1002;
}

int ol_ws_error_status(int code)
{
    const ws_error *e = find_error(code);
    return e != NULL ? e->status : ol_error_status(code);
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                   */

/*
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-------+-+-------------+-------------------------------+
 *  |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 *  |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 *  |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 *  | |1|2|3|       |K|             |                               |
 *  +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *  |     Extended payload length continued, if payload len == 127  |
 *  + - - - - - - - - - - - - - - - +-------------------------------+
 *  |                               |Masking-key, if MASK set to 1  |
 *  +-------------------------------+-------------------------------+
 */

static int reserved_opcode(unsigned op)
{
    return (op >= 0x3 && op <= 0x7) || op >= 0xB;
}

/* Everything the first byte can prove wrong, in a fixed order so that the
 * error never depends on how the header was split. */
static int check_first_byte(unsigned b, unsigned flags)
{
    unsigned op = b & 0x0f;
    int control = (op & 0x8) != 0;
    if (reserved_opcode(op))
        return OL_WS_EOPCODE;
    if (control && !(b & 0x80))
        return OL_WS_ECONTROL_FRAGMENTED;
    if (b & 0x30)
        return OL_WS_ERSV;
    if ((b & 0x40) && (!(flags & OL_WS_DEFLATE) || control || op == OL_WS_CONT))
        return OL_WS_ERSV;
    if (!control && (op == OL_WS_CONT) != ((flags & OL_WS_IN_MESSAGE) != 0))
        return OL_WS_EFRAGMENT;
    return 0;
}

int ol_ws_parse_header(const char *buf, size_t len, unsigned flags, ol_ws_frame *f)
{
    const unsigned char *p = (const unsigned char *)buf;
    if (len == 0)
        return OL_INCOMPLETE;
    int r = check_first_byte(p[0], flags);
    if (r != 0)
        return r;
    if (len < 2)
        return OL_INCOMPLETE;
    if (!(p[1] & 0x80))
        return OL_WS_EUNMASKED;
    unsigned len7 = p[1] & 0x7f;
    if ((p[0] & 0x08) && len7 > OL_WS_MAX_CONTROL)
        return OL_WS_ECONTROL_LEN;
    size_t extended = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (extended == 8 && len > 2 && (p[2] & 0x80))
        return OL_WS_ELENGTH;
    size_t header_len = 2 + extended + 4;
    if (len < header_len)
        return OL_INCOMPLETE;

    uint64_t length = len7;
    if (extended) {
        length = 0;
        for (size_t i = 0; i < extended; i++)
            length = length << 8 | p[2 + i];
    }
    f->fin = (uint8_t)(p[0] >> 7);
    f->rsv1 = (uint8_t)((p[0] >> 6) & 1);
    f->opcode = (uint8_t)(p[0] & 0x0f);
    f->masked = 1;
    memcpy(f->mask, p + 2 + extended, 4);
    f->length = length;
    f->header_len = header_len;
    return (int)header_len;
}

void ol_ws_unmask(char *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
    if (len == 0) /* data may be NULL */
        return;
    unsigned char *p = (unsigned char *)data, *end = p + len;
    /* The key rotated to this offset, twice: a whole word of it. Every word
     * step is a multiple of 4 bytes, so the rotation holds to the end. */
    unsigned char key[16];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = mask[(offset + i) & 3];
#if defined(__SSE2__)
    if (end - p >= 16) {
        __m128i k = _mm_loadu_si128((const __m128i *)(const void *)key);
        for (; end - p >= 16; p += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            _mm_storeu_si128((__m128i *)(void *)p, _mm_xor_si128(v, k));
        }
    }
#endif
    uint64_t k, w;
    memcpy(&k, key, 8);
    for (; end - p >= 8; p += 8) {
        memcpy(&w, p, 8);
        w ^= k;
        memcpy(p, &w, 8);
    }
    for (size_t i = 0; p < end; p++, i++)
        *p ^= key[i];
}

size_t ol_ws_frame_header(char out[OL_WS_MAX_SERVER_HEADER], int fin, int rsv1, int opcode,
                          uint64_t length)
{
    if (opcode < 0 || opcode > 0xf || reserved_opcode((unsigned)opcode) || (length >> 63))
        return 0;
    if ((opcode & 0x8) && (!fin || rsv1 || length > OL_WS_MAX_CONTROL))
        return 0;
    if (rsv1 && opcode == OL_WS_CONT)
        return 0;
    unsigned char *o = (unsigned char *)out;
    o[0] = (unsigned char)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode);
    if (length < 126) {
        o[1] = (unsigned char)length;
        return 2;
    }
    if (length <= 0xffff) {
        o[1] = 126;
        o[2] = (unsigned char)(length >> 8);
        o[3] = (unsigned char)length;
        return 4;
    }
    o[1] = 127;
    for (int i = 0; i < 8; i++)
        o[2 + i] = (unsigned char)(length >> (56 - 8 * i));
    return 10;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */

/*
 * A deterministic automaton over byte classes. The states after a lead byte
 * say how many continuation bytes are still due and, for the four leads
 * whose second byte is narrower than 80-BF (RFC 3629 section 4), which
 * range that second byte must fall in. Rejection happens on the first byte
 * that falls outside what the state allows, which is exactly the first byte
 * no continuation could make valid.
 */
enum { U_OK, U_C1, U_C2, U_C3, U_E0, U_ED, U_F0, U_F4, U_BAD };

/* Byte classes: 0 ASCII, 1 80-8F, 2 90-9F, 3 A0-BF, 4 never valid (C0 C1
 * F5-FF), 5 C2-DF, 6 E0, 7 E1-EC EE EF, 8 ED, 9 F0, 10 F1-F3, 11 F4. */
/* clang-format off */
static const unsigned char utf8_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 00-1f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 20-3f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 40-5f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 60-7f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 80-9f */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* a0-bf */
    4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, /* c0-df */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7, 9,10,10,10,11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* e0-ff */
};

/* The next state, by state and class. */
static const unsigned char utf8_next[U_BAD + 1][12] = {
    /*          ASCII 80-8F  90-9F  A0-BF  never  C2-DF  E0     E1-EF  ED     F0     F1-F3  F4 */
    [U_OK]  = { U_OK, U_BAD, U_BAD, U_BAD, U_BAD, U_C1,  U_E0,  U_C2,  U_ED,  U_F0,  U_C3,  U_F4 },
    [U_C1]  = { U_BAD, U_OK, U_OK,  U_OK,  U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_C2]  = { U_BAD, U_C1, U_C1,  U_C1,  U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_C3]  = { U_BAD, U_C2, U_C2,  U_C2,  U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_E0]  = { U_BAD, U_BAD, U_BAD, U_C1, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_ED]  = { U_BAD, U_C1, U_C1,  U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_F0]  = { U_BAD, U_BAD, U_C2, U_C2,  U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_F4]  = { U_BAD, U_C2, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
    [U_BAD] = { U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD, U_BAD },
};
/* clang-format on */

/* First byte in [s, end) that is not ASCII. */
static const unsigned char *skip_ascii(const unsigned char *s, const unsigned char *end)
{
#if defined(__SSE2__)
    for (; end - s >= 16; s += 16) {
        int m = _mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(const void *)s));
        if (m)
            return s + __builtin_ctz((unsigned)m);
    }
#else
    for (uint64_t w; end - s >= 8; s += 8) {
        memcpy(&w, s, 8);
        if (w & UINT64_C(0x8080808080808080))
            break;
    }
#endif
    while (s < end && *s < 0x80)
        s++;
    return s;
}

void ol_utf8_init(ol_utf8 *u)
{
    u->state = U_OK;
}

int ol_utf8_feed(ol_utf8 *u, const char *p, size_t n)
{
    unsigned state = u->state;
    if (state == U_BAD)
        return OL_WS_EUTF8;
    if (n == 0) /* p may be NULL */
        return 0;
    const unsigned char *s = (const unsigned char *)p, *end = s + n;
    while (s < end) {
        if (state == U_OK) {
            s = skip_ascii(s, end);
            if (s == end)
                break;
        }
        state = utf8_next[state][utf8_class[*s++]];
        if (state == U_BAD) {
            u->state = U_BAD;
            return OL_WS_EUTF8;
        }
    }
    u->state = state;
    return 0;
}

int ol_utf8_finish(const ol_utf8 *u)
{
    return u->state == U_OK ? 0 : OL_WS_EUTF8;
}

/* ------------------------------------------------------------------------ */
/* Close frames                                                             */

int ol_ws_close_code_sendable(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int ol_ws_parse_close(const char *p, size_t n, int *code, const char **reason, size_t *reason_len)
{
    if (n > OL_WS_MAX_CONTROL)
        return OL_WS_ECONTROL_LEN;
    if (n == 1)
        return OL_WS_ECLOSE_PAYLOAD;
    if (n == 0) {
        *code = OL_WS_CLOSE_NO_STATUS;
        *reason = p;
        *reason_len = 0;
        return 0;
    }
    int c = (unsigned char)p[0] << 8 | (unsigned char)p[1];
    if (!ol_ws_close_code_sendable(c))
        return OL_WS_ECLOSE_CODE;
    ol_utf8 u;
    ol_utf8_init(&u);
    if (ol_utf8_feed(&u, p + 2, n - 2) != 0 || ol_utf8_finish(&u) != 0)
        return OL_WS_EUTF8;
    *code = c;
    *reason = p + 2;
    *reason_len = n - 2;
    return 0;
}

int ol_ws_close_payload(char out[OL_WS_MAX_CONTROL], int code, const char *reason,
                        size_t reason_len)
{
    if (code == OL_WS_CLOSE_NO_STATUS)
        return 0;
    if (!ol_ws_close_code_sendable(code))
        return OL_WS_ECLOSE_CODE;
    size_t n = reason_len;
    if (n > OL_WS_MAX_CONTROL - 2) {
        /* Cut before the character that would not fit whole: back over
         * continuation bytes to the lead byte of that character. */
        n = OL_WS_MAX_CONTROL - 2;
        while (n > 0 && ((unsigned char)reason[n] & 0xc0) == 0x80)
            n--;
    }
    out[0] = (char)(code >> 8);
    out[1] = (char)(code & 0xff);
    if (n)
        memcpy(out + 2, reason, n);
    return (int)(2 + n);
}

/* ------------------------------------------------------------------------ */
/* Opening handshake                                                        */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#define KEY_LEN 24 /* base64 of 16 bytes: 22 digits and "==" */

/* The key without surrounding whitespace, or NULL if it is not base64 of
 * 16 bytes. The padding bits of the last digit are not checked: the value
 * decodes to 16 bytes either way, and only its text is hashed. */
static const char *trim_key(const char *key, size_t len)
{
    const char *p = ol__skip_ows(key, key + len), *end = key + len;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p != KEY_LEN || p[22] != '=' || p[23] != '=')
        return NULL;
    for (int i = 0; i < 22; i++)
        if (ol__base64_digit((unsigned char)p[i]) < 0)
            return NULL;
    return p;
}

int ol_ws_accept(const char *key, size_t key_len, char out[OL_WS_ACCEPT_LEN])
{
    const char *k = trim_key(key, key_len);
    if (k == NULL)
        return OL_WS_EKEY;
    ol__sha1 s;
    unsigned char digest[OL__SHA1_LEN];
    ol__sha1_init(&s);
    ol__sha1_update(&s, k, KEY_LEN);
    ol__sha1_update(&s, ws_guid, sizeof(ws_guid) - 1);
    ol__sha1_final(&s, digest);
    return (int)ol__base64(digest, sizeof(digest), out);
}

/* 1 if the comma-separated list holds `want` (a lower-case literal) as an
 * element, compared case-insensitively. */
static int list_has(ol_span list, const char *want, size_t want_len)
{
    const char *p = list.base, *end = list.base + list.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        const char *a = ol__skip_ows(p, stop), *b = stop;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (ol__ieq(a, (size_t)(b - a), want, want_len))
            return 1;
        p = comma != NULL ? comma + 1 : end;
    }
    return 0;
}

int ol_ws_check_request(const ol_request *req, ol_span *key)
{
    if (req->method_id != OL_M_GET || req->protocol != OL_PROTO_HTTP || req->version_major != 1 ||
        req->version_minor < 1 || !(req->flags & OL_REQ_UPGRADE))
        return OL_WS_EHANDSHAKE;
    int websocket = 0, versions = 0, version_13 = 0, keys = 0;
    ol_span k = {NULL, 0};
    for (size_t i = 0; i < req->num_headers; i++) {
        const ol_header *h = &req->headers[i];
        if (OL__IEQ(h->name.base, h->name.len, "upgrade")) {
            websocket |= list_has(h->value, "websocket", 9);
        } else if (OL__IEQ(h->name.base, h->name.len, "sec-websocket-version")) {
            versions++;
            version_13 = h->value.len == 2 && memcmp(h->value.base, "13", 2) == 0;
        } else if (OL__IEQ(h->name.base, h->name.len, "sec-websocket-key")) {
            keys++;
            k = h->value;
        }
    }
    if (!websocket)
        return OL_WS_EHANDSHAKE;
    if (versions != 1 || !version_13)
        return OL_WS_EVERSION;
    const char *trimmed = keys == 1 ? trim_key(k.base, k.len) : NULL;
    if (trimmed == NULL)
        return OL_WS_EKEY;
    key->base = trimmed;
    key->len = KEY_LEN;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* permessage-deflate negotiation                                           */

/*
 *   Sec-WebSocket-Extensions = 1#extension
 *   extension                = token *( ";" extension-param )
 *   extension-param          = token [ "=" ( token / quoted-string ) ]
 *
 * with optional whitespace around ",", ";" and "=", and a quoted value
 * that must be a token once unescaped (RFC 6455 section 9.1).
 */

/* Parameters of permessage-deflate, as bits for spotting repeats. */
#define P_SERVER_NCT  0x1u
#define P_CLIENT_NCT  0x2u
#define P_SERVER_BITS 0x4u
#define P_CLIENT_BITS 0x8u

typedef struct offer {
    int deflate;     /* the offer is permessage-deflate */
    int declined;    /* a parameter made it unacceptable */
    unsigned seen;   /* P_* */
    int server_bits; /* server_max_window_bits value */
    int client_bits; /* client_max_window_bits value, 0 if it had none */
    int server_nct;  /* server_no_context_takeover */
    int client_nct;  /* client_no_context_takeover */
} offer;

/* A parameter value, unescaped. Values longer than the buffer are kept as
 * a length only: no parameter of ours has one. */
typedef struct param_value {
    int present;
    size_t len;
    char text[4];
} param_value;

/* Window bits written as RFC 7692 section 7.1.2 says: 8..15, no leading
 * zeros. Returns 0 for anything else. */
static int window_bits(const param_value *v)
{
    if (v->len == 1 && (v->text[0] == '8' || v->text[0] == '9'))
        return v->text[0] - '0';
    if (v->len == 2 && v->text[0] == '1' && v->text[1] >= '0' && v->text[1] <= '5')
        return 10 + v->text[1] - '0';
    return 0;
}

static void add_param(offer *o, const char *name, size_t name_len, const param_value *v)
{
    unsigned bit;
    if (OL__IEQ(name, name_len, "server_no_context_takeover"))
        bit = P_SERVER_NCT;
    else if (OL__IEQ(name, name_len, "client_no_context_takeover"))
        bit = P_CLIENT_NCT;
    else if (OL__IEQ(name, name_len, "server_max_window_bits"))
        bit = P_SERVER_BITS;
    else if (OL__IEQ(name, name_len, "client_max_window_bits"))
        bit = P_CLIENT_BITS;
    else
        bit = 0;
    if (bit == 0 || (o->seen & bit)) {
        o->declined = 1;
        return;
    }
    o->seen |= bit;
    switch (bit) {
    case P_SERVER_NCT:
        o->server_nct = 1;
        o->declined |= v->present;
        break;
    case P_CLIENT_NCT:
        o->client_nct = 1;
        o->declined |= v->present;
        break;
    case P_SERVER_BITS:
        o->server_bits = v->present ? window_bits(v) : 0;
        o->declined |= o->server_bits == 0;
        break;
    default:
        o->client_bits = v->present ? window_bits(v) : 0;
        o->declined |= v->present && o->client_bits == 0;
        break;
    }
}

static int clamp_bits(int bits, int lowest)
{
    if (bits == 0 || bits > 15)
        return 15;
    return bits < lowest ? lowest : bits;
}

/* The response to an acceptable offer, or 0 if the server cannot grant it. */
static int accept_offer(const offer *o, const ol_ws_deflate_params *server,
                        ol_ws_deflate_params *out)
{
    int server_bits = clamp_bits(server->server_max_window_bits, 9);
    int client_bits = clamp_bits(server->client_max_window_bits, 8);
    if (o->server_bits == 8)
        return 0; /* zlib has no raw 256-byte window to compress with */
    out->server_no_context_takeover =
        (uint8_t)(o->server_nct || server->server_no_context_takeover);
    out->client_no_context_takeover =
        (uint8_t)(o->client_nct || server->client_no_context_takeover);
    if (o->seen & P_SERVER_BITS)
        out->server_max_window_bits =
            (uint8_t)(o->server_bits < server_bits ? o->server_bits : server_bits);
    else
        out->server_max_window_bits = (uint8_t)(server_bits < 15 ? server_bits : 0);
    out->client_max_window_bits = 0;
    if (o->seen & P_CLIENT_BITS) {
        int offered = o->client_bits ? o->client_bits : 15;
        int bits = offered < client_bits ? offered : client_bits;
        if (bits < 15 || o->client_bits)
            out->client_max_window_bits = (uint8_t)bits;
    }
    return 1;
}

/* A parameter's value after "=": a token, or a quoted-string that holds a
 * token once unescaped. Returns the position after it, or NULL. */
static const char *parse_value(const char *p, const char *end, param_value *v)
{
    v->present = 1;
    v->len = 0;
    if (p < end && *p == '"') {
        int incomplete;
        const char *stop = ol__skip_quoted(p, end, &incomplete);
        if (stop == NULL)
            return NULL;
        for (const char *q = p + 1; q < stop - 1; q++) {
            if (*q == '\\')
                q++;
            if (!ol__is((unsigned char)*q, OL__TOKEN))
                return NULL;
            if (v->len < sizeof(v->text))
                v->text[v->len] = *q;
            v->len++;
        }
        return v->len ? stop : NULL;
    }
    const char *start = p;
    p = ol__skip_token(p, end);
    v->len = (size_t)(p - start);
    memcpy(v->text, start, v->len < sizeof(v->text) ? v->len : sizeof(v->text));
    return v->len ? p : NULL;
}

int ol_ws_negotiate_deflate(const char *value, size_t len, const ol_ws_deflate_params *server,
                            ol_ws_deflate_params *out)
{
    const char *p = value, *end = value + len;
    const ol_ws_deflate_params defaults = {0};
    if (server == NULL)
        server = &defaults;
    int accepted = 0;
    for (;;) {
        p = ol__skip_ows(p, end);
        if (p == end)
            return accepted;
        if (*p == ',') { /* an empty list element */
            p++;
            continue;
        }
        const char *name = p;
        p = ol__skip_token(p, end);
        if (p == name)
            return OL_WS_EEXTENSION;
        offer o = {0};
        o.deflate = OL__IEQ(name, (size_t)(p - name), "permessage-deflate");
        for (;;) {
            p = ol__skip_ows(p, end);
            if (p == end || *p != ';')
                break;
            p = ol__skip_ows(p + 1, end);
            const char *pname = p;
            p = ol__skip_token(p, end);
            if (p == pname)
                return OL_WS_EEXTENSION;
            size_t pname_len = (size_t)(p - pname);
            param_value v = {0};
            const char *q = ol__skip_ows(p, end);
            if (q < end && *q == '=') {
                p = parse_value(ol__skip_ows(q + 1, end), end, &v);
                if (p == NULL)
                    return OL_WS_EEXTENSION;
            }
            if (o.deflate)
                add_param(&o, pname, pname_len, &v);
        }
        if (p < end && *p != ',')
            return OL_WS_EEXTENSION;
        if (!accepted && o.deflate && !o.declined)
            accepted = accept_offer(&o, server, out);
        if (p < end)
            p++;
    }
}

int ol_ws_deflate_response(const ol_ws_deflate_params *p, char *out, size_t cap)
{
    char text[160];
    size_t n = 0;
#define PUT(s)                                                                                     \
    do {                                                                                           \
        memcpy(text + n, s, sizeof(s) - 1);                                                        \
        n += sizeof(s) - 1;                                                                        \
    } while (0)
    PUT("permessage-deflate");
    if (p->server_no_context_takeover)
        PUT("; server_no_context_takeover");
    if (p->client_no_context_takeover)
        PUT("; client_no_context_takeover");
    const uint8_t bits[2] = {p->server_max_window_bits, p->client_max_window_bits};
    for (int i = 0; i < 2; i++) {
        if (bits[i] == 0)
            continue;
        if (i == 0)
            PUT("; server_max_window_bits=");
        else
            PUT("; client_max_window_bits=");
        unsigned b = bits[i] > 15 ? 15 : bits[i];
        if (b >= 10)
            text[n++] = '1';
        text[n++] = (char)('0' + b % 10);
    }
#undef PUT
    if (n > cap)
        return OL_ENOSPACE;
    memcpy(out, text, n);
    return (int)n;
}
