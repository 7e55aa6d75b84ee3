"""One layer's SpecKV selection from the query and key rows vLLM hands its attention backend (pure torch).

The package's engine scores with the attention of the observation queries (the draft's answer; also the
window's when ``score_window``) to every prompt key, per KV head, then pools and keeps the top entries
(:mod:`draftapprox_integrations.engine.speckv.selection`). The same functions run here, on one request's rows
of vLLM's flattened batch: ``query`` [T, Hq, D], ``key`` [T, Hkv, D] for its prompt + answer (T tokens).
"""

from __future__ import annotations

import torch

from ..engine.capture import window_attention
from ..engine.config import SpecKVConfig
from ..engine.scoring import pool1d
from ..engine.speckv.prefill import kept_tail
from ..engine.speckv.selection import observation_key_scores, top_with_tail


def observation_queries(config: SpecKVConfig, prompt_len: int, answer_len: int) -> int:
    """How many of the last queries score the keys: the answer's, plus the window's when ``score_window``
    (or when there is no answer: SnapKV's window alone), as in the engine's prefill."""
    window = min(config.window_size, prompt_len)
    return window + answer_len if config.score_window or not answer_len else answer_len


def kept_positions(
    query: torch.Tensor, key: torch.Tensor, *, scale: float, prompt_len: int, config: SpecKVConfig
) -> torch.Tensor:
    """Sorted prompt positions each KV head keeps, [Hkv, min(budget, prompt_len)]."""
    n_tokens, kv_heads = key.shape[0], key.shape[1]
    answer_len = n_tokens - prompt_len
    budget = min(config.budget, prompt_len)
    if budget >= prompt_len:  # nothing to drop but the answer
        return torch.arange(prompt_len, device=key.device).expand(kv_heads, -1)
    window = min(config.window_size, prompt_len)
    tail = kept_tail(config, window, answer_len > 0)
    queries = observation_queries(config, prompt_len, answer_len)
    # [1, H, T, D]: the layout the engine's capture sees; plain causal attention over the request's own rows.
    weights = window_attention(query.transpose(0, 1)[None], key.transpose(0, 1)[None], None, scale, queries)
    scores = observation_key_scores(
        weights, prompt_len=prompt_len, window_size=tail, kv_heads=kv_heads, reduction=config.reduction
    )
    pooled = pool1d(scores, config.kernel_size, config.pooling)
    return top_with_tail(pooled, budget - tail, prompt_len, tail)[0]


def gather_kept(rows: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Per KV head, the kept entries of ``rows`` [T, Hkv, D] as [k, Hkv, D]: compacted entry j of head h is
    the row ``kept[h, j]`` of that head, so all heads of entry j can be written to one cache slot."""
    index = kept.transpose(0, 1)[..., None].expand(-1, -1, rows.shape[-1])
    return rows.gather(0, index)
