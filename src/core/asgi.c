/*
 * asgi.c -- the ASGI side of a request: the scope, receive() and send(), and
 * how the app's coroutine is run.
 *
 * Running the app without a Task per request
 * -------------------------------------------
 * Each connection that has served an ASGI request owns one long-lived
 * asyncio.Task, the host task, whose coroutine is a Driver (below). For a new
 * request the server enters the host task (asyncio's _enter_task) and runs
 * the app coroutine's first step directly, inside a fresh copy of the
 * context. Most apps answer without ever suspending: then the request is
 * over with no Task, Future or loop iteration spent on it. If the app does
 * suspend, the driver wakes its host task and hands it what the app yielded;
 * from then on the task drives the coroutine exactly as asyncio would, with
 * asyncio.current_task() the same object throughout, so timeouts, task
 * groups and anyio cancel scopes behave as under any other server.
 *
 * send() returns a shared, already-completed awaitable when the socket takes
 * the bytes, and a Future only when output backs up past the high-water mark.
 * receive() returns a completed awaitable holding the message whenever the
 * body bytes are already here.
 */
#include "core.h"

#include <string.h>

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY   READONLY
#endif

/* ------------------------------------------------------------------------ */
/* Ready: an awaitable whose result is known when it is created.            */

typedef struct {
    PyObject_HEAD
    PyObject *value;
} ol_ready;

static PyObject *ready_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PySendResult ready_send(ol_ready *self, PyObject *arg, PyObject **result)
{
    (void)arg;
    *result = Py_NewRef(self->value);
    return PYGEN_RETURN;
}

/* The path taken under a tracer or debugger, where CPython iterates. */
static PyObject *ready_next(ol_ready *self)
{
    /* StopIteration(value) built explicitly: a tuple value must not be
     * taken for the exception's arguments. */
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, self->value);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *ready_send_method(ol_ready *self, PyObject *arg)
{
    (void)arg;
    return ready_next(self);
}

static PyObject *ready_throw(ol_ready *self, PyObject *args)
{
    (void)self;
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    if (PyExceptionInstance_Check(typ))
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    else
        PyErr_SetObject(typ, val);
    return NULL;
}

static PyObject *ready_close(ol_ready *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_NONE;
}

static int ready_traverse(ol_ready *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->value);
    return 0;
}

static int ready_clear(ol_ready *self)
{
    Py_CLEAR(self->value);
    return 0;
}

static void ready_dealloc(ol_ready *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ready_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef ready_methods[] = {
    {"send", (PyCFunction)ready_send_method, METH_O, NULL},
    {"throw", (PyCFunction)ready_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)ready_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ready_slots[] = {
    {Py_tp_doc, "An awaitable that is already complete."},
    {Py_am_await, ready_await},
    {Py_am_send, ready_send},
    {Py_tp_iter, ready_await},
    {Py_tp_iternext, ready_next},
    {Py_tp_methods, ready_methods},
    {Py_tp_traverse, ready_traverse},
    {Py_tp_clear, ready_clear},
    {Py_tp_dealloc, ready_dealloc},
    {0, NULL},
};

static PyType_Spec ready_spec = {
    .name = "oneloop._core.Ready",
    .basicsize = sizeof(ol_ready),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ready_slots,
};

static PyObject *ready_new(ol_state *st, PyObject *value /* stolen */)
{
    if (value == NULL)
        return NULL;
    ol_ready *r = PyObject_GC_New(ol_ready, st->ready_type);
    if (r == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    r->value = value;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

PyObject *ol_ready_new(ol_state *st, PyObject *value)
{
    return ready_new(st, value);
}

/* ------------------------------------------------------------------------ */
/* Futures                                                                  */

/* Resolve a future unless someone (a cancelled awaiter) already did. */
static void resolve(PyObject *fut, PyObject *value, PyObject *exc)
{
    PyObject *done = PyObject_CallMethod(fut, "done", NULL);
    if (done == NULL) {
        PyErr_Clear();
        return;
    }
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done)
        return;
    PyObject *r = exc ? PyObject_CallMethod(fut, "set_exception", "O", exc)
                      : PyObject_CallMethod(fut, "set_result", "O", value);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */

static PyObject *disconnect_message(ol_state *st)
{
    return Py_BuildValue("{O:O}", st->s_type, st->s_http_disconnect);
}

static PyObject *request_message(ol_state *st, PyObject *body, int more)
{
    return Py_BuildValue("{O:O,O:O,O:O}", st->s_type, st->s_http_request, st->s_body,
                         body ? body : st->b_empty, st->s_more_body, more ? Py_True : Py_False);
}

/* Answer a broken or oversized request body, if the response has not begun. */
static void body_error(ol_req *r, int error)
{
    ol_conn *c = r->conn;
    r->flags |= REQ_DISCONNECTED;
    if (c == NULL)
        return;
    if (!(r->flags & REQ_HEAD_SENT)) {
        int too_large = error == OL_ETOO_LARGE, cut = error == OL_EBODY_CUT;
        int status = too_large ? 413 : ol_error_status(error);
        const char *text = too_large ? "request body too large"
                           : cut     ? "request body cut short"
                                     : ol_strerror(error);
        if (r->carrier->refuse(r, status, text) == OL_REFUSE_NOT_HELD)
            return;
        r->status = status; /* for the access log */
        r->flags |= REQ_HEAD_SENT | REQ_COMPLETE;
        ol_req_detach(r);
        Py_DECREF(r); /* the protocol's reference */
    } else {
        ol_conn_abort(c);
    }
}

/* Take the body bytes at hand as an http.request message; NULL without an
 * exception when nothing is there yet. */
static PyObject *take_body_message(ol_req *r)
{
    ol_state *st = r->server->state;
    ol_conn *c = r->conn;
    PyObject *body = NULL;
    int done = r->carrier->take_body(r, &body);
    if (done < 0) {
        Py_XDECREF(body);
        if (PyErr_Occurred())
            return NULL;
        body_error(r, done);
        return disconnect_message(st);
    }
    /* Input may have been paused for this body; it can flow again. */
    if (!(c->flags & (CONN_READING | CONN_CLOSED)) && c->rlen < r->server->cfg.read_high_water) {
        c->flags |= CONN_READING;
        ol_conn_update_events(c);
    }
    if (!done && body == NULL)
        return NULL;
    if (done)
        r->flags |= REQ_BODY_DONE;
    PyObject *msg = request_message(st, body, !done);
    Py_XDECREF(body);
    return msg;
}

/* ------------------------------------------------------------------------ */
/* receive() and send()                                                     */

static int gone(ol_req *r)
{
    return (r->flags & REQ_DISCONNECTED) || r->conn == NULL || (r->conn->flags & CONN_CLOSED);
}

/* 1 if the future is done (resolved or cancelled); errors count as done. */
int ol_future_is_done(PyObject *fut)
{
    PyObject *done = PyObject_CallMethod(fut, "done", NULL);
    int result = done == NULL ? 1 : PyObject_IsTrue(done);
    Py_XDECREF(done);
    PyErr_Clear();
    return result != 0;
}

static PyObject *asgi_receive(ol_req *r, PyObject *unused)
{
    (void)unused;
    ol_server *srv = r->server;
    ol_state *st = srv->state;
    /* A receive() whose awaiter was cancelled (a timeout, a cancel scope)
     * leaves a done future behind; the app may call receive() again. */
    if (r->receive_waiter != NULL && ol_future_is_done(r->receive_waiter))
        Py_CLEAR(r->receive_waiter);
    if (r->receive_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() is pending");
        return NULL;
    }
    if (!gone(r) && (r->conn->flags & CONN_PEER_CLOSED) && (r->flags & REQ_BODY_DONE))
        r->flags |= REQ_DISCONNECTED; /* EOF seen earlier (ol_asgi_on_eof) */
    if (gone(r) || (r->flags & REQ_COMPLETE))
        return ready_new(st, disconnect_message(st));
    if (!(r->flags & REQ_BODY_DONE)) {
        r->carrier->send_continue(r);
        PyObject *msg = take_body_message(r);
        if (msg != NULL)
            return ready_new(st, msg);
        if (PyErr_Occurred())
            return NULL;
        if (gone(r))
            return ready_new(st, disconnect_message(st));
        /* HTTP/2 keeps a body deadline per stream (h2.c): the connection's
         * is the earliest of its streams'. */
        if (!(r->flags & REQ_HTTP2))
            ol_conn_set_deadline(r->conn, ol_deadline(srv->now, srv->cfg.body_timeout));
    }
    /* Wait for more body, or (body over) for the client to go away. */
    r->receive_waiter = ol_new_future(srv);
    return Py_XNewRef(r->receive_waiter);
}

static PyObject *message_get(PyObject *message, PyObject *key, PyObject *fallback)
{
    PyObject *v = PyDict_GetItemWithError(message, key);
    if (v == NULL && !PyErr_Occurred())
        v = fallback;
    return v;
}

int ol_asgi_is_type(PyObject *type, PyObject *interned)
{
    return type == interned || (PyUnicode_Check(type) && PyUnicode_Compare(type, interned) == 0);
}

PyObject *ol_asgi_send_start(ol_req *r, PyObject *message)
{
    ol_state *st = r->server->state;
    if (r->flags & REQ_STARTED) {
        PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'http.response.body', but got "
                                            "'http.response.start'.");
        return NULL;
    }
    PyObject *status = PyDict_GetItemWithError(message, st->s_status);
    if (status == NULL || !PyLong_Check(status)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "http.response.start needs an int 'status'");
        return NULL;
    }
    int code = (int)PyLong_AsLong(status);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    PyObject *empty = PyTuple_New(0);
    PyObject *headers = message_get(message, st->s_headers, empty);
    int e = headers ? ol_response_begin(r, code, NULL, headers) : -1;
    Py_DECREF(empty);
    if (e < 0)
        return NULL;
    /* Trailers follow, where the protocol offered them (the scope says so). */
    PyObject *trailers =
        r->carrier->send_trailers ? message_get(message, st->s_trailers, Py_False) : Py_False;
    int want = trailers ? PyObject_IsTrue(trailers) : -1;
    if (want < 0)
        return NULL;
    if (want)
        r->flags |= REQ_TRAILERS;
    return Py_NewRef(st->done);
}

/* http.response.trailers: after the body's last message, the trailer
 * fields (more_trailers: more of them follow), which end the response. */
static PyObject *send_trailers(ol_req *r, PyObject *message)
{
    ol_state *st = r->server->state;
    if (!(r->flags & REQ_BODY_ENDED)) {
        PyErr_SetString(PyExc_RuntimeError,
                        (r->flags & REQ_TRAILERS)
                            ? "Unexpected ASGI message 'http.response.trailers' before the last "
                              "'http.response.body'."
                            : "Unexpected ASGI message 'http.response.trailers': "
                              "http.response.start did not announce trailers, or the scope did "
                              "not offer the http.response.trailers extension.");
        return NULL;
    }
    if (gone(r)) {
        PyErr_SetString(st->client_disconnected, "the client disconnected");
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    PyObject *headers = empty ? message_get(message, st->s_headers, empty) : NULL;
    PyObject *more = headers ? message_get(message, st->s_more_trailers, Py_False) : NULL;
    int more_trailers = more ? PyObject_IsTrue(more) : -1;
    int e = more_trailers < 0 ? -1 : ol_response_trailers(r, headers, more_trailers);
    Py_XDECREF(empty);
    if (e < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(st->client_disconnected, "the client disconnected");
        return NULL;
    }
    if (!more_trailers)
        r->flags &= ~REQ_BODY_ENDED;
    return Py_NewRef(st->done);
}

PyObject *ol_asgi_send_body(ol_req *r, PyObject *message)
{
    ol_server *srv = r->server;
    ol_state *st = srv->state;
    if (!(r->flags & REQ_STARTED)) {
        PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'http.response.start', but got "
                                            "'http.response.body'.");
        return NULL;
    }
    /* A response the server completed itself (an error answer to a broken
     * body) is the client's doing: ClientDisconnected below, not misuse. */
    if (((r->flags & REQ_COMPLETE) && !(r->flags & REQ_DISCONNECTED)) ||
        (r->flags & REQ_BODY_ENDED)) {
        PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'http.response.body' sent, "
                                            "after response already completed.");
        return NULL;
    }
    PyObject *body = message_get(message, st->s_body, st->b_empty);
    PyObject *more = body ? message_get(message, st->s_more_body, Py_False) : NULL;
    if (more == NULL)
        return NULL;
    int more_body = PyObject_IsTrue(more);
    Py_buffer view;
    if (more_body < 0 || PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (gone(r)) {
        PyBuffer_Release(&view);
        PyErr_SetString(st->client_disconnected, "the client disconnected");
        return NULL;
    }
    /* With trailers to come, the body's last message does not end the
     * response: the trailers do. */
    int ends_body = !more_body && (r->flags & REQ_TRAILERS);
    int e = ol_response_body(r, view.buf, (size_t)view.len, more_body || ends_body);
    PyBuffer_Release(&view);
    if (ends_body)
        r->flags |= REQ_BODY_ENDED;
    if (e < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(st->client_disconnected, "the client disconnected");
        return NULL;
    }
    if (more_body && r->conn != NULL && r->carrier->pending(r) > srv->cfg.write_high_water) {
        Py_XSETREF(r->send_waiter, ol_new_future(srv));
        return Py_XNewRef(r->send_waiter);
    }
    return Py_NewRef(st->done);
}

PyObject *ol_asgi_message_type(ol_state *st, PyObject *message)
{
    if (!PyDict_Check(message)) {
        PyErr_Format(PyExc_TypeError, "ASGI messages are dicts, not %.100s",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    PyObject *type = PyDict_GetItemWithError(message, st->s_type);
    if (type == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_KeyError, "ASGI message without 'type'");
    return type;
}

static PyObject *asgi_send(ol_req *r, PyObject *message)
{
    ol_state *st = r->server->state;
    PyObject *type = ol_asgi_message_type(st, message);
    if (type == NULL)
        return NULL;
    if (ol_asgi_is_type(type, st->s_http_response_body))
        return ol_asgi_send_body(r, message);
    if (ol_asgi_is_type(type, st->s_http_response_start))
        return ol_asgi_send_start(r, message);
    if (ol_asgi_is_type(type, st->s_http_response_trailers))
        return send_trailers(r, message);
    PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R", type);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The receive and send callables the app gets                              */

/*
 * One small object each, holding its request: 48 bytes (the collector's
 * header included) where a bound built-in method takes 72. An app holds
 * both for as long as it runs, a whole WebSocket session. Called through
 * vectorcall, as a built-in method is; __self__ (the Request) and __name__
 * are a bound method's.
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    ol_req *req; /* strong; NULL once cleared by the collector */
} ol_channel;

static ol_req *channel_req(PyObject *self, size_t nargsf, PyObject *kwnames, Py_ssize_t nargs)
{
    ol_channel *ch = (ol_channel *)self;
    const char *name = nargs ? "send" : "receive";
    if (PyVectorcall_NARGS(nargsf) != nargs || (kwnames && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_Format(PyExc_TypeError,
                     nargs ? "%s() takes exactly one argument" : "%s() takes no arguments", name);
        return NULL;
    }
    if (ch->req == NULL)
        PyErr_Format(PyExc_RuntimeError, "%s() of a request that no longer exists", name);
    return ch->req;
}

static PyObject *receive_call(PyObject *self, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames)
{
    (void)args;
    ol_req *r = channel_req(self, nargsf, kwnames, 0);
    if (r == NULL)
        return NULL;
    return (r->flags & REQ_WEBSOCKET) ? ol_asgi_ws_receive(r) : asgi_receive(r, NULL);
}

static PyObject *send_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ol_req *r = channel_req(self, nargsf, kwnames, 1);
    if (r == NULL)
        return NULL;
    return (r->flags & REQ_WEBSOCKET) ? ol_asgi_ws_send(r, args[0]) : asgi_send(r, args[0]);
}

static int channel_traverse(ol_channel *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT((PyObject *)self->req);
    return 0;
}

static int channel_clear(ol_channel *self)
{
    Py_CLEAR(self->req);
    return 0;
}

static void channel_dealloc(ol_channel *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    channel_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *channel_get_self(ol_channel *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->req ? (PyObject *)self->req : Py_None);
}

static PyObject *channel_get_name(ol_channel *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(self->vectorcall == receive_call ? "receive" : "send");
}

static PyGetSetDef channel_getset[] = {
    {"__self__", (getter)channel_get_self, NULL, "The Request it belongs to.", NULL},
    {"__name__", (getter)channel_get_name, NULL, "receive or send.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef channel_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(ol_channel, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot receive_slots[] = {
    {Py_tp_doc, "receive(): await the next ASGI event."},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getset, channel_getset},
    {Py_tp_members, channel_members},
    {Py_tp_traverse, channel_traverse},
    {Py_tp_clear, channel_clear},
    {Py_tp_dealloc, channel_dealloc},
    {0, NULL},
};

static PyType_Slot send_slots[] = {
    {Py_tp_doc, "send(message): send an ASGI message."},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getset, channel_getset},
    {Py_tp_members, channel_members},
    {Py_tp_traverse, channel_traverse},
    {Py_tp_clear, channel_clear},
    {Py_tp_dealloc, channel_dealloc},
    {0, NULL},
};

#define CHANNEL_FLAGS                                                                              \
    (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |                          \
     Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_VECTORCALL)

static PyType_Spec receive_spec = {
    .name = "oneloop._core.Receive",
    .basicsize = sizeof(ol_channel),
    .flags = CHANNEL_FLAGS,
    .slots = receive_slots,
};

static PyType_Spec send_spec = {
    .name = "oneloop._core.Send",
    .basicsize = sizeof(ol_channel),
    .flags = CHANNEL_FLAGS,
    .slots = send_slots,
};

static PyObject *channel_new(PyTypeObject *type, vectorcallfunc call, ol_req *r)
{
    ol_channel *ch = PyObject_GC_New(ol_channel, type);
    if (ch == NULL)
        return NULL;
    ch->vectorcall = call;
    ch->req = (ol_req *)Py_NewRef((PyObject *)r);
    PyObject_GC_Track(ch);
    return (PyObject *)ch;
}

/* ------------------------------------------------------------------------ */
/* Events from the connection                                               */

void ol_future_take(PyObject **slot, PyObject *value, PyObject *exc)
{
    PyObject *fut = *slot;
    *slot = NULL;
    resolve(fut, value, exc);
    Py_DECREF(fut);
}

static void asgi_on_body(ol_req *r)
{
    if (r->receive_waiter == NULL || (r->flags & REQ_BODY_DONE))
        return;
    if (ol_future_is_done(
            r->receive_waiter)) { /* cancelled: keep the bytes for the next receive() */
        Py_CLEAR(r->receive_waiter);
        return;
    }
    PyObject *msg = take_body_message(r);
    if (msg == NULL) {
        if (PyErr_Occurred())
            ol_log_error(r->server, "cannot read a request body");
        return;
    }
    ol_future_take(&r->receive_waiter, msg, NULL);
    Py_DECREF(msg);
}

void ol_asgi_wake_gone(ol_req *r, PyObject *message, const char *why)
{
    ol_state *st = r->server->state;
    r->flags |= REQ_DISCONNECTED;
    if (r->receive_waiter != NULL && message != NULL)
        ol_future_take(&r->receive_waiter, message, NULL);
    Py_XDECREF(message);
    if (r->send_waiter != NULL) {
        PyObject *exc = PyObject_CallFunction(st->client_disconnected, "s", why);
        if (exc != NULL) {
            ol_future_take(&r->send_waiter, NULL, exc);
            Py_DECREF(exc);
        }
    }
    PyErr_Clear(); /* a message or exception that could not be made: nobody to tell */
}

static void asgi_on_disconnect(ol_req *r)
{
    if (r->flags & REQ_WEBSOCKET) {
        ol_asgi_ws_disconnected(r);
        return;
    }
    PyObject *msg = r->receive_waiter != NULL ? disconnect_message(r->server->state) : NULL;
    ol_asgi_wake_gone(r, msg, "the client disconnected");
}

/* EOF after a complete request: a half-close (the client still reads our
 * answer) or a disconnect -- the two look the same. An app that listens
 * with receive() is told http.disconnect, and from then on send() raises,
 * as after any disconnect; an app that only sends goes on until the socket
 * itself refuses, which serves half-closing clients. */
static void asgi_on_eof(ol_req *r)
{
    if (r->flags & REQ_WEBSOCKET) { /* a WebSocket client does not half-close */
        ol_asgi_ws_disconnected(r);
        return;
    }
    if (r->conn != NULL && !r->conn->body_done) {
        /* The client closed its side inside the body: the message can never
         * be complete. The app hears http.disconnect; the client gets 400
         * (if no response has begun) rather than a silent close. The
         * request may be freed by body_error, so it comes last. */
        asgi_on_disconnect(r);
        body_error(r, OL_EBODY_CUT);
        return;
    }
    if (r->receive_waiter != NULL && (r->flags & REQ_BODY_DONE))
        asgi_on_disconnect(r);
}

static void asgi_on_drain(ol_req *r)
{
    if (r->send_waiter != NULL && r->conn != NULL &&
        r->carrier->pending(r) <= r->server->cfg.write_low_water)
        ol_future_take(&r->send_waiter, Py_None, NULL);
}

/* ------------------------------------------------------------------------ */
/* The scope                                                                */

/* Lower-cased header name, shared for the common ones (known: its index
 * in st->header_names, or -1). */
static PyObject *header_name(ol_state *st, int known, ol_span name)
{
    if (known >= 0)
        return Py_NewRef(st->header_names[known]);
    PyObject *b = PyBytes_FromStringAndSize(name.base, (Py_ssize_t)name.len);
    if (b != NULL) {
        char *p = PyBytes_AS_STRING(b);
        for (size_t i = 0; i < name.len; i++)
            if (p[i] >= 'A' && p[i] <= 'Z')
                p[i] = (char)(p[i] | 0x20);
    }
    return b;
}

/* Values at most this long of a common header share their (name, value)
 * pair with the last request that sent the same. */
#define SHARED_VALUE_MAX 64

/*
 * One (name, value) pair of scope["headers"]. A field with a common name
 * and a short value (Host, Upgrade, Connection, Sec-WebSocket-Version,
 * User-Agent, Accept, ...) is usually the same from request to request:
 * the last pair made for each common name is kept, and a request that
 * sends the same value gets that pair rather than a tuple and a bytes
 * object of its own (both are immutable). An idle WebSocket holds its
 * headers for the whole session: about 100 bytes less for each field
 * shared.
 */
static PyObject *header_pair(ol_state *st, const ol_header *f)
{
    int known = ol_common_header(st, f->name);
    int shared = known >= 0 && f->value.len <= SHARED_VALUE_MAX;
    PyObject *last = shared ? st->header_pairs[known] : NULL;
    if (last != NULL) {
        PyObject *v = PyTuple_GET_ITEM(last, 1);
        if ((size_t)PyBytes_GET_SIZE(v) == f->value.len &&
            memcmp(PyBytes_AS_STRING(v), f->value.base, f->value.len) == 0)
            return Py_NewRef(last);
    }
    PyObject *name = header_name(st, known, f->name);
    PyObject *value =
        name ? PyBytes_FromStringAndSize(f->value.base, (Py_ssize_t)f->value.len) : NULL;
    PyObject *pair = value ? PyTuple_Pack(2, name, value) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(value);
    if (pair != NULL && shared)
        Py_XSETREF(st->header_pairs[known], Py_NewRef(pair));
    return pair;
}

static PyObject *scope_headers(ol_state *st, const ol_request *h)
{
    PyObject *list = PyList_New((Py_ssize_t)h->num_headers);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < h->num_headers; i++) {
        PyObject *pair = header_pair(st, &h->headers[i]);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

/* X-Forwarded-Proto names http or https; a WebSocket's scheme is ws or wss. */
static int ws_scheme_behind_proxy(PyObject *scope, ol_state *st)
{
    PyObject *scheme = PyDict_GetItemWithError(scope, st->s_scheme);
    if (scheme == NULL || !PyUnicode_Check(scheme))
        return PyErr_Occurred() ? -1 : 0;
    if (PyUnicode_CompareWithASCIIString(scheme, "https") == 0)
        return PyDict_SetItem(scope, st->s_scheme, st->s_wss);
    if (PyUnicode_CompareWithASCIIString(scheme, "http") == 0)
        return PyDict_SetItem(scope, st->s_scheme, st->s_ws);
    return 0;
}

/* scope["extensions"]["http.response.trailers"]: the protocol can send them. */
static int offer_trailers(PyObject *scope, ol_state *st)
{
    PyObject *ext = PyDict_New();
    PyObject *empty = ext ? PyDict_New() : NULL;
    int e = empty ? PyDict_SetItem(ext, st->s_http_response_trailers, empty) : -1;
    Py_XDECREF(empty);
    return e < 0 ? (Py_XDECREF(ext), -1) : ol_dict_put(scope, st->s_extensions, ext);
}

static PyObject *build_scope(ol_conn *c, const ol_request *h, ol_req *r)
{
    ol_server *srv = c->server;
    ol_state *st = srv->state;
    ol_target t;
    ol_split_target(h->target, &t);
    PyObject *scope = PyDict_New();
    if (scope == NULL)
        return NULL;
    int ws = (r->flags & REQ_WEBSOCKET) != 0, tls = c->listener->ssl_context != NULL;
    PyObject *scheme = ws ? (tls ? st->s_wss : st->s_ws) : (tls ? st->s_https : st->s_http);
    PyObject *raw_path = ol_raw_path(srv, t.path);
    int e = ol_dict_put(scope, st->s_type, Py_NewRef(ws ? st->s_websocket : st->s_http)) ||
            ol_dict_put(scope, st->s_asgi, Py_NewRef(srv->asgi_info)) ||
            ol_dict_put(scope, st->s_http_version,
                        Py_NewRef(h->version_major == 2 ? st->s_2
                                  : h->version_minor    ? st->s_1_1
                                                        : st->s_1_0)) ||
            (!ws && ol_dict_put(scope, st->s_method, Py_NewRef(r->method))) ||
            ol_dict_put(scope, st->s_scheme, Py_NewRef(scheme)) ||
            ol_dict_put(scope, st->s_path, ol_decode_path(srv, t.path)) ||
            ol_dict_put(scope, st->s_raw_path, raw_path) ||
            ol_dict_put(scope, st->s_query_string,
                        PyBytes_FromStringAndSize(t.query.base, (Py_ssize_t)t.query.len)) ||
            ol_dict_put(scope, st->s_root_path, Py_NewRef(srv->root_path)) ||
            ol_dict_put(scope, st->s_headers, Py_XNewRef(r->req_headers)) ||
            ol_dict_put(scope, st->s_client, Py_XNewRef(r->client)) ||
            ol_dict_put(scope, st->s_server, Py_NewRef(c->listener->server_addr));
    if (e == 0)
        e = ol_dict_put(scope, st->s_state,
                        srv->lifespan_state ? PyDict_Copy(srv->lifespan_state) : PyDict_New());
    if (e == 0 && srv->proxy_trusted != NULL)
        e = ol_apply_proxy_headers(srv, r, scope, st->s_client, st->s_scheme);
    if (e == 0 && ws)
        e = ws_scheme_behind_proxy(scope, st) || ol_asgi_ws_scope(r, scope);
    else if (e == 0 && r->carrier->send_trailers != NULL)
        e = offer_trailers(scope, st);
    if (e != 0) {
        Py_DECREF(scope);
        return NULL;
    }
    return scope;
}

/* ------------------------------------------------------------------------ */
/* Running the app on the connection's host task (driver.c)                */

static void app_finished(ol_req *r, PyObject *exc);

static void app_done(PyObject *owner, PyObject *result, PyObject *exc)
{
    (void)result;
    app_finished((ol_req *)owner, exc);
}

/*
 * Drivers (each with its asyncio Task) are shared: a connection holds one
 * only while it has requests, and an idle keep-alive connection gives its
 * driver back to the server's pool, so it holds no task (about 800 bytes
 * less per idle connection). The pool keeps at most DRIVER_POOL_MAX.
 */
#define DRIVER_POOL_MAX 1024

/* A ready driver from the pool, or NULL (with an exception on error). */
static ol_driver *pooled_driver(ol_server *srv)
{
    PyObject *pool = srv->idle_drivers;
    Py_ssize_t n;
    while (pool != NULL && (n = PyList_GET_SIZE(pool)) > 0) {
        ol_driver *d = (ol_driver *)Py_NewRef(PyList_GET_ITEM(pool, n - 1));
        if (PyList_SetSlice(pool, n - 1, n, NULL) < 0) {
            Py_DECREF(d);
            return NULL;
        }
        if (ol_driver_ready(d))
            return d;
        ol_driver_release(d);
        Py_DECREF(d);
    }
    return NULL;
}

/* The connection's driver, ready for a new coroutine. One still running the
 * previous app (work after its response) keeps running it, released. */
static ol_driver *driver_for(ol_conn *c)
{
    ol_driver *d = (ol_driver *)c->driver;
    if (d != NULL && ol_driver_ready(d))
        return d;
    if (d != NULL) {
        ol_driver_release(d);
        Py_CLEAR(c->driver);
    }
    d = pooled_driver(c->server);
    if (d == NULL && !PyErr_Occurred())
        d = ol_driver_new(c->server);
    c->driver = (PyObject *)d;
    return d;
}

/* Keep d in the pool: 0, or -1 when the pool is full (or out of memory). */
static int pool_add(ol_server *srv, ol_driver *d)
{
    if (srv->idle_drivers == NULL && (srv->idle_drivers = PyList_New(0)) == NULL) {
        PyErr_Clear(); /* the driver ends instead; nothing is lost */
        return -1;
    }
    if (PyList_GET_SIZE(srv->idle_drivers) >= DRIVER_POOL_MAX)
        return -1;
    if (PyList_Append(srv->idle_drivers, (PyObject *)d) < 0) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

/* The connection has no request left: its driver goes back to the pool, or,
 * if the app still runs after its response, finishes that and ends. */
static void asgi_on_idle(ol_conn *c)
{
    ol_server *srv = c->server;
    ol_driver *d = (ol_driver *)c->driver;
    if (d == NULL)
        return;
    c->driver = NULL;
    if (ol_driver_ready(d) && pool_add(srv, d) == 0) {
        Py_DECREF(d);
        return;
    }
    ol_driver_release(d);
    Py_DECREF(d);
}

/* The server closes: the pooled drivers' tasks end. */
void ol_asgi_close(ol_server *srv)
{
    if (srv->idle_drivers == NULL)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(srv->idle_drivers); i++)
        ol_driver_release((ol_driver *)PyList_GET_ITEM(srv->idle_drivers, i));
    Py_CLEAR(srv->idle_drivers);
}

/* ------------------------------------------------------------------------ */
/* Dispatch and completion                                                  */

/* What an app raises because its client is gone: asyncio's cancellation,
 * our ClientDisconnected, any OSError of a socket it wrote to itself, and a
 * framework's own disconnect exception (Starlette's ClientDisconnect,
 * raised when a body read hears http.disconnect), known by its class name
 * so that no framework has to be imported. */
static int is_disconnect_error(ol_state *st, PyObject *exc)
{
    if (PyErr_GivenExceptionMatches(exc, st->cancelled_error) ||
        PyErr_GivenExceptionMatches(exc, PyExc_OSError))
        return 1;
    PyObject *mro = Py_TYPE(exc)->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        const char *name = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_name;
        const char *dot = strrchr(name, '.');
        if (strcmp(dot ? dot + 1 : name, "ClientDisconnect") == 0)
            return 1;
    }
    return 0;
}

static void app_finished(ol_req *r, PyObject *exc)
{
    ol_server *srv = r->server;
    ol_state *st = srv->state;
    ol_meter_set(&srv->meter.m->in_flight, --srv->active);
    Py_CLEAR(r->receive_waiter);
    Py_CLEAR(r->send_waiter);
    /* The server never cancels an app, so a CancelledError is the app's own
     * failure, like any other exception -- unless the client is gone, in
     * which case there is nobody to tell; the same for the
     * ClientDisconnected our own send() raised once it was gone (an app
     * that lets it escape, as a framework's disconnect exception does). */
    int gone = (r->flags & REQ_DISCONNECTED) != 0;
    int quiet = exc != NULL && gone && is_disconnect_error(st, exc);
    if (exc != NULL) {
        char what[256], message[320];
        ol_req_describe(r, what, sizeof(what));
        snprintf(message, sizeof(message),
                 quiet ? "ASGI application (%s) ended after its client left"
                       : "Exception in ASGI application (%s)",
                 what);
        if (quiet) {
            ol_log_debug_exc(srv, message, exc);
        } else {
            ol_err_restore(Py_NewRef(exc));
            ol_log_error(srv, message);
        }
    }
    if ((r->flags & REQ_WEBSOCKET) && ol_asgi_ws_finished(r, exc))
        return;
    if (r->flags & REQ_COMPLETE)
        return;
    /* An app that stops because its client left (a WebSocket whose accept
     * raised ClientDisconnected, a request that heard http.disconnect) has
     * nobody to answer: not an error of the app's. */
    if (exc == NULL && !gone)
        ol_log_error(srv, (r->flags & REQ_STARTED)
                              ? "ASGI callable returned without completing the response"
                              : "ASGI callable returned without starting a response");
    /* A WebSocket client that left before the accept gets no 500 (nor
     * does the access log count one): the connection just closes. An HTTP
     * client that half-closed may still read one. */
    ol_req_fail(r, quiet || (gone && (r->flags & REQ_WEBSOCKET)) ? 0 : 500);
}

static PyObject *call_app(ol_server *srv, PyObject *scope, PyObject *receive, PyObject *send)
{
    if (srv->interface == OL_ASGI2) {
        PyObject *instance = PyObject_CallOneArg(srv->app, scope);
        if (instance == NULL)
            return NULL;
        PyObject *coro = PyObject_CallFunctionObjArgs(instance, receive, send, NULL);
        Py_DECREF(instance);
        return coro;
    }
    PyObject *args[3] = {scope, receive, send};
    return PyObject_Vectorcall(srv->app, args, 3, NULL);
}

/* A coroutine to step: coroutines as they are, other awaitables through
 * their __await__ iterator. */
static PyObject *as_steppable(PyObject *awaitable)
{
    if (PyCoro_CheckExact(awaitable))
        return awaitable;
    unaryfunc am_await =
        Py_TYPE(awaitable)->tp_as_async ? Py_TYPE(awaitable)->tp_as_async->am_await : NULL;
    if (am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "the ASGI app returned %.100s, not an awaitable",
                     Py_TYPE(awaitable)->tp_name);
        Py_DECREF(awaitable);
        return NULL;
    }
    PyObject *it = am_await(awaitable);
    Py_DECREF(awaitable);
    return it;
}

static void start_app(ol_conn *c, ol_req *r, PyObject *scope)
{
    ol_server *srv = c->server;
    ol_state *st = srv->state;
    PyObject *receive = channel_new(st->receive_type, receive_call, r);
    PyObject *send = receive ? channel_new(st->send_type, send_call, r) : NULL;
    PyObject *coro = (receive && send) ? call_app(srv, scope, receive, send) : NULL;
    Py_XDECREF(receive);
    Py_XDECREF(send);
    if (coro != NULL)
        coro = as_steppable(coro);
    ol_driver *d = coro != NULL ? driver_for(c) : NULL;
    int e = -1;
    if (d != NULL)
        e = ol_driver_start(d, coro, PyContext_Copy(srv->base_context), app_done, (PyObject *)r);
    else
        Py_XDECREF(coro);
    if (e < 0 && !(r->flags & REQ_COMPLETE)) {
        PyObject *exc = ol_err_take();
        app_finished(r, exc);
        Py_XDECREF(exc);
    }
}

/* The scope, built while the head's bytes are still in the buffer. */
static int asgi_prepare(ol_req *r, const ol_request *h)
{
    r->req_headers = scope_headers(r->server->state, h);
    r->scope = r->req_headers ? build_scope(r->conn, h, r) : NULL;
    return r->scope != NULL ? 0 : -1;
}

static void asgi_run(ol_req *r)
{
    PyObject *scope = r->scope;
    r->scope = NULL;
    ol_meter_set(&r->server->meter.m->in_flight, ++r->server->active);
    start_app(r->conn, r, scope);
    Py_DECREF(scope);
}

static void asgi_release(ol_req *r)
{
    Py_DECREF(r);
}

static int asgi_waits_for_client(const ol_req *r)
{
    return r->receive_waiter != NULL && !(r->flags & REQ_BODY_DONE);
}

/* The connection closes: the driver it holds finishes what it runs (an app
 * still working after its response) and ends. */
static void asgi_on_close(ol_conn *c)
{
    if (c->driver != NULL) {
        ol_driver_release((ol_driver *)c->driver);
        Py_CLEAR(c->driver);
    }
}

const ol_handler ol_asgi_handler = {
    .prepare = asgi_prepare,
    .run = asgi_run,
    .release = asgi_release,
    .on_body = asgi_on_body,
    .on_disconnect = asgi_on_disconnect,
    .on_eof = asgi_on_eof,
    .on_drain = asgi_on_drain,
    .waits_for_client = asgi_waits_for_client,
    .ws_message = ol_asgi_ws_message,
    .ws_closed = ol_asgi_ws_closed,
    .ws_end = ol_asgi_ws_end,
    .on_idle = asgi_on_idle,
    .on_close = asgi_on_close,
};

/* ------------------------------------------------------------------------ */

int ol_asgi_init_types(PyObject *module, ol_state *st)
{
    st->ready_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ready_spec, NULL);
    st->driver_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ol_driver_spec, NULL);
    st->receive_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &receive_spec, NULL);
    st->send_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &send_spec, NULL);
    if (st->ready_type == NULL || st->driver_type == NULL || st->receive_type == NULL ||
        st->send_type == NULL)
        return -1;
    st->done = ready_new(st, Py_NewRef(Py_None));
    return st->done == NULL ? -1 : 0;
}
