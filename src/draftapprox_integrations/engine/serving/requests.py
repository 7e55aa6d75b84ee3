"""What a caller holds while the engine's loop works on its behalf: a request and its reply queue.

The caller never touches a model: it submits a request and reads the replies (stream chunks, a result, an
error) from the request's own queue. A request is cancelled by its handle (a stream closed or dropped) or by
the caller's cancel event (``locking.cancellation_scope``, set by the adapters' async forms when the
awaiting task is cancelled); the loop stops it before its next step and replies RequestCancelled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import RequestCancelled
from ..locking import current_cancel_event

_CHUNK, _RESULT, _ERROR = "chunk", "result", "error"


@dataclass(eq=False)  # identity, not value: requests are keys of the loop's tables
class Request:
    """One unit of work for the loop.

    ``start()`` runs on the loop's thread: for a generation it returns the prefilled answer row (the loop then
    decodes it with the others and streams its chunks); for a call (SpecPC scoring) it returns the result.
    """

    start: Callable[[], Any]
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
        self.fail(RequestCancelled("the call was cancelled by its caller; it stopped before its next step"))

    # -- the caller's side ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the work at its next step (a no-op once it has ended)."""
        self._closed.set()

    def result(self) -> Any:
        """Wait for a call's result (re-raising its error)."""
        kind, value = self._replies.get()
        if kind == _ERROR:
            raise value
        return value

    def chunks(self, is_last: Callable[[Any], bool]) -> Iterator[Any]:
        """A generation's chunks until the one ``is_last`` says ends it; errors re-raised. Leaving early
        (close, drop, an exception in the reader) cancels the generation."""
        try:
            while True:
                kind, value = self._replies.get()
                if kind == _ERROR:
                    raise value
                yield value
                if is_last(value):
                    return
        finally:
            self.cancel()
