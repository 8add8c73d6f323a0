/*
 * module.c -- the oneloop._core extension module: multi-phase init, the
 * module state every other file of the binding layer reaches through
 * ol_state_of(), and the module-level functions.
 */
#include "core.h"

#include <linux/filter.h>
#include <string.h>
#include <sys/socket.h>

/* --------------------------------------------------------------------- */
/* parse_request(): the wire layer's parser, for tests and debugging.    */

static PyObject *span_bytes(ol_span s)
{
    return PyBytes_FromStringAndSize(s.base, (Py_ssize_t)s.len);
}

static PyObject *headers_list(const ol_request *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->num_headers);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < req->num_headers; i++) {
        PyObject *pair =
            Py_BuildValue("(y#y#)", req->headers[i].name.base, (Py_ssize_t)req->headers[i].name.len,
                          req->headers[i].value.base, (Py_ssize_t)req->headers[i].value.len);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

static PyObject *request_dict(const ol_request *req, int head_len)
{
    static const char *framing[] = {"none", "length", "chunked"};
    PyObject *method = span_bytes(req->method);
    PyObject *target = span_bytes(req->target);
    PyObject *headers = headers_list(req);
    PyObject *result = NULL;
    if (method && target && headers)
        result = Py_BuildValue(
            "{s:O,s:O,s:(ii),s:O,s:s,s:K,s:O,s:O,s:O,s:i}", "method", method, "target", target,
            "version", req->version_major, req->version_minor, "headers", headers, "framing",
            framing[req->framing], "content_length", (unsigned long long)req->content_length,
            "keep_alive", (req->flags & OL_REQ_KEEP_ALIVE) ? Py_True : Py_False, "upgrade",
            (req->flags & OL_REQ_UPGRADE) ? Py_True : Py_False, "expect_continue",
            (req->flags & OL_REQ_EXPECT_CONTINUE) ? Py_True : Py_False, "head_length", head_len);
    Py_XDECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(headers);
    return result;
}

static PyObject *parse_request(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ol_header headers[256];
    ol_request req = {.headers = headers};
    ol_limits limits;
    ol_limits_default(&limits);
    ol_parser ps;
    ol_parser_init(&ps);
    int r = ol_parse_request(&ps, view.buf, (size_t)view.len, &req, &limits);
    PyObject *result = NULL;
    if (r == OL_INCOMPLETE)
        result = Py_NewRef(Py_None);
    else if (r < 0)
        PyErr_Format(PyExc_ValueError, "%d %s", ol_error_status(r), ol_strerror(r));
    else
        result = request_dict(&req, r);
    PyBuffer_Release(&view);
    return result;
}

/* decode_chunked(): the wire layer's chunked decoder over one buffer. */
static PyObject *decode_chunked(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ol_limits limits;
    ol_limits_default(&limits);
    ol_header trailers[256];
    ol_chunked dec;
    ol_chunked_init(&dec, &limits);
    dec.trailers = trailers;
    dec.max_trailers = sizeof(trailers) / sizeof(trailers[0]);
    const char *p = view.buf;
    size_t left = (size_t)view.len;
    PyObject *body = PyBytes_FromStringAndSize(NULL, 0), *result = NULL;
    int r = OL_CHUNK_DATA;
    while (body != NULL && r == OL_CHUNK_DATA) {
        size_t used;
        ol_span data;
        r = ol_chunked_decode(&dec, p, left, &used, &data);
        p += used;
        left -= used;
        if (r == OL_CHUNK_DATA)
            PyBytes_ConcatAndDel(&body, span_bytes(data)); /* NULL on failure */
    }
    if (body == NULL) {
        /* out of memory: the exception is set */
    } else if (r == OL_INCOMPLETE) {
        result = Py_NewRef(Py_None);
    } else if (r < 0) {
        PyErr_Format(PyExc_ValueError, "%d %s", ol_error_status(r), ol_strerror(r));
    } else {
        ol_request fake = {.headers = trailers, .num_headers = dec.num_trailers};
        PyObject *list = headers_list(&fake);
        if (list != NULL)
            result = Py_BuildValue("(OnN)", body, (Py_ssize_t)(p - (const char *)view.buf), list);
    }
    Py_XDECREF(body);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(decode_chunked_doc,
             "decode_chunked(data, /)\n--\n\n"
             "Decode a chunked body at the start of data with oneloop's decoder. Returns\n"
             "(body, bytes used, trailers), None if incomplete, or raises\n"
             "ValueError('<status> <reason>').");

PyDoc_STRVAR(parse_request_doc,
             "parse_request(data, /)\n--\n\n"
             "Parse an HTTP/1.1 request head with oneloop's parser. Returns a dict,\n"
             "None if the head is incomplete, or raises ValueError('<status> <reason>').");

/* --------------------------------------------------------------------- */
/* refuse_connections(): a listening socket stops completing handshakes.  */

/*
 * When the whole server stops, its listening sockets must close, and
 * closing a listener resets every connection still in its accept queue --
 * connections whose clients already sent a request. A socket filter that
 * drops every packet, attached to the listener first, stops new handshakes
 * (the SYN and the handshake's last ACK are both filtered on the listener),
 * so the queue can only shrink: the workers accept what is in it and serve
 * it, and a client arriving later is refused when its SYN is retried,
 * having sent nothing. The filter is on the socket, shared by every process
 * that holds it; connections accepted before it was attached keep none.
 */
static PyObject *refuse_connections(PyObject *module, PyObject *arg)
{
    (void)module;
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    struct sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_fprog prog = {.len = 1, .filter = drop_all};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------- */
/* atomic_load() / atomic_store(): one 8-byte word of a shared buffer.   */
/*
 * The heartbeat page (oneloop.heartbeat) is written by a worker and read by
 * its supervisor, another process, with no lock. struct.pack_into() zeroes
 * a field before it fills it in, so a reader can see 0 -- "blocked since
 * boot" -- and kill a healthy worker. A naturally aligned 8-byte atomic
 * store and load cannot be seen half-done; release/acquire orders the
 * stores before a word (the state before its beat) with the reads after.
 */

static uint64_t *word_at(Py_buffer *view, Py_ssize_t offset)
{
    if (offset < 0 || offset > view->len - (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_Format(PyExc_IndexError, "offset %zd out of a buffer of %zd bytes", offset,
                     view->len);
        return NULL;
    }
    char *p = (char *)view->buf + offset;
    if ((uintptr_t)p % _Alignof(uint64_t) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not 8-byte aligned", offset);
        return NULL;
    }
    return (uint64_t *)(void *)p;
}

static PyObject *atomic_load(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "atomic_load() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t offset = PyNumber_AsSsize_t(args[1], PyExc_IndexError);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    uint64_t *word = word_at(&view, offset);
    if (word != NULL)
        result = PyLong_FromUnsignedLongLong(__atomic_load_n(word, __ATOMIC_ACQUIRE));
    PyBuffer_Release(&view);
    return result;
}

static PyObject *atomic_store(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "atomic_store() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t offset = PyNumber_AsSsize_t(args[1], PyExc_IndexError);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long value = PyLong_AsUnsignedLongLong(args[2]);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    uint64_t *word = word_at(&view, offset);
    if (word != NULL)
        __atomic_store_n(word, (uint64_t)value, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    if (word == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"refuse_connections", refuse_connections, METH_O,
     "refuse_connections(sock, /)\n--\n\n"
     "Stop a listening TCP socket from completing new handshakes (in every\n"
     "process holding it); connections already queued can still be accepted."},
    {"parse_request", parse_request, METH_O, parse_request_doc},
    {"atomic_load", (PyCFunction)(void (*)(void))atomic_load, METH_FASTCALL,
     "atomic_load(buffer, offset, /)\n--\n\n"
     "The unsigned 64-bit word at offset (8-byte aligned) of a buffer, read\n"
     "with one atomic load (acquire)."},
    {"atomic_store", (PyCFunction)(void (*)(void))atomic_store, METH_FASTCALL,
     "atomic_store(buffer, offset, value, /)\n--\n\n"
     "Write an unsigned 64-bit word at offset (8-byte aligned) of a writable\n"
     "buffer with one atomic store (release)."},
    {"decode_chunked", decode_chunked, METH_O, decode_chunked_doc},
    {"metrics_layout", ol_metrics_layout, METH_NOARGS,
     "metrics_layout()\n--\n\n"
     "The words of a worker's metrics block, in order: (family, labels, kind) each."},
    {"metrics_snapshot", ol_metrics_snapshot, METH_O,
     "metrics_snapshot(buffer, /)\n--\n\n"
     "Every word of a metrics block, each read with one atomic load, as a tuple of ints."},
    {"thread_executor", ol_handback_thread, METH_NOARGS,
     "thread_executor()\n--\n\n"
     "The calling thread's ThreadExecutor: runs the work the loop submits while\n"
     "the thread waits in Server.run_coroutine()."},
    {NULL, NULL, 0, NULL},
};

/* --------------------------------------------------------------------- */
/* Module state                                                          */

static struct PyModuleDef module_def;

static const char *const interned_names[] = {
    "type",
    "body",
    "more_body",
    "status",
    "headers",
    "http.request",
    "http.disconnect",
    "http.response.start",
    "http.response.body",
    "http",
    "https",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "client",
    "server",
    "state",
    "1.0",
    "1.1",
    "2",
    "",
    "_thread_id",
    "_ready",
    "_scheduled",
    "_debug",
    "_write_to_self",
    "oneloop.thread_executor",
    "set_running_or_notify_cancel",
    "set_result",
    "set_exception",
    "websocket",
    "websocket.connect",
    "websocket.accept",
    "websocket.receive",
    "websocket.send",
    "websocket.disconnect",
    "websocket.close",
    "websocket.http.response.start",
    "websocket.http.response.body",
    "text",
    "bytes",
    "code",
    "reason",
    "subprotocol",
    "subprotocols",
    "extensions",
    "ws",
    "wss",
    "websocket.http.response",
    "trailers",
    "more_trailers",
    "http.response.trailers",
    "context",
    "create_task",
};

static PyObject **interned_slots(ol_state *st, size_t i)
{
    PyObject **slots[] = {
        &st->s_type,
        &st->s_body,
        &st->s_more_body,
        &st->s_status,
        &st->s_headers,
        &st->s_http_request,
        &st->s_http_disconnect,
        &st->s_http_response_start,
        &st->s_http_response_body,
        &st->s_http,
        &st->s_https,
        &st->s_asgi,
        &st->s_http_version,
        &st->s_method,
        &st->s_scheme,
        &st->s_path,
        &st->s_raw_path,
        &st->s_query_string,
        &st->s_root_path,
        &st->s_client,
        &st->s_server,
        &st->s_state,
        &st->s_1_0,
        &st->s_1_1,
        &st->s_2,
        &st->s_empty,
        &st->s_thread_id,
        &st->s_ready,
        &st->s_scheduled,
        &st->s_debug,
        &st->s_write_to_self,
        &st->s_thread_executor,
        &st->s_set_running_or_notify_cancel,
        &st->s_set_result,
        &st->s_set_exception,
        &st->s_websocket,
        &st->s_ws_connect,
        &st->s_ws_accept,
        &st->s_ws_receive,
        &st->s_ws_send,
        &st->s_ws_disconnect,
        &st->s_ws_close,
        &st->s_ws_response_start,
        &st->s_ws_response_body,
        &st->s_text,
        &st->s_bytes,
        &st->s_code,
        &st->s_reason,
        &st->s_subprotocol,
        &st->s_subprotocols,
        &st->s_extensions,
        &st->s_ws,
        &st->s_wss,
        &st->s_ws_http_response,
        &st->s_trailers,
        &st->s_more_trailers,
        &st->s_http_response_trailers,
        &st->s_context,
        &st->s_create_task,
    };
    return slots[i];
}

/* Header names common enough to share one bytes object across requests. */
static const char *const common_headers[] = {
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "content-type",
    "content-length",
    "cookie",
    "referer",
    "origin",
    "authorization",
    "cache-control",
    "pragma",
    "upgrade-insecure-requests",
    "if-none-match",
    "if-modified-since",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-requested-with",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "dnt",
    "te",
    "range",
    "expect",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
    "traceparent",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
};

static const char *const method_names[] = {
    [OL_M_GET] = "GET",         [OL_M_HEAD] = "HEAD",       [OL_M_POST] = "POST",
    [OL_M_PUT] = "PUT",         [OL_M_DELETE] = "DELETE",   [OL_M_PATCH] = "PATCH",
    [OL_M_OPTIONS] = "OPTIONS", [OL_M_CONNECT] = "CONNECT", [OL_M_TRACE] = "TRACE",
};

static const char *const env_strings[] = {
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_COOKIE",
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.input_terminated",
    "wsgi.file_wrapper",
    "gunicorn.socket",
    "HTTP/1.1",
    "HTTP/1.0",
    "HTTP/2",
    "http",
    "https",
    "80",
    "443",
    "",
    "localhost",
};

/* "HTTP_" + upper-case name with '-' as '_'. */
static PyObject *env_key_for(const char *name)
{
    char key[128];
    size_t n = strlen(name);
    memcpy(key, "HTTP_", 5);
    for (size_t i = 0; i < n; i++)
        key[5 + i] = name[i] == '-'                       ? '_'
                     : (name[i] >= 'a' && name[i] <= 'z') ? (char)(name[i] - 32)
                                                          : name[i];
    key[5 + n] = '\0';
    return PyUnicode_InternFromString(key);
}

static int init_env(ol_state *st)
{
    for (size_t i = 0; i < sizeof(env_strings) / sizeof(env_strings[0]); i++)
        if ((st->env[i] = PyUnicode_InternFromString(env_strings[i])) == NULL)
            return -1;
    st->env[E_V_WSGI_VERSION] = Py_BuildValue("(ii)", 1, 0);
    return st->env[E_V_WSGI_VERSION] ? 0 : -1;
}

/* Open addressing over a table at most half full: a probe or two. */
static void index_header(ol_state *st, int k)
{
    PyObject *b = st->header_names[k];
    uint32_t mask = OL_HEADER_SLOTS - 1;
    uint32_t i = ol_header_hash(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)) & mask;
    while (st->header_slots[i] != 0)
        i = (i + 1) & mask;
    st->header_slots[i] = (int16_t)(k + 1);
}

static int init_strings(ol_state *st)
{
    for (size_t i = 0; i < sizeof(interned_names) / sizeof(interned_names[0]); i++) {
        PyObject *s = PyUnicode_InternFromString(interned_names[i]);
        if (s == NULL)
            return -1;
        *interned_slots(st, i) = s;
    }
    st->b_empty = PyBytes_FromStringAndSize("", 0);
    if (st->b_empty == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++)
        if (method_names[i] != NULL &&
            (st->methods[i] = PyUnicode_InternFromString(method_names[i])) == NULL)
            return -1;
    for (size_t i = 0; i < sizeof(common_headers) / sizeof(common_headers[0]); i++) {
        PyObject *b = PyBytes_FromString(common_headers[i]);
        PyObject *key = b ? env_key_for(common_headers[i]) : NULL;
        if (key == NULL) {
            Py_XDECREF(b);
            return -1;
        }
        st->header_env[st->n_header_names] = key;
        st->header_names[st->n_header_names] = b;
        index_header(st, st->n_header_names++);
    }
    return 0;
}

/* A private name of asyncio the core cannot work without (oneloop.selfcheck
 * lists them; the CLI checks them before it imports this module). Missing,
 * it is an error that names it and the Python version, not a bare
 * AttributeError from deep inside an import. */
static PyObject *asyncio_private(PyObject *module, const char *module_name, const char *name)
{
    PyObject *v = PyObject_GetAttrString(module, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        const char *full = Py_GetVersion(); /* "3.13.0 (main, ...) [GCC ...]" */
        PyObject *version = PyUnicode_FromStringAndSize(full, (Py_ssize_t)strcspn(full, " "));
        if (version == NULL)
            return NULL;
        PyErr_Format(PyExc_RuntimeError,
                     "%s.%s is missing on CPython %U: oneloop runs coroutines through it and "
                     "cannot serve without it (tested on CPython 3.11, 3.12 and 3.13)",
                     module_name, name, version);
        Py_DECREF(version);
    }
    return v;
}

static int init_asyncio(ol_state *st)
{
    PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
    PyObject *asyncio = tasks ? PyImport_ImportModule("asyncio") : NULL;
    if (asyncio == NULL) {
        Py_XDECREF(tasks);
        return -1;
    }
    int ok = (st->enter_task = asyncio_private(tasks, "asyncio.tasks", "_enter_task")) &&
             (st->leave_task = asyncio_private(tasks, "asyncio.tasks", "_leave_task")) &&
             (st->get_running_loop = asyncio_private(asyncio, "asyncio", "_get_running_loop")) &&
             (st->set_running_loop = asyncio_private(asyncio, "asyncio", "_set_running_loop")) &&
             (st->cancelled_error = PyObject_GetAttrString(asyncio, "CancelledError"));
    Py_DECREF(tasks);
    Py_DECREF(asyncio);
    if (!ok)
        return -1;
    PyObject *futures = PyImport_ImportModule("concurrent.futures");
    st->future_type = futures ? PyObject_GetAttrString(futures, "Future") : NULL;
    Py_XDECREF(futures);
    st->executor_var = PyContextVar_New("oneloop.request_executor", NULL);
    return (st->enter_task && st->leave_task && st->get_running_loop && st->set_running_loop &&
            st->cancelled_error && st->future_type && st->executor_var)
               ? 0
               : -1;
}

static int module_exec(PyObject *module)
{
    ol_state *st = PyModule_GetState(module);
    if (init_strings(st) < 0 || init_env(st) < 0 || init_asyncio(st) < 0)
        return -1;
    st->client_disconnected = PyErr_NewExceptionWithDoc(
        "oneloop._core.ClientDisconnected",
        "Raised by ASGI send() and by WSGI body reads when the client has gone away.",
        PyExc_OSError, NULL);
    if (st->client_disconnected == NULL ||
        PyModule_AddObjectRef(module, "ClientDisconnected", st->client_disconnected) < 0)
        return -1;
    st->server_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ol_server_spec, NULL);
    st->request_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ol_req_spec, NULL);
    if (st->server_type == NULL || st->request_type == NULL ||
        PyModule_AddType(module, st->server_type) < 0 ||
        PyModule_AddType(module, st->request_type) < 0)
        return -1;
    if (ol_asgi_init_types(module, st) < 0 || ol_wsgi_init_types(module, st) < 0)
        return -1;
    st->call_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ol_call_spec, NULL);
    st->gate_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ol_gate_spec, NULL);
    st->handback_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ol_handback_spec, NULL);
    if (st->call_type == NULL || st->gate_type == NULL || st->handback_type == NULL ||
        PyModule_AddType(module, st->gate_type) < 0 ||
        PyModule_AddType(module, st->handback_type) < 0 ||
        PyModule_AddObjectRef(module, "request_executor", st->executor_var) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Driver", (PyObject *)st->driver_type);
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    ol_state *st = PyModule_GetState(module);
    Py_VISIT(st->server_type);
    Py_VISIT(st->request_type);
    Py_VISIT(st->driver_type);
    Py_VISIT(st->ready_type);
    Py_VISIT(st->receive_type);
    Py_VISIT(st->send_type);
    Py_VISIT(st->input_type);
    Py_VISIT(st->file_wrapper_type);
    Py_VISIT(st->call_type);
    Py_VISIT(st->gate_type);
    Py_VISIT(st->handback_type);
    Py_VISIT(st->future_type);
    Py_VISIT(st->executor_var);
    Py_VISIT(st->done);
    Py_VISIT(st->ssl_want_read);
    Py_VISIT(st->ssl_memory_bio);
    Py_VISIT(st->socket_type);
    return 0;
}

static int module_clear(PyObject *module)
{
    ol_state *st = PyModule_GetState(module);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->request_type);
    Py_CLEAR(st->driver_type);
    Py_CLEAR(st->ready_type);
    Py_CLEAR(st->receive_type);
    Py_CLEAR(st->send_type);
    Py_CLEAR(st->input_type);
    Py_CLEAR(st->file_wrapper_type);
    Py_CLEAR(st->call_type);
    Py_CLEAR(st->gate_type);
    Py_CLEAR(st->handback_type);
    Py_CLEAR(st->future_type);
    Py_CLEAR(st->executor_var);
    Py_CLEAR(st->done);
    Py_CLEAR(st->enter_task);
    Py_CLEAR(st->leave_task);
    Py_CLEAR(st->get_running_loop);
    Py_CLEAR(st->set_running_loop);
    Py_CLEAR(st->cancelled_error);
    Py_CLEAR(st->client_disconnected);
    Py_CLEAR(st->ssl_want_read);
    Py_CLEAR(st->ssl_memory_bio);
    Py_CLEAR(st->socket_type);
    for (size_t i = 0; i < sizeof(interned_names) / sizeof(interned_names[0]); i++)
        Py_CLEAR(*interned_slots(st, i));
    Py_CLEAR(st->b_empty);
    for (size_t i = 0; i < 16; i++)
        Py_CLEAR(st->methods[i]);
    for (int i = 0; i < st->n_header_names; i++) {
        Py_CLEAR(st->header_names[i]);
        Py_CLEAR(st->header_env[i]);
        Py_CLEAR(st->header_pairs[i]);
    }
    for (size_t i = 0; i < OL_ENV_COUNT; i++)
        Py_CLEAR(st->env[i]);
    st->n_header_names = 0;
    memset(st->header_slots, 0, sizeof(st->header_slots));
    return 0;
}

static void module_free(void *module)
{
    module_clear(module);
}

/* The core keeps per-server state that threads share under the GIL (the
 * pool's hand-offs assume it), and module state it does not isolate per
 * interpreter: it declares both. */
static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "oneloop._core",
    .m_doc = "oneloop's C core: connections, ASGI and WSGI adapters, the WSGI thread pool.",
    .m_size = sizeof(ol_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&module_def);
}
