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

/* WSGI over HTTP/2: post the app of a stream to the pool, to run on a
 * thread of its own (a new reference is taken). 0; -1 when the pool has
 * stopped (nobody would run it). GIL. */
int ol_pool_post(ol_server *srv, ol_req *r);
/* A pool thread runs a posted stream's app, or drops it when the pool
 * stops first; either consumes the posted reference. GIL. */
void ol_wsgi_run_job(ol_req *r);
void ol_wsgi_drop_job(ol_req *r);

void ol_pool_wake(ol_server *srv);
/* At close: 1 if pool threads still run, in which case the last of them
 * closes the reactor as it leaves; 0 if the caller must close it. */
int ol_pool_defer_reactor_close(ol_server *srv);
int ol_pool_start(ol_server *srv);
int ol_pool_stop(ol_server *srv);
void ol_pool_free(ol_server *srv);
PyObject *ol_pool_thread(ol_server *srv, PyObject *unused);

#endif /* OL_WSGI_H */
