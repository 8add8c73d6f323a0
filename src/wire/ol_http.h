/*
 * ol_http.h -- oneloop's HTTP/1.1 wire layer.
 *
 * Pure C99 with no dependency beyond libc and no Python.h: the request parser
 * (RFC 9112), the chunked body decoder, and the response-head serializer. The
 * connection code in the binding layer, the C tests, the fuzz targets and the
 * benchmarks all link this one static library.
 *
 * Conventions
 *
 *   - Nothing here allocates. Every function works on buffers the caller owns
 *     and reports spans (pointer + length) into them. A span stays valid for
 *     as long as the caller keeps the bytes it points into unchanged.
 *   - Functions return a non-negative count or one of the negative OL_E*
 *     codes below; OL_INCOMPLETE (-1) means "give me more bytes".
 *   - Strict by default. Anything that two HTTP implementations could frame
 *     differently (request smuggling) is an error, not a guess.
 *   - Thread safety: no global mutable state; the Date cache is owned by the
 *     caller, who serialises access to it.
 */
#ifndef OL_HTTP_H
#define OL_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Result codes                                                             */

enum {
    OL_INCOMPLETE = -1, /* more input is needed */

    /* Request line. */
    OL_EMETHOD = -2,              /* method is empty or not a token */
    OL_EMETHOD_UNKNOWN = -3,      /* unused: any token is an HTTP method */
    OL_ETARGET = -4,              /* empty, a byte outside 0x21-0x7E, or the wrong form */
    OL_EPROTOCOL = -5,            /* not HTTP/RTSP/ICE, or method not valid for it */
    OL_EVERSION = -6,             /* version is not DIGIT "." DIGIT */
    OL_EVERSION_UNSUPPORTED = -7, /* major version other than 1, or the HTTP/2 preface */
    OL_EURI_TOO_LONG = -8,        /* request line longer than the limit */

    /* Lines and fields. */
    OL_ELINE = -9,               /* a line not ended by CRLF (bare CR, bare LF, stray byte) */
    OL_EOBS_FOLD = -10,          /* a field line starting with whitespace */
    OL_EFIELD_NAME = -11,        /* empty name, non-token byte, or whitespace before ':' */
    OL_EFIELD_VALUE = -12,       /* control byte in a field value */
    OL_EHEADERS_TOO_LARGE = -13, /* one field line, or the whole head, over its limit */
    OL_ETOO_MANY_HEADERS = -14,  /* more field lines than the limit */
    OL_EHOST = -15,              /* Host missing in HTTP/1.1, or present twice */

    /* Framing. */
    OL_ECONTENT_LENGTH = -16,          /* Content-Length not 1*DIGIT */
    OL_ECONTENT_LENGTH_DUP = -17,      /* more than one Content-Length field */
    OL_ECONTENT_LENGTH_OVERFLOW = -18, /* Content-Length does not fit in 63 bits */
    OL_ECL_AND_TE = -19,               /* both Content-Length and Transfer-Encoding */
    OL_ETRANSFER_ENCODING = -20,       /* chunked missing, not final, repeated, or HTTP/1.0 */

    /* Chunked body. */
    OL_ECHUNK_SIZE = -21,         /* chunk size not 1*HEXDIG, or overflows */
    OL_ECHUNK_EXT = -22,          /* malformed chunk extension */
    OL_ECHUNK_EXT_TOO_LONG = -23, /* chunk extensions of one message over their cap */
    OL_ECHUNK_DATA = -24,         /* chunk data not followed by CRLF */
    OL_ETRAILERS_TOO_LARGE = -25, /* trailer section over its size or count limit */

    /* Response serializer. */
    OL_ESTATUS = -26,  /* status code outside 100-999 */
    OL_ENOSPACE = -27, /* output buffer too small */

    /* Added later, numbered after the others so no code changes meaning. */
    OL_ETRAILER_FIELD = -28, /* a field a trailer section must not carry (RFC 9110 6.5.1) */

    OL_ERROR_MIN = -28
};

/* A short English description of a result code ("invalid chunk size"). */
const char *ol_strerror(int code);

/* The HTTP status a server should answer an error with: 400, 413, 414, 431,
 * 501 or 505. Returns 400 for codes that are not parse errors. */
int ol_error_status(int code);

/* ------------------------------------------------------------------------ */
/* Spans and limits                                                         */

typedef struct ol_span {
    const char *base;
    size_t len;
} ol_span;

typedef struct ol_header {
    ol_span name;  /* as received; match it case-insensitively */
    ol_span value; /* leading and trailing whitespace removed */
} ol_header;

/* Limits enforced while parsing. ol_limits_default() fills in safe values;
 * each one corresponds to a server option. */
typedef struct ol_limits {
    size_t max_request_line; /* bytes of the request line, CRLF excluded -> 414 */
    size_t max_field_size;   /* bytes of one field line, CRLF excluded  -> 431 */
    size_t max_fields;       /* number of field lines                   -> 431 */
    size_t max_head_size;    /* bytes of the whole head                 -> 431 */
    size_t max_chunk_ext;    /* chunk-extension bytes in one message    -> 400 */
    size_t max_trailer_size; /* bytes of the trailer section            -> 431 */
    unsigned flags;          /* OL_REQUIRE_HOST */
} ol_limits;

/* Reject HTTP/1.1 requests without a Host field, and any request with two. */
#define OL_REQUIRE_HOST 0x1u

void ol_limits_default(ol_limits *limits);

/* ------------------------------------------------------------------------ */
/* Request head                                                             */

enum ol_protocol { OL_PROTO_HTTP = 0, OL_PROTO_RTSP = 1, OL_PROTO_ICE = 2 };

enum ol_framing {
    OL_BODY_NONE = 0,   /* no body: neither Content-Length nor Transfer-Encoding */
    OL_BODY_LENGTH = 1, /* exactly content_length bytes follow */
    OL_BODY_CHUNKED = 2 /* chunked; decode with ol_chunked_decode() */
};

/* Request flags (ol_request.flags). */
#define OL_REQ_KEEP_ALIVE      0x01u /* connection persists after this message */
#define OL_REQ_UPGRADE         0x02u /* Connection: upgrade plus an Upgrade field */
#define OL_REQ_CONNECT         0x04u /* method is CONNECT */
#define OL_REQ_EXPECT_CONTINUE 0x08u /* Expect: 100-continue */
#define OL_REQ_TE_OTHER        0x10u /* a transfer coding other than chunked precedes it */
#define OL_REQ_SIMPLE          0x20u /* HTTP/0.9 simple request: request line only */

/* Well-known method ids; everything else in the method table is OL_M_OTHER. */
enum ol_method {
    OL_M_OTHER = 0,
    OL_M_GET,
    OL_M_HEAD,
    OL_M_POST,
    OL_M_PUT,
    OL_M_DELETE,
    OL_M_PATCH,
    OL_M_OPTIONS,
    OL_M_CONNECT,
    OL_M_TRACE,
    OL_M_PRI /* only ever reported as OL_EVERSION_UNSUPPORTED */
};

typedef struct ol_request {
    /* Set by the caller before parsing. */
    ol_header *headers; /* room for at least limits->max_fields entries */

    /* Filled in by ol_parse_request() when it returns a head length. */
    ol_span method;
    ol_span target;
    int method_id;     /* enum ol_method */
    int protocol;      /* enum ol_protocol */
    int version_major; /* 1, or 0 for an HTTP/0.9 simple request */
    int version_minor; /* as sent: HTTP/1.2 reports 2 (treat it as 1.1) */
    size_t num_headers;
    int framing;             /* enum ol_framing */
    uint64_t content_length; /* valid when framing == OL_BODY_LENGTH */
    unsigned flags;          /* OL_REQ_* */
    ol_span host;            /* value of Host, len 0 if absent */
    ol_span upgrade;         /* value of Upgrade, len 0 if absent */
} ol_request;

/*
 * Resumption state of one request head. Zero it (ol_parser_init) before the
 * first call for each head and pass the same struct until the call returns
 * something other than OL_INCOMPLETE. It remembers how far the previous call
 * got, so a head that trickles in a byte at a time is not re-validated from
 * its start on every call. It holds offsets, never pointers: the caller may
 * move or grow its buffer between calls as long as the bytes keep their
 * order.
 */
typedef struct ol_parser {
    size_t line;    /* offset of the first line not yet complete; 0 = request line */
    size_t fields;  /* complete field lines before `line` */
    unsigned state; /* private: what those lines said about framing */
    uint64_t content_length;
} ol_parser;

static inline void ol_parser_init(ol_parser *ps)
{
    ps->line = 0;
    ps->fields = 0;
    ps->state = 0;
    ps->content_length = 0;
}

/*
 * Parse the request head at the start of buf[0..len).
 *
 * Returns the head's length in bytes (any empty lines before the request
 * line, the request line, the field lines and the final CRLF), OL_INCOMPLETE,
 * or a negative error. On success *req is filled in and its spans point into
 * buf. On OL_INCOMPLETE or an error *req is unspecified.
 *
 * Errors are reported as soon as the bytes prove them, even in a line that
 * is not complete yet (an overflowing Content-Length, a second
 * Content-Length, a version other than 1.x). They are final: the caller
 * answers with ol_error_status() and closes the connection. Whether a head
 * is rejected never depends on how its bytes were split across calls; which
 * fault is reported for a head that is wrong in more than one way can.
 */
int ol_parse_request(ol_parser *ps, const char *buf, size_t len, ol_request *req,
                     const ol_limits *limits);

/* ------------------------------------------------------------------------ */
/* Chunked body                                                             */

typedef struct ol_chunked {
    /* Where OL_CHUNK_DONE leaves the trailer fields; they point into the
     * buffer of that final call. ol_chunked_init() sets trailers to NULL
     * (trailers are then validated and dropped) and max_trailers to the
     * field limit; set both after init to receive them. */
    ol_header *trailers;
    size_t max_trailers;
    size_t num_trailers;

    /* Private. */
    int state;
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t ext_total;   /* chunk-extension bytes seen in this message */
    size_t max_ext;
    size_t max_trailer_size;
} ol_chunked;

/* Prepare to decode one message body. Limits may be NULL for defaults. */
void ol_chunked_init(ol_chunked *dec, const ol_limits *limits);

#define OL_CHUNK_DONE 2 /* body and trailer section complete */
#define OL_CHUNK_DATA 1 /* *data holds body bytes */

/*
 * Decode the next piece of a chunked body from buf[0..len).
 *
 * Sets *consumed to the bytes used and returns
 *   OL_CHUNK_DATA  *data spans body bytes inside buf;
 *   OL_CHUNK_DONE  the message ended after *consumed bytes; trailers are set;
 *   OL_INCOMPLETE  call again with the unconsumed bytes plus more. A chunk
 *                  size line and the trailer section are only consumed once
 *                  complete, so the caller must keep those bytes;
 *   an OL_E* error, after which the decoder must not be used again.
 *
 * Syntax is strict: 1*HEXDIG with no whitespace in it, extensions as
 * BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] (RFC 9112
 * 7.1.1), and CRLF after the size line and after each chunk's data. The
 * trailer section must not carry the fields RFC 9110 6.5.1 says cannot be
 * processed after the content (framing, routing, connection control,
 * request modifiers, authentication): OL_ETRAILER_FIELD. The decoder never reads
 * beyond buf[len - 1] and keeps no pointer into buf between calls.
 */
int ol_chunked_decode(ol_chunked *dec, const char *buf, size_t len, size_t *consumed,
                      ol_span *data);

/*
 * Parse a block of field lines ending with an empty line, such as a trailer
 * section, with the same rules as request header fields. Returns the bytes
 * used, OL_INCOMPLETE or an error; fills fields[0..*count).
 */
int ol_parse_fields(const char *buf, size_t len, ol_header *fields, size_t max_fields,
                    size_t *count, size_t max_size);

/* ------------------------------------------------------------------------ */
/* Response head                                                            */

/* The reason phrase for a status, or "" for codes without one. */
const char *ol_reason_phrase(int status);

/* 1 if name is a non-empty token, 0 otherwise. */
int ol_valid_field_name(const char *name, size_t len);

/* 1 if value has no CR, LF, NUL or other control byte except HTAB. */
int ol_valid_field_value(const char *value, size_t len);

/*
 * Write "HTTP/1.<minor> <status> <reason>\r\n" followed by each header as
 * "name: value\r\n" into out[0..cap). The terminating empty line is not
 * written, so the caller can append its own fields (Date, Content-Length).
 *
 * Returns the bytes written, OL_ESTATUS, OL_EFIELD_NAME, OL_EFIELD_VALUE,
 * or OL_ENOSPACE (nothing usable was written; ol_response_head_size()
 * tells how much room is needed).
 */
long ol_response_head(char *out, size_t cap, int minor, int status, const ol_header *headers,
                      size_t num_headers);

/* The exact number of bytes ol_response_head() writes for these arguments. */
size_t ol_response_head_size(int status, const ol_header *headers, size_t num_headers);

/* ------------------------------------------------------------------------ */
/* Date                                                                     */

#define OL_HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* Format t as an IMF-fixdate into out (exactly OL_HTTP_DATE_LEN bytes, no NUL). */
void ol_format_http_date(char *out, time_t t);

/* A cached IMF-fixdate, reformatted at most once per second. */
typedef struct ol_date_cache {
    time_t second;
    char text[OL_HTTP_DATE_LEN + 1];
} ol_date_cache;

/* Return the date for `now`, reformatting only when the second changed. */
const char *ol_date_cache_get(ol_date_cache *cache, time_t now);

#ifdef __cplusplus
}
#endif
#endif /* OL_HTTP_H */
