/*
 * core.h -- what the files of the binding layer share.
 *
 * Objects and who owns what:
 *
 *   Server      a Python object (oneloop._core.Server). Owns the epoll set,
 *               the listening sockets, every connection, the app and the
 *               configuration. Lives for the whole worker.
 *   ol_conn     a plain C struct per TCP/UNIX connection. Reference counted
 *               by hand: one reference while the socket is open (held by
 *               the server's list), one per request object that points to
 *               it. Freed when the count drops to zero; every Python object
 *               it holds is released when it closes.
 *   Request     a Python object per HTTP request (oneloop._core.Request):
 *               the ASGI receive/send pair or the WSGI start_response and
 *               wsgi.input. Holds one reference to its connection.
 *
 * Threads: in ASGI mode everything runs on the event loop's thread. In WSGI
 * mode a pool of threads serves connections directly (pool.c); a connection
 * belongs to exactly one thread at a time, so its fields need no lock. The
 * GIL guards every Python object and the Date cache; the pool's mutex guards
 * the connection list and the hand-over of connections between threads.
 */
#ifndef OL_CORE_H
#define OL_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ol_http.h"
#include "reactor.h"

/* ------------------------------------------------------------------------ */
/* Module state                                                             */

/* Interned WSGI environ keys and constant values (ol_state.env). */
enum ol_env {
    E_REQUEST_METHOD,
    E_SCRIPT_NAME,
    E_PATH_INFO,
    E_QUERY_STRING,
    E_RAW_URI,
    E_SERVER_PROTOCOL,
    E_SERVER_NAME,
    E_SERVER_PORT,
    E_REMOTE_ADDR,
    E_REMOTE_PORT,
    E_CONTENT_TYPE,
    E_CONTENT_LENGTH,
    E_HTTP_COOKIE,
    E_WSGI_VERSION,
    E_WSGI_URL_SCHEME,
    E_WSGI_INPUT,
    E_WSGI_ERRORS,
    E_WSGI_MULTITHREAD,
    E_WSGI_MULTIPROCESS,
    E_WSGI_RUN_ONCE,
    E_WSGI_INPUT_TERMINATED,
    E_WSGI_FILE_WRAPPER,
    /* values */
    E_HTTP_1_1,
    E_HTTP_1_0,
    E_V_HTTP,
    E_V_HTTPS,
    E_V_80,
    E_V_443,
    E_V_EMPTY,
    E_V_LOCALHOST,
    E_V_WSGI_VERSION,
    OL_ENV_COUNT
};

typedef struct ol_server ol_server;

#define OL_HEADER_SLOTS 128 /* a power of two, over twice the common header names */

typedef struct ol_state {
    PyTypeObject *server_type;
    PyTypeObject *request_type;
    PyTypeObject *driver_type;
    PyTypeObject *ready_type;
    PyTypeObject *input_type;
    PyTypeObject *file_wrapper_type;
    PyTypeObject *call_type;
    PyTypeObject *gate_type;
    PyTypeObject *handback_type;
    PyObject *done;                /* awaitable that completes at once with None */
    PyObject *enter_task;          /* asyncio.tasks._enter_task */
    PyObject *leave_task;          /* asyncio.tasks._leave_task */
    PyObject *get_running_loop;    /* asyncio.events._get_running_loop */
    PyObject *set_running_loop;    /* asyncio.events._set_running_loop */
    PyObject *cancelled_error;     /* asyncio.CancelledError */
    PyObject *future_type;         /* concurrent.futures.Future */
    PyObject *executor_var;        /* ContextVar: the ThreadExecutor of the call's thread */
    PyObject *client_disconnected; /* oneloop._core.ClientDisconnected (an OSError) */
    PyObject *ssl_want_read;       /* ssl.SSLWantReadError, looked up at the first TLS connection */
    PyObject *ssl_memory_bio;      /* ssl.MemoryBIO, likewise */

    /* Interned keys and values of ASGI messages and scopes. */
    PyObject *s_type, *s_body, *s_more_body, *s_status, *s_headers;
    PyObject *s_http_request, *s_http_disconnect, *s_http_response_start, *s_http_response_body;
    PyObject *s_http, *s_https, *s_asgi, *s_http_version, *s_method, *s_scheme, *s_path,
        *s_raw_path, *s_query_string, *s_root_path, *s_client, *s_server, *s_state;
    PyObject *s_1_0, *s_1_1, *s_empty, *b_empty;
    /* ... and of the bridge's attribute lookups. */
    PyObject *s_thread_id, *s_ready, *s_scheduled, *s_debug, *s_write_to_self, *s_thread_executor,
        *s_set_running_or_notify_cancel, *s_set_result, *s_set_exception;
    PyObject *methods[16];      /* the common methods as str, by enum ol_method */
    PyObject *header_names[48]; /* lower-cased bytes of common header names */
    PyObject *header_env[48];   /* ... and their environ keys (HTTP_HOST, ...) */
    int n_header_names;
    int16_t header_slots[OL_HEADER_SLOTS]; /* hash table: index + 1 into header_names */
    PyObject *env[OL_ENV_COUNT];           /* interned environ keys and constant values */
} ol_state;

/* The module state behind one of the module's types (each is made with
 * PyType_FromModuleAndSpec, so no module lookup is needed). */
static inline ol_state *ol_state_of_type(PyTypeObject *type)
{
    return PyType_GetModuleState(type);
}

/* The index of a common header name in st->header_names (matched
 * case-insensitively, one hash and a probe or two), or -1. */
int ol_common_header(ol_state *st, ol_span name);
/* A new future of the server's loop (loop.create_future()). */
PyObject *ol_new_future(ol_server *srv);
/* d[key] = value, stealing value; a NULL value (a failed constructor) is
 * passed on as -1 with its exception. */
int ol_dict_put(PyObject *d, PyObject *key, PyObject *value);
/* The table's hash: case-insensitive FNV-1a. */
uint32_t ol_header_hash(const char *name, size_t len);

/* The pending exception as one object, taken (a new reference or NULL),
 * and set back (the reference is stolen; NULL sets nothing): CPython 3.12's
 * PyErr_GetRaisedException/PyErr_SetRaisedException, also on 3.11. */
PyObject *ol_err_take(void);
void ol_err_restore(PyObject *exc);

typedef struct ol_listener {
    ol_handle handle; /* in the reactor while accepting, else 0 */
    int fd;
    int is_unix;
    PyObject *server_addr; /* scope["server"]: (host, port), or None */
    PyObject *ssl_context; /* ssl.SSLContext or NULL */
    PyObject *sock;        /* the Python socket object, kept alive */
} ol_listener;

typedef struct ol_server ol_server;
typedef struct ol_req ol_req;
typedef struct ol_pool ol_pool;

/* Internal outcomes beside the wire layer's OL_E* codes. */
#define OL_ETOO_LARGE    (-1000) /* body beyond --limit-request-body */
#define OL_ETIMEOUT      (-1001) /* the client stopped sending the body */
#define OL_EDISCONNECTED (-1002) /* the client went away */

#include "conn.h"
#include "exchange.h"
#include "h1.h"

/* ------------------------------------------------------------------------ */
/* Server                                                                   */

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
    int server_header;
    int date_header;
    int threads;             /* WSGI pool size */
    int multiprocess;        /* wsgi.multiprocess */
    size_t write_high_water; /* ASGI send() waits above this many pending bytes */
    size_t write_low_water;  /* ... until they drop below this */
    size_t read_high_water;  /* stop reading input the app does not consume */
} ol_config;

struct ol_server {
    PyObject_HEAD
    ol_state *state;
    ol_config cfg;
    int interface;
    ol_reactor reactor;
    const ol_handler *handler; /* the interface's side of exchanges */
    int threaded;              /* WSGI: pool threads hold connections (conn.h) */
    pthread_mutex_t conns_lock;
    int conns_lock_ready;
    int accept_paused;                                             /* guarded by conns_lock */
    double accept_pause_logged; /* when a pause was last logged */ /* out of fds: listeners out of
                                                                      the set until the next tick */
    int draining; /* no new connections; responses close theirs */
    int shut;     /* shutdown() ran */
    int closed;

    ol_listener *listeners;
    int nlisteners;
    ol_conn *conns; /* open connections */
    size_t nconns;
    size_t active; /* requests in flight */
    unsigned long long total_requests;
    ol_header *fields;     /* header array for parsing on the loop thread */
    ol_conn *pending;      /* connections to process on the next loop turn */
    PyObject *run_pending; /* bound _run_pending, handed to loop.call_soon */
    int pending_scheduled;

    PyObject *app;
    PyObject *loop;
    PyObject *create_future; /* loop.create_future */
    PyObject *base_context;  /* contextvars context at start(); each request gets a copy */
    PyObject *root_path;     /* str */
    PyObject *root_path_bytes;
    PyObject *asgi_info;      /* scope["asgi"] */
    PyObject *lifespan_state; /* dict copied into each scope, or NULL */
    PyObject *on_error;       /* on_error(level, message, exc) */
    PyObject *on_access;      /* on_access(request), or NULL */
    PyObject *errors_stream;  /* wsgi.errors */
    PyObject *proxy_trusted;  /* proxy(client, xff, xfp) -> (client, scheme) | None, or NULL */

    ol_date_cache date;
    double now;    /* monotonic seconds, refreshed per wake-up */
    ol_pool *pool; /* WSGI threads */

    /* The bridge (bridge.c): calls from threads to coroutines on the loop. */
    int bridgefd;
    int bridge_lock_ready;
    pthread_mutex_t bridge_lock;
    struct ol_call *bridge_queue, *bridge_queue_tail, *bridge_cancels;
    PyObject *bridge_drivers; /* host task drivers for bridged calls */
    PyObject *idle_drivers;   /* ASGI: ready drivers no connection holds (asgi.c) */
    unsigned long loop_thread;
    double async_timeout; /* --timeout-async; 0 = none */
    struct ol_gate *gate; /* the loop's gate (gate.c), or NULL: steps run on the loop's thread */

    /* The loop-stall watchdog (watchdog.c). */
    int beatfd;
    double loop_beat;       /* when the loop last proved alive */
    PyObject *running;      /* the driver whose coroutine the loop is running (borrowed) */
    double stall_threshold; /* --loop-stall-warning; 0 = off */
    PyObject *on_stall;     /* on_stall(seconds, driver, loop_thread_id) */
    pthread_t watch_thread;
    int watch_started, watch_stop;
};

double ol_now(void);

/* A deadline `timeout` seconds after `now`; a timeout of 0 means no limit
 * (the deadline never comes). Every timeout of the configuration means the
 * same by 0, whichever interface or wait it applies to. */
static inline double ol_deadline(double now, double timeout)
{
    return timeout > 0 ? now + timeout : HUGE_VAL;
}

/* Milliseconds for poll() until `timeout` seconds pass: -1 for no limit (0),
 * at least 1 for any positive timeout, and never past INT_MAX. */
static inline int ol_poll_ms(double timeout)
{
    if (timeout <= 0)
        return -1;
    double ms = timeout * 1000.0 + 1.0;
    return ms >= (double)INT_MAX ? INT_MAX : (int)ms;
}

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
/* Log through the on_error hook; consumes the current exception, if any. */
void ol_log_error(ol_server *srv, const char *message);
void ol_log_debug(ol_server *srv, const char *message);
void ol_log_info(ol_server *srv, const char *message);
/* Log at debug level with an exception object (borrowed), which stays set nowhere. */
void ol_log_debug_exc(ol_server *srv, const char *message, PyObject *exc);
/* Dispatch of the reactor's events (dispatch.c). */
/* Accept what a listener has; 0 or more connections. Any thread. */
int ol_accept(ol_server *srv, ol_listener *lst);
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
extern PyType_Spec ol_server_spec;

/* ------------------------------------------------------------------------ */
/* Targets (target.c)                                                       */

typedef struct ol_target {
    ol_span path;  /* never empty: "/" for an absolute-form target without one */
    ol_span query; /* after '?', before '#' */
} ol_target;

void ol_split_target(ol_span target, ol_target *out);
PyObject *ol_decode_path(ol_server *srv, ol_span path);        /* ASGI path, with root path */
PyObject *ol_decode_path_latin1(ol_server *srv, ol_span path); /* WSGI PATH_INFO */
PyObject *ol_raw_path(ol_server *srv, ol_span path);
int ol_apply_proxy_headers(ol_server *srv, ol_req *r, PyObject *scope, PyObject *client_key,
                           PyObject *scheme_key);
int ol_wsgi_proxy_headers(ol_server *srv, ol_req *r, PyObject *environ);

/* ------------------------------------------------------------------------ */
/* ASGI (asgi.c), WSGI (wsgi.c) and the WSGI pool (pool.c)                  */

/* Host tasks (driver.c). */
typedef struct ol_driver ol_driver;
typedef void (*ol_done_fn)(PyObject *owner, PyObject *result, PyObject *exc);
extern PyType_Spec ol_driver_spec;
ol_driver *ol_driver_new(ol_server *srv);
int ol_driver_ready(const ol_driver *d);
void ol_driver_release(ol_driver *d);
int ol_driver_start(ol_driver *d, PyObject *coro, PyObject *context, ol_done_fn done,
                    PyObject *owner);
void ol_driver_cancel(ol_driver *d);

int ol_asgi_init_types(PyObject *module, ol_state *st);
void ol_asgi_close(ol_server *srv);

int ol_wsgi_init_types(PyObject *module, ol_state *st);
/* Read the rest of the request's body into memory (up to a cap) so code on
 * the loop thread can read it without waiting for the client. */
int ol_wsgi_buffer_body(ol_req *r);
extern __thread ol_req *ol_current_request; /* the WSGI request this thread serves */

/* The watchdog (watchdog.c). */
int ol_watch_start(ol_server *srv);
void ol_watch_stop(ol_server *srv);
PyObject *ol_watch_beat(ol_server *srv, PyObject *unused);

/* The loop gate (gate.c). */
typedef struct ol_gate ol_gate;
extern PyType_Spec ol_gate_spec;
/* Take the gate if it is open and the loop's thread does not wait at it: 1 if taken. */
int ol_gate_try_take(ol_gate *g);
void ol_gate_give(ol_gate *g);
/* The thread that holds the gate (runs the loop's code), or 0. */
unsigned long ol_gate_holder(ol_gate *g);

/* The bridge (bridge.c). */
extern PyType_Spec ol_call_spec;
int ol_bridge_open(ol_server *srv);
void ol_bridge_close(ol_server *srv);
PyObject *ol_bridge_run(ol_server *srv, PyObject *unused);
PyObject *ol_bridge_call(ol_server *srv, PyObject *const *args, Py_ssize_t nargs);

/* Sync work handed back to a thread waiting on the bridge (handback.c). */
typedef struct ol_handback ol_handback;
extern PyType_Spec ol_handback_spec;
/* The calling thread's executor (a new reference, made on first use), or NULL. */
ol_handback *ol_handback_of_thread(ol_state *st);
int ol_handback_fd(ol_handback *h); /* the eventfd its thread waits on */
void ol_handback_open(ol_handback *h);
void ol_handback_close(ol_handback *h);
void ol_handback_run_pending(ol_handback *h);
PyObject *ol_handback_thread(PyObject *module, PyObject *unused);

void ol_pool_wake(ol_server *srv);
/* At close: 1 if pool threads still run, in which case the last of them
 * closes the reactor as it leaves; 0 if the caller must close it. */
int ol_pool_defer_reactor_close(ol_server *srv);
int ol_pool_start(ol_server *srv);
int ol_pool_stop(ol_server *srv);
void ol_pool_free(ol_server *srv);
PyObject *ol_pool_thread(ol_server *srv, PyObject *unused);

#endif /* OL_CORE_H */
