/*
 * exchange.h -- one request and its response (exchange.c), what the
 * interface adapters (asgi.c, wsgi.c) work with, and the handler through
 * which a protocol hands exchanges to the interface.
 *
 * An exchange (oneloop._core.Request, ol_req) is a Python object holding a
 * counted reference to its connection until it is detached (the response
 * completed, or the connection closed). The protocol holds one reference
 * while the exchange is its connection's current one (c->request).
 * What a response says is decided here (exchange.c): its status and
 * headers, which body it may have and the Content-Length that says so; how
 * it goes on the wire is the carrying protocol's (ol_carrier below).
 */
#ifndef OL_EXCHANGE_H
#define OL_EXCHANGE_H

#include "conn.h"

/*
 * The interface's side of exchanges, chosen once per server. All calls
 * with the GIL held.
 */
typedef struct ol_handler {
    /* Build what the app gets (scope, environ) from the head, while its
     * bytes are still in the buffer: 0, or -1 with an exception. */
    int (*prepare)(ol_req *r, const ol_request *head);
    /* Run the app for the prepared exchange, now c->request. */
    void (*run)(ol_req *r);
    /* Drop the caller's reference (after run, or when prepare failed). */
    void (*release)(ol_req *r);
    void (*on_body)(ol_req *r);       /* more body bytes are buffered */
    void (*on_disconnect)(ol_req *r); /* the client is gone */
    void (*on_eof)(ol_req *r);        /* the client shut its side after the body */
    void (*on_drain)(ol_req *r);      /* pending output went out */
    /* Does the exchange wait for the client (body bytes), so that the
     * connection's deadline runs? */
    int (*waits_for_client)(const ol_req *r);
    /* WebSocket sessions (websocket.h); NULL for an interface without
     * them. A whole message: 0, 1 when the interface's queue is now full
     * (reading pauses until ol_ws_resume), -1 on error. */
    int (*ws_message)(ol_req *r, int text, const char *data, size_t len);
    /* The session is over, with the client's close code (1005: none), the
     * one the server closed with, or 1006 (connection lost); told once. */
    void (*ws_closed)(ol_req *r, int code, const char *reason, size_t reason_len);
    /* The connection closed: the session is over (logged like a response);
     * takes the protocol's reference to r. */
    void (*ws_end)(ol_req *r);
    void (*on_idle)(ol_conn *c);  /* no exchange left on c for now; may be NULL */
    void (*on_close)(ol_conn *c); /* c closes; may be NULL */
} ol_handler;

extern const ol_handler ol_asgi_handler;
extern const ol_handler ol_wsgi_handler;

/*
 * The protocol's side of the exchanges it carries (h1_response.c for
 * HTTP/1.1): how a response goes on the wire, where the request body comes
 * from, and what becomes of the connection when an exchange ends. The
 * exchange decides what is sent (status, headers, the length the body may
 * have); the carrier how. All calls with the GIL held.
 */
typedef struct ol_carrier {
    /* The head on the first call (status, headers and the length rules
     * already applied), then a piece of the body, already cut to what may
     * be sent; more == 0 ends the body. 0, or -1 when the connection is
     * gone. Sets REQ_HEAD_SENT. */
    int (*send)(ol_req *r, const char *data, size_t len, int more);
    /* The exchange is over (response complete; reuse == 0: the app took
     * the connection over): let go of it. 1, or 0 if the protocol no longer
     * held it (its connection closed meanwhile). */
    int (*release)(ol_req *r, int reuse);
    /* Let go of a failed exchange: answered with `status` and `text` if no
     * head was sent (status 0: never), else its response is cut. */
    int (*refuse)(ol_req *r, int status, const char *text);
    /* The body bytes at hand as one bytes object in *out (NULL: none);
     * 1 when the body is complete, 0 when more is to come, or a negative
     * OL_E* / OL_ETOO_LARGE. */
    int (*take_body)(ol_req *r, PyObject **out);
    /* "100 Continue" if owed, when the body is first asked for: 0, or -1. */
    int (*send_continue)(ol_req *r);
    /* Bytes of r's response queued and not yet on the wire: an ASGI
     * send() waits above the high-water mark, until on_drain. */
    size_t (*pending)(const ol_req *r);
    /* A blocking holder (a WSGI thread) waits for more of the body, the
     * GIL released while it waits: 0 when take_body may have more, or a
     * negative OL_E* (timeout, client gone, body cut). */
    int (*await_body)(ol_req *r);
    /* The response ends with trailer fields (a list of (bytes, bytes)),
     * after a body sent with more != 0; NULL where the protocol has none
     * to offer. 0, or -1 when the connection is gone. */
    int (*send_trailers)(ol_req *r, PyObject *trailers);
} ol_carrier;

/* What refuse() did. */
#define OL_REFUSE_NOT_HELD 0
#define OL_REFUSE_ANSWERED 1
#define OL_REFUSE_CUT      2

extern const ol_carrier ol_h1_carrier;
extern const ol_carrier ol_h2_carrier;

/* ol_req.flags */
#define REQ_HEAD         0x00001u /* HEAD: the response has no body on the wire */
#define REQ_KEEP_ALIVE   0x00002u /* the connection may persist after it */
#define REQ_STARTED      0x00004u /* status and headers taken from the app */
#define REQ_HEAD_SENT    0x00008u /* response head written */
#define REQ_COMPLETE     0x00010u /* response complete */
#define REQ_CHUNKED      0x00020u /* the response body is chunked */
#define REQ_BODY_DONE    0x00040u /* the last body message went to the app */
#define REQ_CONTINUE     0x00080u /* 100 Continue owed on the first body read */
#define REQ_DISCONNECTED 0x00100u /* the client went away */
#define REQ_HAS_LENGTH   0x00200u /* Content-Length known */
#define REQ_HTTP10       0x00400u
#define REQ_LOGGED       0x00800u  /* its access-log line is written */
#define REQ_POSTED       0x01000u  /* WSGI over HTTP/2: its app runs as a pool job (wsgi.h) */
#define REQ_APP_CHUNKED  0x02000u  /* the app asked for chunked coding */
#define REQ_APP_DATE     0x04000u  /* the app set Date */
#define REQ_APP_SERVER   0x08000u  /* the app set Server */
#define REQ_NO_BODY      0x10000u  /* nothing of the body goes on the wire */
#define REQ_ADDED_LENGTH 0x20000u  /* the server writes Content-Length */
#define REQ_OVERRUN      0x40000u  /* the app wrote past its Content-Length */
#define REQ_WEBSOCKET    0x80000u  /* a WebSocket handshake (websocket.h) */
#define REQ_HTTP2        0x100000u /* a stream of an HTTP/2 connection (h2.h) */
#define REQ_TRAILERS     0x200000u /* ASGI: trailers follow the body (http.response.trailers) */
#define REQ_BODY_ENDED   0x400000u /* ... and the body has ended: trailers are due */

struct ol_req {
    PyObject_HEAD
    ol_conn *conn;             /* counted reference; NULL once detached */
    ol_server *server;         /* strong */
    const ol_carrier *carrier; /* the protocol that carries it */
    unsigned flags;
    int status;
    int error_status;         /* status for a failed request, when not 500 */
    PyObject *reason;         /* WSGI: the app's reason phrase (bytes) */
    PyObject *headers;        /* response headers: list of (bytes, bytes) */
    PyObject *trailers;       /* response trailers gathered so far, or NULL */
    uint64_t content_length;  /* when REQ_HAS_LENGTH */
    uint64_t sent;            /* body bytes written */
    double started;           /* monotonic time the head was complete */
    int32_t stream_id;        /* HTTP/2: the stream carrying it */
    int method_id;            /* enum ol_method (ol_http.h) */
    PyObject *method;         /* str */
    PyObject *target;         /* bytes, as received */
    PyObject *client;         /* (host, port) or None */
    PyObject *req_headers;    /* ASGI: scope["headers"] */
    PyObject *receive_waiter; /* ASGI: Future of a pending receive() */
    PyObject *send_waiter;    /* ASGI: Future of a send() held by flow control */
    PyObject *scope;          /* ASGI: between prepare and run */
    PyObject *environ;        /* WSGI */
    struct ol_req *job_next;  /* WSGI over HTTP/2: the next posted job (pool.c) */
    PyObject *input;          /* WSGI: wsgi.input */
    /* ASGI websocket sessions (asgi_ws.c). */
    struct ol_ws_handshake *ws_handshake; /* until accepted (PyMem) */
    PyObject *ws_queue;                   /* messages received, not yet taken (list) */
    PyObject *ws_close_reason;            /* str, once the session ended */
    int ws_state;                         /* enum in asgi_ws.c */
    int ws_close_code;
};

extern PyType_Spec ol_req_spec;
ol_req *ol_req_new(ol_conn *c, const ol_carrier *carrier);
int ol_req_set_head(ol_req *r, const ol_request *head);
/* The exchange lets go of its connection. One that had no access-log line
 * yet gets it now: the client went away (499 if no response had begun,
 * else the status sent and the bytes that went out). */
void ol_req_detach(ol_req *r);
/* "METHOD target" of the request, for messages (truncated to fit). */
void ol_req_describe(const ol_req *r, char *buf, size_t size);
void ol_req_fail(ol_req *r, int status);
void ol_req_response_complete(ol_req *r);
/* A WebSocket session ended: counted and logged like a response. */
void ol_req_session_end(ol_req *r);
/* The app took the connection over (WSGI: a WebSocket session on the
 * socket lent to it) and is done with it: nothing is written, the session
 * is counted and logged as one 101 response, and the connection closes. */
void ol_req_taken_over(ol_req *r);
int ol_response_begin(ol_req *r, int status, PyObject *reason, PyObject *headers);
int ol_response_body(ol_req *r, const char *data, size_t len, int more);
/* Trailer fields for a response whose body has been sent (more != 0 on its
 * last piece); more == 0 sends them and completes the response. 0, or -1
 * with an exception. */
int ol_response_trailers(ol_req *r, PyObject *fields, int more);

#endif /* OL_EXCHANGE_H */
