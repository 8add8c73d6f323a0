/*
 * rate_client.c -- open-loop HTTP/1.1 load at a fixed request rate, for
 * latency that a closed-loop generator (wrk, h2load) cannot show.
 *
 *     rate_client HOST PORT RATE SECONDS CONNECTIONS [WARMUP_SECONDS [PATH]]
 *
 * Request i is due at start + i / RATE, whatever happened before. It goes
 * out on an idle keep-alive connection; when every connection is busy it
 * waits for one, and its latency still counts from when it was due. So a
 * server that stalls is charged for every request that queued behind the
 * stall, not only for the one that saw it (no "coordinated omission").
 * Requests due in the first WARMUP_SECONDS are sent but not recorded.
 *
 * Prints one "key value" line per figure: sent, completed, errors, late (sent
 * after their due time because no connection was free), achieved_rps and the
 * latency percentiles in microseconds. Responses must carry Content-Length.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 8192

typedef struct {
    int fd;
    int busy;
    int64_t due_ns; /* when the request in flight was due */
    size_t len;     /* bytes of response in buf */
    char buf[BUF_SIZE];
} conn;

typedef struct {
    struct sockaddr_in addr;
    char request[512];
    size_t request_len;
    int64_t start_ns, interval_ns, record_from_ns;
    long total, next, sent, completed, errors, late;
    uint32_t *latency_us; /* one per recorded request */
    long recorded;
    conn *conns;
    int nconns;
    int *idle; /* ring of indexes of idle connections, oldest first, so
                  requests spread over every connection */
    int head;  /* next idle connection to use */
    int nidle;
} client;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Opens a blocking connection, then makes it non-blocking; -1 on failure. */
static int open_conn(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/*
 * Length of the complete response at the start of buf, 0 if incomplete, -1
 * if it cannot be framed (no Content-Length). *status gets the status code.
 */
static long response_length(const char *buf, size_t len, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t head = (size_t)(end - buf) + 4;
    *status = len > 12 ? atoi(buf + 9) : 0;
    long body = -1;
    for (const char *line = memchr(buf, '\n', head); line != NULL && line + 1 < end;
         line = memchr(line + 1, '\n', head - (size_t)(line + 1 - buf))) {
        if (strncasecmp(line + 1, "content-length:", 15) == 0)
            body = atol(line + 16);
    }
    if (body < 0)
        return -1;
    return head + (size_t)body <= len ? (long)head + body : 0;
}

static void record(client *c, int64_t due_ns, int status)
{
    c->completed++;
    if (status < 200 || status > 399)
        c->errors++;
    if (due_ns >= c->record_from_ns && c->recorded < c->total)
        c->latency_us[c->recorded++] = (uint32_t)((now_ns() - due_ns) / 1000);
}

static void release(client *c, int i)
{
    c->conns[i].busy = 0;
    c->idle[(c->head + c->nidle++) % c->nconns] = i;
}

/*
 * Replaces a connection the server closed. If a request was in flight it
 * failed, and the connection goes back in the idle ring; an idle one is
 * already there and must not be put in twice.
 */
static void reopen(client *c, int ep, int i)
{
    conn *k = &c->conns[i];
    int was_busy = k->busy;
    epoll_ctl(ep, EPOLL_CTL_DEL, k->fd, NULL);
    close(k->fd);
    if (was_busy) {
        c->completed++;
        c->errors++;
    }
    k->len = 0;
    k->fd = open_conn(&c->addr);
    if (k->fd < 0) {
        perror("rate_client: reconnect");
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, k->fd, &ev);
    if (was_busy)
        release(c, i);
}

/* Reads what the server sent on connection i and completes its response. */
static void on_readable(client *c, int ep, int i)
{
    conn *k = &c->conns[i];
    ssize_t r = recv(k->fd, k->buf + k->len, BUF_SIZE - k->len, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0 || !k->busy) {
        reopen(c, ep, i);
        return;
    }
    k->len += (size_t)r;
    int status = 0;
    long n = response_length(k->buf, k->len, &status);
    if (n < 0 || (n == 0 && k->len == BUF_SIZE)) {
        reopen(c, ep, i); /* unframeable or too large for this client */
        return;
    }
    if (n > 0) {
        record(c, k->due_ns, status);
        k->len = 0; /* one request in flight per connection: nothing follows */
        release(c, i);
    }
}

/* Sends every request that is due, as long as a connection is idle. */
static void send_due(client *c, int ep)
{
    int64_t now = now_ns();
    while (c->next < c->total && c->nidle > 0) {
        int64_t due = c->start_ns + c->next * c->interval_ns;
        if (due > now)
            break;
        int i = c->idle[c->head];
        c->head = (c->head + 1) % c->nconns;
        c->nidle--;
        conn *k = &c->conns[i];
        k->busy = 1;
        k->due_ns = due;
        c->next++;
        c->sent++;
        if (now - due > 1000000)
            c->late++;
        if (send(k->fd, c->request, c->request_len, MSG_NOSIGNAL) != (ssize_t)c->request_len)
            reopen(c, ep, i);
    }
}

/* epoll timeout: 0 when a request is due within a millisecond, so sends keep time. */
static int wait_ms(const client *c)
{
    if (c->next >= c->total || c->nidle == 0)
        return 10;
    int64_t ahead = c->start_ns + c->next * c->interval_ns - now_ns();
    return ahead > 1000000 ? (int)(ahead / 1000000) - 1 : 0;
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void report(client *c, double measured_seconds)
{
    qsort(c->latency_us, (size_t)c->recorded, sizeof(uint32_t), compare_u32);
    printf("sent %ld\ncompleted %ld\nerrors %ld\nlate %ld\n", c->sent, c->completed, c->errors,
           c->late);
    printf("achieved_rps %.1f\n", (double)c->recorded / measured_seconds);
    static const double points[] = {50, 90, 99, 99.9, 100};
    static const char *names[] = {"p50_us", "p90_us", "p99_us", "p999_us", "max_us"};
    for (size_t j = 0; j < sizeof(points) / sizeof(points[0]); j++) {
        long at = c->recorded == 0 ? -1 : (long)((double)(c->recorded - 1) * points[j] / 100);
        printf("%s %u\n", names[j], at < 0 ? 0 : c->latency_us[at]);
    }
}

static void setup(client *c, int ep, char **argv, int argc)
{
    double rate = atof(argv[3]), seconds = atof(argv[4]);
    double warmup = argc > 6 ? atof(argv[6]) : 0;
    const char *path = argc > 7 ? argv[7] : "/";
    c->nconns = atoi(argv[5]);
    if (rate <= 0 || seconds <= 0 || c->nconns <= 0 || warmup >= seconds) {
        fprintf(stderr, "rate_client: bad arguments\n");
        exit(2);
    }
    c->addr.sin_family = AF_INET;
    c->addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &c->addr.sin_addr) != 1) {
        fprintf(stderr, "rate_client: HOST must be an IPv4 address\n");
        exit(2);
    }
    int n = snprintf(c->request, sizeof(c->request), "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", path,
                     argv[1], argv[2]);
    c->request_len = (size_t)n;
    c->total = (long)(rate * seconds);
    c->interval_ns = (int64_t)(1e9 / rate);
    c->latency_us = calloc((size_t)c->total, sizeof(uint32_t));
    c->conns = calloc((size_t)c->nconns, sizeof(conn));
    c->idle = calloc((size_t)c->nconns, sizeof(int));
    for (int i = 0; i < c->nconns; i++) {
        c->conns[i].fd = open_conn(&c->addr);
        if (c->conns[i].fd < 0) {
            perror("rate_client: connect");
            exit(1);
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->conns[i].fd, &ev);
        release(c, i);
    }
    c->start_ns = now_ns() + 10000000;
    c->record_from_ns = c->start_ns + (int64_t)(warmup * 1e9);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: rate_client HOST PORT RATE SECONDS CONNECTIONS "
                        "[WARMUP_SECONDS [PATH]]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    static client c;
    setup(&c, ep, argv, argc);
    double seconds = atof(argv[4]), warmup = argc > 6 ? atof(argv[6]) : 0;
    /* Stragglers get two seconds after the last request was due. */
    int64_t deadline = c.start_ns + (int64_t)((seconds + 2) * 1e9);
    struct epoll_event events[256];
    while ((c.next < c.total || c.nidle < c.nconns) && now_ns() < deadline) {
        send_due(&c, ep);
        int n = epoll_wait(ep, events, 256, wait_ms(&c));
        for (int j = 0; j < n; j++)
            on_readable(&c, ep, (int)events[j].data.u32);
    }
    /* What never came back counts as an error. */
    c.errors += c.sent - c.completed;
    report(&c, seconds - warmup);
    return 0;
}
