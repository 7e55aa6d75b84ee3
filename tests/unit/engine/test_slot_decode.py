"""The static slot cache decodes exactly what a plain dynamic cache decodes, with one host read per step.

The decode batch (``engine.batching``) keeps every row in a slot of fixed buffers, the layout a CUDA graph
replays (``engine.graphs``; the capture itself needs CUDA, so here the same step runs eagerly). The reference
is transformers' own decode over a ``DynamicCache`` (true positions passed explicitly), after the same
compressed prefill: float32, tiny random models, greedy tokens must be identical.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.batching import DecodeBatch, Joining
from draftapprox_integrations.engine.decoding import new_cache
from draftapprox_integrations.engine.graphs import _rows_bucket, graphs_for
from draftapprox_integrations.engine.prompts import encode_prompt, normalize_messages
from draftapprox_integrations.engine.sampling import SamplingRule
from draftapprox_integrations.engine.slots import bucket
from draftapprox_integrations.engine.speckv import prefill_and_compress
from tests.helpers import dynamic_greedy, words

PROMPTS = [words(70, s) + " Which word came first?" for s in range(3)]


def _engine(tiny_model_factory, arch, *, two_models: bool = False):
    """An engine on a tiny model, its own draft, or (``two_models``) with another tiny model as its draft:
    then its SpecKV prefill is the same computation as ``prefill_and_compress`` with the draft's lookahead."""
    target = str(tiny_model_factory(arch))
    draft = str(tiny_model_factory(arch, seed=1)) if two_models else target
    return DraftApproxEngine(draft, target, device="cpu", dtype="float32").load()


@torch.no_grad()
def _dynamic_lookahead(model, ids, n):
    cache = new_cache(model)
    logits = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True).logits[0, -1]
    return dynamic_greedy(model, cache, logits, len(ids), n)


@pytest.mark.parametrize(
    "arch,method,options",
    [
        ("llama", "speckv", {}),
        ("llama", "snapkv", {}),
        ("llama", "full", {}),
        ("llama", "speckv", {"allocation": "global"}),
        ("llama", "snapkv", {"allocation": "global"}),
        ("llama", "speckv", {"allocation": "profile", "layer_profile": (1.0, 2.0, 3.0, 4.0)}),
        ("llama", "speckv", {"coverage": 0.8, "coverage_floor": 4}),
        ("gemma3_text", "speckv", {"allocation": "profile", "layer_profile": (1.0, 3.0)}),
        ("gemma3_text", "speckv", {}),
        ("gemma3_text", "snapkv", {}),
        ("gemma3_text", "full", {}),
    ],
)
def test_slot_decode_equals_dynamic_cache_decode(tiny_model_factory, arch, method, options):
    engine = _engine(tiny_model_factory, arch, two_models=True)
    target = engine.target
    cfg = SpecKVConfig(budget=24, window_size=4, lookahead_tokens=5, **options)
    n = 20  # past the tiny gemma's sliding window of 8: its ring wraps
    for prompt in PROMPTS:
        ids = encode_prompt(target, *normalize_messages(prompt, False))
        look = _dynamic_lookahead(engine.draft.model, ids, 5) if method == "speckv" else []
        prefill = prefill_and_compress(target, ids, look, method=method, config=cfg)
        expected = dynamic_greedy(target.model, prefill.cache, prefill.first_logits, prefill.prompt_len, n)
        got = engine.generate(prompt, method=method, config=cfg, max_new_tokens=n, chat=False)
        assert got.token_ids == expected, (arch, method, options)
    # ... and a batch of them, rows joining and leaving (different answer lengths), equals the same calls alone.
    alone = [engine.generate(p, method=method, config=cfg, max_new_tokens=6 + 5 * i, chat=False).token_ids
             for i, p in enumerate(PROMPTS)]
    streams = [engine.stream(p, method=method, config=cfg, max_new_tokens=6 + 5 * i, chat=False) for i, p in enumerate(PROMPTS)]
    firsts = [next(s) for s in streams[:1]]  # the first row decodes before the others join
    got = [[c.token_id for c in firsts + list(streams[0])]] + [[c.token_id for c in s] for s in streams[1:]]
    assert [[t for t in row if t is not None] for row in got] == alone


def test_each_layer_of_the_slot_store_is_sized_for_its_own_entries(tiny_model_factory):
    """Under a layer profile each layer keeps its own count: the store gives each full layer the capacity
    it needs (its entries and the row's headroom, in a size class), not the largest layer's everywhere."""
    engine = _engine(tiny_model_factory, "llama", two_models=True)
    target = engine.target
    cfg = SpecKVConfig(budget=40, window_size=4, allocation="profile", layer_profile=(1.0, 2.0, 3.0, 6.0))
    ids = encode_prompt(target, *normalize_messages(PROMPTS[0], False))
    prefill = prefill_and_compress(target, ids, _dynamic_lookahead(engine.draft.model, ids, 5), method="speckv", config=cfg)
    entries = [layer.keys.shape[-2] for layer in prefill.cache.layers]
    assert entries == sorted(entries) and entries[0] < entries[-1] and sum(entries) == 40 * len(entries)
    batch = DecodeBatch.for_cache(target.model, prefill.cache)
    batch.add(0, Joining(prefill.cache, 11, len(ids), SamplingRule(), headroom=8))
    assert list(batch.store.capacities) == [bucket(n + 8) for n in entries]
    for _ in range(90):  # past the first layers' capacity: each grows when it must, the rows stay right
        batch.step()
    assert all(c >= n + 90 for c, n in zip(batch.store.capacities, entries))
    assert batch.store.lengths[:, 0].tolist() == [n + 90 for n in entries]


# -- one host read per step ------------------------------------------------------------------------------


class _HostReads:
    """Counts calls that copy a tensor's value to the host (on a GPU each is a device sync): ``.item()``,
    ``.tolist()``, ``.cpu()``, ``bool(tensor)``, ``int(tensor)``, ``float(tensor)`` and ``torch.nonzero``."""

    NAMES = ("item", "tolist", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero")

    def __init__(self) -> None:
        self.calls: list[str] = []

    @contextlib.contextmanager
    def counting(self):
        originals = {name: getattr(torch.Tensor, name) for name in self.NAMES}
        original_nonzero = torch.nonzero

        def wrap(name, fn):
            def counted(*args, **kwargs):
                self.calls.append(name)
                return fn(*args, **kwargs)

            return counted

        try:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, wrap(name, fn))
            torch.nonzero = wrap("torch.nonzero", original_nonzero)
            yield self
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)
            torch.nonzero = original_nonzero


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("rows", [1, 3, 5])
def test_a_decode_step_reads_the_host_once_for_any_batch_size(tiny_model_factory, arch, rows):
    engine = _engine(tiny_model_factory, arch)
    model = engine.target.model
    rules = [SamplingRule(), SamplingRule.of(0.8, 0.9, seed=3), SamplingRule.of(1.2, seed=4)]
    batch = None
    with torch.no_grad():
        for r in range(rows):
            ids = list(range(10 + 7 * r, 40 + 11 * r))  # rows of different lengths
            cache = new_cache(model)
            model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
            batch = batch or DecodeBatch.for_cache(model, cache)
            batch.add(r, Joining(cache, 11, len(ids), rules[r % len(rules)], headroom=64))
    batch.step()  # the first step may grow buffers; count the steady state
    reads = _HostReads()
    for _ in range(4):
        with reads.counting():
            tokens = batch.step()
        assert len(tokens) == rows
    assert reads.calls == ["tolist"] * 4, reads.calls


def test_graphs_only_on_cuda_and_rows_round_up_to_powers_of_two():
    assert graphs_for("cpu") is None
    assert graphs_for("cuda", enabled=False) is None
    assert [_rows_bucket(n, 16) for n in (1, 2, 3, 5, 8, 9, 16)] == [1, 2, 4, 8, 8, 16, 16]
    assert _rows_bucket(7, 6) == 6  # never past the store's slots
