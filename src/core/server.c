/*
 * server.c -- the Server object (server.h): configuration read once from
 * the Python config, the listeners, start (the reactor registered with the
 * asyncio loop as one reader in ASGI mode, the pool's threads in WSGI
 * mode), graceful shutdown and close. What the reactor's events lead to is
 * in dispatch.c; connections, protocols and interfaces in their own files.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* Seconds a connection accepted just before shutdown has to send its
 * first request, which is then served. */
#define FIRST_REQUEST_GRACE 0.5

/* ------------------------------------------------------------------------ */
/* Configuration, read once from the Python config object                   */

static int get_double(PyObject *cfg, const char *name, double *out)
{
    PyObject *v = PyObject_GetAttrString(cfg, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int get_size(PyObject *cfg, const char *name, size_t *out)
{
    PyObject *v = PyObject_GetAttrString(cfg, name);
    if (v == NULL)
        return -1;
    Py_ssize_t n = PyNumber_AsSsize_t(v, PyExc_OverflowError);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative", name);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

static int get_bool(PyObject *cfg, const char *name, int *out)
{
    PyObject *v = PyObject_GetAttrString(cfg, name);
    if (v == NULL)
        return -1;
    *out = PyObject_IsTrue(v);
    Py_DECREF(v);
    return *out < 0 ? -1 : 0;
}

/* A new reference to an attribute, with None turned into NULL. */
static int get_object(PyObject *cfg, const char *name, PyObject **out)
{
    PyObject *v = PyObject_GetAttrString(cfg, name);
    if (v == NULL)
        return -1;
    if (v == Py_None) {
        Py_DECREF(v);
        v = NULL;
    }
    Py_XSETREF(*out, v);
    return 0;
}

/* The --ws* options; a config object without them (an embedding) gets the
 * defaults. */
static int read_ws_config(ol_config *c, PyObject *cfg)
{
    c->ws = 1;
    c->ws_max_size = 16u << 20;
    c->ws_max_queue = 32;
    c->ws_ping_interval = 20.0;
    c->ws_ping_timeout = 20.0;
    c->ws_deflate = 1;
    int has = PyObject_HasAttrString(cfg, "ws");
    if (!has)
        return 0;
    PyObject *mode = PyObject_GetAttrString(cfg, "ws");
    if (mode == NULL)
        return -1;
    c->ws = !(PyUnicode_Check(mode) && PyUnicode_CompareWithASCIIString(mode, "off") == 0);
    Py_DECREF(mode);
    if (get_size(cfg, "ws_max_size", &c->ws_max_size) < 0 ||
        get_size(cfg, "ws_max_queue", &c->ws_max_queue) < 0 ||
        get_double(cfg, "ws_ping_interval", &c->ws_ping_interval) < 0 ||
        get_double(cfg, "ws_ping_timeout", &c->ws_ping_timeout) < 0 ||
        get_bool(cfg, "ws_per_message_deflate", &c->ws_deflate) < 0)
        return -1;
    if (c->ws_max_queue == 0)
        c->ws_max_queue = 1;
    return 0;
}

/* Read an optional integer attribute into a uint32_t within [lo, hi]. */
static int get_u32(PyObject *cfg, const char *name, uint32_t *out, uint32_t lo, uint32_t hi)
{
    size_t v;
    if (!PyObject_HasAttrString(cfg, name))
        return 0;
    if (get_size(cfg, name, &v) < 0)
        return -1;
    if (v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be between %u and %u", name, lo, hi);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* --http and the --h2-* options; a config object without them (an
 * embedding) gets the defaults. */
static int read_h2_config(ol_config *c, PyObject *cfg)
{
    c->http = OL_HTTP_AUTO;
    c->h2_max_streams = 100;
    c->h2_window = 256u << 10;
    c->h2_max_frame = 16384;
    c->h2_max_header_list = 65536;
    if (PyObject_HasAttrString(cfg, "http")) {
        PyObject *mode = PyObject_GetAttrString(cfg, "http");
        if (mode == NULL)
            return -1;
        const char *m = PyUnicode_Check(mode) ? PyUnicode_AsUTF8(mode) : "auto";
        if (m == NULL) {
            Py_DECREF(mode);
            return -1;
        }
        c->http = strcmp(m, "1") == 0 ? OL_HTTP_1 : strcmp(m, "2") == 0 ? OL_HTTP_2 : OL_HTTP_AUTO;
        Py_DECREF(mode);
    }
    uint32_t header_list = (uint32_t)c->h2_max_header_list;
    if (get_u32(cfg, "h2_max_concurrent_streams", &c->h2_max_streams, 1, 1u << 20) < 0 ||
        get_u32(cfg, "h2_initial_window_size", &c->h2_window, 1024, 0x7fffffffu) < 0 ||
        get_u32(cfg, "h2_max_frame_size", &c->h2_max_frame, 16384, 16777215) < 0 ||
        get_u32(cfg, "h2_max_header_list_size", &header_list, 1024, 1u << 24) < 0)
        return -1;
    c->h2_max_header_list = header_list;
    if (PyObject_HasAttrString(cfg, "h2_ping_interval") &&
        get_double(cfg, "h2_ping_interval", &c->h2_ping_interval) < 0)
        return -1;
    c->h2 = c->http != OL_HTTP_1;
    return 0;
}

static int read_config(ol_server *srv, PyObject *cfg)
{
    ol_config *c = &srv->cfg;
    ol_limits_default(&c->limits);
    size_t max_body, threads, max_requests, max_served;
    if (get_size(cfg, "limit_request_line", &c->limits.max_request_line) < 0 ||
        get_size(cfg, "limit_request_fields", &c->limits.max_fields) < 0 ||
        get_size(cfg, "limit_request_field_size", &c->limits.max_field_size) < 0 ||
        get_size(cfg, "limit_request_body", &max_body) < 0 ||
        get_double(cfg, "timeout_keep_alive", &c->keep_alive) < 0 ||
        get_double(cfg, "timeout_request_head", &c->header_timeout) < 0 ||
        get_double(cfg, "timeout_request_body", &c->body_timeout) < 0 ||
        get_double(cfg, "timeout_send", &c->send_timeout) < 0 ||
        get_size(cfg, "threads", &threads) < 0 ||
        get_size(cfg, "max_keep_alive_requests", &max_requests) < 0 ||
        get_size(cfg, "max_requests", &max_served) < 0 ||
        get_size(cfg, "limit_concurrency", &c->limit_concurrency) < 0 ||
        get_bool(cfg, "server_header", &c->server_header) < 0 ||
        get_bool(cfg, "date_header", &c->date_header) < 0 ||
        get_bool(cfg, "multiprocess", &c->multiprocess) < 0 || read_ws_config(c, cfg) < 0 ||
        read_h2_config(c, cfg) < 0)
        return -1;
    if (c->limits.max_fields > 32768 || c->limits.max_request_line > (1u << 20) ||
        c->limits.max_field_size > (1u << 20)) {
        PyErr_SetString(PyExc_ValueError, "request limits are too large");
        return -1;
    }
    /* The whole head: at most 64 KiB (nginx allows 32, h11 16) unless the
     * limits make a single field or the request line need more; room for
     * every field at its limit is not granted, so a client cannot make each
     * connection hold most of a megabyte. */
    size_t all = c->limits.max_request_line + c->limits.max_fields * (c->limits.max_field_size + 2);
    size_t cap = c->limits.max_request_line + 2 * c->limits.max_field_size + 4;
    cap = cap > 65536 ? cap : 65536;
    c->limits.max_head_size = all < cap ? all : cap;
    c->max_body = max_body;
    c->threads = (int)(threads > 0 ? threads : 1);
    c->max_keep_alive_requests = (unsigned)max_requests;
    c->max_requests = max_served;
    c->write_high_water = 65536;
    c->write_low_water = 16384;
    c->read_high_water = 65536;
    return 0;
}

/* The metrics block (config `metrics`: a writable buffer shared with the
 * supervisor, or None for a private one) and --health-path. */
static int read_metrics_config(ol_server *srv, PyObject *cfg)
{
    PyObject *block = NULL, *health = NULL;
    if (PyObject_HasAttrString(cfg, "metrics") && get_object(cfg, "metrics", &block) < 0)
        return -1;
    if (block != NULL) {
        int e = PyObject_GetBuffer(block, &srv->metrics_view, PyBUF_WRITABLE);
        Py_DECREF(block);
        if (e < 0)
            return -1;
    }
    if (ol_meter_init(&srv->meter, srv->metrics_view.obj ? &srv->metrics_view : NULL,
                      srv->threaded) < 0)
        return -1;
    if (PyObject_HasAttrString(cfg, "health_path") && get_object(cfg, "health_path", &health) < 0)
        return -1;
    if (health == NULL)
        return 0;
    srv->health_path =
        PyUnicode_Check(health) ? PyUnicode_AsEncodedString(health, "latin-1", "strict") : NULL;
    Py_DECREF(health);
    if (srv->health_path == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "health_path must be a str");
        return -1;
    }
    srv->cfg.health_path = PyBytes_AS_STRING(srv->health_path);
    srv->cfg.health_path_len = (size_t)PyBytes_GET_SIZE(srv->health_path);
    return 0;
}

/* What a TLS listener offers by ALPN: h2 as well as http/1.1 when HTTP/2
 * is served (only h2 with --http 2). */
static int offer_protocols(ol_server *srv, PyObject *ssl_context)
{
    PyObject *names = srv->cfg.h2 == 0             ? Py_BuildValue("[s]", "http/1.1")
                      : srv->cfg.http == OL_HTTP_2 ? Py_BuildValue("[s]", "h2")
                                                   : Py_BuildValue("[ss]", "h2", "http/1.1");
    if (names == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(ssl_context, "set_alpn_protocols", "O", names);
    Py_DECREF(names);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int read_listeners(ol_server *srv, PyObject *list)
{
    PyObject *seq = PySequence_Fast(list, "listeners must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    srv->listeners = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof(ol_listener));
    if (srv->listeners == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ol_listener *l = &srv->listeners[i];
        PyObject *sock, *addr, *ssl_ctx;
        int is_unix;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "OOOp;listener", &sock, &addr,
                              &ssl_ctx, &is_unix)) {
            Py_DECREF(seq);
            return -1;
        }
        PyObject *fd = PyObject_CallMethod(sock, "fileno", NULL);
        if (fd == NULL) {
            Py_DECREF(seq);
            return -1;
        }
        l->fd = (int)PyLong_AsLong(fd);
        Py_DECREF(fd);
        l->is_unix = is_unix;
        l->sock = Py_NewRef(sock);
        l->server_addr = Py_NewRef(addr);
        l->ssl_context = ssl_ctx == Py_None ? NULL : Py_NewRef(ssl_ctx);
        srv->nlisteners++;
        if (l->ssl_context != NULL && offer_protocols(srv, l->ssl_context) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The type                                                                 */

static int server_init(ol_server *srv, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"app", "config", "listeners", "loop", NULL};
    PyObject *app, *cfg, *listeners, *loop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO:Server", kwlist, &app, &cfg, &listeners,
                                     &loop))
        return -1;
    if (srv->app != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Server.__init__ called twice");
        return -1;
    }
    srv->app = Py_NewRef(app);
    srv->loop = Py_NewRef(loop);
    PyObject *interface = PyObject_GetAttrString(cfg, "interface");
    if (interface == NULL)
        return -1;
    const char *name = PyUnicode_AsUTF8(interface);
    if (name == NULL) {
        Py_DECREF(interface);
        return -1;
    }
    srv->interface = strcmp(name, "wsgi") == 0    ? OL_WSGI
                     : strcmp(name, "asgi2") == 0 ? OL_ASGI2
                                                  : OL_ASGI3;
    Py_DECREF(interface);
    /* The mode is decided here, once: WSGI apps run on pool threads that
     * share the connections (threaded), ASGI apps on the event loop. */
    srv->handler = srv->interface == OL_WSGI ? &ol_wsgi_handler : &ol_asgi_handler;
    srv->first_protocol = &ol_h1_protocol;
    if (ol_conns_init(srv, srv->interface == OL_WSGI) < 0) {
        PyErr_SetString(PyExc_OSError, "cannot initialise the connection list lock");
        return -1;
    }
    if (read_config(srv, cfg) < 0 || read_metrics_config(srv, cfg) < 0 ||
        read_listeners(srv, listeners) < 0)
        return -1;
    if (get_object(cfg, "root_path", &srv->root_path) < 0 ||
        get_object(cfg, "on_error", &srv->on_error) < 0 ||
        get_object(cfg, "on_access", &srv->on_access) < 0 ||
        get_object(cfg, "lifespan_state", &srv->lifespan_state) < 0 ||
        get_object(cfg, "wsgi_errors", &srv->errors_stream) < 0 ||
        get_object(cfg, "proxy_trusted", &srv->proxy_trusted) < 0)
        return -1;
    if (srv->root_path == NULL)
        srv->root_path = Py_NewRef(srv->state->s_empty);
    srv->root_path_bytes = PyUnicode_AsEncodedString(srv->root_path, "latin-1", "strict");
    srv->asgi_info = Py_BuildValue(
        "{s:s,s:s}", "version", srv->interface == OL_ASGI2 ? "2.0" : "3.0", "spec_version", "2.4");
    if (srv->root_path_bytes == NULL || srv->asgi_info == NULL)
        return -1;
    srv->h1.fields = PyMem_Calloc(srv->cfg.limits.max_fields + 1, sizeof(ol_header));
    if (srv->h1.fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (loop != Py_None) {
        srv->create_future = PyObject_GetAttrString(loop, "create_future");
        if (srv->create_future == NULL)
            return -1;
    }
    srv->now = ol_now();
    if (get_object(cfg, "on_stall", &srv->watch.on_stall) < 0 ||
        get_double(cfg, "loop_stall_warning", &srv->watch.threshold) < 0)
        return -1;
    return get_double(cfg, "timeout_async", &srv->async_timeout);
}

/* The reactor, with the listening sockets in it. */
static int open_reactor(ol_server *srv)
{
    if (ol_reactor_open(&srv->reactor, srv->threaded) < 0)
        return -1;
    ol_watch_listeners(srv, 1);
    for (int i = 0; i < srv->nlisteners; i++)
        if (srv->listeners[i].handle == 0)
            return -1;
    return 0;
}

static PyObject *server_start(ol_server *srv, PyObject *unused)
{
    (void)unused;
    if (ol_reactor_is_open(&srv->reactor) || srv->closed) {
        PyErr_SetString(PyExc_RuntimeError, "the server is already started");
        return NULL;
    }
    if (open_reactor(srv) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    ol_date_cache_get(&srv->date, time(NULL));
    /* Requests start from a copy of this context, never from whatever
     * context happens to be current when the loop calls us. */
    srv->base_context = PyContext_CopyCurrent();
    srv->task_context = srv->base_context ? PyContext_CopyCurrent() : NULL;
    if (srv->task_context == NULL)
        return NULL;
    if (ol_bridge_open(srv) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    PyObject *bridge = PyObject_GetAttrString((PyObject *)srv, "_run_bridge");
    PyObject *added =
        bridge ? PyObject_CallMethod(srv->loop, "add_reader", "iO", srv->bridge.fd, bridge) : NULL;
    Py_XDECREF(bridge);
    if (added == NULL)
        return NULL;
    Py_DECREF(added);
    if (ol_watch_start(srv) < 0)
        return NULL;
    if (srv->interface == OL_WSGI)
        return ol_pool_start(srv) < 0 ? NULL : Py_NewRef(Py_None);
    srv->conns.run_pending = PyObject_GetAttrString((PyObject *)srv, "_run_pending");
    PyObject *callback = PyObject_GetAttrString((PyObject *)srv, "_on_ready");
    if (callback == NULL || srv->conns.run_pending == NULL) {
        Py_XDECREF(callback);
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(srv->loop, "add_reader", "iO", srv->reactor.epfd, callback);
    Py_DECREF(callback);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static int is_new(const ol_conn *c)
{
    return c->requests == 0 && ol_h1_is_idle(c);
}

/* WebSocket sessions get a close frame, 1012 (Service Restart: a client
 * may reconnect, to another worker or the next one), and their closing
 * handshake; the app hears websocket.disconnect when the client answers. */
static void close_websockets(ol_server *srv)
{
    size_t n;
    ol_conn **list = ol_conns_claim(srv, ol_ws_is_websocket, &n);
    for (size_t i = 0; i < n; i++)
        ol_ws_close(list[i], 1012, "server shutting down", 20);
    ol_conns_release(srv, list, n);
}

static int is_http2(const ol_conn *c)
{
    return c->proto == &ol_h2_protocol;
}

/* HTTP/2 connections are told to open no more streams (GOAWAY); those
 * already open are served, then the connections close. */
static void goaway_http2(ol_server *srv)
{
    if (!srv->cfg.h2)
        return;
    size_t n;
    ol_conn **list = ol_conns_claim(srv, is_http2, &n);
    for (size_t i = 0; i < n; i++)
        ol_h2_shutdown(list[i]);
    ol_conns_release(srv, list, n);
}

/* Stop accepting; every connection closes after its next response, which
 * says "Connection: close". Listening sockets stay open (they belong to
 * Python, and other workers of a supervisor go on accepting on them).
 *
 * An idle kept-alive connection is not closed now: its client may have
 * sent its next request already, and closing would answer that request
 * with a reset (or nothing) -- a lost request. It is answered, with
 * "Connection: close"; or, if the client stays quiet, it closes gracefully
 * at its keep-alive deadline, exactly as it would without a shutdown
 * (a client must already expect that close; RFC 9112, 9.3.1). */
static PyObject *server_shutdown(ol_server *srv, PyObject *unused)
{
    (void)unused;
    if (srv->shut)
        Py_RETURN_NONE;
    srv->shut = 1;
    /* Events already fetched are handled first: a request that already
     * arrived is served like any other, its response closing the connection. */
    if (!srv->threaded && ol_reactor_is_open(&srv->reactor)) {
        PyObject *r = ol_dispatch_ready(srv, NULL);
        Py_XDECREF(r);
    }
    ol_accept_queued(srv);
    ol_stop_accepting(srv);
    close_websockets(srv);
    goaway_http2(srv);
    /* WebSocket sessions of WSGI apps (sockets lent to them, wsgi.c) would
     * never end by themselves: they end now, as if their clients had gone
     * (their reads return end-of-file; their writes still work, so an app
     * may say goodbye), and those clients reconnect to a worker that
     * stays. Requests in flight go on. */
    ol_conns_shut_lent(srv, SHUT_RD);
    /* New connections get a moment for their first request, which is then
     * served (with "Connection: close"); the tick closes the silent ones. */
    double until = ol_now() + FIRST_REQUEST_GRACE;
    size_t n;
    ol_conn **fresh = ol_conns_claim(srv, is_new, &n);
    for (size_t i = 0; i < n; i++)
        if (fresh[i]->deadline > until)
            ol_conn_set_deadline(fresh[i], until);
    ol_conns_release(srv, fresh, n);
    ol_pool_wake(srv);
    Py_RETURN_NONE;
}

/* Abort every connection and release the fds. The loop must not run
 * _on_ready afterwards; the Python side removes the reader first. */
static PyObject *server_close(ol_server *srv, PyObject *unused)
{
    (void)unused;
    __atomic_store_n(&srv->draining, 1, __ATOMIC_RELEASE);
    if (ol_pool_stop(srv) < 0)
        return NULL;
    ol_watch_stop(srv);
    /* One that a pool thread still serves (its join timed out: a view that
     * does not return) is not closed under it: its fd number could be
     * reused at once and the thread's next write would land in someone
     * else's socket. It is shut down instead, which ends the thread's
     * blocking I/O, and the thread closes it when it lets go (pool.c). */
    ol_conns_abort_all(srv);
    int readers[2] = {srv->interface != OL_WSGI ? srv->reactor.epfd : -1, srv->bridge.fd};
    for (int i = 0; i < 2; i++) {
        if (readers[i] < 0 || srv->loop == NULL || srv->loop == Py_None)
            continue;
        PyObject *r = PyObject_CallMethod(srv->loop, "remove_reader", "i", readers[i]);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
    }
    ol_bridge_close(srv);
    ol_asgi_close(srv);
    /* A pool thread still in a view polls the set when it returns: the
     * last one to leave closes the reactor then (pool.c). */
    if (!ol_pool_defer_reactor_close(srv))
        ol_reactor_close(&srv->reactor);
    srv->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *server_stop_threads(ol_server *srv, PyObject *unused)
{
    (void)unused;
    __atomic_store_n(&srv->draining, 1, __ATOMIC_RELEASE);
    if (ol_pool_stop(srv) < 0)
        return NULL;
    /* A session whose app ignored the end of its reads is cut, so that
     * its thread returns and can be joined. */
    ol_conns_shut_lent(srv, SHUT_RDWR);
    Py_RETURN_NONE;
}

static PyObject *server_get_active(ol_server *srv, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(srv->active);
}

static PyObject *server_get_connections(ol_server *srv, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(srv->conns.n);
}

static PyObject *server_get_total(ol_server *srv, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(srv->total_requests);
}

static PyObject *server_get_fd(ol_server *srv, void *closure)
{
    (void)closure;
    return PyLong_FromLong(srv->reactor.epfd);
}

static int server_traverse(ol_server *srv, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(srv));
    Py_VISIT(srv->app);
    Py_VISIT(srv->loop);
    Py_VISIT(srv->on_error);
    Py_VISIT(srv->on_access);
    Py_VISIT(srv->lifespan_state);
    Py_VISIT(srv->errors_stream);
    Py_VISIT(srv->proxy_trusted);
    Py_VISIT(srv->create_future);
    Py_VISIT(srv->conns.run_pending);
    Py_VISIT(srv->conns.last_host);
    Py_VISIT(srv->base_context);
    Py_VISIT(srv->task_context);
    Py_VISIT(srv->bridge.drivers);
    Py_VISIT(srv->gate);
    Py_VISIT(srv->idle_drivers);
    Py_VISIT(srv->watch.on_stall);
    for (int i = 0; i < srv->nlisteners; i++) {
        Py_VISIT(srv->listeners[i].sock);
        Py_VISIT(srv->listeners[i].server_addr);
        Py_VISIT(srv->listeners[i].ssl_context);
    }
    return 0;
}

static int server_clear(ol_server *srv)
{
    Py_CLEAR(srv->app);
    Py_CLEAR(srv->loop);
    Py_CLEAR(srv->on_error);
    Py_CLEAR(srv->on_access);
    Py_CLEAR(srv->lifespan_state);
    Py_CLEAR(srv->errors_stream);
    Py_CLEAR(srv->proxy_trusted);
    Py_CLEAR(srv->create_future);
    Py_CLEAR(srv->conns.run_pending);
    Py_CLEAR(srv->conns.last_host);
    Py_CLEAR(srv->base_context);
    Py_CLEAR(srv->task_context);
    Py_CLEAR(srv->watch.on_stall);
    Py_CLEAR(srv->idle_drivers);
    Py_CLEAR(srv->gate);
    Py_CLEAR(srv->root_path);
    Py_CLEAR(srv->root_path_bytes);
    Py_CLEAR(srv->asgi_info);
    Py_CLEAR(srv->health_path);
    srv->cfg.health_path = NULL;
    for (int i = 0; i < srv->nlisteners; i++) {
        Py_CLEAR(srv->listeners[i].sock);
        Py_CLEAR(srv->listeners[i].server_addr);
        Py_CLEAR(srv->listeners[i].ssl_context);
    }
    return 0;
}

static void server_dealloc(ol_server *srv)
{
    PyTypeObject *type = Py_TYPE(srv);
    PyObject_GC_UnTrack(srv);
    /* A server dropped without close(): its connections go with it. No pool
     * thread runs any more (each holds a reference to the server). */
    ol_conns_abort_all(srv);
    ol_pool_free(srv);
    ol_watch_stop(srv);
    ol_bridge_close(srv);
    ol_asgi_close(srv);
    if (srv->bridge.lock_ready)
        pthread_mutex_destroy(&srv->bridge.lock);
    ol_conns_fini(srv);
    server_clear(srv);
    ol_reactor_close(&srv->reactor);
    PyMem_Free(srv->listeners);
    PyMem_Free(srv->h1.fields);
    if (srv->metrics_view.obj != NULL)
        PyBuffer_Release(&srv->metrics_view);
    type->tp_free((PyObject *)srv);
    Py_DECREF(type);
}

static PyObject *server_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    ol_server *srv = (ol_server *)type->tp_alloc(type, 0);
    if (srv == NULL)
        return NULL;
    srv->state = ol_state_of_type(type);
    ol_reactor_init(&srv->reactor);
    srv->bridge.fd = srv->watch.fd = -1;
    ol_meter_init(&srv->meter, NULL, 0); /* counted privately until configured */
    return (PyObject *)srv;
}

static PyMethodDef server_methods[] = {
    {"_on_ready", (PyCFunction)ol_dispatch_ready, METH_NOARGS,
     "Handle everything that is ready (called by the event loop)."},
    {"_beat", (PyCFunction)ol_watch_beat, METH_NOARGS,
     "Stamp the loop's heartbeat (called by the event loop, for the watchdog)."},
    {"_run_bridge", (PyCFunction)ol_bridge_run, METH_NOARGS,
     "Start queued calls from threads (called by the event loop)."},
    {"run_coroutine", (PyCFunction)(void (*)(void))ol_bridge_call, METH_FASTCALL,
     "run_coroutine(coro, timeout=None)\n--\n\n"
     "From a thread other than the loop's: run coro on the worker loop in a copy of the\n"
     "caller's context and return its result, running meanwhile the work the loop submits\n"
     "to the thread's ThreadExecutor (see oneloop.bridge)."},
    {"_run_pending", (PyCFunction)ol_conns_run_pending, METH_NOARGS,
     "Process connections queued by ol_server_schedule (called by the event loop)."},
    {"start", (PyCFunction)server_start, METH_NOARGS,
     "Start serving: register with the loop (ASGI) or start the thread pool (WSGI)."},
    {"shutdown", (PyCFunction)server_shutdown, METH_NOARGS,
     "Stop accepting; close idle connections, and the others after their response; end the\n"
     "WebSocket sessions of WSGI apps."},
    {"close", (PyCFunction)server_close, METH_NOARGS, "Abort every connection and release fds."},
    {"_serve_thread", (PyCFunction)ol_pool_thread, METH_NOARGS,
     "Serve connections until the server stops (the body of each WSGI pool thread)."},
    {"stop_threads", (PyCFunction)server_stop_threads, METH_NOARGS,
     "Make the WSGI pool threads return once they finish their current request; cut the\n"
     "WebSocket sessions still running."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"active_requests", (getter)server_get_active, NULL, "Requests being handled.", NULL},
    {"connections", (getter)server_get_connections, NULL, "Open connections.", NULL},
    {"total_requests", (getter)server_get_total, NULL, "Requests completed so far.", NULL},
    {"fileno", (getter)server_get_fd, NULL, "The epoll file descriptor.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot server_slots[] = {
    {Py_tp_doc, "Server(app, config, listeners, loop)\n--\n\n"
                "The connection core of one worker. See oneloop.worker for its use."},
    {Py_tp_new, server_new},
    {Py_tp_init, server_init},
    {Py_tp_dealloc, server_dealloc},
    {Py_tp_traverse, server_traverse},
    {Py_tp_clear, server_clear},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {0, NULL},
};

PyType_Spec ol_server_spec = {
    .name = "oneloop._core.Server",
    .basicsize = sizeof(ol_server),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = server_slots,
};
