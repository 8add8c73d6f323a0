/*
 * core_defect_delays.c -- preloaded (LD_PRELOAD) into a server by
 * test_core_defects.py to widen a race window that is otherwise a few
 * microseconds wide. It changes no result: it only makes a thread slower at
 * one point, which the scheduler may do to any thread at any time.
 *
 * The file named by ONELOOP_TEST_DELAY says what to delay, while it exists
 * (it is read at each candidate call, so a test switches delays on and off):
 *
 *   poll MS
 *       a WSGI pool thread's poll (epoll_wait for 64 events, no timeout)
 *       that returned events sleeps MS milliseconds before returning them:
 *       the window between the wait and the batch being taken over.
 *   write TID MS KIND
 *       the next write(), writev(), send() or sendmsg() of thread TID
 *       (gettid) to a descriptor of KIND ("eventfd" for 8-byte writes to an
 *       eventfd, "socket") sleeps MS milliseconds before it is made: the
 *       window between taking the descriptor in hand and writing to it.
 *       Once: the file is removed then.
 *   add MS
 *       the next epoll_ctl(EPOLL_CTL_ADD) of a connected socket (a
 *       connection entering the set) sleeps MS milliseconds after it is
 *       made, before returning: the window between the descriptor being in
 *       the set (another thread may get its events) and the caller's
 *       next step. Once: the file is removed then.
 *
 * Each pause is said on stderr ("core_defect_delays: ..."), so a test can
 * check that the window was opened.
 *
 * Built by the tests with: cc -shared -fPIC -o delays.so core_defect_delays.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);

static void find_real(void)
{
    if (real_writev == NULL)
        real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    if (real_send == NULL)
        real_send = (ssize_t(*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    if (real_sendmsg == NULL)
        real_sendmsg = (ssize_t(*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    if (real_epoll_wait == NULL)
        real_epoll_wait =
            (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
    if (real_write == NULL)
        real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (real_epoll_ctl == NULL)
        real_epoll_ctl =
            (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
}

/* What the trigger file asks for: 1 = poll, 2 = write, 3 = add; 0 = nothing. */
static int read_trigger(long *tid, long *ms, char *kind)
{
    const char *path = getenv("ONELOOP_TEST_DELAY");
    if (path == NULL)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (sscanf(buf, "poll %ld", ms) == 1)
        return 1;
    if (sscanf(buf, "write %ld %ld %15s", tid, ms, kind) == 3)
        return 2;
    if (sscanf(buf, "add %ld", ms) == 1)
        return 3;
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Say so on stderr, for the test to check that the window was opened. */
static void say(const char *what, int fd, long ms)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "core_defect_delays: %s (fd %d) paused %ld ms\n", what, fd,
                     ms);
    if (n > 0 && real_write != NULL)
        real_write(2, line, (size_t)n);
}

/* Is fd of the kind named: "eventfd" or "socket"? */
static int is_kind(int fd, const char *kind)
{
    if (strcmp(kind, "socket") == 0) {
        struct stat st;
        return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    }
    char link[64], target[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    return strcmp(kind, "eventfd") == 0 && strcmp(target, "anon_inode:[eventfd]") == 0;
}

/* Before a write-family call of `count` bytes (-1: not known) to fd. */
static void maybe_pause_write(int fd, ssize_t count)
{
    long tid = 0, ms = 0;
    char kind[16] = "";
    if (read_trigger(&tid, &ms, kind) != 2 || tid != (long)syscall(SYS_gettid) ||
        !is_kind(fd, kind) || (strcmp(kind, "eventfd") == 0 && count != 8))
        return;
    unlink(getenv("ONELOOP_TEST_DELAY")); /* once */
    sleep_ms(ms);
    char what[64];
    snprintf(what, sizeof(what), "%s %s write", kind[0] == 'e' ? "an" : "a", kind);
    say(what, fd, ms);
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
    find_real();
    int n = real_epoll_wait(epfd, events, max, timeout);
    long tid = 0, ms = 0;
    char kind[16];
    if (n > 0 && max == 64 && timeout == -1 && read_trigger(&tid, &ms, kind) == 1) {
        sleep_ms(ms);
        say("a pool thread's poll", epfd, ms);
    }
    return n;
}

ssize_t write(int fd, const void *buf, size_t count)
{
    find_real();
    maybe_pause_write(fd, (ssize_t)count);
    return real_write(fd, buf, count);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    find_real();
    maybe_pause_write(fd, -1);
    return real_writev(fd, iov, n);
}

ssize_t send(int fd, const void *buf, size_t count, int flags)
{
    find_real();
    maybe_pause_write(fd, (ssize_t)count);
    return real_send(fd, buf, count, flags);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    find_real();
    maybe_pause_write(fd, -1);
    return real_sendmsg(fd, msg, flags);
}

/* A connected socket: a socket that is not listening. */
static int is_connection(int fd)
{
    int listening = 0;
    socklen_t len = sizeof(listening);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && !listening;
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
    find_real();
    int r = real_epoll_ctl(epfd, op, fd, event);
    long tid = 0, ms = 0;
    char kind[16];
    if (r == 0 && op == EPOLL_CTL_ADD && read_trigger(&tid, &ms, kind) == 3 && is_connection(fd)) {
        unlink(getenv("ONELOOP_TEST_DELAY")); /* once */
        sleep_ms(ms);
        say("a connection's entry into the set", fd, ms);
    }
    return r;
}
