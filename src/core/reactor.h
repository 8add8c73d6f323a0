/*
 * reactor.h -- the epoll set of one server and the handles registered in it.
 *
 * The reactor is the lowest layer of the connection core: it knows file
 * descriptors, readiness and time, and nothing of connections, HTTP or
 * Python. Everything above it registers an fd together with an object
 * pointer and a kind, and gets back a *handle*.
 *
 * Stale events. An epoll event never carries a pointer: it carries the
 * handle, a slot index and the slot's generation. ol_reactor_remove() bumps
 * the generation, so an event fetched before the removal -- later in the
 * same batch, or in a batch another thread fetched -- no longer resolves:
 * ol_reactor_resolve() returns NULL for it and the object it named (which
 * may be freed by then) is never touched. This is libuv's
 * uv__platform_invalidate_fd made structural: no caller has to remember
 * to scrub a batch.
 *
 * Threads. In ASGI mode one thread (the event loop's, holding the GIL)
 * does everything. In WSGI mode pool threads poll, resolve and remove
 * concurrently: the reactor is then opened `threaded` and guards its slot
 * table with its own mutex, which is a leaf lock (nothing is called while
 * it is held). Whoever resolves a handle must keep the object alive by its
 * own means before dropping the lock it resolved under (the pool does so
 * under its lock, which every removal also holds).
 *
 * Functions return 0 or -1 with errno set, unless stated otherwise.
 */
#ifndef OL_REACTOR_H
#define OL_REACTOR_H

#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>

/* What a handle names; the owner of the reactor decides what to do. */
enum ol_handle_kind {
    OL_H_NONE = 0, /* a free slot */
    OL_H_LISTENER,
    OL_H_CONN,
    OL_H_TICK, /* the reactor's own timer: every OL_TICK_SECONDS */
    OL_H_WAKE, /* the reactor's own eventfd: ol_reactor_wake() */
};

#define OL_TICK_SECONDS 0.1

typedef uint64_t ol_handle; /* 0 is never a valid handle */

typedef struct ol_slot {
    uint32_t generation; /* bumped at each removal */
    int kind;            /* OL_H_NONE while free */
    union {
        void *object;       /* while in use */
        uint32_t next_free; /* while free: the next free slot's index + 1, 0 = none */
    } u;
} ol_slot; /* 16 bytes: one per open connection */

typedef struct ol_reactor {
    int epfd, tickfd, wakefd;
    int threaded;
    pthread_mutex_t lock; /* guards the slots when threaded */
    ol_slot *slots;
    uint32_t nslots, cap, free_head; /* free_head: index + 1, 0 = none */
    ol_handle tick, wake;
} ol_reactor;

/* A reactor that is not open (all fds -1); open and close may follow. */
static inline void ol_reactor_init(ol_reactor *r)
{
    r->epfd = r->tickfd = r->wakefd = -1;
}

/* Open the epoll set with the tick timer and the wake-up eventfd in it. On
 * failure everything opened is closed again. */
int ol_reactor_open(ol_reactor *r, int threaded);

/* Close the fds and free the slots. Idempotent; the registered fds are not
 * closed (they belong to their owners). */
void ol_reactor_close(ol_reactor *r);

static inline int ol_reactor_is_open(const ol_reactor *r)
{
    return r->epfd >= 0;
}

/* Register fd for `events` naming (kind, object). The handle is stored in
 * *handle before the fd enters the set: from that moment another thread
 * polling the set can get the fd's events and act on them (re-arm it with
 * that handle), so the handle must already be where that thread looks.
 * 0; or -1 with errno set, *handle 0 and the fd not in the set. */
int ol_reactor_add(ol_reactor *r, int fd, int kind, void *object, uint32_t events,
                   ol_handle *handle);

/* Change the events of a registered fd. */
int ol_reactor_modify(ol_reactor *r, int fd, ol_handle h, uint32_t events);

/* Take fd out of the set (skipped when fd < 0: a closed fd left every set
 * by itself) and retire the handle: events already fetched for it will not
 * resolve. A handle of 0 is ignored. */
void ol_reactor_remove(ol_reactor *r, int fd, ol_handle h);

/* epoll_wait, EINTR retried: the number of events (0 on timeout), or -1. */
int ol_reactor_poll(ol_reactor *r, struct epoll_event *events, int max, int timeout_ms);

/* The object an event names, with its kind in *kind, or NULL when the
 * handle was removed after the event was fetched. */
void *ol_reactor_resolve(ol_reactor *r, const struct epoll_event *ev, int *kind);

/* Interrupt a poll in progress (any thread, async-signal-safe). */
void ol_reactor_wake(ol_reactor *r);

/* Consume the tick's or the wake-up's readiness. */
void ol_reactor_drain(int fd);

/* ------------------------------------------------------------------------ */
/* Timers: a wheel turned by the tick                                       */

/*
 * A timer is a node its owner embeds; the wheel links it into the slot of
 * the tick at or after its due time, so a tick looks only at the timers of
 * its own slot -- never at every connection. A slot holds the timers of
 * every lap (OL_WHEEL_SLOTS ticks); one due a lap or more later stays put
 * when its slot comes round early. Not thread-safe: the owner serializes.
 */
typedef struct ol_timer {
    struct ol_timer *prev, *next; /* in a slot's list; next == NULL: not armed */
    double due;
} ol_timer;

#define OL_WHEEL_SLOTS 512

typedef struct ol_wheel {
    ol_timer slot[OL_WHEEL_SLOTS]; /* circular lists' heads */
    double start;                  /* the time of tick 0 */
    uint64_t next_tick;            /* the first tick not taken yet */
} ol_wheel;

void ol_wheel_init(ol_wheel *w, double now);

static inline int ol_timer_armed(const ol_timer *t)
{
    return t->next != NULL;
}

/* (Re)arm t for `due` (seconds, the wheel's clock); HUGE_VAL disarms. */
void ol_timer_arm(ol_wheel *w, ol_timer *t, double due);
void ol_timer_disarm(ol_timer *t);

/* Disarm and return every timer due by `now` in the slots whose tick has
 * come, as a NULL-terminated list through ->prev. */
ol_timer *ol_wheel_take_due(ol_wheel *w, double now);

#endif /* OL_REACTOR_H */
