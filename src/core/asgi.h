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
void ol_asgi_close(ol_server *srv);

#endif /* OL_ASGI_H */
