/*
 * asgi.h -- the ASGI interface (asgi.c: scope, receive, send; the handler
 * ol_asgi_handler in exchange.h) and the host tasks its apps run on
 * (driver.c), which the bridge uses too.
 */
#ifndef OL_ASGI_H
#define OL_ASGI_H

#include "server.h"

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

/* Shared by the http (asgi.c) and websocket (asgi_ws.c) scopes. */
PyObject *ol_ready_new(ol_state *st, PyObject *value /* stolen; NULL passes on an error */);
int ol_future_is_done(PyObject *fut); /* resolved or cancelled; errors count as done */
/* Resolve *slot's future (unless a cancelled awaiter did) and clear it. */
void ol_future_take(PyObject **slot, PyObject *value, PyObject *exc);
/* The client is gone: a pending receive() gets `message` (stolen; may be
 * NULL), a send() waiting on flow control raises ClientDisconnected(why). */
void ol_asgi_wake_gone(ol_req *r, PyObject *message, const char *why);
PyObject *ol_asgi_message_type(ol_state *st, PyObject *message); /* borrowed, or NULL */
int ol_asgi_is_type(PyObject *type, PyObject *interned);
PyObject *ol_asgi_send_start(ol_req *r, PyObject *message); /* http.response.start */
PyObject *ol_asgi_send_body(ol_req *r, PyObject *message);  /* http.response.body */

/* The websocket scope (asgi_ws.c). */
PyObject *ol_asgi_ws_receive(ol_req *r);                 /* the app's receive() */
PyObject *ol_asgi_ws_send(ol_req *r, PyObject *message); /* the app's send(message) */
int ol_asgi_ws_scope(ol_req *r, PyObject *scope);
int ol_asgi_ws_finished(ol_req *r, PyObject *exc);
void ol_asgi_ws_disconnected(ol_req *r);
int ol_asgi_ws_message(ol_req *r, int text, const char *data, size_t len);
void ol_asgi_ws_closed(ol_req *r, int code, const char *reason, size_t reason_len);
void ol_asgi_ws_end(ol_req *r);
void ol_asgi_close(ol_server *srv);

#endif /* OL_ASGI_H */
