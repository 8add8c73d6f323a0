/*
 * h1.h -- HTTP/1.1 over a connection (h1.c): the protocol every connection
 * speaks first. It parses heads, frames request bodies, keeps connections
 * alive and pipelines, writes the error replies the server owes, and
 * begins and ends exchanges, whose work it hands to the interface through
 * srv->handler (exchange.h). A later protocol (WebSocket, h2c) takes a
 * connection over by replacing c->proto.
 */
#ifndef OL_H1_H
#define OL_H1_H

#include "conn.h"

extern const ol_proto ol_h1_protocol;

/*
 * Answer every complete request in c's buffer. ts == NULL: the caller holds
 * the GIL (the event loop), and an exchange runs until its app suspends.
 * Otherwise the GIL is released, *ts the thread's state (a pool thread): it
 * is taken around each exchange, which runs to its end.
 */
void ol_h1_process(ol_conn *c, PyThreadState **ts);
/* Does the head ask to switch to WebSocket (Connection: upgrade,
 * Upgrade: websocket)? */
int ol_h1_is_websocket(const ol_request *h);
/* A pool thread's last call: frees its head-parsing array. */
void ol_h1_thread_exit(void);

/* An error response with "Connection: close", then a graceful close. GIL. */
void ol_h1_send_error(ol_conn *c, int status, const char *text);
/* "100 Continue" when the body is first asked for: 0, or -1 if gone. */
int ol_h1_continue(ol_req *r);
/*
 * Take the body bytes the input buffer holds, as one new bytes object in
 * *out (left NULL when there are none, or when out is NULL: then the bytes
 * are only dropped, and no GIL is needed). Returns 1 when the body is
 * complete, 0 when more is to come, or a negative OL_E* / OL_ETOO_LARGE.
 */
int ol_h1_take_body(ol_conn *c, PyObject **out);

/* The exchange's response is complete: keep the connection for the next
 * request, or close it. GIL. */
void ol_h1_request_done(ol_conn *c, int keep_alive);
/* Between requests with nothing to send. */
int ol_h1_is_idle(const ol_conn *c);
#endif /* OL_H1_H */
