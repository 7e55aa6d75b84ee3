"""KV cache surgery: a cache that records the prefill, and the in-place cut to the kept entries.

After the cut each full-attention layer holds the kept prompt entries per KV head (the budget), in prompt
order; sliding-window layers (Gemma-3) are only cropped back to their window. The lookahead's own entries
are dropped everywhere: it was there to score the prompt, not to be remembered.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding import new_cache


@dataclass
class CompressedPrefill:
    cache: Any
    first_logits: torch.Tensor  # [vocab] at the last prompt position
    prompt_len: int
    kept_entries: int  # per full-attention layer and KV head (the mean over layers when they differ)
    kept_indices: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, Hkv, kept]
    kv_bytes_full: int = 0
    kv_bytes_kept: int = 0
    kv_bytes_peak: int = 0  # the largest cache alive during the prefill (every layer, keys and values)
    lookahead_seconds: float = 0.0  # self-draft path: the lookahead written into the shared cache


def is_sliding(layer) -> bool:
    return bool(getattr(layer, "is_sliding", False))


def recording_cache(model):
    """A fresh cache and the indices of its full-attention layers. Sliding-window layers keep every entry
    through the prefill, so that the lookahead's entries can be cropped off afterwards."""
    cache = new_cache(model)
    for layer in cache.layers:
        if is_sliding(layer):
            layer.activate_past_recording()
    full_layers = [i for i, layer in enumerate(cache.layers) if not is_sliding(layer)]
    return cache, full_layers


def cache_bytes(cache) -> int:
    """Bytes the cache holds now: keys and values of every layer."""
    return sum(
        layer.keys.numel() * layer.keys.element_size() * 2
        for layer in cache.layers
        if getattr(layer, "is_initialized", True) and layer.keys is not None
    )


def _bytes_per_entry(layer) -> int:
    keys = layer.keys
    return keys.shape[0] * keys.shape[1] * keys.shape[-1] * keys.element_size() * 2  # keys and values


def cut_full_layer(layer, kept: torch.Tensor | None, prompt_len: int) -> None:
    """Keep the prompt entries ``kept`` ([B, Hkv, k] positions; None: all) of one full-attention layer and
    drop everything after the prompt (the lookahead), in place."""
    keys, values = layer.keys[:, :, :prompt_len], layer.values[:, :, :prompt_len]
    if kept is not None:
        gather = kept[..., None].expand(-1, -1, -1, keys.shape[-1])
        keys, values = keys.gather(2, gather), values.gather(2, gather)
    layer.keys, layer.values = keys.contiguous(), values.contiguous()


def compress_cache(
    cache, kept_indices: dict[int, torch.Tensor], prompt_len: int, n_look: int, already_cut: Collection[int] = ()
) -> tuple[int, int]:
    """Drop the lookahead's entries and keep ``kept_indices`` (per layer, [B, Hkv, k]) of the prompt, in place.

    Sliding-window layers are only cropped back to their window; layers in ``already_cut`` were cut during
    the forward (layer-wise eviction) and are only counted. Returns (bytes a full prompt cache would hold,
    bytes kept), keys and values, every layer.
    """
    kv_bytes_full = kv_bytes_kept = 0
    for i, layer in enumerate(cache.layers):
        if not getattr(layer, "is_initialized", True) or layer.keys is None:
            continue
        if is_sliding(layer):
            # Drops the lookahead and restricts the layer to its window, as if only the prompt had been seen.
            layer.crop(-n_look) if n_look else layer.crop(0)
            layer.record_past = False
            full_entries = min(prompt_len, layer.sliding_window - 1)
        else:
            if i not in already_cut:
                cut_full_layer(layer, kept_indices.get(i), prompt_len)
            full_entries = prompt_len
        per_entry = _bytes_per_entry(layer)
        kv_bytes_full += full_entries * per_entry
        kv_bytes_kept += layer.keys.shape[-2] * per_entry
    return kv_bytes_full, kv_bytes_kept


def cut_prefill(
    cache,
    first_logits: torch.Tensor,
    prompt_len: int,
    budget: int,
    kept_indices: dict[int, torch.Tensor],
    n_look: int,
    *,
    lookahead_seconds: float = 0.0,
    already_cut: Collection[int] = (),
    peak_bytes: int = 0,
) -> CompressedPrefill:
    """compress_cache (drop the lookahead, keep ``kept_indices`` of the prompt) and the resulting prefill.
    ``peak_bytes``: the largest cache seen before now (layer-wise eviction measures it during the forward)."""
    peak_bytes = max(peak_bytes, cache_bytes(cache))  # what is alive before this cut
    kv_bytes_full, kv_bytes_kept = compress_cache(cache, kept_indices, prompt_len, n_look, already_cut)
    # Per layer and KV head, on average over the layers (a global allocation or a coverage moves them).
    kept = [k.shape[-1] for k in kept_indices.values()]
    return CompressedPrefill(
        cache=cache,
        first_logits=first_logits,
        prompt_len=prompt_len,
        kept_entries=round(sum(kept) / len(kept)) if kept else budget,
        kept_indices=kept_indices,
        kv_bytes_full=kv_bytes_full,
        kv_bytes_kept=kv_bytes_kept,
        kv_bytes_peak=peak_bytes,
        lookahead_seconds=lookahead_seconds,
    )


def full_bytes_uncut(prefill: CompressedPrefill, prompt_tokens: int) -> int:
    """Bytes a full cache of ``prompt_tokens`` would hold (the uncut prompt of the SpecKV-PC cascade)."""
    total = 0
    for layer in prefill.cache.layers:
        if layer.keys is None:
            continue
        entries = min(prompt_tokens, layer.sliding_window - 1) if is_sliding(layer) else prompt_tokens
        total += entries * _bytes_per_entry(layer)
    return total
