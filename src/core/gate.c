/*
 * gate.c -- who may run the worker loop's code right now.
 *
 * A WSGI thread that needs a coroutine's result pays two thread switches
 * when the loop's own thread runs it: one to wake the loop, one to wake the
 * caller again (bridge.c). Most async calls made from WSGI code -- an async
 * before_request that sets g, a view answering from a cache -- finish
 * without ever waiting; for those the switches are the whole cost.
 *
 * The gate lets the calling thread run such a step itself. The loop's thread
 * holds the gate whenever it runs loop code and opens it only while it
 * sleeps in select() (oneloop.loops.GatedEventLoop). A thread that finds it
 * open closes it behind itself and is the loop's thread until it opens it
 * again; the loop's thread, woken meanwhile, waits at the gate and is let
 * through before any other caller. Everything the step does to the loop
 * (callbacks, timers, readers) is thus done by one thread at a time, as
 * asyncio requires, and the GIL is not what keeps it safe.
 *
 * Only a loop whose own code runs under the GIL can be gated this way:
 * asyncio's selector loop is; uvloop, whose libuv core runs without the GIL,
 * is not, and keeps the two-switch path.
 */
#include "core.h"

#include <pthread.h>

struct ol_gate {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int held;             /* someone runs loop code */
    int loop_waiting;     /* the loop's thread, back from select(), waits to go on */
    unsigned long holder; /* the thread that holds it */
    int ready;            /* mu and cv are initialised */
};

int ol_gate_try_take(ol_gate *g)
{
    pthread_mutex_lock(&g->mu);
    int taken = !g->held && !g->loop_waiting;
    if (taken) {
        g->held = 1;
        g->holder = PyThread_get_thread_ident();
    }
    pthread_mutex_unlock(&g->mu);
    return taken;
}

void ol_gate_give(ol_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->held = 0;
    g->holder = 0;
    if (g->loop_waiting)
        pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

unsigned long ol_gate_holder(ol_gate *g)
{
    pthread_mutex_lock(&g->mu);
    unsigned long holder = g->holder;
    pthread_mutex_unlock(&g->mu);
    return holder;
}

/* LoopGate.open(): the loop's thread is about to sleep in select(). */
static PyObject *gate_open(ol_gate *g, PyObject *unused)
{
    (void)unused;
    ol_gate_give(g);
    Py_RETURN_NONE;
}

/* LoopGate.close(): the loop's thread is back from select(); wait, GIL
 * released, for a thread running a step to finish it. */
static PyObject *gate_close(ol_gate *g, PyObject *unused)
{
    (void)unused;
    unsigned long me = PyThread_get_thread_ident();
    if (ol_gate_try_take(g))
        return Py_NewRef(Py_None);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g->mu);
    g->loop_waiting++;
    while (g->held)
        pthread_cond_wait(&g->cv, &g->mu);
    g->loop_waiting--;
    g->held = 1;
    g->holder = me;
    pthread_mutex_unlock(&g->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *gate_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "LoopGate() takes no arguments");
        return NULL;
    }
    ol_gate *g = (ol_gate *)type->tp_alloc(type, 0);
    if (g == NULL)
        return NULL;
    if (pthread_mutex_init(&g->mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&g->cv, NULL) != 0) {
        pthread_mutex_destroy(&g->mu);
        goto fail;
    }
    g->ready = 1;
    /* Closed: the thread that makes the loop runs it. */
    g->held = 1;
    g->holder = PyThread_get_thread_ident();
    return (PyObject *)g;
fail:
    Py_DECREF(g);
    return PyErr_NoMemory();
}

static void gate_dealloc(ol_gate *g)
{
    PyTypeObject *type = Py_TYPE(g);
    if (g->ready) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
    }
    type->tp_free((PyObject *)g);
    Py_DECREF(type);
}

static PyMethodDef gate_methods[] = {
    {"open", (PyCFunction)gate_open, METH_NOARGS,
     "Called by the loop's thread before it sleeps in select()."},
    {"close", (PyCFunction)gate_close, METH_NOARGS,
     "Called by the loop's thread after select(): waits for a step run by another thread."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot gate_slots[] = {
    {Py_tp_doc, "Who may run the worker loop's code right now (gate.c)."},
    {Py_tp_new, gate_new},
    {Py_tp_dealloc, gate_dealloc},
    {Py_tp_methods, gate_methods},
    {0, NULL},
};

PyType_Spec ol_gate_spec = {
    .name = "oneloop._core.LoopGate",
    .basicsize = sizeof(ol_gate),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = gate_slots,
};
