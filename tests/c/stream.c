#include "stream.h"

#include <string.h>

void stream_init(stream *s, const ol_limits *limits)
{
    memset(s, 0, sizeof(*s));
    if (limits)
        s->limits = *limits;
    else
        ol_limits_default(&s->limits);
    if (s->limits.max_fields > STREAM_MAX_FIELDS)
        s->limits.max_fields = STREAM_MAX_FIELDS;
    guard_init(&s->guard, 1 << 17);
    s->phase = ST_HEAD;
    s->req.headers = s->headers;
    ol_parser_init(&s->parser);
}

void stream_free(stream *s)
{
    guard_free(&s->guard);
    bytes_free(&s->out);
    bytes_free(&s->pending);
    bytes_free(&s->head);
    bytes_free(&s->body);
}

static void consume(stream *s, size_t n)
{
    memmove(s->pending.p, s->pending.p + n, s->pending.len - n);
    s->pending.len -= n;
}

static void fail(stream *s, int error)
{
    s->phase = ST_ERROR;
    s->error = error;
}

static void render_fields(bytes *b, const ol_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bytes_put(b, h[i].name.base, h[i].name.len);
        bytes_puts(b, ": ");
        bytes_put(b, h[i].value.base, h[i].value.len);
        bytes_puts(b, "\n");
    }
}

static void render_head(stream *s)
{
    const ol_request *r = &s->req;
    bytes_clear(&s->head);
    bytes_clear(&s->body);
    bytes_put(&s->head, r->method.base, r->method.len);
    bytes_puts(&s->head, " ");
    bytes_put(&s->head, r->target.base, r->target.len);
    if (r->version_major == 0)
        bytes_puts(&s->head, " \n"); /* HTTP/0.9: no version, as llhttp reports it */
    else
        bytes_printf(&s->head, " %d.%d\n", r->version_major, r->version_minor);
    render_fields(&s->head, r->headers, r->num_headers);
}

/* The message is complete: render it and decide what the connection does. */
static void complete(stream *s, const ol_header *trailers, size_t ntrailers)
{
    bytes_put(&s->out, s->head.p, s->head.len);
    render_fields(&s->out, trailers, ntrailers);
    bytes_puts(&s->out, "\n");
    bytes_put(&s->out, s->body.p, s->body.len);
    bytes_puts(&s->out, "\n");
    s->messages++;
    if (s->flags & (OL_REQ_UPGRADE | OL_REQ_CONNECT))
        s->phase = ST_UPGRADED;
    else if (!(s->flags & OL_REQ_KEEP_ALIVE))
        s->phase = ST_CLOSED;
    else
        s->phase = ST_HEAD;
    ol_parser_init(&s->parser);
}

static int step_head(stream *s)
{
    const char *buf = guard_place(&s->guard, s->pending.p, s->pending.len);
    int r = ol_parse_request(&s->parser, buf, s->pending.len, &s->req, &s->limits);
    if (r == OL_INCOMPLETE)
        return 0;
    if (r < 0) {
        fail(s, r);
        return 0;
    }
    render_head(s);
    s->flags = s->req.flags;
    consume(s, (size_t)r);
    if ((s->flags & OL_REQ_CONNECT) || s->skip_body || s->req.framing == OL_BODY_NONE) {
        complete(s, NULL, 0);
    } else if (s->req.framing == OL_BODY_LENGTH) {
        s->body_left = s->req.content_length;
        s->phase = ST_LENGTH;
        if (s->body_left == 0)
            complete(s, NULL, 0);
    } else {
        ol_chunked_init(&s->chunked, &s->limits);
        s->chunked.trailers = s->trailers;
        s->phase = ST_CHUNKED;
    }
    return 1;
}

static int step_length(stream *s)
{
    size_t n = s->pending.len;
    if (n > s->body_left)
        n = (size_t)s->body_left;
    bytes_put(&s->body, s->pending.p, n);
    consume(s, n);
    s->body_left -= n;
    if (s->body_left == 0)
        complete(s, NULL, 0);
    return s->body_left == 0;
}

static int step_chunked(stream *s)
{
    const char *buf = guard_place(&s->guard, s->pending.p, s->pending.len);
    size_t used;
    ol_span data;
    int r = ol_chunked_decode(&s->chunked, buf, s->pending.len, &used, &data);
    if (r == OL_CHUNK_DATA)
        bytes_put(&s->body, data.base, data.len);
    if (r == OL_CHUNK_DONE) {
        bytes trailers = {0};
        render_fields(&trailers, s->chunked.trailers, s->chunked.num_trailers);
        consume(s, used);
        bytes_put(&s->head, trailers.p, trailers.len);
        bytes_free(&trailers);
        complete(s, NULL, 0);
        return 1;
    }
    consume(s, used);
    if (r < 0 && r != OL_INCOMPLETE)
        fail(s, r);
    return r == OL_CHUNK_DATA;
}

/* After a non-persistent message only empty lines may follow (llhttp's
 * "Data after Connection: close"); a server would simply stop reading. */
static int step_closed(stream *s)
{
    size_t i = 0;
    while (i < s->pending.len && (s->pending.p[i] == '\r' || s->pending.p[i] == '\n'))
        i++;
    consume(s, i);
    if (s->pending.len)
        fail(s, 0);
    return 0;
}

void stream_feed(stream *s, const char *data, size_t len)
{
    bytes_put(&s->pending, data, len);
    int progress = 1;
    while (progress && s->pending.len) {
        switch (s->phase) {
        case ST_HEAD:
            progress = step_head(s);
            break;
        case ST_LENGTH:
            progress = step_length(s);
            break;
        case ST_CHUNKED:
            progress = step_chunked(s);
            break;
        case ST_CLOSED:
            progress = step_closed(s);
            break;
        default:
            progress = 0;
            break;
        }
    }
}

void stream_run(stream *s, const char *data, size_t len, const size_t *splits, size_t nsplits)
{
    size_t at = 0;
    for (size_t i = 0; i < nsplits; i++) {
        stream_feed(s, data + at, splits[i] - at);
        at = splits[i];
    }
    stream_feed(s, data + at, len - at);
}
