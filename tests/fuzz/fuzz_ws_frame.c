/*
 * fuzz_ws_frame.c -- libFuzzer target for the WebSocket wire layer: frame
 * headers, unmasking, UTF-8, close payloads and permessage-deflate, driven
 * the way a server reads a client (tests/c/ws_stream.c).
 *
 * The first input byte picks the configuration (its low three bits, as the
 * seeds from tests/c/test_ws.c write them) and where to split the rest, a
 * stream of client frames. The stream runs whole, split in two, and whole
 * again masked with another key: the runs must render the same events and
 * end the same way (for input wrong in two ways, either fault), and the
 * driver's own checks must hold: header lengths, control frame rules, no
 * message inflated past its limit by more than a byte, no buffer grown past
 * it. With a 9-bit client window one difference is allowed: zlib resolves a
 * reference beyond the window when the same call wrote what it refers to,
 * so a run may refuse a message (and stop) where the other took it.
 *
 * Then the same bytes serve as a message to compress (with a window and
 * context takeover the first byte picks) and inflate back in pieces, twice
 * over the same streams; as a payload to unmask at an offset against a
 * byte-at-a-time reference; as a close payload, and a close reason to cut
 * to size; and as the handshake's request fields: a Sec-WebSocket-Key, and
 * a Sec-WebSocket-Extensions value, whose accepted response must itself be
 * an acceptable offer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../c/ws_stream.h"

static int is_prefix(const bytes *a, const bytes *b)
{
    return a->len <= b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/* One run refused a message the other took, and agreed before it. */
static int window_overreach(const ws_stream *a, const ws_stream *b)
{
    return a->phase == WS_ERROR && a->error == OL_WS_EDEFLATE && is_prefix(&a->out, &b->out);
}

static void check_streams(const char *input, size_t len, unsigned config, size_t split,
                          const uint8_t key[4])
{
    ws_stream whole, parts, masked;
    bytes remasked = {0};
    ws_stream_init(&whole, config);
    ws_stream_run(&whole, input, len, NULL, 0);
    ws_stream_init(&parts, config);
    ws_stream_run(&parts, input, len, &split, split ? 1 : 0);
    ws_remask(&remasked, input, len, key);
    ws_stream_init(&masked, config);
    ws_stream_run(&masked, remasked.p, remasked.len, NULL, 0);

    const char *violation = whole.violation ? whole.violation : parts.violation;
    if (violation == NULL)
        violation = masked.violation;
    if (violation != NULL) {
        fprintf(stderr, "broken promise: %s\n", violation);
        abort();
    }
    int same = whole.phase == parts.phase && bytes_eq(&whole.out, parts.out.p, parts.out.len) &&
               (whole.error == parts.error || whole.phase == WS_ERROR);
    if (!same && (config & 3u) == WS_DEFLATE_9)
        same = window_overreach(&whole, &parts) || window_overreach(&parts, &whole);
    if (!same) {
        fprintf(stderr,
                "whole: phase %d error %d, %zu messages; split at %zu: phase %d error %d, "
                "%zu messages\n",
                whole.phase, whole.error, whole.messages, split, parts.phase, parts.error,
                parts.messages);
        abort();
    }
    if (whole.phase != masked.phase || whole.error != masked.error ||
        !bytes_eq(&whole.out, masked.out.p, masked.out.len)) {
        fprintf(stderr, "masked again: phase %d error %d, was phase %d error %d\n", masked.phase,
                masked.error, whole.phase, whole.error);
        abort();
    }
    ws_stream_free(&whole);
    ws_stream_free(&parts);
    ws_stream_free(&masked);
    bytes_free(&remasked);
}

/* The input as two messages: compressed, then inflated in pieces. */
static void check_round_trip(const char *input, size_t len, unsigned control)
{
    ol_ws_deflate_params server = {0}, client = {0};
    uint8_t bits = (uint8_t)(9 + control % 7);
    server.server_max_window_bits = client.client_max_window_bits = bits;
    server.server_no_context_takeover = client.client_no_context_takeover = (control >> 3) & 1;
    ol_ws_deflate *out = ol_ws_deflate_new(&server, (int)(control >> 4) % 10);
    ol_ws_deflate *in = ol_ws_deflate_new(&client, 6);
    if (out == NULL || in == NULL)
        abort();
    size_t step = (size_t)(control % 13) + 1;
    ol_ws_buf z = {0}, back = {0};
    for (int round = 0; round < 2; round++) {
        z.len = back.len = 0;
        if (ol_ws_deflate_message(out, input, len, &z) != 0)
            abort();
        size_t at = 0;
        int r;
        do {
            size_t n = z.len - at < step ? z.len - at : step;
            r = ol_ws_inflate(in, z.data + at, n, at + n == z.len, len, &back);
            at += n;
        } while (r == 0 && at < z.len);
        if (r != 0 || back.len != len || (len && memcmp(back.data, input, len) != 0)) {
            fprintf(stderr, "round trip %d, %u bits, pieces of %zu: %d, %zu of %zu bytes\n", round,
                    bits, step, r, back.len, len);
            abort();
        }
    }
    free(z.data);
    free(back.data);
    ol_ws_deflate_free(out);
    ol_ws_deflate_free(in);
}

static void check_unmask(const char *input, size_t len, unsigned control, const uint8_t key[4])
{
    char *a = malloc(len + 1), *b = malloc(len + 1);
    uint64_t offset = control * UINT64_C(0x9e3779b97f4a7c15);
    memcpy(a, input, len);
    for (size_t i = 0; i < len; i++)
        b[i] = (char)(input[i] ^ key[(offset + i) % 4]);
    ol_ws_unmask(a, len, key, offset);
    if (memcmp(a, b, len) != 0)
        abort();
    free(a);
    free(b);
}

static void check_close(const char *input, size_t len, unsigned control)
{
    int code;
    const char *reason;
    size_t reason_len;
    if (ol_ws_parse_close(input, len, &code, &reason, &reason_len) == 0 &&
        (len > OL_WS_MAX_CONTROL || reason < input || reason + reason_len > input + len ||
         (code != OL_WS_CLOSE_NO_STATUS && !ol_ws_close_code_sendable(code))))
        abort();

    /* Any UTF-8 reason, cut to fit, parses back as a prefix of itself. */
    ol_utf8 u;
    ol_utf8_init(&u);
    if (ol_utf8_feed(&u, input, len) != 0 || ol_utf8_finish(&u) != 0)
        return;
    char out[OL_WS_MAX_CONTROL];
    int want = 1000 + (int)(control % 4);
    int n = ol_ws_close_payload(out, want, input, len);
    if (n < 2 || ol_ws_parse_close(out, (size_t)n, &code, &reason, &reason_len) != 0 ||
        code != want || memcmp(reason, input, reason_len) != 0 ||
        (reason_len < len && reason_len < OL_WS_MAX_CONTROL - 5))
        abort();
}

static void check_handshake(const char *input, size_t len, unsigned control)
{
    char accept[OL_WS_ACCEPT_LEN];
    int r = ol_ws_accept(input, len, accept);
    if ((r != OL_WS_ACCEPT_LEN && r != OL_WS_EKEY) || (r == OL_WS_ACCEPT_LEN && len < 24))
        abort();

    ol_ws_deflate_params server = {0}, out, again;
    server.server_no_context_takeover = control & 1;
    server.client_no_context_takeover = (control >> 1) & 1;
    server.server_max_window_bits = (uint8_t)((control >> 2) % 9 ? 7 + (control >> 2) % 9 : 0);
    server.client_max_window_bits = (uint8_t)((control >> 5) ? 8 + (control >> 5) : 0);
    r = ol_ws_negotiate_deflate(input, len, &server, &out);
    if (r != 1 && r != 0 && r != OL_WS_EEXTENSION)
        abort();
    if (r != 1)
        return;
    if (out.server_max_window_bits == 8 || out.server_max_window_bits > 15 ||
        (out.server_max_window_bits && out.server_max_window_bits < 9) ||
        out.client_max_window_bits > 15 ||
        (out.client_max_window_bits && out.client_max_window_bits < 8))
        abort();
    char text[128];
    int n = ol_ws_deflate_response(&out, text, sizeof(text));
    if (n <= 0 || ol_ws_negotiate_deflate(text, (size_t)n, &server, &again) != 1) {
        fprintf(stderr, "the response is no acceptable offer: %.*s\n", n > 0 ? n : 0, text);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned control = data[0];
    const char *input = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = (control >> 3) * len / 32;
    const uint8_t key[4] = {(uint8_t)(control ^ 0x5a), 0xa5, (uint8_t)(len & 0xff), 0x3c};

    check_streams(input, len, control % WS_CONFIGS, split, key);
    check_round_trip(input, len, control);
    check_unmask(input, len, control, key);
    check_close(input, len, control);
    check_handshake(input, len, control);
    return 0;
}
