"""A stateful stress test of the engine's loop: random arrivals, joins, leaves, closes, cancels, budgets,
methods, stops, streams and generate_batches, every result compared with the same request run alone.

Hypothesis drives one engine through random schedules (``ServingSchedule``): streams opened and read a little
at a time, closed early or read to the end; ``generate`` and ``generate_batch`` calls from worker threads,
some cancelled through the caller's cancel event (what the adapters' async forms set). Every answer must equal
the same request run alone on a second engine over the same weights (greedy decoding, float32), token for
token; a stream closed early must have shown a prefix of it; a call may fail only as it fails alone (or be
cancelled when it was cancelled). After each schedule the engine must go idle: no row decoding, its loop
thread gone, no stream thread left.

``make test`` runs a bounded, derandomized profile; ``DRAFTAPPROX_PROPERTY_SCALE=20`` runs twenty times as
many schedules (a long bug hunt by hand). On the code before FINDINGS-2 D2 was fixed it fails with D2's
"Sizes of tensors must match" (a row joining a batch whose padding had been trimmed).
"""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.errors import RequestCancelled
from draftapprox_integrations.engine.layer_profiles import full_attention_layers
from draftapprox_integrations.engine.locking import cancellation_scope, reset_cancellation
from tests.helpers import words
from tests.unit.properties._strategies import SETTINGS, examples

PROMPTS = [words(n, seed) + " Which word came first?" for seed, n in enumerate((30, 55, 80, 110, 45))]


@dataclass(frozen=True)
class Spec:
    """One generation request (greedy)."""

    prompt: int
    method: str
    budget: int
    lookahead: int | None
    allocation: str
    max_new_tokens: int
    stop: str | None
    layer_profile: ClassVar[tuple[float, ...]] = ()  # shares per full layer of the model under test (set per run)

    def options(self) -> dict:
        profile = self.layer_profile if self.allocation == "profile" else None
        config = SpecKVConfig(budget=self.budget, window_size=4, lookahead_tokens=self.lookahead,
                              allocation=self.allocation, layer_profile=profile)
        return dict(method=self.method, config=config, max_new_tokens=self.max_new_tokens, stop=self.stop)


@st.composite
def specs(draw) -> Spec:
    method = draw(st.sampled_from(["speckv", "speckv", "snapkv", "full", "streamingllm"]))
    allocation = "uniform" if method == "streamingllm" else draw(st.sampled_from(["uniform", "uniform", "global", "profile"]))
    return Spec(
        prompt=draw(st.integers(0, len(PROMPTS) - 1)),
        method=method,
        budget=draw(st.sampled_from([16, 24, 24, 32])),  # mostly one budget: rows that share a cache size
        lookahead=draw(st.sampled_from([None, 0, 2, 5])),
        allocation=allocation,
        max_new_tokens=draw(st.integers(1, 40)),
        stop=draw(st.sampled_from([None, None, "e", " the", "ar"])),
    )


class _Alone:
    """Each request's answer (or error) run alone on a reference engine over the same weights, cached."""

    def __init__(self, engine: DraftApproxEngine) -> None:
        self.engine = engine
        self._results: dict[Spec, tuple] = {}

    def __call__(self, spec: Spec) -> tuple:
        if spec not in self._results:
            try:
                r = self.engine.generate(PROMPTS[spec.prompt], **spec.options())
                self._results[spec] = ("ok", r.token_ids, r.text, r.finish_reason)
            except Exception as exc:
                self._results[spec] = ("error", type(exc))
        return self._results[spec]


def _outcome(work) -> tuple:
    try:
        r = work()
        return ("ok", r.token_ids, r.text, r.finish_reason)
    except Exception as exc:
        return ("error", type(exc))


class ServingSchedule(RuleBasedStateMachine):
    """Random schedules against one engine (given by the test); see the module docstring."""

    engine: DraftApproxEngine
    alone: _Alone

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[tuple[Spec, object, list]] = []
        self.calls: list[tuple[list[Spec], cf.Future, threading.Event | None]] = []
        self.cancellable: list[threading.Event] = []  # calls a rule may still cancel (rules alone change it)
        self.pool = cf.ThreadPoolExecutor(6)

    # -- streams ----------------------------------------------------------------------------------------

    @rule(spec=specs())
    def open_stream(self, spec):
        try:
            it = self.engine.stream(PROMPTS[spec.prompt], **spec.options())
            first = next(it)
        except Exception as exc:
            assert self.alone(spec) == ("error", type(exc)), (spec, exc)
            return
        self.streams.append((spec, it, [first]))

    @precondition(lambda self: self.streams)
    @rule(which=st.integers(0, 7), n=st.integers(1, 6))
    def read(self, which, n):
        spec, it, chunks = self.streams[which % len(self.streams)]
        for _ in range(n):
            if chunks[-1].finish_reason is not None:
                return
            chunks.append(next(it))

    @precondition(lambda self: self.streams)
    @rule(which=st.integers(0, 7))
    def close_stream(self, which):
        spec, it, chunks = self.streams.pop(which % len(self.streams))
        it.close()
        self._check_prefix(spec, chunks)

    @precondition(lambda self: self.streams)
    @rule(which=st.integers(0, 7))
    def finish_stream(self, which):
        spec, it, chunks = self.streams.pop(which % len(self.streams))
        chunks += list(it)
        ids = [c.token_id for c in chunks if c.token_id is not None]
        text = "".join(c.text for c in chunks)
        assert ("ok", ids, text, chunks[-1].finish_reason) == self.alone(spec), spec

    # -- calls from other threads -----------------------------------------------------------------------

    @rule(spec=specs(), cancellable=st.booleans())
    def call_generate(self, spec, cancellable):
        event = threading.Event() if cancellable else None
        future = self.pool.submit(self._in_scope, event, lambda: self.engine.generate(PROMPTS[spec.prompt], **spec.options()))
        self.calls.append(([spec], future, event))
        if event is not None:
            self.cancellable.append(event)

    @rule(base=specs(), prompts=st.lists(st.integers(0, len(PROMPTS) - 1), min_size=2, max_size=5))
    def call_batch(self, base, prompts):
        batch = [Spec(p, *[getattr(base, f) for f in ("method", "budget", "lookahead", "allocation", "max_new_tokens", "stop")])
                 for p in prompts]
        future = self.pool.submit(
            self.engine.generate_batch, [PROMPTS[s.prompt] for s in batch], **base.options()
        )
        self.calls.append((batch, future, None))

    @precondition(lambda self: self.cancellable)
    @rule(which=st.integers(0, 7))
    def cancel_call(self, which):
        self.cancellable.pop(which % len(self.cancellable)).set()  # the call may have finished already: fine

    @rule(ms=st.sampled_from([0, 5, 30]))
    def wait(self, ms):
        time.sleep(ms / 1000)

    def _in_scope(self, event, work):
        """Run ``work`` with ``event`` as the caller's cancel event (as the adapters' async forms do)."""
        if event is None:
            return work()
        own, token = cancellation_scope()
        done = threading.Event()

        def relay():
            while not done.is_set():
                if event.wait(0.005):
                    own.set()
                    return

        threading.Thread(target=relay, daemon=True).start()
        try:
            return work()
        finally:
            reset_cancellation(token)
            done.set()

    # -- checks -----------------------------------------------------------------------------------------

    def _check_prefix(self, spec: Spec, chunks: list) -> None:
        alone = self.alone(spec)
        assert alone[0] == "ok", (spec, alone)
        ids = [c.token_id for c in chunks if c.token_id is not None]
        assert ids == alone[1][: len(ids)], spec

    def _check_call(self, batch: list[Spec], future: cf.Future, event) -> None:
        try:
            result = future.result(timeout=120)
        except RequestCancelled:
            assert event is not None and event.is_set(), batch  # only a cancelled call may end so
            return
        except Exception as exc:
            if len(batch) == 1:
                assert self.alone(batch[0]) == ("error", type(exc)), (batch, exc)
            else:  # a batch raises the first failing row's error, named
                assert any(self.alone(s) == ("error", type(exc)) for s in batch), (batch, exc)
            return
        results = result if isinstance(result, list) else [result]
        for spec, got in zip(batch, results):
            assert _outcome(lambda got=got: got) == self.alone(spec), spec

    @invariant()
    def finished_calls_are_right(self):
        done = [c for c in self.calls if c[1].done()]
        self.calls = [c for c in self.calls if not c[1].done()]
        for call in done:
            self._check_call(*call)

    def teardown(self):
        try:
            for spec, it, chunks in self.streams:
                it.close()
                self._check_prefix(spec, chunks)
            for call in self.calls:
                self._check_call(*call)
        finally:
            for _, _, event in self.calls:
                if event is not None:
                    event.set()
            self.pool.shutdown(wait=True)
        _wait_idle(self.engine)


def _wait_idle(engine: DraftApproxEngine, seconds: float = 20.0) -> None:
    """No row decoding, no loop thread (it exits when idle), no stream thread: nothing left behind."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        thread = engine._loop._thread
        names = [t.name for t in threading.enumerate()]
        if engine._loop.active == 0 and (thread is None or not thread.is_alive()) and "draftapprox-stream" not in names:
            return
        time.sleep(0.05)
    raise AssertionError(f"the engine did not go idle: {engine._loop.active} rows, threads {names}")


@pytest.mark.parametrize("arch,max_batch_size", [("llama", 3), ("llama", 8), ("gemma3_text", 4)])
def test_random_schedules_answer_as_alone(tiny_model_factory, tmp_path, arch, max_batch_size):
    folder = str(tiny_model_factory(arch))
    engine = DraftApproxEngine(folder, folder, device="cpu", dtype="float32", max_batch_size=max_batch_size).load()
    engine._loop.idle_seconds = 0.2  # so that "the loop thread is gone" is checked quickly
    ServingSchedule.engine = engine
    Spec.layer_profile = tuple(float(i + 1) for i in range(full_attention_layers(engine.target.model)))
    # The reference reads its own copy of the weights: what it runs alone never shares a forward's model with
    # the schedule (two engines over one set of weights are tested in tests/unit/engine/test_shared_weights.py).
    copy = shutil.copytree(folder, tmp_path / "reference")
    ServingSchedule.alone = _Alone(DraftApproxEngine(str(copy), str(copy), device="cpu", dtype="float32").load())
    run_state_machine_as_test(
        ServingSchedule, settings=settings(max_examples=examples(8), stateful_step_count=14, **SETTINGS)
    )
