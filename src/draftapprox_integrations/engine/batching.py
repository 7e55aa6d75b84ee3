"""Answers decoding together: one forward per step for every row, each row with its own cache, true
positions, sampler and stop rules.

Why this batches so well here: a SpecKV (or SnapKV, StreamingLLM) cache holds exactly ``budget`` entries
per layer and KV head whatever the prompt length, so rows compressed to the same budget stack along the
batch axis with no padding at all, however long their prompts were. Each row keeps its true position
(prompt length + tokens so far), passed as ``position_ids``: the cache length says nothing about it.

A row that arrives while a batch is already decoding has ``steps`` fewer entries than the others: it is
left-padded with masked entries (an attention mask, zeros on the padding), so it can join at once instead
of waiting for the batch to drain. Padding that every remaining row has is trimmed when rows leave.
Sliding-window layers (Gemma-3) count the tokens they have seen in one integer shared by the whole batch,
so on such models a row only joins a batch that has not decoded yet and whose layers have the same lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def cache_shape(cache) -> tuple[tuple[int, int], ...]:
    """Per layer: (entries held, tokens seen by a sliding layer or 0): rows with equal shapes stack as they are."""
    shape = []
    for layer in cache.layers:
        entries = 0 if layer.keys is None or not getattr(layer, "is_initialized", True) else layer.keys.shape[-2]
        shape.append((entries, int(getattr(layer, "cumulative_length", 0)) if getattr(layer, "is_sliding", False) else 0))
    return tuple(shape)


def _has_sliding_layers(shape: tuple[tuple[int, int], ...]) -> bool:
    return any(seen for _, seen in shape)


class DecodeBatch:
    """Rows of one model decoding in lock step. ``rows`` are the callers' own objects, in batch order.

    ``shape`` is the cache shape every row had when it was prefilled (see :func:`cache_shape`); a row joins
    only with that shape (``accepts``). ``step(tokens, positions)`` feeds one token per row and returns the
    next logits [rows, vocab]; ``remove(keep)`` drops finished rows.
    """

    def __init__(self, model, shape: tuple[tuple[int, int], ...]) -> None:
        self.model = model
        self.shape = shape
        self.rows: list[Any] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, entries] (1: a real entry), None while nothing is padded
        self.steps = 0  # forwards since the last time the batch was empty

    def __len__(self) -> int:
        return len(self.rows)

    def accepts(self, shape: tuple[tuple[int, int], ...]) -> bool:
        if shape != self.shape:
            return False
        return not (self.rows and self.steps and _has_sliding_layers(shape))

    def add(self, row: Any, cache) -> None:
        """Append a row whose cache has this batch's prefill shape; it is left-padded to the batch's length."""
        if not self.rows:
            self.rows, self.cache, self.mask, self.steps = [row], cache, None, 0
            return
        # What the batch holds beyond the new row's prefill: the steps it decoded, less the leading padding
        # columns trimmed since (``_trim_padding``). The same in every layer, since every row had this shape.
        mine, theirs = self._layer(), next(layer for layer in cache.layers if layer.keys is not None)
        pad = mine.keys.shape[-2] - theirs.keys.shape[-2]
        for mine, theirs in zip(self.cache.layers, cache.layers):
            if mine.keys is None:
                continue
            mine.keys = torch.cat([mine.keys, F.pad(theirs.keys, (0, 0, pad, 0))], dim=0)
            mine.values = torch.cat([mine.values, F.pad(theirs.values, (0, 0, pad, 0))], dim=0)
        if pad or self.mask is not None:
            length = self._length()
            mask = self.mask if self.mask is not None else self._ones(len(self.rows), length)
            new = self._ones(1, length)
            new[:, :pad] = 0
            self.mask = torch.cat([mask, new], dim=0)
        self.rows.append(row)

    def remove(self, keep: Sequence[int]) -> None:
        """Keep only the rows at ``keep`` (batch indices, in order)."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache, self.mask, self.steps = None, None, 0
            return
        index = torch.tensor(list(keep), device=self._device())
        self.cache.batch_select_indices(index)
        if self.mask is not None:
            self.mask = self.mask[index]
            self._trim_padding()

    @torch.no_grad()
    def step(self, tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """Feed ``tokens[r]`` at true position ``positions[r]`` for every row r; the next logits [rows, vocab]."""
        device = self._device()
        mask = None
        if self.mask is not None:
            mask = torch.cat([self.mask, self._ones(len(self.rows), 1)], dim=1)
        out = self.model(
            input_ids=torch.tensor([[t] for t in tokens], device=device),
            position_ids=torch.tensor([[p] for p in positions], device=device),
            attention_mask=mask,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.mask = mask
        self.steps += 1
        return out.logits[:, -1]

    def _trim_padding(self) -> None:
        """Drop leading columns that are padding in every row (they only cost compute)."""
        real = self.mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else 0
        if start:
            for layer in self.cache.layers:
                if layer.keys is not None:
                    layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.mask = self.mask[:, start:]
        if bool(self.mask.all()):
            self.mask = None

    def _layer(self):
        return next(layer for layer in self.cache.layers if layer.keys is not None)

    def _length(self) -> int:
        return self._layer().keys.shape[-2]

    def _device(self) -> torch.device:
        return self._layer().keys.device

    def _ones(self, rows: int, length: int) -> torch.Tensor:
        return torch.ones(rows, length, dtype=torch.long, device=self._device())
