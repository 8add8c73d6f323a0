"""Load for the one-loop tests: n requests from a pool of threads, each with
its own keep-alive httpx client, every outcome (errors too) kept with its
timing."""

from __future__ import annotations

import concurrent.futures
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

CONCURRENCY = 16


@dataclass
class Result:
    i: int
    status: int
    body: dict | str | None
    headers: dict
    elapsed: float
    started: float
    error: str = ""

    @property
    def json(self) -> dict:
        assert isinstance(self.body, dict), self
        return self.body


def hammer(
    call: Callable[[httpx.Client, int], httpx.Response],
    n: int = 224,
    concurrency: int = CONCURRENCY,
    timeout: float = 15.0,
) -> list[Result]:
    """Make n requests from `concurrency` threads, each with its own keep-alive
    httpx client; `call(client, i)` makes request i. Errors are results too."""
    # Clients are made before the clock starts (verify=False: plain HTTP, and
    # no per-client TLS context, which costs ~25 ms of GIL-holding work each).
    idle: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
    clients = [httpx.Client(timeout=timeout, verify=False) for _ in range(concurrency)]
    for c in clients:
        idle.put(c)
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = idle.get_nowait()
        return local.client

    def one(i: int) -> Result:
        started = time.perf_counter()
        try:
            response = call(client(), i)
        except Exception as exc:
            return Result(i, 0, None, {}, time.perf_counter() - started, started, repr(exc))
        elapsed = time.perf_counter() - started
        try:
            body: dict | str = response.json()
        except ValueError:
            body = response.text
        return Result(i, response.status_code, body, dict(response.headers), elapsed, started)

    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


def assert_all(results: list[Result], status: int = 200) -> None:
    bad = [r for r in results if r.status != status or r.error]
    assert not bad, f"{len(bad)} of {len(results)} failed; first: {bad[:3]}"


def timings(results: list[Result]) -> str:
    times = sorted(r.elapsed for r in results)
    return (
        f"n={len(times)} median={statistics.median(times) * 1000:.1f}ms "
        f"p95={times[int(len(times) * 0.95) - 1] * 1000:.1f}ms max={times[-1] * 1000:.1f}ms"
    )
