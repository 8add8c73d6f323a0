/*
 * fields.c -- field lines (RFC 9112 section 5), shared by request heads and
 * trailer sections, and the small lexical helpers both need.
 *
 *   field-line = field-name ":" OWS field-value OWS CRLF
 *
 * Strict rules applied here: the line ends in CRLF (no bare CR or LF), the
 * name is a non-empty token directly followed by ':' (whitespace before the
 * colon is a smuggling vector and is rejected), a line starting with
 * whitespace is obsolete line folding and is rejected, and the value holds
 * no control bytes other than HTAB.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* Finish a value at the CR or LF found at p. */
static int end_of_value(const char *p, const char *end)
{
    if (*p == '\n')
        return OL_ELINE;
    if (*p != '\r')
        return OL_EFIELD_VALUE;
    if (p + 1 == end)
        return OL_INCOMPLETE;
    return p[1] == '\n' ? 0 : OL_ELINE;
}

int ol__scan_field(const char *p, const char *end, ol__field *f, const char **next)
{
    f->have_name = 0;
    f->value = NULL;
    if (p == end)
        return OL_INCOMPLETE;
    if (*p == '\r') {
        if (p + 1 == end)
            return OL_INCOMPLETE;
        if (p[1] != '\n')
            return OL_ELINE;
        *next = p + 2;
        return OL__END;
    }
    if (*p == '\n')
        return OL_ELINE;
    if (*p == ' ' || *p == '\t')
        return OL_EOBS_FOLD;

    const char *name = p;
    p = ol__skip_token(p, end);
    if (p == end)
        return OL_INCOMPLETE;
    if (*p != ':' || p == name)
        return OL_EFIELD_NAME;
    f->h.name.base = name;
    f->h.name.len = (size_t)(p - name);
    f->have_name = 1;

    p = ol__skip_ows(p + 1, end);
    if (p == end)
        return OL_INCOMPLETE;
    const char *value = p;
    f->value = value;
    p = ol__scan_value(p, end);
    f->stop = p;
    if (p == end)
        return OL_INCOMPLETE;
    int r = end_of_value(p, end);
    if (r != 0)
        return r;

    const char *vend = p;
    while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
        vend--;
    f->h.value.base = value;
    f->h.value.len = (size_t)(vend - value);
    *next = p + 2;
    return OL__FIELD;
}

const char *ol__skip_quoted(const char *p, const char *end, int *incomplete)
{
    *incomplete = 0;
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (++p == end)
                break;
            if (!ol__is((unsigned char)*p, OL__VALUE))
                return NULL;
        } else if (!ol__is(c, OL__QDTEXT)) {
            return NULL;
        }
    }
    *incomplete = 1;
    return NULL;
}

/*
 * Fields a trailer section must not carry: RFC 9110 6.5.1 says those needed
 * before the content can be processed -- framing, routing, connection
 * control, request modifiers, authentication -- cannot come after it. A
 * recipient that merged one into the header section (a proxy, a framework)
 * would let a trailer change what the head already decided, so the message
 * is refused rather than the field dropped. Content-Type and the other
 * descriptive content fields are not here: they change nothing about how
 * the message is framed or routed.
 */
static int forbidden_in_trailer(ol_span name)
{
    static const char *const names[] = {
        "content-length",
        "transfer-encoding",
        "trailer",
        "host",
        "connection",
        "keep-alive",
        "upgrade",
        "proxy-connection",
        "te",
        "expect",
        "max-forwards",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "cache-control",
        "pragma",
        "authorization",
        "proxy-authorization",
        "content-encoding",
        "content-range",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (ol__ieq(name.base, name.len, names[i], strlen(names[i])))
            return 1;
    return 0;
}

int ol__parse_field_block(const char *buf, size_t len, ol_header *fields, size_t max_fields,
                          size_t *count, size_t max_size, int trailers)
{
    const char *p = buf, *end = buf + len;
    size_t n = 0;
    for (;;) {
        ol__field f;
        const char *next;
        int r = ol__scan_field(p, end, &f, &next);
        if (r == OL_INCOMPLETE) {
            if (trailers && f.have_name && forbidden_in_trailer(f.h.name))
                return OL_ETRAILER_FIELD; /* as soon as the name proves it */
            return len > max_size ? OL_ETRAILERS_TOO_LARGE : OL_INCOMPLETE;
        }
        if (r < 0)
            return r;
        /* Before the size check, as on the incomplete path above, so that
         * the error does not depend on how the bytes arrived. */
        if (r == OL__FIELD && trailers && forbidden_in_trailer(f.h.name))
            return OL_ETRAILER_FIELD;
        if ((size_t)(next - buf) > max_size)
            return OL_ETRAILERS_TOO_LARGE;
        if (r == OL__END) {
            *count = n;
            return (int)(next - buf);
        }
        if (n == max_fields)
            return OL_ETRAILERS_TOO_LARGE;
        if (fields != NULL)
            fields[n] = f.h;
        n++;
        p = next;
    }
}

int ol_parse_fields(const char *buf, size_t len, ol_header *fields, size_t max_fields,
                    size_t *count, size_t max_size)
{
    return ol__parse_field_block(buf, len, fields, max_fields, count, max_size, 0);
}
