"""A static KV cache of fixed slots: the buffers every row of a decode batch lives in.

Each layer holds keys and values of shape ``[slots, kv_heads, capacity, head_dim]`` that never move while
the batch decodes: a row joins by copying its prefilled cache into a free slot and leaves by freeing it, so
the buffers keep their addresses (what a captured CUDA graph needs) and no step concatenates or selects the
cache. A full-attention layer writes a row's next entry at that row's own length, so rows of any length, with
any number of steps behind them, decode together: a compressed cache holds ``budget`` entries whatever the
prompt length, a full cache its prompt, and a row that joins late simply has a shorter length. The attention
of each row and layer is masked to its written entries: the mask is built inside the forward from a length
tensor on the device, never from a host value. Keys are stored after RoPE, and new tokens get their true
positions (``position_ids``), so where an entry sits in a slot says nothing about its position.

A sliding-window layer (Gemma-3's local layers) is a ring of ``sliding_window`` entries per slot: the newest
token overwrites the oldest, and a row attends to the ones written (all of them once the ring is full), which
is exactly the window. Attention is permutation-invariant over its keys, so ring order does not matter.

``lengths[layer, slot]`` counts the entries written into a slot's layer: the valid entries of a full layer,
the tokens seen (capped by the ring) of a sliding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .capture import AttentionObserver


def bucket(n: int, floor: int = 64) -> int:
    """``n`` rounded up to a size class of eight per octave (64, 72, 80, ..., 128, 144, ...): capacities of
    one class share buffers and captured graphs, at most 12.5% larger than asked (masked entries are still
    read by a decode step)."""
    n = max(int(n), floor)
    step = max(1 << (n.bit_length() - 4), 1)
    return -(-n // step) * step


@dataclass(frozen=True)
class LayerKind:
    """What a cache layer is: full attention or a ring of ``window`` entries; its heads, head size, dtype."""

    window: int | None  # None: full attention
    kv_heads: int
    head_dim: int
    dtype: torch.dtype


def layer_kinds(cache) -> tuple[LayerKind, ...]:
    """The layout of a prefilled (dynamic) cache: rows stack only with the same layout."""
    kinds = []
    for layer in cache.layers:
        window = layer.sliding_window if getattr(layer, "is_sliding", False) else None
        kinds.append(LayerKind(window, layer.keys.shape[1], layer.keys.shape[-1], layer.keys.dtype))
    return tuple(kinds)


def entries_per_layer(cache) -> list[int]:
    """How many entries each layer of a prefilled (dynamic) cache holds."""
    return [int(layer.keys.shape[-2]) for layer in cache.layers]


def row_size(cache) -> int:
    """The entries a prefilled cache brings to its full-attention layers (its sliding layers' window when
    it has no other): the size by which rows are grouped."""
    full = [int(layer.keys.shape[-2]) for layer in cache.layers if not getattr(layer, "is_sliding", False)]
    return max(full) if full else max(layer.sliding_window for layer in cache.layers)


class SlotStore:
    """The buffers of one decode batch: per layer ``[slots, kv_heads, capacity or window, head_dim]`` keys and
    values, and ``lengths`` ``[layers, slots]`` (int64, on the device).

    ``capacities`` has one entry per layer (a sliding layer's is unused: its ring is its window): rows whose
    layers keep different counts (a layer profile, the global allocation) pay for each layer's own size, not
    for the largest layer in every layer."""

    def __init__(self, kinds: tuple[LayerKind, ...], *, slots: int, capacities: Sequence[int], device) -> None:
        self.kinds = kinds
        self.device = torch.device(device)
        self.slots = slots
        self.capacities = tuple(int(c) for c in capacities)
        if len(self.capacities) != len(kinds):
            raise ValueError(f"{len(self.capacities)} capacities for {len(kinds)} layers")
        self.keys, self.values = [], []
        for kind, capacity in zip(kinds, self.capacities):
            size = kind.window if kind.window else capacity
            shape = (slots, kind.kv_heads, size, kind.head_dim)
            self.keys.append(torch.zeros(shape, dtype=kind.dtype, device=self.device))
            self.values.append(torch.zeros(shape, dtype=kind.dtype, device=self.device))
        self.lengths = torch.zeros(len(kinds), slots, dtype=torch.int64, device=self.device)

    @property
    def capacity(self) -> int:
        """The largest full-attention layer's capacity (0 when every layer slides)."""
        return max((c for c, kind in zip(self.capacities, self.kinds) if kind.window is None), default=0)

    def resized(self, *, slots: int | None = None, capacities: Sequence[int] | None = None) -> SlotStore:
        """A larger store holding the same rows (new buffers: a captured graph of the old one is stale)."""
        slots, capacities = slots or self.slots, tuple(capacities or self.capacities)
        out = SlotStore(self.kinds, slots=slots, capacities=capacities, device=self.device)
        keep = min(slots, self.slots)
        for i, kind in enumerate(self.kinds):
            size = kind.window if kind.window else min(capacities[i], self.capacities[i])
            out.keys[i][:keep, :, :size] = self.keys[i][:keep, :, :size]
            out.values[i][:keep, :, :size] = self.values[i][:keep, :, :size]
        out.lengths[:, :keep] = self.lengths[:, :keep]
        return out

    def write_row(self, slot: int, cache) -> None:
        """Copy a one-row prefilled cache (full layers: its entries in order; sliding layers: the last
        ``window - 1`` tokens) into ``slot``."""
        lengths = []
        for i, (layer, kind) in enumerate(zip(cache.layers, self.kinds)):
            n = layer.keys.shape[-2]
            if kind.window is not None:  # a layer recording its past (the self-draft prefill) holds more
                n = min(n, kind.window - 1)
            self.keys[i][slot, :, :n] = layer.keys[0, :, layer.keys.shape[-2] - n :]
            self.values[i][slot, :, :n] = layer.values[0, :, layer.values.shape[-2] - n :]
            lengths.append(n)
        self.lengths[:, slot] = torch.tensor(lengths, dtype=torch.int64)

    def move_row(self, dst: list[int], src: list[int]) -> None:
        """Copy slots ``src`` into slots ``dst`` (rows moving down to fill the holes left by rows that left)."""
        d = torch.tensor(dst, device=self.device)
        s = torch.tensor(src, device=self.device)
        for keys, values in zip(self.keys, self.values):
            keys[d] = keys[s]
            values[d] = values[s]
        self.lengths[:, d] = self.lengths[:, s]

    def full_prefix(self, slot: int, n: int, *, copy: bool) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The first ``n`` entries of ``slot`` in every full layer ([1, H, n, D] keys, values): copies, or views
        into the buffers (``copy=False``: only when nothing will write the store again)."""
        out = {}
        for i, kind in enumerate(self.kinds):
            if kind.window is None:
                keys, values = self.keys[i][slot : slot + 1, :, :n], self.values[i][slot : slot + 1, :, :n]
                out[i] = (keys.clone(), values.clone()) if copy else (keys, values)
        return out

    def view(self, rows: int) -> SlotCache:
        return SlotCache(self, rows)

    def advance(self, rows: int) -> None:
        """Every row of the first ``rows`` slots has written one more entry in every layer."""
        self.lengths[:, :rows] += 1

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k in self.keys)


class _SlotLayer(CacheLayerMixin):
    """Layer ``index`` of a store, seen by a forward over its first ``rows`` slots (one new token each)."""

    is_compileable = False

    def __init__(self, store: SlotStore, index: int, rows: int) -> None:
        super().__init__()
        self.store, self.index, self.rows = store, index, rows
        self.kind = store.kinds[index]
        self.is_sliding = self.kind.window is not None
        self.sliding_window = self.kind.window
        self.keys, self.values = store.keys[index][:rows], store.values[index][:rows]
        self.is_initialized = True
        self.mask: torch.Tensor | None = None

    def lazy_initialization(self, key_states, value_states) -> None:  # the buffers exist already
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if key_states.shape[-2] != 1:
            raise ValueError("a slot cache decodes one token per row per forward")
        written = self.store.lengths[self.index, : self.rows]
        size = self.keys.shape[-2]
        if self.is_sliding:
            at, valid = written % size, torch.clamp(written + 1, max=size)
        else:
            at, valid = written, written + 1
        index = at.view(-1, 1, 1, 1).expand(-1, key_states.shape[1], 1, key_states.shape[-1])
        self.keys.scatter_(2, index, key_states)
        self.values.scatter_(2, index, value_states)
        # [rows, 1, 1, size]: a row attends to what it has written, the new token included.
        self.mask = (torch.arange(size, device=written.device)[None, :] < valid[:, None])[:, None, None, :]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def get_seq_length(self) -> int:
        raise NotImplementedError("a slot cache has a length per row: pass position_ids")

    def get_max_length(self) -> int:
        return self.keys.shape[-2]


class SlotCache(Cache):
    """The store's first ``rows`` slots as a transformers cache for one decode forward. Entered as a context
    (around the forward), it gives each attention layer its rows' masks (``capture.AttentionObserver``)."""

    def __init__(self, store: SlotStore, rows: int) -> None:
        super().__init__(layers=[_SlotLayer(store, i, rows) for i in range(len(store.kinds))])
        self.store, self.rows = store, rows

    def masking(self, model) -> _SlotMasks:
        return _SlotMasks(model, self)

    def placeholder_mask(self) -> torch.Tensor:
        """A 4-D mask for the model call: transformers then builds none (each layer's comes from the cache)."""
        return torch.ones(self.rows, 1, 1, 1, dtype=torch.bool, device=self.store.device)


class _SlotMasks(AttentionObserver):
    """Hands each layer of one decode forward the mask its slot layer built in ``update``."""

    def __init__(self, model, cache: SlotCache) -> None:
        super().__init__(model)
        self.cache = cache

    def attention_mask(self, module, mask):
        return self.cache.layers[module.layer_idx].mask
