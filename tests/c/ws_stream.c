/*
 * ws_stream.c -- a server's WebSocket read loop over the wire layer, for the
 * C tests and the fuzzers. See ws_stream.h.
 */
#include "ws_stream.h"

#include <stdlib.h>
#include <string.h>

void ws_stream_init(ws_stream *s, unsigned config)
{
    memset(s, 0, sizeof(*s));
    s->max_message = (config & WS_SMALL) ? WS_SMALL_MAX : WS_LARGE_MAX;
    unsigned mode = config & 3u;
    if (mode != WS_PLAIN) {
        ol_ws_deflate_params p = {0};
        p.client_no_context_takeover = mode == WS_DEFLATE_NCT;
        p.client_max_window_bits = mode == WS_DEFLATE_9 ? 9 : 0;
        s->deflate = ol_ws_deflate_new(&p, 6);
        if (s->deflate == NULL) {
            fprintf(stderr, "ol_ws_deflate_new: out of memory\n");
            exit(2);
        }
        s->flags = OL_WS_DEFLATE;
    }
    guard_init(&s->guard, 4096);
    s->phase = WS_OPEN;
}

void ws_stream_free(ws_stream *s)
{
    bytes_free(&s->out);
    bytes_free(&s->pending);
    bytes_free(&s->control);
    free(s->message.data);
    ol_ws_deflate_free(s->deflate);
    guard_free(&s->guard);
}

static void put_escaped(bytes *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\')
            bytes_puts(b, "\\\\");
        else if (c < 0x20 || c >= 0x7f)
            bytes_printf(b, "\\x%02x", c);
        else
            bytes_put(b, (const char *)&c, 1);
    }
}

static void fail(ws_stream *s, int error)
{
    s->phase = WS_ERROR;
    s->error = error;
}

static void violated(ws_stream *s, const char *what)
{
    if (s->violation == NULL)
        s->violation = what;
}

/* What a valid header must look like, beyond being returned. */
static void check_header(ws_stream *s, int r, const ol_ws_frame *f)
{
    int control = (f->opcode & 8) != 0;
    if ((size_t)r != f->header_len || r < 6 || r > OL_WS_MAX_HEADER || !f->masked)
        violated(s, "header length or mask");
    if (f->opcode > OL_WS_PONG || (f->opcode > OL_WS_BINARY && !control))
        violated(s, "reserved opcode accepted");
    if (control && (!f->fin || f->length > OL_WS_MAX_CONTROL || f->rsv1))
        violated(s, "control frame rules");
    if (f->rsv1 && (!(s->flags & OL_WS_DEFLATE) || f->opcode == OL_WS_CONT))
        violated(s, "RSV1 accepted where it means nothing");
    if (!control && (f->opcode == OL_WS_CONT) != s->in_message)
        violated(s, "data frame out of sequence accepted");
    if (f->length >> 63)
        violated(s, "length with the top bit");
}

static void begin_frame(ws_stream *s)
{
    ol_ws_frame *f = &s->frame;
    if (f->opcode & 8) {
        bytes_clear(&s->control);
        return;
    }
    if (f->opcode != OL_WS_CONT) {
        s->in_message = 1;
        s->text = f->opcode == OL_WS_TEXT;
        s->compressed = f->rsv1;
        s->message.len = 0;
        s->checked = 0;
        ol_utf8_init(&s->utf8);
    }
    if (!s->compressed && f->length > s->max_message - s->message.len)
        fail(s, OL_WS_ETOO_BIG);
}

static void append(ol_ws_buf *b, const char *p, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            fprintf(stderr, "realloc: out of memory\n");
            exit(2);
        }
        b->data = data;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Payload bytes of a data frame, unmasked; `last` ends the frame. */
static void data_piece(ws_stream *s, const char *p, size_t n, int last)
{
    if (s->compressed) {
        int fin = last && s->frame.fin;
        size_t cap = s->message.cap;
        int r = ol_ws_inflate(s->deflate, p, n, fin, s->max_message, &s->message);
        if (s->message.len > s->max_message + 1 ||
            (s->message.cap > cap && s->message.cap > s->max_message + 1))
            violated(s, "inflated beyond the limit");
        if (r == 0 && s->message.len > s->max_message)
            violated(s, "too big, yet accepted");
        if (r != 0) {
            fail(s, r);
            return;
        }
    } else {
        append(&s->message, p, n);
    }
    if (s->text && s->message.len > s->checked) {
        int r = ol_utf8_feed(&s->utf8, s->message.data + s->checked, s->message.len - s->checked);
        s->checked = s->message.len;
        if (r != 0)
            fail(s, r);
    }
}

static void end_control(ws_stream *s)
{
    const char *p = s->control.p ? s->control.p : "";
    size_t n = s->control.len;
    switch (s->frame.opcode) {
    case OL_WS_PING:
        bytes_puts(&s->out, "ping ");
        break;
    case OL_WS_PONG:
        bytes_puts(&s->out, "pong ");
        break;
    default: {
        int code;
        const char *reason;
        size_t reason_len;
        int r = ol_ws_parse_close(p, n, &code, &reason, &reason_len);
        if (r != 0) {
            fail(s, r);
            return;
        }
        if (reason < p || reason + reason_len > p + n ||
            (code != OL_WS_CLOSE_NO_STATUS && !ol_ws_close_code_sendable(code)))
            violated(s, "close payload");
        bytes_printf(&s->out, "close %d ", code);
        p = reason;
        n = reason_len;
        s->phase = WS_CLOSED;
        break;
    }
    }
    put_escaped(&s->out, p, n);
    bytes_puts(&s->out, "\n");
}

static void end_frame(ws_stream *s)
{
    if (s->frame.opcode & 8) {
        end_control(s);
        return;
    }
    if (!s->frame.fin)
        return;
    if (s->text && ol_utf8_finish(&s->utf8) != 0) {
        fail(s, OL_WS_EUTF8);
        return;
    }
    bytes_puts(&s->out, s->text ? "text " : "binary ");
    put_escaped(&s->out, s->message.data, s->message.len);
    bytes_puts(&s->out, "\n");
    s->messages++;
    s->in_message = 0;
}

void ws_stream_feed(ws_stream *s, const char *data, size_t len)
{
    bytes_put(&s->pending, data, len);
    size_t pos = 0;
    while (s->phase == WS_OPEN) {
        size_t avail = s->pending.len - pos;
        if (!s->have_header) {
            /* A header is at most 14 bytes: hand over no more than that, so
             * that reading past the header is caught at the guard page. */
            size_t n = avail < OL_WS_MAX_HEADER ? avail : OL_WS_MAX_HEADER;
            const char *buf = guard_place(&s->guard, s->pending.p + pos, n);
            unsigned flags = s->flags | (s->in_message ? OL_WS_IN_MESSAGE : 0);
            int r = ol_ws_parse_header(buf, n, flags, &s->frame);
            if (r == OL_INCOMPLETE)
                break;
            if (r < 0) {
                fail(s, r);
                break;
            }
            check_header(s, r, &s->frame);
            pos += (size_t)r;
            s->have_header = 1;
            s->got = 0;
            begin_frame(s);
            continue;
        }
        uint64_t left = s->frame.length - s->got;
        size_t take = left < avail ? (size_t)left : avail;
        if (take == 0 && left > 0)
            break;
        char *p = s->pending.p + pos;
        ol_ws_unmask(p, take, s->frame.mask, s->got);
        s->got += take;
        pos += take;
        if (s->frame.opcode & 8)
            bytes_put(&s->control, p, take);
        else
            data_piece(s, p, take, s->got == s->frame.length);
        if (s->phase == WS_OPEN && s->got == s->frame.length) {
            s->have_header = 0;
            end_frame(s);
        }
    }
    memmove(s->pending.p, s->pending.p + pos, s->pending.len - pos);
    s->pending.len -= pos;
}

void ws_stream_run(ws_stream *s, const char *data, size_t len, const size_t *splits, size_t nsplits)
{
    size_t at = 0;
    for (size_t i = 0; i < nsplits; i++) {
        ws_stream_feed(s, data + at, splits[i] - at);
        at = splits[i];
    }
    ws_stream_feed(s, data + at, len - at);
}

void ws_remask(bytes *out, const char *in, size_t len, const uint8_t key[4])
{
    const unsigned char *p = (const unsigned char *)in, *end = p + len;
    bytes_clear(out);
    while (end - p >= 2 && (p[1] & 0x80)) {
        unsigned len7 = p[1] & 0x7f;
        size_t extended = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        size_t header = 2 + extended + 4;
        if ((size_t)(end - p) < header)
            break;
        uint64_t n = len7;
        if (extended) {
            n = 0;
            for (size_t i = 0; i < extended; i++)
                n = n << 8 | p[2 + i];
        }
        const unsigned char *old = p + 2 + extended;
        bytes_put(out, (const char *)p, 2 + extended);
        bytes_put(out, (const char *)key, 4);
        size_t have = (size_t)(end - p) - header;
        size_t m = n < have ? (size_t)n : have;
        for (size_t i = 0; i < m; i++) {
            char c = (char)(p[header + i] ^ old[i % 4] ^ key[i % 4]);
            bytes_put(out, &c, 1);
        }
        p += header + m;
        if (m < n)
            break;
    }
    bytes_put(out, (const char *)p, (size_t)(end - p));
}
