/*
 * handback.c -- sync work the loop hands back to a thread waiting on it.
 *
 * Under asgiref's own async_to_sync, the sync code an async view defers with
 * thread-sensitive sync_to_async runs in the thread that called
 * async_to_sync, which waits for the coroutine anyway. oneloop keeps that
 * (bridge.c): each thread that waits on the bridge has one ThreadExecutor,
 * named in the coroutine's context (the ContextVar _core.request_executor),
 * through which code on the loop -- oneloop.bridge.LoopExecutor, asgiref's
 * executor for the worker loop -- submits work; the waiting thread, woken on
 * its eventfd, runs it between polls. Blocking code deferred by concurrent
 * async views thus runs in their requests' threads, in parallel.
 *
 * Work submitted when nobody waits (a task that outlived the call that
 * spawned it) is refused -- LoopExecutor runs it in asgiref's own thread
 * then -- instead of hanging. `waiting` counts the calls
 * of the owner thread now waiting (they nest: a sync_to_async run here may
 * call async_to_sync again); only the owner changes it, and submit() checks
 * it and queues without running Python code in between, so under the GIL
 * no work is queued after the last wait has drained the queue.
 */
#include "core.h"

#include <sys/eventfd.h>
#include <unistd.h>

struct ol_handback {
    PyObject_HEAD
    int efd;         /* signalled when work is queued (and by the bridge when a call ends) */
    int waiting;     /* calls of the owner thread now waiting */
    PyObject *items; /* queued work: (future, fn, args, kwargs) tuples */
    ol_state *st;
};

int ol_handback_fd(ol_handback *h)
{
    return h->efd;
}

void ol_handback_open(ol_handback *h)
{
    h->waiting++;
}

/* Pop the oldest queued item (a new reference), or NULL if there is none. */
static PyObject *pop_item(ol_handback *h)
{
    if (PyList_GET_SIZE(h->items) == 0)
        return NULL;
    PyObject *item = Py_NewRef(PyList_GET_ITEM(h->items, 0));
    if (PyList_SetSlice(h->items, 0, 1, NULL) < 0) { /* shrinking a list cannot fail */
        PyErr_WriteUnraisable((PyObject *)h);
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

/* future.method(arg), reporting a failure (a done-callback of the future
 * raising) as unraisable: it is not the waiting call's error. */
static void settle(PyObject *future, PyObject *method, PyObject *arg)
{
    PyObject *r = PyObject_CallMethodOneArg(future, method, arg);
    if (r == NULL)
        PyErr_WriteUnraisable(future);
    Py_XDECREF(r);
}

/* Whether the future still wants its work run (it was not cancelled). */
static int claim(ol_handback *h, PyObject *future)
{
    PyObject *r = PyObject_CallMethodNoArgs(future, h->st->s_set_running_or_notify_cancel);
    int go = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (go < 0)
        PyErr_WriteUnraisable(future);
    return go > 0;
}

static void run_item(ol_handback *h, PyObject *item)
{
    PyObject *future = PyTuple_GET_ITEM(item, 0), *fn = PyTuple_GET_ITEM(item, 1);
    PyObject *args = PyTuple_GET_ITEM(item, 2), *kwargs = PyTuple_GET_ITEM(item, 3);
    if (!claim(h, future))
        return;
    PyObject *result = PyObject_Call(fn, args, kwargs == Py_None ? NULL : kwargs);
    if (result != NULL) {
        settle(future, h->st->s_set_result, result);
        Py_DECREF(result);
        return;
    }
    PyObject *exc = ol_err_take(); /* delivered to the awaiting coroutine */
    settle(future, h->st->s_set_exception, exc);
    Py_DECREF(exc);
}

void ol_handback_run_pending(ol_handback *h)
{
    PyObject *item;
    while ((item = pop_item(h)) != NULL) {
        run_item(h, item);
        Py_DECREF(item);
    }
}

/* The owner stops waiting; after its last wait, work still queued (submitted
 * after the coroutine ended) fails. */
void ol_handback_close(ol_handback *h)
{
    if (--h->waiting > 0)
        return;
    PyObject *item;
    while ((item = pop_item(h)) != NULL) {
        PyObject *future = PyTuple_GET_ITEM(item, 0);
        if (claim(h, future)) {
            PyObject *exc = PyObject_CallFunction(
                PyExc_RuntimeError, "s", "the request's thread no longer waits for async work");
            if (exc != NULL) {
                settle(future, h->st->s_set_exception, exc);
                Py_DECREF(exc);
            } else {
                PyErr_WriteUnraisable(future);
            }
        }
        Py_DECREF(item);
    }
}

/* ThreadExecutor.submit(fn, /, *args, **kwargs): from any thread. */
static PyObject *handback_submit(ol_handback *h, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "submit(fn, /, *args, **kwargs)");
        return NULL;
    }
    if (!h->waiting) /* the common refusal, before making a Future for nothing */
        Py_RETURN_NONE;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *call_args = PyTuple_New(nargs - 1);
    PyObject *call_kwargs = nkw ? PyDict_New() : Py_NewRef(Py_None);
    PyObject *future = call_args && call_kwargs ? PyObject_CallNoArgs(h->st->future_type) : NULL;
    PyObject *item = NULL, *result = NULL;
    if (future == NULL)
        goto done;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(call_args, i - 1, Py_NewRef(args[i]));
    for (Py_ssize_t i = 0; i < nkw; i++)
        if (PyDict_SetItem(call_kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
            goto done;
    item = PyTuple_Pack(4, future, args[0], call_args, call_kwargs);
    if (item == NULL)
        goto done;
    /* From here to the append no Python code runs: see the file comment. */
    if (!h->waiting) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (PyList_Append(h->items, item) < 0)
        goto done;
    uint64_t one = 1;
    ssize_t ignored = write(h->efd, &one, sizeof(one));
    (void)ignored;
    result = Py_NewRef(future);
done:
    Py_XDECREF(item);
    Py_XDECREF(future);
    Py_XDECREF(call_args);
    Py_XDECREF(call_kwargs);
    return result;
}

/* open(), close(), run_pending(): for a stand-in of the bridge written in
 * Python (oneloop.testing); the C bridge calls the functions directly. */
static PyObject *handback_open_py(ol_handback *h, PyObject *unused)
{
    (void)unused;
    ol_handback_open(h);
    Py_RETURN_NONE;
}

static PyObject *handback_close_py(ol_handback *h, PyObject *unused)
{
    (void)unused;
    if (h->waiting <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "close() without open()");
        return NULL;
    }
    ol_handback_close(h);
    Py_RETURN_NONE;
}

static PyObject *handback_run_pending_py(ol_handback *h, PyObject *unused)
{
    (void)unused;
    ol_handback_run_pending(h);
    Py_RETURN_NONE;
}

static PyObject *handback_get_fd(ol_handback *h, void *closure)
{
    (void)closure;
    return PyLong_FromLong(h->efd);
}

static int handback_traverse(ol_handback *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    Py_VISIT(h->items);
    return 0;
}

static int handback_clear(ol_handback *h)
{
    Py_CLEAR(h->items);
    return 0;
}

static void handback_dealloc(ol_handback *h)
{
    PyTypeObject *type = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    handback_clear(h);
    if (h->efd >= 0)
        close(h->efd);
    PyObject_GC_Del(h);
    Py_DECREF(type);
}

/* This thread's executor (a new reference), made on first use and kept in
 * the thread state's dict, so it goes when the thread does. */
ol_handback *ol_handback_of_thread(ol_state *st)
{
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dict");
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(dict, st->s_thread_executor);
    if (found != NULL)
        return (ol_handback *)Py_NewRef(found);
    if (PyErr_Occurred())
        return NULL;
    ol_handback *h = PyObject_GC_New(ol_handback, st->handback_type);
    if (h == NULL)
        return NULL;
    h->efd = eventfd(0, EFD_CLOEXEC);
    h->waiting = 0;
    h->items = PyList_New(0);
    h->st = st;
    PyObject_GC_Track(h);
    if (h->efd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(h);
        return NULL;
    }
    if (h->items == NULL || PyDict_SetItem(dict, st->s_thread_executor, (PyObject *)h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

/* _core.thread_executor() */
PyObject *ol_handback_thread(PyObject *module, PyObject *unused)
{
    (void)unused;
    return (PyObject *)ol_handback_of_thread(PyModule_GetState(module));
}

static PyMethodDef handback_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))handback_submit, METH_FASTCALL | METH_KEYWORDS,
     "submit(fn, /, *args, **kwargs)\n--\n\n"
     "Queue fn(*args, **kwargs) for the owner thread, which runs it while it\n"
     "waits: a concurrent.futures.Future for its result, or None if the owner\n"
     "does not wait (nothing is queued then)."},
    {"open", (PyCFunction)handback_open_py, METH_NOARGS,
     "open()\n--\n\nThe owner thread starts waiting (calls nest)."},
    {"close", (PyCFunction)handback_close_py, METH_NOARGS,
     "close()\n--\n\nThe owner thread stops waiting; after its last wait,\n"
     "work still queued fails with RuntimeError."},
    {"run_pending", (PyCFunction)handback_run_pending_py, METH_NOARGS,
     "run_pending()\n--\n\nRun the queued work, in the calling (owner) thread."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handback_getset[] = {
    {"fd", (getter)handback_get_fd, NULL, "The eventfd the owner thread waits on.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handback_slots[] = {
    {Py_tp_doc, "Runs work submitted from the loop in the thread waiting for a coroutine "
                "(_core.thread_executor() gives the calling thread's)."},
    {Py_tp_dealloc, handback_dealloc},
    {Py_tp_traverse, handback_traverse},
    {Py_tp_clear, handback_clear},
    {Py_tp_methods, handback_methods},
    {Py_tp_getset, handback_getset},
    {0, NULL},
};

PyType_Spec ol_handback_spec = {
    .name = "oneloop._core.ThreadExecutor",
    .basicsize = sizeof(ol_handback),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = handback_slots,
};
