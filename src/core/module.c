/*
 * module.c -- the oneloop._core extension module: multi-phase init, the
 * module state every other file of the binding layer reaches through
 * ol_state_of(), and the module-level functions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ol_http.h"

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

PyDoc_STRVAR(parse_request_doc,
             "parse_request(data, /)\n--\n\n"
             "Parse an HTTP/1.1 request head with oneloop's parser. Returns a dict,\n"
             "None if the head is incomplete, or raises ValueError('<status> <reason>').");

static PyMethodDef module_methods[] = {
    {"parse_request", parse_request, METH_O, parse_request_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "oneloop._core",
    .m_doc = "oneloop's C core: the binding between the wire layer and Python.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&module_def);
}
