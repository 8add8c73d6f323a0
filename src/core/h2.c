/*
 * h2.c -- HTTP/2 (h2.h): nghttp2 parses and writes the frames; this file
 * turns its streams into exchanges and back.
 *
 * Nothing of the app runs inside an nghttp2 callback. The callbacks only
 * record what happened on a stream (headers complete, body bytes, the
 * stream closed, its output drained) and queue the stream; once nghttp2
 * has returned, the queue is worked through: exchanges begin, bodies are
 * delivered, resets become disconnects. So a HEADERS frame followed by
 * RST_STREAM in the same read never reaches the app, a stream is never
 * freed while anything points to it, and nghttp2 is never re-entered.
 *
 * Output: the app's body bytes wait in the stream's queue; nghttp2 takes
 * them as the peer's flow-control windows allow (read_body), and what it
 * serializes is gathered into one buffer and written with one call. An
 * app's send() waits while its stream holds more than the write
 * high-water mark (carrier->pending), so a client that never opens its
 * window costs a bounded amount of memory, and its stream is reset after
 * --timeout-send without progress.
 *
 * Input: nghttp2 does not open the windows by itself
 * (no_auto_window_update); a stream's window opens as its app takes the
 * body, so a client cannot make the server buffer more than one window
 * per stream.
 */
#include "h2.h"
#include "core.h"

#include <nghttp2/nghttp2.h>
#include <string.h>
#include <time.h>

/* Stream flags. */
#define S_HEADERS_DONE 0x0001u /* the request head is complete */
#define S_IN_DONE      0x0002u /* the client ended its side (END_STREAM) */
#define S_CLOSED       0x0004u /* nghttp2 closed the stream */
#define S_QUEUED       0x0008u /* on the connection's queue */
#define S_START        0x0010u /* queued: begin its exchange */
#define S_BODY         0x0020u /* queued: body news for the exchange */
#define S_DRAINED      0x0040u /* queued: its output went below the low-water mark */
#define S_OUT_DONE     0x0080u /* the whole response is submitted */
#define S_SUBMITTED    0x0100u /* the response head is submitted */
#define S_TOO_LARGE    0x0200u /* the header list passed the limit: 431 */
#define S_BODY_LARGE   0x0400u /* the body passed --limit-request-body */
#define S_DISCARD      0x0800u /* the exchange is over: drop further body bytes */
#define S_DEFERRED     0x1000u /* nghttp2 waits for data from us */
#define S_RESET        0x2000u /* reset by the client or for a stall */
#define S_TRAILERS     0x4000u /* trailer fields end the response (s->trailers) */

/* A header field of the request, as offsets into the stream's head bytes. */
typedef struct field {
    uint32_t name, name_len, value, value_len;
} field;

typedef struct ol_h2_stream {
    int32_t id;
    unsigned flags;
    ol_req *req; /* the protocol's reference while it holds the exchange */
    struct ol_h2_stream *prev, *next;
    struct ol_h2_stream *queue_next;

    /* The request head: bytes of names and values, and where each is. */
    char *head;
    size_t head_len, head_cap;
    field *fields;
    size_t nfields, fields_cap;
    size_t list_size; /* header list size as RFC 9113 counts it (+32 each) */
    field method, path, authority;
    uint64_t content_length; /* from the content-length field, if any */
    int has_length;

    /* Request body bytes not yet taken by the app. */
    char *in;
    size_t in_len, in_cap;
    uint64_t in_total;

    /* Response body bytes not yet taken by nghttp2. */
    char *out;
    size_t out_off, out_len, out_cap;
    double stalled_since; /* when its output last waited for a window; 0 if not */
    double starved_since; /* when its app began to wait for body bytes; 0 if not */
    nghttp2_nv *trailers; /* with S_TRAILERS: sent once the body is out (PyMem, */
    size_t ntrailers;     /* names and values in the same block) */
} ol_h2_stream;

/* How many of the client's stream ids below the highest it opened are
 * remembered as opened or skipped (a bit each, by id / 2 modulo this). */
#define OPENED_IDS 1024

typedef struct ol_h2 {
    nghttp2_session *session;
    ol_conn *conn;
    ol_h2_stream *streams; /* every stream nghttp2 knows of, with our state */
    ol_h2_stream *queue, **queue_tail;
    unsigned exchanges; /* streams holding an exchange */
    int depth;          /* calls of this module on the stack */
    int in_session;     /* inside nghttp2_session_mem_recv/mem_send */
    int flushing;
    /* Threaded: the carrier call in progress is a stream's app's while other
     * streams' apps wait for their turn; its frames wait to leave with
     * theirs (the last of them writes; ol_h2_flush if one blocks). */
    int gather;
    int gathered; /* frames wait that way (read under the GIL by ol_h2_flush) */
    int dead;     /* the connection closed: free at depth 0 */
    int goaway;   /* GOAWAY sent (shutdown or error): close when done */
    int shutdown; /* the server drains: 1 notice sent, 2 final GOAWAY sent */
    int failed;   /* a connection error: input is dropped */
    /* Rapid Reset budget: a token bucket of client resets. */
    double reset_tokens, reset_refilled;
    unsigned continuations;           /* CONTINUATION frames of the header block in progress */
    int32_t last_opened;              /* the highest stream id a client's HEADERS opened */
    uint64_t opened[OPENED_IDS / 64]; /* which of the ids below it were opened */
    /* Deadlines (settle, h2_on_timeout): the earliest is the connection's. */
    double idle_since; /* no stream open since; 0 while there are */
    double heard;      /* when the client last sent anything */
    double pinged;     /* a keepalive PING awaits its answer since; 0 if none */
    int has_due;       /* a deadline runs */
    char *obuf;        /* serialized frames gathered for one write */
    size_t olen, ocap;
} ol_h2;

#define OBUF_MAX          65536
#define RESET_BURST       1000.0
#define RESET_RATE        33.0
#define MAX_CONTINUATIONS 64

static void process_queue(ol_h2 *h);
static void flush(ol_h2 *h);
static void feed(ol_h2 *h);
static void begin_shutdown(ol_h2 *h);

/* ------------------------------------------------------------------------ */
/* Entering and leaving                                                     */

/* Every call into this module enters and leaves. Entering holds a
 * reference to the connection, so that one closed meanwhile (a failed
 * write, an app's error) is still there to leave: its exchanges, detached
 * by the close, may have held the last references. */
static ol_h2 *enter(ol_conn *c)
{
    ol_h2 *h = c->h2;
    if (h != NULL) {
        h->depth++;
        ol_conn_incref(c);
    }
    return h;
}

static void free_stream(ol_h2_stream *s)
{
    PyMem_Free(s->head);
    PyMem_Free(s->fields);
    PyMem_Free(s->in);
    PyMem_Free(s->out);
    PyMem_Free(s->trailers);
    PyMem_Free(s);
}

static void free_h2(ol_h2 *h)
{
    ol_h2_stream *s = h->streams;
    while (s != NULL) {
        ol_h2_stream *next = s->next;
        free_stream(s);
        s = next;
    }
    nghttp2_session_del(h->session);
    PyMem_Free(h->obuf);
    h->conn->h2 = NULL;
    PyMem_Free(h);
}

/* What the connection waits for, and whether it is done. */
static void settle(ol_h2 *h);

static void leave(ol_h2 *h)
{
    ol_conn *c = h->conn;
    if (h->depth == 1 && !h->dead) {
        int gather = h->gather;
        h->gather = 0;
        h->gathered |= gather;
        /* The server began to drain while another thread held c (the
         * drain skips held connections): the notice goes now. */
        if (!h->shutdown && ol_server_is_draining(c->server))
            begin_shutdown(h);
        /* Flushing may close streams (their last frame went out): their
         * closing is processed before the connection settles. */
        do {
            process_queue(h);
            if (!h->dead && !gather)
                flush(h);
        } while (h->queue != NULL && !h->dead && !gather);
        if (!h->dead)
            settle(h);
    }
    if (--h->depth == 0 && h->dead)
        free_h2(h);
    ol_conn_decref(c);
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */

static ol_h2_stream *stream_of(ol_h2 *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static void enqueue(ol_h2 *h, ol_h2_stream *s, unsigned what)
{
    s->flags |= what;
    if (s->flags & S_QUEUED)
        return;
    s->flags |= S_QUEUED;
    s->queue_next = NULL;
    *h->queue_tail = s;
    h->queue_tail = &s->queue_next;
}

static void unlink_stream(ol_h2 *h, ol_h2_stream *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *p = PyMem_Realloc(*buf, n);
    if (p == NULL)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int append(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (grow(buf, cap, *len + n) < 0)
        return -1;
    memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* nghttp2's callbacks: record, queue, never run the app                    */

static uint64_t *opened_word(ol_h2 *h, int32_t id, uint64_t *bit)
{
    unsigned i = (unsigned)(id >> 1) % OPENED_IDS;
    *bit = (uint64_t)1 << (i % 64);
    return &h->opened[i / 64];
}

/* The client opened stream `id`, above every one before: the ids it
 * skipped on the way can never be opened any more. */
static void note_opened(ol_h2 *h, int32_t id)
{
    uint64_t bit, *word;
    int32_t from = h->last_opened ? h->last_opened + 2 : 1;
    if (id <= h->last_opened)
        return;
    if (id - from >= 2 * OPENED_IDS) {
        memset(h->opened, 0, sizeof(h->opened));
    } else {
        for (int32_t k = from; k < id; k += 2) {
            word = opened_word(h, k, &bit);
            *word &= ~bit;
        }
    }
    word = opened_word(h, id, &bit);
    *word |= bit;
    h->last_opened = id;
}

/* A client's HEADERS for an id below the highest it opened, on no open
 * stream: one it skipped (a new stream out of order: RFC 9113, 5.1.1 makes
 * that a connection error), or one that has closed -- trailers sent before
 * the client saw our RST_STREAM, which nghttp2 drops, as it should. Ids
 * too far below to be remembered count as closed. */
static int skipped(ol_h2 *h, int32_t id)
{
    uint64_t bit;
    if (h->last_opened - id >= 2 * OPENED_IDS)
        return 0;
    return !(*opened_word(h, id, &bit) & bit);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    ol_h2 *h = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    ol_h2_stream *s = PyMem_Calloc(1, sizeof(*s));
    if (s == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->id = frame->hd.stream_id;
    note_opened(h, s->id);
    s->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = s;
    h->streams = s;
    if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
        unlink_stream(h, s);
        free_stream(s);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int keep_field(ol_h2_stream *s, field *where, const uint8_t *name, size_t nlen,
                      const uint8_t *value, size_t vlen)
{
    size_t at = s->head_len;
    if (append(&s->head, &s->head_len, &s->head_cap, name, nlen) < 0 ||
        append(&s->head, &s->head_len, &s->head_cap, value, vlen) < 0)
        return -1;
    *where = (field){(uint32_t)at, (uint32_t)nlen, (uint32_t)(at + nlen), (uint32_t)vlen};
    return 0;
}

/* Copy n bytes of a header name, lower-cased (HTTP/2 names are). */
static void copy_lower(char *to, const char *from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        to[i] = (char)(from[i] >= 'A' && from[i] <= 'Z' ? from[i] | 0x20 : from[i]);
}

/* Keep a regular field of the request head, its name lower-cased. */
static int add_field(ol_h2_stream *s, const uint8_t *name, size_t nlen, const uint8_t *value,
                     size_t vlen)
{
    if (s->nfields == s->fields_cap) {
        size_t cap = s->fields_cap ? 2 * s->fields_cap : 16;
        field *p = PyMem_Realloc(s->fields, cap * sizeof(field));
        if (p == NULL)
            return -1;
        s->fields = p;
        s->fields_cap = cap;
    }
    field *kept = &s->fields[s->nfields];
    if (keep_field(s, kept, name, nlen, value, vlen) < 0)
        return -1;
    copy_lower(s->head + kept->name, s->head + kept->name, kept->name_len);
    s->nfields++;
    return 0;
}

static int is_name(const uint8_t *name, size_t len, const char *literal)
{
    size_t n = strlen(literal);
    return len == n && memcmp(name, literal, n) == 0;
}

static int parse_length(const uint8_t *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0 || n > 19)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)flags;
    ol_h2 *h = user;
    ol_h2_stream *s = stream_of(h, frame->hd.stream_id);
    if (s == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    size_t limit = h->conn->server->cfg.h2_max_header_list;
    s->list_size += nlen + vlen + 32;
    /* A header list decoding far past its limit (an HPACK bomb) is not
     * worth decoding on: the connection ends. Past the limit only, the
     * request is answered 431, and nothing more of it is kept. Trailers
     * count too, and are never kept (nghttp2 checks them). */
    if (s->list_size > 16 * (limit > 4096 ? limit : 4096)) {
        nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (s->flags & S_HEADERS_DONE)
        return 0;
    if (s->list_size > limit || (s->flags & S_TOO_LARGE)) {
        s->flags |= S_TOO_LARGE;
        return 0;
    }
    if (nlen > 0 && name[0] == ':') {
        field *f = is_name(name, nlen, ":method")      ? &s->method
                   : is_name(name, nlen, ":path")      ? &s->path
                   : is_name(name, nlen, ":authority") ? &s->authority
                                                       : NULL;
        if (f != NULL && keep_field(s, f, name, nlen, value, vlen) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    }
    if (is_name(name, nlen, "content-length")) {
        /* nghttp2 checks the body against it; the limit is checked here. */
        if (parse_length(value, vlen, &s->content_length) == 0)
            s->has_length = 1;
    }
    return add_field(s, name, nlen, value, vlen) < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* The clock: the wake-up's on the event loop, a fresh one on pool threads. */
static double now_of(ol_server *srv)
{
    return srv->threaded ? ol_now() : srv->now;
}

/* Rapid Reset (CVE-2023-44487): every stream a client resets costs the
 * server a stream set-up; past a budget the connection ends. */
static int over_reset_budget(ol_h2 *h)
{
    ol_server *srv = h->conn->server;
    double now = now_of(srv);
    h->reset_tokens += (now - h->reset_refilled) * RESET_RATE;
    if (h->reset_tokens > RESET_BURST)
        h->reset_tokens = RESET_BURST;
    h->reset_refilled = now;
    if (h->reset_tokens < 1.0)
        return 1;
    h->reset_tokens -= 1.0;
    return 0;
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user)
{
    ol_h2 *h = user;
    if (hd->type == NGHTTP2_HEADERS) {
        h->continuations = 0;
        /* A new stream's id must be above every one the client opened
         * (RFC 9113, 5.1.1): nghttp2 would ignore one that is not, leaving
         * the client waiting for an answer that never comes. */
        if ((hd->stream_id & 1) && hd->stream_id < h->last_opened &&
            nghttp2_session_find_stream(session, hd->stream_id) == NULL &&
            skipped(h, hd->stream_id)) {
            nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    } else if (hd->type == NGHTTP2_CONTINUATION && ++h->continuations > MAX_CONTINUATIONS) {
        /* CONTINUATION flood (CVE-2024-27316): a header block that never ends. */
        nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    ol_h2 *h = user;
    ol_h2_stream *s = frame->hd.stream_id ? stream_of(h, frame->hd.stream_id) : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (s == NULL)
            break;
        if (!(s->flags & S_HEADERS_DONE) && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->flags |= S_HEADERS_DONE;
            enqueue(h, s, S_START);
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            s->flags |= S_IN_DONE;
            enqueue(h, s, S_BODY);
        }
        break;
    case NGHTTP2_DATA:
        if (s != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            s->flags |= S_IN_DONE;
            enqueue(h, s, S_BODY);
        }
        break;
    case NGHTTP2_PING:
        /* The answer to the PING sent with the shutdown notice: every
         * stream the client opened before it saw the notice has arrived. */
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h->shutdown == 1) {
            h->shutdown = 2;
            h->goaway = 1;
            nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(session),
                                  NGHTTP2_NO_ERROR, NULL, 0);
        }
        break;
    case NGHTTP2_RST_STREAM:
        if (over_reset_budget(h)) {
            ol_log_debug(h->conn->server, "HTTP/2: too many streams reset by the client");
            nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    ol_h2 *h = user;
    ol_h2_stream *s = stream_of(h, id);
    if (s == NULL || (s->flags & (S_DISCARD | S_BODY_LARGE))) {
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    s->in_total += len;
    s->starved_since = 0;
    uint64_t max = h->conn->server->cfg.max_body;
    if (max && s->in_total > max) {
        s->flags |= S_BODY_LARGE;
        nghttp2_session_consume(session, id, len + s->in_len);
        s->in_len = 0;
    } else if (append(&s->in, &s->in_len, &s->in_cap, data, len) < 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    enqueue(h, s, S_BODY);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user)
{
    (void)session;
    ol_h2 *h = user;
    ol_h2_stream *s = stream_of(h, id);
    if (s == NULL)
        return 0;
    if (error_code != NGHTTP2_NO_ERROR || !(s->flags & S_OUT_DONE))
        s->flags |= S_RESET;
    enqueue(h, s, S_CLOSED);
    return 0;
}

/* nghttp2 asks for the next piece of a response body. */
static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
    ol_h2 *h = user;
    ol_h2_stream *s = source->ptr;
    size_t avail = s->out_len - s->out_off;
    size_t n = avail < length ? avail : length;
    if (n == 0 && !(s->flags & S_OUT_DONE)) {
        s->flags |= S_DEFERRED;
        return NGHTTP2_ERR_DEFERRED;
    }
    memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    if (s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if (s->out_len == 0 && (s->flags & S_OUT_DONE)) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        /* The trailers' HEADERS frame ends the stream instead. */
        if ((s->flags & S_TRAILERS) &&
            nghttp2_submit_trailer(session, id, s->trailers, s->ntrailers) == 0)
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    s->stalled_since = 0;
    if (s->req != NULL && s->out_len - s->out_off <= h->conn->server->cfg.write_low_water)
        enqueue(h, s, S_DRAINED);
    return (ssize_t)n;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */

static int write_out(ol_h2 *h)
{
    if (h->olen == 0)
        return 0;
    int e = ol_conn_write(h->conn, h->obuf, h->olen);
    h->olen = 0;
    return e;
}

/* Serialize what nghttp2 has to send and write it, while the socket takes
 * it; the rest waits for on_drained. */
static void flush(ol_h2 *h)
{
    ol_conn *c = h->conn;
    if (h->in_session || h->flushing || h->dead || h->gather)
        return;
    h->gathered = 0;
    h->flushing = 1;
    while (!(c->flags & CONN_CLOSED) && ol_conn_pending(c) <= c->server->cfg.write_high_water) {
        const uint8_t *data;
        h->in_session = 1;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        h->in_session = 0;
        if (n < 0) {
            ol_log_debug(c->server, nghttp2_strerror((int)n));
            h->olen = 0;
            ol_conn_abort(c);
            break;
        }
        if (n == 0) {
            write_out(h);
            break;
        }
        if (h->olen + (size_t)n > OBUF_MAX && write_out(h) < 0)
            break;
        if (append(&h->obuf, &h->olen, &h->ocap, data, (size_t)n) < 0) {
            ol_conn_abort(c);
            break;
        }
    }
    h->flushing = 0;
}

/* ------------------------------------------------------------------------ */
/* Exchanges                                                                */

static ol_span span_of(const ol_h2_stream *s, uint32_t off, uint32_t len)
{
    return (ol_span){s->head + off, len};
}

static int method_id(ol_span m)
{
    static const struct {
        const char *name;
        int id;
    } known[] = {{"GET", OL_M_GET},         {"HEAD", OL_M_HEAD},       {"POST", OL_M_POST},
                 {"PUT", OL_M_PUT},         {"DELETE", OL_M_DELETE},   {"PATCH", OL_M_PATCH},
                 {"OPTIONS", OL_M_OPTIONS}, {"CONNECT", OL_M_CONNECT}, {"TRACE", OL_M_TRACE}};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (m.len == strlen(known[i].name) && memcmp(m.base, known[i].name, m.len) == 0)
            return known[i].id;
    return OL_M_OTHER;
}

/* A response the core gives itself: a status and a short text. */
static void answer(ol_h2 *h, ol_h2_stream *s, int status, const char *text, int head_only);

/* The request head as the interface reads it (ol_request), its fields in
 * `fields` (room for s->nfields + 1): `host` first, from :authority, as
 * the ASGI spec wants it, in place of any host field. */
static void make_head(ol_h2_stream *s, ol_request *head, ol_header *fields)
{
    size_t n = 0;
    if (s->authority.value_len > 0)
        fields[n++] =
            (ol_header){{"host", 4}, span_of(s, s->authority.value, s->authority.value_len)};
    for (size_t i = 0; i < s->nfields; i++) {
        const field *f = &s->fields[i];
        ol_span name = span_of(s, f->name, f->name_len);
        if (s->authority.value_len > 0 && name.len == 4 && memcmp(name.base, "host", 4) == 0)
            continue;
        fields[n++] = (ol_header){name, span_of(s, f->value, f->value_len)};
    }
    *head = (ol_request){.headers = fields, .num_headers = n};
    head->method = span_of(s, s->method.value, s->method.value_len);
    head->method_id = method_id(head->method);
    head->target = span_of(s, s->path.value, s->path.value_len);
    head->protocol = OL_PROTO_HTTP;
    head->version_major = 2;
    head->version_minor = 0;
    head->flags = OL_REQ_KEEP_ALIVE;
    head->framing = s->has_length ? OL_BODY_LENGTH : OL_BODY_NONE;
    head->content_length = s->content_length;
    if (s->authority.value_len > 0)
        head->host = fields[0].value;
}

static int is_health_check(const ol_config *cfg, const ol_request *h)
{
    size_t n = cfg->health_path_len;
    if (cfg->health_path == NULL || (h->method_id != OL_M_GET && h->method_id != OL_M_HEAD) ||
        h->target.len < n || memcmp(h->target.base, cfg->health_path, n) != 0)
        return 0;
    return h->target.len == n || h->target.base[n] == '?';
}

/* What the core answers itself instead of the app; 1 if answered. */
static int refused(ol_h2 *h, ol_h2_stream *s, const ol_request *head)
{
    ol_server *srv = h->conn->server;
    if (s->flags & S_TOO_LARGE) {
        answer(h, s, 431, "request header fields too large", 0);
    } else if (head->method_id == OL_M_CONNECT) {
        answer(h, s, 501, "CONNECT is not supported", 0);
    } else if (srv->cfg.max_body && s->has_length && s->content_length > srv->cfg.max_body) {
        answer(h, s, 413, "request body too large", 0);
    } else if (is_health_check(&srv->cfg, head)) {
        int draining = ol_server_is_draining(srv);
        OL_COUNT(srv, health_checks, 1);
        answer(h, s, draining ? 503 : 200, draining ? "draining" : "OK",
               head->method_id == OL_M_HEAD);
    } else if (srv->cfg.limit_concurrency && srv->active >= srv->cfg.limit_concurrency) {
        answer(h, s, 503, "too many requests in flight", 0);
    } else {
        return 0;
    }
    s->flags |= S_DISCARD;
    return 1;
}

static void begin_exchange(ol_h2 *h, ol_h2_stream *s)
{
    ol_conn *c = h->conn;
    ol_server *srv = c->server;
    ol_header *fields = PyMem_Malloc((s->nfields + 1) * sizeof(ol_header));
    if (fields == NULL) {
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    ol_request head;
    make_head(s, &head, fields);
    if (refused(h, s, &head)) {
        PyMem_Free(fields);
        return;
    }
    ol_req *r = ol_req_new(c, &ol_h2_carrier);
    if (r != NULL) {
        r->stream_id = s->id;
        r->flags |= REQ_HTTP2;
    }
    if (r == NULL || ol_req_set_head(r, &head) < 0 || srv->handler->prepare(r, &head) < 0) {
        PyMem_Free(fields);
        ol_log_error(srv, "cannot start a request");
        if (r != NULL)
            srv->handler->release(r);
        answer(h, s, 500, "Internal Server Error", 0);
        s->flags |= S_DISCARD;
        return;
    }
    PyMem_Free(fields);
    /* The head's bytes are not needed any more. */
    PyMem_Free(s->head);
    PyMem_Free(s->fields);
    s->head = NULL;
    s->fields = NULL;
    s->head_cap = s->head_len = s->fields_cap = s->nfields = 0;
    s->req = (ol_req *)Py_NewRef(r);
    h->exchanges++;
    ol_conn_set_phase(c, OL_PHASE_APP);
    srv->handler->run(r);
    srv->handler->release(r);
}

/* The exchange of s learns its stream is gone and is let go. */
static void drop_exchange(ol_h2 *h, ol_h2_stream *s)
{
    ol_req *r = s->req;
    if (r == NULL)
        return;
    s->req = NULL;
    h->exchanges--;
    r->flags |= REQ_DISCONNECTED;
    h->conn->server->handler->on_disconnect(r);
    ol_req_detach(r);
    Py_DECREF(r);
}

static void process_stream(ol_h2 *h, ol_h2_stream *s)
{
    const ol_handler *handler = h->conn->server->handler;
    unsigned what = s->flags;
    s->flags &= ~(S_QUEUED | S_START | S_BODY | S_DRAINED);
    if ((what & S_START) && !(what & S_CLOSED))
        begin_exchange(h, s);
    if (what & S_CLOSED) {
        drop_exchange(h, s);
        unlink_stream(h, s);
        free_stream(s);
        return;
    }
    if ((what & S_BODY) && s->req != NULL)
        handler->on_body(s->req);
    if ((what & S_DRAINED) && s->req != NULL)
        handler->on_drain(s->req);
}

/* Work through what the callbacks recorded (see the top of the file). */
static void process_queue(ol_h2 *h)
{
    while (h->queue != NULL && !h->dead) {
        ol_h2_stream *s = h->queue;
        h->queue = s->queue_next;
        if (h->queue == NULL)
            h->queue_tail = &h->queue;
        process_stream(h, s);
    }
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                */

static int is_hop_by_hop(const char *name, size_t n)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (n == strlen(names[i]) && strncasecmp(name, names[i], n) == 0)
            return 1;
    return 0;
}

static void status_digits(char out[3], int status)
{
    out[0] = (char)('0' + status / 100 % 10);
    out[1] = (char)('0' + status / 10 % 10);
    out[2] = (char)('0' + status % 10);
}

#define NV(n, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), 0})

/* Submit the response head of r; its body comes from the stream's queue. */
static int submit_head(ol_h2 *h, ol_h2_stream *s, ol_req *r, int has_body)
{
    ol_server *srv = h->conn->server;
    Py_ssize_t count = r->headers ? PyList_GET_SIZE(r->headers) : 0;
    nghttp2_nv *nva = PyMem_Malloc(((size_t)count + 4) * sizeof(nghttp2_nv));
    size_t names = 0;
    for (Py_ssize_t i = 0; i < count; i++)
        names += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(PyList_GET_ITEM(r->headers, i), 0));
    char *lower = PyMem_Malloc(names + 1);
    if (nva == NULL || lower == NULL) {
        PyMem_Free(nva);
        PyMem_Free(lower);
        PyErr_NoMemory();
        return -1;
    }
    char status[3], length[24];
    status_digits(status, r->status);
    size_t n = 0;
    nva[n++] = NV(":status", status, 3);
    char *p = lower;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(r->headers, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        size_t nl = (size_t)PyBytes_GET_SIZE(name);
        const char *nm = PyBytes_AS_STRING(name);
        if (is_hop_by_hop(nm, nl))
            continue;
        copy_lower(p, nm, nl);
        nva[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)PyBytes_AS_STRING(value), nl,
                                (size_t)PyBytes_GET_SIZE(value), NGHTTP2_NV_FLAG_NONE};
        p += nl;
    }
    if ((r->flags & REQ_HAS_LENGTH) && (r->flags & REQ_ADDED_LENGTH)) {
        int k = snprintf(length, sizeof(length), "%llu", (unsigned long long)r->content_length);
        nva[n++] = NV("content-length", length, (size_t)k);
    }
    if (srv->cfg.date_header && !(r->flags & REQ_APP_DATE))
        nva[n++] = NV("date", ol_date_cache_get(&srv->date, time(NULL)), OL_HTTP_DATE_LEN);
    if (srv->cfg.server_header && !(r->flags & REQ_APP_SERVER))
        nva[n++] = NV("server", "oneloop", 7);
    nghttp2_data_provider body = {.source.ptr = s, .read_callback = read_body};
    int e = nghttp2_submit_response(h->session, s->id, nva, n, has_body ? &body : NULL);
    PyMem_Free(nva);
    PyMem_Free(lower);
    if (e != 0) {
        PyErr_SetString(PyExc_RuntimeError, nghttp2_strerror(e));
        return -1;
    }
    s->flags |= S_SUBMITTED;
    return 0;
}

/* Queue body bytes (more == 0: the last) for nghttp2 to take. */
static int queue_body(ol_h2 *h, ol_h2_stream *s, const char *data, size_t len, int more)
{
    if (len > 0 && append(&s->out, &s->out_len, &s->out_cap, data, len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (!more)
        s->flags |= S_OUT_DONE;
    if (s->flags & S_DEFERRED) {
        s->flags &= ~S_DEFERRED;
        nghttp2_session_resume_data(h->session, s->id);
    }
    return 0;
}

static void answer(ol_h2 *h, ol_h2_stream *s, int status, const char *text, int head_only)
{
    ol_server *srv = h->conn->server;
    if (strcmp(text, "draining") != 0)
        ol_meter_rejection(&srv->meter, status);
    char length[24];
    snprintf(length, sizeof(length), "%zu", strlen(text) + 1);
    char code[3];
    status_digits(code, status);
    nghttp2_nv nva[7];
    size_t n = 0;
    nva[n++] = NV(":status", code, 3);
    nva[n++] = NV("content-type", "text/plain; charset=utf-8", 25);
    nva[n++] = NV("content-length", length, strlen(length));
    if (status == 503 && strcmp(text, "draining") != 0)
        nva[n++] = NV("retry-after", "1", 1);
    if (status == 200 || status == 503)
        nva[n++] = NV("cache-control", "no-store", 8);
    if (srv->cfg.date_header)
        nva[n++] = NV("date", ol_date_cache_get(&srv->date, time(NULL)), OL_HTTP_DATE_LEN);
    if (srv->cfg.server_header)
        nva[n++] = NV("server", "oneloop", 7);
    s->flags |= S_OUT_DONE | S_SUBMITTED;
    if (!head_only) {
        size_t len = strlen(text);
        if (append(&s->out, &s->out_len, &s->out_cap, text, len) < 0 ||
            append(&s->out, &s->out_len, &s->out_cap, "\n", 1) < 0) {
            nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
            return;
        }
    }
    nghttp2_data_provider body = {.source.ptr = s, .read_callback = read_body};
    if (nghttp2_submit_response(h->session, s->id, nva, n, head_only ? NULL : &body) != 0)
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
}

/* ------------------------------------------------------------------------ */
/* The carrier (exchange.h)                                                 */

/* Threaded: does another stream's app wait for a thread (posted, not
 * started, its client still there)? Their exchanges are few (at most
 * --h2-max-concurrent-streams). */
static int others_waiting(const ol_h2 *h, const ol_h2_stream *self)
{
    for (const ol_h2_stream *s = h->streams; s != NULL; s = s->next)
        if (s != self && s->req != NULL &&
            (s->req->flags & (REQ_POSTED | REQ_DISCONNECTED)) == REQ_POSTED)
            return 1;
    return 0;
}

/*
 * The stream carrying r, entered; NULL if the protocol let go of it. In
 * threaded mode the caller is the stream's app, on a pool thread of its
 * own (wsgi.c), which holds the connection only from here to uncarry():
 * the connection is shared with the other streams' apps and with the pool
 * threads that serve its events (conn.h).
 */
static ol_h2_stream *carry(ol_req *r, ol_h2 **hp)
{
    ol_conn *c = r->conn;
    if (c == NULL)
        return NULL;
    int threaded = c->server->threaded;
    if (threaded) {
        ol_conn_incref(c); /* r may let go of c while this thread waits */
        if (ol_conn_hold(c) < 0) {
            ol_conn_decref(c);
            return NULL;
        }
    }
    ol_h2 *h = c->h2;
    ol_h2_stream *s = NULL;
    if (!(c->flags & CONN_CLOSED) && h != NULL) {
        s = stream_of(h, r->stream_id);
        if (s != NULL && s->req != r)
            s = NULL;
    }
    if (s != NULL) {
        *hp = enter(c);
        h->gather = threaded && others_waiting(h, s);
    } else if (threaded) {
        ol_conn_let_go(c);
        ol_conn_decref(c);
    }
    return s;
}

/* The end of a carrier call: leave, and let go of the connection. */
static void uncarry(ol_h2 *h)
{
    ol_conn *c = h->conn;
    int threaded = c->server->threaded;
    leave(h);
    if (threaded) {
        ol_conn_let_go(c);
        ol_conn_decref(c);
    }
}

/* Bytes that came or room that opened while a stream's app waited: read
 * and process them, and send what is pending (never waiting: the
 * connection is shared). 0, or -1 when the connection closed. */
static int take_news(ol_h2 *h)
{
    ol_conn *c = h->conn;
    if (ol_conn_pending(c) > 0) {
        int sent = ol_conn_flush(c);
        if (sent < 0) {
            ol_conn_abort(c);
            return -1;
        }
        if (sent > 0 && (c->flags & CONN_CLOSING)) /* as the transport does when drained */
            ol_conn_close_gracefully(c);
    }
    if ((c->flags & CONN_READING) && !(c->flags & (CONN_CLOSING | CONN_PEER_CLOSED))) {
        Py_ssize_t n = ol_conn_recv(c);
        if (n == 0 || n == -2) {
            c->flags |= CONN_PEER_CLOSED;
            ol_conn_abort(c);
            return -1;
        }
        if (n > 0)
            feed(h);
    }
    flush(h);
    return (c->flags & CONN_CLOSED) ? -1 : 0;
}

/*
 * A stream's app waits for its client (to open a window for its output,
 * or to send body bytes): leave, let go of the connection, wait for news
 * of it up to `timeout`, hold it and enter again, and take the news. The
 * stream again, still carried; or NULL when it or its connection is gone,
 * with nothing carried any more. *timed_out: the time ran out, no news.
 */
static ol_h2_stream *await_client(ol_req *r, ol_h2 **hp, double timeout, int *timed_out)
{
    ol_conn *c = (*hp)->conn;
    (*hp)->gather = 0; /* what waits goes out before this thread sleeps */
    leave(*hp);
    int woken = ol_conn_await(c, timeout);
    *timed_out = woken == 0;
    ol_h2 *h = c->h2;
    ol_h2_stream *s = NULL;
    if (woken >= 0 && !(c->flags & CONN_CLOSED) && h != NULL) {
        s = stream_of(h, r->stream_id);
        if (s != NULL && s->req == r) {
            *hp = enter(c);
            if (take_news(h) < 0 || stream_of(h, r->stream_id) != s || s->req != r) {
                leave(h);
                s = NULL;
            }
        } else {
            s = NULL;
        }
    }
    if (s == NULL) {
        if (woken >= 0) /* held again */
            ol_conn_let_go(c);
        ol_conn_decref(c); /* carry()'s */
    }
    return s;
}

/*
 * In threaded mode a stream's send returns once the stream's queue is
 * below the high-water mark: what the windows allow goes out now, and the
 * client is waited for (up to --timeout-send without progress) to open
 * them. 0 with the stream still carried (*hp, *sp), or -1 with nothing
 * carried any more.
 */
static int send_blocking(ol_req *r, ol_h2 **hp, ol_h2_stream **sp)
{
    ol_server *srv = r->server;
    ol_conn *c = (*hp)->conn;
    size_t queued;
    while ((queued = (*sp)->out_len - (*sp)->out_off) > 0) {
        if ((*hp)->gather && queued <= srv->cfg.write_high_water)
            return 0; /* leaves with the next streams' frames */
        (*hp)->gather = 0;
        flush(*hp);
        if (c->flags & CONN_CLOSED)
            break;
        if ((*sp)->out_len - (*sp)->out_off <= srv->cfg.write_high_water)
            return 0;
        if ((*sp)->out_len - (*sp)->out_off < queued)
            continue; /* progress */
        int timed_out;
        ol_h2_stream *s = await_client(r, hp, srv->cfg.send_timeout, &timed_out);
        if (s == NULL)
            return -1;
        *sp = s;
        if (timed_out) {
            ol_log_debug(srv, "HTTP/2: a stream's client stopped reading");
            nghttp2_submit_rst_stream((*hp)->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
            s->flags |= S_RESET;
            break;
        }
    }
    if (c->flags & CONN_CLOSED || ((*sp)->flags & S_RESET)) {
        uncarry(*hp);
        return -1;
    }
    return 0;
}

static int h2_send(ol_req *r, const char *data, size_t len, int more)
{
    ol_h2 *h;
    ol_h2_stream *s = carry(r, &h);
    if (s == NULL)
        return -1;
    /* The whole body the head announced is here (a WSGI app's last piece,
     * its end still to be said): the stream ends with it, not with an
     * empty DATA frame in a write of its own. */
    if (more && (r->flags & REQ_HAS_LENGTH) && r->sent >= r->content_length &&
        !(r->flags & REQ_TRAILERS))
        more = 0;
    int e = 0;
    if (!(s->flags & S_SUBMITTED)) {
        int has_body = !(r->flags & REQ_NO_BODY) && (len > 0 || more);
        e = submit_head(h, s, r, has_body);
        if (e == 0 && !has_body)
            s->flags |= S_OUT_DONE;
        r->flags |= REQ_HEAD_SENT;
    }
    if (e == 0 && !(s->flags & S_OUT_DONE))
        e = queue_body(h, s, data, len, more);
    if (e == 0 && r->server->threaded && send_blocking(r, &h, &s) < 0)
        return -1;
    uncarry(h);
    return e;
}

/* The trailer fields as nghttp2 takes them: names lower-cased, the
 * connection-specific ones left out, all in one PyMem block. */
static nghttp2_nv *trailer_block(PyObject *fields, size_t *count)
{
    Py_ssize_t n = PyList_GET_SIZE(fields);
    size_t bytes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(fields, i);
        bytes += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) +
                 (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1));
    }
    nghttp2_nv *nva = PyMem_Malloc((size_t)n * sizeof(nghttp2_nv) + bytes + 1);
    if (nva == NULL)
        return NULL;
    char *p = (char *)(nva + n);
    size_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(fields, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        size_t nl = (size_t)PyBytes_GET_SIZE(name), vl = (size_t)PyBytes_GET_SIZE(value);
        const char *nm = PyBytes_AS_STRING(name);
        if (is_hop_by_hop(nm, nl))
            continue;
        copy_lower(p, nm, nl);
        memcpy(p + nl, PyBytes_AS_STRING(value), vl);
        nva[k++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)p + nl, nl, vl, NGHTTP2_NV_FLAG_NONE};
        p += nl + vl;
    }
    *count = k;
    return nva;
}

static int h2_send_trailers(ol_req *r, PyObject *fields)
{
    ol_h2 *h;
    ol_h2_stream *s = carry(r, &h);
    if (s == NULL)
        return -1;
    int e = 0;
    if (s->flags & S_OUT_DONE) { /* a body-less response (HEAD, 304): no trailers */
        uncarry(h);
        return 0;
    }
    s->trailers = trailer_block(fields, &s->ntrailers);
    if (s->trailers == NULL) {
        PyErr_NoMemory();
        e = -1;
    } else {
        s->flags |= S_TRAILERS;
        e = queue_body(h, s, "", 0, 0);
    }
    if (e == 0 && r->server->threaded && send_blocking(r, &h, &s) < 0)
        return -1;
    uncarry(h);
    return e;
}

static int h2_release(ol_req *r, int reuse)
{
    (void)reuse;
    ol_h2 *h;
    ol_h2_stream *s = carry(r, &h);
    if (s == NULL)
        return 0;
    s->req = NULL;
    h->exchanges--;
    /* A body the app did not read: the client may finish sending it. */
    s->flags |= S_DISCARD;
    if (s->in_len > 0)
        nghttp2_session_consume(h->session, s->id, s->in_len);
    s->in_len = 0;
    uncarry(h);
    return 1;
}

static int h2_refuse(ol_req *r, int status, const char *text)
{
    ol_h2 *h;
    ol_h2_stream *s = carry(r, &h);
    if (s == NULL)
        return OL_REFUSE_NOT_HELD;
    s->req = NULL;
    h->exchanges--;
    s->flags |= S_DISCARD;
    int done;
    if (status && !(s->flags & S_SUBMITTED)) {
        answer(h, s, status, text, r->flags & REQ_HEAD);
        done = OL_REFUSE_ANSWERED;
    } else {
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        done = OL_REFUSE_CUT;
    }
    uncarry(h);
    return done;
}

static int h2_take_body(ol_req *r, PyObject **out)
{
    ol_h2 *h;
    ol_h2_stream *s = carry(r, &h);
    *out = NULL;
    if (s == NULL)
        return OL_EDISCONNECTED;
    int result = (s->flags & S_IN_DONE) ? 1 : 0;
    /* Nothing at hand and more to come: the app waits, and the body
     * timeout runs (settle) until bytes come. */
    if (s->in_len == 0 && !result && !(s->flags & S_BODY_LARGE) && s->starved_since == 0)
        s->starved_since = now_of(r->server);
    if (s->flags & S_BODY_LARGE) {
        result = OL_ETOO_LARGE;
    } else if (s->in_len > 0) {
        *out = PyBytes_FromStringAndSize(s->in, (Py_ssize_t)s->in_len);
        if (*out == NULL) {
            result = -1;
        } else {
            nghttp2_session_consume(h->session, s->id, s->in_len);
            s->in_len = 0;
        }
    }
    uncarry(h);
    return result;
}

static int h2_await_body(ol_req *r)
{
    ol_h2 *h;
    ol_h2_stream *s = carry(r, &h);
    if (s == NULL)
        return OL_EDISCONNECTED;
    if (s->in_len == 0 && !(s->flags & (S_IN_DONE | S_BODY_LARGE)) && r->server->threaded) {
        int timed_out;
        if (await_client(r, &h, r->server->cfg.body_timeout, &timed_out) == NULL)
            return OL_EDISCONNECTED;
        if (timed_out) {
            uncarry(h);
            return OL_ETIMEOUT;
        }
    }
    uncarry(h);
    return 0;
}

static int h2_send_continue(ol_req *r)
{
    (void)r; /* HTTP/2 clients do not hold a body back for 100 Continue */
    return 0;
}

static size_t h2_pending(const ol_req *r)
{
    ol_conn *c = r->conn;
    if (c == NULL || c->h2 == NULL)
        return 0;
    ol_h2_stream *s = stream_of(c->h2, r->stream_id);
    return s != NULL ? s->out_len - s->out_off : 0;
}

const ol_carrier ol_h2_carrier = {
    .send = h2_send,
    .release = h2_release,
    .refuse = h2_refuse,
    .take_body = h2_take_body,
    .send_continue = h2_send_continue,
    .pending = h2_pending,
    .await_body = h2_await_body,
    .send_trailers = h2_send_trailers,
};

/* ------------------------------------------------------------------------ */
/* The connection                                                           */

static nghttp2_session *new_session(ol_h2 *h, ol_server *srv)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_session *session = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Floods of frames that need an answer (PING, SETTINGS) from a client
     * that does not read: nghttp2 ends the session past this many. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    /* nghttp2's own budgets back ours up (ours answer first). */
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * (uint64_t)RESET_BURST,
                                               2 * (uint64_t)RESET_RATE);
    nghttp2_option_set_max_continuations(opt, 2 * MAX_CONTINUATIONS);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (nghttp2_session_server_new2(&session, cb, h, opt) != 0)
        session = NULL;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (session == NULL)
        return NULL;
    const ol_config *cfg = &srv->cfg;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->h2_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, cfg->h2_max_frame},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->h2_max_header_list},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    /* The connection's window: room for a few streams' bodies at once. */
    int32_t conn_window = (int32_t)(cfg->h2_window < (1u << 20) ? 1u << 20 : cfg->h2_window);
    if (nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings,
                                sizeof(settings) / sizeof(settings[0])) != 0 ||
        nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, conn_window) != 0) {
        nghttp2_session_del(session);
        return NULL;
    }
    return session;
}

static ol_h2 *new_h2(ol_conn *c)
{
    ol_server *srv = c->server;
    ol_h2 *h = PyMem_Calloc(1, sizeof(*h));
    if (h != NULL && (h->session = new_session(h, srv)) == NULL) {
        PyMem_Free(h);
        h = NULL;
    }
    if (h == NULL) {
        ol_log_error(srv, "cannot start an HTTP/2 session");
        return NULL;
    }
    h->conn = c;
    h->queue_tail = &h->queue;
    h->reset_tokens = RESET_BURST;
    h->reset_refilled = srv->now;
    h->heard = srv->now;
    return h;
}

/* c speaks HTTP/2 from now on; what is buffered is processed. */
static void install(ol_conn *c, ol_h2 *h)
{
    ol_server *srv = c->server;
    c->h2 = h;
    c->proto = &ol_h2_protocol;
    c->flags &= ~CONN_IDLE;
    c->flags |= CONN_READING;
    ol_conn_set_phase(c, OL_PHASE_IDLE);
    ol_conn_set_deadline(c, ol_deadline(srv->now, srv->cfg.keep_alive));
    if (srv->draining)
        ol_h2_shutdown(c);
    ol_h2_protocol.on_data(c);
}

void ol_h2_start(ol_conn *c)
{
    ol_h2 *h = new_h2(c);
    if (h == NULL)
        ol_conn_abort(c);
    else
        install(c, h);
}

/* The base64url (RFC 4648, 5; padding optional) of HTTP2-Settings. Returns
 * the length decoded into out (room for len * 3 / 4 bytes), or -1. */
static Py_ssize_t base64url_decode(const char *in, size_t len, uint8_t *out)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    Py_ssize_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '-'              ? 62
                : ch == '_'              ? 63
                                         : -1;
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

/* A SETTINGS payload whose values are all allowed (RFC 9113, 6.5.2);
 * nghttp2_session_upgrade2() takes them as they are. */
static int valid_settings(const uint8_t *p, size_t n)
{
    if (n % 6 != 0)
        return 0;
    for (size_t i = 0; i < n; i += 6) {
        unsigned id = (unsigned)p[i] << 8 | p[i + 1];
        uint32_t v = (uint32_t)p[i + 2] << 24 | (uint32_t)p[i + 3] << 16 | (uint32_t)p[i + 4] << 8 |
                     p[i + 5];
        if ((id == NGHTTP2_SETTINGS_ENABLE_PUSH && v > 1) ||
            (id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE && v > NGHTTP2_MAX_WINDOW_SIZE) ||
            (id == NGHTTP2_SETTINGS_MAX_FRAME_SIZE && (v < 16384 || v > 16777215)))
            return 0;
    }
    return 1;
}

/* Fields of an HTTP/1.1 head that say nothing in HTTP/2 (RFC 9113, 8.2.2). */
static int is_h1_only(ol_span name)
{
    static const char *const names[] = {"connection",
                                        "keep-alive",
                                        "proxy-connection",
                                        "transfer-encoding",
                                        "upgrade",
                                        "http2-settings",
                                        "host",
                                        "te"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (name.len == strlen(names[i]) && strncasecmp(name.base, names[i], name.len) == 0)
            return 1;
    return 0;
}

/* Stream 1 of an upgraded connection: the HTTP/1.1 request, complete. */
static ol_h2_stream *upgraded_stream(ol_h2 *h, const ol_request *head)
{
    ol_h2_stream *s = PyMem_Calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->id = 1;
    int e = keep_field(s, &s->method, (const uint8_t *)":method", 7,
                       (const uint8_t *)head->method.base, head->method.len) ||
            keep_field(s, &s->path, (const uint8_t *)":path", 5, (const uint8_t *)head->target.base,
                       head->target.len) ||
            keep_field(s, &s->authority, (const uint8_t *)":authority", 10,
                       (const uint8_t *)head->host.base, head->host.len);
    for (size_t i = 0; e == 0 && i < head->num_headers; i++) {
        const ol_header *f = &head->headers[i];
        if (!is_h1_only(f->name))
            e = add_field(s, (const uint8_t *)f->name.base, f->name.len,
                          (const uint8_t *)f->value.base, f->value.len);
    }
    if (e != 0 || nghttp2_session_set_stream_user_data(h->session, 1, s) != 0) {
        free_stream(s);
        return NULL;
    }
    s->flags |= S_HEADERS_DONE | S_IN_DONE;
    h->streams = s;
    note_opened(h, 1);
    return s;
}

int ol_h2_upgrade(ol_conn *c, const ol_request *head, ol_span settings, size_t head_len)
{
    uint8_t payload[256];
    if (settings.len > sizeof(payload) * 4 / 3)
        return 0;
    Py_ssize_t n = base64url_decode(settings.base, settings.len, payload);
    if (n < 0 || !valid_settings(payload, (size_t)n))
        return 0; /* malformed: served as HTTP/1.1 */
    ol_h2 *h = new_h2(c);
    if (h == NULL)
        return 0;
    ol_h2_stream *s = NULL;
    if (nghttp2_session_upgrade2(h->session, payload, (size_t)n, head->method_id == OL_M_HEAD,
                                 NULL) != 0 ||
        (s = upgraded_stream(h, head)) == NULL) {
        free_h2(h);
        return 0;
    }
    static const char switching[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                    "Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    if (ol_conn_write(c, switching, sizeof(switching) - 1) < 0) {
        free_h2(h);
        return -1;
    }
    ol_conn_consume(c, head_len);
    enqueue(h, s, S_START | S_BODY);
    install(c, h);
    return 1;
}

/* Decide what the connection waits for: idle (no exchange) runs the
 * keep-alive deadline; a stream whose output waits for a window runs the
 * send deadline; a drained, done connection closes. */
static double due_after(double since, double timeout)
{
    return since > 0 && timeout > 0 ? since + timeout : 0;
}

static double earliest(double a, double b)
{
    return a == 0 ? b : b == 0 ? a : (a < b ? a : b);
}

/* The earliest time something is due on the connection (0: nothing):
 * the keep-alive deadline of an idle one; a stream's output waiting for a
 * window (--timeout-send), its app waiting for body bytes
 * (--timeout-request-body); the keepalive PING, and its answer. */
static double next_due(ol_h2 *h)
{
    const ol_config *cfg = &h->conn->server->cfg;
    double due = due_after(h->idle_since, cfg->keep_alive);
    for (ol_h2_stream *s = h->streams; s != NULL; s = s->next) {
        due = earliest(due, due_after(s->stalled_since, cfg->send_timeout));
        if (s->req != NULL)
            due = earliest(due, due_after(s->starved_since, cfg->body_timeout));
    }
    if (cfg->h2_ping_interval > 0 && h->idle_since == 0)
        due = earliest(due, due_after(h->pinged ? h->pinged : h->heard, cfg->h2_ping_interval));
    return due;
}

/* Decide what the connection waits for and until when, or that it is done. */
static void settle(ol_h2 *h)
{
    ol_conn *c = h->conn;
    ol_server *srv = c->server;
    double now = now_of(srv);
    if (c->flags & CONN_CLOSED)
        return;
    if (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session)) {
        ol_conn_close_gracefully(c);
        return;
    }
    int idle = h->exchanges == 0 && h->streams == NULL;
    if (h->goaway && idle && !nghttp2_session_want_write(h->session)) {
        ol_conn_close_gracefully(c);
        return;
    }
    for (ol_h2_stream *s = h->streams; s != NULL; s = s->next) {
        int waits = s->out_len > s->out_off && !(s->flags & S_DEFERRED);
        s->stalled_since = waits ? (s->stalled_since ? s->stalled_since : now) : 0;
    }
    if (idle && h->idle_since == 0) {
        h->idle_since = now;
        ol_conn_set_phase(c, ol_conn_pending(c) ? OL_PHASE_WRITING : OL_PHASE_IDLE);
        if (srv->handler->on_idle != NULL)
            srv->handler->on_idle(c);
    } else if (!idle) {
        h->idle_since = 0;
        ol_conn_set_phase(c, OL_PHASE_APP);
    }
    double due = next_due(h);
    h->has_due = due > 0;
    if (due > 0)
        ol_conn_set_deadline(c, due);
    ol_conn_update_events(c);
}

/* Hand the input buffer to nghttp2. */
static void feed(ol_h2 *h)
{
    ol_conn *c = h->conn;
    size_t len = c->rlen;
    if (h->in_session)
        return; /* never re-entered */
    if (len > 0) {
        h->heard = now_of(c->server);
        h->pinged = 0; /* any frame answers a keepalive PING as well as its ACK */
    }
    if (len > 0 && !h->failed) {
        h->in_session = 1;
        ssize_t n = nghttp2_session_mem_recv(h->session, (const uint8_t *)c->rbuf, len);
        h->in_session = 0;
        if (n < 0) {
            /* A connection error: nghttp2 has queued its GOAWAY where it
             * could (it, or a callback of ours, ended the session). */
            ol_log_debug(c->server, nghttp2_strerror((int)n));
            if (n == NGHTTP2_ERR_FLOODED) { /* answers the client does not read */
                ol_conn_abort(c);
                return;
            }
            if (n != NGHTTP2_ERR_CALLBACK_FAILURE || !nghttp2_session_want_write(h->session))
                nghttp2_session_terminate_session(h->session, n == NGHTTP2_ERR_BAD_CLIENT_MAGIC
                                                                  ? NGHTTP2_PROTOCOL_ERROR
                                                                  : NGHTTP2_INTERNAL_ERROR);
            h->goaway = h->failed = 1;
            c->flags &= ~CONN_READING;
            ol_conn_consume(c, len);
        } else {
            ol_conn_consume(c, (size_t)n);
        }
    }
    if (h->failed)
        c->rlen = 0; /* after a connection error, input is dropped */
    ol_conn_release_idle_buffers(c);
}

static void h2_on_data(ol_conn *c)
{
    ol_h2 *h = enter(c);
    if (h == NULL)
        return;
    feed(h);
    leave(h);
}

void ol_h2_process(ol_conn *c, PyThreadState **ts)
{
    PyEval_RestoreThread(*ts);
    ol_server_set_now(c->server);
    h2_on_data(c);
    *ts = PyEval_SaveThread();
}

static void h2_on_drained(ol_conn *c)
{
    ol_h2 *h = enter(c);
    if (h != NULL)
        leave(h);
}

static void h2_on_eof(ol_conn *c, int clean)
{
    (void)clean;
    c->flags |= CONN_PEER_CLOSED;
    ol_conn_abort(c);
}

/* The connection closed: every exchange learns its client is gone. */
static void h2_on_close(ol_conn *c)
{
    ol_h2 *h = enter(c);
    if (h == NULL)
        return;
    h->dead = 1;
    for (ol_h2_stream *s = h->streams; s != NULL; s = s->next)
        drop_exchange(h, s);
    const ol_handler *handler = c->server->handler;
    if (handler->on_close != NULL)
        handler->on_close(c);
    leave(h);
}

static int h2_waiting(const ol_conn *c)
{
    ol_h2 *h = c->h2;
    return h == NULL || h->has_due;
}

/* A deadline passed (next_due): an idle connection closes (GOAWAY first);
 * a stream whose client did not open its window in time, or did not send
 * the body its app waits for, is reset; a quiet connection with streams
 * open is pinged, and closed when the PING goes unanswered. What is not
 * due yet waits for the next deadline (settle). */
static void h2_on_timeout(ol_conn *c)
{
    ol_h2 *h = enter(c);
    if (h == NULL)
        return;
    ol_server *srv = c->server;
    const ol_config *cfg = &srv->cfg;
    double now = now_of(srv) + 0.001;
    if (h->idle_since && due_after(h->idle_since, cfg->keep_alive) <= now) {
        nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
        h->goaway = 1;
    }
    for (ol_h2_stream *s = h->streams; s != NULL; s = s->next) {
        double stall = due_after(s->stalled_since, cfg->send_timeout);
        double starve = s->req ? due_after(s->starved_since, cfg->body_timeout) : 0;
        int stalled = stall && stall <= now, starved = starve && starve <= now;
        if ((stalled || starved) && !(s->flags & S_RESET)) {
            s->flags |= S_RESET;
            s->stalled_since = s->starved_since = 0;
            ol_log_debug(srv, stalled ? "HTTP/2: a stream's client stopped reading"
                                      : "HTTP/2: timed out reading a request body");
            nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        }
    }
    if (cfg->h2_ping_interval > 0 && h->idle_since == 0) {
        double ping = due_after(h->pinged ? h->pinged : h->heard, cfg->h2_ping_interval);
        if (ping && ping <= now && h->pinged) {
            ol_log_debug(srv, "HTTP/2: no answer to a keepalive PING");
            ol_conn_abort(c);
        } else if (ping && ping <= now) {
            h->pinged = now;
            nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, NULL);
        }
    }
    leave(h);
}

/* Two steps (RFC 9113, 6.8): a GOAWAY naming no last stream, so the
 * client opens no new ones, and a PING; its answer proves every stream
 * opened before the notice has arrived, and the final GOAWAY names the
 * last of them. Those are served; none is refused. */
static void begin_shutdown(ol_h2 *h)
{
    if (h->shutdown)
        return;
    h->shutdown = 1;
    if (nghttp2_submit_shutdown_notice(h->session) != 0 ||
        nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, NULL) != 0) {
        h->shutdown = 2;
        h->goaway = 1;
        nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
    }
}

void ol_h2_flush(ol_conn *c)
{
    /* Nothing gathered, nothing to do: no hold. (Its state changes only
     * under the GIL, which this thread holds.) */
    ol_h2 *gathering = c->proto == &ol_h2_protocol ? c->h2 : NULL;
    if (gathering == NULL || !gathering->gathered || ol_conn_hold(c) < 0)
        return;
    ol_h2 *h = c->proto == &ol_h2_protocol ? enter(c) : NULL;
    if (h != NULL)
        leave(h); /* at depth 1: processes, flushes, settles */
    ol_conn_let_go(c);
}

void ol_h2_shutdown(ol_conn *c)
{
    ol_h2 *h = enter(c);
    if (h == NULL)
        return;
    begin_shutdown(h);
    leave(h);
}

const ol_proto ol_h2_protocol = {
    .name = "h2",
    .on_data = h2_on_data,
    .on_eof = h2_on_eof,
    .on_drained = h2_on_drained,
    .on_close = h2_on_close,
    .waiting = h2_waiting,
    .on_timeout = h2_on_timeout,
};
