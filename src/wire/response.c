/*
 * response.c -- response heads: status line, field validation, Date.
 *
 * The serializer refuses what must never reach the wire: a status outside
 * 100-999, a field name that is not a token, a value holding CR, LF, NUL or
 * another control byte (header injection / response splitting).
 */
#include <string.h>
#include <time.h>

#include "internal.h"

/* clang-format off */
static const char *const reasons[600] = {
    [100] = "Continue", [101] = "Switching Protocols", [102] = "Processing",
    [103] = "Early Hints",
    [200] = "OK", [201] = "Created", [202] = "Accepted",
    [203] = "Non-Authoritative Information", [204] = "No Content",
    [205] = "Reset Content", [206] = "Partial Content", [207] = "Multi-Status",
    [208] = "Already Reported", [226] = "IM Used",
    [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found",
    [303] = "See Other", [304] = "Not Modified", [305] = "Use Proxy",
    [307] = "Temporary Redirect", [308] = "Permanent Redirect",
    [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
    [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
    [406] = "Not Acceptable", [407] = "Proxy Authentication Required",
    [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
    [411] = "Length Required", [412] = "Precondition Failed",
    [413] = "Content Too Large", [414] = "URI Too Long",
    [415] = "Unsupported Media Type", [416] = "Range Not Satisfiable",
    [417] = "Expectation Failed", [418] = "I'm a Teapot",
    [421] = "Misdirected Request", [422] = "Unprocessable Content",
    [423] = "Locked", [424] = "Failed Dependency", [425] = "Too Early",
    [426] = "Upgrade Required", [428] = "Precondition Required",
    [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
    [451] = "Unavailable For Legal Reasons",
    [500] = "Internal Server Error", [501] = "Not Implemented",
    [502] = "Bad Gateway", [503] = "Service Unavailable",
    [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
    [506] = "Variant Also Negotiates", [507] = "Insufficient Storage",
    [508] = "Loop Detected", [510] = "Not Extended",
    [511] = "Network Authentication Required",
};
/* clang-format on */

const char *ol_reason_phrase(int status)
{
    if (status < 0 || status >= (int)(sizeof(reasons) / sizeof(reasons[0])) || !reasons[status])
        return "";
    return reasons[status];
}

int ol_valid_field_name(const char *name, size_t len)
{
    if (len == 0)
        return 0;
    return ol__skip_token(name, name + len) == name + len;
}

int ol_valid_field_value(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!ol__is((unsigned char)value[i], OL__VALUE))
            return 0;
    return 1;
}

/* "HTTP/1.1 " + 3 digits + " " + reason + CRLF */
static size_t status_line_size(int status)
{
    return 9 + 3 + 1 + strlen(ol_reason_phrase(status)) + 2;
}

size_t ol_response_head_size(int status, const ol_header *headers, size_t num_headers)
{
    size_t n = status_line_size(status);
    for (size_t i = 0; i < num_headers; i++)
        n += headers[i].name.len + 2 + headers[i].value.len + 2;
    return n;
}

static char *put(char *out, const char *s, size_t n)
{
    memcpy(out, s, n);
    return out + n;
}

long ol_response_head(char *out, size_t cap, int minor, int status, const ol_header *headers,
                      size_t num_headers)
{
    if (status < 100 || status > 999)
        return OL_ESTATUS;
    for (size_t i = 0; i < num_headers; i++) {
        if (!ol_valid_field_name(headers[i].name.base, headers[i].name.len))
            return OL_EFIELD_NAME;
        if (!ol_valid_field_value(headers[i].value.base, headers[i].value.len))
            return OL_EFIELD_VALUE;
    }
    size_t size = ol_response_head_size(status, headers, num_headers);
    if (size > cap)
        return OL_ENOSPACE;

    const char *reason = ol_reason_phrase(status);
    char *p = put(out, "HTTP/1.", 7);
    *p++ = minor == 0 ? '0' : '1';
    *p++ = ' ';
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    p = put(p, reason, strlen(reason));
    p = put(p, "\r\n", 2);
    for (size_t i = 0; i < num_headers; i++) {
        p = put(p, headers[i].name.base, headers[i].name.len);
        p = put(p, ": ", 2);
        p = put(p, headers[i].value.base, headers[i].value.len);
        p = put(p, "\r\n", 2);
    }
    return (long)(p - out);
}

/* ------------------------------------------------------------------------ */
/* Date                                                                     */

static char *put2(char *p, int v)
{
    *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

void ol_format_http_date(char *out, time_t t)
{
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    gmtime_r(&t, &tm);
    char *p = put(out, days + 3 * tm.tm_wday, 3);
    p = put(p, ", ", 2);
    p = put2(p, tm.tm_mday);
    *p++ = ' ';
    p = put(p, months + 3 * tm.tm_mon, 3);
    *p++ = ' ';
    int year = tm.tm_year + 1900;
    p = put2(p, year / 100);
    p = put2(p, year % 100);
    *p++ = ' ';
    p = put2(p, tm.tm_hour);
    *p++ = ':';
    p = put2(p, tm.tm_min);
    *p++ = ':';
    p = put2(p, tm.tm_sec);
    put(p, " GMT", 4);
}

const char *ol_date_cache_get(ol_date_cache *cache, time_t now)
{
    if (cache->second != now || cache->text[0] == '\0') {
        ol_format_http_date(cache->text, now);
        cache->text[OL_HTTP_DATE_LEN] = '\0';
        cache->second = now;
    }
    return cache->text;
}
