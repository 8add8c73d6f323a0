/*
 * floor_server.c -- the physical floor: a minimal C epoll HTTP server with one
 * read and one write per request and a fixed 13-byte response. No parsing
 * beyond finding the end of each head. What every server is measured against:
 * nothing in Python can be cheaper than this on the same machine. Pipelined
 * heads that arrive in one read are answered with one write.
 *
 *     cc -O2 -o floor_server floor_server.c && ./floor_server 8080
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char response[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n"
    "\r\nHello, World!";

/* Room for 16 pipelined heads of a load generator (about 100 bytes each). */
#define BUF_SIZE  4096
#define MAX_BATCH 64

/* Answer every complete head in buf; returns the bytes left over. */
static size_t answer(int fd, char *buf, size_t len)
{
    static char out[MAX_BATCH * (sizeof(response) - 1)];
    size_t start = 0, replies = 0;
    char *end;
    while ((end = memmem(buf + start, len - start, "\r\n\r\n", 4)) != NULL) {
        start = (size_t)(end - buf) + 4;
        replies++;
    }
    while (replies > 0) {
        size_t n = replies < MAX_BATCH ? replies : MAX_BATCH;
        for (size_t i = 0; i < n; i++)
            memcpy(out + i * (sizeof(response) - 1), response, sizeof(response) - 1);
        if (write(fd, out, n * (sizeof(response) - 1)) < 0)
            return 0;
        replies -= n;
    }
    memmove(buf, buf + start, len - start);
    return len - start;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    /* A client that hangs up while a reply is in flight must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 4096) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, events[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static char bufs[65536][BUF_SIZE];
    static size_t lens[65536];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= 65536) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    lens[c] = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, bufs[fd] + lens[fd], sizeof(bufs[fd]) - lens[fd]);
            if (r <= 0) {
                close(fd);
                continue;
            }
            lens[fd] = answer(fd, bufs[fd], lens[fd] + (size_t)r);
        }
    }
}
