/*
 * target.h -- request targets to paths and query strings, and the
 * X-Forwarded-* headers behind --proxy-headers (target.c).
 */
#ifndef OL_TARGET_H
#define OL_TARGET_H

#include "server.h"

typedef struct ol_target {
    ol_span path;  /* never empty: "/" for an absolute-form target without one */
    ol_span query; /* after '?', before '#' */
} ol_target;

void ol_split_target(ol_span target, ol_target *out);
PyObject *ol_decode_path(ol_server *srv, ol_span path);        /* ASGI path, with root path */
PyObject *ol_decode_path_latin1(ol_server *srv, ol_span path); /* WSGI PATH_INFO */
PyObject *ol_raw_path(ol_server *srv, ol_span path);
int ol_apply_proxy_headers(ol_server *srv, ol_req *r, PyObject *scope, PyObject *client_key,
                           PyObject *scheme_key);
int ol_wsgi_proxy_headers(ol_server *srv, ol_req *r, PyObject *env);

#endif /* OL_TARGET_H */
