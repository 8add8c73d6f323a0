/*
 * asgi_ws.c -- the ASGI websocket scope (spec 2.4): receive() and send() of
 * a WebSocket session, the queue of messages the app has not taken yet, and
 * what happens when the app ends. The protocol (websocket.c) does the
 * framing; this file turns messages into ASGI events and back.
 *
 * Before the app accepts, the connection still speaks HTTP/1.1: closing
 * then answers 403, an app that fails or returns answers 500 (asgi.c), and
 * the websocket.http.response extension sends any HTTP response instead.
 * After the accept: an app that raises closes with 1011, one that returns
 * without closing with 1000.
 *
 * Flow control, both ways: at --ws-max-queue messages not taken by the app
 * the protocol stops reading (TCP pushes back on the client) until
 * receive() takes one; send() returns a Future above the write high-water
 * mark, resolved when the client has taken the output down to the low one.
 */
#include "core.h"

#include <string.h>

enum {
    WSS_NEW,        /* websocket.connect not yet received by the app */
    WSS_CONNECTING, /* the app decides */
    WSS_ACCEPTED,   /* the session is open */
    WSS_CLOSING,    /* the app sent websocket.close */
    WSS_RESPONSE,   /* the app answers with an HTTP response instead */
};

static int ended(const ol_req *r)
{
    return r->ws_close_code != 0;
}

static int gone(const ol_req *r)
{
    return ended(r) || r->conn == NULL || (r->conn->flags & CONN_CLOSED);
}

static PyObject *type_message(ol_state *st, PyObject *type)
{
    return Py_BuildValue("{O:O}", st->s_type, type);
}

static PyObject *disconnect_message(ol_req *r)
{
    ol_state *st = r->server->state;
    int code = ended(r) ? r->ws_close_code : 1006;
    PyObject *reason = r->ws_close_reason ? r->ws_close_reason : st->s_empty;
    return Py_BuildValue("{O:O,O:i,O:O}", st->s_type, st->s_ws_disconnect, st->s_code, code,
                         st->s_reason, reason);
}

static PyObject *disconnected_error(ol_state *st)
{
    PyErr_SetString(st->client_disconnected, "the WebSocket client disconnected");
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Events from the protocol                                                 */

int ol_asgi_ws_message(ol_req *r, int text, const char *data, size_t len)
{
    ol_server *srv = r->server;
    ol_state *st = srv->state;
    PyObject *payload = text ? PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, NULL)
                             : PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (payload == NULL)
        return -1;
    PyObject *msg = Py_BuildValue("{O:O,O:N}", st->s_type, st->s_ws_receive,
                                  text ? st->s_text : st->s_bytes, payload);
    if (msg == NULL)
        return -1;
    if (r->receive_waiter != NULL && !ol_future_is_done(r->receive_waiter)) {
        ol_future_take(&r->receive_waiter, msg, NULL);
        Py_DECREF(msg);
        return 0;
    }
    Py_CLEAR(r->receive_waiter); /* cancelled: the message waits for the next receive() */
    if (r->ws_queue == NULL && (r->ws_queue = PyList_New(0)) == NULL) {
        Py_DECREF(msg);
        return -1;
    }
    int e = PyList_Append(r->ws_queue, msg);
    Py_DECREF(msg);
    if (e < 0)
        return -1;
    return (size_t)PyList_GET_SIZE(r->ws_queue) >= srv->cfg.ws_max_queue;
}

void ol_asgi_ws_closed(ol_req *r, int code, const char *reason, size_t reason_len)
{
    if (ended(r))
        return;
    r->ws_close_code = code;
    r->ws_close_reason = PyUnicode_DecodeUTF8(reason, (Py_ssize_t)reason_len, "replace");
    if (r->ws_close_reason == NULL)
        PyErr_Clear();
    PyObject *msg = r->receive_waiter != NULL ? disconnect_message(r) : NULL;
    ol_asgi_wake_gone(r, msg, "the WebSocket client disconnected");
}

/* The client went away before the session opened (the connection still
 * speaks HTTP/1.1), or the connection closed. */
void ol_asgi_ws_disconnected(ol_req *r)
{
    ol_asgi_ws_closed(r, 1006, "", 0);
}

void ol_asgi_ws_end(ol_req *r)
{
    ol_req_session_end(r);
    ol_req_detach(r);
    Py_DECREF(r);
}

/* ------------------------------------------------------------------------ */
/* receive()                                                                */

PyObject *ol_asgi_ws_receive(ol_req *r)
{
    ol_state *st = r->server->state;
    if (r->receive_waiter != NULL && ol_future_is_done(r->receive_waiter))
        Py_CLEAR(r->receive_waiter);
    if (r->receive_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() is pending");
        return NULL;
    }
    if (r->ws_state == WSS_NEW) {
        r->ws_state = WSS_CONNECTING;
        return ol_ready_new(st, type_message(st, st->s_ws_connect));
    }
    Py_ssize_t queued = r->ws_queue ? PyList_GET_SIZE(r->ws_queue) : 0;
    if (queued > 0) {
        PyObject *msg = Py_NewRef(PyList_GET_ITEM(r->ws_queue, 0));
        if (PyList_SetSlice(r->ws_queue, 0, 1, NULL) < 0) {
            Py_DECREF(msg);
            return NULL;
        }
        if ((size_t)queued >= r->server->cfg.ws_max_queue && r->conn != NULL)
            ol_ws_resume(r->conn);
        return ol_ready_new(st, msg);
    }
    if (gone(r))
        return ol_ready_new(st, disconnect_message(r));
    r->receive_waiter = ol_new_future(r->server);
    return Py_XNewRef(r->receive_waiter);
}

/* ------------------------------------------------------------------------ */
/* send()                                                                   */

/* The app's extra headers for the 101: a list of (bytes, bytes), checked. */
static PyObject *accept_headers(ol_state *st, PyObject *message)
{
    PyObject *headers = PyDict_GetItemWithError(message, st->s_headers);
    PyObject *list = PyList_New(0);
    if (list == NULL || headers == NULL || headers == Py_None)
        return (list == NULL || PyErr_Occurred()) ? (Py_XDECREF(list), NULL) : list;
    PyObject *it = PyObject_GetIter(headers);
    PyObject *item;
    while (it != NULL && (item = PyIter_Next(it)) != NULL) {
        PyObject *pair = PySequence_Tuple(item);
        Py_DECREF(item);
        if (pair == NULL || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            if (pair != NULL)
                PyErr_SetString(PyExc_TypeError,
                                "websocket.accept headers are (bytes, bytes) pairs");
            Py_XDECREF(pair);
            break;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!ol_valid_field_name(PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name)) ||
            !ol_valid_field_value(PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value))) {
            PyErr_Format(PyExc_ValueError, "invalid websocket.accept header %R: %R", name, value);
            Py_DECREF(pair);
            break;
        }
        int e = PyList_Append(list, pair);
        Py_DECREF(pair);
        if (e < 0)
            break;
    }
    Py_XDECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *send_accept(ol_req *r, PyObject *message)
{
    ol_state *st = r->server->state;
    if (r->ws_state != WSS_NEW && r->ws_state != WSS_CONNECTING) {
        PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'websocket.accept': the "
                                            "WebSocket was already accepted, closed or answered");
        return NULL;
    }
    if (gone(r))
        return disconnected_error(st);
    PyObject *sub = PyDict_GetItemWithError(message, st->s_subprotocol);
    PyObject *sub_bytes = NULL;
    if (sub != NULL && sub != Py_None) {
        sub_bytes = PyUnicode_Check(sub) ? PyUnicode_AsASCIIString(sub) : NULL;
        if (sub_bytes == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "websocket.accept subprotocol must be a str");
            return NULL;
        }
        if (!ol_valid_field_value(PyBytes_AS_STRING(sub_bytes),
                                  (size_t)PyBytes_GET_SIZE(sub_bytes))) {
            Py_DECREF(sub_bytes);
            PyErr_Format(PyExc_ValueError, "invalid subprotocol %R", sub);
            return NULL;
        }
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *headers = accept_headers(st, message);
    int e = headers ? ol_ws_accept_upgrade(r->conn, r->ws_handshake, sub_bytes, headers) : -1;
    Py_XDECREF(sub_bytes);
    Py_XDECREF(headers);
    if (e < 0)
        return PyErr_Occurred() ? NULL : disconnected_error(st);
    r->ws_state = WSS_ACCEPTED;
    r->status = 101;
    r->flags |= REQ_STARTED | REQ_HEAD_SENT;
    PyMem_Free(r->ws_handshake);
    r->ws_handshake = NULL;
    return Py_NewRef(st->done);
}

/* The payload of websocket.send: exactly one of bytes and text. */
static int message_payload(ol_state *st, PyObject *message, Py_buffer *view, int *text)
{
    PyObject *b = PyDict_GetItemWithError(message, st->s_bytes);
    PyObject *t = b || !PyErr_Occurred() ? PyDict_GetItemWithError(message, st->s_text) : NULL;
    if (PyErr_Occurred())
        return -1;
    int has_b = b != NULL && b != Py_None, has_t = t != NULL && t != Py_None;
    if (has_b == has_t) {
        PyErr_SetString(PyExc_ValueError, "websocket.send needs exactly one of 'bytes' and 'text'");
        return -1;
    }
    *text = has_t;
    if (has_b)
        return PyObject_GetBuffer(b, view, PyBUF_SIMPLE);
    if (!PyUnicode_Check(t)) {
        PyErr_SetString(PyExc_TypeError, "websocket.send 'text' must be a str");
        return -1;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(t, &len);
    if (utf8 == NULL)
        return -1;
    return PyBuffer_FillInfo(view, t, (void *)utf8, len, 1, PyBUF_SIMPLE);
}

static PyObject *wrong_state(ol_req *r, const char *type)
{
    if (r->ws_state == WSS_CLOSING)
        PyErr_Format(PyExc_RuntimeError,
                     "Unexpected ASGI message '%s', after sending 'websocket.close'", type);
    else if (r->ws_state == WSS_RESPONSE)
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message '%s' during an HTTP response",
                     type);
    else
        PyErr_Format(PyExc_RuntimeError,
                     "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                     "'websocket.http.response.start', but got '%s'",
                     type);
    return NULL;
}

static PyObject *send_data(ol_req *r, PyObject *message)
{
    ol_server *srv = r->server;
    ol_state *st = srv->state;
    if (r->ws_state != WSS_ACCEPTED && !(r->ws_state == WSS_CLOSING && gone(r)))
        return wrong_state(r, "websocket.send");
    Py_buffer view;
    int text;
    if (message_payload(st, message, &view, &text) < 0)
        return NULL;
    int e = gone(r) ? -1 : ol_ws_send(r->conn, text, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (e < 0)
        return disconnected_error(st);
    if (r->conn != NULL && ol_conn_pending(r->conn) > srv->cfg.write_high_water) {
        Py_XSETREF(r->send_waiter, ol_new_future(srv));
        return Py_XNewRef(r->send_waiter);
    }
    return Py_NewRef(st->done);
}

/* Close before accepting: 403 (ASGI), with no body. */
static PyObject *deny(ol_req *r)
{
    ol_state *st = r->server->state;
    PyObject *none = PyTuple_New(0);
    if (none == NULL)
        return NULL;
    r->flags &= ~REQ_KEEP_ALIVE;
    r->ws_state = WSS_RESPONSE;
    int e = ol_response_begin(r, 403, NULL, none);
    Py_DECREF(none);
    if (e == 0 && !gone(r))
        e = ol_response_body(r, "", 0, 0);
    if (e < 0 && !PyErr_Occurred())
        return disconnected_error(st);
    return e < 0 ? NULL : Py_NewRef(st->done);
}

static PyObject *send_close(ol_req *r, PyObject *message)
{
    ol_state *st = r->server->state;
    if (r->ws_state == WSS_NEW || r->ws_state == WSS_CONNECTING)
        return deny(r);
    if (r->ws_state == WSS_RESPONSE)
        return wrong_state(r, "websocket.close");
    if (r->ws_state == WSS_CLOSING || gone(r))
        return Py_NewRef(st->done); /* already over: nothing more to say */
    PyObject *code_obj = PyDict_GetItemWithError(message, st->s_code);
    PyObject *reason_obj =
        code_obj || !PyErr_Occurred() ? PyDict_GetItemWithError(message, st->s_reason) : NULL;
    if (PyErr_Occurred())
        return NULL;
    long code = 1000;
    if (code_obj != NULL && code_obj != Py_None &&
        ((code = PyLong_AsLong(code_obj)) == -1 && PyErr_Occurred()))
        return NULL;
    if (!ol_ws_close_code_sendable((int)code) || code != (int)code) {
        PyErr_Format(PyExc_ValueError, "invalid WebSocket close code %ld", code);
        return NULL;
    }
    const char *reason = "";
    Py_ssize_t reason_len = 0;
    if (reason_obj != NULL && reason_obj != Py_None &&
        (reason = PyUnicode_AsUTF8AndSize(reason_obj, &reason_len)) == NULL)
        return NULL;
    r->ws_state = WSS_CLOSING;
    ol_ws_close(r->conn, (int)code, reason, (size_t)reason_len);
    return Py_NewRef(st->done);
}

static PyObject *send_response(ol_req *r, PyObject *message, int start)
{
    if (start) {
        if (r->ws_state != WSS_NEW && r->ws_state != WSS_CONNECTING)
            return wrong_state(r, "websocket.http.response.start");
        r->flags &= ~REQ_KEEP_ALIVE;
        PyObject *res = ol_asgi_send_start(r, message);
        if (res != NULL)
            r->ws_state = WSS_RESPONSE;
        return res;
    }
    if (r->ws_state != WSS_RESPONSE)
        return wrong_state(r, "websocket.http.response.body");
    return ol_asgi_send_body(r, message);
}

PyObject *ol_asgi_ws_send(ol_req *r, PyObject *message)
{
    ol_state *st = r->server->state;
    PyObject *type = ol_asgi_message_type(st, message);
    if (type == NULL)
        return NULL;
    if (ol_asgi_is_type(type, st->s_ws_send))
        return send_data(r, message);
    if (ol_asgi_is_type(type, st->s_ws_accept))
        return send_accept(r, message);
    if (ol_asgi_is_type(type, st->s_ws_close))
        return send_close(r, message);
    if (ol_asgi_is_type(type, st->s_ws_response_start))
        return send_response(r, message, 1);
    if (ol_asgi_is_type(type, st->s_ws_response_body))
        return send_response(r, message, 0);
    PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R", type);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The scope's own keys, and the end of the app                             */

/* scope["subprotocols"]: the Sec-WebSocket-Protocol lists, in order. */
static PyObject *subprotocols(ol_req *r)
{
    PyObject *list = PyList_New(0);
    for (Py_ssize_t i = 0; list != NULL && i < PyList_GET_SIZE(r->req_headers); i++) {
        PyObject *pair = PyList_GET_ITEM(r->req_headers, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (PyBytes_GET_SIZE(name) != 22 ||
            memcmp(PyBytes_AS_STRING(name), "sec-websocket-protocol", 22) != 0)
            continue;
        const char *p = PyBytes_AS_STRING(value), *end = p + PyBytes_GET_SIZE(value);
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *tok = p;
            while (p < end && *p != ',')
                p++;
            const char *last = p;
            while (last > tok && (last[-1] == ' ' || last[-1] == '\t'))
                last--;
            if (last == tok)
                continue;
            PyObject *s = PyUnicode_DecodeLatin1(tok, last - tok, NULL);
            if (s == NULL || PyList_Append(list, s) < 0) {
                Py_XDECREF(s);
                Py_CLEAR(list);
                break;
            }
            Py_DECREF(s);
        }
    }
    return list;
}

int ol_asgi_ws_scope(ol_req *r, PyObject *scope)
{
    ol_state *st = r->server->state;
    PyObject *extensions = Py_BuildValue("{O:{}}", st->s_ws_http_response);
    return ol_dict_put(scope, st->s_subprotocols, subprotocols(r)) ||
           ol_dict_put(scope, st->s_extensions, extensions);
}

/* The app ended after the session opened: close it if it did not (1011 if
 * it raised). 1 when handled here, 0 for the HTTP path (before the accept,
 * or an HTTP response instead). */
int ol_asgi_ws_finished(ol_req *r, PyObject *exc)
{
    if (r->ws_state != WSS_ACCEPTED && r->ws_state != WSS_CLOSING)
        return 0;
    if (r->ws_state == WSS_ACCEPTED && !gone(r)) {
        r->ws_state = WSS_CLOSING;
        ol_ws_close(r->conn, exc ? 1011 : 1000, "", 0);
    }
    return 1;
}
