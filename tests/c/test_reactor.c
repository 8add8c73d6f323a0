/*
 * test_reactor.c -- the reactor's handles (src/core/reactor.c): an event
 * fetched before its handle was removed never resolves, whatever happened
 * to the slot, the fd number or the table since.
 */
#include <math.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reactor.h"
#include "testlib.h"

static int ready_fd(void)
{
    int fd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* readable at once */
    CHECK(fd >= 0, "eventfd");
    return fd;
}

/* Poll until an event of one of the given handles is fetched, skipping the
 * reactor's own tick and wake-up. */
static int poll_for(ol_reactor *r, struct epoll_event *out, int max)
{
    struct epoll_event all[64];
    int n = ol_reactor_poll(r, all, 64, 100), k = 0;
    for (int i = 0; i < n && k < max; i++)
        if (all[i].data.u64 != r->tick && all[i].data.u64 != r->wake)
            out[k++] = all[i];
    return k;
}

static void check_removed_handle_does_not_resolve(int threaded)
{
    ol_reactor r;
    CHECK(ol_reactor_open(&r, threaded) == 0, "open");
    int a = ready_fd(), b = ready_fd();
    int obj_a = 1, obj_b = 2, kind;
    ol_handle ha;
    CHECK(ol_reactor_add(&r, a, OL_H_CONN, &obj_a, EPOLLIN, &ha) == 0, "add");
    ol_handle hb;
    CHECK(ol_reactor_add(&r, b, OL_H_CONN, &obj_b, EPOLLIN, &hb) == 0, "add");
    CHECK(ha != 0 && hb != 0 && ha != hb, "two handles");
    struct epoll_event ev[2];
    CHECK(poll_for(&r, ev, 2) == 2, "both ready in one batch");
    /* Handling the first event closes the second connection. */
    ol_reactor_remove(&r, b, hb);
    close(b);
    int first = ev[0].data.u64 == ha ? 0 : 1;
    CHECK(ol_reactor_resolve(&r, &ev[first], &kind) == &obj_a && kind == OL_H_CONN,
          "a live handle resolves to its object");
    CHECK(ol_reactor_resolve(&r, &ev[1 - first], &kind) == NULL && kind == OL_H_NONE,
          "the removed handle's event in the same batch is stale");

    /* The slot and the fd number are reused: the old event stays stale. */
    int c = ready_fd();
    int obj_c = 3;
    ol_handle hc;
    CHECK(ol_reactor_add(&r, c, OL_H_CONN, &obj_c, EPOLLIN, &hc) == 0, "add");
    CHECK(hc != 0 && hc != hb, "a reused slot gets a new generation");
    CHECK(ol_reactor_resolve(&r, &ev[1 - first], &kind) == NULL,
          "an old event never names the slot's next object");
    ol_reactor_remove(&r, c, hc);
    ol_reactor_remove(&r, a, ha);
    ol_reactor_remove(&r, a, ha); /* twice: ignored */
    close(a);
    close(c);
    ol_reactor_close(&r);
    ol_reactor_close(&r); /* idempotent */
}

static void check_handles_survive_table_growth(void)
{
    ol_reactor r;
    CHECK(ol_reactor_open(&r, 0) == 0, "open");
    enum { N = 300 };
    int fds[N], objects[N], kind, ok = 1;
    ol_handle handles[N];
    for (int i = 0; i < N; i++) {
        fds[i] = ready_fd();
        objects[i] = i;
        ok &= ol_reactor_add(&r, fds[i], OL_H_CONN, &objects[i], EPOLLIN, &handles[i]) == 0;
        ok &= handles[i] != 0;
    }
    CHECK(ok, "%d handles", N);
    for (int i = 0; i < N; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = handles[i]};
        ok &= ol_reactor_resolve(&r, &ev, &kind) == &objects[i];
    }
    CHECK(ok, "every handle resolves after the table grew");
    for (int i = 0; i < N; i += 2)
        ol_reactor_remove(&r, fds[i], handles[i]);
    for (int i = 0; i < N; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = handles[i]};
        void *o = ol_reactor_resolve(&r, &ev, &kind);
        ok &= (i % 2 == 0) ? o == NULL : o == &objects[i];
    }
    CHECK(ok, "removed handles are stale, the others live");
    struct epoll_event bogus = {.events = EPOLLIN, .data.u64 = ((uint64_t)100000 << 32) | 1};
    CHECK(ol_reactor_resolve(&r, &bogus, &kind) == NULL, "a handle past the table");
    bogus.data.u64 = 0;
    CHECK(ol_reactor_resolve(&r, &bogus, &kind) == NULL, "the zero handle");
    for (int i = 0; i < N; i++)
        close(fds[i]);
    ol_reactor_close(&r);
}

static void check_tick_and_wake(void)
{
    ol_reactor r;
    CHECK(ol_reactor_open(&r, 1) == 0, "open");
    ol_reactor_wake(&r);
    struct epoll_event ev[4];
    int kind = OL_H_NONE;
    int n = ol_reactor_poll(&r, ev, 4, 1000);
    for (int i = 0; i < n && kind != OL_H_WAKE; i++)
        ol_reactor_resolve(&r, &ev[i], &kind);
    CHECK(kind == OL_H_WAKE, "a wake-up interrupts the poll");
    ol_reactor_drain(r.wakefd);
    kind = OL_H_NONE;
    for (int tries = 0; tries < 5 && kind != OL_H_TICK; tries++) {
        n = ol_reactor_poll(&r, ev, 4, 1000);
        for (int i = 0; i < n; i++)
            ol_reactor_resolve(&r, &ev[i], &kind);
    }
    CHECK(kind == OL_H_TICK, "the tick fires");
    ol_reactor_close(&r);
}

/* The timers of a list from ol_wheel_take_due(), counted; each one's
 * index in `timers` is marked in `seen`. */
static int take(ol_wheel *w, double now, ol_timer *timers, int *seen)
{
    int n = 0;
    for (ol_timer *t = ol_wheel_take_due(w, now); t != NULL; t = t->prev) {
        seen[t - timers]++;
        n++;
    }
    return n;
}

static void check_wheel(void)
{
    ol_wheel w;
    ol_wheel_init(&w, 100.0);
    ol_timer t[6] = {{0}};
    int seen[6] = {0};
    ol_timer_arm(&w, &t[0], 100.05);                        /* first tick */
    ol_timer_arm(&w, &t[1], 100.35);                        /* fourth */
    ol_timer_arm(&w, &t[2], 100.05 + OL_WHEEL_SLOTS * 0.1); /* the first tick's slot, a lap on */
    ol_timer_arm(&w, &t[3], 99.0);                          /* already past: the next tick */
    ol_timer_arm(&w, &t[4], 200.0);
    ol_timer_arm(&w, &t[5], 200.0);
    ol_timer_disarm(&t[5]);
    ol_timer_arm(&w, &t[4], HUGE_VAL); /* disarms */
    CHECK(!ol_timer_armed(&t[4]) && !ol_timer_armed(&t[5]), "disarmed timers");
    CHECK(take(&w, 100.02, t, seen) == 1 && seen[3] == 1, "a past due time fires at once");
    CHECK(take(&w, 100.11, t, seen) == 1 && seen[0] == 1, "due by the tick's time");
    CHECK(!ol_timer_armed(&t[0]), "a taken timer is disarmed");
    CHECK(take(&w, 100.31, t, seen) == 0, "not yet due");
    CHECK(take(&w, 100.41, t, seen) == 1 && seen[1] == 1, "the fourth tick's");
    CHECK(take(&w, 100.0 + (OL_WHEEL_SLOTS - 1) * 0.1, t, seen) == 0 && ol_timer_armed(&t[2]),
          "a later lap's timer stays when its slot comes round early");
    CHECK(take(&w, 100.11 + OL_WHEEL_SLOTS * 0.1, t, seen) == 1 && seen[2] == 1,
          "and fires on its own lap");
    ol_timer_arm(&w, &t[0], 1000.0);
    ol_timer_arm(&w, &t[1], 1000.0 + 3 * OL_WHEEL_SLOTS * 0.1);
    CHECK(take(&w, 5000.0, t, seen) == 2 && seen[0] == 2 && seen[1] == 2,
          "a stalled loop, laps behind: every due timer at once");
}

void suite_reactor(void)
{
    check_wheel();
    check_removed_handle_does_not_resolve(0);
    check_removed_handle_does_not_resolve(1);
    check_handles_survive_table_growth();
    check_tick_and_wake();
}
