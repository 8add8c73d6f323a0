/*
 * server.c -- the Server object: listening sockets, the epoll set, accept,
 * timers, and the one callback the event loop runs for all of them.
 *
 * In ASGI mode the epoll set is registered with the asyncio loop as a single
 * reader (loop.add_reader), and _on_ready handles every connection that is
 * ready in one pass of C: the loop's dispatch cost is paid once per wake-up,
 * not once per socket event. In WSGI mode the pool threads (pool.c) wait on
 * the same epoll set themselves and the loop is not involved in HTTP at all.
 *
 * A timerfd in the set ticks ten times a second while the server runs; each
 * tick expires connections whose deadline passed (keep-alive idle, header
 * read, body read, lingering close, slow readers).
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_PER_WAKE  128
#define ACCEPTS_PER_WAKE 64

/* Seconds a connection accepted just before shutdown has to send its
 * first request, which is then served. */
#define FIRST_REQUEST_GRACE 0.5

double ol_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------ */
/* Logging through the Python side                                          */

static void call_logger(ol_server *srv, const char *level, const char *message)
{
    PyObject *exc = ol_err_take();
    if (srv->on_error == NULL || srv->on_error == Py_None) {
        if (exc != NULL) {
            ol_err_restore(exc);
            PyErr_WriteUnraisable(NULL);
        }
        return;
    }
    PyObject *r =
        PyObject_CallFunction(srv->on_error, "ssO", level, message, exc != NULL ? exc : Py_None);
    if (r == NULL)
        PyErr_WriteUnraisable(srv->on_error);
    Py_XDECREF(r);
    Py_XDECREF(exc);
}

void ol_server_log_error(ol_server *srv, const char *message)
{
    call_logger(srv, "error", message);
}

void ol_server_log_debug(ol_server *srv, const char *message)
{
    call_logger(srv, "debug", message);
}

void ol_server_log_info(ol_server *srv, const char *message)
{
    call_logger(srv, "info", message);
}

void ol_server_log_debug_exc(ol_server *srv, const char *message, PyObject *exc)
{
    ol_err_restore(Py_NewRef(exc));
    call_logger(srv, "debug", message);
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */

void ol_server_register(ol_server *srv, ol_conn *c)
{
    ol_pool_lock(srv);
    c->prev = NULL;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    ol_pool_unlock(srv);
}

void ol_server_unregister(ol_server *srv, ol_conn *c)
{
    ol_pool_lock(srv);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (srv->conns == c)
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
    ol_pool_unlock(srv);
}

/*
 * Claim the connections matching a test, with a reference each, so they
 * can be closed without the list lock held (closing unlinks them, and in
 * WSGI mode takes that lock). Connections a pool thread is serving are
 * skipped; claimed ones are marked so no pool thread takes them meanwhile.
 * Returns a PyMem array of *n connections, or NULL.
 */
static ol_conn **claim(ol_server *srv, int (*test)(ol_server *, ol_conn *), size_t *n)
{
    *n = 0;
    ol_pool_lock(srv);
    size_t cap = srv->nconns;
    ol_conn **out = cap ? PyMem_Malloc(cap * sizeof(*out)) : NULL;
    for (ol_conn *c = srv->conns; out != NULL && c != NULL && *n < cap; c = c->next) {
        if ((c->flags & (CONN_IN_POOL | CONN_CLOSED)) || !test(srv, c))
            continue;
        if (srv->pool != NULL)
            c->flags |= CONN_IN_POOL;
        ol_conn_incref(c);
        out[(*n)++] = c;
    }
    ol_pool_unlock(srv);
    return out;
}

/* Give back what claim() took; a connection still open is re-armed. */
static void release(ol_server *srv, ol_conn **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ol_conn *c = list[i];
        if (srv->pool != NULL) {
            ol_pool_lock(srv);
            c->flags &= ~CONN_IN_POOL;
            ol_pool_unlock(srv);
            if (!(c->flags & CONN_CLOSED))
                ol_pool_arm(c);
        }
        ol_conn_decref(c);
    }
    PyMem_Free(list);
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Listening sockets in or out of the reactor's set. */
static void watch_listeners(ol_server *srv, int on)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        ol_listener *l = &srv->listeners[i];
        if (on && l->handle == 0 && ol_reactor_is_open(&srv->reactor))
            l->handle = ol_reactor_add(&srv->reactor, l->fd, OL_H_LISTENER, l, EPOLLIN);
        else if (!on && l->handle != 0) {
            ol_reactor_remove(&srv->reactor, l->fd, l->handle);
            l->handle = 0;
        }
    }
}

/*
 * Out of file descriptors (or kernel memory): the listening sockets stay
 * readable, so with them in the level-triggered set the loop would spin at
 * full CPU until an fd frees. They leave the set until the next tick
 * instead, as nginx does; the kernel's backlog holds the clients meanwhile,
 * so none is refused or reset.
 */
static void pause_accepting(ol_server *srv)
{
    if (srv->accept_paused)
        return;
    srv->accept_paused = 1;
    watch_listeners(srv, 0);
    ol_server_log_error(srv, "out of file descriptors: not accepting for a moment "
                             "(raise the limit: ulimit -n)");
}

static void resume_accepting(ol_server *srv)
{
    if (!srv->accept_paused || srv->draining)
        return;
    srv->accept_paused = 0;
    watch_listeners(srv, 1);
}

static int accept_error_is_transient(int err)
{
    return err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM;
}

static int accept_error_is_exhaustion(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Register an accepted socket: the connection, or NULL (fd closed). */
static ol_conn *admit(ol_server *srv, ol_listener *lst, int fd, struct sockaddr_storage *peer,
                      socklen_t len)
{
    if (!lst->is_unix)
        set_nodelay(fd);
    ol_conn *c = ol_conn_new(srv, lst, fd, (struct sockaddr *)peer, len);
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->flags |= CONN_READING;
    /* WSGI: one event goes to one pool thread, which re-arms when done. */
    c->events = EPOLLIN | EPOLLRDHUP | (srv->pool != NULL ? EPOLLONESHOT : 0);
    /* Not srv->now: pool threads accept without the GIL that guards it. */
    c->deadline = ol_deadline(ol_now(), srv->cfg.header_timeout);
    ol_server_register(srv, c);
    c->handle = ol_reactor_add(&srv->reactor, fd, OL_H_CONN, c, c->events);
    if (c->handle == 0) {
        ol_conn_abort(c);
        return NULL;
    }
    return c;
}

int ol_server_accept(ol_server *srv, ol_listener *lst)
{
    int accepted = 0;
    while (accepted < ACCEPTS_PER_WAKE && !ol_server_is_draining(srv)) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(lst->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (accept_error_is_transient(errno))
                continue;
            if (accept_error_is_exhaustion(errno))
                pause_accepting(srv);
            break; /* EAGAIN: done for now */
        }
        if (admit(srv, lst, fd, &peer, len) == NULL)
            break;
        accepted++;
    }
    return accepted;
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                   */

/* What a connection waits for decides what its deadline means. */
static void expire(ol_server *srv, ol_conn *c)
{
    if (c->flags & CONN_LINGER) {
        ol_conn_abort(c);
    } else if (ol_conn_pending(c) > 0) {
        ol_conn_abort(c); /* the client stopped reading our output */
    } else if (c->request != NULL) {
        /* Waiting for body bytes that did not come in time. */
        ol_conn_abort(c);
    } else if ((c->flags & CONN_IDLE) || c->rlen == 0) {
        ol_conn_close_gracefully(c); /* keep-alive idle: nothing to say */
    } else {
        ol_server_log_debug(srv, "timed out reading a request head");
        ol_conn_send_error(c, 408, "request head not received in time");
    }
}

/* Does the connection have a running deadline? A request that is being
 * handled by the app has none, unless it is waiting for the client. */
static int has_deadline(const ol_conn *c)
{
    if (ol_conn_pending(c) > 0 || (c->flags & CONN_LINGER))
        return 1;
    if (c->request != NULL)
        return c->request->receive_waiter != NULL && !(c->request->flags & REQ_BODY_DONE);
    return 1;
}

static int is_expired(ol_server *srv, ol_conn *c)
{
    if (ol_conn_pending(c) > 0)
        return c->send_deadline <= srv->now;
    return has_deadline(c) && c->deadline <= srv->now;
}

void ol_server_tick(ol_server *srv)
{
    ol_server_set_now(srv);
    resume_accepting(srv);
    size_t n;
    ol_conn **expired = claim(srv, is_expired, &n);
    for (size_t i = 0; i < n; i++)
        expire(srv, expired[i]);
    release(srv, expired, n);
    ol_date_cache_get(&srv->date, time(NULL));
}

void ol_server_schedule(ol_server *srv, ol_conn *c)
{
    if (c->flags & (CONN_PENDING | CONN_CLOSED))
        return;
    c->flags |= CONN_PENDING;
    ol_conn_incref(c);
    c->pending_next = srv->pending;
    srv->pending = c;
    if (srv->pending_scheduled || srv->run_pending == NULL)
        return;
    PyObject *h = PyObject_CallMethod(srv->loop, "call_soon", "O", srv->run_pending);
    if (h == NULL) {
        ol_server_log_error(srv, "cannot schedule connection processing");
        return;
    }
    Py_DECREF(h);
    srv->pending_scheduled = 1;
}

static PyObject *server_run_pending(ol_server *srv, PyObject *unused)
{
    (void)unused;
    srv->pending_scheduled = 0;
    ol_server_set_now(srv);
    while (srv->pending != NULL) {
        ol_conn *c = srv->pending;
        srv->pending = c->pending_next;
        c->pending_next = NULL;
        c->flags &= ~CONN_PENDING;
        if (!(c->flags & CONN_CLOSED))
            ol_conn_process(c);
        ol_conn_decref(c);
    }
    if (PyErr_Occurred())
        ol_server_log_error(srv, "unexpected error in the connection core");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* The loop's callback                                                      */

/* One event of the batch. Its handle is resolved at the moment it is
 * handled, so an event for a connection that an earlier event of the same
 * batch closed (the tick expired it, another connection's app finished
 * its response) resolves to nothing (reactor.h). */
static void dispatch(ol_server *srv, const struct epoll_event *ev)
{
    int kind;
    void *object = ol_reactor_resolve(&srv->reactor, ev, &kind);
    switch (kind) {
    case OL_H_CONN:
        ol_conn_on_event(object, ev->events);
        break;
    case OL_H_LISTENER:
        ol_server_accept(srv, object);
        break;
    case OL_H_TICK:
        ol_reactor_drain(srv->reactor.tickfd);
        ol_server_tick(srv);
        break;
    case OL_H_WAKE:
        ol_reactor_drain(srv->reactor.wakefd);
        break;
    default: /* stale */
        break;
    }
}

static PyObject *server_on_ready(ol_server *srv, PyObject *unused)
{
    (void)unused;
    struct epoll_event events[EVENTS_PER_WAKE];
    int n = ol_reactor_poll(&srv->reactor, events, EVENTS_PER_WAKE, 0);
    ol_server_set_now(srv);
    for (int i = 0; i < n; i++)
        dispatch(srv, &events[i]);
    if (PyErr_Occurred()) /* never leak an exception into the loop */
        ol_server_log_error(srv, "unexpected error in the connection core");
    Py_RETURN_NONE;
}

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
        get_bool(cfg, "server_header", &c->server_header) < 0 ||
        get_bool(cfg, "date_header", &c->date_header) < 0 ||
        get_bool(cfg, "multiprocess", &c->multiprocess) < 0)
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
    if (read_config(srv, cfg) < 0 || read_listeners(srv, listeners) < 0)
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
    srv->fields = PyMem_Calloc(srv->cfg.limits.max_fields + 1, sizeof(ol_header));
    if (srv->fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (loop != Py_None) {
        srv->create_future = PyObject_GetAttrString(loop, "create_future");
        if (srv->create_future == NULL)
            return -1;
    }
    srv->now = ol_now();
    if (get_object(cfg, "on_stall", &srv->on_stall) < 0 ||
        get_double(cfg, "loop_stall_warning", &srv->stall_threshold) < 0)
        return -1;
    return get_double(cfg, "timeout_async", &srv->async_timeout);
}

/* The reactor, with the listening sockets in it. */
static int open_reactor(ol_server *srv)
{
    if (ol_reactor_open(&srv->reactor, srv->interface == OL_WSGI) < 0)
        return -1;
    watch_listeners(srv, 1);
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
    if (srv->base_context == NULL)
        return NULL;
    if (ol_bridge_open(srv) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    PyObject *bridge = PyObject_GetAttrString((PyObject *)srv, "_run_bridge");
    PyObject *added =
        bridge ? PyObject_CallMethod(srv->loop, "add_reader", "iO", srv->bridgefd, bridge) : NULL;
    Py_XDECREF(bridge);
    if (added == NULL)
        return NULL;
    Py_DECREF(added);
    if (ol_watch_start(srv) < 0)
        return NULL;
    if (srv->interface == OL_WSGI)
        return ol_pool_start(srv) < 0 ? NULL : Py_NewRef(Py_None);
    srv->run_pending = PyObject_GetAttrString((PyObject *)srv, "_run_pending");
    PyObject *callback = PyObject_GetAttrString((PyObject *)srv, "_on_ready");
    if (callback == NULL || srv->run_pending == NULL) {
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

/* Between requests, with nothing left to send. */
static int is_idle(ol_server *srv, ol_conn *c)
{
    (void)srv;
    return c->request == NULL && (c->flags & CONN_IDLE) && ol_conn_pending(c) == 0;
}

/* Abort the connections matching a test that no pool thread is serving. */
static void close_matching(ol_server *srv, int (*test)(ol_server *, ol_conn *))
{
    size_t n;
    ol_conn **list = claim(srv, test, &n);
    for (size_t i = 0; i < n; i++)
        ol_conn_abort(list[i]);
    release(srv, list, n);
}

/* Stop accepting for good (shutdown, --max-requests). Any thread, GIL held. */
static void stop_accepting(ol_server *srv)
{
    __atomic_store_n(&srv->draining, 1, __ATOMIC_RELEASE);
    watch_listeners(srv, 0);
}

/* Idle after at least one response: a keep-alive connection with nothing
 * to say. A connection accepted a moment ago that has not sent its first
 * byte yet is not one: its request is likely on the wire. */
static int is_kept_alive_idle(ol_server *srv, ol_conn *c)
{
    return c->requests > 0 && is_idle(srv, c);
}

static int is_new(ol_server *srv, ol_conn *c)
{
    return c->requests == 0 && is_idle(srv, c);
}

/* Stop accepting; close idle keep-alive connections now and the others
 * when their request is answered. Listening sockets stay open (they belong
 * to Python, and other workers of a supervisor go on accepting on them). */
static PyObject *server_shutdown(ol_server *srv, PyObject *unused)
{
    (void)unused;
    if (srv->shut)
        Py_RETURN_NONE;
    srv->shut = 1;
    /* Requests that already arrived are served (and their connections then
     * closed); only connections with nothing to say are closed right away. */
    if (srv->pool == NULL && ol_reactor_is_open(&srv->reactor)) {
        PyObject *r = server_on_ready(srv, NULL);
        Py_XDECREF(r);
    }
    stop_accepting(srv);
    close_matching(srv, is_kept_alive_idle);
    /* New connections get a moment for their first request, which is then
     * served (with "Connection: close"); the tick closes the silent ones. */
    double until = ol_now() + FIRST_REQUEST_GRACE;
    size_t n;
    ol_conn **fresh = claim(srv, is_new, &n);
    for (size_t i = 0; i < n; i++)
        if (fresh[i]->deadline > until)
            fresh[i]->deadline = until;
    release(srv, fresh, n);
    ol_pool_wake(srv);
    Py_RETURN_NONE;
}

/* A response is complete (any thread, GIL held). At --max-requests the
 * server stops taking work by itself, at once: no new connections, and
 * every response says "Connection: close", so a connection carries at most
 * the request already on it. The worker notices within a tick and shuts
 * down (closing the idle ones). */
void ol_server_count_request(ol_server *srv)
{
    srv->total_requests++;
    if (srv->total_requests == srv->cfg.max_requests && !ol_server_is_draining(srv))
        stop_accepting(srv);
}

/*
 * Abort every connection. One that a pool thread still serves (its join
 * timed out: a view that does not return) is not closed under it: its fd
 * number could be reused at once and the thread's next write would land
 * in someone else's socket. Its socket is shut down instead, which ends the
 * thread's blocking I/O, and the thread closes it when it lets go (pool.c).
 */
static void abort_all(ol_server *srv)
{
    for (;;) {
        ol_pool_lock(srv);
        ol_conn *c = srv->conns;
        for (; c != NULL && (c->flags & CONN_IN_POOL); c = c->next)
            if (!(c->flags & CONN_CLOSING)) {
                c->flags |= CONN_CLOSING;
                shutdown(c->fd, SHUT_RDWR);
            }
        if (c != NULL)
            ol_conn_incref(c);
        ol_pool_unlock(srv);
        if (c == NULL)
            return;
        ol_conn_abort(c);
        ol_conn_decref(c);
    }
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
    abort_all(srv);
    int readers[2] = {srv->interface != OL_WSGI ? srv->reactor.epfd : -1, srv->bridgefd};
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
    return PyLong_FromSize_t(srv->nconns);
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
    Py_VISIT(srv->run_pending);
    Py_VISIT(srv->base_context);
    Py_VISIT(srv->bridge_drivers);
    Py_VISIT(srv->gate);
    Py_VISIT(srv->idle_drivers);
    Py_VISIT(srv->on_stall);
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
    Py_CLEAR(srv->run_pending);
    Py_CLEAR(srv->base_context);
    Py_CLEAR(srv->on_stall);
    Py_CLEAR(srv->idle_drivers);
    Py_CLEAR(srv->gate);
    Py_CLEAR(srv->root_path);
    Py_CLEAR(srv->root_path_bytes);
    Py_CLEAR(srv->asgi_info);
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
    abort_all(srv);
    ol_pool_free(srv);
    ol_watch_stop(srv);
    ol_bridge_close(srv);
    ol_asgi_close(srv);
    if (srv->bridge_lock_ready)
        pthread_mutex_destroy(&srv->bridge_lock);
    server_clear(srv);
    ol_reactor_close(&srv->reactor);
    PyMem_Free(srv->listeners);
    PyMem_Free(srv->fields);
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
    srv->bridgefd = srv->beatfd = -1;
    return (PyObject *)srv;
}

static PyMethodDef server_methods[] = {
    {"_on_ready", (PyCFunction)server_on_ready, METH_NOARGS,
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
    {"_run_pending", (PyCFunction)server_run_pending, METH_NOARGS,
     "Process connections queued by ol_server_schedule (called by the event loop)."},
    {"start", (PyCFunction)server_start, METH_NOARGS,
     "Start serving: register with the loop (ASGI) or start the thread pool (WSGI)."},
    {"shutdown", (PyCFunction)server_shutdown, METH_NOARGS,
     "Stop accepting; close idle connections, and the others after their response."},
    {"close", (PyCFunction)server_close, METH_NOARGS, "Abort every connection and release fds."},
    {"_serve_thread", (PyCFunction)ol_pool_thread, METH_NOARGS,
     "Serve connections until the server stops (the body of each WSGI pool thread)."},
    {"stop_threads", (PyCFunction)server_stop_threads, METH_NOARGS,
     "Make the WSGI pool threads return once they finish their current request."},
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
