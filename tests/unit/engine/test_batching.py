"""The engine's loop decodes answers together: batched results equal the same calls run one by one.

Tiny random models (llama; gemma3_text for sliding-window layers). Each forward of the target is recorded
with its batch size, so the tests also see that rows really share forwards.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest
import torch

from draftapprox_integrations.engine import ConfigError, ContextLengthError, DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.errors import MissingExtraError, naming_row
from draftapprox_integrations.engine.batching import DecodeBatch, Joining
from draftapprox_integrations.engine.sampling import SamplingRule
from draftapprox_integrations.engine.slots import bucket
from draftapprox_integrations.engine.decoding import new_cache
from tests.helpers import dynamic_greedy, words

PROMPTS = [words(60, seed) + " Which word came first?" for seed in range(3)] + [words(95, 7) + " Name the last word."]
CFG = SpecKVConfig(budget=24, window_size=4)


def _engine(tiny_model_factory, arch: str = "llama", **kwargs) -> DraftApproxEngine:
    folder = str(tiny_model_factory(arch))
    return DraftApproxEngine(folder, folder, device="cpu", dtype="float32", **kwargs).load()


@pytest.fixture
def engine(tiny_model_factory):
    return _engine(tiny_model_factory)


class _BatchSizes:
    """The batch size of every target forward (a forward hook on the model)."""

    def __init__(self, engine):
        self.sizes: list[int] = []
        self._handle = engine.target.model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.sizes.append(int(output.logits.shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def _one_by_one(engine, prompts, **options):
    return [engine.generate(p, **options) for p in prompts]


@pytest.mark.parametrize(
    "options",
    [
        dict(method="speckv", config=CFG),
        dict(method="snapkv", config=CFG),
        dict(method="streamingllm", config=SpecKVConfig(budget=24, window_size=4, sink_tokens=4)),
        dict(method="full"),
        dict(method="speckv", config=CFG.replace(lookahead_tokens=3)),
        dict(method="speckv", config=CFG.replace(allocation="global")),
        dict(method="speckv", config=CFG.replace(budget=40, coverage=0.6, coverage_floor=4)),
    ],
    ids=["speckv", "snapkv", "streamingllm", "full", "speckv-lookahead3", "speckv-global", "speckv-coverage"],
)
def test_a_batch_answers_like_the_same_calls_one_by_one(engine, options):
    options = dict(options, max_new_tokens=12)
    expected = _one_by_one(engine, PROMPTS, **options)
    with _BatchSizes(engine) as seen:
        got = engine.generate_batch(PROMPTS, **options)
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    assert [r.text for r in got] == [r.text for r in expected]
    assert [r.finish_reason for r in got] == [r.finish_reason for r in expected]
    assert [r.stats.kv_entries_kept for r in got] == [r.stats.kv_entries_kept for r in expected]
    # Each row has its own slot: compressed caches of one budget (or per-layer shares of it, under a global
    # allocation) and full caches of prompts of other lengths all stack, each row masked to its own entries.
    assert max(seen.sizes) == len(PROMPTS)


def test_a_batch_of_one_equals_generate(engine):
    single = engine.generate(PROMPTS[0], config=CFG, max_new_tokens=10)
    (batched,) = engine.generate_batch([PROMPTS[0]], config=CFG, max_new_tokens=10)
    assert batched.token_ids == single.token_ids and batched.text == single.text


def test_rows_finish_independently_with_their_own_stop_and_length(engine):
    # SnapKV: no lookahead, so a stop sequence cannot change which keys are kept (SpecKV's draft honours it).
    options = dict(method="snapkv", config=CFG, max_new_tokens=12)
    first = engine.generate(PROMPTS[0], **options)
    stop = first.text[len(first.text) // 2 :][:3]
    assert stop.strip()
    got = engine.generate_batch(PROMPTS, stop=[stop], **options)
    expected = _one_by_one(engine, PROMPTS, stop=[stop], **options)
    assert [(r.text, r.finish_reason) for r in got] == [(r.text, r.finish_reason) for r in expected]
    assert got[0].finish_reason == "stop" and stop not in got[0].text


def test_max_batch_size_bounds_the_rows_decoding_together(tiny_model_factory):
    engine = _engine(tiny_model_factory, max_batch_size=2)
    expected = _one_by_one(engine, PROMPTS, config=CFG, max_new_tokens=8)
    with _BatchSizes(engine) as seen:
        got = engine.generate_batch(PROMPTS, config=CFG, max_new_tokens=8)
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    assert max(seen.sizes) == 2


def test_concurrent_calls_with_mixed_methods_and_budgets_are_grouped(engine):
    calls = [
        (PROMPTS[0], dict(method="speckv", config=CFG)),
        (PROMPTS[1], dict(method="snapkv", config=CFG)),
        (PROMPTS[2], dict(method="speckv", budget=32)),
        (PROMPTS[3], dict(method="full")),
        (PROMPTS[1], dict(method="streamingllm", config=SpecKVConfig(budget=24, window_size=4))),
    ]
    expected = [engine.generate(p, max_new_tokens=10, **o).token_ids for p, o in calls]
    with _BatchSizes(engine) as seen, cf.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(engine.generate, p, max_new_tokens=10, **o) for p, o in calls]
        got = [f.result(timeout=120).token_ids for f in futures]
    assert got == expected
    assert len(seen.sizes) < sum(len(t) + 1 for t in expected)  # some forwards were shared


def test_a_row_that_arrives_mid_decode_joins_the_running_batch(engine):
    options = dict(config=CFG, max_new_tokens=40)
    expected = [engine.generate(p, **options).token_ids for p in PROMPTS[:2]]
    first = engine.stream(PROMPTS[0], **options)
    chunks = [next(first) for _ in range(3)]  # the first answer is decoding
    with _BatchSizes(engine) as seen:
        second = engine.generate(PROMPTS[1], **options)
        rest = list(first)
    tokens = [c.token_id for c in chunks + rest if c.token_id is not None]
    assert tokens == expected[0]
    assert second.token_ids == expected[1]
    assert 2 in seen.sizes  # the late row was padded into the running batch instead of waiting


def test_a_row_joins_a_batch_whose_padding_was_trimmed(engine):
    # FINDINGS-2 D2: A decodes, B joins one step behind (left-padded), A leaves (B's padding is trimmed),
    # then C joins B's batch: the join must pad C to what the batch holds now, not to its step count.
    options = dict(config=CFG.replace(lookahead_tokens=4))
    long_b = engine.generate(PROMPTS[1], max_new_tokens=300, **options).token_ids
    expected_c = engine.generate(PROMPTS[2], max_new_tokens=6, **options).token_ids
    expected_d = engine.generate(PROMPTS[3], max_new_tokens=3, **options).token_ids
    a = engine.stream(PROMPTS[0], max_new_tokens=300, **options)
    next(a)
    b = engine.stream(PROMPTS[1], max_new_tokens=300, **options)
    b_chunks = [next(b)]
    a.close()
    b_chunks += [next(b) for _ in range(3)]  # steps after A's removal: B's padding column is gone
    with _BatchSizes(engine) as seen:
        got_c = engine.generate(PROMPTS[2], max_new_tokens=6, **options).token_ids
        got_d = engine.generate(PROMPTS[3], max_new_tokens=3, **options).token_ids  # a later row of the same shape
    b_chunks += list(b)
    assert got_c == expected_c and got_d == expected_d
    assert [c.token_id for c in b_chunks if c.token_id is not None] == long_b
    assert 2 in seen.sizes  # C and D really decoded beside B


def test_a_cancelled_row_leaves_the_others_untouched(engine):
    options = dict(config=CFG, max_new_tokens=12)
    expected = engine.generate(PROMPTS[1], **options).token_ids
    doomed = engine.stream(PROMPTS[0], max_new_tokens=400, method="snapkv", config=CFG)
    next(doomed)
    doomed.close()  # cancelled while the other row decodes beside it
    assert engine.generate(PROMPTS[1], **options).token_ids == expected


def test_sliding_window_rows_batch_when_they_start_together(tiny_model_factory):
    engine = _engine(tiny_model_factory, "gemma3_text")
    prompts = [words(40, s) + " Which word came first?" for s in range(3)]
    options = dict(method="speckv", config=SpecKVConfig(budget=16, window_size=4), max_new_tokens=8)
    expected = _one_by_one(engine, prompts, **options)
    got = engine.generate_batch(prompts, **options)
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]


def test_a_sliding_window_row_joins_a_running_batch(tiny_model_factory):
    # A sliding layer is a ring per slot, so a row no longer waits for a batch that has not decoded yet.
    engine = _engine(tiny_model_factory, "gemma3_text")
    options = dict(method="snapkv", config=SpecKVConfig(budget=16, window_size=4))
    long_answer = engine.generate(PROMPTS[0], max_new_tokens=40, **options).token_ids
    late = engine.generate(PROMPTS[1], max_new_tokens=12, **options).token_ids
    first = engine.stream(PROMPTS[0], max_new_tokens=40, **options)
    chunks = [next(first) for _ in range(15)]  # past the tiny model's sliding window of 8
    with _BatchSizes(engine) as seen:
        got = engine.generate(PROMPTS[1], max_new_tokens=12, **options).token_ids
        chunks += list(first)
    assert got == late
    assert [c.token_id for c in chunks if c.token_id is not None] == long_answer
    assert 2 in seen.sizes


# -- bad input: named by row, before any work ---------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "error", "row"),
    [("", ConfigError, 2), (words(5000, 1), ContextLengthError, 1)],
    ids=["empty", "over-the-context"],
)
def test_a_bad_prompt_in_a_batch_is_named_before_any_work(tiny_model_factory, monkeypatch, bad, error, row):
    engine = _engine(tiny_model_factory)
    # A short context to overflow, undone afterwards: engines on the same folder share these weights (and config)
    # while another engine holds them, so a lasting edit shrank later tests' context to 512.
    monkeypatch.setattr(engine.target.model.config, "max_position_embeddings", 512)
    prompts = list(PROMPTS[:3])
    prompts.insert(row, bad)
    with _BatchSizes(engine) as seen, pytest.raises(error, match=rf"^prompt {row}: "):
        engine.generate_batch(prompts, config=CFG, max_new_tokens=4)
    assert seen.sizes == []


def test_any_error_of_a_row_names_its_prompt_and_keeps_its_type(tiny_model_factory):
    # FINDINGS-2 D9: only the package's own errors named their row. A user's model (a ready object) that
    # refuses one prompt: the batch raises that model's own error, named.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from draftapprox_integrations.engine.prompts import encode_prompt, normalize_messages

    folder = str(tiny_model_factory("llama"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    engine = DraftApproxEngine(model, model, draft_tokenizer=tokenizer, target_tokenizer=tokenizer)
    lengths = [len(encode_prompt(engine.target, *normalize_messages(p, None))) for p in PROMPTS]
    assert lengths.count(lengths[3]) == 1

    def refuse(module, args, kwargs):
        if kwargs.get("input_ids") is not None and kwargs["input_ids"].shape[-1] == lengths[3]:
            raise ValueError("this model refuses that prompt")

    handle = model.register_forward_pre_hook(refuse, with_kwargs=True)
    try:
        with pytest.raises(ValueError, match=r"^prompt 3: this model refuses that prompt$") as caught:
            engine.generate_batch(PROMPTS, method="snapkv", config=CFG, max_new_tokens=4)
        assert not isinstance(caught.value, ConfigError)  # the model's own ValueError, not the package's
    finally:
        handle.remove()


@pytest.mark.parametrize(
    "error",
    [MissingExtraError("the thing", "langchain", "langchain_core"), KeyError("gone"), RuntimeError("boom"), ConfigError("bad")],
    ids=["three-argument init", "KeyError", "RuntimeError", "package error"],
)
def test_naming_a_row_keeps_the_errors_type_and_attributes(error):
    def fail():
        raise error

    with pytest.raises(type(error)) as caught:
        naming_row(4, fail)
    assert str(caught.value).strip("'\"").startswith("prompt 4: ") and caught.value.__cause__ is error
    assert caught.value.__dict__ == error.__dict__  # MissingExtraError's feature and extra, say


@pytest.mark.parametrize("prompts", ["one prompt", {"role": "user"}, 7])
def test_generate_batch_wants_a_list(engine, prompts):
    with pytest.raises(ConfigError, match="list of prompts"):
        engine.generate_batch(prompts)


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "8"])
def test_max_batch_size_is_checked(tiny_model_factory, size):
    with pytest.raises(ConfigError, match="max_batch_size"):
        DraftApproxEngine(str(tiny_model_factory("llama")), None, device="cpu", max_batch_size=size)


def test_a_thread_holding_the_engine_lock_gets_an_error_not_a_hang(engine):
    with engine.lock:
        with pytest.raises(Exception, match="holding engine.lock"):
            engine.generate(PROMPTS[0], config=CFG, max_new_tokens=2)


def test_the_loop_thread_exits_when_idle(tiny_model_factory):
    engine = _engine(tiny_model_factory)
    engine._loop.idle_seconds = 0.05
    engine.generate(PROMPTS[0], config=CFG, max_new_tokens=2)
    thread = engine._loop._thread
    if thread is not None:
        thread.join(5)
        assert not thread.is_alive()
    assert engine.generate(PROMPTS[0], config=CFG, max_new_tokens=2).stats.completion_tokens == 2  # restarts


# -- DecodeBatch on its own ----------------------------------------------------------------------------


def _prefilled(model, ids):
    cache = new_cache(model)
    out = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    return cache, out.logits[0, -1]


def _plain_greedy(model, ids, n):
    """Reference: n greedy tokens after ``ids`` on a plain dynamic cache."""
    return dynamic_greedy(model, *_prefilled(model, ids), len(ids), n)


@torch.no_grad()
def test_rows_of_other_lengths_join_late_leave_early_and_decode_as_alone(engine):
    # Three rows of three prompt lengths in one batch of slots: b joins two steps after a, c after five; a
    # leaves early (c moves into its slot); the store grows past its first capacity. Each row's tokens equal
    # its own plain decode.
    model = engine.target.model
    prompts = {"a": list(range(5, 45)), "b": list(range(50, 75)), "c": list(range(80, 140))}
    wanted = {"a": 4, "b": 30, "c": 12}
    expected = {k: _plain_greedy(model, ids, wanted[k]) for k, ids in prompts.items()}
    got = {k: [] for k in prompts}
    batch = None
    joins = {0: "a", 2: "b", 5: "c"}
    for step in range(40):
        if step in joins:
            name = joins[step]
            cache, logits = _prefilled(model, prompts[name])
            token = int(logits.argmax())
            got[name].append(token)
            joining = Joining(cache, token, len(prompts[name]), SamplingRule(), headroom=2)
            batch = batch or DecodeBatch.for_cache(model, cache)
            assert batch.accepts(model, cache)
            batch.add(name, joining)
        if not len(batch):
            break
        tokens = batch.step()
        keep = []
        for i, name in enumerate(batch.rows):
            got[name].append(tokens[i])
            if len(got[name]) < wanted[name]:
                keep.append(i)
        batch.remove(keep)
    assert got == expected
    assert batch.store.capacity > bucket(60 + 2)  # it grew while c and b decoded


def test_size_classes():
    assert [bucket(n) for n in (1, 64, 65, 80, 81, 160, 161, 2048, 2049, 33000)] == [64, 64, 72, 80, 88, 160, 176, 2048, 2304, 36864]
