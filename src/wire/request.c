/*
 * request.c -- the request head: request line, header fields and the framing
 * they imply (RFC 9112 sections 2-7).
 *
 * The parser is a straight scan over the caller's buffer. When a head arrives
 * in pieces, ol_parser remembers where the first incomplete line starts and
 * what the complete lines before it said about framing, so each call only
 * looks at new lines; when the head finally completes it is scanned once more
 * from the start to fill in the spans (the caller may have moved its buffer
 * in between, so spans from earlier calls cannot be kept).
 */
#include <string.h>

#include "internal.h"

void ol_limits_default(ol_limits *limits)
{
    limits->max_request_line = 8190;
    limits->max_field_size = 8190;
    limits->max_fields = 100;
    limits->max_head_size = 65536;
    limits->max_chunk_ext = 16384;
    limits->max_trailer_size = 8192;
    limits->flags = OL_REQUIRE_HOST;
}

/* ------------------------------------------------------------------------ */
/* Methods                                                                  */

#define P_HTTP 1u
#define P_RTSP 2u
#define P_ICE  4u

typedef struct method {
    const char *name;
    unsigned char len;
    unsigned char id;
    unsigned char protocols;
} method;

/* Methods we know by name, most frequent first. The set is llhttp's: the HTTP
 * methods of RFC 9110 and the WebDAV/CalDAV/UPnP extensions, plus those of
 * RTSP and ICE so that requests of those protocols are at least parsed. Over
 * HTTP any other token is a method too (RFC 9110 9.1: the set is extensible,
 * and what an unknown one means is the application's business); RTSP and ICE
 * requests must use one of theirs. */
static const method methods[] = {
    {"GET", 3, OL_M_GET, P_HTTP | P_RTSP},
    {"POST", 4, OL_M_POST, P_HTTP | P_RTSP},
    {"PUT", 3, OL_M_PUT, P_HTTP},
    {"HEAD", 4, OL_M_HEAD, P_HTTP},
    {"DELETE", 6, OL_M_DELETE, P_HTTP},
    {"PATCH", 5, OL_M_PATCH, P_HTTP},
    {"OPTIONS", 7, OL_M_OPTIONS, P_HTTP | P_RTSP},
    {"CONNECT", 7, OL_M_CONNECT, P_HTTP},
    {"TRACE", 5, OL_M_TRACE, P_HTTP},
    {"QUERY", 5, OL_M_OTHER, P_HTTP},
    {"PURGE", 5, OL_M_OTHER, P_HTTP},
    {"COPY", 4, OL_M_OTHER, P_HTTP},
    {"LOCK", 4, OL_M_OTHER, P_HTTP},
    {"MKCOL", 5, OL_M_OTHER, P_HTTP},
    {"MOVE", 4, OL_M_OTHER, P_HTTP},
    {"PROPFIND", 8, OL_M_OTHER, P_HTTP},
    {"PROPPATCH", 9, OL_M_OTHER, P_HTTP},
    {"SEARCH", 6, OL_M_OTHER, P_HTTP},
    {"UNLOCK", 6, OL_M_OTHER, P_HTTP},
    {"BIND", 4, OL_M_OTHER, P_HTTP},
    {"REBIND", 6, OL_M_OTHER, P_HTTP},
    {"UNBIND", 6, OL_M_OTHER, P_HTTP},
    {"ACL", 3, OL_M_OTHER, P_HTTP},
    {"REPORT", 6, OL_M_OTHER, P_HTTP},
    {"MKACTIVITY", 10, OL_M_OTHER, P_HTTP},
    {"CHECKOUT", 8, OL_M_OTHER, P_HTTP},
    {"MERGE", 5, OL_M_OTHER, P_HTTP},
    {"M-SEARCH", 8, OL_M_OTHER, P_HTTP},
    {"NOTIFY", 6, OL_M_OTHER, P_HTTP},
    {"SUBSCRIBE", 9, OL_M_OTHER, P_HTTP},
    {"UNSUBSCRIBE", 11, OL_M_OTHER, P_HTTP},
    {"MKCALENDAR", 10, OL_M_OTHER, P_HTTP},
    {"LINK", 4, OL_M_OTHER, P_HTTP},
    {"UNLINK", 6, OL_M_OTHER, P_HTTP},
    {"SOURCE", 6, OL_M_OTHER, P_HTTP | P_ICE},
    {"PRI", 3, OL_M_PRI, P_HTTP},
    {"DESCRIBE", 8, OL_M_OTHER, P_RTSP},
    {"ANNOUNCE", 8, OL_M_OTHER, P_RTSP},
    {"SETUP", 5, OL_M_OTHER, P_RTSP},
    {"PLAY", 4, OL_M_OTHER, P_RTSP},
    {"PAUSE", 5, OL_M_OTHER, P_RTSP},
    {"TEARDOWN", 8, OL_M_OTHER, P_RTSP},
    {"GET_PARAMETER", 13, OL_M_OTHER, P_RTSP},
    {"SET_PARAMETER", 13, OL_M_OTHER, P_RTSP},
    {"REDIRECT", 8, OL_M_OTHER, P_RTSP},
    {"RECORD", 6, OL_M_OTHER, P_RTSP},
    {"FLUSH", 5, OL_M_OTHER, P_RTSP},
};

/* Methods are case-sensitive (RFC 9110 section 9.1). */
static const method *find_method(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].len == len && memcmp(methods[i].name, name, len) == 0)
            return &methods[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Request line                                                             */

/* 1 if p starts with lit, -1 if the input ends while it still could, 0 if not. */
static int starts_with(const char *p, const char *end, const char *lit, size_t n)
{
    size_t avail = (size_t)(end - p);
    if (memcmp(p, lit, avail < n ? avail : n) != 0)
        return 0;
    return avail >= n ? 1 : -1;
}

/* Recognise "HTTP/", "RTSP/" or "ICE/" at *pp. */
static int parse_protocol(const char **pp, const char *end, int *protocol)
{
    static const struct {
        const char *lit;
        size_t len;
        int protocol;
    } names[] = {
        {"HTTP/", 5, OL_PROTO_HTTP}, {"RTSP/", 5, OL_PROTO_RTSP}, {"ICE/", 4, OL_PROTO_ICE}};
    int maybe = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int r = starts_with(*pp, end, names[i].lit, names[i].len);
        if (r == 1) {
            *pp += names[i].len;
            *protocol = names[i].protocol;
            return 0;
        }
        maybe |= r == -1;
    }
    return maybe ? OL_INCOMPLETE : OL_EPROTOCOL;
}

/* Return OL_INCOMPLETE from the caller when the input ends at p. */
#define NEXT_OR_INCOMPLETE(p, end)                                                                 \
    do {                                                                                           \
        if ((p) == (end))                                                                          \
            return OL_INCOMPLETE;                                                                  \
    } while (0)

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* HTTP-version = DIGIT "." DIGIT, then CRLF. A major version other than 1 is
 * refused as soon as its digit arrives. */
static int parse_version(const char *p, const char *end, ol_request *req, const char **next)
{
    NEXT_OR_INCOMPLETE(p, end);
    if (!is_digit(*p))
        return OL_EVERSION;
    if (*p != '1')
        return OL_EVERSION_UNSUPPORTED;
    NEXT_OR_INCOMPLETE(++p, end);
    if (*p != '.')
        return OL_EVERSION;
    NEXT_OR_INCOMPLETE(++p, end);
    if (!is_digit(*p))
        return OL_EVERSION;
    req->version_major = 1;
    req->version_minor = *p - '0';
    NEXT_OR_INCOMPLETE(++p, end);
    if (*p != '\r')
        return *p == '\n' ? OL_ELINE : OL_EVERSION;
    NEXT_OR_INCOMPLETE(++p, end);
    if (*p != '\n')
        return OL_ELINE;
    *next = p + 1;
    return 0;
}

static int is_absolute_form(const char *p, const char *end);

/* An HTTP/0.9 simple request: "GET" SP target CRLF and nothing else. */
static int parse_simple_request(const char *p, const char *end, ol_request *req, const char **next)
{
    if (*p == '\n')
        return OL_ELINE;
    if (p + 1 == end)
        return OL_INCOMPLETE;
    if (p[1] != '\n')
        return OL_ELINE;
    if (req->method_id != OL_M_GET)
        return OL_EVERSION;
    if (req->target.base[0] != '/' && !is_absolute_form(req->target.base, p))
        return OL_ETARGET; /* the same target forms as GET in HTTP/1.x */
    req->protocol = OL_PROTO_HTTP;
    req->version_major = 0;
    req->version_minor = 9;
    req->flags |= OL_REQ_SIMPLE;
    *next = p + 2;
    return 0;
}

/* reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 3.2.2);
 * '%' is let through without checking its two hex digits. */
static int is_reg_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           strchr("-._~%!$&'()*+,;=", c) != NULL;
}

/*
 * host [ ":" port ] in [p, end), the host non-empty (RFC 9110 4.2.1 and
 * 9.3.6): an IP-literal in brackets, or a reg-name (which covers IPv4). With
 * port_required, ":" and at least one digit must follow.
 */
static int is_host_port(const char *p, const char *end, int port_required)
{
    const char *host = p;
    if (p < end && *p == '[') { /* IP-literal: hex, ':' and '.' up to "]" */
        for (p++; p < end && (ol__is((unsigned char)*p, OL__HEX) || *p == ':' || *p == '.'); p++)
            ;
        if (p == end || *p != ']' || p == host + 1)
            return 0;
        p++;
    } else {
        while (p < end && is_reg_name_char(*p))
            p++;
        if (p == host)
            return 0;
    }
    if (p == end)
        return !port_required;
    if (*p != ':' || (port_required && p + 1 == end))
        return 0;
    for (p++; p < end; p++)
        if (!is_digit(*p))
            return 0;
    return 1;
}

/* absolute-form: scheme "://" authority [ path-abempty ] [ "?" query ], with
 * scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). Requiring the "//"
 * keeps "example.com:443" (a valid absolute-URI by syntax alone) out; the
 * authority is [ userinfo "@" ] host [ ":" port ] with a host (HTTP's
 * schemes have one), so "s://]x/" is refused. */
static int is_absolute_form(const char *p, const char *end)
{
    const char *s = p;
    while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                       (p > s && (is_digit(*p) || *p == '+' || *p == '-' || *p == '.'))))
        p++;
    if (p == s || end - p < 3 || memcmp(p, "://", 3) != 0)
        return 0;
    const char *auth = p + 3, *auth_end = auth;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
        auth_end++;
    const char *at = auth_end;
    while (at > auth && at[-1] != '@')
        at--;
    if (at > auth) { /* userinfo: reg-name characters and ':' */
        for (const char *u = auth; u < at - 1; u++)
            if (!is_reg_name_char(*u) && *u != ':')
                return 0;
        auth = at;
    }
    return is_host_port(auth, auth_end, 0);
}

/* authority-form = uri-host ":" port (RFC 9112 3.2.3), the port required
 * (RFC 9110 9.3.6). No userinfo, path, query or fragment. */
static int is_authority_form(const char *p, const char *end)
{
    return is_host_port(p, end, 1);
}

/*
 * The form of the request-target follows from the method (RFC 9112 3.2):
 * CONNECT takes authority-form and nothing else; "*" (asterisk-form) only
 * with OPTIONS; every method may use origin-form ("/...") or absolute-form.
 * Anything else -- "foo/bar", "example.com:443" with GET -- is not a
 * request-target at all, and two servers could route it differently.
 */
static int check_target_form(const ol_request *req)
{
    const char *p = req->target.base, *end = p + req->target.len;
    if (req->method_id == OL_M_CONNECT)
        return is_authority_form(p, end) ? 0 : OL_ETARGET;
    if (req->target.len == 1 && *p == '*')
        return req->method_id == OL_M_OPTIONS ? 0 : OL_ETARGET;
    if (*p == '/' || is_absolute_form(p, end))
        return 0;
    return OL_ETARGET;
}

/* request-line = method SP request-target SP HTTP-version CRLF */
static int parse_request_line(const char *p, const char *end, ol_request *req, const char **next)
{
    const char *start = p;
    p = ol__skip_token(p, end);
    if (p == end)
        return OL_INCOMPLETE;
    if (*p != ' ' || p == start)
        return OL_EMETHOD;
    const method *m = find_method(start, (size_t)(p - start));
    req->method.base = start;
    req->method.len = (size_t)(p - start);
    req->method_id = m != NULL ? m->id : OL_M_OTHER;

    const char *target = ++p;
    p = ol__scan_target(p, end);
    if (p == end)
        return OL_INCOMPLETE;
    if (p == target)
        return OL_ETARGET;
    req->target.base = target;
    req->target.len = (size_t)(p - target);
    if (*p == '\r' || *p == '\n')
        return parse_simple_request(p, end, req, next);
    if (*p != ' ')
        return OL_ETARGET;

    p++;
    int r = parse_protocol(&p, end, &req->protocol);
    if (r != 0)
        return r;
    if (req->protocol != OL_PROTO_HTTP && (m == NULL || !(m->protocols & (1u << req->protocol))))
        return OL_EPROTOCOL;
    r = parse_version(p, end, req, next);
    if (r == 0 && req->method_id == OL_M_PRI)
        return OL_EVERSION_UNSUPPORTED; /* the HTTP/2 connection preface */
    if (r == 0 && req->protocol == OL_PROTO_HTTP)
        r = check_target_form(req);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Fields that shape the message                                            */

/* ol_parser.state bits */
#define S_CL           0x001u /* Content-Length seen */
#define S_TE           0x002u /* Transfer-Encoding seen */
#define S_CHUNKED      0x004u /* the last transfer coding so far is chunked */
#define S_TE_OTHER     0x008u /* a coding other than chunked was listed */
#define S_CLOSE        0x010u /* Connection: close */
#define S_KEEP_ALIVE   0x020u /* Connection: keep-alive */
#define S_CONN_UPGRADE 0x040u
#define S_UPGRADE      0x080u /* an Upgrade field */
#define S_HOST         0x100u
#define S_CONTINUE     0x200u /* Expect: 100-continue */

enum { F_OTHER, F_CONTENT_LENGTH, F_TRANSFER_ENCODING, F_CONNECTION, F_HOST, F_UPGRADE, F_EXPECT };

static int classify(ol_span name)
{
    switch (name.len) {
    case 4:
        return OL__IEQ(name.base, 4, "host") ? F_HOST : F_OTHER;
    case 6:
        return OL__IEQ(name.base, 6, "expect") ? F_EXPECT : F_OTHER;
    case 7:
        return OL__IEQ(name.base, 7, "upgrade") ? F_UPGRADE : F_OTHER;
    case 10:
        return OL__IEQ(name.base, 10, "connection") ? F_CONNECTION : F_OTHER;
    case 14:
        return OL__IEQ(name.base, 14, "content-length") ? F_CONTENT_LENGTH : F_OTHER;
    case 17:
        return OL__IEQ(name.base, 17, "transfer-encoding") ? F_TRANSFER_ENCODING : F_OTHER;
    default:
        return F_OTHER;
    }
}

/* Checks that need only the field's name, done as soon as the colon arrives. */
static int check_name(const ol_parser *ps, int kind, const ol_limits *limits)
{
    switch (kind) {
    case F_CONTENT_LENGTH:
        if (ps->state & S_CL)
            return OL_ECONTENT_LENGTH_DUP;
        return (ps->state & S_TE) ? OL_ECL_AND_TE : 0;
    case F_TRANSFER_ENCODING:
        return (ps->state & S_CL) ? OL_ECL_AND_TE : 0;
    case F_HOST:
        return ((ps->state & S_HOST) && (limits->flags & OL_REQUIRE_HOST)) ? OL_EHOST : 0;
    default:
        return 0;
    }
}

/*
 * Content-Length = 1*DIGIT, at most 2^63 - 1 so it fits every signed size
 * type above us. With partial set the value is still arriving: trailing
 * whitespace may follow the digits but nothing may follow the whitespace.
 */
static int parse_content_length(const char *p, const char *end, int partial, uint64_t *out)
{
    uint64_t n = 0;
    if (p == end && !partial)
        return OL_ECONTENT_LENGTH;
    for (; p < end; p++) {
        unsigned c = (unsigned char)*p - '0';
        if (c > 9) {
            if (!partial || (*p != ' ' && *p != '\t'))
                return OL_ECONTENT_LENGTH;
            return ol__skip_ows(p, end) == end ? 0 : OL_ECONTENT_LENGTH;
        }
        if (n > (UINT64_C(0x7fffffffffffffff) - c) / 10)
            return OL_ECONTENT_LENGTH_OVERFLOW;
        n = n * 10 + c;
    }
    *out = n;
    return 0;
}

/* Connection = #connection-option; we act on close, keep-alive and upgrade. */
static unsigned connection_options(ol_span v)
{
    const char *p = v.base, *end = v.base + v.len;
    unsigned bits = 0;
    while (p < end) {
        p = ol__skip_ows(p, end);
        const char *tok = p;
        p = ol__skip_token(p, end);
        size_t n = (size_t)(p - tok);
        if (OL__IEQ(tok, n, "close"))
            bits |= S_CLOSE;
        else if (OL__IEQ(tok, n, "keep-alive"))
            bits |= S_KEEP_ALIVE;
        else if (OL__IEQ(tok, n, "upgrade"))
            bits |= S_CONN_UPGRADE;
        while (p < end && *p != ',')
            p++;
        if (p < end)
            p++;
    }
    return bits;
}

/* transfer-parameter = token BWS "=" BWS ( token / quoted-string ) */
static int skip_transfer_params(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && *p == ';') {
        p = ol__skip_ows(p + 1, end);
        const char *name = p;
        p = ol__skip_token(p, end);
        if (p == name)
            return OL_ETRANSFER_ENCODING;
        p = ol__skip_ows(p, end);
        if (p == end || *p != '=')
            return OL_ETRANSFER_ENCODING;
        p = ol__skip_ows(p + 1, end);
        if (p < end && *p == '"') {
            int incomplete;
            p = ol__skip_quoted(p, end, &incomplete);
            if (p == NULL)
                return OL_ETRANSFER_ENCODING;
        } else {
            const char *value = p;
            p = ol__skip_token(p, end);
            if (p == value)
                return OL_ETRANSFER_ENCODING;
        }
        p = ol__skip_ows(p, end);
    }
    *pp = p;
    return 0;
}

/*
 * Transfer-Encoding = #transfer-coding, across all its fields. chunked must be
 * the final coding and appear once (RFC 9112 section 6.1): anything listed
 * after it is an error as soon as it is seen.
 */
static int transfer_codings(ol_parser *ps, ol_span v)
{
    const char *p = v.base, *end = v.base + v.len;
    int any = 0;
    for (;;) {
        p = ol__skip_ows(p, end);
        if (p == end)
            break;
        if (*p == ',') { /* empty list elements are allowed and ignored */
            p++;
            continue;
        }
        if (ps->state & S_CHUNKED)
            return OL_ETRANSFER_ENCODING;
        const char *tok = p;
        p = ol__skip_token(p, end);
        if (p == tok)
            return OL_ETRANSFER_ENCODING;
        int chunked = OL__IEQ(tok, (size_t)(p - tok), "chunked");
        p = ol__skip_ows(p, end);
        if (p < end && *p == ';') {
            if (chunked)
                return OL_ETRANSFER_ENCODING;
            int r = skip_transfer_params(&p, end);
            if (r != 0)
                return r;
        }
        if (p < end && *p != ',')
            return OL_ETRANSFER_ENCODING;
        ps->state |= chunked ? S_CHUNKED : S_TE_OTHER;
        any = 1;
    }
    if (!any)
        return OL_ETRANSFER_ENCODING;
    ps->state |= S_TE;
    return 0;
}

/* Apply a complete field line to the parser state and the request. */
static int apply_field(ol_parser *ps, ol_request *req, const ol_header *h, const ol_limits *limits)
{
    int kind = classify(h->name);
    int r = check_name(ps, kind, limits);
    if (r != 0)
        return r;
    switch (kind) {
    case F_CONTENT_LENGTH:
        r = parse_content_length(h->value.base, h->value.base + h->value.len, 0,
                                 &ps->content_length);
        ps->state |= S_CL;
        return r;
    case F_TRANSFER_ENCODING:
        return transfer_codings(ps, h->value);
    case F_CONNECTION:
        ps->state |= connection_options(h->value);
        return 0;
    case F_HOST:
        ps->state |= S_HOST;
        req->host = h->value;
        return 0;
    case F_UPGRADE:
        ps->state |= S_UPGRADE;
        req->upgrade = h->value;
        return 0;
    case F_EXPECT:
        if (OL__IEQ(h->value.base, h->value.len, "100-continue"))
            ps->state |= S_CONTINUE;
        return 0;
    default:
        return 0;
    }
}

/* Early checks on a field line that has not arrived completely. */
static int check_partial_field(const ol_parser *ps, const ol__field *f, const ol_limits *limits)
{
    if (!f->have_name)
        return 0;
    int kind = classify(f->h.name);
    int r = check_name(ps, kind, limits);
    if (r == 0 && kind == F_CONTENT_LENGTH && f->value != NULL) {
        uint64_t ignored;
        r = parse_content_length(f->value, f->stop, 1, &ignored);
    }
    return r;
}

/* What the fields mean once the head is complete (RFC 9112 sections 6, 9.3). */
static int finish_head(const ol_parser *ps, ol_request *req, const ol_limits *limits)
{
    unsigned s = ps->state;
    int http11 = req->version_minor >= 1;

    if (s & S_TE) {
        if (!(s & S_CHUNKED) || !http11)
            return OL_ETRANSFER_ENCODING;
        req->framing = OL_BODY_CHUNKED;
        if (s & S_TE_OTHER)
            req->flags |= OL_REQ_TE_OTHER;
    } else if (s & S_CL) {
        req->framing = OL_BODY_LENGTH;
        req->content_length = ps->content_length;
    }
    if ((limits->flags & OL_REQUIRE_HOST) && http11 && req->protocol == OL_PROTO_HTTP &&
        !(s & S_HOST))
        return OL_EHOST;
    if (http11 ? !(s & S_CLOSE) : (s & (S_KEEP_ALIVE | S_CLOSE)) == S_KEEP_ALIVE)
        req->flags |= OL_REQ_KEEP_ALIVE;
    if ((s & S_CONN_UPGRADE) && (s & S_UPGRADE))
        req->flags |= OL_REQ_UPGRADE;
    if (req->method_id == OL_M_CONNECT)
        req->flags |= OL_REQ_CONNECT;
    if (s & S_CONTINUE)
        req->flags |= OL_REQ_EXPECT_CONTINUE;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The head                                                                 */

static void reset_request(ol_request *req)
{
    ol_header *headers = req->headers;
    memset(req, 0, sizeof(*req));
    req->headers = headers;
}

/* Skip the empty lines a client may send before a request (RFC 9112 2.2). */
static int skip_empty_lines(const char **pp, const char *end)
{
    const char *p = *pp;
    for (;;) {
        if (p == end)
            return OL_INCOMPLETE;
        if (*p == '\n')
            return OL_ELINE;
        if (*p != '\r')
            break;
        if (p + 1 == end)
            return OL_INCOMPLETE;
        if (p[1] != '\n')
            return OL_ELINE;
        p += 2;
    }
    *pp = p;
    return 0;
}

/* Length of a line still arriving, not counting a CR that may start its CRLF. */
static size_t partial_line_length(const char *line, const char *end)
{
    size_t n = (size_t)(end - line);
    return (n > 0 && end[-1] == '\r') ? n - 1 : n;
}

/* Request line (when ps->line is 0) with its length limit. */
static int head_start(ol_parser *ps, const char *buf, const char *end, ol_request *req,
                      const ol_limits *limits, const char **next)
{
    const char *p = buf;
    int r = skip_empty_lines(&p, end);
    if (r == 0) {
        const char *line = p;
        r = parse_request_line(line, end, req, &p);
        size_t line_len = r == 0 ? (size_t)(p - 2 - line) : partial_line_length(line, end);
        if ((r == 0 || r == OL_INCOMPLETE) && line_len > limits->max_request_line)
            return OL_EURI_TOO_LONG;
    }
    if (r == OL_INCOMPLETE && (size_t)(end - buf) > limits->max_head_size)
        return OL_EHEADERS_TOO_LARGE;
    if (r == 0)
        ps->line = (size_t)(p - buf);
    *next = p;
    return r;
}

/* Scan field lines from ps->line. Returns 0 at the empty line. */
static int scan_fields(ol_parser *ps, const char *buf, const char *end, ol_request *req,
                       const ol_limits *limits, const char **next)
{
    const char *p = buf + ps->line;
    for (;;) {
        ol__field f;
        const char *line = p;
        int r = ol__scan_field(line, end, &f, &p);
        if (r == OL_INCOMPLETE) {
            r = check_partial_field(ps, &f, limits);
            if (r != 0)
                return r;
            if (partial_line_length(line, end) > limits->max_field_size ||
                (size_t)(end - buf) > limits->max_head_size)
                return OL_EHEADERS_TOO_LARGE;
            ps->line = (size_t)(line - buf);
            return OL_INCOMPLETE;
        }
        if (r < 0)
            return r;
        if ((size_t)(p - buf) > limits->max_head_size)
            return OL_EHEADERS_TOO_LARGE;
        if (r == OL__END) {
            *next = p;
            return 0;
        }
        if ((size_t)(p - 2 - line) > limits->max_field_size)
            return OL_EHEADERS_TOO_LARGE;
        if (ps->fields == limits->max_fields)
            return OL_ETOO_MANY_HEADERS;
        r = apply_field(ps, req, &f.h, limits);
        if (r != 0)
            return r;
        req->headers[ps->fields++] = f.h;
    }
}

int ol_parse_request(ol_parser *ps, const char *buf, size_t len, ol_request *req,
                     const ol_limits *limits)
{
    const char *end = buf + len, *p;
    int resumed = ps->line != 0;
    if (!resumed) {
        reset_request(req);
        int r = head_start(ps, buf, end, req, limits, &p);
        if (r != 0)
            return r;
        if (req->flags & OL_REQ_SIMPLE)
            return (int)(p - buf);
    }
    int r = scan_fields(ps, buf, end, req, limits, &p);
    if (r != 0)
        return r;
    if (resumed) {
        /* Every line is valid; scan once more from the start for the spans. */
        ol_parser fresh;
        ol_parser_init(&fresh);
        return ol_parse_request(&fresh, buf, len, req, limits);
    }
    req->num_headers = ps->fields;
    r = finish_head(ps, req, limits);
    return r != 0 ? r : (int)(p - buf);
}
