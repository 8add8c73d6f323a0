/*
 * watchdog.c -- noticing when something blocks the event loop.
 *
 * With one loop per worker, one async view that blocks (time.sleep, a sync
 * database driver, a long computation) stalls every async view of the
 * worker. The loop proves it is alive ten times a second: a timerfd it reads
 * (Server._beat) stamps loop_beat. A watchdog thread, which needs no GIL to
 * look, checks the stamp; when it is older than the threshold it takes the
 * GIL (blocked Python code gives it up every switch interval) and reports,
 * once per stall, what the loop was running: the request, the coroutine and
 * the loop thread's stack. The fast path pays two pointer stores per
 * coroutine step (ol_watch_enter/leave in driver.c).
 */
#include "core.h"

#include <errno.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BEAT_NS 100000000L

PyObject *ol_watch_beat(ol_server *srv, PyObject *unused)
{
    (void)unused;
    ol_reactor_drain(srv->watch.fd);
    double now = ol_now();
    __atomic_store(&srv->watch.beat, &now, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

/* Describe the stall and hand it to the Python hook (GIL held). */
static void report(ol_server *srv, double stalled)
{
    PyObject *running = srv->watch.running; /* borrowed: the loop is stuck in it */
    /* A WSGI thread may be running the loop's code (gate.c): its stack shows the culprit. */
    unsigned long holder = srv->gate != NULL ? ol_gate_holder(srv->gate) : 0;
    PyObject *r =
        PyObject_CallFunction(srv->watch.on_stall, "dOk", stalled, running ? running : Py_None,
                              holder ? holder : srv->loop_thread);
    if (r == NULL)
        PyErr_WriteUnraisable(srv->watch.on_stall);
    Py_XDECREF(r);
}

static void *watch_main(void *arg)
{
    ol_server *srv = arg;
    double threshold = srv->watch.threshold;
    double reported_beat = 0;
    struct timespec pause = {0, (long)(threshold / 4 * 1e9)};
    if (threshold / 4 >= 1) {
        pause.tv_sec = (time_t)(threshold / 4);
        pause.tv_nsec = 0;
    }
    while (!__atomic_load_n(&srv->watch.stop, __ATOMIC_RELAXED)) {
        nanosleep(&pause, NULL);
        double beat;
        __atomic_load(&srv->watch.beat, &beat, __ATOMIC_RELAXED);
        double stalled = ol_now() - beat;
        if (beat == 0 || stalled < threshold || beat == reported_beat)
            continue;
        reported_beat = beat; /* once per stall */
        PyGILState_STATE g = PyGILState_Ensure();
        if (!__atomic_load_n(&srv->watch.stop, __ATOMIC_RELAXED) && srv->watch.on_stall != NULL)
            report(srv, ol_now() - beat);
        PyGILState_Release(g);
    }
    return NULL;
}

/* Start the heartbeat and the watchdog (threshold > 0). */
int ol_watch_start(ol_server *srv)
{
    if (srv->watch.threshold <= 0 || srv->watch.on_stall == NULL)
        return 0;
    srv->watch.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec tick = {{0, BEAT_NS}, {0, BEAT_NS}};
    if (srv->watch.fd < 0 || timerfd_settime(srv->watch.fd, 0, &tick, NULL) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *beat = PyObject_GetAttrString((PyObject *)srv, "_beat");
    PyObject *r =
        beat ? PyObject_CallMethod(srv->loop, "add_reader", "iO", srv->watch.fd, beat) : NULL;
    Py_XDECREF(beat);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    srv->watch.beat = ol_now();
    if (pthread_create(&srv->watch.thread, NULL, watch_main, srv) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot start the loop watchdog thread");
        return -1;
    }
    srv->watch.started = 1;
    return 0;
}

void ol_watch_stop(ol_server *srv)
{
    __atomic_store_n(&srv->watch.stop, 1, __ATOMIC_RELAXED);
    if (srv->watch.started) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(srv->watch.thread, NULL);
        Py_END_ALLOW_THREADS
        srv->watch.started = 0;
    }
    if (srv->watch.fd >= 0) {
        if (srv->loop != NULL && srv->loop != Py_None) {
            PyObject *r = PyObject_CallMethod(srv->loop, "remove_reader", "i", srv->watch.fd);
            if (r == NULL)
                PyErr_Clear();
            Py_XDECREF(r);
        }
        close(srv->watch.fd);
        srv->watch.fd = -1;
    }
}
