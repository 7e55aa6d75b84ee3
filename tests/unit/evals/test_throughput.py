"""The throughput measurement: batched against one by one, in one run, on a tiny random llama."""

from __future__ import annotations

import pytest

from draftapprox_integrations.engine import ConfigError, DraftApproxEngine
from draftapprox_integrations.evals.runner import EvalConfig
from draftapprox_integrations.evals.throughput import copy_prompts, measure_throughput, throughput_table


@pytest.fixture(scope="module")
def engine(tiny_model_factory):
    folder = str(tiny_model_factory("llama"))
    return DraftApproxEngine(folder, folder, device="cpu", dtype="float32", max_batch_size=4).load()


def test_copy_prompts_are_distinct_and_about_the_asked_length(engine):
    tok = engine.target.tokenizer
    prompts = copy_prompts(tok, 300, 3)
    assert len(set(prompts)) == 3
    for p in prompts:
        assert 280 <= len(tok(p)["input_ids"]) <= 360


def test_measure_throughput_counts_both_runs_of_the_same_prompts(engine):
    prompts = copy_prompts(engine.target.tokenizer, 300, 3)
    row = measure_throughput(engine, prompts, method="speckv", budget=32, max_new_tokens=6)
    assert row["batch_size"] == 3
    assert row["same_answers"] is True
    assert row["sequential_tokens"] == row["batched_tokens"] > 0
    assert row["batched_tokens_per_second"] > 0 and row["sequential_tokens_per_second"] > 0
    assert row["end_to_end_speedup"] == pytest.approx(row["batched_tokens_per_second"] / row["sequential_tokens_per_second"], rel=1e-2)
    lines = throughput_table([dict(row, method="speckv", length=300)])
    assert lines[2].startswith("| speckv | 300 | 3 |") and lines[2].endswith("| yes |")


@pytest.mark.parametrize("bad", [-1, True])
def test_eval_lookahead_tokens_is_checked(bad):
    with pytest.raises(ConfigError, match="lookahead_tokens"):
        EvalConfig(lookahead_tokens=bad).validate()
