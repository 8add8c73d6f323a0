/*
 * ws_deflate.c -- permessage-deflate (RFC 7692 section 7) with the system
 * zlib: raw DEFLATE, one inflater and one compressor per connection.
 *
 * The only part of the wire layer that allocates. Each zlib stream is set
 * up when first used (a connection that never receives a compressed message
 * never pays for an inflater's window), and output goes to an ol_ws_buf
 * grown with realloc.
 *
 * Inflating is where a peer controls the cost: a few kilobytes can expand
 * to gigabytes. Output room is therefore handed to zlib in amounts that
 * never let one message's output pass its limit by more than one byte, the
 * byte that proves the message too big; the buffer never grows beyond that
 * either.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ol_ws.h"

/* The compressor's hash tables follow its window: zlib's default (8) at 15
 * bits, 5 at 12 (as the websockets library chooses), so a small window
 * saves memory twice -- (1 << (bits + 2)) + (1 << (level + 9)) bytes, 32 KiB
 * at 12 bits instead of 144 KiB. */
static int mem_level(int window_bits)
{
    int level = window_bits - 7;
    return level < 1 ? 1 : level > 8 ? 8 : level;
}

#define FIRST_ROOM 4096u /* the first output room offered when out is empty */

struct ol_ws_deflate {
    int level;
    int inflate_bits;    /* the client's window */
    int deflate_bits;    /* ours */
    int inflate_reset;   /* client_no_context_takeover */
    int deflate_reset;   /* server_no_context_takeover */
    int inflate_ready;   /* `in` was set up */
    int deflate_ready;   /* `out` was set up */
    int ended;           /* the inflater's stream ended with a final block */
    int failed;          /* the error the inflater died of, or 0 */
    uint64_t message_in; /* compressed bytes of the message being inflated */
    size_t message_out;  /* its bytes inflated so far */
    z_stream in, out;
};

static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};

static int window(uint8_t bits, int lowest)
{
    if (bits == 0 || bits > 15)
        return 15;
    return bits < lowest ? lowest : bits;
}

ol_ws_deflate *ol_ws_deflate_new(const ol_ws_deflate_params *p, int level)
{
    ol_ws_deflate *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    ol_ws_deflate_params none = {0};
    if (p == NULL)
        p = &none;
    d->level = level < -1 || level > 9 ? Z_DEFAULT_COMPRESSION : level;
    d->inflate_bits = window(p->client_max_window_bits, 8);
    /* zlib refuses a raw 256-byte window to compress with; the negotiation
     * never grants 8 to our side, and a smaller window is always safe. */
    d->deflate_bits = window(p->server_max_window_bits, 9);
    d->inflate_reset = p->client_no_context_takeover;
    d->deflate_reset = p->server_no_context_takeover;
    return d;
}

void ol_ws_deflate_free(ol_ws_deflate *d)
{
    if (d == NULL)
        return;
    if (d->inflate_ready)
        inflateEnd(&d->in);
    if (d->deflate_ready)
        deflateEnd(&d->out);
    free(d);
}

/* Make sure out has room for `need` more bytes, growing it by about its
 * size (FIRST_ROOM at first) but by no more than `want` unless `need` is
 * more. Returns 0 or OL_WS_ENOMEM. */
static int reserve(ol_ws_buf *out, size_t need, size_t want)
{
    size_t room = out->cap - out->len;
    if (room >= need)
        return 0;
    size_t grow = out->cap > FIRST_ROOM ? out->cap : FIRST_ROOM;
    if (grow > want)
        grow = want;
    if (grow < need - room)
        grow = need - room;
    if (grow > SIZE_MAX - out->cap)
        return OL_WS_ENOMEM;
    char *data = realloc(out->data, out->cap + grow);
    if (data == NULL)
        return OL_WS_ENOMEM;
    out->data = data;
    out->cap += grow;
    return 0;
}

static uInt clamp_uint(size_t n)
{
    return n > UINT_MAX ? UINT_MAX : (uInt)n;
}

/* ------------------------------------------------------------------------ */
/* Inflating                                                                */

/* Start a new DEFLATE stream after a final block, keeping the window: data
 * after a BFINAL block may still refer back past it (RFC 7692 7.2.3.4). */
static int restart_inflater(ol_ws_deflate *d)
{
    uInt n = 1u << d->inflate_bits;
    unsigned char *dict = malloc(n);
    if (dict == NULL)
        return OL_WS_ENOMEM;
    int r = inflateGetDictionary(&d->in, dict, &n);
    if (r == Z_OK)
        r = inflateReset(&d->in);
    if (r == Z_OK && n > 0)
        r = inflateSetDictionary(&d->in, dict, n);
    free(dict);
    d->ended = 0;
    return r == Z_OK ? 0 : OL_WS_EDEFLATE;
}

/*
 * Inflate in[0..n) into out. With Z_BLOCK, inflate stops at block
 * boundaries, so that afterwards data_type tells whether the input ended on
 * one. Output room is never more than the message may still produce plus
 * one byte.
 */
static int run_inflate(ol_ws_deflate *d, const unsigned char *in, size_t n, int flush, size_t max,
                       ol_ws_buf *out)
{
    z_stream *z = &d->in;
    size_t limit = max == SIZE_MAX ? SIZE_MAX : max + 1;
    if (d->message_out > max) /* a limit lowered since the last piece */
        return OL_WS_ETOO_BIG;
    z->next_in = (unsigned char *)(uintptr_t)in;
    z->avail_in = 0;
    for (;;) {
        if (z->avail_in == 0 && n > 0) {
            z->next_in = (unsigned char *)(uintptr_t)in;
            z->avail_in = clamp_uint(n);
            in += z->avail_in;
            n -= z->avail_in;
        }
        if (d->ended) {
            if (z->avail_in == 0)
                return 0;
            int r = restart_inflater(d);
            if (r != 0)
                return r;
        }
        size_t room = limit - d->message_out;
        int r = reserve(out, 1, room);
        if (r != 0)
            return r;
        size_t avail = out->cap - out->len;
        z->next_out = (unsigned char *)out->data + out->len;
        z->avail_out = clamp_uint(avail < room ? avail : room);
        uInt offered = z->avail_out;
        int zr = inflate(z, flush);
        size_t produced = offered - z->avail_out;
        out->len += produced;
        d->message_out += produced;
        if (zr == Z_MEM_ERROR)
            return OL_WS_ENOMEM;
        if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT || zr == Z_STREAM_ERROR)
            return OL_WS_EDEFLATE;
        if (d->message_out > max)
            return OL_WS_ETOO_BIG;
        if (zr == Z_STREAM_END)
            d->ended = 1;
        else if (z->avail_in == 0 && n == 0 && z->avail_out != 0)
            return 0; /* all input taken, all output given */
        else if (zr == Z_BUF_ERROR && z->avail_out != 0)
            return OL_WS_EDEFLATE; /* no progress with input and room: never expected */
    }
}

static void end_message(ol_ws_deflate *d)
{
    d->message_in = 0;
    d->message_out = 0;
    if (d->inflate_reset) {
        inflateReset(&d->in);
        d->ended = 0;
    }
}

int ol_ws_inflate(ol_ws_deflate *d, const char *in, size_t n, int fin, size_t max, ol_ws_buf *out)
{
    if (d->failed)
        return d->failed;
    if (!d->inflate_ready) {
        int zr = inflateInit2(&d->in, -d->inflate_bits);
        if (zr != Z_OK)
            return zr == Z_MEM_ERROR ? OL_WS_ENOMEM : OL_WS_EDEFLATE;
        d->inflate_ready = 1;
    }
    int r = run_inflate(d, (const unsigned char *)in, n, Z_SYNC_FLUSH, max, out);
    d->message_in += n;
    if (r == 0 && fin && d->message_in > 0 && !d->ended) {
        r = run_inflate(d, tail, sizeof(tail), Z_BLOCK, max, out);
        /* Bit 7 of data_type: inflate stopped right after a block. Anything
         * else means the message ended inside one. */
        if (r == 0 && !d->ended && !(d->in.data_type & 128))
            r = OL_WS_EDEFLATE;
    }
    if (r != 0) {
        d->failed = r;
        return r;
    }
    if (fin)
        end_message(d);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Compressing                                                              */

int ol_ws_deflate_message(ol_ws_deflate *d, const char *in, size_t n, ol_ws_buf *out)
{
    z_stream *z = &d->out;
    if (!d->deflate_ready) {
        int zr = deflateInit2(z, d->level, Z_DEFLATED, -d->deflate_bits, mem_level(d->deflate_bits),
                              Z_DEFAULT_STRATEGY);
        if (zr != Z_OK)
            return OL_WS_ENOMEM;
        d->deflate_ready = 1;
    }
    size_t start = out->len;
    /* Room for the whole output up front, in the common case: the bound for
     * the input plus the sync flush marker. */
    uLong hint = n > (1u << 30) ? (1u << 30) : (uLong)n;
    int r = reserve(out, deflateBound(z, hint) + 16, 0);
    if (r != 0)
        return r;
    const unsigned char *p = (const unsigned char *)in;
    z->avail_in = 0;
    for (;;) {
        if (z->avail_in == 0 && n > 0) {
            z->next_in = (unsigned char *)(uintptr_t)p;
            z->avail_in = clamp_uint(n);
            p += z->avail_in;
            n -= z->avail_in;
        }
        /* More than six bytes of room, or zlib may repeat the flush marker. */
        r = reserve(out, 64, SIZE_MAX);
        if (r != 0)
            return r;
        size_t avail = out->cap - out->len;
        z->next_out = (unsigned char *)out->data + out->len;
        z->avail_out = clamp_uint(avail);
        int flush = n == 0 ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        int zr = deflate(z, flush);
        out->len += avail - z->avail_out;
        if (zr == Z_STREAM_ERROR)
            return OL_WS_EDEFLATE; /* zlib found its state inconsistent: never expected */
        if (flush == Z_SYNC_FLUSH && z->avail_in == 0 && z->avail_out != 0)
            break;
    }
    /* A sync flush always ends with an empty stored block: 00 00 FF FF. */
    if (out->len - start >= 4 && memcmp(out->data + out->len - 4, tail, 4) == 0)
        out->len -= 4;
    if (d->deflate_reset)
        deflateReset(z);
    return 0;
}
