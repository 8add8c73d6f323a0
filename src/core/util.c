/*
 * util.c -- small things every file of the binding layer uses: the clock,
 * the pending exception as one object, and the common header names table.
 * A leaf: it calls nothing else of the core.
 */
#include "core.h"

#include <string.h>
#include <time.h>

double ol_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

PyObject *ol_err_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void ol_err_restore(PyObject *exc)
{
    if (exc == NULL)
        return;
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Case-insensitive FNV-1a: the common header table's hash. */
uint32_t ol_header_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        h = (h ^ (ch >= 'A' && ch <= 'Z' ? ch | 0x20u : ch)) * 16777619u;
    }
    return h;
}

int ol_common_header(ol_state *st, ol_span name)
{
    uint32_t mask = OL_HEADER_SLOTS - 1;
    for (uint32_t i = ol_header_hash(name.base, name.len) & mask;; i = (i + 1) & mask) {
        int k = st->header_slots[i] - 1;
        if (k < 0)
            return -1;
        PyObject *known = st->header_names[k];
        if ((size_t)PyBytes_GET_SIZE(known) == name.len &&
            strncasecmp(PyBytes_AS_STRING(known), name.base, name.len) == 0)
            return k;
    }
}

PyObject *ol_new_future(ol_server *srv)
{
    return PyObject_CallNoArgs(srv->create_future);
}

int ol_dict_put(PyObject *d, PyObject *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int e = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return e;
}
