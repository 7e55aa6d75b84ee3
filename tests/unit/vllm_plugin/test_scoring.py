"""The plugin's per-layer selection on vLLM's row layout equals a direct computation of SpecKV's rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from draftapprox_integrations.engine.config import SpecKVConfig
from draftapprox_integrations.vllm_plugin.scoring import gather_kept, kept_positions


def reference_kept(query, key, scale, prompt_len, config):
    """SpecKV's selection written out per KV head: [T, Hq, D] / [T, Hkv, D] rows, GQA head h -> KV head
    h // group, causal softmax of the observation queries, max over them and the group, max-pool, top-k."""
    n, q_heads, _ = query.shape
    kv_heads = key.shape[1]
    group = q_heads // kv_heads
    answer = n - prompt_len
    window = min(config.window_size, prompt_len)
    tail = min(config.keep_last, window) if answer and config.keep_last is not None else window
    first = n - answer if not config.score_window and answer else n - answer - window
    kept = []
    for g in range(kv_heads):
        best = torch.full((prompt_len - tail,), float("-inf"))
        for h in range(g * group, (g + 1) * group):
            for t in range(first, n):
                logits = (query[t, h].float() @ key[: t + 1, g].float().T) * scale
                best = torch.maximum(best, torch.softmax(logits, -1)[: prompt_len - tail])
        pad = (config.kernel_size - 1) // 2
        pooled = F.max_pool1d(F.pad(best[None, None], (pad, pad), value=float("-inf")), config.kernel_size, 1)[0, 0]
        top = pooled.topk(config.budget - tail).indices
        kept.append(torch.cat([top, torch.arange(prompt_len - tail, prompt_len)]).sort().values)
    return torch.stack(kept)


@pytest.mark.parametrize("config", [SpecKVConfig(budget=24, window_size=8, kernel_size=3),
                                    SpecKVConfig.paper(budget=24, window_size=8, kernel_size=5)])
@pytest.mark.parametrize("answer", [0, 6])
def test_kept_positions_match_the_rule(config, answer):
    torch.manual_seed(1)
    prompt_len, q_heads, kv_heads, dim = 80, 6, 2, 16
    query = torch.randn(prompt_len + answer, q_heads, dim)
    key = torch.randn(prompt_len + answer, kv_heads, dim)
    got = kept_positions(query, key, scale=dim**-0.5, prompt_len=prompt_len, config=config)
    assert got.shape == (kv_heads, config.budget)
    assert torch.equal(got, reference_kept(query, key, dim**-0.5, prompt_len, config))


def test_a_budget_over_the_prompt_keeps_every_prompt_entry_and_drops_the_answer():
    query, key = torch.randn(30, 4, 8), torch.randn(30, 2, 8)
    got = kept_positions(query, key, scale=0.3, prompt_len=20, config=SpecKVConfig(budget=64))
    assert torch.equal(got, torch.arange(20).expand(2, -1))


def test_gather_kept_takes_each_heads_own_rows():
    rows = torch.arange(10 * 2 * 3, dtype=torch.float32).reshape(10, 2, 3)
    kept = torch.tensor([[0, 4, 9], [1, 2, 3]])
    out = gather_kept(rows, kept)
    assert out.shape == (3, 2, 3)
    for h in range(2):
        for j in range(3):
            assert torch.equal(out[j, h], rows[kept[h, j], h])
