/*
 * errors.c -- what each result code means, in words and as an HTTP status.
 */
#include "ol_http.h"

typedef struct error_info {
    int code;
    int status;
    const char *text;
} error_info;

static const error_info errors[] = {
    {OL_INCOMPLETE, 400, "incomplete message"},
    {OL_EMETHOD, 400, "invalid method"},
    {OL_EMETHOD_UNKNOWN, 501, "method not implemented"},
    {OL_ETARGET, 400, "invalid request target"},
    {OL_EPROTOCOL, 400, "invalid protocol"},
    {OL_EVERSION, 400, "invalid HTTP version"},
    {OL_EVERSION_UNSUPPORTED, 505, "HTTP version not supported"},
    {OL_EURI_TOO_LONG, 414, "request line too long"},
    {OL_ELINE, 400, "line not terminated by CRLF"},
    {OL_EOBS_FOLD, 400, "obsolete line folding"},
    {OL_EFIELD_NAME, 400, "invalid header name"},
    {OL_EFIELD_VALUE, 400, "invalid character in header value"},
    {OL_EHEADERS_TOO_LARGE, 431, "header fields too large"},
    {OL_ETOO_MANY_HEADERS, 431, "too many header fields"},
    {OL_EHOST, 400, "missing or duplicate Host"},
    {OL_ECONTENT_LENGTH, 400, "invalid Content-Length"},
    {OL_ECONTENT_LENGTH_DUP, 400, "duplicate Content-Length"},
    {OL_ECONTENT_LENGTH_OVERFLOW, 400, "Content-Length overflow"},
    {OL_ECL_AND_TE, 400, "both Content-Length and Transfer-Encoding"},
    {OL_ETRANSFER_ENCODING, 400, "invalid Transfer-Encoding"},
    {OL_ECHUNK_SIZE, 400, "invalid chunk size"},
    {OL_ECHUNK_EXT, 400, "invalid chunk extension"},
    {OL_ECHUNK_EXT_TOO_LONG, 400, "chunk extensions too long"},
    {OL_ECHUNK_DATA, 400, "chunk data not followed by CRLF"},
    {OL_ETRAILERS_TOO_LARGE, 431, "trailer section too large"},
    {OL_ESTATUS, 500, "invalid status code"},
    {OL_ENOSPACE, 500, "output buffer too small"},
    {OL_ETRAILER_FIELD, 400, "field not allowed in a trailer section"},
};

static const error_info *find(int code)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].code == code)
            return &errors[i];
    return NULL;
}

const char *ol_strerror(int code)
{
    const error_info *e = find(code);
    return e != NULL ? e->text : "unknown error";
}

int ol_error_status(int code)
{
    const error_info *e = find(code);
    return e != NULL ? e->status : 400;
}
