/*
 * stream.h -- drives the wire layer over a byte stream the way a server's
 * read loop does: head, then body by its framing, then the next message,
 * until an error, an upgrade or the end of a non-persistent connection.
 *
 * Every call into the wire layer gets the unconsumed bytes copied so that
 * they end at a guard page. Each completed message is rendered as text so
 * tests can compare whole conversations:
 *
 *     METHOD TARGET VERSION\n
 *     name: value\n            (header fields, then trailer fields)
 *     \n
 *     body\n
 */
#ifndef OL_STREAM_H
#define OL_STREAM_H

#include "../../src/wire/ol_http.h"
#include "testlib.h"

enum stream_phase {
    ST_HEAD,     /* waiting for (more of) a request head */
    ST_LENGTH,   /* reading a Content-Length body */
    ST_CHUNKED,  /* reading a chunked body */
    ST_CLOSED,   /* the last message was not persistent */
    ST_UPGRADED, /* CONNECT or Upgrade: the bytes that follow are not HTTP */
    ST_ERROR     /* the wire layer refused the input */
};

#define STREAM_MAX_FIELDS 128

typedef struct stream {
    ol_limits limits;
    int skip_body; /* treat bodies as absent, like a HEAD response */

    int phase;
    int error;       /* OL_E* when phase == ST_ERROR */
    size_t messages; /* messages completed */
    bytes out;       /* rendered messages */

    /* Private. */
    guard_buf guard;
    bytes pending; /* bytes received but not consumed */
    ol_parser parser;
    ol_request req;
    ol_header headers[STREAM_MAX_FIELDS];
    ol_header trailers[STREAM_MAX_FIELDS];
    ol_chunked chunked;
    uint64_t body_left;
    unsigned flags; /* OL_REQ_* of the message being read */
    bytes head;     /* rendered head of the message being read */
    bytes body;
} stream;

void stream_init(stream *s, const ol_limits *limits);
void stream_free(stream *s);
/* Append bytes and process as far as they allow. */
void stream_feed(stream *s, const char *data, size_t len);
/* Feed data whole, or in the pieces that the split points mark. */
void stream_run(stream *s, const char *data, size_t len, const size_t *splits, size_t nsplits);

#endif /* OL_STREAM_H */
