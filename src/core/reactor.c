/*
 * reactor.c -- the epoll set, generation-tagged handles, the tick timer and
 * the wake-up eventfd. See reactor.h for the contract.
 *
 * No Python here: this file is plain C and may run without the GIL.
 */
#include "reactor.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define TICK_NS          100000000L /* OL_TICK_SECONDS */
#define INITIAL_SLOTS    64
#define HANDLE(index, g) ((((uint64_t)(index) + 1) << 32) | (uint64_t)(g))
#define HANDLE_INDEX(h)  ((uint32_t)((h) >> 32) - 1)
#define HANDLE_GEN(h)    ((uint32_t)(h))

static void lock(ol_reactor *r)
{
    if (r->threaded)
        pthread_mutex_lock(&r->lock);
}

static void unlock(ol_reactor *r)
{
    if (r->threaded)
        pthread_mutex_unlock(&r->lock);
}

/* A free slot's index, growing the table when none is left; -1 when out
 * of memory. Called with the lock held. */
static int64_t take_slot(ol_reactor *r)
{
    if (r->free_head != 0) {
        uint32_t i = r->free_head - 1;
        r->free_head = r->slots[i].u.next_free;
        return i;
    }
    if (r->nslots == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : INITIAL_SLOTS;
        ol_slot *p = realloc(r->slots, (size_t)cap * sizeof(*p));
        if (p == NULL)
            return -1;
        memset(p + r->cap, 0, (size_t)(cap - r->cap) * sizeof(*p));
        r->slots = p;
        r->cap = cap;
    }
    return r->nslots++;
}

static void retire_slot(ol_reactor *r, uint32_t i)
{
    ol_slot *s = &r->slots[i];
    s->generation++;
    s->kind = OL_H_NONE;
    s->u.next_free = r->free_head;
    r->free_head = i + 1;
}

int ol_reactor_add(ol_reactor *r, int fd, int kind, void *object, uint32_t events,
                   ol_handle *handle)
{
    lock(r);
    int64_t i = take_slot(r);
    if (i < 0) {
        unlock(r);
        *handle = 0;
        errno = ENOMEM;
        return -1;
    }
    ol_slot *s = &r->slots[i];
    s->kind = kind;
    s->u.object = object;
    ol_handle h = HANDLE(i, s->generation);
    unlock(r);
    /* The slot is live and the handle published before the fd is in the
     * set, so the first event can already resolve and be acted on (the
     * store is ordered before the epoll_ctl call, which another thread's
     * epoll_wait must follow to see the fd); if adding fails the slot is
     * retired unused. */
    __atomic_store_n(handle, h, __ATOMIC_RELEASE);
    struct epoll_event ev = {.events = events, .data.u64 = h};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    int err = errno;
    *handle = 0;
    lock(r);
    retire_slot(r, (uint32_t)i);
    unlock(r);
    errno = err;
    return -1;
}

int ol_reactor_modify(ol_reactor *r, int fd, ol_handle h, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = h};
    return epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void ol_reactor_remove(ol_reactor *r, int fd, ol_handle h)
{
    if (h == 0)
        return;
    if (fd >= 0 && r->epfd >= 0)
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL);
    lock(r);
    uint32_t i = HANDLE_INDEX(h);
    if (i < r->nslots && r->slots[i].generation == HANDLE_GEN(h) && r->slots[i].kind != OL_H_NONE)
        retire_slot(r, i);
    unlock(r);
}

void *ol_reactor_resolve(ol_reactor *r, const struct epoll_event *ev, int *kind)
{
    ol_handle h = ev->data.u64;
    void *object = NULL;
    *kind = OL_H_NONE;
    lock(r);
    uint32_t i = HANDLE_INDEX(h);
    if (h != 0 && i < r->nslots && r->slots[i].generation == HANDLE_GEN(h) &&
        r->slots[i].kind != OL_H_NONE) {
        *kind = r->slots[i].kind;
        object = r->slots[i].u.object;
    }
    unlock(r);
    return object;
}

int ol_reactor_poll(ol_reactor *r, struct epoll_event *events, int max, int timeout_ms)
{
    int n;
    do
        n = epoll_wait(r->epfd, events, max, timeout_ms);
    while (n < 0 && errno == EINTR);
    return n;
}

void ol_reactor_wake(ol_reactor *r)
{
    if (r->wakefd < 0)
        return;
    uint64_t one = 1;
    ssize_t ignored = write(r->wakefd, &one, sizeof(one));
    (void)ignored;
}

void ol_reactor_drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0)
        ;
}

int ol_reactor_open(ol_reactor *r, int threaded)
{
    memset(r, 0, sizeof(*r));
    r->epfd = r->tickfd = r->wakefd = -1;
    r->threaded = threaded;
    if (threaded && pthread_mutex_init(&r->lock, NULL) != 0) {
        r->threaded = 0;
        errno = ENOMEM;
        return -1;
    }
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->tickfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    r->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct itimerspec tick = {{0, TICK_NS}, {0, TICK_NS}};
    if (r->epfd < 0 || r->tickfd < 0 || r->wakefd < 0 ||
        timerfd_settime(r->tickfd, 0, &tick, NULL) < 0 ||
        ol_reactor_add(r, r->tickfd, OL_H_TICK, r, EPOLLIN, &r->tick) < 0 ||
        ol_reactor_add(r, r->wakefd, OL_H_WAKE, r, EPOLLIN, &r->wake) < 0) {
        int err = errno;
        ol_reactor_close(r);
        errno = err;
        return -1;
    }
    return 0;
}

void ol_reactor_close(ol_reactor *r)
{
    int *fds[] = {&r->epfd, &r->tickfd, &r->wakefd};
    for (size_t i = 0; i < 3; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    free(r->slots);
    r->slots = NULL;
    r->nslots = r->cap = r->free_head = 0;
    if (r->threaded)
        pthread_mutex_destroy(&r->lock);
    r->threaded = 0;
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                   */

void ol_wheel_init(ol_wheel *w, double now)
{
    for (int i = 0; i < OL_WHEEL_SLOTS; i++)
        w->slot[i].prev = w->slot[i].next = &w->slot[i];
    w->start = now;
    w->next_tick = 0;
}

void ol_timer_disarm(ol_timer *t)
{
    if (t->next == NULL)
        return;
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

/* The tick at or after `due`, never one already taken. */
static uint64_t tick_of(const ol_wheel *w, double due)
{
    double ticks = ceil((due - w->start) / OL_TICK_SECONDS);
    if (ticks <= (double)w->next_tick)
        return w->next_tick;
    return ticks >= 1e18 ? w->next_tick + OL_WHEEL_SLOTS - 1 : (uint64_t)ticks;
}

void ol_timer_arm(ol_wheel *w, ol_timer *t, double due)
{
    ol_timer_disarm(t);
    if (due == HUGE_VAL)
        return;
    ol_timer *head = &w->slot[tick_of(w, due) % OL_WHEEL_SLOTS];
    t->due = due;
    t->next = head;
    t->prev = head->prev;
    head->prev->next = t;
    head->prev = t;
}

ol_timer *ol_wheel_take_due(ol_wheel *w, double now)
{
    ol_timer *taken = NULL;
    double elapsed = floor((now - w->start) / OL_TICK_SECONDS);
    if (elapsed < (double)w->next_tick)
        return NULL;
    uint64_t last = (uint64_t)elapsed;
    /* More than a lap behind (a stalled loop): every slot once. */
    uint64_t first =
        last - w->next_tick >= OL_WHEEL_SLOTS ? last - OL_WHEEL_SLOTS + 1 : w->next_tick;
    for (uint64_t tick = first; tick <= last; tick++) {
        ol_timer *head = &w->slot[tick % OL_WHEEL_SLOTS];
        for (ol_timer *t = head->next, *next; t != head; t = next) {
            next = t->next;
            if (t->due > now)
                continue; /* a later lap's */
            ol_timer_disarm(t);
            t->prev = taken;
            taken = t;
        }
    }
    w->next_tick = last + 1;
    return taken;
}
