"""What a caller holds while the engine's loop works on its behalf: a request, its reply queue, and a stream.

The caller never touches a model: it submits a request and reads the replies (stream chunks, a result, an
error) from the request's own queue. A request is cancelled by its handle (``cancel()``, a stream closed or
dropped, from any thread) or by the caller's cancel event (``locking.cancellation_scope``, set by the
adapters' async forms when the awaiting task is cancelled); the loop stops it before its next forward and
replies RequestCancelled. A reader blocked on a cancelled request wakes at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import RequestCancelled
from ..locking import current_cancel_event

_CHUNK, _RESULT, _ERROR, _CANCELLED = "chunk", "result", "error", "cancelled"


def _cancelled_error() -> RequestCancelled:
    return RequestCancelled("the call was cancelled by its caller; it stopped before its next step")


@dataclass(eq=False)  # identity, not value: requests are keys of the loop's tables
class Request:
    """One unit of work for the loop.

    ``make_steps()`` runs on the loop's thread and returns the work as steps (``engine.steps``): for a
    generation they end with the prefilled answer row, which the loop then decodes with the others and
    streams; for a call (SpecPC scoring) with its result.
    """

    make_steps: Callable[[], Any]
    streams: bool  # a generation (chunks, then the end) or a call (one result)
    caller_cancel: threading.Event | None = field(default_factory=current_cancel_event)
    _replies: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _closed: threading.Event = field(default_factory=threading.Event)

    # -- the loop's side --------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._closed.is_set() or (self.caller_cancel is not None and self.caller_cancel.is_set())

    def send_chunk(self, chunk: Any) -> None:
        self._replies.put((_CHUNK, chunk))

    def send_result(self, value: Any) -> None:
        self._replies.put((_RESULT, value))

    def fail(self, error: BaseException) -> None:
        self._replies.put((_ERROR, error))

    def fail_cancelled(self) -> None:
        self.fail(_cancelled_error())

    # -- the caller's side ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the work at its next step (a no-op once it has ended); safe from any thread."""
        if not self._closed.is_set():
            self._closed.set()
            self._replies.put((_CANCELLED, None))  # wakes a reader blocked on this request

    def next_reply(self) -> Any:
        """The next chunk or result (re-raising the work's error; RequestCancelled once cancelled)."""
        kind, value = self._replies.get()
        if kind == _ERROR:
            raise value
        if kind == _CANCELLED:
            raise _cancelled_error()
        return value

    def result(self) -> Any:
        """Wait for a call's result (re-raising its error)."""
        return self.next_reply()

    def chunks(self, is_last: Callable[[Any], bool]) -> Iterator[Any]:
        """A generation's chunks until the one ``is_last`` says ends it; errors re-raised. Leaving early
        (close, drop, an exception in the reader) cancels the generation."""
        try:
            while True:
                value = self.next_reply()
                yield value
                if is_last(value):
                    return
        finally:
            self.cancel()


class GenerationStream(Iterator[Any]):
    """The iterator ``engine.stream`` returns: a generation's chunks, submitted on the first ``next()`` (an
    iterator that is never read costs nothing).

    ``close()`` (or ``cancel()``, the same) ends it from any thread, also while another thread is blocked in
    ``next()`` (FINDINGS-2 D8: a generator cannot be closed while it runs): the generation stops before its
    next forward, and the reader sees the end of the stream. Dropping the iterator closes it too.
    """

    def __init__(self, submit: Callable[[], Request], is_last: Callable[[Any], bool]) -> None:
        self._submit = submit
        self._is_last = is_last
        self._request: Request | None = None
        self._guard = threading.Lock()
        self._closed = False
        self._done = False

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> Any:
        with self._guard:
            if self._closed or self._done:
                raise StopIteration
            if self._request is None:
                self._request = self._submit()
            request = self._request
        try:
            value = request.next_reply()
        except RequestCancelled:
            if self._closed:
                raise StopIteration from None
            self._done = True
            raise
        except BaseException:
            self._done = True
            request.cancel()
            raise
        if self._is_last(value):
            self._done = True
        return value

    def close(self) -> None:
        """End the stream (from any thread); the generation stops before its next step."""
        with self._guard:
            self._closed = True
            request = self._request
        if request is not None:
            request.cancel()

    cancel = close

    def __del__(self) -> None:
        request = getattr(self, "_request", None)
        if request is not None and not getattr(self, "_done", True):
            request.cancel()
