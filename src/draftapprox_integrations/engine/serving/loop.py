"""The engine's loop: one worker thread per engine owns the models; callers only submit requests.

A request's work is written as steps (``engine.steps``): at most one forward between two yields, and every
row it decodes (a draft's lookahead, the answer) handed to the loop. Each turn of the loop:

1. admits what was submitted, in arrival order, while fewer than ``max_batch_size`` generations are in flight
   (a call, SpecPC scoring, is always admitted);
2. advances one started request by one step (round robin): one prefill or scoring forward at most, so a long
   prompt arriving never freezes the answers already streaming for more than that forward;
3. runs one decode step of every batch: each batch is one forward over all its rows (answers and lookaheads
   of every request, of any length), whose sampled tokens come back to the host in one read; finished rows
   leave, a finished lookahead resumes its request's steps, and answers stream their chunks.

Cancellation (a closed stream, a cancelled async call) is seen at the start of every turn: the request's
steps are closed (their caches freed) and its rows leave their batch, so it stops within two forwards. Every
model step runs under the engine's lock (loading and the evals' baselines take it too). The thread exits
after ``idle_seconds`` without work and starts again on the next request, so an engine that is dropped leaves
no thread behind; at interpreter exit the loops are stopped and joined, and no new one starts (a thread
still inside torch while the interpreter tears down aborts the process).
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

from ..errors import EngineUsageError
from ..steps import DecodeRequest, LookaheadRow
from .requests import Request
from .rows import Answer, DecodeRows, Lookahead

logger = logging.getLogger(__name__)

_STOP = None  # put in a loop's inbox at exit
_running_loops: weakref.WeakSet = weakref.WeakSet()
# Every loop thread ever started (threads drop out once finished): at exit even one that is just returning
# from an idle exit is joined, so none is still inside torch's thread teardown when the interpreter ends.
_loop_threads: weakref.WeakSet = weakref.WeakSet()
_closing = threading.Event()  # set at interpreter exit: no loop starts after that (FINDINGS-2 D6)


@dataclass(eq=False)
class _Task:
    """A started request whose steps are running, or waiting (``parked``) for one of its rows to finish."""

    request: Request
    steps: Any
    sending: Any = None  # what the next step is given (a finished row's result)
    parked: bool = False
    ended: bool = False


class EngineLoop:
    def __init__(self, lock, *, max_batch_size: int = 8, idle_seconds: float = 2.0, cuda_graphs: bool = True) -> None:
        self.lock = lock
        self.max_batch_size = max_batch_size
        self.idle_seconds = idle_seconds
        self.cuda_graphs = cuda_graphs
        self._inbox: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_guard = threading.Lock()
        # Loop-thread state only:
        self._waiting: collections.deque[Request] = collections.deque()
        self._tasks: list[_Task] = []
        self._generations: set[Request] = set()  # admitted and not ended: what max_batch_size bounds
        self._rows = DecodeRows(lock, max_batch_size=max_batch_size, cuda_graphs=cuda_graphs,
                                answer_ended=self._generations.discard, task_failed=self._fail_task)
        self._turn = 0

    # -- callers ----------------------------------------------------------------------------------

    def submit(self, request: Request) -> Request:
        if _closing.is_set():
            raise EngineUsageError("the interpreter is exiting: the engine's loop no longer takes work")
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
        """Rows decoding now (read from another thread, it is a snapshot)."""
        return len(self._rows)

    # -- the loop thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not (self._rows.batches or self._tasks or self._waiting) and not self._wait_for_work():
                return
            try:
                if not self._admit():
                    return
                self._drop_cancelled()
                self._advance_a_task()
                self._rows.step_all()
            except Exception as exc:  # a bug in the loop itself: fail everyone rather than hang them
                logger.exception("the engine loop failed; every request in it gets the error")
                self._fail_everything(exc)

    def _fail_everything(self, exc: BaseException) -> None:
        self._rows.fail_all(exc)
        for task in self._tasks:
            self._close(task)
            task.request.fail(exc)
        for request in self._waiting:
            request.fail(exc)
        self._tasks, self._waiting = [], collections.deque()
        self._generations.clear()

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
        self._rows.clear_idle()
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
        while self._waiting and (len(self._generations) < self.max_batch_size or not self._waiting[0].streams):
            request = self._waiting.popleft()
            if request.cancelled:
                request.fail_cancelled()
                continue
            try:
                steps = request.make_steps()
            except BaseException as exc:  # the caller gets it; the loop serves the others
                request.fail(exc)
                continue
            self._tasks.append(_Task(request, steps))
            if request.streams:
                self._generations.add(request)
        return True

    def _drop_cancelled(self) -> None:
        """Cancelled requests stop here, between two forwards: their steps close, their rows leave."""
        for task in [t for t in self._tasks if t.request.cancelled]:
            self._end_task(task)
            task.request.fail_cancelled()

    def _advance_a_task(self) -> None:
        """One step of one started request (round robin over those not waiting for a row)."""
        ready = [t for t in self._tasks if not t.parked]
        if not ready:
            return
        task = ready[self._turn % len(ready)]
        self._turn += 1
        sending, task.sending = task.sending, None
        try:
            with self.lock:
                item = task.steps.send(sending)
        except StopIteration as done:
            self._end_task(task, answering=task.request.streams)
            self._finished(task.request, done.value)
        except BaseException as exc:  # the caller gets it; the loop serves the others
            self._fail_task(task, exc)
        else:
            if isinstance(item, DecodeRequest):
                self._start_lookahead(task, item)

    def _start_lookahead(self, task: _Task, request: DecodeRequest) -> None:
        row = LookaheadRow(request)
        with self.lock:
            ended = row.start()
        if ended:
            task.sending = row.result()
            return
        task.parked = True
        self._rows.join(Lookahead(task, row), request.model, expected=len(self._generations))

    def _finished(self, request: Request, value: Any) -> None:
        """A request's steps returned: a call's result goes back; a generation's answer row starts decoding."""
        if not request.streams:
            request.send_result(value)
            return
        try:
            with self.lock:
                step = value.start()
            request.send_chunk(value.chunk(step))
        except BaseException as exc:
            request.fail(exc)
            step = None
        if step is None or step.finish_reason is not None:
            self._generations.discard(request)
            return
        self._rows.join(Answer(request, value), value.model, expected=len(self._generations))

    def _end_task(self, task: _Task, *, answering: bool = False) -> None:
        """Remove a task whose steps ended (its lookahead row, if any, leaves at its batch's next step).
        ``answering``: its answer row decodes next, so the generation is still in flight."""
        if task.ended:
            return
        task.ended = True
        self._tasks.remove(task)
        self._close(task)
        if not answering:
            self._generations.discard(task.request)

    def _fail_task(self, task: _Task, exc: BaseException) -> None:
        self._end_task(task)
        task.request.fail(exc)

    @staticmethod
    def _close(task: _Task) -> None:
        try:
            task.steps.close()
        except Exception:  # a step's cleanup failed: nothing the caller can do with it
            logger.exception("closing a request's steps failed")

@atexit.register
def _stop_running_loops() -> None:
    _closing.set()
    for loop in list(_running_loops):
        loop.stop()
    for thread in list(_loop_threads):
        thread.join(10.0)
