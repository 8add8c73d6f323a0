/*
 * server.h -- the Server object (server.c): configuration read once, the
 * listening sockets, and the state each module keeps on it -- the reactor
 * (reactor.h), the connection list, its lock and pending queue (conn.c), the bridge, the watchdog
 * -- each group commented with its owner. Also the dispatch of the reactor's events (dispatch.c).
 *
 * A Server lives for the whole worker. It owns the listeners (whose
 * sockets belong to Python), every connection, the app and the loop.
 */
#ifndef OL_SERVER_H
#define OL_SERVER_H

#include <pthread.h>

#include "conn.h"
#include "exchange.h"
#include "metrics.h"
#include "reactor.h"
#include "state.h"

typedef struct ol_pool ol_pool;

typedef struct ol_listener {
    ol_handle handle; /* in the reactor while accepting, else 0 */
    int fd;
    int is_unix;
    PyObject *server_addr; /* scope["server"]: (host, port), or None */
    PyObject *ssl_context; /* ssl.SSLContext or NULL */
    PyObject *sock;        /* the Python socket object, kept alive */
} ol_listener;

/* Internal outcomes beside the wire layer's OL_E* codes. */
#define OL_ETOO_LARGE    (-1000) /* body beyond --limit-request-body */
#define OL_ETIMEOUT      (-1001) /* the client stopped sending the body */
#define OL_EDISCONNECTED (-1002) /* the client went away */
#define OL_EBODY_CUT     (-1003) /* the client closed its side before the body ended: 400 */

enum ol_interface { OL_WSGI = 1, OL_ASGI2 = 2, OL_ASGI3 = 3 };

typedef struct ol_config {
    ol_limits limits;
    uint64_t max_body;                /* --limit-request-body, 0 = unlimited */
    double keep_alive;                /* --timeout-keep-alive */
    double header_timeout;            /* total time allowed to receive a head */
    double body_timeout;              /* longest wait for more body bytes */
    double send_timeout;              /* longest wait for the client to take output */
    unsigned max_keep_alive_requests; /* 0 = unlimited */
    unsigned long long max_requests;  /* --max-requests: then stop taking requests; 0 = never */
    size_t limit_concurrency;         /* --limit-concurrency: 503 beyond; 0 = no limit */
    int server_header;
    int date_header;
    int threads;             /* WSGI pool size */
    int multiprocess;        /* wsgi.multiprocess */
    size_t write_high_water; /* ASGI send() waits above this many pending bytes */
    size_t write_low_water;  /* ... until they drop below this */
    size_t read_high_water;  /* stop reading input the app does not consume */
    /* WebSockets (--ws*). */
    int ws;                  /* accept upgrades: 1 (auto, on), 0 (off: served as plain HTTP) */
    size_t ws_max_size;      /* largest message, after decompression */
    size_t ws_max_queue;     /* messages buffered for the app before reading pauses */
    double ws_ping_interval; /* 0 = no keepalive pings */
    double ws_ping_timeout;  /* for the pong and the closing handshake; 0 = no limit */
    int ws_deflate;          /* accept permessage-deflate offers */
    const char *health_path; /* --health-path, answered by the core; NULL = none */
    size_t health_path_len;
    /* HTTP/2 (--http, --h2-*). */
    int http;                  /* enum ol_http_mode: what --http asked for */
    int h2;                    /* HTTP/2 is served (an ASGI app, and --http not 1) */
    uint32_t h2_max_streams;   /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t h2_window;        /* SETTINGS_INITIAL_WINDOW_SIZE: per stream */
    uint32_t h2_max_frame;     /* SETTINGS_MAX_FRAME_SIZE */
    size_t h2_max_header_list; /* SETTINGS_MAX_HEADER_LIST_SIZE: larger heads get 431 */
    double h2_ping_interval;   /* keepalive PING after this long without input; 0 = none */
} ol_config;

/* --http: auto (HTTP/1.1, and HTTP/2 by ALPN or prior knowledge), 1, 2. */
enum ol_http_mode { OL_HTTP_AUTO, OL_HTTP_1, OL_HTTP_2 };

struct ol_server {
    PyObject_HEAD
    ol_state *state;
    ol_config cfg;
    int interface;                  /* enum ol_interface, decided at init */
    int threaded;                   /* WSGI: pool threads hold connections (conn.h) */
    const ol_handler *handler;      /* the interface's side of exchanges (exchange.h) */
    const ol_proto *first_protocol; /* what accepted connections speak first (h1.h) */
    int draining;                   /* no new connections; responses close theirs */
    int shut;                       /* shutdown() ran */
    int closed;
    size_t active; /* requests in flight */
    unsigned long long total_requests;
    ol_date_cache date;
    ol_meter meter;         /* the counters (metrics.h) */
    Py_buffer metrics_view; /* the shared block they live in, when given */
    PyObject *health_path;  /* bytes backing cfg.health_path, or NULL */
    double now;             /* monotonic seconds, refreshed per wake-up (GIL) */

    /* The epoll set, its handles and the tick (reactor.c). */
    ol_reactor reactor;

    /* Listening sockets and accepting (dispatch.c). */
    ol_listener *listeners;
    int nlisteners;
    int accept_paused;          /* out of fds: out of the set until the next tick (conns.lock) */
    double accept_pause_logged; /* when a pause was last logged */

    /* The open connections (conn.c). */
    struct {
        ol_conn *head;
        size_t n;
        pthread_mutex_t lock; /* threaded mode: see conn.h */
        int lock_ready;
        ol_wheel wheel;        /* their timers (guarded by the lock) */
        ol_conn *pending;      /* event loop: to process on the next loop turn */
        PyObject *run_pending; /* bound _run_pending, handed to loop.call_soon */
        int scheduled;
        PyObject *last_host; /* the host (str) of the last client address made (GIL) */
    } conns;

    /* HTTP/1.1 on the event loop (h1.c). */
    struct {
        ol_header *fields; /* header array for parsing on the loop thread */
    } h1;

    /* The app and what requests are built from. */
    PyObject *app;
    PyObject *loop;
    PyObject *create_future; /* loop.create_future */
    PyObject *base_context;  /* contextvars context at start(); each request gets a copy */
    PyObject *task_context;  /* the context every host task is created with (driver.c) */
    PyObject *root_path;     /* str */
    PyObject *root_path_bytes;
    PyObject *asgi_info;      /* scope["asgi"] */
    PyObject *lifespan_state; /* dict copied into each scope, or NULL */
    PyObject *on_error;       /* on_error(level, message, exc) */
    PyObject *on_access;      /* on_access(request), or NULL */
    PyObject *errors_stream;  /* wsgi.errors */
    PyObject *proxy_trusted;  /* proxy(client, xff, xfp) -> (client, scheme) | None, or NULL */
    PyObject *idle_drivers;   /* ASGI: ready drivers no connection holds (asgi.c) */

    ol_pool *pool; /* WSGI threads (pool.c) */

    /* Calls from threads to coroutines on the loop (bridge.c). */
    struct {
        int fd;
        int lock_ready;
        pthread_mutex_t lock;
        struct ol_call *queue, *tail, *cancels;
        PyObject *drivers; /* host task drivers for bridged calls */
    } bridge;
    unsigned long loop_thread;
    double async_timeout; /* --timeout-async; 0 = none */
    struct ol_gate *gate; /* the loop's gate (gate.c), or NULL: steps run on the loop's thread */

    /* The loop-stall watchdog (watchdog.c). */
    struct {
        int fd;
        double beat;        /* when the loop last proved alive */
        PyObject *running;  /* the driver whose coroutine the loop is running (borrowed) */
        double threshold;   /* --loop-stall-warning; 0 = off */
        PyObject *on_stall; /* on_stall(seconds, driver, loop_thread_id) */
        pthread_t thread;
        int started, stop;
    } watch;
};

/* srv->now is written and read with the GIL held (pool threads take a
 * clock reading of their own when they have no GIL). */
static inline void ol_server_set_now(ol_server *srv)
{
    srv->now = ol_now();
}

/* Pool threads read this without the GIL (accepting). */
static inline int ol_server_is_draining(ol_server *srv)
{
    return __atomic_load_n(&srv->draining, __ATOMIC_ACQUIRE);
}

/* Count into the server's metrics block (metrics.h): a counter or gauge
 * word of ol_metrics, by name. Any thread. */
#define OL_COUNT(srv, field, v) ol_meter_add(&(srv)->meter, &(srv)->meter.m->field, (uint64_t)(v))

extern PyType_Spec ol_server_spec;

/* Dispatch of the reactor's events (dispatch.c). */
/* Accept what a listener has; 0 or more connections. Any thread. */
int ol_accept(ol_server *srv, ol_listener *lst);
/* Accept everything already queued on the listeners, draining or not
 * (shutdown: left queued, it would be reset). */
void ol_accept_queued(ol_server *srv);
/* The tick: expired waits end, accepting resumes after a pause, the Date
 * cache refreshes. GIL. */
void ol_tick(ol_server *srv);
/* The listening sockets in (1) or out of (0) the reactor's set. */
void ol_watch_listeners(ol_server *srv, int on);
/* Stop accepting for good (shutdown, --max-requests). GIL. */
void ol_stop_accepting(ol_server *srv);
/* A response is complete: counted, and at --max-requests accepting stops. */
void ol_count_response(ol_server *srv);
/* Server._on_ready: every event of one wake-up (the event loop). */
PyObject *ol_dispatch_ready(ol_server *srv, PyObject *unused);

#endif /* OL_SERVER_H */
