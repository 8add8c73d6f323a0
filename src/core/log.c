/*
 * log.c -- the core's log lines go through the Python side's on_error hook
 * (oneloop.logs), with the exception that caused them. A leaf.
 */
#include "core.h"

static void call_logger(ol_server *srv, const char *level, const char *message)
{
    PyObject *exc = ol_err_take();
    if (srv->on_error == NULL || srv->on_error == Py_None) {
        if (exc != NULL) {
            ol_err_restore(exc);
            PyErr_WriteUnraisable(NULL);
        }
        return;
    }
    PyObject *r =
        PyObject_CallFunction(srv->on_error, "ssO", level, message, exc != NULL ? exc : Py_None);
    if (r == NULL)
        PyErr_WriteUnraisable(srv->on_error);
    Py_XDECREF(r);
    Py_XDECREF(exc);
}

void ol_log_error(ol_server *srv, const char *message)
{
    call_logger(srv, "error", message);
}

void ol_log_debug(ol_server *srv, const char *message)
{
    call_logger(srv, "debug", message);
}

void ol_log_info(ol_server *srv, const char *message)
{
    call_logger(srv, "info", message);
}

void ol_log_debug_exc(ol_server *srv, const char *message, PyObject *exc)
{
    ol_err_restore(Py_NewRef(exc));
    call_logger(srv, "debug", message);
}
