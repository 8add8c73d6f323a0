/*
 * fuzz_chunked.c -- libFuzzer target for ol_chunked_decode().
 *
 * Decodes the input as a chunked body twice: in one piece, and in pieces
 * whose sizes the first input byte picks. The decoded bytes, the trailers
 * and the outcome must agree (for a body wrong in two ways, either fault); every data span must lie
 * inside the buffer of its call and every call must consume no more than it was given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/wire/ol_http.h"
#include "../c/testlib.h"

static guard_buf guard;

typedef struct result {
    int outcome;
    bytes body;
    size_t trailers;
} result;

static void decode(result *out, const char *input, size_t len, size_t step)
{
    ol_limits limits;
    ol_limits_default(&limits);
    limits.max_chunk_ext = 64;
    limits.max_trailer_size = 256;
    ol_chunked dec;
    ol_chunked_init(&dec, &limits);
    ol_header trailers[8];
    dec.trailers = trailers;
    dec.max_trailers = 8;
    bytes pending = {0};
    size_t fed = 0;
    int r = OL_INCOMPLETE;
    while (r == OL_INCOMPLETE || r == OL_CHUNK_DATA) {
        if (r == OL_INCOMPLETE) {
            if (fed == len)
                break;
            size_t n = len - fed < step ? len - fed : step;
            bytes_put(&pending, input + fed, n);
            fed += n;
        }
        const char *buf = guard_place(&guard, pending.p, pending.len);
        size_t used;
        ol_span data;
        r = ol_chunked_decode(&dec, buf, pending.len, &used, &data);
        if (used > pending.len)
            abort();
        if (r == OL_CHUNK_DATA) {
            if (data.base < buf || data.base + data.len > buf + pending.len || data.len == 0)
                abort();
            bytes_put(&out->body, data.base, data.len);
        }
        memmove(pending.p, pending.p + used, pending.len - used);
        pending.len -= used;
    }
    out->outcome = r;
    out->trailers = r == OL_CHUNK_DONE ? dec.num_trailers : 0;
    bytes_free(&pending);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (guard.map == NULL)
        guard_init(&guard, 1 << 20);
    size_t step = (size_t)(data[0] % 16) + 1;
    result whole = {0}, pieces = {0};
    decode(&whole, (const char *)data + 1, size - 1, size);
    decode(&pieces, (const char *)data + 1, size - 1, step);
    int both_errors = whole.outcome < OL_INCOMPLETE && pieces.outcome < OL_INCOMPLETE;
    if ((whole.outcome != pieces.outcome && !both_errors) || whole.trailers != pieces.trailers ||
        !bytes_eq(&whole.body, pieces.body.p, pieces.body.len)) {
        fprintf(stderr, "whole: %d, %zu body bytes; in pieces of %zu: %d, %zu body bytes\n",
                whole.outcome, whole.body.len, step, pieces.outcome, pieces.body.len);
        abort();
    }
    bytes_free(&whole.body);
    bytes_free(&pieces.body);
    return 0;
}
