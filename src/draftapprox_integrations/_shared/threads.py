"""Run the (blocking, CPU/GPU-bound) engine from async code without blocking the event loop.

:func:`run_in_thread` runs one call in a worker thread; :func:`aiter_in_thread` runs a whole stream in one
dedicated thread and hands its items to the loop through an ``asyncio.Queue``. Both give the call a cancel
event (``engine.locking.cancellation_scope``): when the awaiting task is cancelled, or the async stream's
reader stops, the engine stops the call before its next step instead of finishing it for no one.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from ..engine.locking import cancellation_scope, reset_cancellation

T = TypeVar("T")

_DONE = object()


async def run_in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread; the loop stays free meanwhile. Cancelling the awaiting
    task asks the engine to stop the call before its next step."""
    cancel, token = cancellation_scope()  # asyncio.to_thread runs fn in a copy of this context
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        reset_cancellation(token)


async def aiter_in_thread(make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Iterate ``make_iterator()`` in one dedicated thread, yielding its items on the event loop.

    Errors raised while creating or iterating are re-raised here. If the consumer stops early, the
    thread closes the iterator at its next item, and the engine stops before its next step.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancelled, token = cancellation_scope()
    context = contextvars.copy_context()  # the worker sees the cancel event: the engine stops between steps
    reset_cancellation(token)

    def put(item: Any) -> None:
        if cancelled.is_set():
            return  # the reader has gone
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is already closed: nobody is listening any more
            pass

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
            put(("done", _DONE))

    thread = threading.Thread(target=context.run, args=(worker,), name="draftapprox-stream", daemon=True)
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
