/*
 * test_chunked.c -- the chunked decoder's calling contract, beyond what the
 * stream rows in test_stream.c cover: zero-copy data spans, partial lines
 * left unconsumed, and trailers delivered into the caller's array.
 */
#include <string.h>

#include "stream.h"

static void check_spans_point_into_input(void)
{
    const char *body = "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
    ol_chunked dec;
    ol_chunked_init(&dec, NULL);
    ol_span data;
    size_t used;
    int r = ol_chunked_decode(&dec, body, strlen(body), &used, &data);
    CHECK(r == OL_CHUNK_DATA && data.base == body + 3 && data.len == 4 && used == 7,
          "first chunk is a span of the input");
    r = ol_chunked_decode(&dec, body + used, strlen(body) - used, &used, &data);
    CHECK(r == OL_CHUNK_DATA && data.len == 5 && memcmp(data.base, "pedia", 5) == 0,
          "second chunk");
}

static void check_partial_size_line_not_consumed(void)
{
    ol_chunked dec;
    ol_chunked_init(&dec, NULL);
    ol_span data;
    size_t used = 99;
    CHECK(ol_chunked_decode(&dec, "1f;na", 5, &used, &data) == OL_INCOMPLETE && used == 0,
          "a size line is consumed only when complete");
    CHECK(ol_chunked_decode(&dec, "3\r\nab", 5, &used, &data) == OL_CHUNK_DATA && used == 5 &&
              data.len == 2,
          "data is handed out as it arrives");
    CHECK(ol_chunked_decode(&dec, "c\r", 2, &used, &data) == OL_CHUNK_DATA && used == 1,
          "rest of the chunk");
    CHECK(ol_chunked_decode(&dec, "\r", 1, &used, &data) == OL_INCOMPLETE && used == 0,
          "half a CRLF waits");
}

static void check_trailers_delivered(void)
{
    const char *body = "0\r\nA: 1\r\nB: 2\r\n\r\nNEXT";
    ol_header trailers[4];
    ol_chunked dec;
    ol_chunked_init(&dec, NULL);
    dec.trailers = trailers;
    dec.max_trailers = 4;
    ol_span data;
    size_t used;
    CHECK(ol_chunked_decode(&dec, body, 10, &used, &data) == OL_INCOMPLETE && used == 3,
          "trailers wait until the section is complete");
    int r = ol_chunked_decode(&dec, body + 3, strlen(body) - 3, &used, &data);
    CHECK(r == OL_CHUNK_DONE && used == 14 && dec.num_trailers == 2, "done after the trailers");
    CHECK(trailers[1].value.len == 1 && trailers[1].value.base[0] == '2', "trailer value");
    CHECK(ol_chunked_decode(&dec, "x", 1, &used, &data) == OL_CHUNK_DONE && used == 0,
          "a finished decoder consumes nothing more");
}

void suite_chunked(void)
{
    check_spans_point_into_input();
    check_partial_size_line_not_consumed();
    check_trailers_delivered();
}
