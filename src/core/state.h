/*
 * state.h -- the module state (interned names, types, asyncio functions),
 * and the leaves every file of the binding layer uses: the clock and
 * deadlines, the pending exception as one object, the common header
 * names table, small dict and future helpers (util.c), and logging
 * through the Python side (log.c). Nothing here calls up.
 */
#ifndef OL_STATE_H
#define OL_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "ol_http.h"

typedef struct ol_server ol_server;

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
    E_GUNICORN_SOCKET,
    /* values */
    E_HTTP_1_1,
    E_HTTP_1_0,
    E_HTTP_2,
    E_V_HTTP,
    E_V_HTTPS,
    E_V_80,
    E_V_443,
    E_V_EMPTY,
    E_V_LOCALHOST,
    E_V_WSGI_VERSION,
    OL_ENV_COUNT
};

#define OL_HEADER_SLOTS 128 /* a power of two, over twice the common header names */

typedef struct ol_state {
    PyTypeObject *server_type;
    PyTypeObject *request_type;
    PyTypeObject *driver_type;
    PyTypeObject *ready_type;
    PyTypeObject *receive_type; /* the app's receive() and send() (asgi.c) */
    PyTypeObject *send_type;
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
    PyObject *socket_type;         /* socket.socket, looked up at the first socket lent (wsgi.c) */

    /* Interned keys and values of ASGI messages and scopes. */
    PyObject *s_type, *s_body, *s_more_body, *s_status, *s_headers;
    PyObject *s_http_request, *s_http_disconnect, *s_http_response_start, *s_http_response_body;
    PyObject *s_http, *s_https, *s_asgi, *s_http_version, *s_method, *s_scheme, *s_path,
        *s_raw_path, *s_query_string, *s_root_path, *s_client, *s_server, *s_state;
    PyObject *s_1_0, *s_1_1, *s_2, *s_empty, *b_empty;
    /* ... of the websocket scope and its messages. */
    PyObject *s_websocket, *s_ws_connect, *s_ws_accept, *s_ws_receive, *s_ws_send, *s_ws_disconnect,
        *s_ws_close, *s_ws_response_start, *s_ws_response_body, *s_text, *s_bytes, *s_code,
        *s_reason, *s_subprotocol, *s_subprotocols, *s_extensions, *s_ws, *s_wss,
        *s_ws_http_response;
    /* ... of http.response.trailers (HTTP/2). */
    PyObject *s_trailers, *s_more_trailers, *s_http_response_trailers;
    /* ... and of the host tasks' creation (driver.c). */
    PyObject *s_context, *s_create_task;
    /* ... and of the bridge's attribute lookups. */
    PyObject *s_thread_id, *s_ready, *s_scheduled, *s_debug, *s_write_to_self, *s_thread_executor,
        *s_set_running_or_notify_cancel, *s_set_result, *s_set_exception;
    PyObject *methods[16];      /* the common methods as str, by enum ol_method */
    PyObject *header_names[48]; /* lower-cased bytes of common header names */
    PyObject *header_env[48];   /* ... and their environ keys (HTTP_HOST, ...) */
    PyObject *header_pairs[48]; /* ... the last (name, value) made of each (asgi.c), or NULL */
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

/* ------------------------------------------------------------------------ */
/* Time (util.c)                                                            */

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

/* ------------------------------------------------------------------------ */
/* Logging (log.c)                                                          */

/* Log through the on_error hook; consumes the current exception, if any. */
void ol_log_error(ol_server *srv, const char *message);
void ol_log_debug(ol_server *srv, const char *message);
void ol_log_info(ol_server *srv, const char *message);
/* Log at debug level with an exception object (borrowed), which stays set nowhere. */
void ol_log_debug_exc(ol_server *srv, const char *message, PyObject *exc);

#endif /* OL_STATE_H */
