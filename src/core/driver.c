/*
 * driver.c -- host tasks: running coroutines on the loop without creating
 * an asyncio.Task for each.
 *
 * A Driver is the coroutine of one long-lived asyncio.Task, its host task.
 * To run a coroutine (an ASGI app call, or an async call made from WSGI
 * code through the bridge), the server enters the host task (asyncio's
 * _enter_task), runs the coroutine's first step directly inside a copy of a
 * context, and leaves it. A coroutine that finishes in that step costs no
 * Task, Future or loop iteration. One that suspends is handed to the host
 * task: the driver wakes the task, which then drives it exactly as asyncio
 * drives any coroutine, with asyncio.current_task() the same object from the
 * first step to the last, so asyncio.timeout(), TaskGroup and anyio cancel
 * scopes behave as they do under any server.
 *
 * Between coroutines the host task waits on an "idle" future. An ASGI
 * connection keeps its driver (and task) while it is open; the bridge keeps
 * a pool of idle drivers. A driver released by its owner finishes what it
 * runs and then lets its task end.
 *
 * Whatever happens to the coroutine -- it returns, raises, or is cancelled --
 * is reported to its owner through the done callback and never to the host
 * task, which only ever ends by being released.
 */
#include "core.h"

#include <string.h>

struct ol_driver {
    PyObject_HEAD
    ol_server *server; /* strong */
    PyObject *task;    /* the host task */
    PyObject *coro;    /* what it runs now: a coroutine or an awaitable's iterator */
    PyObject *yielded; /* what the first step yielded, for the task to wait on */
    PyObject *idle;    /* the future the task waits on between coroutines */
    PyObject *context; /* the contextvars.Context the coroutine runs in */
    ol_done_fn done;   /* told how the coroutine ended */
    PyObject *owner;   /* passed to done (strong) */
    int keep;          /* wait for more work when idle; else the task ends */
    int ended;         /* the task has finished */
    int suspended;     /* the current coroutine has been stepped by the task */
};

/* Resolve a future unless someone (a cancelled awaiter) already did. */
static void resolve_none(PyObject *fut)
{
    PyObject *done = PyObject_CallMethod(fut, "done", NULL);
    int is_done = done == NULL || PyObject_IsTrue(done);
    Py_XDECREF(done);
    if (!is_done) {
        PyObject *r = PyObject_CallMethod(fut, "set_result", "O", Py_None);
        Py_XDECREF(r);
    }
    PyErr_Clear();
}

/* Wake the host task from its idle wait. */
static void wake(ol_driver *d)
{
    if (d->idle != NULL) {
        PyObject *idle = d->idle;
        d->idle = NULL;
        resolve_none(idle);
        Py_DECREF(idle);
    }
}

/* Between coroutines the task waits on a fresh future; a released driver
 * has nothing to wait for and lets its task end. */
static PySendResult park(ol_driver *d, PyObject **result)
{
    Py_CLEAR(d->idle);
    if (!d->keep) {
        d->ended = 1;
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    d->idle = ol_new_future(d->server);
    if (d->idle == NULL ||
        PyObject_SetAttrString(d->idle, "_asyncio_future_blocking", Py_True) < 0) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    *result = Py_NewRef(d->idle);
    return PYGEN_NEXT;
}

/* Between coroutines the host task's cancellation count is back to zero:
 * what one coroutine cancelled (and swallowed, or left to a TaskGroup that
 * does not uncancel) must not be seen by the next. */
static void reset_cancel_count(ol_driver *d)
{
    for (int i = 0; i < 64; i++) {
        PyObject *n = PyObject_CallMethod(d->task, "cancelling", NULL);
        long count = n ? PyLong_AsLong(n) : 0;
        Py_XDECREF(n);
        if (count <= 0)
            break;
        PyObject *u = PyObject_CallMethod(d->task, "uncancel", NULL);
        if (u == NULL)
            break;
        Py_DECREF(u);
    }
    PyErr_Clear();
}

/* The coroutine is over: tell its owner. */
static void finish(ol_driver *d, PyObject *result, PyObject *exc)
{
    ol_done_fn done = d->done;
    PyObject *owner = d->owner;
    d->done = NULL;
    d->owner = NULL;
    Py_CLEAR(d->coro);
    Py_CLEAR(d->context);
    if (d->task != NULL && (d->suspended || exc != NULL))
        reset_cancel_count(d);
    d->suspended = 0;
    if (done != NULL)
        done(owner, result, exc);
    Py_XDECREF(owner);
}

/*
 * One step of the coroutine inside its context. Returns PYGEN_NEXT with
 * what it yielded, or PYGEN_RETURN once it is over, however it ended (the
 * owner has been told by then).
 */
static PySendResult run(ol_driver *d, PyObject *value, PyObject *exc, PyObject **result)
{
    PySendResult st;
    *result = NULL;
    ol_server *srv = d->server;
    PyObject *outer = srv->watch.running; /* for the watchdog: what the loop runs */
    srv->watch.running = (PyObject *)d;
    if (PyContext_Enter(d->context) < 0) {
        st = PYGEN_ERROR;
    } else {
        if (exc == NULL) {
            st = PyIter_Send(d->coro, value, result);
        } else {
            *result = PyObject_CallMethod(d->coro, "throw", "O", exc);
            st = *result != NULL ? PYGEN_NEXT : PYGEN_ERROR;
            if (st == PYGEN_ERROR && PyErr_ExceptionMatches(PyExc_StopIteration)) {
                PyObject *stop = ol_err_take();
                *result = stop ? PyObject_GetAttrString(stop, "value") : NULL;
                Py_XDECREF(stop);
                st = *result != NULL ? PYGEN_RETURN : PYGEN_ERROR;
            }
        }
        PyContext_Exit(d->context);
    }
    srv->watch.running = outer;
    if (st == PYGEN_NEXT)
        return st;
    PyObject *error = st == PYGEN_ERROR ? ol_err_take() : NULL;
    finish(d, *result, error);
    Py_CLEAR(*result);
    Py_XDECREF(error);
    return PYGEN_RETURN;
}

/* A step taken by the host task: when the coroutine is over, park. */
static PySendResult task_step(ol_driver *d, PyObject *value, PyObject *exc, PyObject **result)
{
    if (run(d, value, exc, result) == PYGEN_NEXT)
        return PYGEN_NEXT;
    return park(d, result);
}

/* ------------------------------------------------------------------------ */
/* The coroutine protocol the host task sees                                */

static PySendResult driver_am_send(ol_driver *d, PyObject *arg, PyObject **result)
{
    d->suspended = d->coro != NULL;
    if (d->yielded != NULL) {
        *result = d->yielded;
        d->yielded = NULL;
        return PYGEN_NEXT;
    }
    if (d->coro != NULL)
        return task_step(d, arg, NULL, result);
    return park(d, result);
}

/* The generator-style result of a send/throw for callers that use methods. */
static PyObject *as_method_result(PySendResult st, PyObject *result)
{
    if (st == PYGEN_NEXT)
        return result;
    if (st == PYGEN_RETURN) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
        Py_DECREF(result);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

static PyObject *driver_send(ol_driver *d, PyObject *arg)
{
    PyObject *result;
    PySendResult st = driver_am_send(d, arg, &result);
    return as_method_result(st, result);
}

static PyObject *driver_throw(ol_driver *d, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    PyObject *exc = PyExceptionInstance_Check(typ)    ? Py_NewRef(typ)
                    : (val != NULL && val != Py_None) ? Py_NewRef(val)
                                                      : PyObject_CallNoArgs(typ);
    if (exc == NULL)
        return NULL;
    if (d->coro == NULL) { /* nothing to cancel: the task itself ends */
        d->ended = 1;
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
        return NULL;
    }
    if (d->yielded != NULL) { /* the future the coroutine awaits, not yet the task's */
        PyObject *r = PyObject_CallMethod(d->yielded, "cancel", NULL);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
        Py_CLEAR(d->yielded);
    }
    PyObject *result;
    PySendResult st = task_step(d, NULL, exc, &result);
    Py_DECREF(exc);
    return as_method_result(st, result);
}

static PyObject *driver_close(ol_driver *d, PyObject *unused)
{
    (void)unused;
    Py_CLEAR(d->yielded);
    if (d->coro != NULL) {
        PyObject *r = PyObject_CallMethod(d->coro, "close", NULL);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
        finish(d, Py_None, NULL);
    }
    d->ended = 1;
    Py_RETURN_NONE;
}

static PyObject *driver_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int driver_traverse(ol_driver *d, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(d));
    Py_VISIT((PyObject *)d->server);
    Py_VISIT(d->task);
    Py_VISIT(d->coro);
    Py_VISIT(d->yielded);
    Py_VISIT(d->idle);
    Py_VISIT(d->context);
    Py_VISIT(d->owner);
    return 0;
}

static int driver_clear(ol_driver *d)
{
    Py_CLEAR(d->task);
    Py_CLEAR(d->coro);
    Py_CLEAR(d->yielded);
    Py_CLEAR(d->idle);
    Py_CLEAR(d->context);
    Py_CLEAR(d->owner);
    return 0;
}

static void driver_dealloc(ol_driver *d)
{
    PyTypeObject *type = Py_TYPE(d);
    PyObject_GC_UnTrack(d);
    driver_clear(d);
    Py_XDECREF(d->server);
    type->tp_free((PyObject *)d);
    Py_DECREF(type);
}

static PyObject *driver_get_coroutine(ol_driver *d, void *closure)
{
    (void)closure;
    return Py_NewRef(d->coro ? d->coro : Py_None);
}

static PyObject *driver_get_owner(ol_driver *d, void *closure)
{
    (void)closure;
    return Py_NewRef(d->owner ? d->owner : Py_None);
}

static PyGetSetDef driver_getset[] = {
    {"coroutine", (getter)driver_get_coroutine, NULL, "The coroutine being run, or None.", NULL},
    {"owner", (getter)driver_get_owner, NULL, "The Request or Call it runs for, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef driver_methods[] = {
    {"send", (PyCFunction)driver_send, METH_O, NULL},
    {"throw", (PyCFunction)driver_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)driver_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot driver_slots[] = {
    {Py_tp_doc, "The coroutine of a host task: runs coroutines for the server (driver.c)."},
    {Py_am_await, driver_await},
    {Py_am_send, driver_am_send},
    {Py_tp_methods, driver_methods},
    {Py_tp_getset, driver_getset},
    {Py_tp_traverse, driver_traverse},
    {Py_tp_clear, driver_clear},
    {Py_tp_dealloc, driver_dealloc},
    {0, NULL},
};

PyType_Spec ol_driver_spec = {
    .name = "oneloop._core.Driver",
    .basicsize = sizeof(ol_driver),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = driver_slots,
};

/* ------------------------------------------------------------------------ */
/* The interface for the server                                             */

/*
 * The host task of d. Its own context is never the one a coroutine runs in
 * (each gets its own, entered by run()), so with the loop's own task
 * factory all host tasks share the server's one context rather than each
 * holding a copy (64 bytes a connection). A task factory of the app's may
 * not take a context: it is called as before.
 */
static PyObject *create_host_task(ol_server *srv, ol_driver *d)
{
    PyObject *factory = PyObject_CallMethod(srv->loop, "get_task_factory", NULL);
    if (factory == NULL)
        return NULL;
    int shared = factory == Py_None && srv->task_context != NULL;
    Py_DECREF(factory);
    if (!shared)
        return PyObject_CallMethod(srv->loop, "create_task", "O", d);
    ol_state *st = srv->state;
    PyObject *args[3] = {srv->loop, (PyObject *)d, srv->task_context};
    PyObject *kwnames = PyTuple_Pack(1, st->s_context);
    if (kwnames == NULL)
        return NULL;
    PyObject *task = PyObject_VectorcallMethod(st->s_create_task, args, 2, kwnames);
    Py_DECREF(kwnames);
    return task;
}

ol_driver *ol_driver_new(ol_server *srv)
{
    ol_driver *d = PyObject_GC_New(ol_driver, srv->state->driver_type);
    if (d == NULL)
        return NULL;
    memset((char *)d + sizeof(PyObject), 0, sizeof(ol_driver) - sizeof(PyObject));
    d->server = (ol_server *)Py_NewRef(srv);
    d->keep = 1;
    PyObject_GC_Track(d);
    d->task = create_host_task(srv, d);
    if (d->task == NULL) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

int ol_driver_ready(const ol_driver *d)
{
    return d->coro == NULL && !d->ended;
}

/* The owner no longer needs the driver: it finishes what it runs, then its
 * task ends. */
void ol_driver_release(ol_driver *d)
{
    d->keep = 0;
    if (d->coro == NULL)
        wake(d);
}

static int call_task_hook(ol_server *srv, PyObject *hook, PyObject *task)
{
    PyObject *args[2] = {srv->loop, task};
    PyObject *r = PyObject_Vectorcall(hook, args, 2, NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/*
 * Run coro (stolen) in context (stolen) on the driver, starting now with
 * its first step inside the host task; done(owner, result, exc) is called
 * when it ends, possibly before this returns. Must be called from the loop
 * thread outside any task step. Returns 0, or -1 with an exception when it
 * could not even start (done is then not called).
 */
int ol_driver_start(ol_driver *d, PyObject *coro, PyObject *context, ol_done_fn done,
                    PyObject *owner)
{
    ol_server *srv = d->server;
    ol_state *st = srv->state;
    if (context == NULL || call_task_hook(srv, st->enter_task, d->task) < 0) {
        Py_XDECREF(coro);
        Py_XDECREF(context);
        return -1;
    }
    d->coro = coro;
    d->context = context;
    d->done = done;
    d->owner = Py_XNewRef(owner);
    PyObject *result;
    PySendResult status = run(d, Py_None, NULL, &result);
    if (call_task_hook(srv, st->leave_task, d->task) < 0)
        ol_log_error(srv, "cannot leave the host task");
    if (status == PYGEN_NEXT) {
        /* Suspended: the host task takes over from here. */
        d->yielded = result;
        wake(d);
    }
    return 0;
}

/* Cancel the running coroutine as asyncio cancels a task: it gets
 * CancelledError where it waits. */
void ol_driver_cancel(ol_driver *d)
{
    if (d->coro == NULL || d->task == NULL)
        return;
    PyObject *r = PyObject_CallMethod(d->task, "cancel", NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
}
