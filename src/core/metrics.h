/*
 * metrics.h -- the worker's counters and gauges (metrics.c), kept in
 * memory the supervisor shares, which it reads to serve Prometheus text
 * for all workers (oneloop/metrics.py). A leaf: it calls nothing.
 *
 * Writing. Every field is a 64-bit word with one writer at a time in
 * the common case: on the event loop (ASGI) only the loop's thread writes,
 * so an update is a relaxed load and store -- no lock, no locked
 * instruction on the hot path. In threaded mode (WSGI: pool threads and
 * the loop) updates are relaxed atomic adds, still without a lock. The
 * supervisor reads each word with one atomic load (ol_metrics_snapshot), so
 * it sees old or new values, never torn ones. Gauges are kept as words
 * that go up and down (two's complement; read back as signed).
 *
 * Where the words live. The supervisor maps a shared page set per worker
 * before forking it and hands it to the core (Server config `metrics`);
 * without one (a lone worker, tests) the server counts into a private
 * block, so the hot path never asks whether metrics are on.
 *
 * Layout. The struct below is the layout; ol_metrics_layout() describes it
 * to Python as (family, labels, kind) per word, so the renderer needs no
 * copy of it.
 */
#ifndef OL_METRICS_H
#define OL_METRICS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "ol_http.h"

/* Requests are counted by the wire layer's method id (ol_http.h), up to
 * OPTIONS; CONNECT, TRACE and the rest are "other" (id 0). */
#define OL_M_METHODS (OL_M_OPTIONS + 1)

/* Status classes 1xx..5xx. */
#define OL_M_CLASSES 5

/* Buckets of the latency histograms: 13 upper bounds (metrics.c, from
 * 1 ms to 10 s) and +Inf. */
#define OL_M_BUCKETS 14

/* What a connection is doing, for the open-connections gauge. */
enum ol_phase {
    OL_PHASE_NONE,      /* not open (not counted) */
    OL_PHASE_READING,   /* receiving a request head (or the TLS handshake) */
    OL_PHASE_APP,       /* its request is with the app */
    OL_PHASE_WRITING,   /* the app is done; output is still going out, or closing */
    OL_PHASE_IDLE,      /* kept alive between requests */
    OL_PHASE_WEBSOCKET, /* a WebSocket session (ours, or a WSGI app's) */
    OL_PHASES
};

/* Statuses the core answers by itself (limits and bad input). */
enum ol_rejection {
    OL_REJ_400,
    OL_REJ_408,
    OL_REJ_413,
    OL_REJ_414,
    OL_REJ_431,
    OL_REJ_501,
    OL_REJ_503,
    OL_REJ_505,
    OL_REJECTIONS
};

typedef struct ol_histogram {
    uint64_t bucket[OL_M_BUCKETS]; /* per bucket, not cumulative */
    uint64_t sum_us;
    uint64_t count;
} ol_histogram;

typedef struct ol_metrics {
    uint64_t requests[OL_M_METHODS][OL_M_CLASSES]; /* responses, by method and class */
    ol_histogram duration;                         /* head received -> response complete */
    uint64_t bytes_in, bytes_out;                  /* on the sockets (TLS records included) */
    uint64_t connections_total;                    /* accepted */
    uint64_t connections[OL_PHASES];               /* gauge; [OL_PHASE_NONE] unused */
    uint64_t in_flight;                            /* gauge: exchanges the app holds */
    uint64_t pool_threads, pool_busy;              /* gauges: WSGI threads, serving now */
    ol_histogram bridge;                           /* WSGI code's async calls on the loop */
    uint64_t rejections[OL_REJECTIONS];            /* answered by the core, by status */
    uint64_t ws_messages_in, ws_messages_out;      /* WebSocket messages */
    uint64_t health_checks;                        /* --health-path answers */
    uint64_t loop_lag_us;                          /* gauge: the heartbeat's last delay */
} ol_metrics;

/* Where a server counts, and whether other threads count there too. */
typedef struct ol_meter {
    ol_metrics *m;
    int threaded;
    ol_metrics own; /* when no shared block was given */
} ol_meter;

static inline void ol_meter_add(const ol_meter *mt, uint64_t *word, uint64_t v)
{
    if (mt->threaded)
        __atomic_fetch_add(word, v, __ATOMIC_RELAXED);
    else
        __atomic_store_n(word, __atomic_load_n(word, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline void ol_meter_set(uint64_t *word, uint64_t v)
{
    __atomic_store_n(word, v, __ATOMIC_RELAXED);
}

/* Count one observation of `us` microseconds. */
void ol_meter_observe(const ol_meter *mt, ol_histogram *h, uint64_t us);
/* A response: its method (enum ol_method), status and, for an
 * exchange timed from its head, its duration (negative: not timed). */
void ol_meter_response(const ol_meter *mt, int method, int status, double seconds);
/* The core answered `status` by itself (counted when it is a rejection). */
void ol_meter_rejection(const ol_meter *mt, int status);

/* The block a shared buffer gives, or the meter's own: 0, or -1 with an
 * exception (too small, misaligned). The buffer stays exported (view). */
int ol_meter_init(ol_meter *mt, Py_buffer *view, int threaded);

/* Python: _core.metrics_layout() and _core.metrics_snapshot(buffer). */
PyObject *ol_metrics_layout(PyObject *module, PyObject *unused);
PyObject *ol_metrics_snapshot(PyObject *module, PyObject *buffer);

#endif /* OL_METRICS_H */
