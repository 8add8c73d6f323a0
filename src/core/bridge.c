/*
 * bridge.c -- async calls from WSGI threads, run on the worker's one loop.
 *
 * A thread that needs a coroutine's result (Flask's async views and hooks,
 * oneloop.run_coroutine()) queues a call and sleeps, GIL released, on its
 * own eventfd. The loop wakes on the bridge eventfd, starts each queued
 * coroutine on an idle host task (driver.c) -- in a copy of the calling
 * thread's context, so flask.request and g are there -- and when it ends
 * writes the result or exception into the call and wakes the thread. The
 * thread then copies context changes back into its own context and returns
 * the result or raises the exception, traceback intact.
 *
 * While it waits the thread can be handed sync work to run for the
 * coroutine (asgiref's thread-sensitive sync_to_async, through the executor
 * oneloop.bridge gives it): as under asgiref's own async_to_sync, blocking
 * code an async view defers runs in the request's own thread.
 *
 * A thread that is serving a request also watches its client: if the client hangs up (or
 * --timeout-async passes) it asks the loop to cancel the coroutine, which gets CancelledError where
 * it waits, and then raises CancelledError itself once the coroutine has unwound.
 *
 * A call is a small object shared by the waiting thread and the driver
 * running it; the thread never returns before the loop is done with it.
 */
#include "core.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct ol_call {
    PyObject_HEAD      /* the driver's owner object; never handed to Python code */
    PyObject *coro;    /* until started (then the driver's) */
    PyObject *context; /* the caller's context copy; changes flow back */
    PyObject *result;  /* set by the loop when done */
    PyObject *exc;
    ol_driver *driver;           /* while running */
    int efd;                     /* the caller's eventfd (its ThreadExecutor's) */
    int done;                    /* set by the loop (GIL held), read by the caller */
    int cancel;                  /* asked by the caller */
    int here;                    /* being started by the calling thread itself (gate.c) */
    PyObject *request;           /* the WSGI request of the calling thread, or NULL */
    struct ol_call *next;        /* in the server's queue of calls to start */
    struct ol_call *next_cancel; /* in its queue of cancellation requests */
} ol_call;

static void signal_fd(int fd)
{
    uint64_t one = 1;
    ssize_t ignored = write(fd, &one, sizeof(one));
    (void)ignored;
}

/* Wake the loop's bridge reader. Under the bridge lock, so no thread ever
 * writes to the eventfd after ol_bridge_close() closed it: by then its
 * number may name another file of the process. */
static void wake_bridge(ol_server *srv)
{
    pthread_mutex_lock(&srv->bridge.lock);
    if (srv->bridge.fd >= 0)
        signal_fd(srv->bridge.fd);
    pthread_mutex_unlock(&srv->bridge.lock);
}

/* ------------------------------------------------------------------------ */
/* The loop's side                                                          */

/* The call is over. The caller is woken with the GIL released: waking it
 * while holding the GIL would only let it run into the GIL and sleep again,
 * a thread switch for nothing. */
static void mark_done(ol_call *call)
{
    __atomic_store_n(&call->done, 1, __ATOMIC_RELEASE);
    if (call->here) /* the caller is this thread: nobody to wake */
        return;
    int efd = call->efd;
    Py_BEGIN_ALLOW_THREADS
    signal_fd(efd);
    Py_END_ALLOW_THREADS
}

static void call_done(PyObject *owner, PyObject *result, PyObject *exc)
{
    ol_call *call = (ol_call *)owner;
    call->result = Py_XNewRef(result);
    call->exc = Py_XNewRef(exc);
    ol_driver *d = call->driver;
    call->driver = NULL;
    mark_done(call);
    Py_XDECREF(d); /* the call's hold; the pool keeps its own */
}

/* An idle driver from the pool, or a new one. */
static ol_driver *take_driver(ol_server *srv)
{
    Py_ssize_t n = PyList_GET_SIZE(srv->bridge.drivers);
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        ol_driver *d = (ol_driver *)PyList_GET_ITEM(srv->bridge.drivers, i);
        if (ol_driver_ready(d))
            return (ol_driver *)Py_NewRef(d);
    }
    ol_driver *d = ol_driver_new(srv);
    if (d != NULL && PyList_Append(srv->bridge.drivers, (PyObject *)d) < 0)
        Py_CLEAR(d);
    return d;
}

/* End a call that never ran: with exc_type, or the pending exception. */
static void fail_call(ol_call *call, PyObject *exc_type, const char *message)
{
    if (message != NULL)
        PyErr_SetString(exc_type, message);
    else if (exc_type != NULL)
        PyErr_SetNone(exc_type);
    call->exc = ol_err_take();
    if (call->coro != NULL) { /* never started: no "never awaited" warning */
        PyObject *closed = PyObject_CallMethod(call->coro, "close", NULL);
        if (closed == NULL)
            PyErr_WriteUnraisable(call->coro);
        Py_XDECREF(closed);
        Py_CLEAR(call->coro);
    }
    mark_done(call);
}

static void start_call(ol_server *srv, ol_call *call)
{
    if (call->cancel) {
        fail_call(call, srv->state->cancelled_error, NULL);
        return;
    }
    ol_driver *d = take_driver(srv);
    if (d == NULL) {
        fail_call(call, NULL, NULL);
        return;
    }
    call->driver = d;
    PyObject *coro = call->coro;
    call->coro = NULL;
    /* The call may be done (and its thread gone) when this returns. */
    if (ol_driver_start(d, coro, Py_NewRef(call->context), call_done, (PyObject *)call) < 0) {
        call->driver = NULL;
        Py_DECREF(d);
        fail_call(call, NULL, NULL);
    }
}

/* Server._run_bridge(): the loop's reader callback on the bridge eventfd. */
PyObject *ol_bridge_run(ol_server *srv, PyObject *unused)
{
    (void)unused;
    /* One read resets an eventfd's counter; a write after it makes the fd
     * readable again and the loop calls back, so no second (EAGAIN) read. */
    uint64_t v;
    ssize_t ignored = read(srv->bridge.fd, &v, sizeof(v));
    (void)ignored;
    pthread_mutex_lock(&srv->bridge.lock);
    ol_call *calls = srv->bridge.queue, *cancels = srv->bridge.cancels;
    srv->bridge.queue = srv->bridge.tail = NULL;
    srv->bridge.cancels = NULL;
    pthread_mutex_unlock(&srv->bridge.lock);
    srv->now = ol_now();
    /* Each queue entry holds a reference (enqueue), dropped here. */
    while (calls != NULL) {
        ol_call *call = calls;
        calls = call->next;
        start_call(srv, call);
        Py_DECREF(call);
    }
    while (cancels != NULL) {
        ol_call *call = cancels;
        cancels = call->next_cancel;
        if (!call->done && call->driver != NULL)
            ol_driver_cancel(call->driver);
        Py_DECREF(call);
    }
    if (PyErr_Occurred())
        ol_log_error(srv, "unexpected error in the bridge");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* The calling thread's side                                                */

/* Set the running loop of this thread (NULL: none); 0 or -1. */
static int set_running_loop(ol_server *srv, PyObject *loop)
{
    PyObject *r = PyObject_CallOneArg(srv->state->set_running_loop, loop ? loop : Py_None);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* How many timers the loop holds (asyncio's heap), or -1 if unknown. */
static Py_ssize_t count_timers(ol_server *srv)
{
    PyObject *timers = PyObject_GetAttr(srv->loop, srv->state->s_scheduled);
    Py_ssize_t n = timers ? PyObject_Length(timers) : -1;
    Py_XDECREF(timers);
    PyErr_Clear();
    return n;
}

/* Whether what a step did needs the loop's thread awake: callbacks to run,
 * or timers it has not counted on when it went to sleep. Asks when unsure. */
static int loop_needs_wake(ol_server *srv, Py_ssize_t timers_before)
{
    PyObject *ready = PyObject_GetAttr(srv->loop, srv->state->s_ready);
    Py_ssize_t n_ready = ready ? PyObject_Length(ready) : -1;
    Py_XDECREF(ready);
    PyErr_Clear();
    Py_ssize_t n_timers = count_timers(srv);
    return n_ready != 0 || n_timers != timers_before || n_timers < 0;
}

/* In debug mode asyncio checks that loop code runs in loop._thread_id (its
 * _check_thread); make it this thread's for the step. Returns the thread id
 * to put back (a new reference), Py_None when not in debug mode (the
 * attribute is read for nothing else while the loop runs), NULL on error. */
static PyObject *claim_thread_id(ol_server *srv)
{
    PyObject *debug = PyObject_GetAttr(srv->loop, srv->state->s_debug);
    int on = debug ? PyObject_IsTrue(debug) : -1;
    Py_XDECREF(debug);
    if (on <= 0)
        return on < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *home = PyObject_GetAttr(srv->loop, srv->state->s_thread_id);
    PyObject *me = home ? PyLong_FromUnsignedLong(PyThread_get_thread_ident()) : NULL;
    int set = me ? PyObject_SetAttr(srv->loop, srv->state->s_thread_id, me) : -1;
    Py_XDECREF(me);
    if (set < 0)
        Py_CLEAR(home);
    return home;
}

/*
 * The loop's thread sleeps in select() with its gate open (gate.c): take it
 * and start the call in this thread, which is the loop's thread until it
 * gives the gate back -- running loop set (and loop._thread_id in debug
 * mode), so asyncio sees one thread at a time running its code. Returns 1
 * once the call has started here (finished, or suspended on something that
 * will resume it on the loop's thread), 0 when the loop's thread must start
 * it instead.
 */
static int start_here(ol_server *srv, ol_call *call)
{
    if (!ol_gate_try_take(srv->gate))
        return 0;
    PyObject *loop = srv->loop;
    PyObject *outer = PyObject_CallNoArgs(srv->state->get_running_loop);
    int ok = outer == Py_None && set_running_loop(srv, loop) == 0;
    Py_XDECREF(outer);
    PyObject *home = ok ? claim_thread_id(srv) : NULL;
    if (home == NULL) { /* another loop runs in this thread, or asyncio is not what we know */
        if (ok)
            set_running_loop(srv, NULL);
        PyErr_Clear();
        ol_gate_give(srv->gate);
        return 0;
    }
    Py_ssize_t timers = count_timers(srv);
    call->here = 1;
    start_call(srv, call);
    call->here = 0;
    if (PyErr_Occurred())
        ol_log_error(srv, "unexpected error in the bridge");
    int wake = loop_needs_wake(srv, timers);
    if ((home != Py_None && PyObject_SetAttr(loop, srv->state->s_thread_id, home) < 0) ||
        set_running_loop(srv, NULL) < 0)
        ol_log_error(srv, "cannot hand the loop back to its thread");
    Py_DECREF(home);
    if (wake) {
        PyObject *r = PyObject_CallMethodNoArgs(loop, srv->state->s_write_to_self);
        if (r == NULL)
            ol_log_error(srv, "cannot wake the loop's thread");
        Py_XDECREF(r);
    }
    ol_gate_give(srv->gate);
    return 1;
}

/* Queue a call to start, or a request to cancel it (GIL held). Returns 1
 * if the loop must be woken (the queue was empty), which the caller does
 * once it has released the GIL the loop will need. */
static int enqueue(ol_server *srv, ol_call *call, int as_cancel)
{
    Py_INCREF(call);
    pthread_mutex_lock(&srv->bridge.lock);
    int was_empty = srv->bridge.queue == NULL && srv->bridge.cancels == NULL;
    if (as_cancel) {
        call->next_cancel = srv->bridge.cancels;
        srv->bridge.cancels = call;
    } else if (srv->bridge.tail != NULL) {
        call->next = NULL;
        srv->bridge.tail->next = call;
        srv->bridge.tail = call;
    } else {
        call->next = NULL;
        srv->bridge.queue = srv->bridge.tail = call;
    }
    pthread_mutex_unlock(&srv->bridge.lock);
    return was_empty;
}

#define CANCEL_HANGUP  1 /* the client of the request hung up */
#define CANCEL_TIMEOUT 2 /* --timeout-async or the timeout argument passed */

/*
 * The thread's eventfd fired (GIL released, *ts the thread's state). Returns
 * 1 when the call is done; otherwise runs the work the loop handed to this
 * thread through its executor (GIL taken for it) and returns 0.
 */
static int on_wake(ol_call *call, ol_handback *executor, PyThreadState **ts)
{
    uint64_t v;
    ssize_t ignored = read(call->efd, &v, sizeof(v));
    (void)ignored;
    if (__atomic_load_n(&call->done, __ATOMIC_ACQUIRE))
        return 1;
    PyEval_RestoreThread(*ts);
    ol_handback_run_pending(executor);
    *ts = PyEval_SaveThread();
    return 0;
}

/*
 * Wait for the call, GIL released, running what the executor is handed.
 * Watches the client of the request this thread serves (POLLRDHUP: it hung
 * up) and the timeout. Returns 0 when done, or the reason to cancel it.
 */
static int wait_call(ol_server *srv, ol_call *call, ol_handback *executor, int wake_loop,
                     int client_fd, double timeout)
{
    struct pollfd fds[2] = {{.fd = call->efd, .events = POLLIN},
                            {.fd = client_fd, .events = POLLRDHUP}};
    int nfds = client_fd >= 0 ? 2 : 1;
    double deadline = timeout > 0 ? ol_now() + timeout : 0;
    int want_cancel = 0;
    PyThreadState *ts = PyEval_SaveThread();
    if (wake_loop)
        wake_bridge(srv);
    for (;;) {
        int ms = -1;
        if (deadline > 0) {
            double left = deadline - ol_now();
            ms = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        int r = poll(fds, (nfds_t)nfds, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0 && (fds[0].revents & POLLIN)) {
            if (on_wake(call, executor, &ts))
                break;
            continue;
        }
        if (r == 0) {
            want_cancel = CANCEL_TIMEOUT;
            break;
        }
        if (nfds == 2 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            want_cancel = CANCEL_HANGUP;
            break;
        }
    }
    PyEval_RestoreThread(ts);
    return want_cancel;
}

/* After a cancel request: wait until the coroutine has unwound, still
 * running what it hands this thread (a sync_to_async in a finally block). */
static void wait_done(ol_call *call, ol_handback *executor)
{
    struct pollfd p = {.fd = call->efd, .events = POLLIN};
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        int r = poll(&p, 1, -1);
        if (r > 0 && on_wake(call, executor, &ts))
            break;
    }
    PyEval_RestoreThread(ts);
}

/* The call's context: a copy of the caller's, in which the ContextVar
 * _core.request_executor names the caller's executor (for
 * oneloop.bridge.LoopExecutor, on the loop). The name is set in the caller's
 * own context and stays there: setting a variable costs a HAMT insertion,
 * so later calls from the thread find it set and pay nothing. A context
 * that moved to another thread gets that thread's executor at its first
 * call there; a copy that leaves this thread otherwise (a callback made
 * here and run on the loop) names an executor that does not wait, and
 * LoopExecutor then uses asgiref's own thread instead. */
static PyObject *call_context(ol_state *st, ol_handback *executor)
{
    PyObject *named = NULL;
    if (PyContextVar_Get(st->executor_var, NULL, &named) < 0)
        return NULL;
    Py_XDECREF(named);
    if (named != (PyObject *)executor) {
        PyObject *token = PyContextVar_Set(st->executor_var, (PyObject *)executor);
        if (token == NULL)
            return NULL;
        Py_DECREF(token);
    }
    return PyContext_CopyCurrent();
}

/* Make the context variables the coroutine set visible to the caller. */
static int copy_back(ol_state *st, PyObject *context)
{
    PyObject *vars = PyObject_GetIter(context);
    if (vars == NULL)
        return -1;
    PyObject *var;
    while ((var = PyIter_Next(vars)) != NULL) {
        PyObject *value = var != st->executor_var ? PyObject_GetItem(context, var) : NULL;
        PyObject *current = NULL;
        if (value != NULL && PyContextVar_Get(var, NULL, &current) == 0 && current != value) {
            PyObject *token = PyContextVar_Set(var, value);
            Py_XDECREF(token);
        }
        Py_XDECREF(current);
        Py_XDECREF(value);
        Py_DECREF(var);
        if (PyErr_Occurred())
            break;
    }
    Py_DECREF(vars);
    return PyErr_Occurred() ? -1 : 0;
}

/* The request this thread is serving (wsgi.c), for its client socket and
 * its body. */
extern __thread ol_req *ol_current_request;

/* A call of coro from this thread, with its context; NULL on error. */
static ol_call *new_call(ol_server *srv, PyObject *coro, ol_handback *executor, ol_req *r)
{
    ol_call *call = PyObject_New(ol_call, srv->state->call_type);
    if (call == NULL)
        return NULL;
    memset((char *)call + sizeof(PyObject), 0, sizeof(ol_call) - sizeof(PyObject));
    call->efd = ol_handback_fd(executor);
    call->coro = Py_NewRef(coro);
    call->context = call_context(srv->state, executor);
    call->request = Py_XNewRef((PyObject *)r);
    /* Reads of the body from the loop thread must never wait for the client. */
    if (call->context == NULL || (r != NULL && ol_wsgi_buffer_body(r) < 0))
        Py_CLEAR(call);
    return call;
}

/* Start the call and wait for it to end; cancel it if the client hangs up
 * or the timeout passes, and wait for it to unwind then. */
static void run_call(ol_server *srv, ol_call *call, ol_handback *executor, ol_req *r,
                     double timeout)
{
    /* Once the client is gone, later calls (an async teardown_request) run
     * to the end: watching the hung-up socket would cancel them at once.
     * An HTTP/2 stream's thread does not hold its connection (h2.c), which
     * may close meanwhile: its socket is not watched. */
    int client_fd = -1;
    if (r != NULL && r->conn != NULL && !(r->flags & (REQ_DISCONNECTED | REQ_HTTP2)) &&
        !(r->conn->flags & CONN_CLOSED))
        client_fd = r->conn->fd;
    int wake_loop = 0;
    double began = ol_now();
    if (srv->gate == NULL || !start_here(srv, call))
        wake_loop = enqueue(srv, call, 0);
    int reason = 0;
    if (!__atomic_load_n(&call->done, __ATOMIC_ACQUIRE)) {
        if (r != NULL)
            ol_wsgi_send_gathered(r); /* nothing gathered waits on the loop */
        reason = wait_call(srv, call, executor, wake_loop, client_fd, timeout);
    }
    if (!reason) {
        ol_meter_observe(&srv->meter, &srv->meter.m->bridge, (uint64_t)((ol_now() - began) * 1e6));
        return;
    }
    __atomic_store_n(&call->cancel, 1, __ATOMIC_RELEASE);
    if (enqueue(srv, call, 1))
        wake_bridge(srv);
    wait_done(call, executor);
    /* A timeout is the app's to handle: an ordinary TimeoutError (Flask's
     * error handlers see it). A hang-up stays a CancelledError, which
     * unwinds the view without an answer nobody would read. */
    if (reason == CANCEL_TIMEOUT && call->exc != NULL &&
        PyErr_GivenExceptionMatches(call->exc, srv->state->cancelled_error)) {
        PyObject *timeout_error = PyObject_CallFunction(
            PyExc_TimeoutError, "s", "the async call was cancelled after its timeout");
        if (timeout_error != NULL) {
            PyException_SetCause(timeout_error, Py_NewRef(call->exc));
            Py_SETREF(call->exc, timeout_error);
        }
    }
    if (reason == CANCEL_HANGUP && r != NULL)
        r->flags |= REQ_DISCONNECTED;
}

/*
 * Server.run_coroutine(coro, timeout=None): run coro on the worker loop from
 * another thread and return its result. Raises what the coroutine raised;
 * raises CancelledError when the client of the current request hung up, and
 * TimeoutError when the timeout passed (the coroutine was cancelled and has
 * unwound). While waiting, the thread runs the work submitted to its
 * ThreadExecutor (handback.c), which the coroutine's context names.
 */
/* A call refused before its coroutine was handed to the loop: close the
 * coroutine, as a caller that never awaits it would be warned about it
 * ("coroutine ... was never awaited") when it is collected, and return NULL
 * with the refusal, which an error from close() does not replace. */
static PyObject *refuse(PyObject *coro)
{
    PyObject *refusal = ol_err_take();
    PyObject *close = PyObject_GetAttrString(coro, "close");
    if (close != NULL) {
        PyObject *r = PyObject_CallNoArgs(close);
        Py_DECREF(close);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    ol_err_restore(refusal);
    return NULL;
}

PyObject *ol_bridge_call(ol_server *srv, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "run_coroutine(coro, timeout=None)");
        return nargs >= 1 ? refuse(args[0]) : NULL;
    }
    if (srv->bridge.fd < 0 || srv->closed) {
        PyErr_SetString(PyExc_RuntimeError, "the oneloop worker loop is not running");
        return refuse(args[0]);
    }
    unsigned long me = PyThread_get_thread_ident();
    if (me == srv->loop_thread || (srv->gate != NULL && ol_gate_holder(srv->gate) == me)) {
        PyErr_SetString(
            PyExc_RuntimeError,
            "run_coroutine() called on the event loop thread: await the coroutine instead");
        return refuse(args[0]);
    }
    double timeout = srv->async_timeout;
    if (nargs == 2 && args[1] != Py_None && (timeout = PyFloat_AsDouble(args[1])) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "timeout must not be negative");
        return refuse(args[0]);
    }
    ol_handback *executor = ol_handback_of_thread(srv->state);
    if (executor == NULL)
        return NULL;
    ol_req *r = ol_current_request;
    ol_call *call = new_call(srv, args[0], executor, r);
    if (call == NULL) {
        Py_DECREF(executor);
        return NULL;
    }
    ol_handback_open(executor);
    run_call(srv, call, executor, r, timeout);
    ol_handback_close(executor);
    Py_DECREF(executor);
    PyObject *result = NULL;
    if (copy_back(srv->state, call->context) < 0)
        PyErr_Clear();
    if (call->exc != NULL)
        ol_err_restore(Py_NewRef(call->exc));
    else
        result = Py_NewRef(call->result ? call->result : Py_None);
    Py_DECREF(call);
    return result;
}

static void call_dealloc(ol_call *call)
{
    PyTypeObject *type = Py_TYPE(call);
    Py_XDECREF(call->coro);
    Py_XDECREF(call->context);
    Py_XDECREF(call->result);
    Py_XDECREF(call->exc);
    Py_XDECREF(call->request);
    PyObject_Free(call);
    Py_DECREF(type);
}

static PyObject *call_get_request(ol_call *call, void *closure)
{
    (void)closure;
    return Py_NewRef(call->request ? call->request : Py_None);
}

static PyGetSetDef call_getset[] = {
    {"request", (getter)call_get_request, NULL, "The request whose thread made the call.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot call_slots[] = {
    {Py_tp_doc, "A coroutine call from a thread to the loop (bridge.c)."},
    {Py_tp_dealloc, call_dealloc},
    {Py_tp_getset, call_getset},
    {0, NULL},
};

PyType_Spec ol_call_spec = {
    .name = "oneloop._core.Call",
    .basicsize = sizeof(ol_call),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = call_slots,
};

/* ------------------------------------------------------------------------ */

int ol_bridge_open(ol_server *srv)
{
    if (pthread_mutex_init(&srv->bridge.lock, NULL) != 0)
        return -1;
    srv->bridge.lock_ready = 1;
    srv->bridge.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    srv->bridge.drivers = PyList_New(0);
    srv->loop_thread = PyThread_get_thread_ident();
    /* A gated loop (oneloop.loops) lets callers start their calls themselves. */
    PyObject *gate = PyObject_GetAttrString(srv->loop, "oneloop_gate");
    if (gate != NULL && Py_IS_TYPE(gate, srv->state->gate_type))
        srv->gate = (ol_gate *)Py_NewRef(gate);
    Py_XDECREF(gate);
    PyErr_Clear();
    return (srv->bridge.fd >= 0 && srv->bridge.drivers != NULL) ? 0 : -1;
}

void ol_bridge_close(ol_server *srv)
{
    if (srv->bridge.lock_ready) { /* wake threads whose calls never started */
        pthread_mutex_lock(&srv->bridge.lock);
        ol_call *calls = srv->bridge.queue, *cancels = srv->bridge.cancels;
        srv->bridge.queue = srv->bridge.tail = NULL;
        srv->bridge.cancels = NULL;
        if (srv->bridge.fd >= 0) /* under the lock: see wake_bridge() */
            close(srv->bridge.fd);
        srv->bridge.fd = -1;
        pthread_mutex_unlock(&srv->bridge.lock);
        while (calls != NULL) {
            ol_call *call = calls;
            calls = call->next;
            fail_call(call, PyExc_RuntimeError, "the oneloop worker is stopping");
            Py_DECREF(call);
        }
        while (cancels != NULL) {
            ol_call *call = cancels;
            cancels = call->next_cancel;
            Py_DECREF(call);
        }
    }
    if (srv->bridge.drivers != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(srv->bridge.drivers); i++)
            ol_driver_release((ol_driver *)PyList_GET_ITEM(srv->bridge.drivers, i));
        Py_CLEAR(srv->bridge.drivers);
    }
}
