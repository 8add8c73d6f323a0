/*
 * h1_response.c -- HTTP/1.1's side of the exchanges it carries
 * (ol_h1_carrier, exchange.h): the response head and its framing on the
 * wire (Content-Length, chunked coding, or a body the close ends), the
 * Connection field, the request body and 100 Continue, and what follows an
 * exchange's end on the connection. exchange.c decides what is sent; this
 * file decides how HTTP/1.1 says it.
 */
#include "core.h"

#include <string.h>
#include <sys/uio.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* The head                                                                 */

/* Whether the connection stays open after this response, and the framing
 * of a body whose length is not known: decided when the head is written,
 * so that the head can say so. */
static void choose_framing(ol_req *r)
{
    ol_conn *c = r->conn;
    unsigned max = r->server->cfg.max_keep_alive_requests;
    if (c != NULL && max && c->requests + 1 >= max)
        r->flags &= ~REQ_KEEP_ALIVE;
    /* Shutting down, or keep-alive off (--timeout-keep-alive 0): the head
     * says the connection closes, so the client does not send another
     * request into the close. */
    if (r->server->draining || r->server->cfg.keep_alive <= 0)
        r->flags &= ~REQ_KEEP_ALIVE;
    /* 100 Continue owed and the body never read: the client may be holding
     * the body back, so this connection cannot carry another request. */
    if (c != NULL && (r->flags & REQ_CONTINUE) && !c->body_done)
        r->flags &= ~REQ_KEEP_ALIVE;
    /* A body of unknown length (no body to send: neither field). */
    if (r->flags & (REQ_NO_BODY | REQ_HAS_LENGTH))
        return;
    if (!(r->flags & REQ_HTTP10))
        r->flags |= REQ_CHUNKED;
    else
        r->flags &= ~REQ_KEEP_ALIVE; /* HTTP/1.0: the end of the body is the close */
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static size_t head_size(ol_req *r)
{
    size_t n = 64 + 24 + 64 + 64; /* status line, Content-Length, Date, Server, Connection */
    n += r->reason ? (size_t)PyBytes_GET_SIZE(r->reason) : 40;
    Py_ssize_t count = PyList_GET_SIZE(r->headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(r->headers, i);
        n += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) +
             (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 4;
    }
    return n;
}

static char *put_status_line(ol_req *r, char *p)
{
    p = put(p, "HTTP/1.1 ", 9);
    *p++ = (char)('0' + r->status / 100);
    *p++ = (char)('0' + r->status / 10 % 10);
    *p++ = (char)('0' + r->status % 10);
    *p++ = ' ';
    if (r->reason != NULL) {
        p = put(p, PyBytes_AS_STRING(r->reason), (size_t)PyBytes_GET_SIZE(r->reason));
    } else {
        const char *reason = ol_reason_phrase(r->status);
        p = put(p, reason, strlen(reason));
    }
    return put(p, "\r\n", 2);
}

static char *put_server_fields(ol_req *r, char *p)
{
    ol_server *srv = r->server;
    if ((r->flags & REQ_HAS_LENGTH) && (r->flags & REQ_ADDED_LENGTH))
        p += sprintf(p, "Content-Length: %llu\r\n", (unsigned long long)r->content_length);
    else if (r->flags & REQ_CHUNKED)
        p = put(p, "Transfer-Encoding: chunked\r\n", 28);
    if (!(r->flags & REQ_KEEP_ALIVE))
        p = put(p, "Connection: close\r\n", 19);
    else if (r->flags & REQ_HTTP10)
        p = put(p, "Connection: keep-alive\r\n", 24);
    if (srv->cfg.date_header && !(r->flags & REQ_APP_DATE)) {
        p = put(p, "Date: ", 6);
        p = put(p, ol_date_cache_get(&srv->date, time(NULL)), OL_HTTP_DATE_LEN);
        p = put(p, "\r\n", 2);
    }
    if (srv->cfg.server_header && !(r->flags & REQ_APP_SERVER))
        p = put(p, "Server: oneloop\r\n", 17);
    return p;
}

/* Serialize the head into buf (at least head_size(r) bytes). */
static size_t build_head(ol_req *r, char *buf)
{
    char *p = put_status_line(r, buf);
    Py_ssize_t count = PyList_GET_SIZE(r->headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(r->headers, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        p = put(p, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        p = put(p, ": ", 2);
        p = put(p, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        p = put(p, "\r\n", 2);
    }
    p = put_server_fields(r, p);
    return (size_t)(put(p, "\r\n", 2) - buf);
}

/* ------------------------------------------------------------------------ */
/* The carrier                                                              */

/* The head (first call) and one body piece, framed, in one write. */
static int h1_send(ol_req *r, const char *data, size_t len, int more)
{
    ol_conn *c = r->conn;
    char small[4096];
    char *head = NULL;
    struct iovec iov[5];
    int n = 0;
    char chunk_line[24];

    if (!(r->flags & REQ_HEAD_SENT)) {
        choose_framing(r);
        size_t need = head_size(r);
        head = need <= sizeof(small) ? small : PyMem_Malloc(need);
        if (head == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        iov[n++] = (struct iovec){head, build_head(r, head)};
        r->flags |= REQ_HEAD_SENT;
    }
    if (len > 0 && (r->flags & REQ_CHUNKED)) {
        int k = snprintf(chunk_line, sizeof(chunk_line), "%zx\r\n", len);
        iov[n++] = (struct iovec){chunk_line, (size_t)k};
        iov[n++] = (struct iovec){(void *)data, len};
        iov[n++] = (struct iovec){"\r\n", 2};
    } else if (len > 0) {
        iov[n++] = (struct iovec){(void *)data, len};
    }
    if (!more && (r->flags & REQ_CHUNKED))
        iov[n++] = (struct iovec){"0\r\n\r\n", 5};
    int e = 0;
    if (n > 0 && c != NULL && !(c->flags & CONN_CLOSED))
        e = ol_conn_writev(c, iov, n);
    else if (n > 0)
        e = -1;
    if (head != small && head != NULL)
        PyMem_Free(head);
    return e;
}

/* The exchange leaves its connection, which carries the next request if
 * the head promised it may and nothing since says otherwise. */
static int h1_release(ol_req *r, int reuse)
{
    ol_conn *c = r->conn;
    if (c == NULL || c->request != r)
        return 0;
    int keep_alive =
        reuse && (r->flags & REQ_KEEP_ALIVE) && !(c->flags & (CONN_PEER_CLOSED | CONN_CLOSED));
    /* 100 Continue was owed but never sent: the client may be holding the
     * body back, so the connection cannot be reused. */
    if ((r->flags & REQ_CONTINUE) && !c->body_done)
        keep_alive = 0;
    c->request = NULL;
    ol_h1_request_done(c, keep_alive);
    return 1;
}

static int h1_refuse(ol_req *r, int status, const char *text)
{
    ol_conn *c = r->conn;
    if (c == NULL || c->request != r)
        return OL_REFUSE_NOT_HELD;
    c->request = NULL;
    if (status && !(r->flags & REQ_HEAD_SENT) && !(c->flags & CONN_CLOSED)) {
        ol_h1_send_error(c, status, text);
        return OL_REFUSE_ANSWERED;
    }
    ol_conn_abort(c);
    return OL_REFUSE_CUT;
}

static int h1_take_body(ol_req *r, PyObject **out)
{
    return ol_h1_take_body(r->conn, out);
}

/* A blocking holder waits for body bytes: read what the socket has, or
 * wait for it. Size lines and trailers are capped by the decoder, so the
 * buffer cannot grow without bound while a line is incomplete. */
static int h1_await_body(ol_req *r)
{
    ol_conn *c = r->conn;
    /* Responses gathered before it (pipelined requests, a 100 Continue)
     * go out before the wait: the client may wait for them to go on. */
    ol_conn_uncork(c);
    if (c->flags & CONN_CLOSED)
        return OL_EDISCONNECTED;
    Py_ssize_t n = ol_conn_recv(c);
    if (n == -1)
        return ol_conn_wait_readable(c, c->server->cfg.body_timeout) < 0 ? OL_ETIMEOUT : 0;
    if (n <= 0) {
        c->flags |= CONN_PEER_CLOSED;
        return n == 0 ? OL_EBODY_CUT : OL_EDISCONNECTED;
    }
    return 0;
}

static size_t h1_pending(const ol_req *r)
{
    return r->conn != NULL ? ol_conn_pending(r->conn) : 0;
}

const ol_carrier ol_h1_carrier = {
    .send = h1_send,
    .release = h1_release,
    .refuse = h1_refuse,
    .take_body = h1_take_body,
    .send_continue = ol_h1_continue,
    .pending = h1_pending,
    .await_body = h1_await_body,
};
