/*
 * websocket.c -- WebSocket over a connection: the handshake's answer, frames
 * in and out, messages, control frames, the closing handshake, keepalive
 * pings and flow control. See websocket.h for the contract.
 *
 * Reading. Frames are parsed from the connection's input buffer. A message
 * that arrives whole in one frame (the common case) is unmasked in place
 * and handed to the interface straight from the buffer; a fragmented or
 * compressed one is gathered in ws->msg, a payload piece at a time as it
 * arrives, so the input buffer stays small however large the message.
 * Text is validated as it comes, failing at the first bad byte. Sizes are
 * checked against --ws-max-size before anything is buffered (after
 * decompression, by the inflater's own limit, so a deflate bomb is stopped
 * at the limit, not buffered).
 *
 * Closing. Whoever closes first sends a close frame; the other answers;
 * then the server closes the TCP connection (RFC 6455 7.1.1), gracefully
 * (lingering), so the client reads the close frame rather than a reset. A
 * protocol error is answered with its close code (1002, 1007, 1009) and the
 * connection closed the same way. The interface is told once, with the
 * code: the client's, the one sent for an error, or 1006 for a lost
 * connection.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ws->state */
#define WS_OPEN         0
#define WS_CLOSE_SENT   1 /* waiting for the client's close frame */
#define WS_CLOSE_RECVED 2 /* the client's close frame came (and was answered) */

/* Messages shorter than this are sent uncompressed even when deflate was
 * negotiated (RFC 7692 leaves it to the sender, per message). */
#define DEFLATE_MIN 64

/* Window and memory of the server's compressor: about 32 KiB per
 * connection instead of zlib's default 256 KiB, for little compression
 * lost on the messages WebSockets carry. */
#define SERVER_WINDOW_BITS 12

typedef struct ol_ws {
    ol_ws_frame frame;    /* the data frame being read */
    uint64_t frame_read;  /* its payload bytes consumed so far */
    int in_frame;         /* frame's header consumed, payload pending */
    int msg_opcode;       /* TEXT or BINARY of the message in progress, or 0 */
    int msg_compressed;   /* its first frame had RSV1 */
    ol_utf8 utf8;         /* validation of the text message in progress */
    ol_ws_buf msg;        /* payload of a message gathered across frames */
    uint64_t msg_wire;    /* payload bytes of the message on the wire so far */
    ol_ws_deflate *zlib;  /* permessage-deflate, when negotiated */
    int state;            /* WS_* */
    int told;             /* the interface knows the session ended */
    int paused;           /* the interface's queue is full */
    int ping_outstanding; /* a keepalive ping waits for its pong */
    uint64_t bytes_in, bytes_out;
} ol_ws;

static ol_ws *ws_of(const ol_conn *c)
{
    return (ol_ws *)c->ws;
}

int ol_ws_is_websocket(const ol_conn *c)
{
    return c->proto == &ol_ws_protocol;
}

void ol_ws_counts(const ol_conn *c, uint64_t *in, uint64_t *out)
{
    ol_ws *ws = ws_of(c);
    *in = ws ? ws->bytes_in : 0;
    *out = ws ? ws->bytes_out : 0;
}

/* ------------------------------------------------------------------------ */
/* The handshake                                                            */

int ol_ws_check_handshake(ol_server *srv, const ol_request *h, ol_ws_handshake *out,
                          const char **why)
{
    memset(out, 0, sizeof(*out));
    if (h->framing != OL_BODY_NONE && !(h->framing == OL_BODY_LENGTH && h->content_length == 0)) {
        *why = "a WebSocket handshake has no body";
        return 400;
    }
    ol_span key;
    int e = ol_ws_check_request(h, &key);
    if (e == 0 && ol_ws_accept(key.base, key.len, out->accept) != OL_WS_ACCEPT_LEN)
        e = OL_WS_EKEY;
    if (e < 0) {
        *why = ol_ws_strerror(e);
        return ol_ws_error_status(e);
    }
    if (!srv->cfg.ws_deflate)
        return 0;
    ol_ws_deflate_params server = {.server_max_window_bits = SERVER_WINDOW_BITS};
    for (size_t i = 0; i < h->num_headers && !out->deflate; i++) {
        const ol_header *f = &h->headers[i];
        if (f->name.len != 24 || strncasecmp(f->name.base, "sec-websocket-extensions", 24) != 0)
            continue;
        e = ol_ws_negotiate_deflate(f->value.base, f->value.len, &server, &out->params);
        if (e < 0) {
            *why = ol_ws_strerror(e);
            return ol_ws_error_status(e);
        }
        out->deflate = e == 1;
    }
    return 0;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static size_t upgrade_head_size(PyObject *subprotocol, PyObject *headers)
{
    size_t n = 512; /* the fixed fields, Date, Server, the extension response */
    if (subprotocol != NULL)
        n += (size_t)PyBytes_GET_SIZE(subprotocol) + 32;
    for (Py_ssize_t i = 0; headers != NULL && i < PyList_GET_SIZE(headers); i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        n += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) +
             (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 4;
    }
    return n;
}

static size_t build_upgrade_head(ol_server *srv, const ol_ws_handshake *hs, PyObject *subprotocol,
                                 PyObject *headers, char *buf)
{
    static const char first[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    char *p = put(buf, first, sizeof(first) - 1);
    p = put(p, hs->accept, sizeof(hs->accept));
    p = put(p, "\r\n", 2);
    if (subprotocol != NULL) {
        p = put(p, "Sec-WebSocket-Protocol: ", 24);
        p = put(p, PyBytes_AS_STRING(subprotocol), (size_t)PyBytes_GET_SIZE(subprotocol));
        p = put(p, "\r\n", 2);
    }
    if (hs->deflate) {
        char ext[256];
        int n = ol_ws_deflate_response(&hs->params, ext, sizeof(ext));
        if (n > 0) {
            p = put(p, "Sec-WebSocket-Extensions: ", 26);
            p = put(p, ext, (size_t)n);
            p = put(p, "\r\n", 2);
        }
    }
    if (srv->cfg.date_header) {
        p = put(p, "Date: ", 6);
        p = put(p, ol_date_cache_get(&srv->date, time(NULL)), OL_HTTP_DATE_LEN);
        p = put(p, "\r\n", 2);
    }
    if (srv->cfg.server_header)
        p = put(p, "Server: oneloop\r\n", 17);
    for (Py_ssize_t i = 0; headers != NULL && i < PyList_GET_SIZE(headers); i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        p = put(p, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        p = put(p, ": ", 2);
        p = put(p, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        p = put(p, "\r\n", 2);
    }
    return (size_t)(put(p, "\r\n", 2) - buf);
}

static void reset_message(ol_ws *ws)
{
    ws->msg_opcode = 0;
    ws->msg_compressed = 0;
    ws->msg_wire = 0;
    ws->msg.len = 0;
    /* A large message's buffer is not kept for the next one. */
    if (ws->msg.cap > 65536) {
        free(ws->msg.data);
        ws->msg.data = NULL;
        ws->msg.cap = 0;
    }
}

static void schedule_ping(ol_conn *c);

int ol_ws_accept_upgrade(ol_conn *c, const ol_ws_handshake *hs, PyObject *subprotocol,
                         PyObject *headers)
{
    ol_server *srv = c->server;
    if (c->flags & (CONN_CLOSED | CONN_CLOSING | CONN_PEER_CLOSED))
        return -1;
    ol_ws *ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (hs->deflate && (ws->zlib = ol_ws_deflate_new(&hs->params, 6)) == NULL) {
        free(ws);
        PyErr_NoMemory();
        return -1;
    }
    size_t need = upgrade_head_size(subprotocol, headers);
    char *head = PyMem_Malloc(need);
    if (head == NULL) {
        ol_ws_deflate_free(ws->zlib);
        free(ws);
        PyErr_NoMemory();
        return -1;
    }
    size_t len = build_upgrade_head(srv, hs, subprotocol, headers, head);
    /* From here on the connection speaks WebSocket: bytes after the
     * handshake are frames. */
    c->ws = ws;
    c->proto = &ol_ws_protocol;
    ol_conn_set_phase(c, OL_PHASE_WEBSOCKET);
    c->flags &= ~(CONN_IDLE | CONN_CORKED);
    int e = ol_conn_write(c, head, len);
    PyMem_Free(head);
    if (e < 0 || (c->flags & CONN_CLOSED))
        return -1;
    schedule_ping(c);
    c->flags |= CONN_READING;
    ol_conn_update_events(c);
    /* Frames the client sent right behind its handshake are processed on
     * the next loop turn (not inside the app's send()). */
    if (c->rlen > 0)
        ol_conn_schedule(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */

/* One frame: header and payload in one write. 0, or -1 when gone. */
static int write_frame(ol_conn *c, int opcode, int rsv1, const char *data, size_t len)
{
    char head[OL_WS_MAX_SERVER_HEADER];
    size_t n = ol_ws_frame_header(head, 1, rsv1, opcode, len);
    struct iovec iov[2] = {{head, n}, {(void *)data, len}};
    return ol_conn_writev(c, iov, len > 0 ? 2 : 1);
}

int ol_ws_send(ol_conn *c, int text, const char *data, size_t len)
{
    ol_ws *ws = ws_of(c);
    if (ws == NULL || (c->flags & (CONN_CLOSED | CONN_CLOSING)) || ws->state != WS_OPEN)
        return -1;
    int opcode = text ? OL_WS_TEXT : OL_WS_BINARY;
    ws->bytes_out += len;
    OL_COUNT(c->server, ws_messages_out, 1);
    if (ws->zlib == NULL || len < DEFLATE_MIN)
        return write_frame(c, opcode, 0, data, len);
    ol_ws_buf out = {0};
    int r = ol_ws_deflate_message(ws->zlib, data, len, &out);
    if (r < 0) {
        free(out.data);
        PyErr_NoMemory();
        ol_log_error(c->server, "cannot compress a WebSocket message");
        ol_conn_abort(c);
        return -1;
    }
    int e = write_frame(c, opcode, 1, out.data, out.len);
    free(out.data);
    return e;
}

/* Tell the interface once that the session is over. */
static void tell_closed(ol_conn *c, int code, const char *reason, size_t reason_len)
{
    ol_ws *ws = ws_of(c);
    if (ws == NULL || ws->told)
        return;
    ws->told = 1;
    ol_req *r = c->request;
    if (r != NULL && c->server->handler->ws_closed != NULL)
        c->server->handler->ws_closed(r, code, reason, reason_len);
}

static void send_close_frame(ol_conn *c, int code, const char *reason, size_t reason_len)
{
    char payload[OL_WS_MAX_CONTROL];
    int n = ol_ws_close_payload(payload, code, reason, reason_len);
    write_frame(c, OL_WS_CLOSE, 0, payload, n > 0 ? (size_t)n : 0);
}

void ol_ws_close(ol_conn *c, int code, const char *reason, size_t reason_len)
{
    ol_ws *ws = ws_of(c);
    if (ws == NULL || (c->flags & CONN_CLOSED) || ws->state != WS_OPEN)
        return;
    ws->state = WS_CLOSE_SENT;
    send_close_frame(c, code, reason, reason_len);
    if (c->flags & CONN_CLOSED)
        return;
    ws->ping_outstanding = 0;
    double until = ol_deadline(c->server->now, c->server->cfg.ws_ping_timeout);
    ol_conn_set_deadline(c, until);
    /* A client that does not read would otherwise hold the close for the
     * whole send timeout: it has the close timeout to take our output. */
    ol_conn_limit_send(c, until);
}

/* A protocol error: answered with its close code, and the connection
 * closed without waiting for the client's close frame. */
static void fail(ol_conn *c, int code, const char *why)
{
    ol_ws *ws = ws_of(c);
    ol_log_debug(c->server, why);
    if (ws->state == WS_OPEN) {
        ws->state = WS_CLOSE_SENT;
        send_close_frame(c, code, why, strlen(why));
    }
    tell_closed(c, code, why, strlen(why));
    ol_conn_close_gracefully(c);
}

static void fail_with(ol_conn *c, int error)
{
    fail(c, ol_ws_close_code_for(error), ol_ws_strerror(error));
}

/* ------------------------------------------------------------------------ */
/* Keepalive                                                                */

static void schedule_ping(ol_conn *c)
{
    double interval = c->server->cfg.ws_ping_interval;
    ol_conn_set_deadline(c, ol_deadline(c->server->now, interval));
}

static void send_ping(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    uint32_t stamp = (uint32_t)(c->server->now * 1000.0);
    if (write_frame(c, OL_WS_PING, 0, (const char *)&stamp, sizeof(stamp)) < 0)
        return;
    ws->ping_outstanding = 1;
    double timeout = c->server->cfg.ws_ping_timeout;
    if (timeout > 0)
        ol_conn_set_deadline(c, ol_deadline(c->server->now, timeout));
    else
        schedule_ping(c);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */

/* A whole message for the interface; 0 to go on, -1 when reading stops. */
static int deliver(ol_conn *c, int text, const char *data, size_t len)
{
    ol_ws *ws = ws_of(c);
    ws->bytes_in += len;
    if (ws->state != WS_OPEN || c->request == NULL)
        return 0; /* closing: data frames are read and dropped */
    OL_COUNT(c->server, ws_messages_in, 1);
    int r = c->server->handler->ws_message(c->request, text, data, len);
    if (r < 0) {
        ol_log_error(c->server, "cannot deliver a WebSocket message");
        fail(c, 1011, "internal error");
        return -1;
    }
    if (r > 0)
        ws->paused = 1;
    return (c->flags & CONN_CLOSED) ? -1 : 0;
}

/* A control frame, whole in the buffer at its payload. 0, or -1 when the
 * connection closes. */
static int on_control(ol_conn *c, const ol_ws_frame *f, char *payload)
{
    ol_ws *ws = ws_of(c);
    size_t len = (size_t)f->length;
    ol_ws_unmask(payload, len, f->mask, 0);
    if (f->opcode == OL_WS_PING) {
        if (ws->state == WS_OPEN)
            write_frame(c, OL_WS_PONG, 0, payload, len);
        return (c->flags & CONN_CLOSED) ? -1 : 0;
    }
    if (f->opcode == OL_WS_PONG) {
        if (ws->ping_outstanding && ws->state == WS_OPEN) {
            ws->ping_outstanding = 0;
            schedule_ping(c);
        }
        return 0;
    }
    int code;
    const char *reason;
    size_t reason_len;
    int e = ol_ws_parse_close(payload, len, &code, &reason, &reason_len);
    if (e < 0) {
        fail_with(c, e);
        return -1;
    }
    if (ws->state == WS_OPEN) {
        /* Echo the code (RFC 6455 5.5.1), then the server closes first. */
        ws->state = WS_CLOSE_RECVED;
        send_close_frame(c, code, NULL, 0);
    }
    ws->state = WS_CLOSE_RECVED;
    tell_closed(c, code, reason, reason_len);
    ol_conn_close_gracefully(c);
    return -1;
}

/* Start a data frame whose header was just parsed (its place in the
 * message sequence was checked by the parser). */
static int begin_data_frame(ol_conn *c, const ol_ws_frame *f)
{
    ol_ws *ws = ws_of(c);
    if (f->opcode != OL_WS_CONT) {
        ws->msg_opcode = f->opcode;
        ws->msg_compressed = f->rsv1;
        ol_utf8_init(&ws->utf8);
    }
    /* The size on the wire is bounded too: compressed data can be padded
     * with empty blocks that inflate to nothing. */
    size_t max = c->server->cfg.ws_max_size;
    uint64_t wire_max = ws->msg_compressed ? (uint64_t)max + max / 64 + 1024 : max;
    if (f->length > wire_max || ws->msg_wire + f->length > wire_max) {
        fail(c, 1009, "message too big");
        return -1;
    }
    ws->msg_wire += f->length;
    return 0;
}

static int append(ol_ws_buf *b, const char *p, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* A piece of the current data frame's payload, unmasked. */
static int take_payload(ol_conn *c, char *p, size_t n, int last_of_message)
{
    ol_ws *ws = ws_of(c);
    int text = ws->msg_opcode == OL_WS_TEXT;
    if (ws->msg_compressed) {
        size_t before = ws->msg.len;
        int e =
            ol_ws_inflate(ws->zlib, p, n, last_of_message, c->server->cfg.ws_max_size, &ws->msg);
        if (e < 0) {
            fail_with(c, e);
            return -1;
        }
        if (text && ol_utf8_feed(&ws->utf8, ws->msg.data + before, ws->msg.len - before) < 0) {
            fail(c, 1007, "invalid UTF-8 in a text message");
            return -1;
        }
        return 0;
    }
    if (text && ol_utf8_feed(&ws->utf8, p, n) < 0) {
        fail(c, 1007, "invalid UTF-8 in a text message");
        return -1;
    }
    if (append(&ws->msg, p, n) < 0) {
        fail(c, 1011, "out of memory");
        return -1;
    }
    return 0;
}

static int end_message(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    int text = ws->msg_opcode == OL_WS_TEXT;
    if (text && ol_utf8_finish(&ws->utf8) < 0) {
        fail(c, 1007, "invalid UTF-8 in a text message");
        return -1;
    }
    int r = deliver(c, text, ws->msg.data ? ws->msg.data : "", ws->msg.len);
    reset_message(ws);
    return r;
}

/* The whole frame is in the buffer, unfragmented and uncompressed: handed
 * over from the buffer itself. */
static int whole_message(ol_conn *c, const ol_ws_frame *f, char *payload)
{
    ol_ws *ws = ws_of(c);
    size_t len = (size_t)f->length;
    ol_ws_unmask(payload, len, f->mask, 0);
    int text = f->opcode == OL_WS_TEXT;
    if (text) {
        ol_utf8_init(&ws->utf8);
        if (ol_utf8_feed(&ws->utf8, payload, len) < 0 || ol_utf8_finish(&ws->utf8) < 0) {
            fail(c, 1007, "invalid UTF-8 in a text message");
            return -1;
        }
    }
    int r = deliver(c, text, payload, len);
    ws->msg_opcode = 0;
    ws->msg_wire = 0;
    return r;
}

/* Parse the next frame header; 1 to go on, 0 for more input, -1 when the
 * connection closes. */
static int next_frame(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    ol_ws_frame f;
    unsigned flags = (ws->zlib ? OL_WS_DEFLATE : 0u) | (ws->msg_opcode ? OL_WS_IN_MESSAGE : 0u);
    int n = ol_ws_parse_header(c->rbuf, c->rlen, flags, &f);
    if (n == OL_INCOMPLETE)
        return 0;
    if (n < 0) {
        fail_with(c, n);
        return -1;
    }
    if (f.opcode >= OL_WS_CLOSE) {
        if (c->rlen - (size_t)n < f.length)
            return 0; /* control frames (<= 125 bytes) are taken whole */
        char *payload = c->rbuf + n;
        int e = on_control(c, &f, payload);
        if (e < 0)
            return -1;
        ol_conn_consume(c, (size_t)n + (size_t)f.length);
        return 1;
    }
    if (begin_data_frame(c, &f) < 0)
        return -1;
    if (f.opcode != OL_WS_CONT && f.fin && !f.rsv1 && c->rlen - (size_t)n >= f.length) {
        int e = whole_message(c, &f, c->rbuf + n);
        if (e < 0)
            return -1;
        ol_conn_consume(c, (size_t)n + (size_t)f.length);
        return 1;
    }
    ol_conn_consume(c, (size_t)n);
    ws->frame = f;
    ws->frame_read = 0;
    ws->in_frame = 1;
    return 1;
}

/* Take what the buffer holds of the current data frame's payload. */
static int frame_payload(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    uint64_t left = ws->frame.length - ws->frame_read;
    size_t n = c->rlen < left ? c->rlen : (size_t)left;
    if (n == 0 && left > 0)
        return 0;
    ol_ws_unmask(c->rbuf, n, ws->frame.mask, ws->frame_read);
    int last = ws->frame.fin && n == left;
    if (take_payload(c, c->rbuf, n, last) < 0)
        return -1;
    ol_conn_consume(c, n);
    ws->frame_read += n;
    if (ws->frame_read < ws->frame.length)
        return 0;
    ws->in_frame = 0;
    if (!ws->frame.fin)
        return 1;
    return end_message(c) < 0 ? -1 : 1;
}

static void ws_process(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    /* A frame with an empty payload completes with no byte left over. */
    while (!(c->flags & CONN_CLOSING) && !ws->paused && (c->rlen > 0 || ws->in_frame)) {
        int r = ws->in_frame ? frame_payload(c) : next_frame(c);
        if (r <= 0)
            break;
    }
    if (c->flags & CONN_CLOSED)
        return;
    if (c->rlen == 0 && !ws->in_frame)
        ol_conn_release_idle_buffers(c);
    int reading = !ws->paused && !(c->flags & CONN_CLOSING);
    c->flags = reading ? (c->flags | CONN_READING) : (c->flags & ~CONN_READING);
    ol_conn_update_events(c);
}

void ol_ws_resume(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    if (ws == NULL || !ws->paused || (c->flags & CONN_CLOSED))
        return;
    ws->paused = 0;
    c->flags |= CONN_READING;
    ol_conn_update_events(c);
    if (c->rlen > 0)
        ol_conn_schedule(c); /* what was buffered meanwhile, on the next loop turn */
}

/* ------------------------------------------------------------------------ */
/* The transport's callbacks                                                */

static void ws_on_eof(ol_conn *c, int clean)
{
    (void)clean;
    c->flags |= CONN_PEER_CLOSED;
    tell_closed(c, 1006, "", 0);
    ol_conn_abort(c);
}

static void ws_on_drained(ol_conn *c)
{
    if (c->request != NULL)
        c->server->handler->on_drain(c->request);
}

static void ws_on_close(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    tell_closed(c, 1006, "", 0);
    ol_req *r = c->request;
    if (r != NULL) {
        r->flags |= REQ_DISCONNECTED;
        c->request = NULL;
        r->sent = ws != NULL ? ws->bytes_out : 0;
        c->server->handler->ws_end(r); /* takes the reference */
    }
    if (c->server->handler->on_close != NULL)
        c->server->handler->on_close(c);
    if (ws != NULL) {
        ol_ws_deflate_free(ws->zlib);
        free(ws->msg.data);
        free(ws);
        c->ws = NULL;
    }
}

/* The deadline runs while keepalive pings are on, or a close waits. */
static int ws_waiting(const ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    return ws->state == WS_CLOSE_SENT || c->server->cfg.ws_ping_interval > 0;
}

static void ws_on_timeout(ol_conn *c)
{
    ol_ws *ws = ws_of(c);
    if (ws->state != WS_OPEN) {
        ol_log_debug(c->server, "WebSocket closing handshake not answered in time");
        tell_closed(c, 1006, "", 0);
        ol_conn_abort(c);
    } else if (ws->ping_outstanding) {
        ol_log_debug(c->server, "WebSocket keepalive ping not answered in time");
        ws->state = WS_CLOSE_SENT;
        send_close_frame(c, 1011, "keepalive ping timeout", 22);
        tell_closed(c, 1011, "keepalive ping timeout", 22);
        ol_conn_abort(c);
    } else {
        send_ping(c);
    }
}

const ol_proto ol_ws_protocol = {
    .name = "websocket",
    .on_data = ws_process,
    .on_eof = ws_on_eof,
    .on_drained = ws_on_drained,
    .on_close = ws_on_close,
    .waiting = ws_waiting,
    .on_timeout = ws_on_timeout,
};
