"""``draftapprox sweep-kv`` takes the engine's path apart to score many selections on one prefill: on the
real SmolLM2 (its own draft) its default candidate must answer exactly like ``engine.generate`` with
speckv, its snapkv candidate like snapkv, and its full answer like full KV. float32: see
test_batching_embedded for why exact equality needs it."""

from __future__ import annotations

import pytest

from draftapprox_integrations import DraftApproxEngine
from draftapprox_integrations.evals.sweep_runner import SweepConfig, sweep_one
from draftapprox_integrations.evals.tasks import make_sample
from tests.helpers import SMOLLM2


@pytest.fixture(scope="module")
def engine():
    return DraftApproxEngine(SMOLLM2, SMOLLM2, device="cpu", dtype="float32").load()


@pytest.mark.parametrize("task", ["niah_multivalue", "vt_short"])
def test_sweep_rows_are_the_engines_answers(engine, task, tmp_path):
    sample = make_sample(task, 1024, engine.target.tokenizer, seed=5, index=0)
    cfg = SweepConfig(
        tasks=[task], lengths=[1024], seeds=[5], num_samples=1, split="tuning", budgets=[64, 128],
        candidates=["speckv", "snapkv", "speckv-global"], extra=[], output_dir=str(tmp_path),
    )
    rows = {(r["method"], r["budget"]): r["prediction"] for r in sweep_one(engine, sample, cfg)}
    prompt = sample.chat_prompt(engine.target.tokenizer)
    common = dict(max_new_tokens=sample.max_new_tokens, chat=False)
    assert rows[("full", None)] == engine.generate(prompt, method="full", **common).text
    for budget in (64, 128):
        for method in ("speckv", "snapkv"):
            expected = engine.generate(prompt, method=method, budget=budget, **common).text
            assert rows[(method, budget)] == expected, (method, budget)
    # Every candidate kept its budget's bytes: 30 layers x 128 entries on average, whatever the split.
    kept = cfg.selections["speckv-global@128"]
    assert sum(k.shape[-1] for k in kept.values()) == 128 * len(kept)
