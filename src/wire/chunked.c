/*
 * chunked.c -- the chunked transfer coding of request bodies (RFC 9112 7.1).
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *
 * Data is handed back as spans into the caller's buffer, never copied. Size
 * lines and the trailer section are parsed only once they are complete in
 * the buffer; both are short and capped, so re-scanning a partial one when
 * more bytes arrive costs little and keeps the decoder free of per-byte
 * state.
 */
#include "internal.h"

enum { C_SIZE, C_DATA, C_DATA_END, C_TRAILERS, C_DONE };

/* More hex digits than this is an attack, not a chunk size, even if they
 * are leading zeros. */
#define MAX_SIZE_DIGITS 32

void ol_chunked_init(ol_chunked *dec, const ol_limits *limits)
{
    ol_limits defaults;
    if (limits == NULL) {
        ol_limits_default(&defaults);
        limits = &defaults;
    }
    dec->trailers = NULL;
    dec->max_trailers = limits->max_fields;
    dec->num_trailers = 0;
    dec->state = C_SIZE;
    dec->remaining = 0;
    dec->ext_total = 0;
    dec->max_ext = limits->max_chunk_ext;
    dec->max_trailer_size = limits->max_trailer_size;
}

/* chunk-ext-item = BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] (RFC 9112
 * 7.1.1); p points at the ';'. BWS is there because senders did put
 * whitespace around ';' and '=', and it cannot change framing: the size is
 * already read. On OL_INCOMPLETE *pp is moved to end so the caller can apply
 * its cap. */
static int skip_extension(const char **pp, const char *end)
{
    const char *p = ol__skip_ows(*pp + 1, end);
    const char *name = p;
    p = ol__skip_token(p, end);
    if (p < end && p == name)
        return OL_ECHUNK_EXT;
    const char *eq = ol__skip_ows(p, end);
    if (eq == end) {
        p = end; /* an '=' may still come */
    } else if (*eq == '=') {
        p = ol__skip_ows(eq + 1, end);
        if (p < end && *p == '"') {
            int incomplete;
            const char *q = ol__skip_quoted(p, end, &incomplete);
            if (q == NULL && !incomplete)
                return OL_ECHUNK_EXT;
            p = q != NULL ? q : end;
        } else {
            const char *value = p;
            p = ol__skip_token(p, end);
            if (p < end && p == value)
                return OL_ECHUNK_EXT;
        }
    }
    *pp = p;
    return p == end ? OL_INCOMPLETE : 0;
}

/* chunk-size [ chunk-ext ] CRLF */
static int parse_size_line(ol_chunked *dec, const char *p, const char *end, const char **next)
{
    uint64_t size = 0;
    size_t digits = 0;
    for (; p < end && ol__is((unsigned char)*p, OL__HEX); p++) {
        if (size > (UINT64_C(0x7fffffffffffffff) >> 4) || ++digits > MAX_SIZE_DIGITS)
            return OL_ECHUNK_SIZE;
        size = size << 4 | (uint64_t)ol__hexval((unsigned char)*p);
    }
    if (p == end)
        return OL_INCOMPLETE;
    if (digits == 0)
        return OL_ECHUNK_SIZE;

    /* Whitespace counts against the extension cap like the extensions it
     * may precede, so a run of it is bounded too. Whitespace not followed
     * by ';' (as in "5 \r\n") is an error. */
    const char *ext = p;
    for (;;) {
        const char *semi = ol__skip_ows(p, end), *reach = semi;
        int r = semi == end ? OL_INCOMPLETE : 0;
        if (r == 0 && *semi == ';') {
            p = semi;
            r = skip_extension(&p, end);
            reach = p;
        }
        /* reach, not p: the cap must not depend on whether the byte after
         * the whitespace has arrived yet. */
        if (dec->ext_total + (size_t)(reach - ext) > dec->max_ext)
            return OL_ECHUNK_EXT_TOO_LONG;
        if (r != 0)
            return r;
        if (*semi != ';')
            break;
    }
    if (*p != '\r')
        return p == ext ? OL_ECHUNK_SIZE : OL_ECHUNK_EXT;
    if (p + 1 == end)
        return OL_INCOMPLETE;
    if (p[1] != '\n')
        return OL_ECHUNK_SIZE;
    dec->ext_total += (size_t)(p - ext);
    dec->remaining = size;
    *next = p + 2;
    return 0;
}

/* The CRLF that must follow each chunk's data. */
static int parse_data_end(const char *p, const char *end)
{
    if (p == end)
        return OL_INCOMPLETE;
    if (*p != '\r')
        return OL_ECHUNK_DATA;
    if (p + 1 == end)
        return OL_INCOMPLETE;
    return p[1] == '\n' ? 0 : OL_ECHUNK_DATA;
}

static int take_data(ol_chunked *dec, const char **pp, const char *end, ol_span *data)
{
    const char *p = *pp;
    if (p == end)
        return OL_INCOMPLETE;
    size_t avail = (size_t)(end - p);
    size_t n = dec->remaining < avail ? (size_t)dec->remaining : avail;
    data->base = p;
    data->len = n;
    dec->remaining -= n;
    if (dec->remaining == 0)
        dec->state = C_DATA_END;
    *pp = p + n;
    return OL_CHUNK_DATA;
}

static int take_trailers(ol_chunked *dec, const char **pp, const char *end)
{
    size_t count;
    int r = ol__parse_field_block(*pp, (size_t)(end - *pp), dec->trailers, dec->max_trailers,
                                  &count, dec->max_trailer_size, 1);
    if (r < 0)
        return r;
    dec->num_trailers = count;
    dec->state = C_DONE;
    *pp += r;
    return OL_CHUNK_DONE;
}

int ol_chunked_decode(ol_chunked *dec, const char *buf, size_t len, size_t *consumed, ol_span *data)
{
    const char *p = buf, *end = buf + len, *next;
    int r = 0;
    while (r == 0) {
        switch (dec->state) {
        case C_SIZE:
            r = parse_size_line(dec, p, end, &next);
            if (r == 0) {
                p = next;
                dec->state = dec->remaining != 0 ? C_DATA : C_TRAILERS;
            }
            break;
        case C_DATA:
            r = take_data(dec, &p, end, data);
            break;
        case C_DATA_END:
            r = parse_data_end(p, end);
            if (r == 0) {
                p += 2;
                dec->state = C_SIZE;
            }
            break;
        case C_TRAILERS:
            r = take_trailers(dec, &p, end);
            break;
        default:
            r = OL_CHUNK_DONE;
            break;
        }
    }
    *consumed = (size_t)(p - buf);
    return r;
}
