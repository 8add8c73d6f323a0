/*
 * test_stream.c -- whole conversations: bodies by Content-Length and chunked,
 * pipelining, upgrades, and what may follow a message. Each row is an input
 * stream and what tests/c/stream.c must make of it: the rendered messages
 * and how the stream ends. Rows run whole, split at every byte boundary and
 * a byte at a time, through guard-page copies.
 */
#include <stdlib.h>
#include <string.h>

#include "stream.h"

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
#define CHUNKED_MSG(body, trailers)                                                                \
    "POST / 1.1\nHost: h\nTransfer-Encoding: chunked\n" trailers "\n" body "\n"

typedef struct srow {
    const char *input;
    size_t len;
    int phase; /* how the stream ends */
    int error; /* when phase == ST_ERROR */
    const char *messages;
    int small; /* small chunk-extension and trailer limits */
    const char *why;
} srow;

#define S(input, ...)                                                                              \
    {                                                                                              \
        input, sizeof(input) - 1, __VA_ARGS__                                                      \
    }

/* clang-format off */
static const srow rows[] = {
    /* Chunked bodies. */
    S(CHUNKED_HEAD "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("hello world", ""), 0, "two chunks"),
    S(CHUNKED_HEAD "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("0123456789abcdefghij", ""), 0, "hex in both cases"),
    S(CHUNKED_HEAD "0005\r\nhello\r\n000\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("hello", ""), 0, "leading zeros"),
    S(CHUNKED_HEAD "0\r\n\r\n", ST_HEAD, 0, CHUNKED_MSG("", ""), 0, "empty body"),
    S(CHUNKED_HEAD "5;a\r\nhello\r\n5;a=b;c=\"d;\\\"e\\\"\"\r\nworld\r\n0;z\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("helloworld", ""), 0, "extensions: bare, token and quoted values"),
    S(CHUNKED_HEAD "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: two words\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("abc", "X-Sum: 1\nX-Other: two words\n"), 0, "trailers"),
    S(CHUNKED_HEAD "g\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "not hex"),
    S(CHUNKED_HEAD "\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "empty size"),
    S(CHUNKED_HEAD " 5\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "space before size"),
    S(CHUNKED_HEAD "5 \r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "space after size"),
    S(CHUNKED_HEAD "5 ;a\r\nhello\r\n0\r\n\r\n", ST_HEAD, 0, CHUNKED_MSG("hello", ""), 0,
      "BWS before an extension (RFC 9112 7.1.1)"),
    S(CHUNKED_HEAD "5; some; parameters=stuff\r\nhello\r\n6; blahblah; blah\r\n world\r\n0\r\n\r\n",
      ST_HEAD, 0, CHUNKED_MSG("hello world", ""), 0, "BWS after ';' (gunicorn valid/013)"),
    S(CHUNKED_HEAD "5\t;\ta \t= \t\"q\"\t; b =c\r\nhello\r\n0 ; z\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("hello", ""), 0, "BWS of SP and HTAB around ';' and '='"),
    S(CHUNKED_HEAD "5;a \r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0,
      "no whitespace at the end of the line"),
    S(CHUNKED_HEAD "5; \r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0,
      "BWS but no extension name"),
    S(CHUNKED_HEAD "5;a= \r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0,
      "BWS but no extension value"),
    S(CHUNKED_HEAD "1                                        \r\nx\r\n0\r\n\r\n", ST_ERROR,
      OL_ECHUNK_EXT_TOO_LONG, "", 1, "a run of whitespace counts against the extension cap"),
    S(CHUNKED_HEAD "5\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "bare LF after size"),
    S(CHUNKED_HEAD "5\rhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "bare CR after size"),
    S(CHUNKED_HEAD "-5\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "negative size"),
    S(CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "0x prefix"),
    S(CHUNKED_HEAD "8000000000000000\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "2^63"),
    S(CHUNKED_HEAD "10000000000000000000\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0, "2^76 (wraps u64)"),
    S(CHUNKED_HEAD "000000000000000000000000000000001\r\n", ST_ERROR, OL_ECHUNK_SIZE, "", 0,
      "33 digits even if zeros"),
    S(CHUNKED_HEAD "5\r\nhelloX\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_DATA, "", 0,
      "data longer than its size"),
    S(CHUNKED_HEAD "5\r\nhello\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_DATA, "", 0, "bare LF after data"),
    S(CHUNKED_HEAD "5\r\nhello\r0\r\n\r\n", ST_ERROR, OL_ECHUNK_DATA, "", 0, "bare CR after data"),
    S(CHUNKED_HEAD "5;\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0, "empty extension"),
    S(CHUNKED_HEAD "5;=b\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0, "extension without name"),
    S(CHUNKED_HEAD "5;a=\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0, "empty extension value"),
    S(CHUNKED_HEAD "5;a b\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0, "space in extension"),
    S(CHUNKED_HEAD "5;a=\"b\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0,
      "unterminated quoted value"),
    S(CHUNKED_HEAD "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", ST_ERROR, OL_ECHUNK_EXT, "", 0,
      "control byte in quoted value"),
    S(CHUNKED_HEAD "1;aaaaaaaaaaaaaaa\r\nx\r\n1;bbbbbbbbbbbbbbbb\r\nx\r\n0\r\n\r\n", ST_ERROR,
      OL_ECHUNK_EXT_TOO_LONG, "", 1, "extension bytes capped per message (32)"),
    S(CHUNKED_HEAD "0\r\nX: a\r\n b\r\n\r\n", ST_ERROR, OL_EOBS_FOLD, "", 0, "folded trailer"),
    S(CHUNKED_HEAD "0\r\nX : a\r\n\r\n", ST_ERROR, OL_EFIELD_NAME, "", 0, "bad trailer name"),
    S(CHUNKED_HEAD "0\r\nX: a\x00\r\n\r\n", ST_ERROR, OL_EFIELD_VALUE, "", 0, "NUL in trailer"),
    S(CHUNKED_HEAD "0\r\nX: 0123456789012345678901234567\r\n\r\n", ST_ERROR, OL_ETRAILERS_TOO_LARGE,
      "", 1, "trailer section over 32 bytes"),
    S(CHUNKED_HEAD "0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", ST_ERROR,
      OL_ETRAILERS_TOO_LARGE, "", 1, "more than 4 trailer fields"),
    S(CHUNKED_HEAD "0\r\n\n", ST_ERROR, OL_ELINE, "", 0, "bare LF ends trailers"),
    S(CHUNKED_HEAD "5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n", ST_ERROR, OL_ETRAILER_FIELD, "",
      0, "Content-Length in a trailer (RFC 9110 6.5.1)"),
    S(CHUNKED_HEAD "0\r\nHost: evil.example\r\n\r\n", ST_ERROR, OL_ETRAILER_FIELD, "", 0,
      "Host in a trailer"),
    S(CHUNKED_HEAD "0\r\nX: 1\r\ntransfer-encoding: chunked\r\n\r\n", ST_ERROR, OL_ETRAILER_FIELD,
      "", 0, "Transfer-Encoding in a trailer, any case"),
    S(CHUNKED_HEAD "0\r\nAuthorization: Basic eA==\r\n\r\n", ST_ERROR, OL_ETRAILER_FIELD, "", 0,
      "Authorization in a trailer"),
    S(CHUNKED_HEAD "0\r\nTE: trailers\r\n\r\n", ST_ERROR, OL_ETRAILER_FIELD, "", 0,
      "TE in a trailer"),
    S(CHUNKED_HEAD "0\r\nX: 0123456789012345678901234567\r\nHost: a\r\n\r\n", ST_ERROR,
      OL_ETRAILERS_TOO_LARGE, "", 1, "an oversized section is refused before a later field"),
    S(CHUNKED_HEAD "0\r\nContent-Type: text/plain\r\nHostx: a\r\nX-TE: b\r\n\r\n", ST_HEAD, 0,
      CHUNKED_MSG("", "Content-Type: text/plain\nHostx: a\nX-TE: b\n"), 0,
      "fields that only resemble forbidden ones, and Content-Type, are allowed"),

    /* Content-Length bodies and pipelining. */
    S("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
      "GET /b HTTP/1.1\r\nHost: h\r\n\r\n", ST_HEAD, 0,
      "POST /a 1.1\nHost: h\nContent-Length: 3\n\nabc\nGET /b 1.1\nHost: h\n\n\n", 0,
      "a body, then a pipelined request"),
    S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
      "GET / HTTP/1.1\r\nHost: h\r\n\r\n", ST_HEAD, 0,
      "POST / 1.1\nHost: h\nContent-Length: 0\n\n\nGET / 1.1\nHost: h\n\n\n", 0,
      "Content-Length: 0"),
    S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", ST_LENGTH, 0, "", 0,
      "body still arriving"),
    S("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef"
      "GET / HTTP/1.1\r\n\r\n", ST_ERROR, OL_ECONTENT_LENGTH_DUP, "", 0, "CL.CL smuggling"),
    S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n", ST_ERROR, OL_ECL_AND_TE, "", 0, "CL.TE smuggling"),
    S("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
      "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n", ST_ERROR, 0,
      "GET /1 1.1\nHost: h\n\n\nGET /2 1.1\nHost: h\nConnection: close\n\n\n", 0,
      "nothing after Connection: close"),
    S("GET / HTTP/1.0\r\n\r\n\r\n\r\n", ST_CLOSED, 0, "GET / 1.0\n\n\n", 0,
      "empty lines after a 1.0 request are harmless"),
    S("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n", ST_HEAD, 0,
      "GET /1 1.1\nHost: h\n\n\nGET /2 1.1\nHost: h\n\n\n", 0, "CRLF between pipelined requests"),
    S("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
      ST_UPGRADED, 0, "GET /ws 1.1\nHost: h\nConnection: upgrade\nUpgrade: websocket\n\n\n", 0,
      "upgrade hands off the bytes after the head"),
    S("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 3\r\n\r\nxyz", ST_UPGRADED, 0,
      "CONNECT a:443 1.1\nHost: a:443\nContent-Length: 3\n\n\n", 0,
      "CONNECT hands off right after the head"),
};
/* clang-format on */

static void run_row(stream *s, const srow *r, const size_t *splits, size_t nsplits)
{
    ol_limits limits;
    ol_limits_default(&limits);
    if (r->small) {
        limits.max_chunk_ext = 32;
        limits.max_trailer_size = 32;
        limits.max_fields = 4;
    }
    stream_init(s, &limits);
    stream_run(s, r->input, r->len, splits, nsplits);
}

static void check_run(const srow *r, const stream *s, const char *how)
{
    CHECK(s->phase == r->phase, "%s (%s): ends in phase %d, want %d", r->why, how, s->phase,
          r->phase);
    if (r->phase == ST_ERROR)
        CHECK(s->error == r->error, "%s (%s): error %d (%s), want %d (%s)", r->why, how, s->error,
              ol_strerror(s->error), r->error, ol_strerror(r->error));
    CHECK(bytes_eq(&s->out, r->messages, strlen(r->messages)), "%s (%s): got\n%s", r->why, how,
          s->out.p ? s->out.p : "");
}

void suite_stream(void)
{
    size_t nrows = sizeof(rows) / sizeof(rows[0]);
    for (size_t i = 0; i < nrows; i++) {
        const srow *r = &rows[i];
        stream s;
        run_row(&s, r, NULL, 0);
        check_run(r, &s, "whole");
        stream_free(&s);
        size_t *splits = malloc(r->len * sizeof(size_t));
        for (size_t at = 1; at < r->len; at++) {
            run_row(&s, r, &at, 1);
            check_run(r, &s, "split");
            stream_free(&s);
            splits[at - 1] = at;
        }
        run_row(&s, r, splits, r->len - 1);
        check_run(r, &s, "byte by byte");
        stream_free(&s);
        free(splits);
    }
    printf("streams: %zu rows, each whole, split at every byte and byte by byte\n", nrows);
}

void seeds_stream(const char *dir)
{
    size_t head = sizeof(CHUNKED_HEAD) - 1;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "row-%03zu", i);
        write_seed(dir, "stream", name, 0, rows[i].input, rows[i].len);
        if (rows[i].len > head && memcmp(rows[i].input, CHUNKED_HEAD, head) == 0)
            write_seed(dir, "chunked", name, 0, rows[i].input + head, rows[i].len - head);
    }
}
