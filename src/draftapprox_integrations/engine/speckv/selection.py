"""SpecKV's pure selection: observation attention -> key scores per KV head -> the kept prompt positions.

SnapKV, SpecKV and StreamingLLM differ only in which queries score the keys (or none); the top-k and the
kept-window rule are written once here (no model, no cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..scoring import pool1d, reduce


def observation_key_scores(
    weights: torch.Tensor, *, prompt_len: int, window_size: int, kv_heads: int, reduction: str
) -> torch.Tensor:
    """Score the prompt keys outside the window, per KV head.

    weights: [B, Hq, Q, K] softmax attention of the Q observation queries (last window prompt tokens, then
    the lookahead) to every key. Returns [B, Hkv, prompt_len - window_size]: reduced over the queries and over
    the query heads that share each KV head (GQA), since a KV entry is kept or dropped for its whole group.
    """
    bsz, q_heads, n_queries, _ = weights.shape
    outside = weights[..., : prompt_len - window_size]
    grouped = outside.reshape(bsz, kv_heads, q_heads // kv_heads, n_queries, outside.shape[-1])
    return reduce(grouped, dim=(2, 3), mode=reduction)


def select_kept_indices(
    scores: torch.Tensor, *, prompt_len: int, budget: int, window_size: int, kernel_size: int, pooling: str
) -> torch.Tensor:
    """Sorted positions to keep, [B, Hkv, budget]: top (budget - window) pooled scores + the window."""
    return top_with_tail(pool1d(scores, kernel_size, pooling), budget - window_size, prompt_len, window_size)


# A layer keeps at most this many times the mean under the global allocation: it bounds what the layer-wise
# prefill keeps of a layer before every layer has been scored (see prefill.py).
GLOBAL_CAP = 3


def layer_counts(
    pooled: Sequence[torch.Tensor], n: int, allocation: str, cap: float | None = GLOBAL_CAP
) -> list[int]:
    """Selected keys per layer (besides the kept tail) for ``pooled`` [B, Hkv, K] scores of each layer.

    ``uniform``: ``n`` in every layer. ``global`` (Ada-KV / PyramidKV's idea, measured in issue 14): each
    layer-head's scores are normalised to sum 1, one threshold over all of them picks ``n * layers`` keys per
    head on average, and a layer keeps the mean count of its heads (at least ``n // 4``, at most ``cap`` x
    ``n``: :data:`GLOBAL_CAP` by default, None for no bound), rescaled so the total is still ``n * layers``:
    the same bytes, moved to the layers whose attention is spread over more keys.
    """
    layers = len(pooled)
    if allocation != "global" or layers == 0 or n <= 0:  # a layer profile's counts come from profile_counts
        return [n] * layers
    width = pooled[0].shape[-1]
    normed = torch.stack([p.float() / p.float().sum(dim=-1, keepdim=True).clamp_min(1e-12) for p in pooled])
    per_head = normed.flatten(1, -2) if normed.dim() > 3 else normed  # [layers, B*Hkv, K]
    want = min(n * layers * per_head.shape[1], per_head.numel())
    threshold = per_head.flatten().topk(want).values[-1]
    raw = [max(float((per_head[j] >= threshold).sum(dim=-1).float().mean()), n / 4) for j in range(layers)]
    most = width if cap is None else min(cap * n, width)
    raw = [min(r * n * layers / sum(raw), most) for r in raw]
    return round_to_total(raw, min(n * layers, width * layers))


def profile_counts(shares: Sequence[float], n: int, width: int) -> list[int]:
    """Selected keys per layer for a mean of ``n`` per layer split by ``shares`` (summing to 1): the same
    total as ``n`` in every layer, no layer above ``width`` (the keys it can choose from); what a full layer
    cannot hold goes to the others by their shares."""
    layers = len(shares)
    total = min(max(n, 0) * layers, width * layers)
    capped: set[int] = set()  # layers held at ``width``; the rest share what is left by their shares
    while True:
        left = total - width * len(capped)
        free = sum(s for j, s in enumerate(shares) if j not in capped) or 1.0
        raw = [width if j in capped else left * s / free for j, s in enumerate(shares)]
        over = {j for j, r in enumerate(raw) if r > width} - capped
        if not over:
            break
        capped |= over
    return [min(c, width) for c in round_to_total(raw, total)]


def round_to_total(values: Sequence[float], total: int) -> list[int]:
    """Integers near ``values`` summing to ``total`` (the largest remainders take the leftovers)."""
    counts = [int(v) for v in values]
    order = sorted(range(len(values)), key=lambda j: values[j] - counts[j], reverse=True)
    for j in order[: max(0, total - sum(counts))]:
        counts[j] += 1
    return counts


def top_with_tail(pooled: torch.Tensor, n: int, prompt_len: int, tail: int) -> torch.Tensor:
    """Sorted kept positions [B, Hkv, n + tail]: the top ``n`` pooled scores and the last ``tail`` tokens."""
    bsz, heads, _ = pooled.shape
    last = torch.arange(prompt_len - tail, prompt_len, device=pooled.device).expand(bsz, heads, -1)
    if n <= 0:
        return last.clone()
    top = pooled.topk(min(n, pooled.shape[-1]), dim=-1).indices
    return torch.cat([top, last], dim=-1).sort(dim=-1).values


def select_all_layers(
    scores: dict[int, torch.Tensor], *, prompt_len: int, budget: int, tail: int, kernel_size: int, pooling: str,
    allocation: str,
) -> dict[int, torch.Tensor]:
    """Every layer's kept positions from its [B, Hkv, prompt_len - tail] key scores: pooled, the budget's
    selected keys split by ``allocation`` (uniform or global, :func:`layer_counts`), plus the last ``tail``
    tokens. (The engine's prefill adds the layer profile and the coverage: ``prefill.kept_of_layers``.)"""
    layers = sorted(scores)
    pooled = [pool1d(scores[i], kernel_size, pooling) for i in layers]
    chosen = layer_counts(pooled, budget - tail, allocation)
    return {i: top_with_tail(p, c, prompt_len, tail) for i, p, c in zip(layers, pooled, chosen)}


def attention_mass(weights: torch.Tensor, *, prompt_len: int, kv_heads: int) -> torch.Tensor:
    """The attention the Q observation queries of ``weights`` [B, Hq, Q, K] paid to each prompt key, summed
    over the queries and the query heads of each KV group: [B, Hkv, prompt_len] (what a coverage counts)."""
    bsz, q_heads, _, _ = weights.shape
    prompt = weights[..., :prompt_len].float().sum(dim=2)  # [B, Hq, P]
    return prompt.reshape(bsz, kv_heads, q_heads // kv_heads, prompt_len).sum(dim=2)


def coverage_count(mass: torch.Tensor, *, tail: int, coverage: float, floor: int, most: int, sinks: int = 0) -> int:
    """A budget that sizes itself: the fewest keys (besides the kept ``tail``, the last prompt positions) that
    every KV head needs for its kept keys to hold ``coverage`` of its attention mass ``mass`` [..., Hkv, P]
    (one count for the layer: its heads share one cache shape), between ``floor`` and ``most``.

    One sharp needle is covered by a few keys; attention spread over the text (a count, an aggregation) needs
    many. The first ``sinks`` positions (attention sinks: the first tokens take much of many heads' attention
    whatever the question) are left out of the mass and counted as kept: otherwise a head that parks 90% of
    its attention on the first token would be "covered" by that token alone."""
    outside = mass.shape[-1] - tail
    sinks = min(sinks, outside)
    flat = mass.reshape(-1, mass.shape[-1])[:, sinks:]
    need = coverage * flat.sum(dim=-1) - flat[:, outside - sinks :].sum(dim=-1)
    reached = flat[:, : outside - sinks].sort(dim=-1, descending=True).values.cumsum(dim=-1)
    per_head = torch.where(need > 0, (reached < need[:, None]).sum(dim=-1) + 1, torch.zeros_like(need, dtype=torch.long))
    return int(min(max(int(per_head.max()) + sinks, floor), most, outside))


def streaming_indices(prompt_len: int, budget: int, sink_tokens: int, *, device=None) -> torch.Tensor:
    """StreamingLLM's kept positions: the first ``sink_tokens`` plus the most recent ones, [budget]."""
    recent = budget - sink_tokens
    return torch.cat(
        [torch.arange(0, sink_tokens, device=device), torch.arange(prompt_len - recent, prompt_len, device=device)]
    )


def combine_records(records: Sequence[tuple[torch.Tensor, int]], reduction: str) -> torch.Tensor:
    """One layer's key scores from its per-forward (scores, number of queries) records: max combines as a
    max, mean as a mean weighted by the number of queries. A single record is returned as it is."""
    if len(records) == 1:
        return records[0][0]
    if reduction == "max":
        return torch.stack([r[0] for r in records]).amax(dim=0)
    total = sum(r[1] for r in records)
    return sum(r[0] * r[1] for r in records) / total
