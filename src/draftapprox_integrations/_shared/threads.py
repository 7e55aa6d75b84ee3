"""Run the (blocking, CPU/GPU-bound) engine from async code without blocking the event loop.

A generation holds the engine's re-entrant lock from its first token to its last, and a re-entrant lock
belongs to one thread: a stream must therefore be consumed entirely inside *one* worker thread (running
each ``next()`` in whatever executor thread is free, as generic adapters do, would release the lock from
the wrong thread). :func:`aiter_in_thread` runs the whole iteration in a dedicated thread and hands the
items to the loop through an ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


async def run_in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread; the loop stays free meanwhile."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def aiter_in_thread(make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Iterate ``make_iterator()`` in one dedicated thread, yielding its items on the event loop.

    Errors raised while creating or iterating are re-raised here. If the consumer stops early, the
    thread closes the iterator at its next item (so the engine lock is released in the thread that took it).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def worker() -> None:
        iterator = None
        try:
            iterator = make_iterator()
            for item in iterator:
                if cancelled.is_set():
                    break
                put(("item", item))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            try:
                put(("done", _DONE))
            except RuntimeError:  # the loop is already closed: nobody is listening any more
                pass

    thread = threading.Thread(target=worker, name="draftapprox-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = await queue.get()
            if kind == "item":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        cancelled.set()
