"""The engine's loop as a user meets it: lookaheads that interleave with other streams and stop when cancelled,
streams closed from another thread, seeded sampling alone and batched, options refused before any work, and
a clean exit while a daemon thread keeps calling (FINDINGS-2 D3, D5, D6, D7, D8). Tiny random models.

Time on this machine is no measure, so D5 is measured in forwards: hooks on both models record every forward
in order, and the gaps between one stream's decode steps are counted in other forwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from draftapprox_integrations.engine import ConfigError, DraftApproxEngine, SpecKVConfig
from tests.helpers import words

PROMPTS = [words(60, s) + " Which word came first?" for s in range(3)] + [words(95, 7) + " Name the last word."]
CFG = SpecKVConfig(budget=24, window_size=4)


@pytest.fixture(scope="module")
def pair(tiny_model_factory):
    """A two-model engine: the draft's lookahead runs on its own model, so its forwards can be told apart."""
    target, draft = str(tiny_model_factory("llama")), str(tiny_model_factory("llama", seed=1))
    return DraftApproxEngine(draft, target, device="cpu", dtype="float32").load()


class _Forwards:
    """Every forward of the draft and the target, in order: ("draft" | "target", rows, query length)."""

    def __init__(self, engine) -> None:
        self.events: list[tuple[str, int, int]] = []
        self._handles = [
            model.register_forward_hook(self._hook(name), with_kwargs=True)
            for name, model in (("draft", engine.draft.model), ("target", engine.target.model))
        ]

    def _hook(self, name):
        def hook(module, args, kwargs, output):
            ids = kwargs["input_ids"]
            self.events.append((name, ids.shape[0], ids.shape[1]))

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def test_a_lookahead_interleaves_with_a_running_stream(pair):
    # FINDINGS-2 D5: a new request's whole lookahead ran inside one loop step (every stream froze 3.1 s).
    seen = _Forwards(pair)
    try:
        streaming = pair.stream(PROMPTS[0], method="snapkv", config=CFG, max_new_tokens=120)
        next(streaming)
        other = pair.generate(PROMPTS[1], config=CFG.replace(lookahead_tokens=40), max_new_tokens=3)
        list(streaming)
    finally:
        seen.close()
    assert other.stats.lookahead_tokens == 40
    decode_steps = [i for i, (model, _, q) in enumerate(seen.events) if model == "target" and q == 1]
    lookahead = [i for i, (model, _, q) in enumerate(seen.events) if model == "draft" and q == 1]
    assert len(lookahead) == 39  # the draft's 40 tokens: the first from its prefill, 39 decode forwards
    gaps = [b - a - 1 for a, b in zip(decode_steps, decode_steps[1:])]
    assert max(gaps) <= 2  # between two steps of the stream: at most one prefill and one lookahead forward
    # ... and the lookahead really ran while the stream decoded: its forwards sit between the stream's steps.
    assert decode_steps[0] < lookahead[0] and lookahead[-1] < decode_steps[-1]


def test_a_cancelled_lookahead_stops_within_two_forwards(pair):
    seen = _Forwards(pair)
    try:
        doomed = pair.stream(PROMPTS[2], config=CFG, max_new_tokens=1500)  # lookahead = max_new_tokens
        reader = threading.Thread(target=lambda: list(doomed))
        reader.start()
        while sum(1 for m, _, q in seen.events if m == "draft" and q == 1) < 5:  # the lookahead is decoding
            time.sleep(0.005)
        doomed.close()
        at_cancel = len(seen.events)
        reader.join(30)
        assert not reader.is_alive()
        quick = pair.generate(PROMPTS[1], method="snapkv", config=CFG, max_new_tokens=3)
    finally:
        seen.close()
    assert quick.stats.completion_tokens == 3
    after = [e for e in seen.events[at_cancel:] if e[0] == "draft"]
    assert len(after) <= 2, after


def test_close_from_another_thread_ends_a_stream_being_read(pair):
    # FINDINGS-2 D8: close() raised "generator already executing" and the generation ran to the end.
    it = pair.stream(PROMPTS[0], method="snapkv", config=CFG, max_new_tokens=2000)
    got: list = []
    errors: list = []

    def read():
        try:
            for chunk in it:
                got.append(chunk)
                time.sleep(0.002)  # a slow reader: it is inside next() most of the time
        except Exception as exc:  # the test fails on any
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    while len(got) < 3:
        time.sleep(0.005)
    it.close()
    reader.join(30)
    assert not reader.is_alive() and errors == []
    assert 3 <= len(got) < 2000 and all(c.finish_reason is None for c in got)
    with pytest.raises(StopIteration):
        next(it)


def test_cancel_is_close_and_the_engine_serves_on(pair):
    expected = pair.generate(PROMPTS[1], method="snapkv", config=CFG, max_new_tokens=5).token_ids
    stream = pair.stream(PROMPTS[0], method="snapkv", config=CFG, max_new_tokens=2000)
    next(stream)
    stream.cancel()
    assert list(stream) == []  # the reader sees the end
    assert pair.generate(PROMPTS[1], method="snapkv", config=CFG, max_new_tokens=5).token_ids == expected


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999])
def test_seeded_top_p_sampling_is_the_same_alone_and_batched(pair, top_p):
    # FINDINGS-2 D7: 0/8, 2/8 and 1/8 rows equal for top_p 0.5 / 0.9 / 0.999.
    options = dict(method="snapkv", config=CFG, max_new_tokens=30, temperature=0.7, top_p=top_p, seed=11)
    alone = [pair.generate(p, **options).token_ids for p in PROMPTS]
    batched = [r.token_ids for r in pair.generate_batch(PROMPTS, **options)]
    assert batched == alone
    assert len({tuple(t) for t in alone}) > 1


def test_streamingllm_with_a_global_allocation_is_refused_before_any_work(tiny_model_factory):
    # FINDINGS-2 D3: it crashed after the whole prefill.
    folder = str(tiny_model_factory("llama"))
    engine = DraftApproxEngine(folder, folder, device="cpu", dtype="float32")
    for options in (dict(config=CFG.replace(allocation="global")), dict(config=CFG.replace(allocation="global"), rate=0.2)):
        with pytest.raises(ConfigError, match="allocation='global'"):
            engine.generate(PROMPTS[0], method="streamingllm", **options)
    assert not engine.loaded


def test_the_process_exits_cleanly_while_a_daemon_thread_keeps_calling(tiny_model_factory):
    # FINDINGS-2 D6: the next call after the exit hook started a new loop thread inside torch at teardown:
    # "terminate called without an active exception", rc 134.
    folder = str(tiny_model_factory("llama"))
    script = textwrap.dedent(f"""
        import threading, time
        from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
        engine = DraftApproxEngine({folder!r}, {folder!r}, device="cpu", dtype="float32").load()
        config = SpecKVConfig(budget=24, window_size=4, lookahead_tokens=2)
        def worker():
            while True:
                try:
                    engine.generate({PROMPTS[0]!r}, config=config, max_new_tokens=50)
                except Exception as exc:
                    print("worker got", type(exc).__name__, flush=True)
        threading.Thread(target=worker, daemon=True).start()
        time.sleep(1.0)
        print("main returns", flush=True)
    """)
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert "terminate called" not in done.stderr and "main returns" in done.stdout
