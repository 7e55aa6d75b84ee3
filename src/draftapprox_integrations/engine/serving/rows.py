"""The loop's decode batches: where a row joins, one step of every batch per turn, where a finished row goes.

A row is either a request's answer (its chunks stream to the caller) or a decode request of a request's
steps (a draft's lookahead: when it ends, its result resumes those steps). Rows of one model decode in one
batch whatever their kind and length (``engine.batching``), so concurrent requests' lookaheads share their
forwards, and share them with answers when one model is its own draft.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..batching import DecodeBatch
from ..graphs import graphs_for
from ..steps import LookaheadRow
from .requests import Request

logger = logging.getLogger(__name__)

# Empty batches kept for the next rows (their buffers and captured graphs): only batches with captured graphs
# are worth keeping (eager buffers are cheap to make), up to this share of the device's memory per loop.
IDLE_MEMORY_SHARE = 0.2


def idle_budget(device) -> int:
    """Bytes of empty batches' buffers a loop keeps on ``device``."""
    device = torch.device(device)
    if device.type != "cuda":
        return 0
    return int(torch.cuda.get_device_properties(device).total_memory * IDLE_MEMORY_SHARE)


@dataclass(eq=False)
class Lookahead:
    """A row a request's steps asked for: when it ends, its result resumes the steps (``task``)."""

    task: Any  # loop._Task
    row: LookaheadRow

    def cancelled(self) -> bool:
        return self.task.ended or self.task.request.cancelled


@dataclass(eq=False)
class Answer:
    """A generation's answer row (``speckv.AnswerRow``): its chunks stream to its request."""

    request: Request
    row: Any

    def cancelled(self) -> bool:
        return self.request.cancelled


class DecodeRows:
    """Every decode batch of one loop. ``answer_ended(request)`` is told when a generation's answer is over
    (finished, failed or cancelled); ``task_failed(task, error)`` when a lookahead row fails its request."""

    def __init__(self, lock, *, max_batch_size: int, cuda_graphs: bool,
                 answer_ended: Callable[[Request], None], task_failed: Callable[[Any, BaseException], None]) -> None:
        self.lock = lock
        self.max_batch_size = max_batch_size
        self.cuda_graphs = cuda_graphs
        self._answer_ended = answer_ended
        self._task_failed = task_failed
        self.batches: list[DecodeBatch] = []
        self._idle: list[DecodeBatch] = []

    def __len__(self) -> int:
        """Rows decoding now (read from another thread, it is a snapshot)."""
        return sum(len(b) for b in list(self.batches))

    def join(self, entry, model, expected: int = 1) -> None:
        """Put a started row into a batch of its model that fits it (a new one, ``expected`` rows wide, if none
        does)."""
        joining = entry.row.joining()
        batch = next((b for b in self.batches if b.accepts(model, joining.cache)), None)
        if batch is None:
            batch = next((b for b in self._idle if b.accepts(model, joining.cache)), None)
            if batch is not None:
                self._idle.remove(batch)
            else:
                device = joining.cache.layers[0].keys.device
                batch = DecodeBatch.for_cache(model, joining.cache, max_slots=self.max_batch_size, slots=expected,
                                              graphs=graphs_for(device, self.cuda_graphs))
            self.batches.append(batch)
        with self.lock:
            batch.add(entry, joining)
        entry.row.joined()

    def step_all(self) -> None:
        for batch in list(self.batches):
            self._step(batch)
        self._retire_empty()

    def fail_all(self, exc: BaseException) -> None:
        """Every answer row gets ``exc`` (lookahead rows end with their requests' steps) and all batches go."""
        for batch in self.batches:
            for entry in batch.rows:
                if isinstance(entry, Answer):
                    entry.request.fail(exc)
        self.batches = []

    def clear_idle(self) -> None:
        self._idle = []

    def _step(self, batch: DecodeBatch) -> None:
        """One decode step of every row in ``batch``: one forward, then each row takes its token."""
        batch.remove([i for i, entry in enumerate(batch.rows) if not self._leaves(entry)])
        if not len(batch):
            return
        try:
            with self.lock:
                tokens = batch.step()
        except BaseException as exc:  # e.g. out of memory: every row of this batch ends with it
            logger.warning("a decode step of %d rows failed: %r", len(batch), exc)
            for entry in batch.rows:
                self._fail(entry, exc)
            batch.remove([])
            return
        keep = []
        for i, entry in enumerate(batch.rows):
            try:
                ended = self._take(batch, i, entry, tokens[i])
            except Exception as exc:  # a tokenizer error ends this row only
                self._fail(entry, exc)
                continue
            if not ended:
                keep.append(i)
        batch.remove(keep)

    def _leaves(self, entry) -> bool:
        """Whether a row leaves before the step because its request was cancelled."""
        if not entry.cancelled():
            return False
        if isinstance(entry, Answer):
            entry.request.fail_cancelled()
            self._answer_ended(entry.request)
        return True

    def _take(self, batch: DecodeBatch, index: int, entry, token: int) -> bool:
        """Give a row its sampled token; True once the row has ended."""
        if isinstance(entry, Answer):
            step = entry.row.push(token)
            entry.request.send_chunk(entry.row.chunk(step))
            if step.finish_reason is None:
                return False
            self._answer_ended(entry.request)
            return True
        if not entry.row.push(token):
            return False
        keep = entry.row.request.keep_prompt
        entry.task.sending = entry.row.result(batch.prompt_prefix(index, keep) if keep is not None else None)
        entry.task.parked = False
        return True

    def _fail(self, entry, exc: BaseException) -> None:
        if isinstance(entry, Answer):
            entry.request.fail(exc)
            self._answer_ended(entry.request)
        elif not entry.task.ended:
            self._task_failed(entry.task, exc)

    def _retire_empty(self) -> None:
        empty = [b for b in self.batches if not len(b)]
        if not empty:
            return
        self.batches = [b for b in self.batches if len(b)]
        for batch in empty:
            if batch.graphs is not None and not batch.lent:
                self._idle.insert(0, batch)
        kept, total = [], 0
        for batch in self._idle:  # most recently used first
            total += batch.store.nbytes
            if total <= idle_budget(batch.device):
                kept.append(batch)
        self._idle = kept
