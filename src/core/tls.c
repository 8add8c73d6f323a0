/*
 * tls.c -- TLS for the transport, through ssl.SSLObject and two memory
 * BIOs: the socket stays the connection's own, and only the bytes pass
 * through the TLS engine. Everything here needs the GIL. Plaintext lands
 * in the connection's input buffer; records go out through
 * ol_conn_raw_writev(), so they follow the transport's rules (blocking
 * holder, corking, buffering).
 */
#include "core.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define RECV_CHUNK 16384

/* What the TLS code needs from the ssl module, looked up once. */
static int load_ssl(ol_state *st)
{
    if (st->ssl_memory_bio != NULL)
        return 0;
    PyObject *ssl = PyImport_ImportModule("ssl");
    if (ssl == NULL)
        return -1;
    st->ssl_want_read = PyObject_GetAttrString(ssl, "SSLWantReadError");
    st->ssl_memory_bio = st->ssl_want_read ? PyObject_GetAttrString(ssl, "MemoryBIO") : NULL;
    Py_DECREF(ssl);
    if (st->ssl_memory_bio == NULL) {
        Py_CLEAR(st->ssl_want_read);
        return -1;
    }
    return 0;
}

static int tls_setup(ol_conn *c)
{
    ol_state *st = c->server->state;
    if (load_ssl(st) < 0)
        return -1;
    c->tls_in = PyObject_CallNoArgs(st->ssl_memory_bio);
    c->tls_out = c->tls_in ? PyObject_CallNoArgs(st->ssl_memory_bio) : NULL;
    if (c->tls_out == NULL)
        return -1;
    c->tls = PyObject_CallMethod(c->listener->ssl_context, "wrap_bio", "OOO", c->tls_in, c->tls_out,
                                 Py_True);
    if (c->tls == NULL)
        return -1;
    c->flags |= CONN_HANDSHAKE;
    return 0;
}

/* Move what the TLS engine produced to the socket (or the output buffer). */
static int tls_flush_out(ol_conn *c)
{
    PyObject *data = PyObject_CallMethod(c->tls_out, "read", NULL);
    if (data == NULL)
        return -1;
    int r = 0;
    if (PyBytes_GET_SIZE(data) > 0) {
        struct iovec iov = {PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data)};
        r = ol_conn_raw_writev(c, &iov, 1);
    }
    Py_DECREF(data);
    return r;
}

/* Clear the pending exception; 1 if it was ssl.SSLWantReadError (the TLS
 * engine needs more bytes from the client), 0 for a real TLS error. */
static int clear_want_read(ol_conn *c)
{
    PyObject *exc = ol_err_take();
    ol_state *st = c->server->state;
    int want = exc != NULL && st->ssl_want_read != NULL &&
               PyErr_GivenExceptionMatches(exc, st->ssl_want_read);
    if (exc != NULL && !want)
        ol_log_debug_exc(c->server, "TLS error", exc);
    Py_XDECREF(exc);
    return want;
}

/* The protocol the client chose by ALPN, for the protocol to switch on. */
static int note_alpn(ol_conn *c)
{
    PyObject *name = PyObject_CallMethod(c->tls, "selected_alpn_protocol", NULL);
    if (name == NULL)
        return -1;
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "h2") == 0)
        c->flags |= CONN_ALPN_H2;
    Py_DECREF(name);
    return 0;
}

/* Decrypt what is available into the input buffer. Returns bytes of
 * plaintext added, -1 when more ciphertext is needed, -2 on error. */
static Py_ssize_t tls_read_plain(ol_conn *c)
{
    Py_ssize_t added = 0;
    if (c->flags & CONN_HANDSHAKE) {
        PyObject *r = PyObject_CallMethod(c->tls, "do_handshake", NULL);
        if (r == NULL) {
            int want = clear_want_read(c);
            if (tls_flush_out(c) < 0 || !want)
                return -2;
            return -1;
        }
        Py_DECREF(r);
        c->flags &= ~CONN_HANDSHAKE;
        if (tls_flush_out(c) < 0 || note_alpn(c) < 0)
            return -2;
    }
    for (;;) {
        if (ol_conn_reserve(c, RECV_CHUNK) < 0)
            return -2;
        PyObject *data = PyObject_CallMethod(c->tls, "read", "n", (Py_ssize_t)(c->rcap - c->rlen));
        if (data == NULL) {
            if (!clear_want_read(c))
                return added > 0 ? added : -2;
            break;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        memcpy(c->rbuf + c->rlen, PyBytes_AS_STRING(data), (size_t)n);
        Py_DECREF(data);
        if (n == 0) /* close_notify from the client */
            return added > 0 ? added : 0;
        c->rlen += (size_t)n;
        added += n;
    }
    return added > 0 ? added : -1;
}

/* Feed ciphertext from the socket to the TLS engine, then decrypt. */
Py_ssize_t ol_tls_recv(ol_conn *c)
{
    if (c->tls == NULL && tls_setup(c) < 0) {
        ol_log_error(c->server, "cannot set up TLS for a connection");
        return -2;
    }
    char raw[RECV_CHUNK];
    Py_ssize_t n;
    do
        n = recv(c->fd, raw, sizeof(raw), 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
    if (n == 0)
        return 0;
    OL_COUNT(c->server, bytes_in, n);
    PyObject *r = PyObject_CallMethod(c->tls_in, "write", "y#", raw, n);
    if (r == NULL)
        return -2;
    Py_DECREF(r);
    return tls_read_plain(c);
}

int ol_tls_writev(ol_conn *c, const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            continue;
        PyObject *r =
            PyObject_CallMethod(c->tls, "write", "y#", iov[i].iov_base, (Py_ssize_t)iov[i].iov_len);
        if (r == NULL) {
            PyErr_Clear();
            return -1;
        }
        Py_DECREF(r);
    }
    return tls_flush_out(c);
}
