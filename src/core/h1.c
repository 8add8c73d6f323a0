/*
 * h1.c -- HTTP/1.1, the protocol every connection speaks first: heads,
 * request body framing, keep-alive and pipelining, the error replies the
 * server writes itself, and where an exchange (a request and its response)
 * begins and ends. See h1.h for the contract.
 *
 * One read loop serves both interfaces (ol_h1_process). On the event loop
 * the GIL is held throughout, and an exchange runs until its app suspends;
 * on a WSGI pool thread the GIL is released while reading and parsing and
 * taken around each exchange, which runs to its end there. What an exchange
 * does is the interface's business, reached through srv->handler, so this
 * file calls no interface directly.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* The GIL around interface calls, when the caller does not hold it         */

static void take_gil(PyThreadState **ts)
{
    if (ts != NULL)
        PyEval_RestoreThread(*ts);
}

static void drop_gil(PyThreadState **ts)
{
    if (ts != NULL)
        *ts = PyEval_SaveThread();
}

/* ------------------------------------------------------------------------ */
/* Error responses written by the server itself                             */

/* A short text/plain response of the server's own; `extra` is more header
 * lines ("Name: value\r\n"). Its body is left off for HEAD. */
static void write_plain(ol_conn *c, int status, const char *extra, const char *text, int close,
                        int head_only)
{
    ol_server *srv = c->server;
    char head[640], date[64] = "";
    size_t len = strlen(text);
    if (srv->cfg.date_header)
        snprintf(date, sizeof(date), "Date: %s\r\n", ol_date_cache_get(&srv->date, time(NULL)));
    int n =
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: %zu\r\n%s%s%s%s\r\n",
                 status, ol_reason_phrase(status), len + 1, close ? "Connection: close\r\n" : "",
                 extra, date, srv->cfg.server_header ? "Server: oneloop\r\n" : "");
    struct iovec iov[3] = {{head, (size_t)n}, {(void *)text, len}, {"\n", 1}};
    if (n > 0 && (size_t)n < sizeof(head))
        ol_conn_writev(c, iov, head_only ? 1 : 3);
}

/* An error response, then the connection closes. */
static void send_error_with(ol_conn *c, int status, const char *extra, const char *text)
{
    ol_meter_rejection(&c->server->meter, status);
    write_plain(c, status, extra, text, 1, 0);
    ol_conn_set_phase(c, OL_PHASE_WRITING);
    ol_conn_close_gracefully(c);
}

void ol_h1_send_error(ol_conn *c, int status, const char *text)
{
    send_error_with(c, status, "", text);
}

/* "100 Continue" when the body is first asked for and the client holds it
 * back: 0, or -1 when the connection is gone. */
int ol_h1_continue(ol_req *r)
{
    ol_conn *c = r->conn;
    if (!(r->flags & REQ_CONTINUE) || c == NULL)
        return 0;
    r->flags &= ~REQ_CONTINUE;
    if (c->rlen > 0 || c->body_done)
        return 0;
    return ol_conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

/* ------------------------------------------------------------------------ */
/* Request bodies                                                           */

/* The chunked decoder's state exists only while a chunked body is read:
 * an idle connection does not carry it. */
static void end_chunked(ol_conn *c)
{
    free(c->chunked);
    c->chunked = NULL;
}

/* 0, or -1 when out of memory. */
static int begin_body(ol_conn *c, const ol_request *head)
{
    c->body_framing = head->framing;
    c->body_total = 0;
    c->body_left = head->framing == OL_BODY_LENGTH ? head->content_length : 0;
    c->body_done =
        head->framing == OL_BODY_NONE || (head->framing == OL_BODY_LENGTH && c->body_left == 0);
    if (c->body_done)
        c->body_framing = OL_BODY_NONE;
    if (head->framing == OL_BODY_CHUNKED) {
        if (c->chunked == NULL && (c->chunked = malloc(sizeof(*c->chunked))) == NULL)
            return -1;
        ol_chunked_init(c->chunked, &c->server->cfg.limits);
    }
    return 0;
}

/* At most this many chunks are gathered into one body message. */
#define MAX_SPANS 64

static int count_body(ol_conn *c, size_t len)
{
    uint64_t max = c->server->cfg.max_body;
    c->body_total += len;
    return (max && c->body_total > max) ? OL_ETOO_LARGE : 0;
}

/* One bytes object from the spans (GIL held), or none if out is NULL. */
static int gather(PyObject **out, const ol_span *spans, int n)
{
    if (out == NULL || n == 0)
        return 0;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += spans[i].len;
    if (total == 0)
        return 0;
    *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (*out == NULL)
        return -1;
    char *p = PyBytes_AS_STRING(*out);
    for (int i = 0; i < n; i++) {
        memcpy(p, spans[i].base, spans[i].len);
        p += spans[i].len;
    }
    return 0;
}

/* Decode what the buffer holds of a chunked body into spans. */
static int decode_chunks(ol_conn *c, ol_span *spans, int *nspans, size_t *used_total)
{
    *nspans = 0;
    *used_total = 0;
    while (*nspans < MAX_SPANS) {
        size_t used;
        ol_span data;
        int r = ol_chunked_decode(c->chunked, c->rbuf + *used_total, c->rlen - *used_total, &used,
                                  &data);
        *used_total += used;
        if (r != OL_CHUNK_DATA)
            return r;
        if (count_body(c, data.len) < 0)
            return OL_ETOO_LARGE;
        spans[(*nspans)++] = data;
    }
    return OL_CHUNK_DATA;
}

int ol_h1_take_body(ol_conn *c, PyObject **out)
{
    if (c->body_done)
        return 1;
    if (c->body_framing == OL_BODY_LENGTH) {
        size_t n = c->rlen < c->body_left ? c->rlen : (size_t)c->body_left;
        if (count_body(c, n) < 0)
            return OL_ETOO_LARGE;
        ol_span span = {c->rbuf, n};
        if (gather(out, &span, 1) < 0)
            return -1;
        ol_conn_consume(c, n);
        c->body_left -= n;
        c->body_done = c->body_left == 0;
        return c->body_done;
    }
    ol_span spans[MAX_SPANS];
    int n;
    size_t used;
    int r = decode_chunks(c, spans, &n, &used);
    if (r < 0 && r != OL_INCOMPLETE)
        return r;
    if (gather(out, spans, n) < 0)
        return -1;
    ol_conn_consume(c, used);
    if (r == OL_CHUNK_DONE) {
        c->body_done = 1;
        end_chunked(c);
    }
    return c->body_done;
}

/* Drop the rest of a body nobody read, within the discard allowance. 1 when
 * the body is over, 0 if more must be read, -1 to give up and close. No GIL
 * needed. */
static int discard_body(ol_conn *c)
{
    uint64_t before = c->body_total;
    int r = ol_h1_take_body(c, NULL);
    uint64_t dropped = c->body_total - before;
    if (r < 0 || dropped > c->discard_left)
        return -1;
    c->discard_left -= dropped;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Heads                                                                    */

/* An HTTP/1.1 request to switch to WebSocket (RFC 6455 4.2.1): the
 * Connection and Upgrade fields say so; whether the handshake is valid is
 * checked later. */
/* Does a comma-separated field value hold the token (any case)? */
static int has_token(ol_span list, const char *token)
{
    size_t n = strlen(token);
    const char *p = list.base, *end = p + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - tok) == n && strncasecmp(tok, token, n) == 0)
            return 1;
    }
    return 0;
}

int ol_h1_is_websocket(const ol_request *h)
{
    return (h->flags & OL_REQ_UPGRADE) && has_token(h->upgrade, "websocket");
}

/* The value of the one field named `name`; 0 if absent or repeated. */
static int only_field(const ol_request *h, const char *name, ol_span *value)
{
    size_t n = strlen(name);
    int found = 0;
    for (size_t i = 0; i < h->num_headers; i++) {
        if (h->headers[i].name.len == n && strncasecmp(h->headers[i].name.base, name, n) == 0) {
            *value = h->headers[i].value;
            found++;
        }
    }
    return found == 1;
}

/*
 * Upgrade: h2c (RFC 7540, 3.2; deprecated by RFC 9113 but still sent by
 * some clients, curl among them): a cleartext request without a body that
 * names h2c and carries one HTTP2-Settings, listed in Connection, becomes
 * stream 1 of an HTTP/2 connection. Anything less is served as HTTP/1.1.
 * 1 if switched, 0 if not, -1 if the connection is gone. GIL held.
 */
static int h2c_upgrade(ol_conn *c, const ol_request *h, size_t head_len)
{
    ol_span settings, connection;
    if (!c->server->cfg.h2 || c->tls != NULL || !(h->flags & OL_REQ_UPGRADE) ||
        !has_token(h->upgrade, "h2c") || h->version_minor < 1)
        return 0;
    if (!(h->framing == OL_BODY_NONE || (h->framing == OL_BODY_LENGTH && h->content_length == 0)))
        return 0;
    if (!only_field(h, "http2-settings", &settings) || !only_field(h, "connection", &connection) ||
        !has_token(connection, "http2-settings"))
        return 0;
    if (c->flags & CONN_BLOCKING) { /* a pool thread's HTTP/2 is not gathered */
        ol_conn_uncork(c);
        if (c->flags & CONN_CLOSED)
            return -1;
    }
    return ol_h2_upgrade(c, h, settings, head_len);
}

/* A parse error gets its status and the connection closes. GIL held. */
static void answer_parse_error(ol_conn *c, int error)
{
    int status = ol_error_status(error);
    if (error == OL_EURI_TOO_LONG || error == OL_EHEADERS_TOO_LARGE ||
        error == OL_ETOO_MANY_HEADERS || status >= 500)
        ol_log_debug(c->server, ol_strerror(error));
    ol_h1_send_error(c, status, ol_strerror(error));
}

/*
 * A parsed head that oneloop answers itself instead of the app: protocols
 * and versions it does not serve, codings it cannot decode, WebSocket (not
 * yet), CONNECT, bodies over the limit. Returns 1 if answered. GIL held.
 */
static int refuse(ol_conn *c, const ol_request *h)
{
    ol_server *srv = c->server;
    if (h->protocol != OL_PROTO_HTTP || h->version_major != 1) {
        ol_h1_send_error(c, 505, "HTTP version not supported");
        return 1;
    }
    if (h->flags & OL_REQ_TE_OTHER) {
        ol_h1_send_error(c, 501, "transfer coding not implemented");
        return 1;
    }
    if (h->flags & OL_REQ_CONNECT) {
        ol_h1_send_error(c, 501, "CONNECT is not supported");
        return 1;
    }
    if (srv->cfg.max_body && h->framing == OL_BODY_LENGTH &&
        h->content_length > srv->cfg.max_body) {
        ol_h1_send_error(c, 413, "request body too large");
        return 1;
    }
    return 0;
}

/* Does the head ask for the path of --health-path (any query)? */
static int is_health_check(const ol_config *cfg, const ol_request *h)
{
    size_t n = cfg->health_path_len;
    if (cfg->health_path == NULL || h->target.len < n ||
        memcmp(h->target.base, cfg->health_path, n) != 0)
        return 0;
    return h->target.len == n || h->target.base[n] == '?';
}

/*
 * --health-path, answered by the core without calling the app, so a load
 * balancer learns whether this worker serves, not whether the app's slowest
 * dependency answers: 200, or 503 once the worker drains (a balancer
 * stops sending here before the listener closes). GET and HEAD only; other
 * methods go to the app. 1 if answered. GIL held.
 */
static int answer_health(ol_conn *c, const ol_request *h, size_t head_len)
{
    ol_server *srv = c->server;
    int method = h->method_id;
    if ((method != OL_M_GET && method != OL_M_HEAD) || !is_health_check(&srv->cfg, h))
        return 0;
    if (begin_body(c, h) < 0) { /* a body sent along is skipped like an unread one */
        ol_h1_send_error(c, 500, "Internal Server Error");
        return 1;
    }
    ol_conn_consume(c, head_len);
    int draining = ol_server_is_draining(srv);
    int keep_alive = (h->flags & OL_REQ_KEEP_ALIVE) && h->version_minor >= 1 && !draining;
    OL_COUNT(srv, health_checks, 1);
    write_plain(c, draining ? 503 : 200, "Cache-Control: no-store\r\n",
                draining ? "draining" : "OK", !keep_alive, method == OL_M_HEAD);
    ol_h1_request_done(c, keep_alive);
    return 1;
}

/* --limit-concurrency: with that many exchanges in the app (requests and
 * WebSocket sessions), the next is answered 503 by the core without
 * calling the app, and the client told when to retry; it is never queued
 * behind the others. 1 if refused. GIL held (srv->active). */
static int over_capacity(ol_conn *c)
{
    ol_server *srv = c->server;
    if (srv->cfg.limit_concurrency == 0 || srv->active < srv->cfg.limit_concurrency)
        return 0;
    send_error_with(c, 503, "Retry-After: 1\r\n", "too many requests in flight");
    return 1;
}

/*
 * A WebSocket handshake for an ASGI app (WSGI apps take the connection
 * over themselves, and with --ws off the upgrade is ignored): 1 if it is
 * one, its answer's makings in *hs; 0 if the head asks for none; -1 if it
 * was refused (400, or 426 naming the version served). GIL held.
 */
static int websocket_handshake(ol_conn *c, const ol_request *h, ol_ws_handshake *hs)
{
    ol_server *srv = c->server;
    if (!srv->cfg.ws || srv->interface == OL_WSGI || !ol_h1_is_websocket(h))
        return 0;
    const char *why = NULL;
    int status = ol_ws_check_handshake(srv, h, hs, &why);
    if (status == 0)
        return 1;
    ol_log_debug(srv, why);
    send_error_with(c, status, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", why);
    return -1;
}

/*
 * Begin the exchange for a parsed head: the request object, what the
 * interface builds from the head (while its bytes are still in the buffer),
 * then the head leaves the buffer, the body framing starts, and the
 * interface runs the app. -1 if it could not begin. GIL held.
 */
static int begin_exchange(ol_conn *c, const ol_request *h, size_t head_len,
                          const ol_ws_handshake *ws)
{
    ol_server *srv = c->server;
    ol_req *r = ol_req_new(c, &ol_h1_carrier);
    if (r != NULL && ws != NULL) {
        r->flags |= REQ_WEBSOCKET | REQ_BODY_DONE;
        r->ws_handshake = PyMem_Malloc(sizeof(*ws));
        if (r->ws_handshake == NULL) {
            PyErr_NoMemory();
            srv->handler->release(r);
            return -1;
        }
        *r->ws_handshake = *ws;
    }
    if (r == NULL || ol_req_set_head(r, h) < 0 || srv->handler->prepare(r, h) < 0) {
        if (r != NULL)
            srv->handler->release(r);
        return -1;
    }
    if (begin_body(c, h) < 0) {
        PyErr_NoMemory();
        srv->handler->release(r);
        return -1;
    }
    ol_conn_consume(c, head_len);
    if ((h->flags & OL_REQ_EXPECT_CONTINUE) && !c->body_done && h->version_minor >= 1)
        r->flags |= REQ_CONTINUE;
    c->request = (ol_req *)Py_NewRef(r);
    ol_conn_set_phase(c, OL_PHASE_APP);
    /* A pool thread gathers only while a later request is already here:
     * the last response of a read is written as the app makes it (taking
     * along what was gathered), as an unpipelined one always is. */
    if ((c->flags & CONN_BLOCKING) &&
        c->rlen <= (c->body_framing == OL_BODY_LENGTH ? c->body_left : 0))
        c->flags &= ~CONN_CORKED;
    srv->handler->run(r);
    srv->handler->release(r);
    return 0;
}

/* Thread-local header arrays: each pool thread parses into its own; the
 * event loop's thread uses the server's. */
static __thread ol_header *thread_fields;

void ol_h1_thread_exit(void)
{
    PyMem_RawFree(thread_fields);
    thread_fields = NULL;
}

static ol_header *fields_for(ol_server *srv, PyThreadState **ts)
{
    if (ts == NULL)
        return srv->h1.fields;
    if (thread_fields == NULL)
        thread_fields = PyMem_RawCalloc(srv->cfg.limits.max_fields + 1, sizeof(ol_header));
    return thread_fields;
}

/* Parse the next head and begin its exchange. 1 if an exchange began (and,
 * on a pool thread, ended), 0 if more input is needed, -1 if the connection
 * is done. */
static int next_request(ol_conn *c, PyThreadState **ts)
{
    ol_server *srv = c->server;
    ol_header *fields = fields_for(srv, ts);
    if (fields == NULL) {
        take_gil(ts);
        ol_log_error(srv, "out of memory for a request head");
        ol_conn_abort(c);
        drop_gil(ts);
        return -1;
    }
    ol_request head = {.headers = fields};
    if (c->flags & CONN_IDLE) {
        /* First byte of a new head: the header deadline starts now and
         * does not move however slowly the rest trickles in. */
        c->flags &= ~CONN_IDLE;
        ol_conn_set_deadline(c, ol_deadline(ts ? ol_now() : srv->now, srv->cfg.header_timeout));
    }
    int r = ol_parse_request(&c->parser, c->rbuf, c->rlen, &head, &srv->cfg.limits);
    if (r == OL_INCOMPLETE) {
        /* (A head that arrives whole goes from idle to the app directly.) */
        ol_conn_set_phase(c, OL_PHASE_READING);
        return 0;
    }
    ol_parser_init(&c->parser);
    take_gil(ts);
    if (ts != NULL)
        ol_server_set_now(srv);
    int result = 1, ws = 0, h2c = 0;
    ol_ws_handshake hs;
    if (r < 0) {
        answer_parse_error(c, r);
        result = -1;
    } else if (refuse(c, &head) || answer_health(c, &head, (size_t)r) || over_capacity(c) ||
               (ws = websocket_handshake(c, &head, &hs)) < 0) {
        result = -1;
    } else if (!ws && (h2c = h2c_upgrade(c, &head, (size_t)r)) != 0) {
        result = -1; /* HTTP/2 from here on, or gone */
    } else if (begin_exchange(c, &head, (size_t)r, ws ? &hs : NULL) < 0) {
        /* Draining too: a request that is here is served, and its
         * response closes the connection ("Connection: close", request.c). */
        ol_log_error(srv, "cannot start a request");
        ol_h1_send_error(c, 500, "Internal Server Error");
        result = -1;
    }
    drop_gil(ts);
    return result;
}

/* ------------------------------------------------------------------------ */
/* The read loop                                                            */

/* Read on while a head is incomplete or a body is wanted; stop while a
 * request is in flight and enough of its input is buffered, and while a
 * closing connection drains its output (then it lingers, reading to drop). */
static int wants_input(const ol_conn *c)
{
    if (c->flags & CONN_LINGER)
        return 1;
    if (c->flags & CONN_CLOSING)
        return 0;
    return c->request == NULL || c->rlen < c->server->cfg.read_high_water;
}

/* Body bytes of the exchange in flight go to it; those of a finished one
 * are dropped. 1 to go on with the next head, 0 to wait for input, -1 when
 * the connection closes. */
static int feed_body(ol_conn *c, PyThreadState **ts)
{
    const ol_handler *handler = c->server->handler;
    if (c->request != NULL) {
        take_gil(ts);
        handler->on_body(c->request);
        drop_gil(ts);
        return 0;
    }
    int r = discard_body(c);
    if (r < 0) {
        take_gil(ts);
        ol_conn_close_gracefully(c);
        drop_gil(ts);
    }
    return r;
}

/*
 * Does the connection speak HTTP/2 instead? 1: yes (h2.h); 0: it is
 * HTTP/1.1; -1: not known until more bytes come. Only a connection's very
 * first bytes can say so: its TLS client chose h2 by ALPN, --http 2 is
 * all that is served, or the client opens with the HTTP/2 preface.
 */
static int wants_h2(const ol_conn *c)
{
    const ol_config *cfg = &c->server->cfg;
    if (!cfg->h2 || c->requests > 0 || c->request != NULL)
        return 0;
    if (!(c->flags & CONN_ALPN_H2) && cfg->http != OL_HTTP_2) {
        size_t n = c->rlen < OL_H2_PREFACE_LEN ? c->rlen : OL_H2_PREFACE_LEN;
        if (c->tls != NULL || n == 0 || memcmp(c->rbuf, OL_H2_PREFACE, n) != 0)
            return 0;
        if (n < OL_H2_PREFACE_LEN)
            return -1;
    }
    return 1;
}

/* The switch point to HTTP/2: 1 if c no longer speaks HTTP/1.1 (or it
 * cannot tell yet). */
static int switched(ol_conn *c, PyThreadState **ts)
{
    int h2 = wants_h2(c);
    if (h2 < 0)
        ol_conn_update_events(c);
    if (h2 <= 0)
        return h2 < 0;
    take_gil(ts);
    if (ts != NULL)
        ol_server_set_now(c->server);
    ol_h2_start(c);
    drop_gil(ts);
    return 1;
}

void ol_h1_process(ol_conn *c, PyThreadState **ts)
{
    const ol_handler *handler = c->server->handler;
    if (switched(c, ts))
        return;
    c->flags |= CONN_PROCESSING;
    /* The responses to pipelined requests are gathered and leave together:
     * at 64 KiB, after the last request the buffer holds, and before
     * anything that waits for the client or writes past the buffer (a
     * pool thread's wait for body bytes, sendfile, a streamed body, the
     * socket lent to the app, a call to the loop). */
    ol_conn_cork(c);
    while (!(c->flags & CONN_CLOSING) && c->proto == &ol_h1_protocol) {
        if (!c->body_done || c->request != NULL) {
            if (feed_body(c, ts) <= 0)
                break;
            continue;
        }
        if (c->rlen == 0) {
            ol_conn_release_idle_buffers(c);
            if (handler->on_idle != NULL) {
                take_gil(ts);
                handler->on_idle(c);
                drop_gil(ts);
            }
            break;
        }
        if (next_request(c, ts) <= 0)
            break;
    }
    c->flags &= ~CONN_PROCESSING;
    if (ts == NULL) {
        ol_conn_uncork(c);
        if (c->rlen == 0 && !(c->flags & CONN_CLOSED))
            ol_conn_release_idle_buffers(c);
    } else {
        if (ol_conn_pending(c) > 0 && !(c->flags & CONN_CLOSED)) {
            take_gil(ts); /* the holder sends it (and may close) with the GIL */
            ol_server_set_now(c->server);
            ol_conn_uncork(c);
            drop_gil(ts);
        }
        c->flags &= ~CONN_CORKED;
    }
    if (!(c->flags & CONN_CLOSED) && c->proto == &ol_h1_protocol) {
        c->flags = wants_input(c) ? (c->flags | CONN_READING) : (c->flags & ~CONN_READING);
        ol_conn_update_events(c);
    }
}

/* ------------------------------------------------------------------------ */
/* Between exchanges                                                        */

void ol_h1_request_done(ol_conn *c, int keep_alive)
{
    ol_server *srv = c->server;
    /* Gathering pays only for a batch of pipelined requests: with no more
     * input buffered, or the connection closing, the response leaves now,
     * not when the app's step ends (it may go on working after its
     * response). The next request of the batch is gathered again, also
     * after a response that went out as it was made (streamed). */
    c->requests++;
    if (srv->cfg.max_keep_alive_requests && c->requests >= srv->cfg.max_keep_alive_requests)
        keep_alive = 0;
    if (c->flags & CONN_PROCESSING) {
        if (c->rlen == 0 || !keep_alive) {
            ol_conn_uncork(c);
            if (c->flags & CONN_CLOSED)
                return;
        }
        ol_conn_cork(c);
    }
    /* Closing is decided by what the head said (exchange.c, choose_framing),
     * never later: a response that promised keep-alive before a shutdown
     * began leaves the connection open, or the client, told it may, would
     * send its next request into our close. That request is answered, with
     * "Connection: close". */
    if (!keep_alive) {
        ol_conn_set_phase(c, OL_PHASE_WRITING);
        ol_conn_close_gracefully(c);
        return;
    }
    c->flags |= CONN_IDLE;
    ol_conn_set_phase(c, ol_conn_pending(c) > 0 ? OL_PHASE_WRITING : OL_PHASE_IDLE);
    ol_conn_set_deadline(c, ol_deadline(srv->now, srv->cfg.keep_alive));
    c->discard_left = 65536; /* an unread body up to this size is skipped, not fatal */
    /* A response finished by the app after it suspended: pipelined input
     * already buffered will not be announced by epoll again. */
    if (!srv->threaded && !(c->flags & CONN_PROCESSING) && (c->rlen > 0 || !c->body_done))
        ol_conn_schedule(c);
}

int ol_h1_is_idle(const ol_conn *c)
{
    return c->request == NULL && (c->flags & CONN_IDLE) && ol_conn_pending(c) == 0;
}

/* ------------------------------------------------------------------------ */
/* The transport's callbacks (conn.h)                                       */

static void h1_on_data(ol_conn *c)
{
    ol_h1_process(c, NULL);
}

/* The client closed its side (clean) or the socket failed. */
static void h1_on_eof(ol_conn *c, int clean)
{
    c->flags |= CONN_PEER_CLOSED;
    ol_req *r = c->request;
    if (r == NULL) {
        ol_conn_abort(c);
        return;
    }
    /* A clean EOF after a complete request may be a half-close: the client
     * still reads our answer. Tell a listening receive(), but let send() go
     * on until the socket itself refuses. A clean EOF inside the body is a
     * half-close too, but of a message that can never be complete: the
     * interface answers it 400 if it can (on_eof sees body_done unset). */
    const ol_handler *handler = c->server->handler;
    if (clean)
        handler->on_eof(r);
    else
        handler->on_disconnect(r);
    ol_conn_update_events(c);
}

static void h1_on_drained(ol_conn *c)
{
    if (c->request != NULL)
        c->server->handler->on_drain(c->request);
    else if ((c->flags & CONN_IDLE) && c->phase == OL_PHASE_WRITING)
        ol_conn_set_phase(c, OL_PHASE_IDLE);
}

/* The connection closes: the exchange in flight learns its client is gone,
 * and the interface lets go of what it keeps per connection. */
static void h1_on_close(ol_conn *c)
{
    const ol_handler *handler = c->server->handler;
    end_chunked(c);
    ol_req *r = c->request;
    if (r != NULL) {
        r->flags |= REQ_DISCONNECTED;
        handler->on_disconnect(r);
        c->request = NULL;
        ol_req_detach(r);
        Py_DECREF(r);
    }
    if (handler->on_close != NULL)
        handler->on_close(c);
}

/* Does the protocol wait for the client now (so its deadline runs)? An
 * exchange handled by the app has none, unless it waits for body bytes. */
static int h1_waiting(const ol_conn *c)
{
    if (c->request != NULL)
        return c->server->handler->waits_for_client(c->request);
    return 1;
}

/* What the connection waited for decides what its deadline means. */
static void h1_on_timeout(ol_conn *c)
{
    if (c->request != NULL) {
        ol_conn_abort(c); /* body bytes that did not come in time */
    } else if ((c->flags & CONN_IDLE) || c->rlen == 0) {
        ol_conn_close_gracefully(c); /* keep-alive idle: nothing to say */
    } else {
        ol_log_debug(c->server, "timed out reading a request head");
        ol_h1_send_error(c, 408, "request head not received in time");
    }
}

const ol_proto ol_h1_protocol = {
    .name = "http/1.1",
    .on_data = h1_on_data,
    .on_eof = h1_on_eof,
    .on_drained = h1_on_drained,
    .on_close = h1_on_close,
    .waiting = h1_waiting,
    .on_timeout = h1_on_timeout,
};
