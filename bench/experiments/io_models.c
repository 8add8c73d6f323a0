/*
 * io_models.c -- a throwaway experiment, not part of oneloop: the two ways the
 * C core could meet the asyncio loop, reduced to a fixed 13-byte response so
 * that only the I/O model is measured (DESIGN.md section 3).
 *
 *   (a) FixedProtocol: an asyncio BufferedProtocol written in C; the loop's
 *       transport owns the socket and calls get_buffer/buffer_updated once
 *       per read, and the protocol answers with transport.write().
 *   (b) serve_epoll(): the C code owns the sockets and one epoll set; only
 *       the epoll fd is registered with the loop (add_reader), and every
 *       ready connection of a wake-up is handled in one C pass with recv and
 *       send.
 *
 * Run by io_models.py, which builds this module and measures both on the
 * stdlib loop and on uvloop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char response[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n"
    "\r\nHello, World!";
#define RESPONSE_LEN (sizeof(response) - 1)

/* Count complete heads in buf and keep the tail; the replies to send. */
static size_t heads(char *buf, size_t *len)
{
    size_t start = 0, n = 0;
    char *end;
    while ((end = memmem(buf + start, *len - start, "\r\n\r\n", 4)) != NULL) {
        start = (size_t)(end - buf) + 4;
        n++;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
    return n;
}

/* ---------------------------------------------------------------- (a) */

typedef struct {
    PyObject_HEAD PyObject *transport;
    PyObject *write;
    char buf[8192];
    size_t len;
} FixedProtocol;

static PyObject *proto_connection_made(FixedProtocol *self, PyObject *transport)
{
    Py_XSETREF(self->transport, Py_NewRef(transport));
    Py_XSETREF(self->write, PyObject_GetAttrString(transport, "write"));
    if (self->write == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *proto_get_buffer(FixedProtocol *self, PyObject *hint)
{
    (void)hint;
    return PyMemoryView_FromMemory(self->buf + self->len,
                                   (Py_ssize_t)(sizeof(self->buf) - self->len), PyBUF_WRITE);
}

static PyObject *proto_buffer_updated(FixedProtocol *self, PyObject *nbytes)
{
    self->len += (size_t)PyLong_AsSsize_t(nbytes);
    size_t n = heads(self->buf, &self->len);
    if (n == 0)
        Py_RETURN_NONE;
    char out[16 * RESPONSE_LEN];
    if (n > 16)
        n = 16;
    for (size_t i = 0; i < n; i++)
        memcpy(out + i * RESPONSE_LEN, response, RESPONSE_LEN);
    PyObject *data = PyBytes_FromStringAndSize(out, (Py_ssize_t)(n * RESPONSE_LEN));
    if (data == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(self->write, data);
    Py_DECREF(data);
    return r;
}

static PyObject *proto_noop(FixedProtocol *self, PyObject *arg)
{
    (void)self;
    (void)arg;
    Py_RETURN_NONE;
}

static PyObject *proto_connection_lost(FixedProtocol *self, PyObject *exc)
{
    (void)exc;
    Py_CLEAR(self->transport);
    Py_CLEAR(self->write);
    Py_RETURN_NONE;
}

static void proto_dealloc(FixedProtocol *self)
{
    Py_XDECREF(self->transport);
    Py_XDECREF(self->write);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyMethodDef proto_methods[] = {
    {"connection_made", (PyCFunction)proto_connection_made, METH_O, NULL},
    {"get_buffer", (PyCFunction)proto_get_buffer, METH_O, NULL},
    {"buffer_updated", (PyCFunction)proto_buffer_updated, METH_O, NULL},
    {"eof_received", (PyCFunction)(void (*)(void))proto_noop, METH_NOARGS, NULL},
    {"connection_lost", (PyCFunction)proto_connection_lost, METH_O, NULL},
    {"pause_writing", (PyCFunction)(void (*)(void))proto_noop, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)(void (*)(void))proto_noop, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot proto_slots[] = {
    {Py_tp_methods, proto_methods},
    {Py_tp_dealloc, proto_dealloc},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

static PyType_Spec proto_spec = {"io_models.FixedProtocol", sizeof(FixedProtocol), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, proto_slots};

/* ---------------------------------------------------------------- (b) */

typedef struct {
    int listen_fd, epfd;
    char bufs[4096][512];
    size_t lens[4096];
} epoll_server;

static epoll_server *server;

static PyObject *on_ready(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    struct epoll_event events[128];
    int n = epoll_wait(server->epfd, events, 128, 0);
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        if (fd == server->listen_fd) {
            int c;
            while ((c = accept4(server->listen_fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                int one = 1;
                if (c >= 4096) {
                    close(c);
                    continue;
                }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                server->lens[c] = 0;
                struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(server->epfd, EPOLL_CTL_ADD, c, &ev);
            }
            continue;
        }
        ssize_t r = recv(fd, server->bufs[fd] + server->lens[fd], 512 - server->lens[fd], 0);
        if (r <= 0) {
            close(fd);
            continue;
        }
        server->lens[fd] += (size_t)r;
        size_t replies = heads(server->bufs[fd], &server->lens[fd]);
        char out[16 * RESPONSE_LEN];
        if (replies > 16)
            replies = 16;
        for (size_t k = 0; k < replies; k++)
            memcpy(out + k * RESPONSE_LEN, response, RESPONSE_LEN);
        if (replies && send(fd, out, replies * RESPONSE_LEN, MSG_NOSIGNAL) < 0)
            close(fd);
    }
    Py_RETURN_NONE;
}

static PyMethodDef on_ready_def = {"on_ready", on_ready, METH_NOARGS, NULL};

/* serve_epoll(loop, listen_fd): register one epoll fd with the loop. */
static PyObject *serve_epoll(PyObject *module, PyObject *args)
{
    PyObject *loop;
    int fd;
    if (!PyArg_ParseTuple(args, "Oi", &loop, &fd))
        return NULL;
    server = calloc(1, sizeof(*server));
    server->listen_fd = fd;
    server->epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(server->epfd, EPOLL_CTL_ADD, fd, &ev);
    PyObject *cb = PyCFunction_New(&on_ready_def, module);
    PyObject *r = PyObject_CallMethod(loop, "add_reader", "iO", server->epfd, cb);
    Py_XDECREF(cb);
    return r;
}

static PyMethodDef module_methods[] = {
    {"serve_epoll", serve_epoll, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    PyObject *t = PyType_FromSpec(&proto_spec);
    return t ? PyModule_AddObject(m, "FixedProtocol", t) : -1;
}

static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};
static struct PyModuleDef def = {
    PyModuleDef_HEAD_INIT, "io_models", NULL, 0, module_methods, slots, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_io_models(void)
{
    return PyModuleDef_Init(&def);
}
