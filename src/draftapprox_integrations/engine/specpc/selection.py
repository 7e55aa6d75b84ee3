"""SpecPC's pure selection: captured attention -> per-token scores -> the kept positions (no model here)."""

from __future__ import annotations

import math

import torch

from ..config import check_rate
from ..errors import ConfigError
from ..scoring import pool1d, query_weights, reduce

def reduce_window_attention(
    weights: torch.Tensor,
    *,
    lookahead: int,
    prompt_len: int,
    head_reduction: str,
    weighted_query: bool,
    total_len: int | None = None,
) -> torch.Tensor:
    """Per-step scores of the prompt keys from one layer's captured attention.

    weights: [B=1, H, Q, K] attention of the last Q queries; the last ``lookahead`` of them are lookahead
    tokens (one step each), the queries before them are the observation window (one step together,
    weighted 0 -> 1 when ``weighted_query``). Keys are the last K of ``total_len`` positions (a sliding
    layer sees only its window); only the first ``prompt_len`` positions are scored.
    Returns [S, prompt_len] with S = (1 if there are window queries) + lookahead; unseen keys score 0.
    """
    if weights.dim() == 4:
        weights = weights[0]
    heads, q_len, k_len = weights.shape
    total = k_len if total_len is None else total_len
    lookahead = min(lookahead, q_len)
    n_window = q_len - lookahead
    rows: list[torch.Tensor] = []
    if n_window > 0:
        win = weights[:, :n_window, :]
        if weighted_query:
            win = win * query_weights(n_window, device=win.device)[None, :, None]
        rows.append(reduce(win, (0, 1), head_reduction)[None])
    if lookahead > 0:
        look = weights[:, n_window:, :]  # [H, m, K]
        rows.append(reduce(look, 0, head_reduction))
    per_key = torch.cat(rows, dim=0)  # [S, K]
    first_key = total - k_len  # right-align the keys of a sliding layer
    out = per_key.new_zeros(per_key.shape[0], prompt_len)
    lo, hi = max(first_key, 0), min(total, prompt_len)
    if hi > lo:
        out[:, lo:hi] = per_key[:, lo - first_key : hi - first_key]
    return out


def combine_scores(layer_step_scores: torch.Tensor, layer_reduction: str, step_reduction: str) -> torch.Tensor:
    """[layers, steps, L] -> [L]: reduce over layers, then over steps (prefill window, lookahead tokens)."""
    if layer_step_scores.dim() != 3:
        raise ValueError(f"expected [layers, steps, L], got shape {tuple(layer_step_scores.shape)}")
    per_step = reduce(layer_step_scores, 0, layer_reduction)
    return reduce(per_step, 0, step_reduction)


def neighbor_offsets(n: int) -> torch.Tensor:
    """Offsets of a position and its ``n`` nearest neighbours, nearest first, left before right: 0,-1,1,-2,2..."""
    out = [0]
    d = 1
    while len(out) < n + 1:
        out.append(-d)
        if len(out) < n + 1:
            out.append(d)
        d += 1
    return torch.tensor(out, dtype=torch.long)


def _unique_in_order(values: torch.Tensor) -> torch.Tensor:
    """Distinct values of a 1-D tensor, each at its first occurrence, in that order."""
    if values.numel() == 0:
        return values
    uniq, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(values.numel(), device=values.device)
    first = torch.full((uniq.numel(),), values.numel(), dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return uniq[first.argsort()]


def rank_positions(
    scores: torch.Tensor,
    *,
    kernel_size: int,
    pooling: str,
    neighbors: int,
    protected: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every position once, in the order SpecPC spends a budget on them.

    First the ``protected`` positions (the window), last first; then the positions by their pooled score
    (ties: the earlier first), each followed by its ``neighbors`` nearest neighbours (nearest first, left
    before right), de-duplicated in that order.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    length = scores.numel()
    device = scores.device
    if protected is None:
        protected = torch.zeros(length, dtype=torch.bool, device=device)
    protected_idx = protected.nonzero().flatten().flip(0)
    pooled = pool1d(scores.float()[None], kernel_size, pooling)[0].masked_fill(protected, float("-inf"))
    ranked = torch.sort(pooled, descending=True, stable=True).indices[: length - protected_idx.numel()]
    grown = (ranked[:, None] + neighbor_offsets(neighbors).to(device)[None, :]).reshape(-1)
    grown = grown[(grown >= 0) & (grown < length)]
    grown = grown[~protected[grown]]
    return torch.cat([protected_idx, _unique_in_order(grown)])


def select_tokens(
    scores: torch.Tensor,
    budget: int,
    *,
    kernel_size: int,
    pooling: str,
    neighbors: int,
    protected: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sorted indices of exactly ``min(budget, L)`` positions to keep, SpecPC's token-level selection.

    scores [L]; protected: bool [L] of positions always kept (the window), counted in the budget; if it
    alone exceeds the budget, its last ``budget`` positions are kept. The rest of the budget goes to the
    top positions of the pooled scores, each grown by its ``neighbors`` nearest neighbours (nearest first),
    de-duplicated in rank order and cut to the budget: the first ``budget`` of :func:`rank_positions`.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if budget >= scores.numel():
        return torch.arange(scores.numel(), device=scores.device)
    order = rank_positions(scores, kernel_size=kernel_size, pooling=pooling, neighbors=neighbors, protected=protected)
    return torch.sort(order[:budget]).values


def resolve_budget(total_tokens: int, budget: int | None, rate: float | None) -> int:
    """Tokens to keep from exactly one of ``budget`` (tokens, >= 1) or ``rate`` (kept fraction in (0, 1])."""
    if (budget is None) == (rate is None):
        raise ConfigError("give exactly one of budget= (tokens to keep) or rate= (kept fraction in (0, 1])")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise ConfigError(f"budget must be an integer number of tokens, got {budget!r}")
        if budget < 1:
            raise ConfigError(f"budget must be >= 1 token, got {budget}")
        return budget
    return max(1, int(math.floor(check_rate(rate) * total_tokens + 0.5)))

