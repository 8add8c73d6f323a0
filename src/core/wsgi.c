/*
 * wsgi.c -- PEP 3333 on a pool thread: environ, start_response and write(),
 * wsgi.input, wsgi.file_wrapper (sendfile), and the response iteration.
 *
 * The thread serving a connection owns it for the whole request, so reading
 * the body and writing the response are plain blocking socket calls with
 * the GIL released; a slow client holds up its own thread and nothing else.
 *
 * A WebSocket upgrade may take the connection over, as under gunicorn's
 * gthread worker (flask-sock, simple-websocket, python-engineio): see
 * "Taking the connection over" below.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

/* The request each pool thread is serving, for the bridge (bridge.c). */
__thread ol_req *ol_current_request;

/* ------------------------------------------------------------------------ */
/* wsgi.input                                                               */

typedef struct {
    PyObject_HEAD
    ol_req *request; /* strong */
    char *buf;       /* decoded body bytes not read by the app yet */
    size_t pos, len, cap;
    PyObject *sock; /* while the socket is lent: environ["gunicorn.socket"] (strong) */
} ol_input;

static int input_append(ol_input *in, const char *data, size_t n)
{
    if (in->pos == in->len)
        in->pos = in->len = 0;
    if (in->cap - in->len < n) {
        if (in->pos > 0) {
            memmove(in->buf, in->buf + in->pos, in->len - in->pos);
            in->len -= in->pos;
            in->pos = 0;
        }
        size_t cap = in->cap ? in->cap : 8192;
        while (cap - in->len < n)
            cap *= 2;
        char *p = PyMem_Realloc(in->buf, cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        in->buf = p;
        in->cap = cap;
    }
    memcpy(in->buf + in->len, data, n);
    in->len += n;
    return 0;
}

/* Raise the error a broken body gives the app; remember the status for the
 * response if the app has not started one. */
static int body_failed(ol_input *in, int error)
{
    ol_req *r = in->request;
    if (error == OL_ETOO_LARGE) {
        r->error_status = 413;
        PyErr_SetString(PyExc_ValueError, "request body larger than the server allows");
    } else if (error == OL_ETIMEOUT) {
        r->error_status = 408;
        PyErr_SetString(r->server->state->client_disconnected,
                        "timed out reading the request body");
    } else if (error == OL_EDISCONNECTED) {
        PyErr_SetString(r->server->state->client_disconnected, "the client disconnected");
    } else if (error == OL_EBODY_CUT) {
        /* A half-close inside the body: the client may still read, and the
         * message is malformed, so it gets 400 if the app lets this out. */
        r->error_status = 400;
        PyErr_SetString(r->server->state->client_disconnected,
                        "the client closed its side before the request body ended");
    } else {
        r->error_status = ol_error_status(error);
        PyErr_Format(PyExc_ValueError, "malformed request body: %s", ol_strerror(error));
    }
    return -1;
}

/* Move body bytes from the connection into the input buffer until `want`
 * bytes are buffered (or the body ends). Blocks for more with the GIL
 * released. Returns 0 or -1 with an exception. */
static int input_fill(ol_input *in, size_t want)
{
    ol_req *r = in->request;
    ol_conn *c = r->conn;
    while (in->len - in->pos < want) {
        if ((r->flags & REQ_BODY_DONE) || c == NULL)
            return 0;
        /* Closed: an HTTP/1.1 body already read in full still ends well.
         * (An HTTP/2 stream's thread does not hold its connection: its
         * carrier tells.) */
        if (!(r->flags & REQ_HTTP2) && (c->flags & CONN_CLOSED))
            return c->body_done ? 0 : body_failed(in, OL_EDISCONNECTED);
        if (r->carrier->send_continue(r) < 0)
            return body_failed(in, OL_EDISCONNECTED);
        PyObject *piece = NULL;
        int done = r->carrier->take_body(r, &piece);
        int got = piece != NULL;
        if (got) {
            int e = input_append(in, PyBytes_AS_STRING(piece), (size_t)PyBytes_GET_SIZE(piece));
            Py_DECREF(piece);
            if (e < 0)
                return -1;
        }
        if (done < 0)
            return PyErr_Occurred() ? -1 : body_failed(in, done);
        if (done)
            r->flags |= REQ_BODY_DONE;
        if (done || in->len - in->pos >= want || got)
            continue; /* got something: there may be more already buffered */
        int e = r->carrier->await_body(r);
        if (e < 0)
            return body_failed(in, e);
    }
    return 0;
}

/* Responses to the pipelined requests before this one are gathered to
 * leave in one write with the next ones (h1.c); what would make them wait
 * on the app's pace or on the client sends them now: a body that streams (the write
 * callable, an iterable that is not a list or tuple once its first piece
 * is out), sendfile, a call to the loop. This response's own output then
 * goes out as it is made. */
void ol_wsgi_send_gathered(ol_req *r)
{
    ol_conn *c = r->conn;
    if (c != NULL && !(r->flags & REQ_HTTP2) &&
        ((c->flags & CONN_CORKED) || ol_conn_pending(c) > 0))
        ol_conn_uncork(c);
}

/* A body read in full before a coroutine runs on the loop is kept in memory
 * up to this size; reading more than that from the loop thread waits for
 * the client (see docs/one-loop.md). */
#define BUFFER_BODY_MAX (16u << 20)

int ol_wsgi_buffer_body(ol_req *r)
{
    ol_conn *c = r->conn;
    if (r->input == NULL || c == NULL || (r->flags & REQ_BODY_DONE))
        return 0;
    return input_fill((ol_input *)r->input, BUFFER_BODY_MAX);
}

static PyObject *input_take(ol_input *in, size_t n)
{
    size_t avail = in->len - in->pos;
    if (n > avail)
        n = avail;
    PyObject *b = PyBytes_FromStringAndSize(in->buf ? in->buf + in->pos : "", (Py_ssize_t)n);
    if (b != NULL)
        in->pos += n;
    return b;
}

static Py_ssize_t size_arg(PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 0 || args[0] == Py_None)
        return -1;
    return PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
}

static PyObject *input_read(ol_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size = size_arg(args, nargs);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) { /* everything */
        if (input_fill(in, SIZE_MAX) < 0)
            return NULL;
        return input_take(in, SIZE_MAX);
    }
    if (input_fill(in, (size_t)size) < 0)
        return NULL;
    return input_take(in, (size_t)size);
}

static PyObject *input_readline(ol_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit = size_arg(args, nargs);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    size_t scanned = 0;
    for (;;) {
        size_t avail = in->len - in->pos;
        const char *nl =
            avail > scanned ? memchr(in->buf + in->pos + scanned, '\n', avail - scanned) : NULL;
        if (nl != NULL)
            avail = (size_t)(nl - (in->buf + in->pos)) + 1;
        if (limit >= 0 && avail >= (size_t)limit)
            return input_take(in, (size_t)limit);
        if (nl != NULL)
            return input_take(in, avail);
        scanned = avail;
        size_t before = in->len - in->pos;
        if (input_fill(in, before + 1) < 0)
            return NULL;
        if (in->len - in->pos == before) /* end of body */
            return input_take(in, before);
    }
}

static PyObject *input_readlines(ol_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint = size_arg(args, nargs);
    if (hint == -1 && PyErr_Occurred())
        return NULL;
    PyObject *lines = PyList_New(0);
    Py_ssize_t total = 0;
    while (lines != NULL) {
        PyObject *line = input_readline(in, NULL, 0);
        if (line == NULL || PyBytes_GET_SIZE(line) == 0 || PyList_Append(lines, line) < 0) {
            if (line == NULL)
                Py_CLEAR(lines);
            Py_XDECREF(line);
            break;
        }
        total += PyBytes_GET_SIZE(line);
        Py_DECREF(line);
        if (hint > 0 && total >= hint)
            break;
    }
    return lines;
}

static PyObject *input_iter(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *input_next(ol_input *in)
{
    PyObject *line = input_readline(in, NULL, 0);
    if (line != NULL && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static int input_traverse(ol_input *in, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(in));
    Py_VISIT((PyObject *)in->request);
    Py_VISIT(in->sock);
    return 0;
}

static int input_clear(ol_input *in)
{
    Py_CLEAR(in->request);
    Py_CLEAR(in->sock);
    return 0;
}

static void input_dealloc(ol_input *in)
{
    PyTypeObject *type = Py_TYPE(in);
    PyObject_GC_UnTrack(in);
    input_clear(in);
    PyMem_Free(in->buf);
    type->tp_free((PyObject *)in);
    Py_DECREF(type);
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL, "read(size=-1) -> bytes"},
    {"readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL,
     "readline(size=-1) -> bytes"},
    {"readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL,
     "readlines(hint=-1) -> list of bytes"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot input_slots[] = {
    {Py_tp_doc, "wsgi.input: the request body, read from the socket as the app asks."},
    {Py_tp_methods, input_methods},
    {Py_tp_iter, input_iter},
    {Py_tp_iternext, input_next},
    {Py_tp_traverse, input_traverse},
    {Py_tp_clear, input_clear},
    {Py_tp_dealloc, input_dealloc},
    {0, NULL},
};

static PyType_Spec input_spec = {
    .name = "oneloop._core.Input",
    .basicsize = sizeof(ol_input),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = input_slots,
};

/* ------------------------------------------------------------------------ */
/* Taking the connection over                                               */

/*
 * A WebSocket upgrade request (without a body, on a plain TCP or UNIX
 * connection, --ws not off) finds the connection's socket in
 * environ["gunicorn.socket"]: a blocking socket.socket on a duplicate
 * descriptor (ol_conn_lend). simple-websocket looks there, and gunicorn's
 * is the mode whose end of session fits a thread pool: the app raises
 * StopIteration, meaning "the connection was taken over; write nothing and
 * close". Ordinary requests get no socket object (it would cost every
 * request a dup() and an object).
 *
 * Who owns what: the duplicate descriptor is the socket object's, closed
 * by whoever closes the object (simple-websocket's reader thread does, as
 * it ends); c->fd stays the connection's, and this thread holds the
 * connection (CONN_HELD) for the whole app call, so the reactor does not
 * watch it, the tick sets it no deadline, and no limit of ours applies.
 * When the app returns:
 *   - taken over (StopIteration from the call, from iter(), or an iterable
 *     that ends before start_response was called, which is how those
 *     libraries end outside gunicorn's mode): nothing is written. Once the
 *     app has let go of the socket (wait_for_app: its last frame must go
 *     out before our FIN) it is taken back, the session logged as one 101,
 *     and the connection closes gracefully -- FIN, then a lingering read
 *     until the client closes, at most 2 s. If the app does not let go in
 *     time (a client that never answers the close frame), the socket is
 *     shut down, which ends the app's blocked reads, and closed;
 *   - answered (a 400, a 404): the socket is taken back before the first
 *     byte of the response. The socket object is closed if the app kept
 *     no reference to it; if it did (a thread of its own may be reading
 *     it), it is left to the app and the connection closes after this
 *     response instead of being kept alive.
 * Shutdown ends the sessions (server.c): their reads return end-of-file.
 */

/* Is the request's socket lent to the app? */
static inline int is_lent(ol_req *r)
{
    return ((ol_input *)r->input)->sock != NULL;
}

/* socket.socket, once. */
static int load_socket_type(ol_state *st)
{
    if (st->socket_type != NULL)
        return 0;
    PyObject *mod = PyImport_ImportModule("socket");
    if (mod == NULL)
        return -1;
    st->socket_type = PyObject_GetAttrString(mod, "socket");
    Py_DECREF(mod);
    return st->socket_type != NULL ? 0 : -1;
}

/* Close a socket object we made; 0, or -1 (logged) if close() failed. */
static int close_socket(ol_server *srv, PyObject *sock)
{
    PyObject *res = PyObject_CallMethod(sock, "close", NULL);
    if (res == NULL) {
        ol_log_error(srv, "cannot close the socket lent to the app");
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Lend the connection's socket: environ["gunicorn.socket"]. 0, or -1 with
 * an exception (the socket is not lent then). */
static int lend_socket(ol_req *r, PyObject *env)
{
    ol_server *srv = r->server;
    ol_state *st = srv->state;
    ol_conn *c = r->conn;
    if (load_socket_type(st) < 0)
        return -1;
    int fd = ol_conn_lend(c);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *kwargs = Py_BuildValue("{s:i}", "fileno", fd);
    PyObject *noargs = kwargs ? PyTuple_New(0) : NULL;
    PyObject *sock = noargs ? PyObject_Call(st->socket_type, noargs, kwargs) : NULL;
    Py_XDECREF(noargs);
    Py_XDECREF(kwargs);
    if (sock == NULL) { /* the descriptor is still ours */
        close(fd);
        ol_conn_take_back(c, 0);
        return -1;
    }
    /* Blocking in Python's eyes too, whatever socket.setdefaulttimeout()
     * says (gunicorn's gthread worker does the same). */
    PyObject *res = PyObject_CallMethod(sock, "setblocking", "O", Py_True);
    if (res == NULL || ol_dict_put(env, st->env[E_GUNICORN_SOCKET], Py_NewRef(sock)) < 0) {
        Py_XDECREF(res);
        Py_DECREF(sock); /* the only reference: closes the descriptor */
        ol_conn_take_back(c, 0);
        return -1;
    }
    Py_DECREF(res);
    ((ol_input *)r->input)->sock = sock;
    return 0;
}

/* References to the lent socket object besides ours and the environ's:
 * what the app keeps (simple-websocket's reader thread holds it while it
 * runs). Keeps a pending exception. */
static Py_ssize_t app_references(ol_req *r, PyObject *sock)
{
    PyObject *exc = ol_err_take();
    Py_ssize_t others = Py_REFCNT(sock) - 1;
    if (r->environ != NULL &&
        PyDict_GetItemWithError(r->environ, r->server->state->env[E_GUNICORN_SOCKET]) == sock)
        others--;
    PyErr_Clear(); /* a failed lookup counts as a reference kept */
    ol_err_restore(exc);
    return others;
}

/* Is the socket object closed (its descriptor released)? */
static int socket_closed(PyObject *sock)
{
    PyObject *fd = PyObject_CallMethod(sock, "fileno", NULL);
    long n = fd != NULL ? PyLong_AsLong(fd) : 0;
    Py_XDECREF(fd);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return n < 0;
}

/* The app answers with a response of its own (or never ran): the socket is
 * the connection's again before the first byte of it. */
static void give_back(ol_req *r)
{
    ol_input *in = (ol_input *)r->input;
    PyObject *sock = in->sock;
    if (sock == NULL)
        return;
    in->sock = NULL;
    PyObject *exc = ol_err_take(); /* the app's, if it failed */
    int kept = app_references(r, sock) > 0 || close_socket(r->server, sock) < 0;
    Py_DECREF(sock);
    ol_err_restore(exc);
    if (kept)
        r->flags &= ~REQ_KEEP_ALIVE;
    if (r->conn != NULL)
        ol_conn_take_back(r->conn, kept);
}

/* Before the server writes for the app. */
static inline void settle_socket(ol_req *r)
{
    if (is_lent(r))
        give_back(r);
}

/*
 * The session's app call returned, but a thread of the app's may still be
 * on the socket: simple-websocket's reader thread answers the client's
 * close frame (after waking the app, which then returns) and closes the
 * socket as it ends, or, when the app closed first, waits for the
 * client's answer. Our FIN must not overtake that last frame, so wait --
 * GIL released between looks, the first ones a millisecond apart -- until
 * the app has let go: closed the socket object, or kept no reference to
 * it. The client gets --ws-ping-timeout for its close frame. 1 when the
 * app let go; 0 when the wait ran out or the connection failed.
 */
static int wait_for_app(ol_req *r, PyObject *sock)
{
    ol_conn *c = r->conn;
    double until = ol_deadline(ol_now(), r->server->cfg.ws_ping_timeout);
    for (int looks = 0;; looks++) {
        if (app_references(r, sock) == 0 || socket_closed(sock))
            return 1;
        double left = until - ol_now();
        if (left <= 0)
            return 0;
        int ms = looks < 20 ? 1 : 10;
        if (ms > ol_poll_ms(left))
            ms = ol_poll_ms(left);
        struct pollfd p = {.fd = c->fd, .events = 0}; /* reports a reset */
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = poll(&p, 1, ms);
        Py_END_ALLOW_THREADS
        if (n > 0)
            return 0;
    }
}

/* The app took the connection over and returned: the session is over. */
static void end_takeover(ol_req *r)
{
    ol_input *in = (ol_input *)r->input;
    PyObject *sock = in->sock;
    in->sock = NULL;
    ol_conn *c = r->conn;
    if (c != NULL && !(c->flags & CONN_CLOSED)) {
        /* Let go: the object is closed here if the app has not (no thread
         * of the app's can be using it). Not let go: the client is silent
         * or gone, and shutting the socket down ends the app's reads. */
        int kept =
            !wait_for_app(r, sock) || (!socket_closed(sock) && close_socket(r->server, sock) < 0);
        ol_conn_take_back(c, kept);
        if (kept)
            ol_conn_abort(c);
    }
    Py_DECREF(sock);
    ol_req_taken_over(r); /* nothing is written; a graceful close */
}

/* ------------------------------------------------------------------------ */
/* wsgi.file_wrapper                                                        */

typedef struct {
    PyObject_HEAD
    PyObject *filelike;
    Py_ssize_t blksize;
} ol_file_wrapper;

static int wrapper_init(ol_file_wrapper *w, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"filelike", "blksize", NULL};
    PyObject *filelike;
    Py_ssize_t blksize = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n:FileWrapper", kwlist, &filelike, &blksize))
        return -1;
    if (blksize <= 0) {
        PyErr_SetString(PyExc_ValueError, "blksize must be positive");
        return -1;
    }
    Py_XSETREF(w->filelike, Py_NewRef(filelike));
    w->blksize = blksize;
    return 0;
}

static PyObject *wrapper_next(ol_file_wrapper *w)
{
    PyObject *data = PyObject_CallMethod(w->filelike, "read", "n", w->blksize);
    if (data == NULL)
        return NULL;
    Py_ssize_t n = PyObject_Length(data);
    if (n <= 0) { /* the end, or a read() that returned something without a length */
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *wrapper_close(ol_file_wrapper *w, PyObject *unused)
{
    (void)unused;
    PyObject *close = PyObject_GetAttrString(w->filelike, "close");
    if (close == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    return r;
}

static PyObject *wrapper_iter(PyObject *self)
{
    return Py_NewRef(self);
}

static int wrapper_traverse(ol_file_wrapper *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->filelike);
    return 0;
}

static int wrapper_clear(ol_file_wrapper *w)
{
    Py_CLEAR(w->filelike);
    return 0;
}

static void wrapper_dealloc(ol_file_wrapper *w)
{
    PyTypeObject *type = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    wrapper_clear(w);
    type->tp_free((PyObject *)w);
    Py_DECREF(type);
}

static PyMethodDef wrapper_methods[] = {
    {"close", (PyCFunction)wrapper_close, METH_NOARGS, "Close the file."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot wrapper_slots[] = {
    {Py_tp_doc, "FileWrapper(filelike, blksize=65536)\n--\n\n"
                "wsgi.file_wrapper: served with sendfile() when the file allows it."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, wrapper_init},
    {Py_tp_iter, wrapper_iter},
    {Py_tp_iternext, wrapper_next},
    {Py_tp_methods, wrapper_methods},
    {Py_tp_traverse, wrapper_traverse},
    {Py_tp_clear, wrapper_clear},
    {Py_tp_dealloc, wrapper_dealloc},
    {0, NULL},
};

static PyType_Spec wrapper_spec = {
    .name = "oneloop._core.FileWrapper",
    .basicsize = sizeof(ol_file_wrapper),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = wrapper_slots,
};

/* ------------------------------------------------------------------------ */
/* start_response and write                                                 */

/* "200 OK" -> 200 and b"OK". */
static int parse_status(PyObject *status, int *code, PyObject **reason)
{
    if (!PyUnicode_Check(status)) {
        PyErr_Format(PyExc_TypeError, "WSGI status must be a str, not %.100s",
                     Py_TYPE(status)->tp_name);
        return -1;
    }
    PyObject *b = PyUnicode_AsEncodedString(status, "latin-1", "strict");
    if (b == NULL)
        return -1;
    const char *s = PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n < 4 || s[3] != ' ' || s[0] < '1' || s[0] > '9' || s[1] < '0' || s[1] > '9' ||
        s[2] < '0' || s[2] > '9' || !ol_valid_field_value(s + 4, (size_t)(n - 4))) {
        PyErr_Format(PyExc_ValueError, "invalid WSGI status %R (want like '200 OK')", status);
        Py_DECREF(b);
        return -1;
    }
    *code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    *reason = PyBytes_FromStringAndSize(s + 4, n - 4);
    Py_DECREF(b);
    return *reason ? 0 : -1;
}

static PyObject *wsgi_write(ol_req *r, PyObject *data)
{
    Py_buffer view;
    if (!(r->flags & REQ_STARTED)) {
        PyErr_SetString(PyExc_RuntimeError, "write() before start_response()");
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    settle_socket(r);
    ol_wsgi_send_gathered(r); /* write() streams: nothing of it waits */
    int e = ol_response_body(r, view.buf, (size_t)view.len, 1);
    PyBuffer_Release(&view);
    if (e < 0) {
        r->flags |= REQ_DISCONNECTED;
        if (!PyErr_Occurred())
            PyErr_SetString(r->server->state->client_disconnected, "the client disconnected");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef write_def = {"write", (PyCFunction)wsgi_write, METH_O,
                                "Write response body bytes (the PEP 3333 write callable)."};

/* Re-raise exc_info[1] with its traceback (PEP 3333: start_response after
 * the head was sent, with exc_info). */
static PyObject *reraise(PyObject *exc_info)
{
    PyObject *value = PyTuple_GET_ITEM(exc_info, 1);
    PyObject *tb = PyTuple_GET_ITEM(exc_info, 2);
    if (!PyExceptionInstance_Check(value)) {
        PyErr_Format(PyExc_TypeError,
                     "start_response: exc_info[1] must be an exception, not %.100s",
                     Py_TYPE(value)->tp_name);
        return NULL;
    }
    if (PyTraceBack_Check(tb) && PyException_SetTraceback(value, tb) < 0)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(value), value);
    return NULL;
}

static PyObject *start_response(ol_req *r, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"status", "headers", "exc_info"};
    PyObject *status = NULL, *headers = NULL, *exc_info = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw < 2 || nargs + nkw > 3) {
        PyErr_SetString(PyExc_TypeError, "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    PyObject **slots[] = {&status, &headers, &exc_info};
    for (Py_ssize_t i = 0; i < nargs; i++)
        *slots[i] = args[i];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        const char *k = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, i));
        int found = 0;
        for (int j = 0; k && j < 3; j++)
            if (strcmp(k, names[j]) == 0) {
                *slots[j] = args[nargs + i];
                found = 1;
            }
        if (!found) {
            PyErr_Format(PyExc_TypeError, "start_response() got an unexpected argument %R",
                         PyTuple_GET_ITEM(kwnames, i));
            return NULL;
        }
    }
    if (exc_info != Py_None) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3) {
            PyErr_SetString(PyExc_TypeError, "exc_info must be a (type, value, traceback) tuple");
            return NULL;
        }
        if (r->flags & REQ_HEAD_SENT)
            return reraise(exc_info);
    } else if (r->flags & REQ_STARTED) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() called twice without exc_info");
        return NULL;
    }
    int code;
    PyObject *reason;
    if (status == NULL || headers == NULL || parse_status(status, &code, &reason) < 0)
        return NULL;
    if (!PyList_Check(headers)) {
        Py_DECREF(reason);
        PyErr_Format(PyExc_TypeError, "WSGI headers must be a list, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return NULL;
    }
    r->flags &= ~(REQ_STARTED | REQ_HAS_LENGTH | REQ_APP_CHUNKED | REQ_APP_DATE | REQ_APP_SERVER);
    int e = ol_response_begin(r, code, reason, headers);
    Py_DECREF(reason);
    if (e < 0)
        return NULL;
    return PyCFunction_New(&write_def, (PyObject *)r);
}

static PyMethodDef start_response_def = {
    "start_response", (PyCFunction)(void (*)(void))start_response, METH_FASTCALL | METH_KEYWORDS,
    "start_response(status, headers, exc_info=None)"};

/* ------------------------------------------------------------------------ */
/* The environ                                                              */

static PyObject *latin1(const char *s, size_t n)
{
    return PyUnicode_DecodeLatin1(s, (Py_ssize_t)n, NULL);
}

/* The environ key of a header: HTTP_* (shared objects for common names),
 * CONTENT_TYPE / CONTENT_LENGTH, or NULL with *skip for names holding an
 * underscore: "X_Forwarded_For" must not pass for "X-Forwarded-For". */
static PyObject *environ_key(ol_state *st, ol_span name, int *skip)
{
    *skip = 0;
    if (memchr(name.base, '_', name.len) != NULL) {
        *skip = 1;
        return NULL;
    }
    if (name.len == 12 && strncasecmp(name.base, "content-type", 12) == 0)
        return Py_NewRef(st->env[E_CONTENT_TYPE]);
    if (name.len == 14 && strncasecmp(name.base, "content-length", 14) == 0)
        return Py_NewRef(st->env[E_CONTENT_LENGTH]);
    int known = ol_common_header(st, name);
    if (known >= 0)
        return Py_NewRef(st->header_env[known]);
    PyObject *key = PyUnicode_New((Py_ssize_t)(5 + name.len), 127);
    if (key == NULL)
        return NULL;
    Py_UCS1 *p = PyUnicode_1BYTE_DATA(key);
    memcpy(p, "HTTP_", 5);
    for (size_t i = 0; i < name.len; i++) { /* a token: ASCII only */
        char ch = name.base[i];
        p[5 + i] = (Py_UCS1)(ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? ch - 32 : ch);
    }
    return key;
}

static int add_headers(ol_state *st, PyObject *env, const ol_request *h)
{
    for (size_t i = 0; i < h->num_headers; i++) {
        int skip;
        PyObject *key = environ_key(st, h->headers[i].name, &skip);
        if (skip)
            continue;
        PyObject *value = key ? latin1(h->headers[i].value.base, h->headers[i].value.len) : NULL;
        if (value == NULL) {
            Py_XDECREF(key);
            return -1;
        }
        PyObject *old = PyDict_GetItemWithError(env, key);
        if (old != NULL) { /* repeated field: join, as RFC 9110 5.3 allows */
            int cookie = PyUnicode_Compare(key, st->env[E_HTTP_COOKIE]) == 0;
            PyObject *joined = PyUnicode_FromFormat(cookie ? "%U; %U" : "%U, %U", old, value);
            Py_SETREF(value, joined);
        }
        int e = value ? PyDict_SetItem(env, key, value) : -1;
        Py_DECREF(key);
        Py_XDECREF(value);
        if (e < 0)
            return -1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* The authority of an absolute-form target ("http://host:port/p"), if any. */
static ol_span target_authority(ol_span target)
{
    ol_span none = {NULL, 0};
    const char *sep =
        target.len && target.base[0] != '/' ? memmem(target.base, target.len, "://", 3) : NULL;
    if (sep == NULL)
        return none;
    const char *start = sep + 3, *end = target.base + target.len, *p = start;
    while (p < end && *p != '/' && *p != '?' && *p != '#')
        p++;
    const char *at = memchr(start, '@', (size_t)(p - start)); /* drop userinfo */
    if (at != NULL)
        start = at + 1;
    return (ol_span){start, (size_t)(p - start)};
}

/* SERVER_NAME and SERVER_PORT: the authority of an absolute-form target
 * (which RFC 9112 3.2.2 puts before Host), else Host, else the listener. */
static int add_server_name(ol_state *st, PyObject *env, ol_conn *c, const ol_request *h)
{
    PyObject **e = st->env;
    ol_span authority = target_authority(h->target);
    if (authority.len == 0)
        authority = h->host;
    if (authority.len > 0) {
        const char *s = authority.base, *colon = NULL;
        size_t n = authority.len;
        if (s[0] == '[') { /* [v6]:port */
            const char *close = memchr(s, ']', n);
            colon = close && close + 1 < s + n && close[1] == ':' ? close + 1 : NULL;
        } else {
            colon = memchr(s, ':', n);
        }
        size_t host_len = colon ? (size_t)(colon - s) : n;
        PyObject *port = colon ? latin1(colon + 1, n - host_len - 1)
                               : Py_NewRef(e[c->listener->ssl_context ? E_V_443 : E_V_80]);
        return ol_dict_put(env, e[E_SERVER_NAME], latin1(s, host_len)) ||
               ol_dict_put(env, e[E_SERVER_PORT], port);
    }
    PyObject *addr = c->listener->server_addr;
    if (PyTuple_Check(addr) && PyTuple_GET_SIZE(addr) == 2 &&
        PyLong_Check(PyTuple_GET_ITEM(addr, 1)))
        return ol_dict_put(env, e[E_SERVER_NAME], PyObject_Str(PyTuple_GET_ITEM(addr, 0))) ||
               ol_dict_put(env, e[E_SERVER_PORT], PyObject_Str(PyTuple_GET_ITEM(addr, 1)));
    return ol_dict_put(env, e[E_SERVER_NAME], Py_NewRef(e[E_V_LOCALHOST])) ||
           ol_dict_put(env, e[E_SERVER_PORT], Py_NewRef(e[E_V_EMPTY]));
}

static int add_remote(ol_state *st, PyObject *env, PyObject *client)
{
    if (client == NULL || client == Py_None)
        return ol_dict_put(env, st->env[E_REMOTE_ADDR], Py_NewRef(st->env[E_V_EMPTY]));
    return ol_dict_put(env, st->env[E_REMOTE_ADDR], Py_NewRef(PyTuple_GET_ITEM(client, 0))) ||
           ol_dict_put(env, st->env[E_REMOTE_PORT], PyObject_Str(PyTuple_GET_ITEM(client, 1)));
}

/* PATH_INFO: the path without the root path when the proxy left it on. */
static PyObject *path_info(ol_server *srv, ol_span path)
{
    PyObject *p = ol_decode_path_latin1(srv, path);
    Py_ssize_t root = PyUnicode_GET_LENGTH(srv->root_path);
    if (p == NULL || root == 0)
        return p;
    if (PyUnicode_Tailmatch(p, srv->root_path, 0, root, -1) == 1 &&
        (PyUnicode_GET_LENGTH(p) == root || PyUnicode_READ_CHAR(p, root) == '/')) {
        PyObject *rest = PyUnicode_Substring(p, root, PyUnicode_GET_LENGTH(p));
        Py_DECREF(p);
        return rest;
    }
    return p;
}

static PyObject *build_environ(ol_conn *c, const ol_request *h, ol_req *r)
{
    ol_server *srv = c->server;
    ol_state *st = srv->state;
    PyObject **e = st->env;
    ol_target t;
    ol_split_target(h->target, &t);
    PyObject *env = PyDict_New();
    if (env == NULL)
        return NULL;
    int https = c->listener->ssl_context != NULL;
    int err =
        ol_dict_put(env, e[E_REQUEST_METHOD], Py_NewRef(r->method)) ||
        ol_dict_put(env, e[E_SCRIPT_NAME], Py_NewRef(srv->root_path)) ||
        ol_dict_put(env, e[E_PATH_INFO], path_info(srv, t.path)) ||
        ol_dict_put(env, e[E_QUERY_STRING], latin1(t.query.base, t.query.len)) ||
        ol_dict_put(env, e[E_RAW_URI], latin1(h->target.base, h->target.len)) ||
        ol_dict_put(env, e[E_SERVER_PROTOCOL],
                    Py_NewRef(e[h->version_major == 2 ? E_HTTP_2
                                : h->version_minor    ? E_HTTP_1_1
                                                      : E_HTTP_1_0])) ||
        add_server_name(st, env, c, h) || add_remote(st, env, r->client) ||
        add_headers(st, env, h) ||
        ol_dict_put(env, e[E_WSGI_VERSION], Py_NewRef(e[E_V_WSGI_VERSION])) ||
        ol_dict_put(env, e[E_WSGI_URL_SCHEME], Py_NewRef(e[https ? E_V_HTTPS : E_V_HTTP])) ||
        ol_dict_put(env, e[E_WSGI_INPUT], Py_NewRef(r->input)) ||
        ol_dict_put(env, e[E_WSGI_ERRORS],
                    Py_NewRef(srv->errors_stream ? srv->errors_stream : Py_None)) ||
        ol_dict_put(env, e[E_WSGI_MULTITHREAD], Py_NewRef(Py_True)) ||
        ol_dict_put(env, e[E_WSGI_MULTIPROCESS],
                    Py_NewRef(srv->cfg.multiprocess ? Py_True : Py_False)) ||
        ol_dict_put(env, e[E_WSGI_RUN_ONCE], Py_NewRef(Py_False)) ||
        ol_dict_put(env, e[E_WSGI_INPUT_TERMINATED], Py_NewRef(Py_True)) ||
        ol_dict_put(env, e[E_WSGI_FILE_WRAPPER], Py_NewRef((PyObject *)st->file_wrapper_type));
    if (err == 0 && srv->proxy_trusted != NULL)
        err = ol_wsgi_proxy_headers(srv, r, env);
    if (err == 0 && (h->flags & OL_REQ_UPGRADE) && srv->cfg.ws && !https &&
        (h->framing == OL_BODY_NONE || (h->framing == OL_BODY_LENGTH && h->content_length == 0)) &&
        ol_h1_is_websocket(h))
        err = lend_socket(r, env);
    if (err != 0) {
        Py_DECREF(env);
        return NULL;
    }
    return env;
}

/* ------------------------------------------------------------------------ */
/* Running the app                                                          */

/* A regular file with a descriptor, ready for sendfile(), or -1. */
static int sendfile_fd(PyObject *result, ol_state *st, off_t *offset, off_t *size)
{
    if (Py_TYPE(result) != st->file_wrapper_type)
        return -1;
    PyObject *filelike = ((ol_file_wrapper *)result)->filelike;
    PyObject *fdobj = PyObject_CallMethod(filelike, "fileno", NULL);
    if (fdobj == NULL) {
        PyErr_Clear();
        return -1;
    }
    int fd = (int)PyLong_AsLong(fdobj);
    Py_DECREF(fdobj);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        PyErr_Clear();
        return -1;
    }
    PyObject *pos = PyObject_CallMethod(filelike, "tell", NULL);
    *offset = pos ? (off_t)PyLong_AsLongLong(pos) : 0;
    Py_XDECREF(pos);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    *size = sb.st_size > *offset ? sb.st_size - *offset : 0;
    return fd;
}

/* sendfile() has no MSG_NOSIGNAL: SIGPIPE is blocked in this thread around
 * it, and one it raised is taken back before the mask is restored, so a
 * client gone mid-file never kills a process whose SIGPIPE is not ignored. */
static ssize_t sendfile_nosignal(int out, int in, off_t *offset, size_t n)
{
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    ssize_t sent = sendfile(out, in, offset, n);
    int err = errno;
    if (sent < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
        struct timespec now = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &now) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return sent;
}

/* Send a file's bytes with sendfile(), GIL released. */
static int send_file(ol_req *r, int fd, off_t offset, off_t size)
{
    ol_wsgi_send_gathered(r); /* sendfile() writes to the socket itself */
    ol_conn *c = r->conn;
    if (!(r->flags & REQ_HAS_LENGTH)) {
        r->flags |= REQ_HAS_LENGTH | REQ_ADDED_LENGTH;
        r->content_length = (uint64_t)size;
    } else if ((uint64_t)size > r->content_length) {
        size = (off_t)r->content_length;
    }
    if (ol_response_body(r, "", 0, 1) < 0) /* the head */
        return -1;
    if ((r->flags & REQ_NO_BODY) || c == NULL)
        return 0;
    while (size > 0) {
        ssize_t n;
        int err;
        Py_BEGIN_ALLOW_THREADS
        n = sendfile_nosignal(c->fd, fd, &offset, (size_t)size);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n > 0) {
            size -= n;
            r->sent += (uint64_t)n;
            OL_COUNT(r->server, bytes_out, n);
        } else if (n == 0) {
            break; /* the file shrank */
        } else if (err == EAGAIN) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int ready;
            Py_BEGIN_ALLOW_THREADS
            ready = poll(&p, 1, ol_poll_ms(r->server->cfg.send_timeout));
            Py_END_ALLOW_THREADS
            if (ready <= 0)
                return -1;
        } else if (err != EINTR) {
            return -1;
        }
    }
    return 0;
}

/* iterate_body() and the app call: the app took the connection over. */
#define TAKEN_OVER (-3)

/* Send the response the app returned: 0; -1 with the app's exception; -2
 * when the client went away; or TAKEN_OVER. */
static int iterate_body(ol_req *r, PyObject *result)
{
    ol_state *st = r->server->state;
    off_t offset, size;
    int fd = sendfile_fd(result, st, &offset, &size);
    /* sendfile() writes to the socket itself: HTTP/1.1 without TLS only. */
    if (fd >= 0 && r->conn != NULL && r->conn->tls == NULL && (r->flags & REQ_STARTED) &&
        !(r->flags & REQ_HTTP2)) {
        settle_socket(r);
        return send_file(r, fd, offset, size) < 0 ? -2 : ol_response_body(r, "", 0, 0);
    }
    if ((PyList_CheckExact(result) || PyTuple_CheckExact(result)) && !(r->flags & REQ_HAS_LENGTH) &&
        (r->flags & REQ_STARTED)) {
        /* A sequence's length is known before sending: Content-Length. */
        PyObject *seq = result;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        uint64_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyBytes_Check(item))
                goto generic;
            total += (uint64_t)PyBytes_GET_SIZE(item);
        }
        r->flags |= REQ_HAS_LENGTH | REQ_ADDED_LENGTH;
        r->content_length = total;
    }
generic:;
    /* A list or tuple holds its pieces already; any other iterable may
     * wait between them (a stream): once its first item is taken, the
     * output goes out before the next is asked for, unless the body is
     * complete (its Content-Length sent). */
    int in_hand = PyList_CheckExact(result) || PyTuple_CheckExact(result), asked = 0;
    PyObject *it = PyObject_GetIter(result);
    if (it == NULL) {
        if (!is_lent(r) || !PyErr_ExceptionMatches(PyExc_StopIteration))
            return -1;
        PyErr_Clear();
        return TAKEN_OVER;
    }
    PyObject *chunk;
    for (;;) {
        if (!in_hand && asked++ > 0 &&
            !((r->flags & (REQ_HAS_LENGTH | REQ_NO_BODY)) == REQ_HAS_LENGTH &&
              r->sent >= r->content_length))
            ol_wsgi_send_gathered(r);
        if ((chunk = PyIter_Next(it)) == NULL)
            break;
        if (!PyBytes_Check(chunk)) {
            PyErr_Format(PyExc_TypeError, "WSGI body items must be bytes, not %.100s",
                         Py_TYPE(chunk)->tp_name);
            Py_DECREF(chunk);
            Py_DECREF(it);
            return -1;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(chunk);
        int e = 0;
        if (n > 0) {
            if (!(r->flags & REQ_STARTED)) {
                PyErr_SetString(PyExc_RuntimeError, "WSGI body started before start_response()");
                e = -1;
            } else {
                settle_socket(r);
                if (ol_response_body(r, PyBytes_AS_STRING(chunk), (size_t)n, 1) < 0)
                    e = PyErr_Occurred() ? -1 : -2;
            }
        }
        Py_DECREF(chunk);
        if (e < 0) {
            Py_DECREF(it);
            return e;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    if (!(r->flags & REQ_STARTED)) {
        if (is_lent(r))
            return TAKEN_OVER; /* no response: how the app ends a session outside gunicorn's mode */
        PyErr_SetString(PyExc_RuntimeError,
                        "the WSGI app returned without calling start_response()");
        return -1;
    }
    settle_socket(r);
    return ol_response_body(r, "", 0, 0) < 0 ? -2 : 0;
}

/* Always call the iterable's close(), whatever happened (PEP 3333). */
static void close_result(ol_server *srv, PyObject *result)
{
    /* The app's own exception, if any, survives close() and its lookup. */
    PyObject *exc = ol_err_take();
    PyObject *close = PyObject_GetAttrString(result, "close");
    if (close == NULL) {
        PyErr_Clear();
    } else {
        PyObject *r = PyObject_CallNoArgs(close);
        Py_DECREF(close);
        if (r == NULL)
            ol_log_error(srv, "Exception in the WSGI iterable's close()");
        Py_XDECREF(r);
    }
    ol_err_restore(exc);
}

/* Run the app for a request whose head is in the buffer. GIL held. */
static void run_app(ol_req *r)
{
    ol_server *srv = r->server;
    ol_current_request = r;
    PyObject *start = PyCFunction_New(&start_response_def, (PyObject *)r);
    PyObject *args[2] = {r->environ, start};
    PyObject *result = start ? PyObject_Vectorcall(srv->app, args, 2, NULL) : NULL;
    Py_XDECREF(start);
    int e = -1;
    if (result != NULL) {
        e = iterate_body(r, result);
        close_result(srv, result);
        Py_DECREF(result);
    } else if (is_lent(r) && PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear(); /* gunicorn's signal: the app took the connection over */
        e = TAKEN_OVER;
    }
    if (e == TAKEN_OVER) {
        end_takeover(r);
        ol_current_request = NULL;
        return;
    }
    settle_socket(r); /* an error response may follow */
    if (e == -1) {
        /* A request body the client broke (too large, too slow, gone) is the
         * client's doing: one line, no traceback. */
        int hung_up =
            (r->flags & REQ_DISCONNECTED) && PyErr_ExceptionMatches(srv->state->cancelled_error);
        /* Gone: nobody to answer (the access log says 499). */
        int gone = hung_up ||
                   (!r->error_status && PyErr_ExceptionMatches(srv->state->client_disconnected));
        char what[256], message[512];
        ol_req_describe(r, what, sizeof(what));
        if (hung_up) {
            PyErr_Clear();
            snprintf(message, sizeof(message),
                     "%s: the client hung up; its async call was cancelled", what);
            ol_log_info(srv, message);
        } else if (gone || r->error_status) {
            PyObject *exc = ol_err_take();
            PyObject *text = exc ? PyObject_Str(exc) : NULL;
            const char *s = text ? PyUnicode_AsUTF8(text) : NULL;
            PyErr_Clear();
            snprintf(message, sizeof(message), "%s: %s", what, s ? s : "request body error");
            ol_log_info(srv, message);
            Py_XDECREF(text);
            Py_XDECREF(exc);
        } else {
            snprintf(message, sizeof(message), "Exception in WSGI application (%s)", what);
            ol_log_error(srv, message);
        }
        ol_req_fail(r, gone ? 0 : r->error_status ? r->error_status : 500);
    } else if (e == -2) {
        PyErr_Clear(); /* the client went away while we wrote */
        ol_req_fail(r, 0);
    }
    ol_current_request = NULL;
}

/* Break the request <-> environ/input cycle now rather than in the GC
 * (which would keep the connection alive until it runs), then let go. */
static void drop_request(ol_req *r)
{
    if (r->flags & REQ_POSTED) { /* the job's reference goes on */
        Py_DECREF(r);
        return;
    }
    if (r->input != NULL && is_lent(r)) /* prepared, never run */
        give_back(r);
    Py_CLEAR(r->environ);
    if (r->input != NULL)
        Py_CLEAR(((ol_input *)r->input)->request);
    Py_CLEAR(r->input);
    Py_DECREF(r);
}

/* wsgi.input and the environ, built while the head's bytes are still in
 * the buffer. */
static int wsgi_prepare(ol_req *r, const ol_request *h)
{
    ol_input *in = PyObject_GC_New(ol_input, r->server->state->input_type);
    if (in == NULL)
        return -1;
    in->request = (ol_req *)Py_NewRef(r);
    in->buf = NULL;
    in->pos = in->len = in->cap = 0;
    in->sock = NULL;
    PyObject_GC_Track(in);
    r->input = (PyObject *)in;
    r->environ = build_environ(r->conn, h, r);
    return r->environ != NULL ? 0 : -1;
}

/* The app runs to its end here, on the pool thread; an HTTP/2 stream's
 * on a pool thread of its own, so that the connection's other streams go
 * on meanwhile (pool.c, Jobs). */
static void wsgi_run(ol_req *r)
{
    ol_server *srv = r->server;
    if (r->flags & REQ_HTTP2) {
        r->flags |= REQ_POSTED;
        if (ol_pool_post(srv, r) < 0) { /* shutting down: the stream ends unanswered */
            r->flags &= ~REQ_POSTED;
            r->flags |= REQ_DISCONNECTED;
        }
        return;
    }
    ol_meter_set(&srv->meter.m->in_flight, ++srv->active);
    run_app(r);
    ol_meter_set(&srv->meter.m->in_flight, --srv->active);
}

void ol_wsgi_run_job(ol_req *r)
{
    ol_server *srv = r->server;
    r->flags &= ~REQ_POSTED;
    /* A stream reset before its turn (the client gave up) is not run. */
    if (!(r->flags & REQ_DISCONNECTED) && r->conn != NULL) {
        ol_meter_set(&srv->meter.m->in_flight, ++srv->active);
        run_app(r);
        ol_meter_set(&srv->meter.m->in_flight, --srv->active);
    }
    drop_request(r);
}

void ol_wsgi_drop_job(ol_req *r)
{
    r->flags &= ~REQ_POSTED;
    drop_request(r);
}

static void wsgi_ignore(ol_req *r)
{
    (void)r;
}

static int wsgi_waits_for_client(const ol_req *r)
{
    (void)r;
    return 0; /* a pool thread holds the connection while the app runs */
}

const ol_handler ol_wsgi_handler = {
    .prepare = wsgi_prepare,
    .run = wsgi_run,
    .release = drop_request,
    .on_body = wsgi_ignore,
    .on_disconnect = wsgi_ignore,
    .on_eof = wsgi_ignore,
    .on_drain = wsgi_ignore,
    .waits_for_client = wsgi_waits_for_client,
};

/* ------------------------------------------------------------------------ */

int ol_wsgi_init_types(PyObject *module, ol_state *st)
{
    st->input_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &input_spec, NULL);
    st->file_wrapper_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &wrapper_spec, NULL);
    if (st->input_type == NULL || st->file_wrapper_type == NULL)
        return -1;
    return PyModule_AddType(module, st->file_wrapper_type);
}
