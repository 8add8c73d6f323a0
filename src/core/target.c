/*
 * target.c -- from a request target to what the app sees: path, raw path
 * and query string, and X-Forwarded-* from trusted proxies.
 */
#include "core.h"

#include <string.h>

/* origin-form "/p?q", absolute-form "http://h/p?q" or asterisk-form "*".
 * A fragment is not part of either piece. */
void ol_split_target(ol_span target, ol_target *out)
{
    const char *p = target.base, *end = target.base + target.len;
    if (p < end && *p != '/' && *p != '*') {
        const char *sep = memmem(p, target.len, "://", 3);
        if (sep != NULL) {
            p = sep + 3;
            while (p < end && *p != '/' && *p != '?' && *p != '#')
                p++;
        }
    }
    const char *path = p;
    while (p < end && *p != '?' && *p != '#')
        p++;
    out->path.base = path;
    out->path.len = (size_t)(p - path);
    if (out->path.len == 0) {
        out->path.base = "/";
        out->path.len = 1;
    }
    out->query.base = p;
    out->query.len = 0;
    if (p < end && *p == '?') {
        const char *q = ++p;
        while (p < end && *p != '#')
            p++;
        out->query.base = q;
        out->query.len = (size_t)(p - q);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Percent-decode into buf (at least len bytes); returns the decoded length.
 * A '%' not followed by two hex digits stays as it is. */
static size_t unquote(const char *s, size_t len, char *buf)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            buf[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            buf[n++] = s[i];
        }
    }
    return n;
}

/* The decoded path with the root path in front, as ASGI wants it: UTF-8,
 * invalid sequences replaced. For WSGI (latin1 set) the bytes map 1:1. */
static PyObject *decode(ol_server *srv, ol_span path, int latin1)
{
    char stack[2048];
    size_t root = latin1 ? 0 : (size_t)PyBytes_GET_SIZE(srv->root_path_bytes);
    size_t need = root + path.len;
    char *buf = need <= sizeof(stack) ? stack : PyMem_Malloc(need);
    if (buf == NULL)
        return PyErr_NoMemory();
    memcpy(buf, PyBytes_AS_STRING(srv->root_path_bytes), root);
    size_t n = root;
    if (memchr(path.base, '%', path.len) == NULL) {
        memcpy(buf + n, path.base, path.len);
        n += path.len;
    } else {
        n += unquote(path.base, path.len, buf + n);
    }
    PyObject *s = latin1 ? PyUnicode_DecodeLatin1(buf, (Py_ssize_t)n, NULL)
                         : PyUnicode_DecodeUTF8(buf, (Py_ssize_t)n, "replace");
    if (buf != stack)
        PyMem_Free(buf);
    return s;
}

PyObject *ol_decode_path(ol_server *srv, ol_span path)
{
    return decode(srv, path, 0);
}

PyObject *ol_decode_path_latin1(ol_server *srv, ol_span path)
{
    return decode(srv, path, 1);
}

/* raw_path with the root path in front (ASGI). */
PyObject *ol_raw_path(ol_server *srv, ol_span path)
{
    Py_ssize_t root = PyBytes_GET_SIZE(srv->root_path_bytes);
    PyObject *b = PyBytes_FromStringAndSize(NULL, root + (Py_ssize_t)path.len);
    if (b == NULL)
        return NULL;
    memcpy(PyBytes_AS_STRING(b), PyBytes_AS_STRING(srv->root_path_bytes), (size_t)root);
    memcpy(PyBytes_AS_STRING(b) + root, path.base, path.len);
    return b;
}

/* A header's value among the request's (name, value) pairs, or NULL. */
static PyObject *find_header(PyObject *headers, const char *lower_name)
{
    size_t n = strlen(lower_name);
    Py_ssize_t count = PyList_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0);
        if ((size_t)PyBytes_GET_SIZE(name) == n &&
            strncasecmp(PyBytes_AS_STRING(name), lower_name, n) == 0)
            return PyTuple_GET_ITEM(pair, 1);
    }
    return NULL;
}

/*
 * --proxy-headers: when X-Forwarded-For or X-Forwarded-Proto is present, the
 * Python side decides (trusted peers, which hop is the client) and returns
 * (client, scheme) or None. No cost when neither header is present.
 * Returns 1 with r->client replaced and *scheme a new reference (None when
 * the proxy named none), 0 when nothing changes, -1 on error.
 */
static int ask_proxy(ol_server *srv, ol_req *r, PyObject *xff, PyObject *xfp, PyObject **scheme)
{
    if (xff == NULL && xfp == NULL)
        return 0;
    PyObject *result =
        PyObject_CallFunctionObjArgs(srv->proxy_trusted, r->client ? r->client : Py_None,
                                     xff ? xff : Py_None, xfp ? xfp : Py_None, NULL);
    if (result == NULL)
        return -1;
    int applied = 0;
    PyObject *client;
    if (result != Py_None) {
        applied = PyArg_ParseTuple(result, "OO", &client, scheme) ? 1 : -1;
        if (applied == 1) {
            Py_XSETREF(r->client, Py_NewRef(client));
            Py_INCREF(*scheme);
        }
    }
    Py_DECREF(result);
    return applied;
}

int ol_apply_proxy_headers(ol_server *srv, ol_req *r, PyObject *mapping, PyObject *client_key,
                           PyObject *scheme_key)
{
    PyObject *scheme = NULL;
    int applied = ask_proxy(srv, r, find_header(r->req_headers, "x-forwarded-for"),
                            find_header(r->req_headers, "x-forwarded-proto"), &scheme);
    if (applied <= 0)
        return applied;
    int e = PyDict_SetItem(mapping, client_key, r->client);
    if (e == 0 && scheme != Py_None)
        e = PyDict_SetItem(mapping, scheme_key, scheme);
    Py_DECREF(scheme);
    return e;
}

/* The same for WSGI: REMOTE_ADDR, REMOTE_PORT and wsgi.url_scheme. */
int ol_wsgi_proxy_headers(ol_server *srv, ol_req *r, PyObject *env)
{
    PyObject *scheme = NULL;
    int applied = ask_proxy(srv, r, PyDict_GetItemString(env, "HTTP_X_FORWARDED_FOR"),
                            PyDict_GetItemString(env, "HTTP_X_FORWARDED_PROTO"), &scheme);
    if (applied <= 0)
        return applied;
    int e = 0;
    PyObject *client = r->client;
    if (PyTuple_Check(client) && PyTuple_GET_SIZE(client) == 2) {
        PyObject *port = PyObject_Str(PyTuple_GET_ITEM(client, 1));
        e = (port == NULL ||
             PyDict_SetItemString(env, "REMOTE_ADDR", PyTuple_GET_ITEM(client, 0)) < 0 ||
             PyDict_SetItemString(env, "REMOTE_PORT", port) < 0)
                ? -1
                : 0;
        Py_XDECREF(port);
    }
    if (e == 0 && scheme != Py_None)
        e = PyDict_SetItemString(env, "wsgi.url_scheme", scheme);
    Py_DECREF(scheme);
    return e;
}
