/*
 * conn.c -- the transport: one client connection's socket, input and output
 * buffers, partial and gathered writes, the lingering close, readiness from
 * the reactor, and the server's list of connections with their timers
 * (conn.h states the contract; TLS is in tls.c). What the bytes mean is the
 * protocol's business (c->proto, h1.c first).
 *
 * Input lands in c->rbuf and stays there until consumed, so a request head
 * that spans reads, pipelined requests and body bytes the app has not asked
 * for yet all live in one place. Output goes straight to the socket and only
 * what the socket refuses (or a corked batch gathers) is copied to c->wbuf.
 *
 * GIL: the plain-socket functions (recv, send, buffers) touch no Python
 * object and may run without it; anything involving TLS, the protocol's
 * callbacks or the client address needs it.
 */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define RBUF_INITIAL   1024
#define RECV_CHUNK     16384
#define LINGER_SECONDS 2.0

static void wake_waiters_locked(ol_conn *c);

static void unlink_conn(ol_server *srv, ol_conn *c);
static void watch_locked(ol_conn *c);

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */

ol_conn *ol_conn_new(ol_server *srv, ol_listener *lst, int fd, const struct sockaddr *peer,
                     socklen_t peerlen, const ol_proto *proto)
{
    ol_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fd = fd;
    c->refs = 1;
    c->server = srv;
    c->listener = lst;
    c->flags = CONN_IDLE;
    c->proto = proto;
    c->body_done = 1;
    c->send_limit = HUGE_VAL;
    ol_parser_init(&c->parser);
    c->peer_family = (uint8_t)peer->sa_family;
    if (peer->sa_family == AF_INET && peerlen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        memcpy(c->peer_addr, &in->sin_addr, 4);
        c->peer_port = ntohs(in->sin_port);
    } else if (peer->sa_family == AF_INET6 && peerlen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        memcpy(c->peer_addr, &in6->sin6_addr, 16);
        c->peer_port = ntohs(in6->sin6_port);
    }
    return c;
}

/* Atomic: in WSGI mode a pool thread may take a reference under the pool
 * lock while another drops one under the GIL. */
void ol_conn_incref(ol_conn *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

/* The last reference frees the struct; by then ol_conn_abort() has released
 * every Python object the connection held. */
void ol_conn_decref(ol_conn *c)
{
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

/* The host of a client address as str. Connections from one address (a
 * proxy's, a load balancer's, or a client's many) share one object. */
static PyObject *client_host(ol_server *srv, const char *host)
{
    PyObject *last = srv->conns.last_host;
    if (last != NULL && PyUnicode_CompareWithASCIIString(last, host) == 0)
        return Py_NewRef(last);
    PyObject *s = PyUnicode_FromString(host);
    if (s != NULL)
        Py_XSETREF(srv->conns.last_host, Py_NewRef(s));
    return s;
}

/* The client's address as scope["client"] wants it: (host, port), or None
 * for UNIX sockets. Cached on the connection. Needs the GIL. */
PyObject *ol_conn_client(ol_conn *c)
{
    if (c->client != NULL)
        return c->client;
    char host[INET6_ADDRSTRLEN];
    if (c->peer_family == AF_INET || c->peer_family == AF_INET6) {
        /* An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d;
         * report (and trust-check) it as the IPv4 address it is. */
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        int mapped = c->peer_family == AF_INET6 && memcmp(c->peer_addr, v4mapped, 12) == 0;
        const void *addr = mapped ? c->peer_addr + 12 : c->peer_addr;
        if (inet_ntop(mapped ? AF_INET : c->peer_family, addr, host, sizeof(host)) == NULL)
            strcpy(host, "?");
        PyObject *h = client_host(c->server, host);
        c->client = h ? Py_BuildValue("(Ni)", h, (int)c->peer_port) : NULL;
    } else {
        c->client = Py_NewRef(Py_None);
    }
    return c->client;
}

static void release_python(ol_conn *c)
{
    Py_CLEAR(c->client);
    Py_CLEAR(c->tls);
    Py_CLEAR(c->tls_in);
    Py_CLEAR(c->tls_out);
}

void ol_conn_set_phase(ol_conn *c, int phase)
{
    if (c->phase == phase)
        return;
    ol_meter *mt = &c->server->meter;
    if (c->phase != OL_PHASE_NONE)
        ol_meter_add(mt, &mt->m->connections[c->phase], (uint64_t)-1);
    if (phase != OL_PHASE_NONE)
        ol_meter_add(mt, &mt->m->connections[phase], 1);
    c->phase = (uint8_t)phase;
}

/* Close the socket at once. The connection leaves the server's list and the
 * reference the list held is dropped. Needs the GIL. */
void ol_conn_abort(ol_conn *c)
{
    if (c->flags & CONN_CLOSED)
        return;
    if (c->flags & CONN_LENT) /* the app's descriptor may live on */
        ol_conn_take_back(c, 1);
    /* Output gathered while corked counts as sent (the app was told so):
     * what the socket takes goes out before the close -- a truncated
     * response rather than none. */
    if ((c->flags & CONN_CORKED) && ol_conn_pending(c) > 0)
        ol_conn_flush(c);
    c->flags |= CONN_CLOSED | CONN_CLOSING;
    ol_conn_set_phase(c, OL_PHASE_NONE);
    ol_server *srv = c->server;
    /* Out of the set, and its handle retired: an event for it that is
     * already fetched will not be delivered (reactor.h). */
    ol_reactor_remove(&srv->reactor, c->fd, c->handle);
    c->handle = 0;
    if (c->flags & CONN_SHARED) /* the app's duplicate sees the end too */
        shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    c->fd = -1;
    c->proto->on_close(c);
    release_python(c);
    free(c->wbuf);
    c->wbuf = NULL;
    c->woff = c->wlen = c->wcap = 0;
    unlink_conn(srv, c);
    ol_conn_decref(c);
}

/* Stop reading requests; once output drains, shut the write side and keep
 * reading (and dropping) for a moment so the client sees our response
 * rather than a reset caused by its own unread bytes. */
void ol_conn_close_gracefully(ol_conn *c)
{
    if (c->flags & CONN_CLOSED)
        return;
    c->flags |= CONN_CLOSING;
    if (ol_conn_pending(c) > 0) {
        /* Nothing more is read while the output drains: input would only
         * pile up, and the client that does not read cannot be made to. */
        c->flags &= ~CONN_READING;
        c->rlen = 0;
        ol_conn_update_events(c);
        return; /* the drain comes back here (ol_conn_on_event, pool.c) */
    }
    if (c->flags & (CONN_PEER_CLOSED | CONN_LINGER)) {
        ol_conn_abort(c);
        return;
    }
    /* TLS too: the close_notify alert is optional and skipped, but the
     * lingering close is not -- a reset caused by the client's unread
     * bytes would destroy the response we just sent (a 413, say). */
    shutdown(c->fd, SHUT_WR);
    c->flags |= CONN_LINGER | CONN_READING;
    c->rlen = 0;
    ol_conn_set_deadline(c, ol_deadline(ol_now(), LINGER_SECONDS));
    ol_conn_update_events(c);
}

/* While lingering: read and drop what the client still sends, as raw
 * bytes (TLS records are not decrypted any more), a bounded amount per
 * call so a flooding client cannot hold the thread. 1 while the client may
 * send more, 0 at EOF or on error. No GIL needed. */
int ol_conn_linger_read(ol_conn *c)
{
    char sink[RECV_CHUNK];
    for (int i = 0; i < 16; i++) {
        ssize_t n;
        do
            n = recv(c->fd, sink, sizeof(sink), 0);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        OL_COUNT(c->server, bytes_in, n);
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The server's open connections                                            */

/*
 * Every open connection is on the server's list, which holds one reference
 * to it. In threaded mode (WSGI) the list lock also guards who holds a
 * connection (CONN_HELD): a pool thread serving it, or the tick expiring
 * it. A holder may block on the connection and re-arms it when it lets go;
 * nobody else touches it meanwhile.
 */

int ol_conns_init(ol_server *srv, int threaded)
{
    srv->threaded = threaded;
    ol_wheel_init(&srv->conns.wheel, ol_now());
    if (threaded && pthread_mutex_init(&srv->conns.lock, NULL) != 0)
        return -1;
    srv->conns.lock_ready = threaded;
    return 0;
}

void ol_conns_fini(ol_server *srv)
{
    if (srv->conns.lock_ready)
        pthread_mutex_destroy(&srv->conns.lock);
    srv->conns.lock_ready = 0;
}

void ol_conns_lock(ol_server *srv)
{
    if (srv->conns.lock_ready)
        pthread_mutex_lock(&srv->conns.lock);
}

void ol_conns_unlock(ol_server *srv)
{
    if (srv->conns.lock_ready)
        pthread_mutex_unlock(&srv->conns.lock);
}

void ol_conn_register(ol_server *srv, ol_conn *c)
{
    ol_conns_lock(srv);
    c->prev = NULL;
    c->next = srv->conns.head;
    if (srv->conns.head != NULL)
        srv->conns.head->prev = c;
    srv->conns.head = c;
    srv->conns.n++;
    OL_COUNT(srv, connections_total, 1);
    ol_conn_set_phase(c, OL_PHASE_READING);
    watch_locked(c);
    ol_conns_unlock(srv);
}

static void unlink_conn(ol_server *srv, ol_conn *c)
{
    ol_conns_lock(srv);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (srv->conns.head == c)
        srv->conns.head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->conns.n--;
    ol_timer_disarm(&c->timer);
    wake_waiters_locked(c); /* their wait is over: it closed */
    ol_conns_unlock(srv);
}

ol_conn **ol_conns_claim(ol_server *srv, int (*test)(const ol_conn *), size_t *n)
{
    *n = 0;
    ol_conns_lock(srv);
    size_t cap = srv->conns.n;
    ol_conn **out = cap ? PyMem_Malloc(cap * sizeof(*out)) : NULL;
    for (ol_conn *c = srv->conns.head; out != NULL && c != NULL && *n < cap; c = c->next) {
        if ((c->flags & (CONN_HELD | CONN_CLOSED)) || !test(c))
            continue;
        if (srv->threaded)
            c->flags |= CONN_HELD;
        ol_conn_incref(c);
        out[(*n)++] = c;
    }
    ol_conns_unlock(srv);
    return out;
}

/* Let go of a held connection: its deadlines (which its holder set
 * without the lock) armed, and its events, unless it closed; the threads
 * waiting for it look again. */
static void let_go_locked(ol_conn *c)
{
    c->flags &= ~(CONN_HELD | CONN_BLOCKING);
    watch_locked(c);
    ol_conn_update_events(c);
    wake_waiters_locked(c);
}

/* ------------------------------------------------------------------------ */
/* Sharing a connection among threads (conn.h)                              */

/*
 * A waiter is on the connection's list (under the list lock) while it
 * waits; whoever lets go of the connection, or closes it, empties the list
 * and writes to each waiter's eventfd, so a waiter that registered before
 * the let-go cannot miss it: its poll finds the counter set.
 */
struct ol_conn_waiter {
    int efd;
    struct ol_conn_waiter *next;
};

/* This thread's eventfd, made at its first wait; -1 if it cannot be. */
static __thread int waiter_efd = -1;

static int my_efd(void)
{
    if (waiter_efd < 0)
        waiter_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return waiter_efd;
}

void ol_conn_thread_exit(void)
{
    if (waiter_efd >= 0)
        close(waiter_efd);
    waiter_efd = -1;
}

static void wake_waiters_locked(ol_conn *c)
{
    static const uint64_t one = 1;
    for (struct ol_conn_waiter *w = c->waiters; w != NULL; w = w->next) {
        ssize_t n = write(w->efd, &one, sizeof(one));
        (void)n; /* EAGAIN: its counter is set already */
    }
    c->waiters = NULL;
}

static void wait_on_locked(ol_conn *c, struct ol_conn_waiter *w)
{
    if (w->efd < 0)
        return; /* no eventfd: it looks again after a while (wait_woken) */
    w->next = c->waiters;
    c->waiters = w;
}

static void unwait(ol_conn *c, struct ol_conn_waiter *w)
{
    ol_conns_lock(c->server);
    for (struct ol_conn_waiter **p = &c->waiters; *p != NULL; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    ol_conns_unlock(c->server);
}

/* Wait, GIL released, for the waiter's wake-up or for `events` on `fd`,
 * up to `ms` (-1: no limit). Without an eventfd a wake-up cannot come:
 * look again every 10 ms. >0 woken, 0 timed out. */
static int wait_woken(const struct ol_conn_waiter *w, int fd, short events, int ms)
{
    struct pollfd fds[2] = {{.fd = w->efd, .events = POLLIN}, {.fd = fd, .events = events}};
    if (w->efd < 0 && (ms < 0 || ms > 10))
        ms = 10;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = poll(w->efd >= 0 ? fds : fds + 1, (w->efd >= 0) + (events != 0), ms);
    Py_END_ALLOW_THREADS
    if (w->efd >= 0 && n > 0 && (fds[0].revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(w->efd, &v, sizeof(v));
        (void)r;
    }
    return w->efd < 0 ? 1 : n != 0;
}

int ol_conn_hold(ol_conn *c)
{
    ol_server *srv = c->server;
    struct ol_conn_waiter w = {my_efd(), NULL};
    for (;;) {
        ol_conns_lock(srv);
        if (c->flags & CONN_CLOSED) {
            ol_conns_unlock(srv);
            return -1;
        }
        if (!(c->flags & CONN_HELD)) {
            c->flags |= CONN_HELD;
            ol_conns_unlock(srv);
            return 0;
        }
        wait_on_locked(c, &w);
        ol_conns_unlock(srv);
        wait_woken(&w, -1, 0, -1);
        unwait(c, &w);
    }
}

void ol_conn_let_go(ol_conn *c)
{
    ol_conns_lock(c->server);
    let_go_locked(c);
    ol_conns_unlock(c->server);
}

int ol_conn_await(ol_conn *c, double timeout)
{
    ol_server *srv = c->server;
    short events = 0;
    if ((c->flags & CONN_READING) && !(c->flags & (CONN_PEER_CLOSED | CONN_CLOSING)))
        events |= POLLIN;
    if (ol_conn_pending(c) > 0)
        events |= POLLOUT;
    /* The descriptor is read while held; if c closes during the wait, the
     * close wakes this thread (unlink_conn), whatever the poll sees. */
    int fd = c->fd;
    struct ol_conn_waiter w = {my_efd(), NULL};
    ol_conns_lock(srv);
    let_go_locked(c);
    wait_on_locked(c, &w);
    ol_conns_unlock(srv);
    int woken = wait_woken(&w, fd, events, ol_poll_ms(timeout));
    unwait(c, &w);
    if (ol_conn_hold(c) < 0)
        return -1;
    return woken;
}

void ol_conns_release(ol_server *srv, ol_conn **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ol_conn *c = list[i];
        if (srv->threaded) {
            ol_conns_lock(srv);
            let_go_locked(c);
            ol_conns_unlock(srv);
        }
        ol_conn_decref(c);
    }
    PyMem_Free(list);
}

ol_conn *ol_conns_take_locked(void *object)
{
    ol_conn *c = object;
    if (c->flags & (CONN_HELD | CONN_CLOSED)) /* the tick holds it, or it just closed */
        return NULL;
    c->flags |= CONN_HELD | CONN_BLOCKING;
    ol_conn_incref(c);
    return c;
}

void ol_conns_give_back_locked(ol_conn *c)
{
    /* Let go, then re-arm, under the list lock: the other way round, a
     * thread that took over polling could get the next event while the
     * connection still looks held, and drop it. */
    let_go_locked(c);
    ol_conn_decref(c); /* frees only C memory: no GIL needed */
}

void ol_conns_abort_all(ol_server *srv)
{
    for (;;) {
        ol_conns_lock(srv);
        ol_conn *c = srv->conns.head;
        for (; c != NULL && (c->flags & CONN_HELD); c = c->next)
            if (!(c->flags & CONN_CLOSING)) {
                c->flags |= CONN_CLOSING;
                shutdown(c->fd, SHUT_RDWR);
            }
        if (c != NULL)
            ol_conn_incref(c);
        ol_conns_unlock(srv);
        if (c == NULL)
            return;
        ol_conn_abort(c);
        ol_conn_decref(c);
    }
}

/* Under the list lock: a lent socket is open until its holder takes it
 * back (ol_conn_take_back), which takes the lock too, so no descriptor
 * here can have been closed and reused meanwhile. */
void ol_conns_shut_lent(ol_server *srv, int how)
{
    ol_conns_lock(srv);
    for (ol_conn *c = srv->conns.head; c != NULL; c = c->next)
        if (c->flags & CONN_LENT)
            shutdown(c->fd, how);
    ol_conns_unlock(srv);
}

/* When the wait for pending output ends. */
static double send_due(const ol_conn *c)
{
    return c->send_deadline < c->send_limit ? c->send_deadline : c->send_limit;
}

/* Is the connection's current wait over? Output the client does not take,
 * a lingering close, or whatever its protocol waits for. */
static int is_expired(const ol_conn *c)
{
    double now = c->server->now;
    if (ol_conn_pending(c) > 0)
        return send_due(c) <= now;
    if (c->flags & CONN_LINGER)
        return c->deadline <= now;
    return c->proto->waiting(c) && c->deadline <= now;
}

static void expire(ol_conn *c)
{
    if ((c->flags & CONN_LINGER) || ol_conn_pending(c) > 0)
        ol_conn_abort(c); /* the client stopped reading our output, or lingered */
    else
        c->proto->on_timeout(c);
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                */

/*
 * Each open connection's timer is armed at or before the earliest of its
 * deadlines (the protocol's wait, pending output), so the tick looks only
 * at the connections whose time may have come (reactor.h: the wheel).
 * Deadlines that move later (progress, a new request) leave the timer as it
 * is: when it fires early, the connection is re-armed for its real time.
 */

/* Seconds between looks at a connection whose deadline does not run now
 * (its exchange is with the app). */
#define RECHECK_SECONDS 1.0

static double next_deadline(const ol_conn *c)
{
    double due = c->deadline;
    if (ol_conn_pending(c) > 0 && send_due(c) < due)
        due = send_due(c);
    return due;
}

/* The list lock held. */
static void watch_locked(ol_conn *c)
{
    if (c->flags & CONN_CLOSED)
        return;
    double due = next_deadline(c);
    if (!ol_timer_armed(&c->timer) || due < c->timer.due)
        ol_timer_arm(&c->server->conns.wheel, &c->timer, due);
}

/* In threaded mode only a holder changes a connection's deadlines, and
 * its timer is armed as the holder lets go (let_go_locked): no lock here.
 * On the event loop it is armed at once. */
void ol_conn_set_deadline(ol_conn *c, double deadline)
{
    c->deadline = deadline;
    if (!c->server->threaded)
        watch_locked(c);
}

void ol_conn_limit_send(ol_conn *c, double until)
{
    if (until < c->send_limit)
        c->send_limit = until;
    if (!c->server->threaded)
        watch_locked(c);
}

/* Output is pending: the client has the send timeout to take it. */
static void set_send_deadline(ol_conn *c)
{
    c->send_deadline = ol_deadline(c->server->now, c->server->cfg.send_timeout);
    if (!c->server->threaded)
        watch_locked(c);
}

#define CONN_OF_TIMER(t) ((ol_conn *)((char *)(t)-offsetof(ol_conn, timer)))

/* Under the list lock: hold (with a reference) the connections whose wait
 * is over, as a list through their disarmed timers' ->prev; re-arm the
 * others. */
static ol_conn *take_expired(ol_server *srv)
{
    double now = srv->now;
    ol_conn *expired = NULL;
    ol_timer *t = ol_wheel_take_due(&srv->conns.wheel, now);
    while (t != NULL) {
        ol_timer *next = t->prev;
        t->prev = NULL;
        ol_conn *c = CONN_OF_TIMER(t);
        t = next;
        if (c->flags & CONN_HELD)
            continue; /* re-armed when its holder lets go */
        double due = next_deadline(c);
        if (is_expired(c)) {
            if (srv->threaded)
                c->flags |= CONN_HELD;
            ol_conn_incref(c);
            c->timer.prev = expired != NULL ? &expired->timer : NULL;
            expired = c;
            continue;
        } else if (due <= now) {
            due = now + RECHECK_SECONDS;
        }
        ol_timer_arm(&srv->conns.wheel, &c->timer, due);
    }
    return expired;
}

void ol_conns_expire(ol_server *srv)
{
    ol_conns_lock(srv);
    ol_conn *expired = take_expired(srv);
    ol_conns_unlock(srv);
    while (expired != NULL) {
        ol_conn *c = expired;
        expired = c->timer.prev != NULL ? CONN_OF_TIMER(c->timer.prev) : NULL;
        c->timer.prev = NULL;
        expire(c);
        ol_conns_lock(srv);
        if (srv->threaded)
            let_go_locked(c);
        else
            watch_locked(c); /* still open: its next wait */
        ol_conns_unlock(srv);
        ol_conn_decref(c);
    }
}

/* ------------------------------------------------------------------------ */
/* Lending the socket to the app                                            */

static int set_nonblocking(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return want == fl ? 0 : fcntl(fd, F_SETFL, want);
}

int ol_conn_lend(ol_conn *c)
{
    /* Responses gathered before it (pipelined requests) go out first: the
     * app's bytes must not overtake them. */
    ol_conn_uncork(c);
    if (c->flags & CONN_CLOSED) {
        errno = EPIPE;
        return -1;
    }
    int fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (set_nonblocking(c->fd, 0) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    ol_conn_set_phase(c, OL_PHASE_WEBSOCKET); /* what apps take a socket over for */
    /* Under the list lock: ol_conns_shut_lent() reads the flag there. */
    ol_conns_lock(c->server);
    c->flags |= CONN_LENT | CONN_SHARED;
    ol_conns_unlock(c->server);
    return fd;
}

void ol_conn_take_back(ol_conn *c, int kept)
{
    if (!(c->flags & CONN_LENT))
        return;
    ol_conns_lock(c->server);
    c->flags &= ~CONN_LENT;
    if (!kept)
        c->flags &= ~CONN_SHARED;
    ol_conns_unlock(c->server);
    /* Cannot fail on an open socket; if it did, a socket shut down cannot
     * block a read of ours either. */
    if (set_nonblocking(c->fd, 1) < 0)
        shutdown(c->fd, SHUT_RDWR);
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                  */

int ol_conn_reserve(ol_conn *c, size_t n)
{
    if (c->rcap - c->rlen >= n)
        return 0;
    size_t cap = c->rcap ? c->rcap : RBUF_INITIAL;
    while (cap - c->rlen < n)
        cap *= 2;
    char *p = realloc(c->rbuf, cap);
    if (p == NULL)
        return -1;
    c->rbuf = p;
    c->rcap = cap;
    return 0;
}

void ol_conn_consume(ol_conn *c, size_t n)
{
    if (n >= c->rlen) {
        c->rlen = 0;
        return;
    }
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

/* Between requests an empty input buffer is returned to the allocator, so an
 * idle keep-alive connection costs its struct and nothing else. */
void ol_conn_release_idle_buffers(ol_conn *c)
{
    if (c->rlen == 0 && c->rbuf != NULL) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    if (ol_conn_pending(c) == 0 && c->wbuf != NULL) {
        free(c->wbuf);
        c->wbuf = NULL;
        c->woff = c->wlen = c->wcap = 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Socket I/O                                                               */

/* Reads go straight into the connection's buffer when it has room for a
 * whole chunk (a body streaming in, a large head). Otherwise they land in a
 * scratch buffer on the stack and only what arrived is kept: a connection
 * that trickles its head -- a slow client, or a slowloris holding a slot --
 * then costs a buffer the size of what it sent, not a 16 KiB one. The copy
 * is of what one recv() returned, cheap beside the system call, and a read
 * that fills the scratch buffer makes room for the next one to go direct. */
Py_ssize_t ol_conn_recv(ol_conn *c)
{
    if (c->listener->ssl_context != NULL)
        return ol_tls_recv(c);
    char scratch[RECV_CHUNK];
    int direct = c->rcap - c->rlen >= RECV_CHUNK;
    char *into = direct ? c->rbuf + c->rlen : scratch;
    size_t space = direct ? c->rcap - c->rlen : RECV_CHUNK;
    Py_ssize_t n;
    do
        n = recv(c->fd, into, space, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        OL_COUNT(c->server, bytes_in, n);
        if (!direct) {
            /* A full read: more is streaming in (a body, a large message);
             * room for the next chunk lets it go straight in. */
            size_t room = (size_t)n == RECV_CHUNK ? 2 * RECV_CHUNK : (size_t)n;
            if (ol_conn_reserve(c, room) < 0)
                return -2;
            memcpy(c->rbuf + c->rlen, scratch, (size_t)n);
        }
        c->rlen += (size_t)n;
        return n;
    }
    if (n == 0)
        return 0;
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
}

static int append_output(ol_conn *c, const struct iovec *iov, int n, size_t skip)
{
    size_t need = 0;
    for (int i = 0; i < n; i++)
        need += iov[i].iov_len;
    need -= skip;
    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wcap - c->wlen < need) {
        if (c->woff > 0) { /* slide pending bytes to the front first */
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        size_t cap = c->wcap ? c->wcap : 4096;
        while (cap - c->wlen < need)
            cap *= 2;
        char *p = realloc(c->wbuf, cap);
        if (p == NULL)
            return -1;
        c->wbuf = p;
        c->wcap = cap;
    }
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        const char *base = iov[i].iov_base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(c->wbuf + c->wlen, base + skip, len - skip);
        c->wlen += len - skip;
        skip = 0;
    }
    return 0;
}

/* Wait (GIL released) until the socket is writable or the send timeout
 * expires: 0, or -1. For the thread that owns a blocking connection. */
int ol_conn_wait_readable(ol_conn *c, double timeout)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int ms = ol_poll_ms(timeout);
    int r;
    Py_BEGIN_ALLOW_THREADS
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    return r > 0 ? 0 : -1;
}

int ol_conn_wait_writable(ol_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    int timeout = ol_poll_ms(c->server->cfg.send_timeout);
    int r;
    Py_BEGIN_ALLOW_THREADS
    do
        r = poll(&p, 1, timeout);
    while (r < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    return r > 0 && !(p.revents & (POLLERR | POLLNVAL)) ? 0 : -1;
}

/* writev() that never raises SIGPIPE: a client gone mid-response must not
 * kill a process whose SIGPIPE is not ignored (an embedding app's). */
static ssize_t send_iov(ol_conn *c, const struct iovec *iov, int n)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t w;
    do
        w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w > 0)
        OL_COUNT(c->server, bytes_out, w);
    return w;
}

/* Blocking send of every byte, GIL released around the system calls; for
 * WSGI threads, which own their connection and may wait for a slow client. */
static int writev_blocking(ol_conn *c, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w;
        int err;
        Py_BEGIN_ALLOW_THREADS
        w = send_iov(c, iov, n);
        err = errno;
        Py_END_ALLOW_THREADS
        if (w < 0) {
            if ((err == EAGAIN || err == EWOULDBLOCK) && ol_conn_wait_writable(c) == 0)
                continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* The blocking write of a thread that owns its connection: the output
 * pending (left over from before it took the connection, or gathered while
 * corked) and the first iovecs in one call, then the rest in batches
 * (writev_blocking consumes its copy as it goes). On failure the pending
 * output is dropped: the connection is done for, and what went out of it
 * is not known. */
static int write_blocking(ol_conn *c, const struct iovec *iov, int n)
{
    enum { BATCH = 16 };
    struct iovec copy[1 + BATCH];
    int done = 0;
    size_t pending = ol_conn_pending(c);
    if (pending > 0) {
        int k = n < BATCH ? n : BATCH;
        copy[0] = (struct iovec){c->wbuf + c->woff, pending};
        if (k > 0)
            memcpy(copy + 1, iov, (size_t)k * sizeof(*iov));
        int e = writev_blocking(c, copy, 1 + k);
        c->woff = c->wlen = 0;
        if (e < 0)
            return -1;
        done = k;
    }
    while (done < n) {
        int k = n - done < BATCH ? n - done : BATCH;
        memcpy(copy, iov + done, (size_t)k * sizeof(*iov));
        if (writev_blocking(c, copy, k) < 0)
            return -1;
        done += k;
    }
    return 0;
}

/* Output held back while corked; what would pass it goes out at once,
 * together with what is held, in one call. */
#define CORK_MAX     65536
#define SEND_IOV_MAX 16

/* One sendmsg of the pending output followed by the iovecs (up to
 * SEND_IOV_MAX of them): the bytes of the iovecs that went out (the pending
 * ones are consumed first), 0 when the socket is full, -1 on error. */
static ssize_t send_after_pending(ol_conn *c, const struct iovec *iov, int n)
{
    struct iovec all[1 + SEND_IOV_MAX];
    int k = 0;
    size_t pending = ol_conn_pending(c);
    if (pending > 0)
        all[k++] = (struct iovec){c->wbuf + c->woff, pending};
    int m = n < SEND_IOV_MAX ? n : SEND_IOV_MAX;
    memcpy(all + k, iov, (size_t)m * sizeof(*iov));
    ssize_t w = send_iov(c, all, k + m);
    if (w < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    size_t from_pending = (size_t)w < pending ? (size_t)w : pending;
    c->woff += from_pending;
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    return w - (ssize_t)from_pending;
}

/*
 * Write bytes that are already in wire format (TLS records or plain).
 * Whether this blocks follows from who owns the connection: the pool
 * thread serving it (CONN_BLOCKING) waits for a slow client, GIL released;
 * anyone else (the event loop, the WSGI tick) sends what the socket takes
 * and buffers the rest for the reactor to flush. While corked, small
 * writes are only gathered: the responses to a batch of pipelined
 * requests leave in one system call.
 */
int ol_conn_raw_writev(ol_conn *c, const struct iovec *iov, int n)
{
    if (c->flags & CONN_CLOSED)
        return -1;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if ((c->flags & CONN_CORKED) && ol_conn_pending(c) + total <= CORK_MAX)
        return append_output(c, iov, n, 0); /* goes out with the rest at ol_conn_uncork() */
    if (c->flags & CONN_BLOCKING) /* what the cork held goes out first, in the same call */
        return write_blocking(c, iov, n);
    size_t written = 0;
    if (ol_conn_pending(c) == 0 || (c->flags & CONN_CORKED)) {
        ssize_t w = send_after_pending(c, iov, n);
        if (w < 0) {
            c->flags |= CONN_PEER_CLOSED;
            return -1;
        }
        written = (size_t)w;
    }
    if (written == total)
        return 0;
    int restart = written > 0 || ol_conn_pending(c) == 0;
    if (append_output(c, iov, n, written) < 0)
        return -1;
    if (restart)
        set_send_deadline(c);
    ol_conn_update_events(c);
    return 0;
}

int ol_conn_writev(ol_conn *c, const struct iovec *iov, int n)
{
    if (c->tls == NULL)
        return ol_conn_raw_writev(c, iov, n);
    return ol_tls_writev(c, iov, n);
}

int ol_conn_write(ol_conn *c, const char *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return ol_conn_writev(c, &iov, 1);
}

/* All pending output went out: the protocol may go on, and a connection
 * waiting to close gracefully does. */
static void drained(ol_conn *c)
{
    ol_conn_update_events(c);
    c->proto->on_drained(c);
    if ((c->flags & CONN_CLOSING) && !(c->flags & CONN_CLOSED))
        ol_conn_close_gracefully(c);
}

void ol_conn_cork(ol_conn *c)
{
    c->flags |= CONN_CORKED;
}

void ol_conn_uncork(ol_conn *c)
{
    c->flags &= ~CONN_CORKED;
    if ((c->flags & CONN_CLOSED) || ol_conn_pending(c) == 0)
        return;
    /* A blocking holder waits for the client to take it all, as its
     * writes do; anyone else leaves what the socket refuses to the
     * reactor. */
    int r =
        (c->flags & CONN_BLOCKING) ? (write_blocking(c, NULL, 0) < 0 ? -1 : 1) : ol_conn_flush(c);
    if (r < 0) {
        ol_conn_abort(c);
    } else if (r == 1) {
        drained(c);
    } else {
        set_send_deadline(c);
        ol_conn_update_events(c);
    }
}

int ol_conn_flush(ol_conn *c)
{
    while (ol_conn_pending(c) > 0) {
        ssize_t w;
        do
            w = send(c->fd, c->wbuf + c->woff, ol_conn_pending(c), MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            c->flags |= CONN_PEER_CLOSED;
            return -1;
        }
        OL_COUNT(c->server, bytes_out, w);
        c->woff += (size_t)w;
        c->send_deadline = ol_deadline(c->server->now, c->server->cfg.send_timeout); /* progress */
    }
    c->woff = c->wlen = 0;
    return 1;
}

/*
 * Register what the connection waits for. Threaded mode arms it for one
 * event (EPOLLONESHOT: the event goes to exactly one pool thread), and only
 * when nobody holds it: the holder re-arms it as it lets go. On the event
 * loop the set is level-triggered and changed only when the interest does.
 */
void ol_conn_update_events(ol_conn *c)
{
    if (c->flags & (CONN_CLOSED | CONN_HELD))
        return;
    uint32_t want = 0;
    if ((c->flags & CONN_READING) && !(c->flags & CONN_PEER_CLOSED))
        want |= EPOLLIN;
    if (ol_conn_pending(c) > 0)
        want |= EPOLLOUT;
    if (c->server->threaded) {
        want |= EPOLLRDHUP | EPOLLONESHOT;
    } else {
        /* Once the client has shut its side, EPOLLRDHUP stays raised:
         * drop it with EPOLLIN or the loop would spin. */
        if (!(c->flags & CONN_PEER_CLOSED))
            want |= EPOLLRDHUP;
        if (want == c->events)
            return;
    }
    if (ol_reactor_modify(&c->server->reactor, c->fd, c->handle, want) == 0)
        c->events = want;
}

/* ------------------------------------------------------------------------ */
/* Processing on the next loop turn (event loop)                            */

void ol_conn_schedule(ol_conn *c)
{
    ol_server *srv = c->server;
    if (c->flags & (CONN_PENDING | CONN_CLOSED))
        return;
    c->flags |= CONN_PENDING;
    ol_conn_incref(c);
    c->pending_next = srv->conns.pending;
    srv->conns.pending = c;
    if (srv->conns.scheduled || srv->conns.run_pending == NULL)
        return;
    PyObject *h = PyObject_CallMethod(srv->loop, "call_soon", "O", srv->conns.run_pending);
    if (h == NULL) {
        ol_log_error(srv, "cannot schedule connection processing");
        return;
    }
    Py_DECREF(h);
    srv->conns.scheduled = 1;
}

PyObject *ol_conns_run_pending(ol_server *srv, PyObject *unused)
{
    (void)unused;
    srv->conns.scheduled = 0;
    ol_server_set_now(srv);
    while (srv->conns.pending != NULL) {
        ol_conn *c = srv->conns.pending;
        srv->conns.pending = c->pending_next;
        c->pending_next = NULL;
        c->flags &= ~CONN_PENDING;
        if (!(c->flags & CONN_CLOSED))
            c->proto->on_data(c); /* HTTP/1.1, or the protocol it switched to */
        ol_conn_decref(c);
    }
    if (PyErr_Occurred())
        ol_log_error(srv, "unexpected error in the connection core");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* Readiness (event loop)                                                   */

static void on_readable(ol_conn *c)
{
    if (c->flags & CONN_LINGER) {
        if (!ol_conn_linger_read(c))
            ol_conn_abort(c);
        return;
    }
    if (c->flags & CONN_CLOSING) {
        /* Output still draining; only the client's hang-up matters. */
        if (!ol_conn_linger_read(c)) {
            c->flags |= CONN_PEER_CLOSED;
            ol_conn_update_events(c);
        }
        return;
    }
    Py_ssize_t n = ol_conn_recv(c);
    if (n == -1)
        return;
    if (n <= 0) /* EOF or error: the client is gone or half-closed */
        c->proto->on_eof(c, n == 0);
    else
        c->proto->on_data(c);
}

void ol_conn_on_event(ol_conn *c, uint32_t events)
{
    ol_conn_incref(c); /* keep it alive across the callbacks below */
    if (events & (EPOLLERR | EPOLLHUP)) {
        c->flags |= CONN_PEER_CLOSED;
        ol_conn_abort(c);
    } else {
        if (events & EPOLLOUT) {
            int r = ol_conn_flush(c);
            if (r < 0)
                ol_conn_abort(c);
            else if (r == 1)
                drained(c);
        }
        if ((events & (EPOLLIN | EPOLLRDHUP)) && !(c->flags & CONN_CLOSED))
            on_readable(c);
    }
    ol_conn_decref(c);
}
