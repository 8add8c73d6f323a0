/*
 * ws_client.c -- a WebSocket (RFC 6455) load client for the server
 * benchmarks: one thread, epoll, non-blocking sockets, nothing beyond libc.
 *
 *     ws_client [options] HOST PORT
 *
 *     -m MODE     echo (default), connect or idle
 *     -c N        connections (default 64)
 *     -d SECONDS  measured seconds (default 5)
 *     -w SECONDS  warm-up before the measured seconds (default 1)
 *     -s BYTES    message size (default 16)
 *     -b          binary messages (default: text)
 *     -p N        messages in flight per connection (default 1)
 *     -u PATH     request target of the handshake (default /)
 *     -t SECONDS  limit for any one step: a connect, a handshake, an echo,
 *                 a closing handshake (default 5)
 *
 * Every connection does the opening handshake (a random Sec-WebSocket-Key;
 * the answer must be a 101 whose Sec-WebSocket-Accept is the key's SHA-1
 * digest), answers pings, and sends only masked frames, each with a fresh
 * masking key.
 *
 * echo: every connection keeps -p messages in flight; each must come back
 * whole, with its type and content, before another replaces it. Latency
 * runs from when a message was queued to when its echo was complete. A
 * connection the server drops is counted and opened again. When time is
 * up no new message is sent, and each connection, once its last echo is
 * in, closes with code 1000 and waits for the server's close frame and
 * then for the TCP close.
 *
 * connect: every connection in a loop connects, does the handshake, sends
 * a close frame (1000), waits for the server's close frame and then for
 * the server to close TCP, closes its socket and starts over. Latency is
 * that whole cycle.
 *
 * idle: opens -c WebSockets (at most 64 handshakes at a time), prints
 * "ready OPENED FAILED", holds them (answering pings) until a line or end
 * of file on standard input, prints "open N" (those the server still
 * holds) and exits. The caller measures the server in between.
 *
 * echo and connect print one "key value" line per figure: completed
 * (messages, or connect-to-close cycles, finished in the measured seconds),
 * seconds, rate, total (finished over the whole run, warm-up included),
 * opened (handshakes done), errors (the sum of the counts that follow:
 * connect_errors, handshake_errors, protocol_errors, mismatches,
 * disconnects, timeouts, close_errors) and the latency percentiles in
 * microseconds (p50_us, p90_us, p99_us, p999_us, max_us). The first three
 * errors of each kind are told on stderr, with the connection and the time
 * since the start. Exit status 1 when not one connection opened (echo), 2
 * for bad arguments.
 *
 * Per message it does no more than the server must, so that one client
 * core can keep one server core busy: one recv and one send (more than one
 * message per recv when they queue up), the epoll wait shared by every
 * connection ready at once, no epoll_ctl once a connection is open; frames
 * are checked as they stream in, never buffered whole.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX    4096 /* room for the handshake's response head */
#define SCRATCH     (256 * 1024)
#define OPENING_MAX 64 /* handshakes under way at once while opening */
#define SCAN_NS     10000000LL
#define STDIN_TAG   UINT64_MAX
#define SUB_BITS    6 /* latency histogram: 64 steps per power of two */
#define SUB         (1u << SUB_BITS)
#define HIST_SIZE   (64 * SUB)
#define OP_CONT     0x0
#define OP_TEXT     0x1
#define OP_BINARY   0x2
#define OP_CLOSE    0x8
#define OP_PING     0x9
#define OP_PONG     0xA
#define WS_GUID     "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum mode { ECHO, CONNECT, IDLE };

/* What went wrong, each counted apart (and the first few told on stderr). */
enum error {
    E_CONNECT,    /* connect failed */
    E_HANDSHAKE,  /* no 101, a wrong Sec-WebSocket-Accept, or closed before it */
    E_PROTOCOL,   /* a frame no server may send */
    E_MISMATCH,   /* an echo that differs from what was sent, or one not asked for */
    E_DISCONNECT, /* the server closed (TCP, or a close frame) while open */
    E_TIMEOUT,    /* a connect, handshake or echo that took over -t seconds */
    E_CLOSE,      /* the closing handshake: no close frame, or no TCP close, in time */
    E_KINDS
};
static const char *const error_names[E_KINDS] = {
    "connect_errors", "handshake_errors", "protocol_errors", "mismatches",
    "disconnects",    "timeouts",         "close_errors"};

enum state {
    FREE,       /* no socket */
    CONNECTING, /* connect under way */
    HANDSHAKE,  /* request sent, reading the response head */
    OPEN,
    CLOSING, /* our close frame sent, waiting for the server's */
    CLOSED   /* close frames exchanged, waiting for the server's TCP close */
};

typedef struct {
    int fd;
    uint32_t gen; /* tags epoll events, so one for a closed socket is ignored */
    enum state state;
    int out_armed;       /* EPOLLOUT is on */
    int64_t deadline_ns; /* of the current step (connect to open, closing), 0: none */
    int64_t started_ns;  /* of the connect: a connect-mode cycle's start */
    char accept[29];     /* the Sec-WebSocket-Accept we expect */
    char *head;          /* the response head while it arrives */
    size_t head_len;
    /* frame reader */
    unsigned char hdr[14];
    unsigned hdr_len, hdr_need;
    int in_payload;
    unsigned opcode, fin;
    uint64_t left;     /* payload bytes of the frame still to come */
    unsigned msg_type; /* OP_TEXT or OP_BINARY while a message arrives, else 0 */
    size_t msg_off;
    int msg_bad;
    unsigned char ctrl[125];
    unsigned ctrl_len;
    /* bytes to send */
    unsigned char *out;
    size_t out_off, out_len, out_cap;
    /* messages in flight, oldest first */
    int64_t *sent_ns;
    unsigned inflight, oldest;
} conn;

static struct {
    enum mode mode;
    struct sockaddr_in addr;
    char host[64], path[512];
    int nconns;
    unsigned depth;
    size_t size;
    unsigned msg_op;
    double seconds, warmup, timeout;
    int64_t timeout_ns;
    unsigned char *payload;
    conn *conns;
    int ep;
    uint64_t rng;
    int running, stopping;
    int64_t warm_end, end;
    int to_open, opening; /* connections not yet started / handshakes under way */
    long completed, total, opened, failed;
    long errors[E_KINDS];
    int64_t t0;
    uint64_t hist[HIST_SIZE];
    uint64_t samples, max_ns;
} g;

static unsigned char scratch[SCRATCH];

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift64*: masking keys and handshake keys, seeded from getrandom. */
static uint64_t rng_next(void)
{
    g.rng ^= g.rng >> 12;
    g.rng ^= g.rng << 25;
    g.rng ^= g.rng >> 27;
    return g.rng * 0x2545F4914F6CDD1DULL;
}

static void die(const char *what)
{
    fprintf(stderr, "ws_client: %s\n", what);
    exit(1);
}

/* ------------------------------------------------------------- SHA-1, base64 */

static uint32_t rol32(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

/* One 64-byte block (FIPS 180-4, 6.1.2). */
static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const unsigned char *p, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t left = len;
    for (; left >= 64; left -= 64, p += 64)
        sha1_block(h, p);
    unsigned char last[128] = {0};
    memcpy(last, p, left);
    last[left] = 0x80;
    size_t n = left + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (size_t i = 0; i < 8; i++)
        last[n - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, last);
    if (n == 128)
        sha1_block(h, last + 64);
    for (size_t i = 0; i < 20; i++)
        out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = abc[v >> 18];
        *out++ = abc[(v >> 12) & 63];
        *out++ = abc[(v >> 6) & 63];
        *out++ = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = abc[v >> 18];
        *out++ = abc[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = abc[v >> 18];
        *out++ = abc[(v >> 12) & 63];
        *out++ = abc[(v >> 6) & 63];
        *out++ = '=';
    }
    *out = '\0';
}

/* The Sec-WebSocket-Accept for a key (RFC 6455, 4.2.2): 28 characters. */
static void accept_for(const char *key, char out[29])
{
    unsigned char in[64], digest[20];
    size_t klen = strlen(key);
    memcpy(in, key, klen);
    memcpy(in + klen, WS_GUID, sizeof(WS_GUID) - 1);
    sha1(in, klen + sizeof(WS_GUID) - 1, digest);
    base64(digest, 20, out);
}

/* ------------------------------------------------------------- latency */

static unsigned bucket(uint64_t v)
{
    if (v < 2 * SUB)
        return (unsigned)v;
    unsigned e = 63 - (unsigned)__builtin_clzll(v) - SUB_BITS;
    return e * SUB + (unsigned)(v >> e);
}

static uint64_t bucket_value(unsigned i)
{
    if (i < 2 * SUB)
        return i;
    unsigned e = i / SUB - 1;
    return ((uint64_t)(i % SUB + SUB) << e) + (((uint64_t)1 << e) >> 1);
}

/* One operation finished at `now`, begun at `since`: counted if in the window. */
static void finished(int64_t since, int64_t now)
{
    g.total++;
    if (now < g.warm_end || now >= g.end)
        return;
    g.completed++;
    uint64_t v = (uint64_t)(now - since);
    g.hist[bucket(v)]++;
    g.samples++;
    if (v > g.max_ns)
        g.max_ns = v;
}

static uint64_t percentile_us(double p)
{
    if (g.samples == 0)
        return 0;
    uint64_t rank = (uint64_t)((double)(g.samples - 1) * p / 100.0), seen = 0;
    for (unsigned i = 0; i < HIST_SIZE; i++) {
        seen += g.hist[i];
        if (seen > rank) {
            uint64_t v = bucket_value(i);
            return (v < g.max_ns ? v : g.max_ns) / 1000;
        }
    }
    return g.max_ns / 1000;
}

/* ------------------------------------------------------------- sending */

static void arm(conn *c, int out)
{
    if (out == c->out_armed)
        return;
    c->out_armed = out;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)c->gen << 32 | (uint64_t)(c - g.conns)};
    epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static unsigned char *reserve(conn *c, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap && c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + n)
            cap *= 2;
        c->out = realloc(c->out, cap);
        if (c->out == NULL)
            die("out of memory");
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

/* XOR with the masking key, eight bytes at a time. */
static void mask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                      const unsigned char key[4])
{
    unsigned char twice[8];
    uint64_t k;
    memcpy(twice, key, 4);
    memcpy(twice + 4, key, 4);
    memcpy(&k, twice, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

/* Queues one final, masked frame. */
static void queue_frame(conn *c, unsigned opcode, const unsigned char *data, size_t len)
{
    unsigned char *p = reserve(c, len + 14), *start = p;
    *p++ = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        *p++ = (unsigned char)(0x80 | len);
    } else if (len <= 0xFFFF) {
        *p++ = 0x80 | 126;
        *p++ = (unsigned char)(len >> 8);
        *p++ = (unsigned char)len;
    } else {
        *p++ = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            *p++ = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t m = (uint32_t)(rng_next() >> 32);
    unsigned char key[4];
    memcpy(key, &m, 4);
    memcpy(p, key, 4);
    p += 4;
    mask_copy(p, data, len, key);
    c->out_len += (size_t)(p - start) + len;
}

static void queue_close(conn *c)
{
    static const unsigned char normal[2] = {0x03, 0xE8}; /* 1000 */
    queue_frame(c, OP_CLOSE, normal, sizeof(normal));
    c->state = CLOSING;
    c->deadline_ns = now_ns() + g.timeout_ns;
}

static void queue_message(conn *c, int64_t now)
{
    queue_frame(c, g.msg_op, g.payload, g.size);
    c->sent_ns[(c->oldest + c->inflight) % g.depth] = now;
    c->inflight++;
}

/* Sends what is queued; -1 when the connection is broken. */
static int flush(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_off += (size_t)r;
    }
    arm(c, c->out_off < c->out_len);
    return 0;
}

/* ------------------------------------------------------------- lifecycle */

static double elapsed(void)
{
    return (double)(now_ns() - g.t0) / 1e9;
}

/* Counts an error; the first three of each kind are told on stderr. */
static void note(enum error kind, const conn *c, const char *fmt, ...)
{
    if (++g.errors[kind] > 3)
        return;
    va_list ap;
    fprintf(stderr, "ws_client: %.3f s, connection %d: %s: ", elapsed(), (int)(c - g.conns),
            error_names[kind]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void open_conn(conn *c);

/* Closes the socket; while the load runs (echo, connect) and `again`, a new
 * connection takes its place at once (else at the next deadline check). */
static void drop(conn *c, int again)
{
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        g.opening--;
        if (!g.running)
            g.failed++;
    }
    close(c->fd);
    c->fd = -1;
    c->gen++;
    c->state = FREE;
    free(c->head);
    c->head = NULL;
    c->out_off = c->out_len = 0;
    c->inflight = c->oldest = 0;
    c->deadline_ns = 0;
    if (again && g.running && !g.stopping && g.mode != IDLE)
        open_conn(c);
}

/* Queues the upgrade request, with a fresh key. */
static void queue_handshake(conn *c)
{
    unsigned char raw[16];
    char key[25];
    uint64_t a = rng_next(), b = rng_next();
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    base64(raw, sizeof(raw), key);
    accept_for(key, c->accept);
    char *p = (char *)reserve(c, sizeof(g.path) + sizeof(g.host) + 256);
    int n = sprintf(p,
                    "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    g.path, g.host, key);
    c->out_len += (size_t)n;
    c->head = malloc(HEAD_MAX);
    c->head_len = 0;
    if (c->head == NULL)
        die("out of memory");
}

/*
 * Connects and sends the upgrade request at once: on loopback the TCP
 * handshake is usually done when connect returns, and then the request
 * leaves without a wait for writability, and the socket is watched for
 * reading only. Otherwise it waits for EPOLLOUT (connected()).
 */
static void open_conn(conn *c)
{
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("ws_client: socket");
        exit(1);
    }
    if (g.mode != CONNECT) /* connect mode never has two writes in flight */
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->state = CONNECTING;
    c->started_ns = now_ns();
    c->deadline_ns = c->started_ns + g.timeout_ns;
    c->hdr_len = 0;
    c->hdr_need = 2;
    c->in_payload = 0;
    c->msg_type = 0;
    g.opening++;
    if (connect(c->fd, (const struct sockaddr *)&g.addr, sizeof(g.addr)) < 0 &&
        errno != EINPROGRESS) {
        note(E_CONNECT, c, "connect: %s", strerror(errno));
        drop(c, 0);
        return;
    }
    queue_handshake(c);
    ssize_t r = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        note(E_CONNECT, c, "connect: %s", strerror(errno));
        drop(c, 0);
        return;
    }
    c->out_off = r > 0 ? (size_t)r : 0;
    c->out_armed = c->out_off < c->out_len;
    if (!c->out_armed) {
        c->out_off = c->out_len = 0;
        c->state = HANDSHAKE;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->out_armed ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)c->gen << 32 | (uint64_t)(c - g.conns)};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* A connect that was still under way has ended: send the request. */
static void connected(conn *c, uint32_t events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        note(E_CONNECT, c, "connect: %s", err ? strerror(err) : "closed");
        drop(c, 1);
        return;
    }
    if (flush(c) < 0) {
        note(E_CONNECT, c, "connect: %s", strerror(errno));
        drop(c, 1);
        return;
    }
    if (c->out_off == c->out_len)
        c->state = HANDSHAKE;
}

/* The value of header `name` in a response head, or NULL. */
static const char *header(const char *head, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, name, nlen) != 0 || line[2 + nlen] != ':')
            continue;
        const char *v = line + 3 + nlen, *end;
        while (*v == ' ' || *v == '\t')
            v++;
        end = strstr(v, "\r\n");
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *vlen = (size_t)(end - v);
        return v;
    }
    return NULL;
}

/* A WebSocket is open: what the mode does with it. -1: it broke. */
static int on_open(conn *c, int64_t now)
{
    c->state = OPEN;
    c->deadline_ns = 0;
    g.opening--;
    g.opened++;
    free(c->head);
    c->head = NULL;
    if (g.mode == CONNECT || (g.mode == ECHO && g.stopping)) {
        queue_close(c);
    } else if (g.mode == ECHO && g.running) {
        for (unsigned i = 0; i < g.depth; i++)
            queue_message(c, now);
    }
    if (flush(c) < 0) {
        note(E_DISCONNECT, c, "send: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Gives up on a connection whose step is late, or that is still there when
 * the run ends, saying which step it was. */
static void expire(conn *c)
{
    double limit = g.timeout;
    switch (c->state) {
    case CONNECTING:
        note(E_TIMEOUT, c, "connect not done after %.1f s", limit);
        break;
    case HANDSHAKE:
        note(E_TIMEOUT, c, "no response to the upgrade request after %.1f s", limit);
        break;
    case OPEN:
        note(E_TIMEOUT, c, "no echo after %.1f s (%u in flight)", limit, c->inflight);
        break;
    case CLOSING:
        note(E_CLOSE, c, "no close frame %.1f s after ours", limit);
        break;
    case CLOSED:
        note(E_CLOSE, c, "TCP still open %.1f s after the close frames", limit);
        break;
    case FREE:
        return;
    }
    drop(c, 1);
}

/* ------------------------------------------------------------- receiving */

/* A close frame from the server. -1: the connection broke. */
static int on_close_frame(conn *c)
{
    if (c->state == CLOSING) {
        c->state = CLOSED; /* now the server closes TCP */
        c->deadline_ns = now_ns() + g.timeout_ns;
        return 0;
    }
    if (c->state == CLOSED)
        return 0;
    /* The server closes first: answer with its code (RFC 6455, 5.5.1). */
    unsigned code = c->ctrl_len >= 2 ? (unsigned)c->ctrl[0] << 8 | c->ctrl[1] : 1005;
    note(E_DISCONNECT, c, "close frame from the server while open: code %u, reason \"%.*s\"", code,
         c->ctrl_len > 2 ? (int)c->ctrl_len - 2 : 0, (const char *)c->ctrl + 2);
    queue_frame(c, OP_CLOSE, c->ctrl, c->ctrl_len >= 2 ? 2 : 0);
    c->state = CLOSED;
    c->deadline_ns = now_ns() + g.timeout_ns;
    return flush(c);
}

/* A whole message has arrived: the oldest echo in flight, if it matches. */
static void on_message(conn *c, int64_t *now)
{
    if (c->inflight == 0 || g.mode != ECHO) {
        note(E_MISMATCH, c, "a message of %zu bytes when none was in flight", c->msg_off);
        return;
    }
    if (*now == 0)
        *now = now_ns();
    if (c->msg_type != g.msg_op || c->msg_off != g.size || c->msg_bad) {
        note(E_MISMATCH, c, "echo: a %s message of %zu bytes%s (sent: %s, %zu bytes)",
             c->msg_type == OP_TEXT ? "text" : "binary", c->msg_off,
             c->msg_bad ? " whose content differs" : "", g.msg_op == OP_TEXT ? "text" : "binary",
             g.size);
        g.total++;
    } else {
        finished(c->sent_ns[c->oldest], *now);
    }
    c->oldest = (c->oldest + 1) % g.depth;
    c->inflight--;
    if (c->state != OPEN)
        return;
    if (!g.stopping)
        queue_message(c, *now);
    else if (c->inflight == 0)
        queue_close(c);
}

/* A whole frame has arrived; -1 when the connection must go. */
static int frame_done(conn *c, int64_t *now)
{
    switch (c->opcode) {
    case OP_PING:
        if (c->state == OPEN || c->state == CLOSING)
            queue_frame(c, OP_PONG, c->ctrl, c->ctrl_len);
        return 0;
    case OP_PONG:
        return 0;
    case OP_CLOSE:
        return on_close_frame(c);
    default:
        if (c->fin) {
            on_message(c, now);
            c->msg_type = 0;
        }
        return 0;
    }
}

/* A frame's head is complete: check it. -1: no server may send it. */
static int frame_head(conn *c)
{
    unsigned b0 = c->hdr[0], len7 = c->hdr[1] & 0x7Fu;
    if ((b0 & 0x70) || (c->hdr[1] & 0x80))
        return -1; /* reserved bits (no extension was negotiated), or masked */
    c->fin = b0 >> 7;
    c->opcode = b0 & 0x0F;
    if (len7 < 126) {
        c->left = len7;
    } else {
        c->left = 0;
        for (unsigned i = 2; i < c->hdr_need; i++)
            c->left = c->left << 8 | c->hdr[i];
    }
    if (c->opcode & 0x8) {
        if (!c->fin || c->left > 125 ||
            (c->opcode != OP_CLOSE && c->opcode != OP_PING && c->opcode != OP_PONG))
            return -1;
        c->ctrl_len = 0;
    } else if (c->opcode == OP_CONT) {
        if (c->msg_type == 0)
            return -1;
    } else if (c->opcode == OP_TEXT || c->opcode == OP_BINARY) {
        if (c->msg_type != 0)
            return -1;
        c->msg_type = c->opcode;
        c->msg_off = 0;
        c->msg_bad = 0;
    } else {
        return -1;
    }
    return 0;
}

/* Reads frames from what arrived, without keeping them: a message's bytes
 * are compared with what was sent as they come. -1: the connection must go. */
static int feed(conn *c, const unsigned char *p, size_t n, int64_t *now)
{
    while (n > 0) {
        if (!c->in_payload) {
            size_t take = c->hdr_need - c->hdr_len;
            take = take < n ? take : n;
            memcpy(c->hdr + c->hdr_len, p, take);
            c->hdr_len += (unsigned)take;
            p += take;
            n -= take;
            if (c->hdr_len < c->hdr_need)
                continue;
            if (c->hdr_need == 2) {
                unsigned len7 = c->hdr[1] & 0x7Fu;
                c->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
                if (c->hdr_need > 2)
                    continue;
            }
            if (frame_head(c) < 0) {
                note(E_PROTOCOL, c, "frame head %02x %02x", c->hdr[0], c->hdr[1]);
                return -1;
            }
            c->hdr_len = 0;
            c->hdr_need = 2;
            c->in_payload = 1;
            if (c->left > 0)
                continue;
        } else {
            size_t take = c->left < n ? (size_t)c->left : n;
            if (c->opcode & 0x8) {
                memcpy(c->ctrl + c->ctrl_len, p, take);
                c->ctrl_len += (unsigned)take;
            } else if (!c->msg_bad) {
                if (c->msg_off + take > g.size || memcmp(p, g.payload + c->msg_off, take) != 0)
                    c->msg_bad = 1;
            }
            c->msg_off += take;
            c->left -= take;
            p += take;
            n -= take;
            if (c->left > 0)
                continue;
        }
        c->in_payload = 0;
        if (frame_done(c, now) < 0)
            return -1;
    }
    return 0;
}

/* The response head of the handshake; what follows it goes to feed(). */
static int read_head(conn *c, const unsigned char *p, size_t n, int64_t *now)
{
    size_t take = n < HEAD_MAX - 1 - c->head_len ? n : HEAD_MAX - 1 - c->head_len;
    memcpy(c->head + c->head_len, p, take);
    size_t before = c->head_len;
    c->head_len += take;
    c->head[c->head_len] = '\0';
    char *end = strstr(c->head, "\r\n\r\n");
    if (end == NULL) {
        if (c->head_len < HEAD_MAX - 1)
            return 0;
        note(E_HANDSHAKE, c, "a response head of over %d bytes", HEAD_MAX - 1);
        return -1;
    }
    end[2] = '\0'; /* the head ends with its last line's CRLF */
    size_t used = (size_t)(end + 4 - c->head) - before, vlen = 0;
    if (strncmp(c->head, "HTTP/1.1 101 ", 13) != 0) {
        note(E_HANDSHAKE, c, "answered \"%.*s\"", (int)strcspn(c->head, "\r\n"), c->head);
        return -1;
    }
    const char *accept = header(c->head, "sec-websocket-accept", &vlen);
    if (accept == NULL || vlen != 28 || memcmp(accept, c->accept, 28) != 0) {
        note(E_HANDSHAKE, c, "Sec-WebSocket-Accept \"%.*s\", expected %s", accept ? (int)vlen : 0,
             accept ? accept : "", c->accept);
        return -1;
    }
    if (*now == 0)
        *now = now_ns();
    if (on_open(c, *now) < 0)
        return -1;
    return feed(c, p + used, n - used, now);
}

/* The server closed TCP (r == 0) or the socket failed: clean only after the
 * close frames. */
static void on_eof(conn *c, ssize_t r, int64_t *now)
{
    const char *why = r == 0 ? "closed by the server" : strerror(errno);
    switch (c->state) {
    case CLOSED:
        if (r == 0) {
            if (g.mode == CONNECT) {
                if (*now == 0)
                    *now = now_ns();
                finished(c->started_ns, *now);
            }
        } else {
            note(E_CLOSE, c, "after the close frames: %s", why);
        }
        break;
    case HANDSHAKE:
        note(E_HANDSHAKE, c, "%s before the response head", why);
        break;
    case OPEN:
        note(E_DISCONNECT, c, "TCP %s while open (%u in flight)", why, c->inflight);
        break;
    case CLOSING:
        note(E_CLOSE, c, "TCP %s before the server's close frame", why);
        break;
    default:
        break;
    }
    drop(c, 1);
}

static void on_readable(conn *c, int64_t *now)
{
    ssize_t r;
    do {
        r = recv(c->fd, scratch, sizeof(scratch), 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r <= 0) {
            on_eof(c, r, now);
            return;
        }
        int bad = c->state == HANDSHAKE ? read_head(c, scratch, (size_t)r, now)
                                        : feed(c, scratch, (size_t)r, now);
        if (bad < 0) {
            drop(c, 1);
            return;
        }
        if (flush(c) < 0) {
            note(c->state == OPEN ? E_DISCONNECT : E_CLOSE, c, "send: %s", strerror(errno));
            drop(c, 1);
            return;
        }
    } while ((size_t)r == sizeof(scratch));
}

static void on_event(uint32_t events, uint64_t tag, int64_t *now)
{
    conn *c = &g.conns[(uint32_t)tag];
    if ((uint32_t)(tag >> 32) != c->gen || c->state == FREE)
        return; /* for a socket closed earlier in this batch */
    if (c->state == CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            connected(c, events);
        return;
    }
    if ((events & EPOLLOUT) && flush(c) < 0) {
        note(c->state == OPEN ? E_DISCONNECT : E_CLOSE, c, "send: %s", strerror(errno));
        drop(c, 1);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c, now);
}

/* Steps over their time: a connect, a handshake, an echo, a close. And
 * while the load runs, a connection whose connect failed at once is
 * tried again. */
static void check_deadlines(int64_t now)
{
    for (int i = 0; i < g.nconns; i++) {
        conn *c = &g.conns[i];
        if (c->state == FREE) {
            if (g.running && !g.stopping && g.mode != IDLE)
                open_conn(c);
            continue;
        }
        int late = c->deadline_ns != 0 && now > c->deadline_ns;
        if (c->state == OPEN && c->inflight > 0)
            late = now - c->sent_ns[c->oldest] > g.timeout_ns;
        if (late)
            expire(c);
    }
}

/* Opens connections not yet started, at most OPENING_MAX handshakes at a time. */
static void open_more(void)
{
    while (g.to_open > 0 && g.opening < OPENING_MAX) {
        open_conn(&g.conns[g.nconns - g.to_open]);
        g.to_open--;
    }
}

/* One round of events; returns whether stdin became readable (idle mode). */
static int poll_once(int64_t until)
{
    static struct epoll_event events[256];
    static int64_t last_scan;
    int64_t now = now_ns(), wait = until - now;
    int ms = wait <= 0 ? 0 : wait >= SCAN_NS ? 10 : (int)(wait / 1000000) + 1;
    int n = epoll_wait(g.ep, events, 256, ms), input = 0;
    for (int i = 0; i < n; i++) {
        if (events[i].data.u64 == STDIN_TAG) {
            input = 1;
            continue;
        }
        now = 0; /* read when first needed, shared by what one read brought */
        on_event(events[i].events, events[i].data.u64, &now);
    }
    now = now_ns();
    if (now - last_scan >= SCAN_NS) {
        last_scan = now;
        check_deadlines(now);
    }
    open_more();
    return input;
}

static int busy(void)
{
    for (int i = 0; i < g.nconns; i++)
        if (g.conns[i].state != FREE)
            return 1;
    return 0;
}

/* ------------------------------------------------------------- modes */

/* Opens every connection before the clock starts (echo, idle). */
static void open_all(void)
{
    g.to_open = g.nconns;
    open_more();
    while (g.opened + g.failed < g.nconns)
        poll_once(now_ns() + SCAN_NS);
}

static void run_load(void)
{
    if (g.mode == ECHO) {
        open_all();
        if (g.opened == 0)
            die("no connection opened");
    }
    int64_t now = now_ns();
    g.running = 1;
    g.warm_end = now + (int64_t)(g.warmup * 1e9);
    g.end = g.warm_end + (int64_t)(g.seconds * 1e9);
    if (g.mode == CONNECT) {
        for (int i = 0; i < g.nconns; i++)
            open_conn(&g.conns[i]);
    } else {
        for (int i = 0; i < g.nconns; i++) {
            conn *c = &g.conns[i];
            if (c->state != OPEN)
                continue;
            for (unsigned k = 0; k < g.depth; k++)
                queue_message(c, now);
            if (flush(c) < 0) {
                note(E_DISCONNECT, c, "send: %s", strerror(errno));
                drop(c, 1);
            }
        }
    }
    while (now_ns() < g.end)
        poll_once(g.end);
    /* Time is up: the echoes in flight come back, then every connection closes. */
    g.stopping = 1;
    for (int i = 0; i < g.nconns; i++) {
        conn *c = &g.conns[i];
        if (c->state == OPEN && c->inflight == 0) {
            queue_close(c);
            if (flush(c) < 0) {
                note(E_CLOSE, c, "send: %s", strerror(errno));
                drop(c, 1);
            }
        }
    }
    int64_t drain = now_ns() + g.timeout_ns + SCAN_NS;
    while (busy() && now_ns() < drain)
        poll_once(drain);
    for (int i = 0; i < g.nconns; i++)
        expire(&g.conns[i]);
}

static void report(void)
{
    long errors = 0;
    for (int k = 0; k < E_KINDS; k++)
        errors += g.errors[k];
    printf("mode %s\nconnections %d\n", g.mode == ECHO ? "echo" : "connect", g.nconns);
    printf("completed %ld\nseconds %.3f\nrate %.1f\ntotal %ld\nopened %ld\nerrors %ld\n",
           g.completed, g.seconds, (double)g.completed / g.seconds, g.total, g.opened, errors);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s %ld\n", error_names[k], g.errors[k]);
    static const double points[] = {50, 90, 99, 99.9};
    static const char *const names[] = {"p50_us", "p90_us", "p99_us", "p999_us"};
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++)
        printf("%s %llu\n", names[i], (unsigned long long)percentile_us(points[i]));
    printf("max_us %llu\n", (unsigned long long)(g.max_ns / 1000));
}

static void run_idle(void)
{
    open_all();
    printf("ready %ld %ld\n", g.opened, g.failed);
    fflush(stdout);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, 0, &ev);
    while (!poll_once(now_ns() + 1000000000))
        ;
    long open = 0;
    for (int i = 0; i < g.nconns; i++) {
        conn *c = &g.conns[i];
        if (c->state != OPEN)
            continue;
        char byte;
        ssize_t r = recv(c->fd, &byte, 1, MSG_PEEK);
        open += r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
    printf("open %ld\n", open);
}

/* ------------------------------------------------------------- setup */

static void usage(void)
{
    fprintf(stderr,
            "usage: ws_client [-m echo|connect|idle] [-c CONNECTIONS] [-d SECONDS] "
            "[-w SECONDS] [-s BYTES] [-b] [-p IN_FLIGHT] [-u PATH] [-t SECONDS] HOST PORT\n");
    exit(2);
}

static void self_test(void)
{
    char out[29]; /* RFC 6455, 1.3 */
    accept_for("dGhlIHNhbXBsZSBub25jZQ==", out);
    if (strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0)
        die("SHA-1 self-test failed");
}

static void raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void setup(int argc, char **argv)
{
    g.nconns = 64;
    g.depth = 1;
    g.size = 16;
    g.msg_op = OP_TEXT;
    g.seconds = 5;
    g.warmup = 1;
    g.timeout = 5;
    snprintf(g.path, sizeof(g.path), "/");
    int opt;
    while ((opt = getopt(argc, argv, "m:c:d:w:s:bp:u:t:")) != -1) {
        switch (opt) {
        case 'm':
            if (strcmp(optarg, "echo") == 0)
                g.mode = ECHO;
            else if (strcmp(optarg, "connect") == 0)
                g.mode = CONNECT;
            else if (strcmp(optarg, "idle") == 0)
                g.mode = IDLE;
            else
                usage();
            break;
        case 'c':
            g.nconns = atoi(optarg);
            break;
        case 'd':
            g.seconds = atof(optarg);
            break;
        case 'w':
            g.warmup = atof(optarg);
            break;
        case 's':
            g.size = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'b':
            g.msg_op = OP_BINARY;
            break;
        case 'p':
            g.depth = (unsigned)atoi(optarg);
            break;
        case 'u':
            snprintf(g.path, sizeof(g.path), "%s", optarg);
            break;
        case 't':
            g.timeout = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 2 || g.nconns <= 0 || g.depth == 0 || g.seconds <= 0 || g.warmup < 0 ||
        g.timeout <= 0 || g.size > ((size_t)1 << 30))
        usage();
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
    if (inet_pton(AF_INET, argv[optind], &g.addr.sin_addr) != 1)
        die("HOST must be an IPv4 address");
    snprintf(g.host, sizeof(g.host), "%s:%s", argv[optind], argv[optind + 1]);
    g.timeout_ns = (int64_t)(g.timeout * 1e9);
    if (getrandom(&g.rng, sizeof(g.rng), 0) != sizeof(g.rng) || g.rng == 0)
        g.rng = (uint64_t)now_ns() | 1;
    g.payload = malloc(g.size + 1);
    g.conns = calloc((size_t)g.nconns, sizeof(conn));
    if (g.payload == NULL || g.conns == NULL)
        die("out of memory");
    for (size_t i = 0; i < g.size; i++) /* ASCII: valid UTF-8 for text */
        g.payload[i] = (unsigned char)('a' + i % 26);
    for (int i = 0; i < g.nconns; i++) {
        g.conns[i].fd = -1;
        g.conns[i].sent_ns = calloc(g.depth, sizeof(int64_t));
        if (g.conns[i].sent_ns == NULL)
            die("out of memory");
    }
    raise_fd_limit((rlim_t)g.nconns + 64);
    g.ep = epoll_create1(0);
    g.t0 = now_ns();
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    self_test();
    setup(argc, argv);
    if (g.mode == IDLE) {
        run_idle();
        return 0;
    }
    run_load();
    report();
    return 0;
}
