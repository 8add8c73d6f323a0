/*
 * ws_stream.h -- drives the WebSocket wire layer over a stream of client
 * frames the way a server's connection does: a header once complete, then
 * its payload in whatever pieces arrive, each unmasked at its offset, text
 * checked as it arrives, compressed messages inflated piece by piece, until
 * an error or a close frame.
 *
 * Every header is parsed from a copy that ends at a guard page. Each event
 * is rendered as a line, bytes outside printable ASCII escaped:
 *
 *     text <payload>         binary <payload>
 *     ping <payload>         pong <payload>
 *     close <code> <reason>
 *
 * The driver also checks what the wire layer promises beyond results (a
 * header's length, control frame rules, the inflater's memory bound) and
 * names the first broken promise in `violation`.
 */
#ifndef OL_WS_STREAM_H
#define OL_WS_STREAM_H

#include "../../src/wire/ol_ws.h"
#include "testlib.h"

enum ws_phase {
    WS_OPEN,   /* reading frames */
    WS_CLOSED, /* a close frame arrived; what follows is ignored */
    WS_ERROR   /* the wire layer failed the connection */
};

/* Configurations, as the low bits of a fuzzing seed's control byte. */
#define WS_PLAIN       0u /* no compression */
#define WS_DEFLATE     1u /* permessage-deflate with context takeover */
#define WS_DEFLATE_NCT 2u /* permessage-deflate, client_no_context_takeover */
#define WS_DEFLATE_9   3u /* permessage-deflate, client_max_window_bits=9 */
#define WS_SMALL       4u /* messages limited to WS_SMALL_MAX bytes */
#define WS_CONFIGS     8u

#define WS_SMALL_MAX 16
#define WS_LARGE_MAX (1u << 20)

typedef struct ws_stream {
    unsigned flags;     /* OL_WS_DEFLATE when compression was negotiated */
    size_t max_message; /* limit of one message, after inflating */

    int phase;
    int error;       /* OL_WS_E* when phase == WS_ERROR */
    size_t messages; /* data messages completed */
    bytes out;       /* rendered events */
    const char *violation;

    /* Private. */
    guard_buf guard;
    bytes pending;
    ol_ws_deflate *deflate;
    int have_header;
    ol_ws_frame frame;
    uint64_t got; /* payload bytes of the frame read so far */
    int in_message, text, compressed;
    ol_utf8 utf8;
    ol_ws_buf message; /* the data message so far, inflated if compressed */
    size_t checked;    /* bytes of message already fed to utf8 */
    bytes control;     /* a control frame's payload */
} ws_stream;

void ws_stream_init(ws_stream *s, unsigned config);
void ws_stream_free(ws_stream *s);
/* Append bytes and process as far as they allow. */
void ws_stream_feed(ws_stream *s, const char *data, size_t len);
/* Feed data whole, or in the pieces that the split points mark. */
void ws_stream_run(ws_stream *s, const char *data, size_t len, const size_t *splits,
                   size_t nsplits);

/*
 * Copy a client stream with every frame masked again with `key`: the
 * payloads unmask to the same bytes. A plain byte-at-a-time XOR, the
 * reference for ol_ws_unmask(). Copies verbatim from the first header it
 * cannot read (unmasked, incomplete).
 */
void ws_remask(bytes *out, const char *in, size_t len, const uint8_t key[4]);

#endif /* OL_WS_STREAM_H */
