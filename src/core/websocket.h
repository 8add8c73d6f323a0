/*
 * websocket.h -- WebSocket (RFC 6455, permessage-deflate RFC 7692) over a
 * connection (websocket.c): the protocol a connection switches to after
 * its HTTP/1.1 handshake. It checks the handshake, writes the 101, reads
 * frames into messages (UTF-8, sizes, control frames, the closing
 * handshake), writes messages, pings an idle peer, and pauses reading while
 * the app's queue is full. The framing rules themselves are the wire
 * layer's (ol_ws.h); what a message means is the interface's, reached
 * through srv->handler (ws_message, ws_closed).
 *
 * States. The exchange (c->request) that asked for the upgrade stays the
 * connection's for the whole session: the protocol holds that reference
 * until the socket closes, and tells the interface of each message and of
 * the end of the session (close code and reason) exactly once.
 *
 * All calls on the event loop with the GIL held.
 */
#ifndef OL_WEBSOCKET_H
#define OL_WEBSOCKET_H

#include "conn.h"
#include "ol_ws.h"

extern const ol_proto ol_ws_protocol;

/* What the handshake left for the accept: the Sec-WebSocket-Accept value
 * and the permessage-deflate parameters, when negotiated. */
typedef struct ol_ws_handshake {
    char accept[28];
    int deflate; /* permessage-deflate was offered and acceptable */
    ol_ws_deflate_params params;
} ol_ws_handshake;

/*
 * Check an upgrade request (ol_h1_is_websocket said it asks for one) and
 * compute what the 101 will need. Returns 0, or the HTTP status to refuse
 * it with (400, or 426 for a version other than 13), *why saying what was
 * wrong.
 */
int ol_ws_check_handshake(ol_server *srv, const ol_request *h, ol_ws_handshake *out,
                          const char **why);

/*
 * Accept: write the 101 (with the subprotocol, a bytes object or NULL, and
 * the app's extra headers, a list of (bytes, bytes) already checked) and
 * switch the connection to WebSocket. 0, or -1: with an exception (out of
 * memory), or without one when the client is gone.
 */
int ol_ws_accept_upgrade(ol_conn *c, const ol_ws_handshake *hs, PyObject *subprotocol,
                         PyObject *headers);

/* Send one message (text: UTF-8 the caller vouches for). 0, or -1 when the
 * connection is gone or closing (no exception). */
int ol_ws_send(ol_conn *c, int text, const char *data, size_t len);
/* Begin the closing handshake: a close frame with code and reason (code
 * 1005: none); the client's answer, or the close timeout, ends the
 * session. A no-op once a close was sent. */
void ol_ws_close(ol_conn *c, int code, const char *reason, size_t reason_len);
/* The interface's queue has room again: read on. */
void ol_ws_resume(ol_conn *c);
/* Is c a WebSocket (switched) connection? */
int ol_ws_is_websocket(const ol_conn *c);
/* Payload bytes received and sent during the session. */
void ol_ws_counts(const ol_conn *c, uint64_t *in, uint64_t *out);

#endif /* OL_WEBSOCKET_H */
