/*
 * test_response.c -- response heads, field validation and Date.
 */
#include <string.h>

#include "stream.h"

#define H(n, v)                                                                                    \
    {                                                                                              \
        {n, sizeof(n) - 1},                                                                        \
        {                                                                                          \
            v, sizeof(v) - 1                                                                       \
        }                                                                                          \
    }

static void check_head(int minor, int status, const ol_header *h, size_t n, const char *want)
{
    char out[256];
    long r = ol_response_head(out, sizeof(out), minor, status, h, n);
    CHECK(r == (long)strlen(want) && memcmp(out, want, (size_t)r) == 0, "status %d: %.*s", status,
          r > 0 ? (int)r : 0, out);
    CHECK(ol_response_head_size(status, h, n) == strlen(want), "size of status %d", status);
}

static void check_status_lines(void)
{
    ol_header h[] = {H("Content-Type", "text/plain"), H("X-Empty", "")};
    check_head(1, 200, h, 2, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Empty: \r\n");
    check_head(0, 404, NULL, 0, "HTTP/1.0 404 Not Found\r\n");
    check_head(1, 431, NULL, 0, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    check_head(1, 299, NULL, 0, "HTTP/1.1 299 \r\n");
    check_head(1, 999, NULL, 0, "HTTP/1.1 999 \r\n");
    check_head(1, 100, NULL, 0, "HTTP/1.1 100 Continue\r\n");
}

static void check_refusals(void)
{
    char out[256];
    ol_header crlf[] = {H("X", "a\r\nSet-Cookie: evil")};
    ol_header lf[] = {H("X", "a\nb")};
    ol_header nul[] = {{{"X", 1}, {"a\0b", 3}}};
    ol_header ctl[] = {H("X", "a\x01")};
    ol_header name_space[] = {H("X Y", "a")};
    ol_header name_colon[] = {H("X:", "a")};
    ol_header name_crlf[] = {H("X\r\nY", "a")};
    ol_header name_empty[] = {H("", "a")};
    ol_header tab[] = {H("X", "a\tb")};
    CHECK(ol_response_head(out, sizeof(out), 1, 200, crlf, 1) == OL_EFIELD_VALUE, "CRLF in value");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, lf, 1) == OL_EFIELD_VALUE, "LF in value");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, nul, 1) == OL_EFIELD_VALUE, "NUL in value");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, ctl, 1) == OL_EFIELD_VALUE, "CTL in value");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, name_space, 1) == OL_EFIELD_NAME,
          "SP in name");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, name_colon, 1) == OL_EFIELD_NAME, ": in name");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, name_crlf, 1) == OL_EFIELD_NAME,
          "CRLF in name");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, name_empty, 1) == OL_EFIELD_NAME,
          "empty name");
    CHECK(ol_response_head(out, sizeof(out), 1, 200, tab, 1) > 0, "HTAB is allowed in values");
    CHECK(ol_response_head(out, sizeof(out), 1, 99, NULL, 0) == OL_ESTATUS, "status 99");
    CHECK(ol_response_head(out, sizeof(out), 1, 1000, NULL, 0) == OL_ESTATUS, "status 1000");
    CHECK(ol_response_head(out, 10, 1, 200, NULL, 0) == OL_ENOSPACE, "no room");
    CHECK(ol_response_head(out, 17, 1, 200, NULL, 0) == 17, "exactly enough room");
}

static void check_dates(void)
{
    char out[OL_HTTP_DATE_LEN + 1] = {0};
    ol_format_http_date(out, 784111777);
    CHECK(strcmp(out, "Sun, 06 Nov 1994 08:49:37 GMT") == 0, "RFC 9110 example: %s", out);
    ol_format_http_date(out, 0);
    CHECK(strcmp(out, "Thu, 01 Jan 1970 00:00:00 GMT") == 0, "epoch: %s", out);
    ol_format_http_date(out, 951782400);
    CHECK(strcmp(out, "Tue, 29 Feb 2000 00:00:00 GMT") == 0, "leap day: %s", out);

    ol_date_cache cache = {0};
    const char *a = ol_date_cache_get(&cache, 784111777);
    CHECK(strcmp(a, "Sun, 06 Nov 1994 08:49:37 GMT") == 0, "cache formats");
    const char *b = ol_date_cache_get(&cache, 784111778);
    CHECK(strcmp(b, "Sun, 06 Nov 1994 08:49:38 GMT") == 0, "cache follows the clock");
}

static void check_errors(void)
{
    for (int code = OL_EMETHOD; code >= OL_ERROR_MIN; code--)
        CHECK(strcmp(ol_strerror(code), "unknown error") != 0, "code %d has a description", code);
    CHECK(ol_error_status(OL_EURI_TOO_LONG) == 414, "414");
    CHECK(ol_error_status(OL_EHEADERS_TOO_LARGE) == 431, "431");
    CHECK(ol_error_status(OL_EVERSION_UNSUPPORTED) == 505, "505");
    CHECK(ol_error_status(OL_EMETHOD_UNKNOWN) == 501, "501");
    CHECK(ol_error_status(OL_ECL_AND_TE) == 400, "400");
}

void suite_response(void)
{
    check_status_lines();
    check_refusals();
    check_dates();
    check_errors();
}
