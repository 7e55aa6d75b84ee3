"""The target's prefill, cut to what a method keeps: capture -> select -> cut, written once.

Two routes share it. ``prefill_and_compress``: the target prefills prompt + the draft's lookahead in one
forward (two models, or SnapKV / StreamingLLM with no lookahead). ``self_draft_prefill``: one model is its
own draft, so its prefill and greedy lookahead, written into one cache, *are* that forward; the separate
target prefill is skipped. The first answer token comes from the logits of the last prompt position
(``logits_to_keep`` selects that single row: Gemma's vocabulary is 262k).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext

import torch

from ..capture import AttentionCapture
from ..config import SpecKVConfig
from ..decoding import greedy_lookahead
from ..errors import ConfigError
from ..prompts import eos_token_ids
from .cache import CompressedPrefill, cut_prefill, recording_cache
from .selection import combine_records, observation_key_scores, select_by_layer, streaming_indices

PREFILL_METHODS = ("full", "snapkv", "speckv", "streamingllm")


def key_capture(model, layers: Sequence[int], *, prompt_len: int, window: int, queries: int, config: SpecKVConfig):
    """A capture that reduces each forward's observation attention to key scores per KV head, inside the
    forward (keeping [H, W, K] float32 weights for every layer would cost GBs). Records (scores, queries)."""
    kv_heads = model.config.num_key_value_heads

    def reducer(weights: torch.Tensor, module) -> tuple[torch.Tensor, int]:
        scores = observation_key_scores(
            weights, prompt_len=prompt_len, window_size=window, kv_heads=kv_heads, reduction=config.reduction
        )
        return scores, weights.shape[2]

    return AttentionCapture(model, queries, layers=layers, reducer=reducer)


def kept_from_capture(capture, layers: Sequence[int], *, prompt_len: int, budget: int, window: int, config: SpecKVConfig):
    """Layer -> kept prompt positions, from every forward the capture recorded."""
    layer_scores = ((i, combine_records(capture.records[i], config.reduction)) for i in layers)
    return select_by_layer(layer_scores, prompt_len=prompt_len, budget=budget, window=window, config=config)


@torch.no_grad()
def prefill_and_compress(
    target,
    prompt_ids: Sequence[int],
    lookahead_ids: Sequence[int] = (),
    *,
    method: str,
    config: SpecKVConfig,
) -> CompressedPrefill:
    """Prefill the target and leave in the cache what ``method`` keeps of the prompt.

    ``method`` is full | snapkv | speckv | streamingllm (speckv with an empty lookahead is snapkv). A budget
    at least the prompt length keeps every prompt entry (the lookahead's entries are still dropped), which
    is what the tests use to check that positions stay right after the surgery.
    """
    if method not in PREFILL_METHODS:
        raise ConfigError(f"prefill_and_compress: unknown method {method!r}")
    model, device = target.model, target.input_device
    prompt_len = len(prompt_ids)
    lookahead = list(lookahead_ids) if method == "speckv" else []
    budget = min(config.budget, prompt_len) if method != "full" else prompt_len
    scoring = method in ("snapkv", "speckv") and budget < prompt_len
    window = min(config.window_size, prompt_len)
    cache, full_layers = recording_cache(model)
    # Only the last prompt position's logits are needed (the first answer token comes from there).
    keep = 1 if not lookahead else torch.tensor([prompt_len - 1], device=device)
    capture = (
        key_capture(model, full_layers, prompt_len=prompt_len, window=window, queries=window + len(lookahead), config=config)
        if scoring
        else nullcontext()
    )
    with capture:
        out = model(
            input_ids=torch.tensor([list(prompt_ids) + lookahead], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
    kept: dict[int, torch.Tensor] = {}
    if scoring:
        kept = kept_from_capture(capture, full_layers, prompt_len=prompt_len, budget=budget, window=window, config=config)
    elif method == "streamingllm" and budget < prompt_len:
        idx = streaming_indices(prompt_len, budget, min(config.sink_tokens, budget), device=device)
        for i in full_layers:
            layer = cache.layers[i]
            kept[i] = idx.expand(layer.keys.shape[0], layer.keys.shape[1], -1)
    return cut_prefill(cache, out.logits[0, -1].float(), prompt_len, budget, kept, len(lookahead))


@torch.no_grad()
def self_draft_prefill(
    model_,
    prompt_ids: Sequence[int],
    n_lookahead: int,
    *,
    config: SpecKVConfig,
    stop: Sequence[str] = (),
) -> tuple[CompressedPrefill, str, list[int]]:
    """SpecKV when the draft *is* the target: one prefill serves both.

    The model prefills the prompt once (window queries captured), then greedily writes the lookahead into
    the same cache, each new token's attention captured as it is fed. That is exactly what the target's
    prefill of prompt + lookahead would compute (same weights, same causal attention). The lookahead's
    entries are then dropped and the prompt's compressed. Returns the prefill, the lookahead text and ids.
    """
    model, device = model_.model, model_.input_device
    prompt_len = len(prompt_ids)
    budget = min(config.budget, prompt_len)
    window = min(config.window_size, prompt_len)
    cache, full_layers = recording_cache(model)
    scoring = budget < prompt_len
    capture = (
        key_capture(model, full_layers, prompt_len=prompt_len, window=window, queries=window, config=config)
        if scoring
        else nullcontext()
    )
    with capture:
        out = model(
            input_ids=torch.tensor([list(prompt_ids)], device=device), cache=cache, use_cache=True, logits_to_keep=1
        )
        first_logits = out.logits[0, -1].float()
        started = time.perf_counter()
        look = greedy_lookahead(
            model, model_.tokenizer, cache, first_logits, prompt_len,
            max_tokens=n_lookahead, eos_ids=eos_token_ids(model_), stop=stop,
        )
    kept: dict[int, torch.Tensor] = {}
    if scoring:
        kept = kept_from_capture(capture, full_layers, prompt_len=prompt_len, budget=budget, window=window, config=config)
    prefill = cut_prefill(
        cache, first_logits, prompt_len, budget, kept, len(look.token_ids),
        lookahead_seconds=time.perf_counter() - started,
    )
    return prefill, look.text, look.token_ids
