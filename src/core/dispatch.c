/*
 * dispatch.c -- what the reactor's events lead to: accepting on the
 * listening sockets (paused while out of fds), the tick (expired waits,
 * the Date cache), and on the event loop the one callback that handles
 * every ready connection of a wake-up in one pass of C.
 *
 * In ASGI mode the reactor's epoll fd is registered with the asyncio loop
 * as a single reader (loop.add_reader), and Server._on_ready is
 * ol_dispatch_ready: the loop's dispatch cost is paid once per wake-up, not
 * once per socket event. In WSGI mode the pool threads (pool.c) poll the
 * same set themselves and call in here for listeners and the tick.
 */
#include "core.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_PER_WAKE          128
#define ACCEPTS_PER_WAKE         64
#define ACCEPT_PAUSE_LOG_SECONDS 10.0
#define ACCEPT_QUEUE_MAX         4096

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Listening sockets in or out of the reactor's set. Callers hold the
 * connection list's lock: pool threads pause accepting while the tick or
 * a shutdown change the set too. */
static void watch_locked(ol_server *srv, int on)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        ol_listener *l = &srv->listeners[i];
        if (on && l->handle == 0 && ol_reactor_is_open(&srv->reactor))
            ol_reactor_add(&srv->reactor, l->fd, OL_H_LISTENER, l, EPOLLIN, &l->handle);
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
void ol_watch_listeners(ol_server *srv, int on)
{
    ol_conns_lock(srv);
    watch_locked(srv, on);
    ol_conns_unlock(srv);
}

static void pause_accepting(ol_server *srv)
{
    ol_conns_lock(srv);
    if (!srv->accept_paused) {
        srv->accept_paused = 1;
        watch_locked(srv, 0);
    }
    ol_conns_unlock(srv);
}

/* The tick (GIL held): accepting resumes, and a pause is logged, at most
 * every ACCEPT_PAUSE_LOG_SECONDS (it can recur every tick while the
 * process stays out of fds). */
static void resume_accepting(ol_server *srv)
{
    ol_conns_lock(srv);
    int paused = srv->accept_paused;
    if (paused && !srv->draining) {
        srv->accept_paused = 0;
        watch_locked(srv, 1);
    }
    ol_conns_unlock(srv);
    if (paused && srv->now - srv->accept_pause_logged >= ACCEPT_PAUSE_LOG_SECONDS) {
        srv->accept_pause_logged = srv->now;
        ol_log_error(srv, "out of file descriptors: not accepting for a moment, clients wait "
                          "in the backlog (raise the limit: ulimit -n)");
    }
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
    ol_conn *c = ol_conn_new(srv, lst, fd, (struct sockaddr *)peer, len, srv->first_protocol);
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->flags |= CONN_READING;
    /* WSGI: one event goes to one pool thread, which re-arms when done. */
    c->events = EPOLLIN | EPOLLRDHUP | (srv->threaded ? EPOLLONESHOT : 0);
    /* Not srv->now: pool threads accept without the GIL that guards it. */
    c->deadline = ol_deadline(ol_now(), srv->cfg.header_timeout);
    ol_conn_register(srv, c);
    /* Last: once the socket is in the set, a pool thread may serve it (and
     * re-arm it with c->handle, which ol_reactor_add stores first). */
    if (ol_reactor_add(&srv->reactor, fd, OL_H_CONN, c, c->events, &c->handle) < 0) {
        ol_conn_abort(c);
        return NULL;
    }
    return c;
}

/* Accept up to `limit` connections, while the server takes new ones or
 * (`queued`) whatever it is. */
static int accept_up_to(ol_server *srv, ol_listener *lst, int limit, int queued)
{
    int accepted = 0;
    while (accepted < limit && (queued || !ol_server_is_draining(srv))) {
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

int ol_accept(ol_server *srv, ol_listener *lst)
{
    return accept_up_to(srv, lst, ACCEPTS_PER_WAKE, 0);
}

/* Shutdown: the connections already waiting in the accept queues are taken
 * and served (each response then closes its connection). Left there, they
 * would be reset when the last copy of the listener closes -- clients that
 * may have sent their request already. Bounded by the largest queue the
 * kernel keeps (net.core.somaxconn). */
void ol_accept_queued(ol_server *srv)
{
    for (int i = 0; i < srv->nlisteners; i++)
        accept_up_to(srv, &srv->listeners[i], ACCEPT_QUEUE_MAX, 1);
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                   */

void ol_tick(ol_server *srv)
{
    ol_server_set_now(srv);
    resume_accepting(srv);
    ol_conns_expire(srv);
    ol_date_cache_get(&srv->date, time(NULL));
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
        ol_accept(srv, object);
        break;
    case OL_H_TICK:
        ol_reactor_drain(srv->reactor.tickfd);
        ol_tick(srv);
        break;
    case OL_H_WAKE:
        ol_reactor_drain(srv->reactor.wakefd);
        break;
    default: /* stale */
        break;
    }
}

PyObject *ol_dispatch_ready(ol_server *srv, PyObject *unused)
{
    (void)unused;
    struct epoll_event events[EVENTS_PER_WAKE];
    int n = ol_reactor_poll(&srv->reactor, events, EVENTS_PER_WAKE, 0);
    ol_server_set_now(srv);
    for (int i = 0; i < n; i++)
        dispatch(srv, &events[i]);
    if (PyErr_Occurred()) /* never leak an exception into the loop */
        ol_log_error(srv, "unexpected error in the connection core");
    Py_RETURN_NONE;
}

/* Stop accepting for good (shutdown, --max-requests). Any thread, GIL held. */
void ol_stop_accepting(ol_server *srv)
{
    ol_conns_lock(srv);
    __atomic_store_n(&srv->draining, 1, __ATOMIC_RELEASE);
    watch_locked(srv, 0);
    ol_conns_unlock(srv);
}

/* A response is complete (any thread, GIL held). At --max-requests the
 * server stops taking work by itself, at once: no new connections, and
 * every response says "Connection: close", so a connection carries at most
 * the request already on it. The worker notices within a tick and shuts
 * down (closing the idle ones). */
void ol_count_response(ol_server *srv)
{
    srv->total_requests++;
    if (srv->total_requests == srv->cfg.max_requests && !ol_server_is_draining(srv))
        ol_stop_accepting(srv);
}
