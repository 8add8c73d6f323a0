/*
 * bridge.h -- one loop for WSGI apps: calls from WSGI threads to
 * coroutines on the worker loop (bridge.c), the loop gate that lets a
 * thread run a call's first step itself (gate.c), the sync work handed
 * back to the waiting thread (handback.c), and the loop-stall watchdog
 * (watchdog.c).
 */
#ifndef OL_BRIDGE_H
#define OL_BRIDGE_H

#include "server.h"

/* The bridge (bridge.c). */
extern PyType_Spec ol_call_spec;
int ol_bridge_open(ol_server *srv);
void ol_bridge_close(ol_server *srv);
PyObject *ol_bridge_run(ol_server *srv, PyObject *unused);
PyObject *ol_bridge_call(ol_server *srv, PyObject *const *args, Py_ssize_t nargs);

/* The loop gate (gate.c). */
typedef struct ol_gate ol_gate;
extern PyType_Spec ol_gate_spec;
/* Take the gate if it is open and the loop's thread does not wait at it: 1 if taken. */
int ol_gate_try_take(ol_gate *g);
void ol_gate_give(ol_gate *g);
/* The thread that holds the gate (runs the loop's code), or 0. */
unsigned long ol_gate_holder(ol_gate *g);

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

/* The watchdog (watchdog.c). */
int ol_watch_start(ol_server *srv);
void ol_watch_stop(ol_server *srv);
PyObject *ol_watch_beat(ol_server *srv, PyObject *unused);

#endif /* OL_BRIDGE_H */
