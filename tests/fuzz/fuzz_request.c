/*
 * fuzz_request.c -- libFuzzer target for ol_parse_request().
 *
 * The first input byte picks the limits and where to split the rest; the
 * rest is parsed whole and in two pieces (with the parser resuming), from a
 * copy that ends at a guard page. Both runs must agree on accepting (and then
 * on every detail) or rejecting; an input wrong in two ways may report either
 * fault depending on the split. An accepted head's spans must lie inside it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/wire/ol_http.h"
#include "../c/testlib.h"

static guard_buf guard;

static int parse(const char *input, size_t len, size_t split, const ol_limits *limits,
                 ol_request *req)
{
    ol_parser ps;
    ol_parser_init(&ps);
    if (split > 0 && split < len) {
        int r = ol_parse_request(&ps, guard_place(&guard, input, split), split, req, limits);
        if (r != OL_INCOMPLETE)
            return r;
    }
    return ol_parse_request(&ps, guard_place(&guard, input, len), len, req, limits);
}

static int inside(ol_span s, const char *buf, size_t len)
{
    return s.len == 0 || (s.base >= buf && s.base + s.len <= buf + len);
}

static void check_spans(const ol_request *req, const char *buf, size_t head)
{
    if (!inside(req->method, buf, head) || !inside(req->target, buf, head) ||
        !inside(req->host, buf, head) || !inside(req->upgrade, buf, head))
        abort();
    for (size_t i = 0; i < req->num_headers; i++)
        if (!inside(req->headers[i].name, buf, head) || !inside(req->headers[i].value, buf, head))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (guard.map == NULL)
        guard_init(&guard, 1 << 20);
    ol_limits limits;
    ol_limits_default(&limits);
    if (data[0] & 0x80) { /* small limits reach the limit paths */
        limits.max_request_line = 40;
        limits.max_field_size = 40;
        limits.max_fields = 4;
        limits.max_head_size = 160;
    }
    if (data[0] & 0x40)
        limits.flags = 0;
    const char *input = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = len ? (data[0] & 0x3f) * len / 64 : 0;

    ol_header h1[128], h2[128];
    ol_request whole = {.headers = h1}, parts = {.headers = h2};
    int a = parse(input, len, 0, &limits, &whole);
    const char *buf = guard.end - len;
    if (a >= 0) {
        if ((size_t)a > len || whole.num_headers > limits.max_fields)
            abort();
        check_spans(&whole, buf, (size_t)a);
    }
    int b = parse(input, len, split, &limits, &parts);
    if (a != b && (a >= 0 || b >= 0 || a == OL_INCOMPLETE || b == OL_INCOMPLETE)) {
        fprintf(stderr, "whole: %d (%s), split at %zu: %d (%s)\n", a, ol_strerror(a), split, b,
                ol_strerror(b));
        abort();
    }
    if (a >= 0 && (whole.num_headers != parts.num_headers || whole.flags != parts.flags ||
                   whole.framing != parts.framing || whole.content_length != parts.content_length))
        abort();
    return 0;
}
