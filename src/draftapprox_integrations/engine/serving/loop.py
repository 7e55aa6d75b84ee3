"""The engine's loop: one worker thread per engine owns the models; callers only submit requests.

Each turn of the loop:
1. admits what was submitted, in arrival order, while fewer than ``max_batch_size`` answers are decoding:
   a call (SpecPC scoring) runs at once; a generation runs its lookahead and prefill (one request at a
   time: on a CPU a prefill is compute-bound and batching prefills gains nothing) and its row joins the
   decode batch of its cache shape (``engine.batching``);
2. runs one decode step of every batch: each row samples its next token and streams it; finished rows
   (EOS, a stop sequence, max tokens) and cancelled ones leave; the rest are fed in one forward.

Requests that arrive together (a LangChain ``batch``, concurrent ``ainvoke``s) are all prefilled before the
first decode step, so their compressed caches (``budget`` entries each) stack with no padding. Rows with
other budgets, methods that keep other lengths (full KV), or other prompt lengths under full KV decode in
their own batches, each one forward per step. Every model step runs under the engine's lock (loading and
the evals' baselines take it too). The thread exits after ``idle_seconds`` without work and starts again
on the next request, so an engine that is dropped leaves no thread behind; at interpreter exit the loops
are stopped and joined (a daemon thread still inside torch when the interpreter tears down aborts it).
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from ..batching import DecodeBatch, cache_shape
from ..errors import EngineUsageError
from .requests import Request

logger = logging.getLogger(__name__)

_STOP = None  # put in a loop's inbox at exit
_running_loops: weakref.WeakSet = weakref.WeakSet()
# Every loop thread ever started (threads drop out once finished): at exit even one that is just returning
# from an idle exit is joined, so none is still inside torch's thread teardown when the interpreter ends.
_loop_threads: weakref.WeakSet = weakref.WeakSet()


@dataclass(eq=False)
class _Decoding:
    """A generation in a decode batch: its request (where chunks go) and its answer row (speckv.AnswerRow)."""

    request: Request
    answer: Any


class EngineLoop:
    def __init__(self, lock, *, max_batch_size: int = 8, idle_seconds: float = 2.0) -> None:
        self.lock = lock
        self.max_batch_size = max_batch_size
        self.idle_seconds = idle_seconds
        self._inbox: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_guard = threading.Lock()
        # Loop-thread state only:
        self._waiting: collections.deque[Request] = collections.deque()
        self._batches: list[DecodeBatch] = []

    # -- callers ----------------------------------------------------------------------------------

    def submit(self, request: Request) -> Request:
        if self.lock.owned():
            # The loop would wait for this very lock: say so instead of hanging.
            raise EngineUsageError("a thread holding engine.lock cannot submit work to the engine; release it first")
        self._inbox.put(request)
        with self._thread_guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="draftapprox-engine", daemon=True)
                self._thread.start()
                _running_loops.add(self)
                _loop_threads.add(self._thread)
        return request

    def stop(self, timeout: float = 10.0) -> None:
        """Fail what is left with EngineUsageError and end the thread (at interpreter exit)."""
        with self._thread_guard:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._inbox.put(_STOP)
            thread.join(timeout)

    @property
    def active(self) -> int:
        """Answers decoding now (read from another thread, it is a snapshot)."""
        return sum(len(b) for b in self._batches)

    # -- the loop thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._batches and not self._waiting and not self._wait_for_work():
                return
            try:
                if not self._admit():
                    return
                for batch in list(self._batches):
                    self._step(batch)
                self._batches = [b for b in self._batches if len(b)]
            except Exception as exc:  # a bug in the loop itself: fail everyone rather than hang them
                logger.exception("the engine loop failed; every request in it gets the error")
                self._fail_everything(exc)

    def _fail_everything(self, exc: BaseException) -> None:
        for batch in self._batches:
            for decoding in batch.rows:
                decoding.request.fail(exc)
        for request in self._waiting:
            request.fail(exc)
        self._batches, self._waiting = [], collections.deque()

    def _wait_for_work(self) -> bool:
        """Block until a request comes (True), or exit after ``idle_seconds`` of none (False)."""
        try:
            request = self._inbox.get(timeout=self.idle_seconds)
            if request is _STOP:
                return self._exit()
            self._waiting.append(request)
            return True
        except queue.Empty:
            with self._thread_guard:
                if self._inbox.empty():  # nobody submitted between the timeout and the guard
                    self._thread = None
                    return False
            return True

    def _exit(self) -> bool:
        self._fail_everything(EngineUsageError("the interpreter is exiting: the engine's loop stopped"))
        with self._thread_guard:
            self._thread = None
        return False

    def _admit(self) -> bool:
        """Take what was submitted and start what fits; False when the loop is told to stop."""
        while True:
            try:
                request = self._inbox.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                return self._exit()
            self._waiting.append(request)
        while self._waiting and (self.active < self.max_batch_size or not self._waiting[0].streams):
            request = self._waiting.popleft()
            if request.cancelled:
                request.fail_cancelled()
                continue
            try:
                with self.lock:
                    started = request.start()
                if request.streams:
                    self._join(request, started)
                else:
                    request.send_result(started)
            except BaseException as exc:  # the caller gets it; the loop serves the others
                request.fail(exc)
        return True

    def _join(self, request: Request, answer: Any) -> None:
        shape = cache_shape(answer.cache)
        batch = next((b for b in self._batches if b.accepts(shape)), None)
        if batch is None:
            batch = DecodeBatch(answer.model, shape)
            self._batches.append(batch)
        batch.add(_Decoding(request, answer), answer.cache)
        answer.cache = None  # the batch owns it now

    def _step(self, batch: DecodeBatch) -> None:
        """One decode step of every row in ``batch``: sample, stream, drop the finished, feed the rest."""
        keep, tokens, positions = [], [], []
        for i, decoding in enumerate(batch.rows):
            request, answer = decoding.request, decoding.answer
            if request.cancelled:
                request.fail_cancelled()
                continue
            try:
                step = answer.sample()
                request.send_chunk(answer.chunk(step))
            except Exception as exc:  # a sampler or tokenizer error ends this row only
                request.fail(exc)
                continue
            if step.finish_reason is None:
                keep.append(i)
                tokens.append(step.token_id)
                positions.append(answer.stream.fed())
        batch.remove(keep)
        if not len(batch):
            return
        try:
            with self.lock:
                logits = batch.step(tokens, positions)
        except BaseException as exc:  # e.g. out of memory: every row of this batch ends with it
            logger.warning("a decode step of %d rows failed: %r", len(batch), exc)
            for decoding in batch.rows:
                decoding.request.fail(exc)
            batch.remove([])
            return
        for i, decoding in enumerate(batch.rows):
            decoding.answer.logits = logits[i]


@atexit.register
def _stop_running_loops() -> None:
    for loop in list(_running_loops):
        loop.stop()
    for thread in list(_loop_threads):
        thread.join(10.0)
