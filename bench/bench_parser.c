/*
 * bench_parser.c -- nanoseconds per request head for ol_parse_request().
 *
 * Each input is parsed in a loop over a private copy; the figure is the best
 * of several rounds (the least disturbed by the rest of the machine). Run it
 * with `make bench`. These are micro-benchmarks of the parser alone: the
 * server's cost per request is measured end to end in bench/servers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/wire/ol_http.h"

/* A page load from a current desktop browser, 500-odd bytes. */
static const char browser[] =
    "GET /wiki/Hypertext_Transfer_Protocol HTTP/1.1\r\n"
    "Host: en.wikipedia.org\r\n"
    "Connection: keep-alive\r\n"
    "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "sec-ch-ua-platform: \"Linux\"\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Accept: "
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
    "Sec-Fetch-Site: none\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "\r\n";

static const char minimal[] = "GET / HTTP/1.1\r\n\r\n";
static const char minimal_host[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void bench(const char *name, const char *input, size_t len, unsigned flags)
{
    char *buf = malloc(len);
    memcpy(buf, input, len);
    ol_header headers[100];
    ol_request req = {.headers = headers};
    ol_limits limits;
    ol_limits_default(&limits);
    limits.flags = flags;
    const long iterations = 2000000;
    double best = 1e300;
    for (int round = 0; round < 7; round++) {
        double t0 = now_ns();
        for (long i = 0; i < iterations; i++) {
            ol_parser ps;
            ol_parser_init(&ps);
            if (ol_parse_request(&ps, buf, len, &req, &limits) != (int)len) {
                fprintf(stderr, "%s: parse failed\n", name);
                exit(1);
            }
            __asm__ volatile("" : : "r"(buf), "r"(&req) : "memory");
        }
        double ns = (now_ns() - t0) / (double)iterations;
        if (ns < best)
            best = ns;
    }
    printf("%-28s %4zu bytes %8.1f ns/request %8.0f MB/s\n", name, len, best,
           (double)len / best * 1e3);
    free(buf);
}

int main(void)
{
    bench("browser GET (13 fields)", browser, sizeof(browser) - 1, OL_REQUIRE_HOST);
    bench("GET / HTTP/1.1 + Host", minimal_host, sizeof(minimal_host) - 1, OL_REQUIRE_HOST);
    bench("GET / HTTP/1.1 (no Host)", minimal, sizeof(minimal) - 1, 0);
    return 0;
}
