/*
 * fuzz_stream.c -- libFuzzer target for the whole read loop (tests/c/stream.c):
 * heads, Content-Length and chunked bodies, pipelining, upgrades.
 *
 * The input is run whole and split at a point the first byte picks; both
 * runs must render the same messages and end the same way (for input wrong in
 * two ways, either fault may be the one reported).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../c/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ol_limits limits;
    ol_limits_default(&limits);
    if (data[0] & 0x80)
        limits.flags = 0;
    const char *input = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = (data[0] & 0x7f) * len / 128;

    stream whole, parts;
    stream_init(&whole, &limits);
    stream_run(&whole, input, len, NULL, 0);
    stream_init(&parts, &limits);
    stream_run(&parts, input, len, &split, split ? 1 : 0);
    if (whole.phase != parts.phase || (whole.error != parts.error && whole.phase != ST_ERROR) ||
        whole.messages != parts.messages || !bytes_eq(&whole.out, parts.out.p, parts.out.len)) {
        fprintf(stderr,
                "whole: phase %d error %d, %zu messages; split at %zu: phase %d error %d, "
                "%zu messages\n",
                whole.phase, whole.error, whole.messages, split, parts.phase, parts.error,
                parts.messages);
        abort();
    }
    stream_free(&whole);
    stream_free(&parts);
    return 0;
}
