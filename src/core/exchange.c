/*
 * exchange.c -- the exchange (Request object) shared by both interfaces, and
 * what its response says: the status and headers taken from the app, which
 * body it has and its length; the carrying protocol puts it on the wire
 * (ol_carrier, exchange.h; h1_response.c for HTTP/1.1).
 *
 * Body rules, in order:
 *   - 1xx, 204 and 304 responses, and responses to HEAD, carry no body;
 *   - a Content-Length from the app is honoured: a body longer than it is
 *     cut (and logged), a shorter one closes the connection;
 *   - otherwise, when the whole body is known at the first body message,
 *     Content-Length is added;
 *   - otherwise the length is left to the protocol's framing (HTTP/1.1:
 *     chunked coding, or for HTTP/1.0 a body the close ends).
 */
#include "core.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* Headers from the app                                                     */

/* Bytes of a header name or value: bytes for ASGI, str (latin-1) for WSGI.
 * Returns a new bytes object or NULL with an exception. */
static PyObject *header_bytes(PyObject *v, const char *what)
{
    if (PyBytes_Check(v))
        return Py_NewRef(v);
    if (PyUnicode_Check(v))
        return PyUnicode_AsEncodedString(v, "latin-1", "strict");
    if (PyByteArray_Check(v) || PyMemoryView_Check(v))
        return PyBytes_FromObject(v);
    PyErr_Format(PyExc_TypeError, "response header %s must be bytes, not %.100s", what,
                 Py_TYPE(v)->tp_name);
    return NULL;
}

static int is_name(PyObject *b, const char *lower)
{
    size_t n = strlen(lower);
    if ((size_t)PyBytes_GET_SIZE(b) != n)
        return 0;
    return strncasecmp(PyBytes_AS_STRING(b), lower, n) == 0;
}

/* Content-Length from the app: digits only, or the app is wrong. */
static int parse_length(PyObject *value, uint64_t *out)
{
    const char *p = PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    uint64_t v = 0;
    if (n == 0 || n > 18)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

/* Check one (name, value) pair and append it to out, or apply it (framing
 * fields the server owns). */
static int take_header(ol_req *r, PyObject *name, PyObject *value, PyObject *out)
{
    if (!ol_valid_field_name(PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name))) {
        PyErr_Format(PyExc_ValueError, "invalid response header name %R", name);
        return -1;
    }
    if (!ol_valid_field_value(PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value))) {
        PyErr_Format(PyExc_ValueError, "invalid response header value %R for %R", value, name);
        return -1;
    }
    if (is_name(name, "content-length")) {
        uint64_t n;
        if (parse_length(value, &n) < 0) {
            PyErr_Format(PyExc_ValueError, "invalid Content-Length %R", value);
            return -1;
        }
        if ((r->flags & REQ_HAS_LENGTH) && n != r->content_length) {
            PyErr_SetString(PyExc_ValueError, "conflicting Content-Length headers");
            return -1;
        }
        r->flags |= REQ_HAS_LENGTH;
        r->content_length = n;
    } else if (is_name(name, "transfer-encoding")) {
        /* The server frames the body; a chunked request from the app is
         * honoured by chunking, anything else is not ours to apply. */
        if (!is_name(value, "chunked")) {
            PyErr_Format(PyExc_ValueError, "unsupported Transfer-Encoding %R", value);
            return -1;
        }
        r->flags |= REQ_APP_CHUNKED;
        return 0;
    } else if (r->server->interface == OL_WSGI &&
               (is_name(name, "keep-alive") || is_name(name, "te") || is_name(name, "trailer") ||
                is_name(name, "trailers") || is_name(name, "upgrade") ||
                is_name(name, "proxy-authenticate") || is_name(name, "proxy-authorization"))) {
        return 0; /* hop-by-hop: PEP 3333 forbids them from apps; dropped, as gunicorn does */
    } else if (is_name(name, "connection")) {
        if (strcasestr(PyBytes_AS_STRING(value), "close") != NULL)
            r->flags &= ~REQ_KEEP_ALIVE;
        return 0; /* the server writes its own Connection field */
    } else if (r->server->cfg.date_header && is_name(name, "date")) {
        r->flags |= REQ_APP_DATE;
    } else if (r->server->cfg.server_header && is_name(name, "server")) {
        r->flags |= REQ_APP_SERVER;
    }
    PyObject *pair = PyTuple_Pack(2, name, value);
    if (pair == NULL)
        return -1;
    int e = PyList_Append(out, pair);
    Py_DECREF(pair);
    return e;
}

int ol_response_begin(ol_req *r, int status, PyObject *reason, PyObject *headers)
{
    if (status < 100 || status > 999) {
        PyErr_Format(PyExc_ValueError, "invalid response status %d", status);
        return -1;
    }
    PyObject *list = PyList_New(0);
    PyObject *it = list ? PyObject_GetIter(headers) : NULL;
    if (it == NULL) {
        Py_XDECREF(list);
        return -1;
    }
    unsigned saved = r->flags;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *pair = PySequence_Fast(item, "a response header must be a (name, value) pair");
        Py_DECREF(item);
        if (pair == NULL || PySequence_Fast_GET_SIZE(pair) != 2) {
            if (pair != NULL)
                PyErr_SetString(PyExc_ValueError, "a response header must be a (name, value) pair");
            Py_XDECREF(pair);
            goto fail;
        }
        PyObject *name = header_bytes(PySequence_Fast_GET_ITEM(pair, 0), "name");
        PyObject *value = name ? header_bytes(PySequence_Fast_GET_ITEM(pair, 1), "value") : NULL;
        Py_DECREF(pair);
        int e = value ? take_header(r, name, value, list) : -1;
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (e < 0)
            goto fail;
    }
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(it);
    r->status = status;
    Py_XSETREF(r->reason, Py_XNewRef(reason));
    Py_XSETREF(r->headers, list);
    r->flags |= REQ_STARTED;
    return 0;
fail:
    r->flags = saved;
    Py_DECREF(it);
    Py_DECREF(list);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Which body                                                               */

static int status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* At the first body message: whether there is a body on the wire, and
 * its length when the whole of it is known already. */
static void choose_length(ol_req *r, size_t first_len, int more)
{
    if (!status_has_body(r->status)) {
        r->flags |= REQ_NO_BODY;
        return;
    }
    if (r->flags & REQ_HEAD)
        r->flags |= REQ_NO_BODY;
    if (!(r->flags & REQ_HAS_LENGTH) && !more && !(r->flags & REQ_APP_CHUNKED)) {
        r->flags |= REQ_HAS_LENGTH | REQ_ADDED_LENGTH;
        r->content_length = first_len;
    }
}

/* ------------------------------------------------------------------------ */
/* Body                                                                     */

/* A body that disagrees with its Content-Length: an ASGI app gets a
 * RuntimeError from send() (as from uvicorn); for WSGI, where the body is
 * an iterable the server drains, it is logged. Either way the connection
 * closes after the response. Returns -1 if an exception was raised. */
static int length_mismatch(ol_req *r, const char *what)
{
    r->flags &= ~REQ_KEEP_ALIVE;
    char message[128];
    snprintf(message, sizeof(message), "Response content %s than Content-Length (%llu bytes)", what,
             (unsigned long long)r->content_length);
    ol_log_error(r->server, message);
    if (r->server->interface == OL_WSGI)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, message);
    return -1;
}

/* Cut what a declared Content-Length does not allow. */
static size_t allowed_length(ol_req *r, size_t len, int *overrun)
{
    *overrun = 0;
    if (!(r->flags & REQ_HAS_LENGTH) || (r->flags & REQ_NO_BODY))
        return len;
    uint64_t room = r->content_length - r->sent;
    if (len <= room)
        return len;
    *overrun = !(r->flags & REQ_OVERRUN);
    r->flags |= REQ_OVERRUN;
    return (size_t)room;
}

/* Called once the last body byte is out (or nothing more will be).
 * Returns -1 if an exception was raised for the app. */
static int complete(ol_req *r)
{
    int e = 0;
    if ((r->flags & REQ_HAS_LENGTH) && !(r->flags & (REQ_NO_BODY | REQ_OVERRUN)) &&
        r->sent < r->content_length)
        e = length_mismatch(r, "shorter");
    r->flags |= REQ_COMPLETE;
    PyObject *exc = e < 0 ? ol_err_take() : NULL;
    ol_req_response_complete(r);
    ol_err_restore(exc);
    return e;
}

int ol_response_body(ol_req *r, const char *data, size_t len, int more)
{
    int first = !(r->flags & REQ_HEAD_SENT);
    if (first)
        choose_length(r, len, more);
    if (r->flags & REQ_NO_BODY)
        len = 0;
    int overrun;
    len = allowed_length(r, len, &overrun);
    r->sent += len;
    int e = r->carrier->send(r, data, len, more);
    if (overrun && length_mismatch(r, "longer") < 0)
        e = -1;
    if (!more && complete(r) < 0)
        e = -1;
    return e;
}

int ol_response_trailers(ol_req *r, PyObject *fields, int more)
{
    if (r->trailers == NULL && (r->trailers = PyList_New(0)) == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(fields);
    if (it == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *pair = PySequence_Fast(item, "a trailer must be a (name, value) pair");
        Py_DECREF(item);
        PyObject *name = NULL, *value = NULL, *tuple = NULL;
        if (pair != NULL && PySequence_Fast_GET_SIZE(pair) == 2) {
            name = header_bytes(PySequence_Fast_GET_ITEM(pair, 0), "name");
            value = name ? header_bytes(PySequence_Fast_GET_ITEM(pair, 1), "value") : NULL;
            tuple = value ? PyTuple_Pack(2, name, value) : NULL;
        } else if (pair != NULL) {
            PyErr_SetString(PyExc_ValueError, "a trailer must be a (name, value) pair");
        }
        Py_XDECREF(pair);
        Py_XDECREF(name);
        Py_XDECREF(value);
        int e = tuple ? PyList_Append(r->trailers, tuple) : -1;
        Py_XDECREF(tuple);
        if (e < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    if (more)
        return 0;
    int e = r->carrier->send_trailers(r, r->trailers);
    if (complete(r) < 0)
        e = -1;
    return e;
}

/* The exchange's line in the metrics: its status (499 if the client left
 * before one was sent, as in the access log) and, for a request, its
 * duration; a WebSocket session's length says nothing of latency. */
static void meter(const ol_req *r)
{
    ol_server *srv = r->server;
    int status = r->status ? r->status : 499;
    int session = (r->flags & REQ_WEBSOCKET) || status == 101;
    ol_meter_response(&srv->meter, r->method_id, status, session ? -1 : ol_now() - r->started);
}

/* Once per exchange, however it ends. */
static void log_access(ol_req *r)
{
    ol_server *srv = r->server;
    if (r->flags & REQ_LOGGED)
        return;
    r->flags |= REQ_LOGGED;
    meter(r);
    if (srv->on_access == NULL)
        return;
    PyObject *res = PyObject_CallOneArg(srv->on_access, (PyObject *)r);
    if (res == NULL)
        ol_log_error(srv, "access log failed");
    Py_XDECREF(res);
}

/* The response is over: count it, log it, free the connection for the
 * next request. */
void ol_req_response_complete(ol_req *r)
{
    ol_server *srv = r->server;
    ol_count_response(srv);
    if (r->receive_waiter != NULL) /* a disconnect listener: the exchange is over */
        srv->handler->on_disconnect(r);
    log_access(r);
    if (!r->carrier->release(r, 1))
        return;
    ol_req_detach(r);
    Py_DECREF(r); /* the protocol's reference */
}

void ol_req_session_end(ol_req *r)
{
    ol_server *srv = r->server;
    r->flags |= REQ_COMPLETE;
    ol_count_response(srv);
    log_access(r);
}

void ol_req_taken_over(ol_req *r)
{
    r->status = 101;
    r->flags |= REQ_COMPLETE;
    ol_count_response(r->server);
    log_access(r); /* its duration is the session's */
    /* Not reused: a lingering close, so the app's last bytes reach the client. */
    if (!r->carrier->release(r, 0))
        return;
    ol_req_detach(r);
    Py_DECREF(r); /* the protocol's reference */
}

/* Drop the request's hold on its connection. */
static void release_conn(ol_req *r)
{
    ol_conn *c = r->conn;
    r->conn = NULL;
    ol_conn_decref(c);
}

void ol_req_detach(ol_req *r)
{
    ol_conn *c = r->conn;
    if (c == NULL)
        return;
    /* A streamed response cut short, a view still running when its client
     * left: gunicorn and uvicorn log those too, and an operator looks for
     * them. nginx's 499 says the client closed first. A WebSocket
     * handshake's session is logged when it ends (or not at all if its
     * client left before the accept). */
    if (r->method != NULL && !(r->flags & (REQ_LOGGED | REQ_WEBSOCKET))) {
        if (!(r->flags & REQ_HEAD_SENT))
            r->status = 499;
        PyObject *pending = ol_err_take(); /* a caller's, kept for it */
        log_access(r);
        ol_err_restore(pending);
    }
    release_conn(r);
}

void ol_req_describe(const ol_req *r, char *buf, size_t size)
{
    const char *method = r->method ? PyUnicode_AsUTF8(r->method) : NULL;
    const char *target = r->target ? PyBytes_AsString(r->target) : NULL;
    if (method == NULL || target == NULL)
        PyErr_Clear();
    snprintf(buf, size, "%.16s %.200s", method ? method : "-", target ? target : "-");
}

/* ------------------------------------------------------------------------ */
/* The type: attributes the access log reads                                */

static PyObject *get_status(ol_req *r, void *closure)
{
    (void)closure;
    return PyLong_FromLong(r->status);
}

static PyObject *get_sent(ol_req *r, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(r->sent);
}

static PyObject *get_duration(ol_req *r, void *closure)
{
    (void)closure;
    return PyFloat_FromDouble(ol_now() - r->started);
}

static PyObject *get_obj(PyObject *v)
{
    return Py_NewRef(v != NULL ? v : Py_None);
}

static PyObject *get_method(ol_req *r, void *closure)
{
    (void)closure;
    return get_obj(r->method);
}

static PyObject *get_target(ol_req *r, void *closure)
{
    (void)closure;
    return get_obj(r->target);
}

static PyObject *get_client(ol_req *r, void *closure)
{
    (void)closure;
    return get_obj(r->client);
}

static PyObject *get_version(ol_req *r, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(r->flags & REQ_HTTP2 ? "2" : r->flags & REQ_HTTP10 ? "1.0" : "1.1");
}

static PyObject *get_request_headers(ol_req *r, void *closure)
{
    (void)closure;
    return get_obj(r->req_headers);
}

/* WSGI keeps the request headers in the environ only (HTTP_*); the access
 * log reads them there. */
static PyObject *get_environ(ol_req *r, void *closure)
{
    (void)closure;
    return get_obj(r->environ);
}

static PyObject *get_response_headers(ol_req *r, void *closure)
{
    (void)closure;
    return get_obj(r->headers);
}

static PyGetSetDef req_getset[] = {
    {"status", (getter)get_status, NULL, "Response status.", NULL},
    {"sent", (getter)get_sent, NULL, "Response body bytes sent.", NULL},
    {"duration", (getter)get_duration, NULL, "Seconds since the head arrived.", NULL},
    {"method", (getter)get_method, NULL, "Request method.", NULL},
    {"target", (getter)get_target, NULL, "Request target as received (bytes).", NULL},
    {"client", (getter)get_client, NULL, "(host, port) of the client, or None.", NULL},
    {"http_version", (getter)get_version, NULL, "'1.0', '1.1' or '2'.", NULL},
    {"request_headers", (getter)get_request_headers, NULL, "Request header pairs (ASGI).", NULL},
    {"environ", (getter)get_environ, NULL, "The WSGI environ, or None.", NULL},
    {"response_headers", (getter)get_response_headers, NULL, "Response header pairs.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static int req_traverse(ol_req *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT((PyObject *)r->server);
    Py_VISIT(r->reason);
    Py_VISIT(r->headers);
    Py_VISIT(r->trailers);
    Py_VISIT(r->method);
    Py_VISIT(r->target);
    Py_VISIT(r->client);
    Py_VISIT(r->req_headers);
    Py_VISIT(r->receive_waiter);
    Py_VISIT(r->send_waiter);
    Py_VISIT(r->scope);
    Py_VISIT(r->environ);
    Py_VISIT(r->input);
    Py_VISIT(r->ws_queue);
    Py_VISIT(r->ws_close_reason);
    return 0;
}

static int req_clear(ol_req *r)
{
    Py_CLEAR(r->reason);
    Py_CLEAR(r->headers);
    Py_CLEAR(r->trailers);
    Py_CLEAR(r->method);
    Py_CLEAR(r->target);
    Py_CLEAR(r->client);
    Py_CLEAR(r->req_headers);
    Py_CLEAR(r->receive_waiter);
    Py_CLEAR(r->send_waiter);
    Py_CLEAR(r->scope);
    Py_CLEAR(r->environ);
    Py_CLEAR(r->input);
    Py_CLEAR(r->ws_queue);
    Py_CLEAR(r->ws_close_reason);
    return 0;
}

static void req_dealloc(ol_req *r)
{
    PyTypeObject *type = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    /* No access-log line from here: the hook would be handed an object
     * that is being freed. */
    if (r->conn != NULL)
        release_conn(r);
    req_clear(r);
    PyMem_Free(r->ws_handshake);
    Py_XDECREF(r->server);
    type->tp_free((PyObject *)r);
    Py_DECREF(type);
}

static PyType_Slot req_slots[] = {
    {Py_tp_doc, "One HTTP request and its response, as the connection core tracks them."},
    {Py_tp_dealloc, req_dealloc},
    {Py_tp_traverse, req_traverse},
    {Py_tp_clear, req_clear},
    {Py_tp_getset, req_getset},
    {0, NULL},
};

PyType_Spec ol_req_spec = {
    .name = "oneloop._core.Request",
    .basicsize = sizeof(ol_req),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = req_slots,
};

static PyObject *method_str(ol_state *st, const ol_request *h)
{
    if (h->method_id > 0 && h->method_id < 16 && st->methods[h->method_id] != NULL)
        return Py_NewRef(st->methods[h->method_id]);
    return PyUnicode_DecodeLatin1(h->method.base, (Py_ssize_t)h->method.len, NULL);
}

/* Record what the head said that outlives its bytes. */
int ol_req_set_head(ol_req *r, const ol_request *h)
{
    ol_state *st = r->server->state;
    if (h->method_id == OL_M_HEAD)
        r->flags |= REQ_HEAD;
    if (h->version_major < 2 && h->version_minor == 0)
        r->flags |= REQ_HTTP10;
    if (!(h->flags & OL_REQ_KEEP_ALIVE))
        r->flags &= ~REQ_KEEP_ALIVE;
    r->method_id = h->method_id;
    r->method = method_str(st, h);
    r->target = PyBytes_FromStringAndSize(h->target.base, (Py_ssize_t)h->target.len);
    r->client = Py_XNewRef(ol_conn_client(r->conn));
    return (r->method && r->target && r->client) ? 0 : -1;
}

/* The app failed before completing its response: an error response with
 * the given status if nothing was sent yet (status 0: none), else the
 * connection is cut so the client sees a truncated response, not a wrong one. */
void ol_req_fail(ol_req *r, int status)
{
    r->flags |= REQ_COMPLETE;
    if (r->receive_waiter != NULL)
        r->server->handler->on_disconnect(r);
    if (r->conn == NULL)
        return;
    const char *text = status == 500 ? "Internal Server Error" : ol_reason_phrase(status);
    int done = r->carrier->refuse(r, status, text);
    if (done == OL_REFUSE_NOT_HELD)
        return;
    if (done == OL_REFUSE_ANSWERED) {
        r->status = status;
        ol_count_response(r->server);
        log_access(r);
    }
    ol_req_detach(r);
    Py_DECREF(r); /* the protocol's reference */
}

/* A new request for connection c, holding a reference to it. */
ol_req *ol_req_new(ol_conn *c, const ol_carrier *carrier)
{
    ol_server *srv = c->server;
    ol_req *r = PyObject_GC_New(ol_req, srv->state->request_type);
    if (r == NULL)
        return NULL;
    memset((char *)r + sizeof(PyObject), 0, sizeof(ol_req) - sizeof(PyObject));
    r->server = (ol_server *)Py_NewRef(srv);
    r->carrier = carrier;
    r->conn = c;
    ol_conn_incref(c);
    r->started = srv->now;
    r->flags = REQ_KEEP_ALIVE;
    PyObject_GC_Track(r);
    return r;
}
