/*
 * core.h -- every header of the binding layer, for the files that need
 * most of them. The layers, each calling only those below it (a lower one
 * reaches an upper one only through a function pointer it was given;
 * scripts/check_layers.py checks it):
 *
 *   interfaces   asgi.h (+ asgi_ws, driver) · wsgi.h (+ pool) · bridge.h
 *   exchange     exchange.h: a request and its response; ol_handler
 *   protocols    h1.h: HTTP/1.1 (ol_proto, conn.h); websocket.h after an Upgrade; h2.h
 *   transport    conn.h: bytes, buffers, TLS, the connection list
 *   reactor      reactor.h: epoll set, handles, tick; dispatch in server.h
 *   leaves       state.h: module state, clock, logging
 *
 * Objects and who owns what:
 *
 *   Server      a Python object (oneloop._core.Server, server.h). Owns the
 *               reactor, the listening sockets, every connection, the app
 *               and the configuration. Lives for the whole worker.
 *   ol_conn     a plain C struct per TCP/UNIX connection (conn.h),
 *               reference counted by hand.
 *   Request     a Python object per exchange (oneloop._core.Request,
 *               exchange.h). Holds one reference to its connection.
 *
 * Threads: in ASGI mode everything runs on the event loop's thread. In WSGI
 * mode a pool of threads serves connections directly (pool.c); a connection
 * is held by one thread at a time (conn.h), so its fields need no lock. The
 * GIL guards every Python object and the Date cache; the connection list's
 * lock guards the list, who holds a connection and the listeners' place in
 * the reactor; the pool's own mutex its token and event batch.
 */
#ifndef OL_CORE_H
#define OL_CORE_H

#include "asgi.h"
#include "bridge.h"
#include "conn.h"
#include "exchange.h"
#include "h1.h"
#include "h2.h"
#include "reactor.h"
#include "server.h"
#include "state.h"
#include "target.h"
#include "websocket.h"
#include "wsgi.h"

#endif /* OL_CORE_H */
