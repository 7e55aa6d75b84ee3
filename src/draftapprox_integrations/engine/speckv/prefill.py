"""The target's prefill, cut to what a method keeps: capture -> select -> cut, written once.

Two routes share it. ``prefill_and_compress``: the target prefills prompt + the draft's lookahead in one
forward (two models, or SnapKV / StreamingLLM with no lookahead). ``self_draft.self_draft_steps``: one model
is its own draft, so its prefill of the prompt, its greedy lookahead (decoded beside other rows) and one
forward over that lookahead on the prompt's cache *are* that forward; the separate target prefill is skipped. The first
answer token comes from the logits of the last prompt position (``logits_to_keep`` selects that single row:
Gemma's vocabulary is 262k).

Memory: the two-model prefill cuts each full-attention layer as soon as its attention has run (layer-wise
eviction), so its peak is the kept entries + one layer's full KV. The self-draft prefill cannot (see
``self_draft``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from ..capture import AttentionCapture, AttentionObserver
from ..config import SpecKVConfig
from ..errors import ConfigError
from .cache import CompressedPrefill, cache_bytes, cut_full_layer, cut_prefill, recording_cache
from ..scoring import pool1d
from ..layer_profiles import layer_shares
from .selection import (
    GLOBAL_CAP, attention_mass, combine_records, coverage_count, layer_counts, observation_key_scores,
    profile_counts, streaming_indices, top_with_tail,
)

PREFILL_METHODS = ("full", "snapkv", "speckv", "streamingllm")


def kept_tail(config: SpecKVConfig, window: int, lookahead: bool) -> int:
    """Prompt tokens at the end kept whatever their score: ``keep_last`` when a lookahead scores the keys,
    else the whole observation window (SnapKV's rule: its window is what scores, and it is kept)."""
    return window if config.keep_last is None or not lookahead else min(config.keep_last, window)


def key_capture(model, layers: Sequence[int], *, prompt_len: int, tail: int, queries: int, config: SpecKVConfig):
    """A capture that reduces each forward's observation attention to key scores per KV head, inside the
    forward (keeping [H, W, K] float32 weights for every layer would cost GBs). Records (scores, queries).
    The keys scored are all but the kept tail (:func:`kept_tail`)."""
    kv_heads = model.config.num_key_value_heads

    def reducer(weights: torch.Tensor, module) -> tuple:
        scores = observation_key_scores(
            weights, prompt_len=prompt_len, window_size=tail, kv_heads=kv_heads, reduction=config.reduction
        )
        if config.coverage is None:
            return scores, weights.shape[2]
        # A self-sizing budget counts attention mass too (coverage_count), the tail's included.
        return scores, weights.shape[2], attention_mass(weights, prompt_len=prompt_len, kv_heads=kv_heads)

    return AttentionCapture(model, queries, layers=layers, reducer=reducer)


def layer_scores(records: dict, layer: int, config: SpecKVConfig, skip: int = 0) -> torch.Tensor:
    """Layer ``layer``'s key scores [B, Hkv, K] from the forwards a capture recorded (``capture.records``),
    the first ``skip`` left out (the self-draft prefill's window when ``score_window`` is off)."""
    return combine_records(records[layer][skip:], config.reduction)


def scores_decide_counts(config: SpecKVConfig) -> bool:
    """Whether a layer's count is known only once every layer is scored (the global allocation, a coverage):
    a layer cut during the forward then holds more than its final count (``held_count``)."""
    return config.coverage is not None or config.allocation == "global"


def fixed_counts(
    config: SpecKVConfig, model, layers: Sequence[int], *, budget: int, tail: int, width: int, lookahead: bool
) -> dict | None:
    """Keys each of ``layers`` selects besides the tail when that is known before any score: ``budget - tail``
    in every layer (uniform), or a layer profile's split of that total (``engine.layer_profiles``). None when
    the scores decide (the global allocation, a coverage): :func:`final_counts` once every layer is scored.

    ``allocation="auto"`` takes the profile only when a lookahead scores (SpecKV): a profile is learned from
    the lookahead's allocation, and SnapKV stays the published baseline (the same count in every layer)."""
    if scores_decide_counts(config):
        return None
    allocation = config.allocation if lookahead or config.allocation != "auto" else "uniform"
    shares = layer_shares(allocation, config.layer_profile, model, len(layers))
    n = budget - tail
    if shares is None:
        return dict.fromkeys(layers, n)
    return dict(zip(layers, profile_counts(shares, n, width)))


def held_count(config: SpecKVConfig, fixed: dict | None, layer: int, *, budget: int, tail: int) -> int:
    """Keys layer ``layer`` holds when it is cut during the forward (layer-wise eviction): its final count
    when known, else the most it can end with (the global allocation's ``GLOBAL_CAP`` x the mean, a
    coverage's ``budget``); :func:`trim_held` then cuts it to its final count (a subset of these)."""
    if fixed is not None:
        return fixed[layer]
    return (budget - tail) * (GLOBAL_CAP if config.allocation == "global" else 1)


def final_counts(records: dict, pooled: dict, *, budget: int, tail: int, config: SpecKVConfig, skip: int = 0) -> dict:
    """Keys each layer selects once every layer is scored: the global allocation's split of ``pooled``, or a
    coverage's self-sized count (``selection.coverage_count`` per layer from the recorded attention mass,
    their mean given to every layer, between ``coverage_floor`` and ``budget`` besides the tail)."""
    layers = sorted(pooled)
    if config.coverage is None:
        return dict(zip(layers, layer_counts([pooled[i] for i in layers], budget - tail, "global")))
    most = budget - tail
    counts = [coverage_count(sum(r[2] for r in records[i][skip:]), tail=tail, coverage=config.coverage,
                             floor=config.coverage_floor, most=most, sinks=config.sink_tokens) for i in layers]
    return dict.fromkeys(layers, min(max(round(sum(counts) / len(counts)), config.coverage_floor), most))


def kept_of_layers(
    records: dict, model, layers, *, prompt_len: int, budget: int, tail: int, config: SpecKVConfig, lookahead: bool,
    skip: int = 0,
) -> dict:
    """Every layer's kept prompt positions, once all of ``layers`` have been scored (``lookahead``: whether a
    lookahead's queries scored them). Scores over more keys than ``prompt_len - tail`` (captured for a shorter
    tail) are cut to those."""
    scores = {i: layer_scores(records, i, config, skip)[..., : prompt_len - tail] for i in layers}
    pooled = {i: pool1d(s, config.kernel_size, config.pooling) for i, s in scores.items()}
    counts = fixed_counts(config, model, layers, budget=budget, tail=tail, width=prompt_len - tail, lookahead=lookahead)
    if counts is None:
        counts = final_counts(records, pooled, budget=budget, tail=tail, config=config, skip=skip)
    return {i: top_with_tail(pooled[i], counts[i], prompt_len, tail) for i in layers}


def kept_of_layer(capture, layer: int, held: int, *, prompt_len: int, tail: int, config: SpecKVConfig) -> torch.Tensor:
    """Layer ``layer``'s best ``held`` keys and the tail, [B, Hkv, held + tail], as soon as it is scored
    (layer-wise eviction; ``held_count``)."""
    pooled = pool1d(layer_scores(capture.records, layer, config), config.kernel_size, config.pooling)
    return top_with_tail(pooled, held, prompt_len, tail)


def trim_to(layer, held: torch.Tensor, final: torch.Tensor) -> None:
    """Cut a layer that holds the sorted positions ``held`` down to ``final`` (a sorted subset), in place."""
    idx = torch.searchsorted(held, final)[..., None].expand(-1, -1, -1, layer.keys.shape[-1])
    layer.keys, layer.values = layer.keys.gather(2, idx).contiguous(), layer.values.gather(2, idx).contiguous()


class LayerwiseEviction(AttentionObserver):
    """Cuts each layer of ``layers`` right after its attention has run, inside the forward.

    ``choose(i)`` gives layer i's kept prompt positions ([B, Hkv, k], or None to keep the whole prompt); the
    layer then holds only those (the lookahead's entries go too), so while the forward runs on, only the
    current layer's full KV is alive. The cache's size is taken just before each cut: its largest value
    (``peak_bytes``) is the prefill's peak. ``cut`` lists the layers cut. An observer of the forwards of the
    calling thread only (``capture.AttentionObserver``): another engine's forward on the same weights is
    never cut by it.
    """

    def __init__(self, model, cache, layers: Sequence[int], choose, prompt_len: int) -> None:
        super().__init__(model, layers=layers)
        self.cache, self.choose, self.prompt_len = cache, choose, prompt_len
        self.cut: set[int] = set()
        self.peak_bytes = 0

    def after(self, module) -> None:
        i = module.layer_idx
        self.peak_bytes = max(self.peak_bytes, cache_bytes(self.cache))
        cut_full_layer(self.cache.layers[i], self.choose(i), self.prompt_len)
        self.cut.add(i)


class _NoEviction:
    """What a prefill without layer-wise eviction reports: no layer cut during the forward."""

    cut: frozenset = frozenset()
    peak_bytes = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@torch.no_grad()
def prefill_and_compress(
    target,
    prompt_ids: Sequence[int],
    lookahead_ids: Sequence[int] = (),
    *,
    method: str,
    config: SpecKVConfig,
    layerwise: bool = True,
) -> CompressedPrefill:
    """Prefill the target and leave in the cache what ``method`` keeps of the prompt.

    ``method`` is full | snapkv | speckv | streamingllm (speckv with an empty lookahead is snapkv). With
    ``layerwise`` (the default) each full-attention layer is cut as soon as its attention has run, so the
    largest cache alive is the kept entries + one layer's full KV; ``layerwise=False`` cuts every layer after
    the forward (the same kept entries, a full-KV peak). A budget at least the prompt length keeps every
    prompt entry (the lookahead's entries are still dropped), which is what the tests use to check that
    positions stay right after the surgery.
    """
    if method not in PREFILL_METHODS:
        raise ConfigError(f"prefill_and_compress: unknown method {method!r}")
    model, device = target.model, target.input_device
    prompt_len = len(prompt_ids)
    lookahead = list(lookahead_ids) if method == "speckv" else []
    budget = min(config.budget, prompt_len) if method != "full" else prompt_len
    window = min(config.window_size, prompt_len)
    cache, full_layers = recording_cache(model)
    choose, capture = _chooser(model, cache, full_layers, method, budget, prompt_len, window, len(lookahead), config)
    kept: dict[int, torch.Tensor] = {}

    def remember(i: int):
        kept_i = choose(i)
        if kept_i is not None:
            kept[i] = kept_i
        return kept_i

    evicting = layerwise and method != "full"
    eviction = LayerwiseEviction(model, cache, full_layers, remember, prompt_len) if evicting else _NoEviction()
    with capture, eviction as evicted:
        out = model(
            input_ids=torch.tensor([list(prompt_ids) + lookahead], device=device),
            cache=cache,
            use_cache=True,
            # Only the last prompt position's logits are needed (the first answer token comes from there).
            logits_to_keep=1 if not lookahead else torch.tensor([prompt_len - 1], device=device),
        )
    if not evicting:
        for i in full_layers:
            remember(i)
    if kept and scores_decide_counts(config):
        tail = kept_tail(config, window, bool(lookahead))
        kept = trim_held(capture, cache, kept, prompt_len=prompt_len, budget=budget, tail=tail,
                         config=config, cut=evicted.cut)
    return cut_prefill(
        cache, out.logits[0, -1].float(), prompt_len, budget, kept, len(lookahead),
        already_cut=evicted.cut, peak_bytes=evicted.peak_bytes,
    )


def trim_held(capture, cache, held: dict, *, prompt_len, budget, tail, config, cut) -> dict:
    """The final selection once every layer is scored (``final_counts``), taken among the keys each layer
    holds (``held_count``); layers already cut are trimmed to it."""
    layers = sorted(held)
    pooled = {i: pool1d(layer_scores(capture.records, i, config), config.kernel_size, config.pooling) for i in layers}
    counts = final_counts(capture.records, pooled, budget=budget, tail=tail, config=config)
    final = {}
    for i in layers:
        chosen = held[i][..., : held[i].shape[-1] - tail]  # sorted: the tail is the last positions
        only_held = torch.full_like(pooled[i], float("-inf")).scatter(-1, chosen, pooled[i].gather(-1, chosen))
        final[i] = top_with_tail(only_held, counts[i], prompt_len, tail)
        if i in cut:
            trim_to(cache.layers[i], held[i], final[i])
    return final


def _chooser(model, cache, layers, method, budget, prompt_len, window, n_look, config):
    """(choose(layer) -> kept prompt positions or None, the capture the choice needs or a null context)."""
    if method in ("snapkv", "speckv") and budget < prompt_len:
        # Without score_window only the lookahead's queries score (the window's still do with no lookahead).
        queries = window + n_look if config.score_window or not n_look else n_look
        tail = kept_tail(config, window, n_look > 0)
        capture = key_capture(model, layers, prompt_len=prompt_len, tail=tail, queries=queries, config=config)
        fixed = fixed_counts(config, model, layers, budget=budget, tail=tail, width=prompt_len - tail, lookahead=n_look > 0)

        def scored(i: int):
            held = held_count(config, fixed, i, budget=budget, tail=tail)
            return kept_of_layer(capture, i, held, prompt_len=prompt_len, tail=tail, config=config)

        return scored, capture
    if method == "streamingllm" and budget < prompt_len:
        def streaming(i: int):
            keys = cache.layers[i].keys
            idx = streaming_indices(prompt_len, budget, min(config.sink_tokens, budget), device=keys.device)
            return idx.expand(keys.shape[0], keys.shape[1], -1)

        return streaming, nullcontext()
    return (lambda i: None), nullcontext()
