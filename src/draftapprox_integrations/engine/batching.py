"""Answers decoding together: one forward per step for every row, each row in its own slot of a static cache,
with its true positions, its own sampling rule, and one host read per step for the whole batch.

Rows live in the slots of a :class:`~draftapprox_integrations.engine.slots.SlotStore`. A row joins by copying
its prefilled cache into a free slot, whatever the batch has decoded so far: rows of different lengths (a late
row, another budget, full KV of another prompt length) share each forward, each masked to its own entries. A
row leaves by moving the last row into its slot, so the live rows are always the first ``len(batch)`` slots.

Per step, on the device: the forward over the rows' last tokens at their true positions, the mask of each
constrained row's logits by its token bitmask (``engine.grammar``; refilled on the host after each read), the
sampling of every row's next token (``engine.sampling``: greedy or a seeded draw that does not depend on the
other rows), and the update of tokens, positions and lengths in place. The only host read is the next token of every row, in
one copy: the host needs it for text, EOS and stop sequences. On CUDA the whole step can be one captured graph
(``engine.graphs``); elsewhere (and with graphs off) it runs eagerly, the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .grammar import mask_logits, unpack_bits
from .sampling import SamplingRule, rule_tensors, sample_tokens
from .slots import LayerKind, SlotStore, bucket, entries_per_layer, layer_kinds, row_size


# Entries a batch allocates at most beyond a joining row's prefill for the tokens it will write: a long
# max_new_tokens is not paid for up front (the store grows by half when a row reaches its capacity).
HEADROOM = 256


@dataclass
class Joining:
    """What a row brings to a batch: its one-row prefilled cache (copied in; the caller may drop it), the
    token it feeds first and that token's true position, its sampling rule and how many tokens it has
    sampled (the step of its next draw); ``headroom``: the tokens it may still write; ``mask``: a constrained
    row's next-token bitmask (int32 [words], ``engine.grammar``), None for a free row."""

    cache: Any
    token: int
    position: int
    rule: SamplingRule
    sampled: int = 1
    headroom: int = HEADROOM
    mask: torch.Tensor | None = None


def first_token(logits: torch.Tensor, rule: SamplingRule, mask: torch.Tensor | None = None) -> int:
    """A row's first token, from the prefill's logits [vocab] (its step-0 draw), under ``mask`` when given."""
    temperature, top_p, keys = rule_tensors([rule], logits.device)
    steps = torch.zeros(1, dtype=torch.int64, device=logits.device)
    logits = logits[None]
    if mask is not None:
        logits = mask_logits(logits.float(), mask.to(logits.device)[None], unpack_bits(logits.device))
    token = sample_tokens(logits, temperature, top_p, keys, steps, randomized=not rule.greedy, nucleus=rule.nucleus)
    return int(token.tolist()[0])


class DecodeBatch:
    """Rows of one model decoding in lock step. ``rows`` are the callers' own objects, in slot order.

    ``add(row, joining)`` puts a row in the next slot; ``step()`` runs one forward for all rows and returns
    each row's next token (host ints); ``remove(keep)`` keeps only the rows at ``keep``.
    """

    def __init__(self, model, kinds: tuple[LayerKind, ...], *, entries: int | Sequence[int], device, max_slots: int = 8,
                 slots: int = 1, graphs=None) -> None:
        self.model = model
        self.kinds = kinds
        per_layer = [entries] * len(kinds) if isinstance(entries, int) else list(entries)
        # rows of about this many entries (in their largest full layer) share this batch
        self.entry_class = bucket(max(self._full(per_layer)))
        self.max_slots = max_slots
        self.device = torch.device(device)
        self.graphs = graphs  # a graphs.GraphedSteps, or None: every step runs eagerly
        self.rows: list[Any] = []
        self.lent = False  # a row's prompt entries were handed over as views of the store: never refill it
        self._written: list[list[int]] = []  # host mirror of the rows' entries per layer
        self._rules: list[SamplingRule] = []
        self._masked: list[bool] = []  # which rows are constrained (their bitmask is refilled every step)
        self.bitmask: torch.Tensor | None = None  # int32 [slots, words], made when a constrained row first joins
        self._bits = unpack_bits(self.device)
        # ``slots``: the rows expected to join soon (the loop knows how many requests are starting): the store
        # is made that wide at once, since growing it later copies every buffer (twice the memory meanwhile).
        slots = max(1, min(slots, max_slots))
        self.store = SlotStore(kinds, slots=slots, capacities=[bucket(n + 1) for n in per_layer], device=self.device)
        self._state_for(slots)

    @classmethod
    def for_cache(cls, model, cache, **kwargs) -> DecodeBatch:
        return cls(model, layer_kinds(cache), entries=entries_per_layer(cache), device=cache.layers[0].keys.device, **kwargs)

    def __len__(self) -> int:
        return len(self.rows)

    # -- membership ---------------------------------------------------------------------------------

    def accepts(self, model, cache) -> bool:
        """Whether a row with this prefilled cache decodes well in this batch: the same model and layout,
        and a size within a factor of two of the batch's (a small row masked over a far larger capacity
        would read what it does not use)."""
        if self.lent or model is not self.model or len(self) >= self.max_slots or layer_kinds(cache) != self.kinds:
            return False
        size = bucket(row_size(cache))
        return size <= 2 * self.entry_class and self.entry_class <= 2 * size

    def add(self, row: Any, joining: Joining) -> None:
        slot = len(self.rows)
        written = [min(n, kind.window - 1) if kind.window else n
                   for n, kind in zip(entries_per_layer(joining.cache), self.kinds)]
        headroom = max(1, min(joining.headroom, HEADROOM))
        self._ensure(slots=slot + 1, entries=[w + headroom for w in written], grow=1)
        self.store.write_row(slot, joining.cache)
        temperature, top_p, keys = rule_tensors([joining.rule], self.device)
        values = torch.tensor([joining.token, joining.position, joining.sampled, 1], dtype=torch.int64)
        self.tokens[slot], self.positions[slot], self.steps[slot], self.live[slot] = values.to(self.device)
        self.temperature[slot], self.top_p[slot], self.keys[slot] = temperature[0], top_p[0], keys[0]
        if joining.mask is not None and self.bitmask is None:
            self._make_bitmask(len(joining.mask))
        if self.bitmask is not None:
            self.bitmask[slot] = -1 if joining.mask is None else joining.mask.to(self.device)
        self.rows.append(row)
        self._written.append(written)
        self._rules.append(joining.rule)
        self._masked.append(joining.mask is not None)

    def set_mask(self, index: int, mask: torch.Tensor) -> None:
        """Row ``index``'s next-token bitmask (a constrained row's, after each step), copied into its slot."""
        self.bitmask[index].copy_(mask, non_blocking=True)

    def prompt_prefix(self, index: int, n: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The first ``n`` entries of row ``index`` in every full-attention layer (read before the row leaves).

        The last row of a batch hands over its slot's memory instead of a copy (a self-draft's prompt KV
        is not held twice); the batch then takes no row again (``lent``)."""
        if len(self.rows) == 1:
            self.lent = True
            return self.store.full_prefix(index, n, copy=False)
        return self.store.full_prefix(index, n, copy=True)

    def remove(self, keep: Sequence[int]) -> None:
        """Keep only the rows at ``keep`` (batch indices, in order); the last rows move into the holes."""
        keep = list(keep)
        if len(keep) == len(self.rows):
            return
        live = len(keep)
        holes = [i for i in range(live) if i not in keep]
        movers = [i for i in keep if i >= live]
        if holes:
            self.store.move_row(holes, movers)
            for state in self._state_tensors():
                state[holes] = state[movers]
        order = list(range(live))
        for hole, mover in zip(holes, movers):
            order[hole] = mover
        self.rows = [self.rows[i] for i in order]
        self._written = [self._written[i] for i in order]
        self._rules = [self._rules[i] for i in order]
        self._masked = [self._masked[i] for i in order]
        self.live[live:] = 0
        if self.bitmask is not None:
            self.bitmask[live:] = -1  # dead slots allow every token: their (unread) draws stay finite
        self.store.lengths[:, live:] = 0

    # -- stepping -----------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[int]:
        """One forward for every row, each fed its last token at its true position, and every row's next
        token sampled on the device; returns them (the step's one read to the host)."""
        rows = len(self.rows)
        self._written = [[w + 1 for w in written] for written in self._written]
        self._ensure(slots=rows, entries=[max(layer) for layer in zip(*self._written)])
        randomized = any(not r.greedy for r in self._rules)
        nucleus = any(r.nucleus for r in self._rules)
        constrained = any(self._masked)
        if self.graphs is not None:
            self.graphs.run(self, rows, randomized, nucleus, constrained)
        else:
            self.forward_and_sample(rows, randomized, nucleus, constrained)
        return self.tokens[:rows].tolist()

    def forward_and_sample(self, rows: int, randomized: bool, nucleus: bool, constrained: bool = False) -> None:
        """The device work of a step over the first ``rows`` slots, in place on the batch's buffers (no host
        read, no allocation the next step depends on): what a CUDA graph captures."""
        cache = self.store.view(rows)
        with cache.masking(self.model):
            out = self.model(
                input_ids=self.tokens[:rows, None],
                position_ids=self.positions[:rows, None],
                cache=cache,
                attention_mask=cache.placeholder_mask(),
                use_cache=True,
                logits_to_keep=1,
            )
        live = self.live[:rows]
        logits = out.logits[:, -1]
        if constrained:  # known on the host: a batch without constrained rows never pays for the mask
            logits = mask_logits(logits.float(), self.bitmask[:rows], self._bits)
        nxt = sample_tokens(
            logits, self.temperature[:rows], self.top_p[:rows], self.keys[:rows], self.steps[:rows],
            randomized=randomized, nucleus=nucleus,
        )
        self.tokens[:rows].copy_(torch.where(live.bool(), nxt, self.tokens[:rows]))
        self.positions[:rows] += live
        self.steps[:rows] += live
        self.store.lengths[:, :rows] += live

    # -- buffers ------------------------------------------------------------------------------------

    def _full(self, written: list[int]) -> list[int]:
        return [w for w, kind in zip(written, self.kinds) if kind.window is None] or [0]

    def _ensure(self, *, slots: int, entries: Sequence[int], grow: float = 1.5) -> None:
        """Grow the store (and the per-row state) to hold ``slots`` rows of ``entries`` per layer: a full
        layer that is short grows to what is asked or by ``grow`` (a joining row asks for its headroom at
        once; a decoding one for one more entry, so it grows by half); the other layers keep their size."""
        grow_slots = slots > self.store.slots
        short = [kind.window is None and n > c for n, c, kind in zip(entries, self.store.capacities, self.kinds)]
        if not (grow_slots or any(short)):
            return
        new_slots = min(max(self.store.slots * 2, slots), max(self.max_slots, slots)) if grow_slots else None
        capacities = [bucket(max(n, int(c * grow))) if is_short else c
                      for n, c, is_short in zip(entries, self.store.capacities, short)]
        self.store = self.store.resized(slots=new_slots, capacities=capacities)
        if grow_slots:
            self._state_for(self.store.slots)
        if self.graphs is not None:
            self.graphs.forget()  # captured over the old buffers

    def _state_for(self, slots: int) -> None:
        """Per-slot device state, keeping what the existing slots hold."""
        old = dict(zip(self._state_names(), self._state_tensors())) if hasattr(self, "tokens") else {}
        fresh = {
            "tokens": torch.zeros(slots, dtype=torch.int64, device=self.device),
            "positions": torch.zeros(slots, dtype=torch.int64, device=self.device),
            "steps": torch.zeros(slots, dtype=torch.int64, device=self.device),
            "live": torch.zeros(slots, dtype=torch.int64, device=self.device),
            "temperature": torch.zeros(slots, dtype=torch.float32, device=self.device),
            "top_p": torch.ones(slots, dtype=torch.float32, device=self.device),
            "keys": torch.zeros(slots, 2, dtype=torch.int64, device=self.device),
        }
        if "bitmask" in old:
            fresh["bitmask"] = torch.full((slots, old["bitmask"].shape[1]), -1, dtype=torch.int32, device=self.device)
        for name, tensor in fresh.items():
            if name in old:
                n = min(len(old[name]), slots)
                tensor[:n] = old[name][:n]
            setattr(self, name, tensor)

    def _make_bitmask(self, words: int) -> None:
        self.bitmask = torch.full((self.store.slots, words), -1, dtype=torch.int32, device=self.device)

    def _state_names(self) -> tuple[str, ...]:
        names = ("tokens", "positions", "steps", "live", "temperature", "top_p", "keys")
        return names + ("bitmask",) if getattr(self, "bitmask", None) is not None else names

    def _state_tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self._state_names()]
