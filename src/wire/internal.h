/*
 * internal.h -- declarations shared between the wire layer's source files.
 * Nothing here is part of the public interface in ol_http.h.
 */
#ifndef OL_INTERNAL_H
#define OL_INTERNAL_H

#include "chars.h"
#include "ol_http.h"

/* What scan_field() found in one line. */
typedef struct ol__field {
    ol_header h;
    int have_name;     /* the name and its colon were complete */
    const char *value; /* start of the value after leading OWS, or NULL */
    const char *stop;  /* where the scan of the value stopped */
} ol__field;

#define OL__FIELD 0 /* a complete field line */
#define OL__END   1 /* the empty line that ends a field section */

/*
 * Scan one field line at p. Returns OL__FIELD (f->h filled, *next past the
 * CRLF), OL__END (*next past the CRLF), OL_INCOMPLETE (f says how far the
 * line got, so callers can check a partial line early), or an error.
 * Validates syntax only; the meaning of fields is the caller's business.
 */
int ol__scan_field(const char *p, const char *end, ol__field *f, const char **next);

/* ol_parse_fields(); with trailers set, also refuse the fields a trailer
 * section must not carry (OL_ETRAILER_FIELD). */
int ol__parse_field_block(const char *buf, size_t len, ol_header *fields, size_t max_fields,
                          size_t *count, size_t max_size, int trailers);

/* Skip optional whitespace (SP / HTAB). */
static inline const char *ol__skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Skip a token; returns p unchanged when there is none. */
static inline const char *ol__skip_token(const char *p, const char *end)
{
    while (p < end && ol__is((unsigned char)*p, OL__TOKEN))
        p++;
    return p;
}

/*
 * Skip a quoted-string starting at p (which must point at the opening
 * DQUOTE). Returns the position after the closing DQUOTE, or NULL if a byte
 * is not allowed in a quoted-string; sets *incomplete (and returns NULL)
 * when the input ends inside it.
 */
const char *ol__skip_quoted(const char *p, const char *end, int *incomplete);

#endif /* OL_INTERNAL_H */
