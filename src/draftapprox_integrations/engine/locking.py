"""The engine's lock, and a way for a caller to cancel a call that is still running.

Model work is serialised per engine: the attention capture and the KV surgery are per-call state on shared
modules, and on a CPU two forwards at once only compete for the same cores. The engine's loop takes the
lock for one step at a time (a prefill, one batched decode step); loading and the evals' baselines take
it too. It hands itself to waiters in arrival order, so a loop that releases and at once asks again
queues behind whoever was waiting instead of starving them.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time


class FairRLock:
    """A re-entrant lock granted first come, first served."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting: collections.deque[object] = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._waiting:
                self._owner, self._depth = me, 1
                return True
            if not blocking:
                return False
            return self._wait_turn(me, None if timeout is None or timeout < 0 else time.monotonic() + timeout)

    def _wait_turn(self, me: int, deadline: float | None) -> bool:
        ticket = object()
        self._waiting.append(ticket)
        try:
            while self._owner is not None or self._waiting[0] is not ticket:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._owner, self._depth = me, 1
            return True
        finally:
            self._waiting.remove(ticket)
            self._cond.notify_all()  # whoever is now first in line re-checks

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release un-acquired lock")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def owned(self) -> bool:
        """Whether the calling thread holds the lock."""
        with self._cond:
            return self._owner == threading.get_ident()

    def locked(self) -> bool:
        with self._cond:
            return self._owner is not None

    def __enter__(self) -> FairRLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# Set by whoever runs a call on a caller's behalf (the adapters' async forms): once the event is set, the
# engine stops the call before its next step. Worker threads started with asyncio.to_thread see it, since
# to_thread runs the function in a copy of the caller's context.
_cancel_event: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("draftapprox_cancel", default=None)


def cancellation_scope() -> tuple[threading.Event, contextvars.Token]:
    """A fresh cancel event for the calls made from the current context; reset the token when done."""
    event = threading.Event()
    return event, _cancel_event.set(event)


def reset_cancellation(token: contextvars.Token) -> None:
    _cancel_event.reset(token)


def current_cancel_event() -> threading.Event | None:
    """The cancel event of the calling context, if whoever runs the call gave it one."""
    return _cancel_event.get()


