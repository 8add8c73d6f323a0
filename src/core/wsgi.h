/*
 * wsgi.h -- the WSGI interface (wsgi.c: environ, start_response,
 * wsgi.input, wsgi.file_wrapper; the handler ol_wsgi_handler in
 * exchange.h) and the pool of threads that serve WSGI connections
 * (pool.c).
 */
#ifndef OL_WSGI_H
#define OL_WSGI_H

#include "server.h"

int ol_wsgi_init_types(PyObject *module, ol_state *st);
/* Read the rest of the request's body into memory (up to a cap) so code on
 * the loop thread can read it without waiting for the client. */
int ol_wsgi_buffer_body(ol_req *r);
/* The thread is about to wait (a call to the loop): the responses gathered
 * for earlier pipelined requests go out first. GIL held. */
void ol_wsgi_send_gathered(ol_req *r);
extern __thread ol_req *ol_current_request; /* the WSGI request this thread serves */

void ol_pool_wake(ol_server *srv);
/* At close: 1 if pool threads still run, in which case the last of them
 * closes the reactor as it leaves; 0 if the caller must close it. */
int ol_pool_defer_reactor_close(ol_server *srv);
int ol_pool_start(ol_server *srv);
int ol_pool_stop(ol_server *srv);
void ol_pool_free(ol_server *srv);
PyObject *ol_pool_thread(ol_server *srv, PyObject *unused);

#endif /* OL_WSGI_H */
