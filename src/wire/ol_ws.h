/*
 * ol_ws.h -- oneloop's WebSocket wire layer: RFC 6455 frames and handshake,
 * RFC 7692 permessage-deflate.
 *
 * The server side of the protocol, as pieces a connection drives itself:
 * frame headers, unmasking, UTF-8 validation of text across frames, close
 * payloads, the opening handshake (Sec-WebSocket-Accept and the extension
 * negotiation), and compression. Pure C11 with no Python.h, in the same
 * static library as ol_http.h.
 *
 * Conventions
 *
 *   - ws.c (everything but compression) allocates nothing and keeps no
 *     global state: it works on the caller's buffers and returns spans into
 *     them. Only the compression (ws_deflate.c) allocates: its zlib streams
 *     and the output buffers it grows. It is the one part of the wire layer
 *     that links a library beyond libc, the system zlib (-lz).
 *   - Functions return a non-negative count or a negative code: OL_INCOMPLETE
 *     ("give me more bytes"), one of the OL_WS_E* codes below, or for the
 *     serializers OL_ENOSPACE. OL_WS_E* codes never collide with the OL_E*
 *     codes of ol_http.h.
 *   - Strict: everything RFC 6455 says a server must fail the connection for
 *     is an error (reserved bits and opcodes, unmasked client frames, control
 *     frames that are long or fragmented, continuation frames out of place,
 *     invalid UTF-8 in text and close reasons, close codes not allowed on the
 *     wire). Errors are final: the caller sends a close frame with
 *     ol_ws_close_code_for(error) and closes the connection. Lengths need not
 *     use their minimal encoding (RFC 6455 asks senders for it; nothing can
 *     be framed two ways by ignoring it).
 *   - A frame's header is parsed only once complete in the buffer (at most 14
 *     bytes); its payload is the caller's to read, in whatever pieces arrive,
 *     unmasking each with the offset it starts at.
 */
#ifndef OL_WS_H
#define OL_WS_H

#include <stddef.h>
#include <stdint.h>

#include "ol_http.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Result codes                                                             */

enum {
    /* Frames: the connection is failed with close code 1002 unless noted. */
    OL_WS_ERSV = -40,                /* RSV1 without a compressed message to mark; RSV2, RSV3 */
    OL_WS_EOPCODE = -41,             /* reserved opcode (3-7, 11-15) */
    OL_WS_ECONTROL_LEN = -42,        /* control frame with a payload over 125 bytes */
    OL_WS_ECONTROL_FRAGMENTED = -43, /* control frame without FIN */
    OL_WS_EFRAGMENT = -44,           /* continuation with no message open, or a new data
                                        frame while a fragmented message is open */
    OL_WS_EUNMASKED = -45,           /* client frame without a mask */
    OL_WS_ELENGTH = -46,             /* 64-bit payload length with its top bit set */
    OL_WS_EUTF8 = -47,               /* text or close reason not UTF-8 (close code 1007) */
    OL_WS_ECLOSE_PAYLOAD = -48,      /* close payload of one byte */
    OL_WS_ECLOSE_CODE = -49,         /* close code not allowed on the wire */
    OL_WS_ETOO_BIG = -50,            /* message over the caller's limit (close code 1009) */
    OL_WS_EDEFLATE = -51,            /* corrupt compressed data */
    OL_WS_ENOMEM = -52,              /* out of memory while (de)compressing (close code 1011) */

    /* Opening handshake: answered with an HTTP status, ol_ws_error_status(). */
    OL_WS_EHANDSHAKE = -53, /* not a WebSocket upgrade: method, version, Upgrade (400) */
    OL_WS_EVERSION = -54,   /* Sec-WebSocket-Version missing, repeated or not 13 (426) */
    OL_WS_EKEY = -55,       /* Sec-WebSocket-Key missing, repeated or not 16 bytes (400) */
    OL_WS_EEXTENSION = -56, /* Sec-WebSocket-Extensions that does not parse (400) */

    OL_WS_ERROR_MAX = -40,
    OL_WS_ERROR_MIN = -56
};

/* A short English description of an OL_WS_E* code, or of any ol_http.h
 * code (then the same text as ol_strerror()). */
const char *ol_ws_strerror(int code);

/* The close code to fail the connection with after an error: 1007 for
 * OL_WS_EUTF8, 1009 for OL_WS_ETOO_BIG, 1011 for OL_WS_ENOMEM, 1002
 * (protocol error) for everything else. */
int ol_ws_close_code_for(int code);

/* The HTTP status to refuse an opening handshake with: 426 for
 * OL_WS_EVERSION (send "Sec-WebSocket-Version: 13" with it), 400 for the
 * other handshake codes, or ol_error_status() for the codes of ol_http.h. */
int ol_ws_error_status(int code);

/* ------------------------------------------------------------------------ */
/* Frames                                                                   */

enum ol_ws_opcode {
    OL_WS_CONT = 0x0,
    OL_WS_TEXT = 0x1,
    OL_WS_BINARY = 0x2,
    OL_WS_CLOSE = 0x8,
    OL_WS_PING = 0x9,
    OL_WS_PONG = 0xA
};

#define OL_WS_MAX_HEADER        14  /* client frame: 2 + 8 length + 4 mask */
#define OL_WS_MAX_SERVER_HEADER 10  /* server frame: no mask */
#define OL_WS_MAX_CONTROL       125 /* payload bytes of a control frame */

typedef struct ol_ws_frame {
    uint8_t fin, rsv1, opcode, masked;
    uint8_t mask[4];
    uint64_t length;   /* payload length, < 2^63 */
    size_t header_len; /* bytes of the header, 6..14 for a client frame */
} ol_ws_frame;

/* Flags of ol_ws_parse_header(), the state of the connection it needs. */
#define OL_WS_DEFLATE    0x1u /* permessage-deflate was negotiated */
#define OL_WS_IN_MESSAGE 0x2u /* a fragmented data message is open (its last frame had no FIN) */

/*
 * Parse the client frame header at the start of buf[0..len).
 *
 * Returns the header's length (f filled in; the payload, f->length bytes,
 * follows it), OL_INCOMPLETE, or an error, reported as soon as the bytes
 * prove it: in the first byte a reserved opcode (OL_WS_EOPCODE), a control
 * frame without FIN (OL_WS_ECONTROL_FRAGMENTED), a reserved bit
 * (OL_WS_ERSV), a frame out of sequence (OL_WS_EFRAGMENT); in the second a
 * missing mask (OL_WS_EUNMASKED), a control payload over 125
 * (OL_WS_ECONTROL_LEN); then a 64-bit length with its top bit set
 * (OL_WS_ELENGTH).
 *
 * RSV1 is allowed only with OL_WS_DEFLATE and only on a text or binary frame,
 * the first frame of a message, where it marks the message compressed
 * (RFC 7692 section 6.1); on a continuation or control frame it is an error.
 * OL_WS_IN_MESSAGE says whether a continuation or a new message is due;
 * control frames may come either way. f is unspecified unless the header is
 * complete and valid. The caller applies its own limit to f->length.
 */
int ol_ws_parse_header(const char *buf, size_t len, unsigned flags, ol_ws_frame *f);

/*
 * XOR data[0..len) in place with the mask, `offset` being how many payload
 * bytes of this frame came before data (a payload unmasked in pieces).
 * Unmasking twice with the same arguments restores the data. Any alignment.
 */
void ol_ws_unmask(char *data, size_t len, const uint8_t mask[4], uint64_t offset);

/*
 * Write the header of a server frame (never masked) into out. Returns its
 * length, 2, 4 or 10, or 0 when the arguments make no valid frame: an opcode
 * that is reserved, a control frame without FIN or longer than 125, RSV1 on
 * a control frame or a continuation, a length of 2^63 or more.
 */
size_t ol_ws_frame_header(char out[OL_WS_MAX_SERVER_HEADER], int fin, int rsv1, int opcode,
                          uint64_t length);

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */

/*
 * Incremental validation of one text message (or close reason), fed in any
 * pieces: frames, fragments of frames. It fails at the first byte that no
 * continuation could make valid (RFC 3629: an overlong lead C0/C1 or E0 80,
 * a surrogate ED A0, beyond U+10FFFF F4 90 or F5, a missing continuation
 * byte), in the piece that holds that byte; a sequence cut short by the end
 * of the text is found by ol_utf8_finish(). ASCII is checked 16 (or 8)
 * bytes at a time.
 */
typedef struct ol_utf8 {
    uint32_t state; /* private */
} ol_utf8;

void ol_utf8_init(ol_utf8 *u);
/* 0 while valid so far, else OL_WS_EUTF8 (also on every later call). */
int ol_utf8_feed(ol_utf8 *u, const char *p, size_t n);
/* 0 if the text fed so far is valid and ends on a character boundary, else
 * OL_WS_EUTF8. */
int ol_utf8_finish(const ol_utf8 *u);

/* ------------------------------------------------------------------------ */
/* Close frames                                                             */

#define OL_WS_CLOSE_NO_STATUS 1005 /* reported for an empty close payload; never sent */

/*
 * Parse a whole unmasked close payload p[0..n): empty (then *code is
 * OL_WS_CLOSE_NO_STATUS), or a 2-byte code and a UTF-8 reason, which is
 * returned as a span of p. Returns 0, OL_WS_ECLOSE_PAYLOAD (one byte),
 * OL_WS_ECONTROL_LEN (over 125), OL_WS_ECLOSE_CODE or OL_WS_EUTF8.
 */
int ol_ws_parse_close(const char *p, size_t n, int *code, const char **reason, size_t *reason_len);

/* 1 if a close frame may carry code, sent or received: 1000-1003, 1007-1014,
 * 3000-4999. Never 1004-1006 or 1015 (reserved for reporting), nor <1000,
 * 1016-2999, >=5000. */
int ol_ws_close_code_sendable(int code);

/*
 * Write a close payload: the code big-endian and the reason cut to fit 125
 * bytes on a character boundary (the reason is taken to be UTF-8; it is not
 * checked). Code OL_WS_CLOSE_NO_STATUS writes an empty payload. Returns the
 * length, or OL_WS_ECLOSE_CODE for a code that ol_ws_close_code_sendable()
 * refuses.
 */
int ol_ws_close_payload(char out[OL_WS_MAX_CONTROL], int code, const char *reason,
                        size_t reason_len);

/* ------------------------------------------------------------------------ */
/* Opening handshake                                                        */

#define OL_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/*
 * Check that a parsed request is a WebSocket opening handshake (RFC 6455
 * section 4.2.1): GET, HTTP/1.1 or later, Connection: upgrade and an Upgrade
 * list holding "websocket" (any case), exactly one Sec-WebSocket-Version,
 * 13, and exactly one valid Sec-WebSocket-Key, whose span is stored in *key.
 * Returns 0, OL_WS_EHANDSHAKE, OL_WS_EVERSION or OL_WS_EKEY.
 */
int ol_ws_check_request(const ol_request *req, ol_span *key);

/*
 * The Sec-WebSocket-Accept value for a Sec-WebSocket-Key: the key, with
 * surrounding SP/HTAB trimmed, must be 24 characters of base64 encoding 16
 * bytes. Writes OL_WS_ACCEPT_LEN bytes (no NUL); returns OL_WS_ACCEPT_LEN or
 * OL_WS_EKEY.
 */
int ol_ws_accept(const char *key, size_t key_len, char out[OL_WS_ACCEPT_LEN]);

/* ------------------------------------------------------------------------ */
/* permessage-deflate (RFC 7692)                                            */

/*
 * The parameters of permessage-deflate. A window of 0 means the parameter
 * is absent: that side uses 15 bits (32 KB).
 *
 * As the server's configuration (ol_ws_negotiate_deflate's `server`):
 *   server_no_context_takeover  1: always reset our compressor per message
 *   client_no_context_takeover  1: always ask the client to reset its own
 *   server_max_window_bits      our compressor's largest window, 9..15
 *                               (8 counts as 9: see below)
 *   client_max_window_bits      the client window we ask for, 8..15, when
 *                               the client offers to be limited
 *
 * As the result of a negotiation: what the response says, and what
 * ol_ws_deflate_new() sets the connection's streams up with.
 */
typedef struct ol_ws_deflate_params {
    uint8_t server_no_context_takeover, client_no_context_takeover;
    uint8_t server_max_window_bits, client_max_window_bits;
} ol_ws_deflate_params;

/*
 * Choose from the permessage-deflate offers in one Sec-WebSocket-Extensions
 * field value (RFC 7692 sections 5 and 7.1). Call it for each such field
 * line in order, stopping at the first that accepts.
 *
 * The value is a comma-separated list of offers, each a token and
 * ";"-separated parameters, "name" or "name=value" with a token or
 * quoted-string value, whitespace allowed around the separators; extension
 * names and parameter names are compared case-insensitively. Offers of other
 * extensions are skipped. A permessage-deflate offer is declined (and the
 * next considered) if a parameter is unknown, repeated, or has a bad value:
 * a value on a *_no_context_takeover, no value or anything but 8..15 (no
 * leading zeros, quoted or not) on server_max_window_bits, a value outside
 * 8..15 on client_max_window_bits.
 *
 * It is also declined when it asks for server_max_window_bits=8: zlib cannot
 * compress raw deflate with a 256-byte window (it refuses, or silently uses
 * 512 bytes), and the response may not grant more than the offer asked.
 * Accepting an offer, the response grants the smaller of the offer's and the
 * server's windows, adds server_max_window_bits when the server's own is
 * smaller than 15 even if not asked, client_max_window_bits only when the
 * client offered it, and each *_no_context_takeover that either side wants.
 *
 * `server` may be NULL: all absent. Returns 1 (accepted, *out filled in), 0
 * (no acceptable offer), or OL_WS_EEXTENSION if the value does not parse,
 * even after an acceptable offer.
 */
int ol_ws_negotiate_deflate(const char *value, size_t len, const ol_ws_deflate_params *server,
                            ol_ws_deflate_params *out);

/* Write the response's extension value for negotiated parameters:
 * "permessage-deflate" followed by each parameter present ("; name[=N]").
 * Returns its length (no NUL) or OL_ENOSPACE. 128 bytes are always enough. */
int ol_ws_deflate_response(const ol_ws_deflate_params *p, char *out, size_t cap);

/* The compression state of one connection: an inflater for the client's
 * messages, a compressor for ours, each set up when first used. */
typedef struct ol_ws_deflate ol_ws_deflate;

/* For negotiated parameters (NULL: all absent) and a zlib level (-1 for
 * zlib's default, 0..9). NULL when out of memory. */
ol_ws_deflate *ol_ws_deflate_new(const ol_ws_deflate_params *p, int level);
void ol_ws_deflate_free(ol_ws_deflate *d);

/* A byte buffer that the (de)compressor appends to, growing data with
 * realloc. Start it zeroed; the caller frees data. */
typedef struct ol_ws_buf {
    char *data;
    size_t len, cap;
} ol_ws_buf;

/*
 * Inflate the next piece in[0..n) of a compressed message's payload
 * (unmasked), appending the output to out; fin=1 with the last piece (n may
 * be 0), which ends the message: the 00 00 FF FF tail of RFC 7692 section
 * 7.2.2 is fed, the data must end on a block boundary (or with a final
 * block), and with client_no_context_takeover the window is dropped. An
 * empty payload is an empty message. Blocks may follow a final block
 * (BFINAL, section 7.2.3.4); the window carries on past it.
 *
 * `max` bounds the message's total output: once it would pass max the call
 * returns OL_WS_ETOO_BIG having produced at most max + 1 bytes of it in all,
 * so out never grows by more than that whatever the ratio (a deflate bomb
 * costs max bytes). Returns 0, OL_WS_ETOO_BIG, OL_WS_EDEFLATE (corrupt data,
 * or a reference beyond the negotiated window) or OL_WS_ENOMEM. After an
 * error the inflater is dead: later calls return the same error.
 *
 * The inflater keeps a window of the client's negotiated size (the memory
 * client_max_window_bits saves). zlib resolves a reference from output of
 * the same call even beyond that window, so a client that overreaches its
 * window is refused or not depending on how its data arrives; when it is
 * not, the output is still right.
 */
int ol_ws_inflate(ol_ws_deflate *d, const char *in, size_t n, int fin, size_t max, ol_ws_buf *out);

/*
 * Compress one whole message, appending the payload to out: DEFLATE blocks
 * ending in a sync flush, without its 00 00 FF FF (RFC 7692 section
 * 7.2.1); the caller sends it with RSV1 on the first frame. With
 * server_no_context_takeover the compressor starts afresh for each message.
 * Returns 0, OL_WS_ENOMEM, or OL_WS_EDEFLATE should zlib report its state
 * inconsistent (never expected).
 */
int ol_ws_deflate_message(ol_ws_deflate *d, const char *in, size_t n, ol_ws_buf *out);

#ifdef __cplusplus
}
#endif
#endif /* OL_WS_H */
