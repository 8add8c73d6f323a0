/*
 * metrics.c -- counting into the worker's metrics block, and describing
 * and reading that block for the supervisor. See metrics.h.
 */
#include "metrics.h"

#include <stddef.h>
#include <string.h>

#define WORDS (sizeof(ol_metrics) / sizeof(uint64_t))
_Static_assert(sizeof(ol_metrics) % sizeof(uint64_t) == 0, "the block is made of 64-bit words");

/* The buckets' upper bounds in microseconds, Prometheus's usual ones. */
static const uint64_t bounds_us[] = {1000,   2500,   5000,    10000,   25000,   50000,   100000,
                                     250000, 500000, 1000000, 2500000, 5000000, 10000000};
_Static_assert(sizeof(bounds_us) / sizeof(bounds_us[0]) == OL_M_BUCKETS - 1, "one bound a bucket");

/* ------------------------------------------------------------------------ */
/* Counting                                                                 */

void ol_meter_observe(const ol_meter *mt, ol_histogram *h, uint64_t us)
{
    int i = 0;
    while (i < OL_M_BUCKETS - 1 && us > bounds_us[i])
        i++;
    ol_meter_add(mt, &h->bucket[i], 1);
    ol_meter_add(mt, &h->sum_us, us);
    ol_meter_add(mt, &h->count, 1);
}

void ol_meter_response(const ol_meter *mt, int method, int status, double seconds)
{
    int cls = status / 100 - 1;
    if (cls < 0 || cls >= OL_M_CLASSES)
        cls = OL_M_CLASSES - 1; /* not a status: counted as the server's failure */
    if (method < 0 || method >= OL_M_METHODS)
        method = OL_M_OTHER;
    ol_meter_add(mt, &mt->m->requests[method][cls], 1);
    if (seconds >= 0)
        ol_meter_observe(mt, &mt->m->duration, (uint64_t)(seconds * 1e6));
}

void ol_meter_rejection(const ol_meter *mt, int status)
{
    static const int statuses[OL_REJECTIONS] = {400, 408, 413, 414, 431, 501, 503, 505};
    for (int i = 0; i < OL_REJECTIONS; i++)
        if (statuses[i] == status) {
            ol_meter_add(mt, &mt->m->rejections[i], 1);
            return;
        }
}

int ol_meter_init(ol_meter *mt, Py_buffer *view, int threaded)
{
    mt->threaded = threaded;
    memset(&mt->own, 0, sizeof(mt->own));
    mt->m = &mt->own;
    if (view == NULL || view->buf == NULL)
        return 0;
    if ((size_t)view->len < sizeof(ol_metrics) || ((uintptr_t)view->buf % sizeof(uint64_t)) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "the metrics buffer must be %zu bytes or more, 8-byte aligned",
                     sizeof(ol_metrics));
        return -1;
    }
    mt->m = view->buf;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The layout, for Python                                                   */

/* Appends (family, labels, kind) for each word, in the struct's order. */
typedef struct layout {
    PyObject *list;
    int failed;
} layout;

static void word(layout *l, const char *family, const char *labels, const char *kind)
{
    if (l->failed)
        return;
    PyObject *t = Py_BuildValue("(sss)", family, labels, kind);
    if (t == NULL || PyList_Append(l->list, t) < 0)
        l->failed = 1;
    Py_XDECREF(t);
}

static void histogram(layout *l, const char *family)
{
    char le[32];
    for (int i = 0; i < OL_M_BUCKETS; i++) {
        if (i < OL_M_BUCKETS - 1)
            snprintf(le, sizeof(le), "le=\"%g\"", (double)bounds_us[i] / 1e6);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        word(l, family, le, "bucket");
    }
    word(l, family, "", "sum_us");
    word(l, family, "", "count");
}

PyObject *ol_metrics_layout(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    static const char *methods[OL_M_METHODS] = {
        [OL_M_OTHER] = "other", [OL_M_GET] = "GET",        [OL_M_HEAD] = "HEAD",
        [OL_M_POST] = "POST",   [OL_M_PUT] = "PUT",        [OL_M_DELETE] = "DELETE",
        [OL_M_PATCH] = "PATCH", [OL_M_OPTIONS] = "OPTIONS"};
    static const char *phases[OL_PHASES] = {"none",    "reading", "app",
                                            "writing", "idle",    "websocket"};
    static const char *rejected[OL_REJECTIONS] = {"400", "408", "413", "414",
                                                  "431", "501", "503", "505"};
    layout l = {PyList_New(0), 0};
    if (l.list == NULL)
        return NULL;
    char labels[64];
    for (int m = 0; m < OL_M_METHODS; m++)
        for (int c = 0; c < OL_M_CLASSES; c++) {
            snprintf(labels, sizeof(labels), "method=\"%s\",status=\"%dxx\"", methods[m], c + 1);
            word(&l, "oneloop_requests_total", labels, "counter");
        }
    histogram(&l, "oneloop_request_duration_seconds");
    word(&l, "oneloop_received_bytes_total", "", "counter");
    word(&l, "oneloop_sent_bytes_total", "", "counter");
    word(&l, "oneloop_connections_accepted_total", "", "counter");
    for (int p = 0; p < OL_PHASES; p++) {
        snprintf(labels, sizeof(labels), "state=\"%s\"", phases[p]);
        word(&l, "oneloop_connections", labels, p == OL_PHASE_NONE ? "unused" : "gauge");
    }
    word(&l, "oneloop_requests_in_flight", "", "gauge");
    word(&l, "oneloop_wsgi_threads", "", "gauge");
    word(&l, "oneloop_wsgi_threads_busy", "", "gauge");
    histogram(&l, "oneloop_bridge_call_duration_seconds");
    for (int r = 0; r < OL_REJECTIONS; r++) {
        snprintf(labels, sizeof(labels), "status=\"%s\"", rejected[r]);
        word(&l, "oneloop_rejections_total", labels, "counter");
    }
    word(&l, "oneloop_websocket_messages_received_total", "", "counter");
    word(&l, "oneloop_websocket_messages_sent_total", "", "counter");
    word(&l, "oneloop_health_checks_total", "", "counter");
    word(&l, "oneloop_loop_lag_seconds", "", "gauge_us");
    if (!l.failed && (size_t)PyList_GET_SIZE(l.list) != WORDS) {
        PyErr_SetString(PyExc_SystemError, "the metrics layout does not match the block");
        l.failed = 1;
    }
    if (l.failed) {
        Py_DECREF(l.list);
        return NULL;
    }
    return l.list;
}

/* One atomic load per word: a value the worker wrote, never a torn one. */
PyObject *ol_metrics_snapshot(PyObject *module, PyObject *buffer)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    if ((size_t)view.len < sizeof(ol_metrics) || ((uintptr_t)view.buf % sizeof(uint64_t)) != 0) {
        PyErr_Format(PyExc_ValueError, "a metrics block is %zu bytes, 8-byte aligned",
                     sizeof(ol_metrics));
        goto done;
    }
    out = PyTuple_New((Py_ssize_t)WORDS);
    if (out == NULL)
        goto done;
    const uint64_t *words = view.buf;
    for (size_t i = 0; i < WORDS; i++) {
        int64_t v = (int64_t)__atomic_load_n(&words[i], __ATOMIC_RELAXED);
        PyObject *n = PyLong_FromLongLong(v);
        if (n == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)i, n);
    }
done:
    PyBuffer_Release(&view);
    return out;
}
