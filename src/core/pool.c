/*
 * pool.c -- WSGI: a pool of threads that serve connections themselves.
 *
 * There is no hand-off between an I/O thread and app threads: the thread
 * that learns a connection is readable reads it, parses the head (both
 * without the GIL), calls the app, and writes the response.
 *
 * Which thread polls? One at a time: the holder of the *token*. The holder
 * takes the next ready event (from epoll_wait, GIL released) and serves it
 * while still holding the token, then takes the next. Under load one thread
 * therefore serves request after request with no thread switch and no GIL
 * hand-over, which is what makes fast views fast. If a view runs long (it
 * blocks on a database, sleeps, ...), a monitor thread notices that the
 * holder has been busy for more than STEAL_AFTER and passes the token to an
 * idle thread, which goes on serving other connections. So a blocking view
 * stalls nobody but its own client, for at most that long, and the pool
 * grows its concurrency only when views actually block.
 *
 * Connections are armed with EPOLLONESHOT: an event goes to exactly one
 * thread, and the connection is re-armed when that thread is done with it.
 * The batch holds reactor handles, resolved under the pool lock when an
 * event is taken: a connection closed since the batch was fetched (by the
 * tick, or at shutdown) no longer resolves, so no thread reads freed memory.
 *
 * Locking: the connection list's lock (conn.h) guards the token, the event
 * batch and the busy state too, so taking an event and holding its
 * connection is one critical section. Code holding it never takes the
 * GIL, never blocks, and never calls back into Python.
 */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define BATCH       64
#define STEAL_AFTER 0.001 /* seconds a view may block before another thread polls */

struct ol_pool {
    pthread_mutex_t *lock;     /* the connection list's (conn.h): one lock for both */
    pthread_cond_t token_cv;   /* threads waiting for the token */
    pthread_cond_t monitor_cv; /* the monitor's sleep */
    int token_free;
    int holder;  /* id of the thread with the token, -1 if none */
    int waiting; /* threads waiting for the token */
    int stopping;
    int busy; /* the holder is serving a connection */
    double busy_since;
    unsigned long served; /* events served, for the monitor's idle test */
    int monitor_asleep;   /* the monitor waits to be signalled */
    int next_id;
    int alive;              /* threads inside ol_pool_thread() */
    int close_reactor_last; /* the server closed while threads were alive */
    struct epoll_event batch[BATCH];
    int nbatch, next;
    int polling; /* the holder waits in epoll_wait */
    /* HTTP/2 streams whose apps wait for a thread (ol_pool_post): a queue
     * of strong references, linked through ->job_next. */
    ol_req *jobs, **jobs_tail;
    size_t njobs;
    ol_conn *job_conn;   /* the connection of the job the holder runs (a reference) */
    ol_conn *flush_conn; /* ... when that job blocked: its gathered frames go (ol_h2_flush) */
    pthread_t monitor;
    int monitor_started;
};

static ol_req *take_job_locked(ol_pool *p);

/* Interrupt the poller (epoll_wait) and every waiting thread. */
void ol_pool_wake(ol_server *srv)
{
    ol_reactor_wake(&srv->reactor);
    if (srv->pool != NULL) {
        pthread_mutex_lock(srv->pool->lock);
        pthread_cond_broadcast(&srv->pool->token_cv);
        pthread_cond_signal(&srv->pool->monitor_cv);
        pthread_mutex_unlock(srv->pool->lock);
    }
}

int ol_pool_defer_reactor_close(ol_server *srv)
{
    ol_pool *p = srv->pool;
    if (p == NULL)
        return 0;
    pthread_mutex_lock(p->lock);
    int defer = p->alive > 0;
    p->close_reactor_last = defer;
    pthread_mutex_unlock(p->lock);
    return defer;
}

/* ------------------------------------------------------------------------ */
/* The monitor                                                              */

static struct timespec abs_time(double seconds_from_now)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + seconds_from_now;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    return ts;
}

/*
 * The monitor looks every STEAL_AFTER while the pool is serving; after a
 * stretch with nothing served it sleeps until a thread signals it, so an
 * idle server does not wake up a thousand times a second and a busy one
 * never signals it at all.
 */
static void *monitor_main(void *arg)
{
    ol_pool *p = arg;
    unsigned long last_served = 0;
    int idle_checks = 0;
    pthread_mutex_lock(p->lock);
    while (!p->stopping) {
        if (idle_checks > 100) {
            p->monitor_asleep = 1;
            pthread_cond_wait(&p->monitor_cv, p->lock);
            p->monitor_asleep = 0;
            idle_checks = 0;
            continue;
        }
        struct timespec until = abs_time(STEAL_AFTER);
        pthread_cond_timedwait(&p->monitor_cv, p->lock, &until);
        if (p->busy && p->waiting > 0 && ol_now() - p->busy_since >= STEAL_AFTER) {
            /* The holder is stuck in a view: an idle thread takes over polling,
             * and sends first what the view's connection gathered. */
            if (p->job_conn != NULL && p->flush_conn == NULL) {
                p->flush_conn = p->job_conn;
                ol_conn_incref(p->flush_conn);
            }
            p->holder = -1;
            p->busy = 0;
            p->token_free = 1;
            pthread_cond_signal(&p->token_cv);
        }
        idle_checks = (p->served == last_served && !p->busy) ? idle_checks + 1 : 0;
        last_served = p->served;
    }
    pthread_mutex_unlock(p->lock);
    return NULL;
}

static int init_cond_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int e = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return e;
}

int ol_pool_start(ol_server *srv)
{
    ol_pool *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->lock = &srv->conns.lock;
    if (!srv->conns.lock_ready || pthread_cond_init(&p->token_cv, NULL) != 0 ||
        init_cond_monotonic(&p->monitor_cv) != 0) {
        free(p);
        PyErr_SetString(PyExc_OSError, "cannot initialise the thread pool");
        return -1;
    }
    p->token_free = 1;
    p->holder = -1;
    if (pthread_create(&p->monitor, NULL, monitor_main, p) != 0) {
        free(p);
        PyErr_SetString(PyExc_OSError, "cannot start the pool monitor thread");
        return -1;
    }
    p->monitor_started = 1;
    srv->pool = p;
    return 0;
}

/* Ask every pool thread to return; they finish the request they serve. */
int ol_pool_stop(ol_server *srv)
{
    ol_pool *p = srv->pool;
    if (p == NULL)
        return 0;
    pthread_mutex_lock(p->lock);
    __atomic_store_n(&p->stopping, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(p->lock);
    ol_pool_wake(srv);
    return 0;
}

void ol_pool_free(ol_server *srv)
{
    ol_pool *p = srv->pool;
    if (p == NULL)
        return;
    ol_pool_stop(srv);
    if (p->monitor_started) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(p->monitor, NULL);
        Py_END_ALLOW_THREADS
    }
    srv->pool = NULL;
    /* Streams no thread took before the pool stopped: their connections
     * are closed by now, and the apps never ran. */
    if (p->flush_conn != NULL)
        ol_conn_decref(p->flush_conn);
    for (;;) {
        pthread_mutex_lock(p->lock);
        ol_req *r = p->njobs > 0 ? take_job_locked(p) : NULL;
        pthread_mutex_unlock(p->lock);
        if (r == NULL)
            break;
        ol_wsgi_drop_job(r);
    }
    pthread_cond_destroy(&p->token_cv);
    pthread_cond_destroy(&p->monitor_cv);
    free(p);
}

/* ------------------------------------------------------------------------ */
/* Jobs: the apps of HTTP/2 streams                                         */

/*
 * The streams of one HTTP/2 connection run in parallel, each on a pool
 * thread of its own, as requests on separate connections do: the thread
 * that processed the frames posts each new stream as a job and lets go of
 * the connection. Jobs are taken by the token holder, before it polls
 * again, so a fast view runs right there with no thread switch; when a
 * view blocks, the monitor hands the token on and the next thread takes
 * the next job -- the same rule that spreads connections over threads.
 */

int ol_pool_post(ol_server *srv, ol_req *r)
{
    ol_pool *p = srv->pool;
    if (p == NULL)
        return -1;
    r->job_next = NULL;
    Py_INCREF(r);
    pthread_mutex_lock(p->lock);
    if (p->jobs == NULL)
        p->jobs_tail = &p->jobs;
    *p->jobs_tail = r;
    p->jobs_tail = &r->job_next;
    p->njobs++;
    if (p->polling) /* the job is the poller's to take */
        ol_reactor_wake(&srv->reactor);
    pthread_mutex_unlock(p->lock);
    return 0;
}

static ol_req *take_job_locked(ol_pool *p)
{
    ol_req *r = p->jobs;
    p->jobs = r->job_next;
    r->job_next = NULL;
    p->njobs--;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Serving                                                                  */

/* Close a connection from a pool thread (GIL not held on entry). */
static void abort_conn(ol_conn *c, PyThreadState **ts)
{
    PyEval_RestoreThread(*ts);
    ol_conn_abort(c);
    *ts = PyEval_SaveThread();
}

/* Output left by someone who could not block (the tick's 408), then the
 * lingering close it was waiting for. 0, or -1 when the connection closed. */
static int finish_output(ol_conn *c, PyThreadState **ts)
{
    if (ol_conn_pending(c) > 0) {
        struct iovec none = {NULL, 0};
        PyEval_RestoreThread(*ts);
        int e = ol_conn_raw_writev(c, &none, 1); /* blocking: flushes the rest */
        if (e < 0)
            ol_conn_abort(c);
        else if ((c->flags & CONN_CLOSING) && !(c->flags & CONN_LINGER))
            ol_conn_close_gracefully(c);
        *ts = PyEval_SaveThread();
    }
    return (c->flags & CONN_CLOSED) ? -1 : 0;
}

/*
 * Serve a ready connection: read once, then answer every complete request
 * in the buffer. Entered and left without the GIL.
 */
static void serve_conn(ol_conn *c, uint32_t events, PyThreadState **ts)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        abort_conn(c, ts);
        return;
    }
    if (finish_output(c, ts) < 0)
        return;
    if (c->flags & CONN_LINGER) {
        if (!ol_conn_linger_read(c))
            abort_conn(c, ts);
        return;
    }
    int h2 = c->proto == &ol_h2_protocol;
    if (!(events & (EPOLLIN | EPOLLRDHUP)) || (c->flags & CONN_CLOSING)) {
        /* Room in the socket: HTTP/2 frames what its streams' apps queued. */
        if (h2 && !(c->flags & (CONN_CLOSED | CONN_CLOSING)))
            ol_h2_process(c, ts);
        return;
    }
    Py_ssize_t n;
    if (c->listener->ssl_context != NULL) {
        PyEval_RestoreThread(*ts);
        n = ol_conn_recv(c);
        *ts = PyEval_SaveThread();
    } else {
        n = ol_conn_recv(c);
    }
    if (n == 0 || n == -2) {
        abort_conn(c, ts);
        return;
    }
    if (h2)
        ol_h2_process(c, ts);
    else
        ol_h1_process(c, ts);
}

static void serve_event(ol_server *srv, int kind, void *object, uint32_t events, PyThreadState **ts)
{
    switch (kind) {
    case OL_H_CONN:
        serve_conn(object, events, ts);
        break;
    case OL_H_LISTENER:
        ol_accept(srv, object);
        break;
    case OL_H_TICK:
        ol_reactor_drain(srv->reactor.tickfd);
        PyEval_RestoreThread(*ts);
        ol_tick(srv);
        *ts = PyEval_SaveThread();
        break;
    case OL_H_WAKE:
        ol_reactor_drain(srv->reactor.wakefd);
        break;
    default: /* stale: its handle was retired after the batch was fetched */
        break;
    }
}

/* Fill the batch; called by the holder with the lock held, which it drops
 * around the wait. */
static void poll_batch(ol_server *srv, ol_pool *p)
{
    struct epoll_event local[BATCH];
    p->polling = 1;
    pthread_mutex_unlock(p->lock);
    int n = ol_reactor_poll(&srv->reactor, local, BATCH, -1);
    pthread_mutex_lock(p->lock);
    p->polling = 0;
    p->nbatch = n > 0 ? n : 0;
    p->next = 0;
    if (n > 0)
        memcpy(p->batch, local, (size_t)n * sizeof(local[0]));
}

/* The holder begins to serve (an event, a job): the monitor watches how
 * long, and wakes up to do so if it slept. */
static void begin_busy_locked(ol_pool *p)
{
    p->busy = 1;
    p->busy_since = ol_now();
    p->served++;
    if (p->monitor_asleep)
        pthread_cond_signal(&p->monitor_cv);
}

/* Send what c's streams gathered; the lock is dropped meanwhile. */
static void flush_conn_locked(ol_pool *p, ol_conn *c, PyThreadState **ts)
{
    pthread_mutex_unlock(p->lock);
    PyEval_RestoreThread(*ts);
    ol_h2_flush(c);
    *ts = PyEval_SaveThread();
    pthread_mutex_lock(p->lock);
}

/* The holder runs the next job, busy as while it serves a connection
 * (the monitor hands the token on if the app blocks). The frames of a
 * job whose connection has more jobs waiting are gathered (h2.c); they go
 * when this thread turns to another connection or loses the token. */
static void run_job_locked(ol_server *srv, ol_pool *p, int id, PyThreadState **ts)
{
    ol_req *r = take_job_locked(p);
    ol_conn *c = r->conn;
    if (c != NULL)
        ol_conn_incref(c);
    p->job_conn = c;
    begin_busy_locked(p);
    pthread_mutex_unlock(p->lock);
    OL_COUNT(srv, pool_busy, 1);
    PyEval_RestoreThread(*ts);
    ol_server_set_now(srv);
    ol_wsgi_run_job(r);
    *ts = PyEval_SaveThread();
    OL_COUNT(srv, pool_busy, -1);
    pthread_mutex_lock(p->lock);
    if (p->job_conn == c)
        p->job_conn = NULL;
    int next_is_same = p->holder == id && p->jobs != NULL && p->jobs->conn == c;
    if (p->holder == id)
        p->busy = 0;
    if (c != NULL && !next_is_same)
        flush_conn_locked(p, c, ts);
    if (c != NULL)
        ol_conn_decref(c);
}

/* The body of each pool thread; returns when the server stops. */
static void run(ol_server *srv, PyThreadState **ts)
{
    ol_pool *p = srv->pool;
    pthread_mutex_lock(p->lock);
    int id = p->next_id++;
    p->alive++;
    OL_COUNT(srv, pool_threads, 1);
    while (!p->stopping) {
        if (!p->token_free) {
            p->waiting++;
            pthread_cond_wait(&p->token_cv, p->lock);
            p->waiting--;
            continue;
        }
        p->token_free = 0;
        p->holder = id;
        while (p->holder == id && !p->stopping) {
            if (p->flush_conn != NULL) { /* a job blocked: its gathered frames go */
                ol_conn *c = p->flush_conn;
                p->flush_conn = NULL;
                flush_conn_locked(p, c, ts);
                ol_conn_decref(c);
                continue;
            }
            if (p->njobs > 0) {
                run_job_locked(srv, p, id, ts);
                continue;
            }
            if (p->next == p->nbatch) {
                poll_batch(srv, p);
                continue;
            }
            struct epoll_event ev = p->batch[p->next++];
            int kind;
            void *object = ol_reactor_resolve(&srv->reactor, &ev, &kind);
            ol_conn *c = NULL;
            if (kind == OL_H_CONN && (c = ol_conns_take_locked(object)) == NULL)
                continue; /* another holder has it meanwhile: re-armed as it lets go */
            /* Busy for the tick too: a tick that waits must not hold up
             * the polling either (the monitor passes the token on). */
            begin_busy_locked(p);
            pthread_mutex_unlock(p->lock);
            if (c != NULL)
                OL_COUNT(srv, pool_busy, 1);
            serve_event(srv, kind, object, ev.events, ts);
            if (c != NULL)
                OL_COUNT(srv, pool_busy, -1);
            if (c != NULL && __atomic_load_n(&p->stopping, __ATOMIC_ACQUIRE) &&
                !(c->flags & CONN_CLOSED))
                abort_conn(c, ts); /* the server closes: nobody will serve it */
            pthread_mutex_lock(p->lock);
            if (c != NULL)
                ol_conns_give_back_locked(c);
            if (p->holder == id)
                p->busy = 0;
        }
        if (p->holder == id) { /* stopping: hand the token back */
            p->holder = -1;
            p->token_free = 1;
        }
    }
    pthread_cond_broadcast(&p->token_cv);
    /* The server closed while this thread was still in a view: the set it
     * polled could not be closed under it, and is closed now. */
    int close_reactor = --p->alive == 0 && p->close_reactor_last;
    OL_COUNT(srv, pool_threads, -1);
    pthread_mutex_unlock(p->lock);
    if (close_reactor)
        ol_reactor_close(&srv->reactor);
}

/* Server._serve_thread(): run by each WSGI thread of the pool. */
PyObject *ol_pool_thread(ol_server *srv, PyObject *unused)
{
    (void)unused;
    if (srv->pool == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the WSGI pool is not started");
        return NULL;
    }
    PyThreadState *ts = PyEval_SaveThread();
    run(srv, &ts);
    PyEval_RestoreThread(ts);
    ol_h1_thread_exit();
    ol_conn_thread_exit();
    Py_RETURN_NONE;
}
