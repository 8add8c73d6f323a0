/*
 * test_request.c -- the request-head parser, one row per rule.
 *
 * Each row is a complete input, the expected result, and for accepted heads
 * the parse rendered as one line:
 *
 *   METHOD TARGET VERSION framing [flags] [host=..] [upgrade=..] | Name: value | ...
 *
 * Every row runs whole, split in two at every byte boundary and fed a byte
 * at a time, each call on a copy that ends at a guard page. A split run must
 * end exactly like the whole run, and every call before the last must say
 * OL_INCOMPLETE or give that same error early.
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/wire/chars.h"
#include "stream.h"

#define OK           0
#define LIMITS_SMALL 1 /* request line 32, field 32, 4 fields, head 128 */

/* A row; sizeof keeps bytes after an embedded NUL. */
#define R(input, ...)                                                                              \
    {                                                                                              \
        input, sizeof(input) - 1, __VA_ARGS__                                                      \
    }

typedef struct row {
    const char *input;
    size_t len;
    int result; /* OK or an OL_E* code */
    const char *render;
    int limits;
    const char *why;
} row;

/* clang-format off */
static const row rows[] = {
    /* Accepted heads. */
    R("GET / HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a", 0, "minimal HTTP/1.1"),
    R("GET / HTTP/1.0\r\n\r\n", OK, "GET / 1.0 none", 0, "HTTP/1.0 closes by default, needs no Host"),
    R("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", OK,
     "GET / 1.0 none keep-alive | Connection: Keep-Alive", 0, "1.0 keep-alive, any case"),
    R("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", OK,
     "GET / 1.0 none | Connection: keep-alive, close", 0, "close wins"),
    R("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", OK,
     "GET / 1.1 none host=a | Host: a | Connection: close", 0, "1.1 close"),
    R("GET / HTTP/1.2\r\nHost: a\r\n\r\n", OK,
     "GET / 1.2 none keep-alive host=a | Host: a", 0, "1.x is processed as 1.1 (RFC 9110 2.5)"),
    R("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a", 0, "empty lines before the request line"),
    R("GET http://example.com:8080/a?b=c#d HTTP/1.1\r\nHost: example.com\r\n\r\n", OK,
     "GET http://example.com:8080/a?b=c#d 1.1 none keep-alive host=example.com | Host: example.com",
     0, "absolute-form target"),
    R("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "OPTIONS * 1.1 none keep-alive host=a | Host: a", 0, "asterisk-form"),
    R("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", OK,
     "CONNECT example.com:443 1.1 none keep-alive connect host=example.com:443 | Host: example.com:443",
     0, "authority-form"),
    R("GET /\r\n", OK, "GET / 0.9 none simple", 0, "HTTP/0.9 simple request"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\n", OK,
     "POST / 1.1 length=5 keep-alive host=a | Host: a | Content-Length: 0005", 0,
     "leading zeros"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t7 \t\r\n\r\n", OK,
     "POST / 1.1 length=7 keep-alive host=a | Host: a | Content-Length: 7", 0,
     "whitespace around the value is not part of it"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", OK,
     "POST / 1.1 length=9223372036854775807 keep-alive host=a | Host: a | Content-Length: "
     "9223372036854775807", 0, "largest Content-Length"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", OK,
     "POST / 1.1 chunked keep-alive host=a | Host: a | Transfer-Encoding: chunked", 0, "chunked"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", OK,
     "POST / 1.1 chunked keep-alive host=a | Host: a | Transfer-Encoding: CHUNKED", 0,
     "coding names are case-insensitive"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level=\"9\" , chunked\r\n\r\n", OK,
     "POST / 1.1 chunked keep-alive te-other host=a | Host: a | Transfer-Encoding: gzip;level=\"9\" , chunked",
     0, "a coding before chunked, with a parameter"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: ,chunked,\r\n\r\n", OK,
     "POST / 1.1 chunked keep-alive te-other host=a | Host: a | Transfer-Encoding: gzip | "
     "Transfer-Encoding: ,chunked,", 0, "codings across fields; empty list elements"),
    R("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", OK,
     "PUT /x 1.1 length=1 keep-alive continue host=a | Host: a | Expect: 100-Continue | "
     "Content-Length: 1", 0, "Expect: 100-continue"),
    R("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", OK,
     "GET /ws 1.1 none keep-alive upgrade host=a upgrade=websocket | Host: a | Connection: keep-alive, "
     "Upgrade | Upgrade: websocket", 0, "upgrade needs both fields"),
    R("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a upgrade=websocket | Host: a | Upgrade: websocket", 0,
     "Upgrade without Connection: upgrade is no upgrade"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab: a\tb\r\nX-Obs: \xe4\xff\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a | X-Empty:  | X-Tab: a\tb | X-Obs: \xe4\xff", 0,
     "empty value, HTAB and obs-text in values"),
    R("GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a | !#$%&'*+-.^_`|~09azAZ: v", 0,
     "every tchar in a name"),
    R("M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "M-SEARCH / 1.1 none keep-alive host=a | Host: a", 0, "extension method"),
    R("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "asterisk-form is for OPTIONS only (SSDP's M-SEARCH * is HTTP over UDP)"),
    R("GET /a HTTP/1.1\r\nHost: a\r\nX: 1\r\nX: 2\r\n\r\n", OK,
     "GET /a 1.1 none keep-alive host=a | Host: a | X: 1 | X: 2", 0, "repeated fields kept in order"),

    /* Request line. */
    R("get / HTTP/1.1\r\nHost: a\r\n\r\n", OK, "get / 1.1 none keep-alive host=a | Host: a", 0,
     "methods are case-sensitive: get is not GET, but a token, so a method"),
    R("FOO / HTTP/1.1\r\nHost: a\r\n\r\n", OK, "FOO / 1.1 none keep-alive host=a | Host: a", 0,
     "any token is a method (RFC 9110 9.1): the app decides"),
    R("-BLARGH / HTTP/1.1\r\nHost: a\r\n\r\n", OK, "-BLARGH / 1.1 none keep-alive host=a | Host: a",
     0, "a method need not start with a letter"),
    R("FOO_BAR / HTTP/1.1\r\nHost: a\r\n\r\n", OK, "FOO_BAR / 1.1 none keep-alive host=a | Host: a",
     0, "underscore is a tchar"),
    R("ANNOUNCE / HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "ANNOUNCE / 1.1 none keep-alive host=a | Host: a", 0, "RTSP's methods are tokens too over HTTP"),
    R("FOO / RTSP/1.0\r\n\r\n", OL_EPROTOCOL, NULL, 0, "RTSP takes only its own methods"),

    /* Request-target form per method (RFC 9112 3.2). */
    R("GET * HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "asterisk-form only with OPTIONS"),
    R("GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "authority-form only with CONNECT"),
    R("GET foo/bar HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "relative reference"),
    R("GET ?a HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "query without a path"),
    R("GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "a scheme starts with a letter"),
    R("GET http:/a HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "absolute-form needs an authority"),
    R("PUT s://]ufd/: HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "absolute-form with a host that is no host (gunicorn invalid/016)"),
    R("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "absolute-form with an empty host (RFC 9110 4.2.1)"),
    R("GET http://a:8x/ HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "port is digits"),
    R("GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n", OL_EPROTOCOL, NULL, 0, "space ends the target"),
    R("GET http://u:p@[::1]:80?q HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "GET http://u:p@[::1]:80?q 1.1 none keep-alive host=a | Host: a", 0,
     "userinfo, IP literal, port, query"),
    R("GET http://a.example:/x#f HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "GET http://a.example:/x#f 1.1 none keep-alive host=a | Host: a", 0,
     "empty port (RFC 3986 allows it) and a fragment"),
    R("GET https://a.example/x HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "GET https://a.example/x 1.1 none keep-alive host=a | Host: a", 0, "absolute-form, https"),
    R("OPTIONS http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "OPTIONS http://a/ 1.1 none keep-alive host=a | Host: a", 0, "OPTIONS with absolute-form"),
    R("OPTIONS ** HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "asterisk-form is one *"),
    R("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "CONNECT with origin-form"),
    R("CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "CONNECT with asterisk-form"),
    R("CONNECT http://a:1/ HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "CONNECT with absolute-form"),
    R("CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "CONNECT needs a port"),
    R("CONNECT a: HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "CONNECT with an empty port"),
    R("CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "CONNECT with no host"),
    R("CONNECT a:44x HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "port is digits"),
    R("CONNECT u@a:443 HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "no userinfo"),
    R("CONNECT a:1:2 HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "one colon outside []"),
    R("CONNECT [::1 HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0, "unclosed IP-literal"),
    R("CONNECT [::1]443 HTTP/1.1\r\nHost: a\r\n\r\n", OL_ETARGET, NULL, 0,
     "IP-literal then no colon"),
    R("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", OK,
     "CONNECT [::1]:443 1.1 none keep-alive connect host=[::1]:443 | Host: [::1]:443", 0,
     "CONNECT to an IPv6 literal"),
    R("GE(T / HTTP/1.1\r\n\r\n", OL_EMETHOD, NULL, 0, "method not a token"),
    R(" GET / HTTP/1.1\r\n\r\n", OL_EMETHOD, NULL, 0, "empty method"),
    R("GET\t/ HTTP/1.1\r\n\r\n", OL_EMETHOD, NULL, 0, "HTAB is not SP"),
    R("GET  / HTTP/1.1\r\n\r\n", OL_ETARGET, NULL, 0, "two spaces"),
    R("GET /a\x01 HTTP/1.1\r\n\r\n", OL_ETARGET, NULL, 0, "control byte in target"),
    R("GET /\xc3\xa4 HTTP/1.1\r\n\r\n", OL_ETARGET, NULL, 0, "raw UTF-8 in target"),
    R("GET /a\x7f HTTP/1.1\r\n\r\n", OL_ETARGET, NULL, 0, "DEL in target"),
    R("GET /a b HTTP/1.1\r\n\r\n", OL_EPROTOCOL, NULL, 0, "space in target"),
    R("GET / http/1.1\r\n\r\n", OL_EPROTOCOL, NULL, 0, "protocol name is case-sensitive"),
    R("GET / HTTP/1.1 \r\n\r\n", OL_EVERSION, NULL, 0, "space after version"),
    R("GET / HTTP/1.10\r\n\r\n", OL_EVERSION, NULL, 0, "two-digit minor"),
    R("GET / HTTP/1\r\n\r\n", OL_EVERSION, NULL, 0, "no minor"),
    R("GET / HTTP/x.1\r\n\r\n", OL_EVERSION, NULL, 0, "letter as major"),
    R("GET / HTTP/2.0\r\n\r\n", OL_EVERSION_UNSUPPORTED, NULL, 0, "HTTP/2 over HTTP/1 framing: 505"),
    R("GET / HTTP/0.9\r\n\r\n", OL_EVERSION_UNSUPPORTED, NULL, 0, "explicit 0.9"),
    R("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", OL_EVERSION_UNSUPPORTED, NULL, 0, "HTTP/2 preface"),
    R("PRI * HTTP/1.1\r\n\r\n", OL_EVERSION_UNSUPPORTED, NULL, 0, "PRI method"),
    R("POST /\r\n", OL_EVERSION, NULL, 0, "HTTP/0.9 allows only GET"),
    R("GET a\r\n", OL_ETARGET, NULL, 0, "HTTP/0.9 target in origin- or absolute-form too"),
    R("GET http://a/\r\n", OK, "GET http://a/ 0.9 none simple", 0, "HTTP/0.9 with absolute-form"),
    R("GET / HTTP/1.1\n\n", OL_ELINE, NULL, 0, "bare LF after request line"),
    R("GET / HTTP/1.1\rX\r\n\r\n", OL_ELINE, NULL, 0, "bare CR after request line"),
    R("GET /\rX", OL_ELINE, NULL, 0, "bare CR after HTTP/0.9 target"),
    R("\nGET / HTTP/1.1\r\n\r\n", OL_ELINE, NULL, 0, "bare LF as leading empty line"),
    R("\rGET / HTTP/1.1\r\n\r\n", OL_ELINE, NULL, 0, "bare CR as leading empty line"),
    R("GET / RTSP/1.0\r\n\r\n", OK, "GET / 1.0 none", 0, "RTSP is parsed (a server answers 505)"),
    R("PUT / RTSP/1.0\r\n\r\n", OL_EPROTOCOL, NULL, 0, "method not in RTSP"),

    /* Field lines. */
    R("GET / HTTP/1.1\r\nHost : a\r\n\r\n", OL_EFIELD_NAME, NULL, 0, "space before colon"),
    R("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", OL_EFIELD_NAME, NULL, 0, "tab before colon"),
    R("GET / HTTP/1.1\r\n: a\r\n\r\n", OL_EFIELD_NAME, NULL, 0, "empty name"),
    R("GET / HTTP/1.1\r\nX(y): a\r\n\r\n", OL_EFIELD_NAME, NULL, 0, "separator in name"),
    R("GET / HTTP/1.1\r\nX\x80: a\r\n\r\n", OL_EFIELD_NAME, NULL, 0, "non-ASCII in name"),
    R("GET / HTTP/1.1\r\nNoColon\r\n\r\n", OL_EFIELD_NAME, NULL, 0, "line without colon"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\x00" "b\r\n\r\n", OL_EFIELD_VALUE, NULL, 0, "NUL in value"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", OL_EFIELD_VALUE, NULL, 0, "CTL in value"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", OL_EFIELD_VALUE, NULL, 0, "DEL in value"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: plain\x07injected\r\n\r\n", OL_EFIELD_VALUE, NULL, 0,
     "BEL in value: not field-vchar"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[31m\r\n\r\n", OL_EFIELD_VALUE, NULL, 0,
     "ESC in value (terminal escapes in logs)"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\x0b" "b\r\n\r\n", OL_EFIELD_VALUE, NULL, 0, "VT in value"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", OL_ELINE, NULL, 0, "bare CR in value"),
    R("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", OL_ELINE, NULL, 0, "field ended by bare LF"),
    R("GET / HTTP/1.1\r\nHost: a\r\n\n", OL_ELINE, NULL, 0, "head ended by bare LF"),
    R("GET / HTTP/1.1\r\nHost: a\r\n\rX", OL_ELINE, NULL, 0, "head ended by CR and junk"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", OL_EOBS_FOLD, NULL, 0, "obs-fold with SP"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", OL_EOBS_FOLD, NULL, 0, "obs-fold with HTAB"),
    R("GET / HTTP/1.1\r\n Host: a\r\n\r\n", OL_EOBS_FOLD, NULL, 0,
     "whitespace between start line and first field"),

    /* Host. */
    R("GET / HTTP/1.1\r\n\r\n", OL_EHOST, NULL, 0, "HTTP/1.1 without Host"),
    R("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", OL_EHOST, NULL, 0, "two Host fields"),
    R("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", OL_EHOST, NULL, 0, "two Host fields in 1.0"),

    /* Content-Length. */
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
     OL_ECONTENT_LENGTH_DUP, NULL, 0, "duplicate Content-Length, even equal"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", OL_ECONTENT_LENGTH, NULL, 0,
     "list in Content-Length"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", OL_ECONTENT_LENGTH, NULL, 0, "sign"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", OL_ECONTENT_LENGTH, NULL, 0,
     "negative"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", OL_ECONTENT_LENGTH, NULL, 0, "hex"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", OL_ECONTENT_LENGTH, NULL, 0,
     "space between digits"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", OL_ECONTENT_LENGTH, NULL, 0, "empty"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n",
     OL_ECONTENT_LENGTH_OVERFLOW, NULL, 0, "2^63"),
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     OL_ECONTENT_LENGTH_OVERFLOW, NULL, 0, "far beyond 2^64"),

    /* Transfer-Encoding. */
    R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     OL_ECL_AND_TE, NULL, 0, "CL then TE"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     OL_ECL_AND_TE, NULL, 0, "TE then CL"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
     OL_ETRANSFER_ENCODING, NULL, 0, "chunked not final"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     OL_ETRANSFER_ENCODING, NULL, 0, "chunked twice"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", OL_ETRANSFER_ENCODING, NULL, 0,
     "no chunked: length unknowable"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", OL_ETRANSFER_ENCODING,
     NULL, 0, "chunked must be the whole token"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;a=b\r\n\r\n", OL_ETRANSFER_ENCODING,
     NULL, 0, "chunked takes no parameters"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", OL_ETRANSFER_ENCODING, NULL, 0,
     "empty Transfer-Encoding"),
    R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", OL_ETRANSFER_ENCODING,
     NULL, 0, "quoted coding"),
    R("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", OL_ETRANSFER_ENCODING, NULL, 0,
     "Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1)"),

    /* Limits (LIMITS_SMALL: line 32, field 32, 4 fields, head 128). */
    R("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", OK,
     "GET /aaaaaaaaaaaaaaaaaa 1.1 none keep-alive host=a | Host: a", LIMITS_SMALL,
     "request line of exactly 32"),
    R("GET /aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", OL_EURI_TOO_LONG, NULL,
     LIMITS_SMALL, "request line of 33"),
    R("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", OL_EURI_TOO_LONG, NULL,
     LIMITS_SMALL, "over-long line that has not ended yet"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: 12345678901234567890123456789\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a | X: 12345678901234567890123456789", LIMITS_SMALL,
     "field of exactly 32"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: 123456789012345678901234567890\r\n\r\n", OL_EHEADERS_TOO_LARGE,
     NULL, LIMITS_SMALL, "field of 33"),
    R("GET / HTTP/1.1\r\nHost: a\r\nX: 12345678901234567890123456789012345", OL_EHEADERS_TOO_LARGE,
     NULL, LIMITS_SMALL, "over-long field that has not ended yet"),
    R("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a | A: 1 | B: 2 | C: 3", LIMITS_SMALL, "4 fields"),
    R("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", OL_ETOO_MANY_HEADERS, NULL,
     LIMITS_SMALL, "5 fields"),
    R("GET / HTTP/1.1\r\nHost: a\r\nA: 11111111111111111111111111111\r\nA: 11111111111111111111111111111\r\nB: 1111111111111111111111111111\r\n\r\n", OK,
     "GET / 1.1 none keep-alive host=a | Host: a | A: 11111111111111111111111111111 | A: 11111111111111111111111111111 | B: 1111111111111111111111111111", LIMITS_SMALL, "head of 128"),
    R("GET / HTTP/1.1\r\nHost: a\r\nA: 11111111111111111111111111111\r\nA: 11111111111111111111111111111\r\nB: 11111111111111111111111111111\r\n\r\n", OL_EHEADERS_TOO_LARGE, NULL,
     LIMITS_SMALL, "head of 129"),
    R("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
     OL_EHEADERS_TOO_LARGE, NULL, LIMITS_SMALL, "endless empty lines count against the head"),
};
/* clang-format on */

static void small_limits(ol_limits *l)
{
    ol_limits_default(l);
    l->max_request_line = 32;
    l->max_field_size = 32;
    l->max_fields = 4;
    l->max_head_size = 128;
}

static void render(bytes *b, const ol_request *r)
{
    static const char *framing[] = {"none", "chunked", "length"};
    bytes_clear(b);
    bytes_put(b, r->method.base, r->method.len);
    bytes_puts(b, " ");
    bytes_put(b, r->target.base, r->target.len);
    bytes_printf(b, " %d.%d ", r->version_major, r->version_minor);
    if (r->framing == OL_BODY_LENGTH)
        bytes_printf(b, "length=%llu", (unsigned long long)r->content_length);
    else
        bytes_puts(b, framing[r->framing == OL_BODY_CHUNKED]);
    static const struct {
        unsigned flag;
        const char *name;
    } flags[] = {{OL_REQ_KEEP_ALIVE, "keep-alive"}, {OL_REQ_UPGRADE, "upgrade"},
                 {OL_REQ_CONNECT, "connect"},       {OL_REQ_EXPECT_CONTINUE, "continue"},
                 {OL_REQ_TE_OTHER, "te-other"},     {OL_REQ_SIMPLE, "simple"}};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (r->flags & flags[i].flag)
            bytes_printf(b, " %s", flags[i].name);
    if (r->host.len) {
        bytes_puts(b, " host=");
        bytes_put(b, r->host.base, r->host.len);
    }
    if (r->upgrade.len) {
        bytes_puts(b, " upgrade=");
        bytes_put(b, r->upgrade.base, r->upgrade.len);
    }
    for (size_t i = 0; i < r->num_headers; i++) {
        bytes_puts(b, " | ");
        bytes_put(b, r->headers[i].name.base, r->headers[i].name.len);
        bytes_puts(b, ": ");
        bytes_put(b, r->headers[i].value.base, r->headers[i].value.len);
    }
}

typedef struct run {
    int result; /* head length or error of the final call */
    int early;  /* an earlier call returned something other than OL_INCOMPLETE */
    bytes text; /* rendering on success */
} run;

/* Feed input[0..len) in pieces ending at each split point, then whole. */
static void parse_in_pieces(run *out, guard_buf *g, const char *input, size_t len,
                            const size_t *splits, size_t nsplits, const ol_limits *limits)
{
    ol_header headers[64];
    ol_request req = {.headers = headers};
    ol_parser ps;
    ol_parser_init(&ps);
    out->early = 0;
    for (size_t i = 0; i <= nsplits; i++) {
        size_t n = i < nsplits ? splits[i] : len;
        const char *buf = guard_place(g, input, n);
        int r = ol_parse_request(&ps, buf, n, &req, limits);
        if (i < nsplits && r != OL_INCOMPLETE) {
            out->early = 1;
            out->result = r;
            return;
        }
        out->result = r;
        if (r >= 0)
            render(&out->text, &req);
    }
}

static int same_run(const run *a, const run *b, int whole_result)
{
    if (b->early) /* an early answer must be the same error */
        return b->result == whole_result && whole_result < 0;
    return a->result == b->result && (a->result < 0 || bytes_eq(&a->text, b->text.p, b->text.len));
}

static void check_row(const row *r, guard_buf *g)
{
    ol_limits limits;
    if (r->limits == LIMITS_SMALL)
        small_limits(&limits);
    else
        ol_limits_default(&limits);
    size_t len = r->len;

    run whole = {0};
    parse_in_pieces(&whole, g, r->input, len, NULL, 0, &limits);
    int want = r->result == OK ? (int)len : r->result;
    CHECK(whole.result == want, "%s: result %d (%s), want %d", r->why, whole.result,
          whole.result < 0 ? ol_strerror(whole.result) : "ok", want);
    if (r->result == OK && whole.result >= 0)
        CHECK(bytes_eq(&whole.text, r->render, strlen(r->render)), "%s: got\n  %s\nwant\n  %s",
              r->why, whole.text.p, r->render);

    size_t *splits = malloc(len * sizeof(size_t));
    for (size_t s = 1; s < len; s++) {
        run part = {0};
        parse_in_pieces(&part, g, r->input, len, &s, 1, &limits);
        CHECK(same_run(&whole, &part, whole.result), "%s: split at %zu gives %d", r->why, s,
              part.result);
        bytes_free(&part.text);
        splits[s - 1] = s;
    }
    run bytewise = {0};
    parse_in_pieces(&bytewise, g, r->input, len, splits, len ? len - 1 : 0, &limits);
    CHECK(same_run(&whole, &bytewise, whole.result), "%s: byte at a time gives %d", r->why,
          bytewise.result);
    free(splits);
    bytes_free(&bytewise.text);
    bytes_free(&whole.text);
}

/* The byte classes agree with their RFC definitions. */
static void check_classes(void)
{
    const char *tchar =
        "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int c = 0; c < 256; c++) {
        int token = c != 0 && strchr(tchar, c) != NULL;
        int target = c >= 0x21 && c <= 0x7e;
        int value = c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80;
        CHECK(ol__is((unsigned char)c, OL__TOKEN) == token, "token class of 0x%02x", c);
        CHECK(ol__is((unsigned char)c, OL__TARGET) == target, "target class of 0x%02x", c);
        CHECK(ol__is((unsigned char)c, OL__VALUE) == value, "value class of 0x%02x", c);
    }
}

/* A head that trickles in resumes where it stopped, even if the caller
 * moved its buffer between calls. */
static void check_resume_after_move(void)
{
    const char *input = "GET /moved HTTP/1.1\r\nHost: a\r\nX-Long: abcdef\r\n\r\n";
    size_t len = strlen(input);
    ol_header headers[8];
    ol_request req = {.headers = headers};
    ol_limits limits;
    ol_limits_default(&limits);
    ol_parser ps;
    ol_parser_init(&ps);
    char first[64], second[64];
    memcpy(first, input, 35);
    CHECK(ol_parse_request(&ps, first, 35, &req, &limits) == OL_INCOMPLETE, "first half");
    CHECK(ps.line == 30, "resumes at the incomplete field, not %zu", ps.line);
    memcpy(second, input, len);
    memset(first, 'x', sizeof(first));
    CHECK(ol_parse_request(&ps, second, len, &req, &limits) == (int)len, "second half");
    CHECK(req.num_headers == 2 && req.headers[1].value.base == second + 38,
          "spans point into the new buffer");
}

void suite_request(void)
{
    guard_buf g;
    guard_init(&g, 1 << 16);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        check_row(&rows[i], &g);
    guard_free(&g);
    check_classes();
    check_resume_after_move();
    printf("request parser: %zu rows, each whole, split at every byte and byte by byte\n",
           sizeof(rows) / sizeof(rows[0]));
}

void seeds_request(const char *dir)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "row-%03zu", i);
        write_seed(dir, "request", name, rows[i].limits == LIMITS_SMALL ? 0x80 : 0, rows[i].input,
                   rows[i].len);
    }
}
