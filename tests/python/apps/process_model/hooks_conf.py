"""A gunicorn.conf.py with every hook oneloop calls: each notes that it ran
(and in which process) in the file $HOOK_EVENTS. $HOOK_FAIL names a hook
that raises instead."""

import os

EVENTS = os.environ["HOOK_EVENTS"]
workers = 2
threads = 4
timeout = 20


def _note(*words):
    if os.environ.get("HOOK_FAIL") == words[0]:
        raise RuntimeError(f"{words[0]} broke")
    with open(EVENTS, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\n")


def on_starting(server):
    _note("on_starting", server.pid == os.getpid())


def when_ready(server):
    _note("when_ready", server.num_workers)


def pre_fork(server, worker):
    _note("pre_fork", worker.age)


def post_fork(server, worker):
    _note("post_fork", worker.pid == os.getpid())


async def post_worker_init(worker):
    _note("post_worker_init", worker.pid == os.getpid())


def worker_exit(server, worker):
    _note("worker_exit", worker.pid == os.getpid())


def child_exit(server, worker):
    _note("child_exit", worker.pid != os.getpid())


def on_reload(server):
    _note("on_reload")


def nworkers_changed(server, new, old):
    _note("nworkers_changed", new, old)


def on_exit(server):
    _note("on_exit")


def pre_request(worker, req):
    if req.path == "/hooked":
        _note("pre_request", req.method, req.uri, dict(req.headers).get("X-TRACE"))


def post_request(worker, req, environ, resp):
    if req.path == "/hooked":
        _note(
            "post_request", req.method, req.path, resp.status.split()[0], worker.pid == os.getpid()
        )


def worker_int(worker):
    _note("worker_int", worker.pid == os.getpid())


async def worker_abort(worker):
    # async: awaited on a loop of its own, the worker's being wedged
    _note("worker_abort", worker.pid == os.getpid())
