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
    bsz, heads, _ = scores.shape
    window = torch.arange(prompt_len - window_size, prompt_len, device=scores.device).expand(bsz, heads, -1)
    n_top = budget - window_size
    if n_top <= 0:
        return window.clone()
    pooled = pool1d(scores, kernel_size, pooling)
    top = pooled.topk(n_top, dim=-1).indices
    return torch.cat([top, window], dim=-1).sort(dim=-1).values


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
