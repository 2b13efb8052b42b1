"""The kernels' one parallel loop: items (subjects, parameter points) spread over threads.

Every batch kernel is a serial numba function over items ``first <= i < last``, compiled
with ``nogil=True``; :func:`over_items` hands out chunks of items to
``numba.get_num_threads()`` threads, the calling thread among them. numba's own
``parallel=True`` loops did the same but cost 8–16 s of compile per kernel on 2 cores (the
outlined loop body is compiled and optimised again with everything it calls), about half
of the first population fit's compile time.

Each item's result depends on its own inputs only (random numbers are drawn by the caller),
so the numbers are the same for any thread count and chunking.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba

#: Fewer items than this run on the calling thread: the hand-off would cost more.
MIN_ITEMS = 4
#: Chunks per thread, so that a thread that drew quick subjects takes more.
CHUNKS_PER_THREAD = 8

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    """One pool per process, sized for numba's thread limit (created on first use, and again
    in a forked child, which inherits the pool object but not its threads)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            workers = max(numba.config.NUMBA_NUM_THREADS - 1, 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cartpk")
            _pool_pid = os.getpid()
        return _pool


def over_items(kernel: Callable[..., Any], n: int, *args: Any) -> None:
    """Run ``kernel(*args, first, last)`` over chunks covering items ``0 <= i < n``."""
    threads = min(numba.get_num_threads(), n)
    if n < MIN_ITEMS or threads <= 1:
        kernel(*args, 0, n)
        return
    size = -(-n // (threads * CHUNKS_PER_THREAD))
    starts = iter(range(0, n, size))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                first = next(starts, None)
            if first is None:
                return
            kernel(*args, first, min(first + size, n))

    helpers = [_shared_pool().submit(work) for _ in range(threads - 1)]
    work()
    for helper in helpers:
        helper.result()
