/*
 * h2.h -- HTTP/2 over a connection (h2.c), with libnghttp2 doing the
 * framing, HPACK and flow control. A connection switches to it from
 * HTTP/1.1 (h1.c, the switch point) when a TLS client chose "h2" by ALPN,
 * when a cleartext client opens with the connection preface (prior
 * knowledge), or at once with --http 2. Each stream is one exchange
 * (exchange.h), carried by ol_h2_carrier and handed to the same interface
 * as an HTTP/1.1 request.
 *
 * Ownership. The connection's HTTP/2 state (c->h2) belongs to the
 * protocol: it is made by ol_h2_start() and freed once the connection has
 * closed and no call of this module is on the stack. A stream holds the
 * protocol's reference to its exchange until the response is complete or
 * the stream ends; the stream itself lives until nghttp2 closes it.
 *
 * Threads: on the event loop (ASGI), every call. In threaded mode (WSGI),
 * with the GIL, by a thread holding the connection (conn.h): the pool
 * thread serving its event, which processes frames and posts each new
 * stream's app as a job to the pool; and each stream's app, on a pool
 * thread of its own, which holds the connection only inside a carrier call
 * and lets go while it waits for its client (its window, its body). So
 * the streams of one connection run side by side, and a view that blocks
 * holds up its own stream only. A carrier call is never made by a thread
 * that holds the connection already.
 */
#ifndef OL_H2_H
#define OL_H2_H

#include "conn.h"

extern const ol_proto ol_h2_protocol;

/* The 24 bytes a client with prior knowledge opens with (RFC 9113, 3.4). */
#define OL_H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define OL_H2_PREFACE_LEN 24

/* Switch c to HTTP/2 and process what its buffer holds. GIL. */
void ol_h2_start(ol_conn *c);

/*
 * An HTTP/1.1 request asked to switch (Upgrade: h2c, with its
 * HTTP2-Settings value): answer 101, and serve it as stream 1 of HTTP/2.
 * The caller checked it has no body. 1 if switched; 0 if the settings are
 * malformed (serve it as HTTP/1.1); -1 if the connection is gone. GIL.
 */
int ol_h2_upgrade(ol_conn *c, const ol_request *head, ol_span settings, size_t head_len);

/* A pool thread (WSGI) holding c processes what it received, or frames
 * what the streams queued once the socket has room; GIL released on entry
 * and exit (*ts its state). New streams' apps are posted to the pool. */
void ol_h2_process(ol_conn *c, PyThreadState **ts);

/* Threaded: a pool thread that holds no connection sends what c's
 * streams gathered (a stream's app blocks while others' frames wait for
 * it). GIL. */
void ol_h2_flush(ol_conn *c);

/* The server drains: tell the client which streams will be served
 * (GOAWAY), serve them, then close. GIL. */
void ol_h2_shutdown(ol_conn *c);

#endif /* OL_H2_H */
