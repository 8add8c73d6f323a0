/*
 * conn.h -- the transport: one client connection's socket, buffers, TLS,
 * partial writes, lingering close and backpressure, and the server's list
 * of open connections. It knows nothing of HTTP, ASGI or WSGI: the bytes it
 * receives go to the connection's protocol (c->proto, a small vtable; h1.c
 * is the first), which it tells about input, EOF, drained output, timeouts
 * and the close.
 *
 * Ownership. An ol_conn is reference counted by hand: one reference while
 * it is open (held by the server's list), one per exchange that points to
 * it, one per holder (a pool thread serving it, the tick expiring it).
 * ol_conn_abort() closes the socket, tells the protocol, releases every
 * Python object and drops the list's reference; the struct is freed by
 * the last ol_conn_decref(), which needs no GIL.
 *
 * Threads. On the event loop everything runs on the loop's thread with the
 * GIL. In threaded mode (WSGI) a connection is held by one thread at a time
 * (CONN_HELD, under the list lock); the holder may block on it
 * (CONN_BLOCKING: writes wait for a slow client) and re-arms it when it
 * lets go. Plain-socket I/O needs no GIL; TLS, the protocol's callbacks and
 * anything touching Python objects do.
 *
 * Descriptors. c->fd is the connection's own: only ol_conn_abort() closes
 * it, after taking it out of the reactor's set (with a duplicate open
 * elsewhere, closing it alone would leave its registration in the epoll
 * set, reporting events for a closed descriptor). A holder may lend the
 * socket to the app (ol_conn_lend: a WSGI app that takes the connection
 * over for a WebSocket, as under gunicorn): the app gets a duplicate
 * descriptor, which is the app's to close and never enters the reactor;
 * while the socket is lent the transport does no I/O on it, and once it is
 * taken back a connection whose app may still hold that duplicate is shut
 * down before ours is closed, so the app's descriptor sees the end too.
 */
#ifndef OL_CONN_H
#define OL_CONN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ol_http.h"
#include "reactor.h"

typedef struct ol_server ol_server;
typedef struct ol_listener ol_listener;
typedef struct ol_req ol_req;
typedef struct ol_conn ol_conn;

/*
 * What a protocol implements; the transport calls it with the GIL held.
 * The connection may be closed by any callback (check CONN_CLOSED after).
 */
typedef struct ol_proto {
    const char *name;
    void (*on_data)(ol_conn *c); /* new input is in c->rbuf */
    void (*on_eof)(ol_conn *c,
                   int clean);        /* the client shut its side (clean) or the socket failed */
    void (*on_drained)(ol_conn *c);   /* all pending output went out */
    void (*on_close)(ol_conn *c);     /* the socket closed: let go of what it holds */
    int (*waiting)(const ol_conn *c); /* does c->deadline run now? */
    void (*on_timeout)(ol_conn *c);   /* ... and it passed */
} ol_proto;

/* ol_conn.flags */
#define CONN_READING     0x0001u /* wants input */
#define CONN_LENT        0x0002u /* the socket is lent to the app: no I/O of ours (ol_conn_lend) */
#define CONN_PEER_CLOSED 0x0004u /* the client shut down its side or vanished */
#define CONN_CLOSING     0x0008u /* no further input will be read but to drop it */
#define CONN_CLOSED      0x0010u /* socket closed, awaiting the last reference */
#define CONN_HANDSHAKE   0x0020u /* TLS handshake not finished */
#define CONN_HELD        0x0040u /* threaded: a pool thread or the tick holds it */
#define CONN_LINGER      0x0080u /* write side shut: draining input before close */
#define CONN_IDLE        0x0100u /* h1: between requests; no byte of the next head yet */
#define CONN_PROCESSING  0x0200u /* h1: inside ol_h1_process() */
#define CONN_PENDING     0x0400u /* queued for processing on the next loop turn */
#define CONN_BLOCKING    0x0800u /* its holder blocks on it: writes wait for the client */
#define CONN_CORKED      0x1000u /* small writes are gathered until ol_conn_uncork() */
#define CONN_SHARED      0x2000u /* the app may hold a duplicate descriptor: shut down at close */
#define CONN_ALPN_H2     0x4000u /* TLS: the client chose "h2" by ALPN */

struct ol_conn {
    ol_handle handle; /* in the reactor while open */
    int fd;
    int refs; /* atomic */
    unsigned flags;
    uint32_t events; /* the epoll interest set as last registered */
    uint8_t phase;   /* what it is doing, for the metrics (enum ol_phase) */
    const ol_proto *proto;
    ol_server *server;
    ol_listener *listener;
    struct ol_conn *prev, *next;  /* the server's list of open connections */
    struct ol_conn *pending_next; /* the server's queue of connections to process */

    /* Input received and not consumed. Allocated on demand and released when
     * empty between requests, so an idle connection holds no buffer. */
    char *rbuf;
    size_t rlen, rcap;

    /* Output the socket has not taken yet (a blocking holder waits instead). */
    char *wbuf;
    size_t woff, wlen, wcap;

    double deadline;      /* monotonic time the current wait for the client expires */
    double send_deadline; /* ... and the wait for it to take pending output */
    double send_limit;    /* ... which progress does not extend past this (closing) */
    ol_timer timer;       /* in the server's wheel: at or before the earlier of the two */
    uint16_t peer_port;
    uint8_t peer_family; /* AF_INET, AF_INET6 or AF_UNIX */
    uint8_t peer_addr[16];
    PyObject *client;  /* (host, port) or None, made at the first request */
    PyObject *tls;     /* ssl.SSLObject, for TLS listeners */
    PyObject *tls_in;  /* ssl.MemoryBIO: bytes from the socket */
    PyObject *tls_out; /* ssl.MemoryBIO: bytes to the socket */

    /* HTTP/1.1's state (h1.c). */
    ol_parser parser;
    int body_framing;      /* enum ol_framing */
    int body_done;         /* the whole body has been received (1 when none) */
    uint64_t body_left;    /* Content-Length bytes still to come */
    uint64_t body_total;   /* body bytes received for the current request */
    uint64_t discard_left; /* unread body bytes we still skip rather than close */
    ol_chunked *chunked;   /* while a chunked body is read, else NULL */
    unsigned requests;     /* requests served */
    ol_req *request;       /* the exchange in flight (a strong reference) */

    /* Threads waiting to hold it or for news of it (ol_conn_await), under
     * the list lock. */
    struct ol_conn_waiter *waiters;

    void *ws;         /* WebSocket's state once switched (websocket.c), else NULL */
    void *h2;         /* HTTP/2's state once switched (h2.c), else NULL */
    PyObject *driver; /* the ASGI interface's host task driver (asgi.c), or NULL */
};

/* Life cycle. ol_conn_new starts with the list's reference (the caller
 * registers it), speaking `proto`. */
ol_conn *ol_conn_new(ol_server *srv, ol_listener *lst, int fd, const struct sockaddr *peer,
                     socklen_t peerlen, const ol_proto *proto);
void ol_conn_incref(ol_conn *c);
void ol_conn_decref(ol_conn *c);
/* The client's address as (host, port), or None; borrowed, cached. GIL. */
PyObject *ol_conn_client(ol_conn *c);
/* What the connection is doing now (metrics.h's enum ol_phase): the
 * open-connections gauges follow. Its holder. */
void ol_conn_set_phase(ol_conn *c, int phase);
/* Close now; idempotent. GIL. */
void ol_conn_abort(ol_conn *c);
/* Stop reading; once output drains, shut the write side and linger,
 * dropping input, so the client reads our last response rather than a
 * reset its own unread bytes would cause. GIL. */
void ol_conn_close_gracefully(ol_conn *c);
/* While lingering or closing: drop what arrived. 1 while the client may
 * send more, 0 at EOF or on error. No GIL. */
int ol_conn_linger_read(ol_conn *c);

/* Input buffer. */
int ol_conn_reserve(ol_conn *c, size_t n);
void ol_conn_consume(ol_conn *c, size_t n);
void ol_conn_release_idle_buffers(ol_conn *c);
/* Receive into rbuf: bytes added, 0 at EOF, -1 for "try later", -2 on
 * error. Needs the GIL for TLS connections only. */
Py_ssize_t ol_conn_recv(ol_conn *c);

/* Output: 0, or -1 when the connection is gone. A blocking holder waits
 * (GIL released, up to the send timeout); anyone else sends what the socket
 * takes and buffers the rest for the reactor to flush. writev encrypts for
 * TLS; raw_writev writes bytes already in wire format. */
int ol_conn_raw_writev(ol_conn *c, const struct iovec *iov, int n);
int ol_conn_writev(ol_conn *c, const struct iovec *iov, int n);
int ol_conn_write(ol_conn *c, const char *data, size_t len);
/* Send buffered output: 1 when all went out, 0 when the socket is full,
 * -1 on error. */
int ol_conn_flush(ol_conn *c);
int ol_conn_wait_writable(ol_conn *c);
/* A blocking holder waits (GIL released) up to `timeout` seconds for input:
 * 0, or -1 when none came. */
int ol_conn_wait_readable(ol_conn *c, double timeout);
/* Gather small writes (up to 64 KiB) instead of sending each, then send
 * them in one call; uncorking may close the connection (a send error) or
 * find the output drained (the protocol is told). A blocking holder's
 * uncork waits for the client to take it all (GIL held, released while it
 * waits); so does a write that would pass the limit. */
void ol_conn_cork(ol_conn *c);
void ol_conn_uncork(ol_conn *c);
static inline size_t ol_conn_pending(const ol_conn *c)
{
    return c->wlen - c->woff;
}
/* Event loop: have the protocol process input already buffered on the
 * next loop turn (epoll will not announce it again: a response finished
 * after the app suspended, a reader that resumes), and the loop callback
 * that does it (Server._run_pending). */
void ol_conn_schedule(ol_conn *c);
PyObject *ol_conns_run_pending(ol_server *srv, PyObject *unused);
/*
 * Lend the socket to the app that takes the connection over (output
 * gathered before goes out first): a duplicate
 * descriptor (close-on-exec), which the caller hands on and never closes
 * once handed, and the socket made blocking -- the mode belongs to the
 * socket, so both descriptors share it. Until ol_conn_take_back() the
 * transport does no I/O on it. The holder only. Returns the descriptor,
 * or -1 with errno set.
 */
int ol_conn_lend(ol_conn *c);
/* The socket is the connection's again, non-blocking: a read of the app's
 * still blocked goes on, but the next fails rather than blocks. `kept`:
 * the app may hold its descriptor on, so the connection's close shuts the
 * socket down (closing ours alone would leave it open). Idempotent. */
void ol_conn_take_back(ol_conn *c, int kept);
/* Register what the connection waits for (see conn.c). */
void ol_conn_update_events(ol_conn *c);
/* Readiness from the reactor, on the event loop. */
void ol_conn_on_event(ol_conn *c, uint32_t events);

/* TLS (tls.c): like ol_conn_recv and ol_conn_writev, for a connection of
 * a TLS listener (set up at its first read). GIL. */
Py_ssize_t ol_tls_recv(ol_conn *c);
int ol_tls_writev(ol_conn *c, const struct iovec *iov, int n);

/* The server's list of open connections. */
int ol_conns_init(ol_server *srv, int threaded);
void ol_conns_fini(ol_server *srv);
/* The list's lock (threaded mode; a no-op otherwise). It also guards who
 * holds a connection, and the listeners' place in the set (dispatch.c).
 * A leaf lock but for the reactor's, taken inside it. */
void ol_conns_lock(ol_server *srv);
void ol_conns_unlock(ol_server *srv);
void ol_conn_register(ol_server *srv, ol_conn *c);
/* Hold the connections matching a test (skipping held and closed ones),
 * with a reference each: a PyMem array of *n, or NULL. */
ol_conn **ol_conns_claim(ol_server *srv, int (*test)(const ol_conn *), size_t *n);
/* Let go of what ol_conns_claim() returned. */
void ol_conns_release(ol_server *srv, ol_conn **list, size_t n);
/* A pool thread, the list lock held, takes the connection an event named
 * (NULL when another holder has it or it closed), and gives it back when
 * done. */
ol_conn *ol_conns_take_locked(void *object);
void ol_conns_give_back_locked(ol_conn *c);
/*
 * Sharing a connection among threads (threaded mode; HTTP/2, whose
 * streams' apps run on pool threads of their own): a thread that did not
 * get the connection from an event holds it only while it touches it,
 * never while it waits, so the others -- and the pool threads that serve
 * its events -- go on meanwhile. The GIL is held on entry and on return of
 * each, and released while they wait.
 *
 * ol_conn_hold() waits until nobody holds c and holds it: 0; -1 when c
 * closed (not held then). ol_conn_let_go() lets go of it, re-armed as a
 * pool thread lets go. ol_conn_await(), for a holder, lets go and waits
 * until the socket has input or room for pending output, until another
 * holder let go (it may have processed what the caller waits for), or for
 * `timeout` seconds (0: no limit), then holds c again: 1 (woken), 0 (the
 * time ran out), or -1 when c closed (not held then). The close of c wakes
 * every waiter.
 */
int ol_conn_hold(ol_conn *c);
void ol_conn_let_go(ol_conn *c);
int ol_conn_await(ol_conn *c, double timeout);
/* A thread that may have waited for a connection ends (its eventfd). */
void ol_conn_thread_exit(void);
/* Set the protocol's deadline (on the event loop, or by the connection's
 * holder in threaded mode; the timer follows). */
void ol_conn_set_deadline(ol_conn *c, double deadline);
/* Bound the wait for pending output at `until` however the client trickles
 * (a closing WebSocket's close frame queued behind output it does not
 * read). Event loop. */
void ol_conn_limit_send(ol_conn *c, double until);
/* The tick: end the waits whose deadline passed. GIL. */
void ol_conns_expire(ol_server *srv);
/* Close every connection; held ones are shut down for their holder to
 * close as it lets go. GIL. */
void ol_conns_abort_all(ol_server *srv);
/* Shut down (`how`: SHUT_RD, SHUT_RDWR) the sockets lent to apps now:
 * the reads of those apps return end-of-file, so their sessions end. */
void ol_conns_shut_lent(ol_server *srv, int how);

#endif /* OL_CONN_H */
