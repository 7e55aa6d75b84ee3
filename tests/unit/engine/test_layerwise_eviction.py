"""Layer-wise eviction: each full-attention layer is cut right after its attention, inside the prefill.

It must keep exactly what the post-hoc cut keeps (same indices, same cache, same greedy tokens) while the
largest cache alive during the forward is the kept entries plus one layer's full KV.
"""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.capture import AttentionObserver
from draftapprox_integrations.engine.steps import DecodeRequest, decode_alone
from draftapprox_integrations.engine.prompts import eos_token_ids, normalize_messages
from draftapprox_integrations.engine.speckv import encode_prompt, prefill_and_compress

PROMPT = (
    "Alice keeps the red key in the kitchen drawer. Bob hides the blue key under the mat. "
    "The green key sits on the shelf next to the old clock. Carol left the silver key in the car. "
    "Which key is under the mat?"
)
LOOKAHEAD = [11, 42, 7, 99, 5]
CFG = SpecKVConfig(budget=20, window_size=4, pooling="avg", kernel_size=5)


def _target(tiny_model_factory, arch):
    folder = str(tiny_model_factory(arch))
    return DraftApproxEngine(None, folder, device="cpu", dtype="float32").target


def _greedy(target, prefill, n=8):
    request = DecodeRequest(
        target.model, target.tokenizer, prefill.cache, prefill.first_logits, prefill.prompt_len, n, eos_token_ids(target)
    )
    return decode_alone(request).lookahead.token_ids


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma3_text"])
@pytest.mark.parametrize("method", ["snapkv", "speckv", "streamingllm"])
def test_layerwise_keeps_what_the_post_hoc_cut_keeps(tiny_model_factory, arch, method):
    target = _target(tiny_model_factory, arch)
    ids = encode_prompt(target, *normalize_messages(PROMPT, None))
    look = LOOKAHEAD if method == "speckv" else []
    cuts = {lw: prefill_and_compress(target, ids, look, method=method, config=CFG, layerwise=lw) for lw in (True, False)}
    now, post = cuts[True], cuts[False]
    assert now.kept_indices.keys() == post.kept_indices.keys() and now.kept_indices
    for layer, idx in now.kept_indices.items():
        assert torch.equal(idx, post.kept_indices[layer]), layer
    for a, b in zip(now.cache.layers, post.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert torch.equal(now.first_logits, post.first_logits)
    assert (now.kv_bytes_full, now.kv_bytes_kept) == (post.kv_bytes_full, post.kv_bytes_kept)
    assert _greedy(target, now) == _greedy(target, post)


def _cache_bytes(cache) -> int:
    return sum(
        layer.keys.numel() * layer.keys.element_size() * 2
        for layer in cache.layers
        if getattr(layer, "keys", None) is not None and layer.keys.numel()
    )


class _PeakWatch(AttentionObserver):
    """The total cache bytes right after each layer's attention, before the eviction cuts it (an observer
    entered before the prefill's own is called first)."""

    def __init__(self, model):
        super().__init__(model)
        self.seen: list[int] = []
        self._cache = None
        self._handle = model.register_forward_pre_hook(self._grab, with_kwargs=True)

    def _grab(self, module, args, kwargs):
        self._cache = kwargs["cache"]

    def after(self, module) -> None:
        self.seen.append(_cache_bytes(self._cache))

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        super().__exit__(*exc)


@pytest.mark.parametrize("method", ["snapkv", "speckv", "streamingllm"])
def test_peak_cache_is_the_kept_entries_plus_one_full_layer(tiny_model_factory, method):
    target = _target(tiny_model_factory, "llama")
    ids = encode_prompt(target, *normalize_messages(PROMPT * 3, None))
    look = LOOKAHEAD if method == "speckv" else []
    peaks = {}
    for layerwise in (True, False):
        with _PeakWatch(target.model) as watch:
            prefill = prefill_and_compress(target, ids, look, method=method, config=CFG, layerwise=layerwise)
        peaks[layerwise] = max(watch.seen)
        assert prefill.kv_bytes_peak == peaks[layerwise]  # the stat reports what was really alive
    n_layers = len(prefill.cache.layers)
    one_full_layer = prefill.kv_bytes_full // n_layers * (len(ids) + len(look)) // len(ids)
    bound = prefill.kv_bytes_kept + one_full_layer
    assert peaks[True] <= bound, (peaks, bound)
    assert peaks[False] > bound  # the post-hoc cut holds every layer's full KV at the end of the forward
    assert peaks[False] >= prefill.kv_bytes_full
