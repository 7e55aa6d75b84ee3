"""``draftapprox sweep-kv`` takes the engine's path apart to score many selections on one prefill: on the
real SmolLM2 (its own draft) its default candidate must answer exactly like ``engine.generate`` with
speckv, its snapkv candidate like snapkv, and its full answer like full KV. float32: see
test_batching_embedded for why exact equality needs it."""

from __future__ import annotations

import pytest

from draftapprox_integrations import DraftApproxEngine
from draftapprox_integrations.engine import SpecKVConfig
from draftapprox_integrations.engine.prompts import encode_prompt
from draftapprox_integrations.evals.kv_candidates import CANDIDATES, V1
from draftapprox_integrations.evals.kv_sweep import observe
from draftapprox_integrations.evals.sweep_runner import SweepConfig, sweep_one
from draftapprox_integrations.evals.tasks import make_sample
from tests.helpers import SMOLLM2


@pytest.fixture(scope="module")
def engine():
    return DraftApproxEngine(SMOLLM2, SMOLLM2, device="cpu", dtype="float32").load()


@pytest.mark.parametrize("task", ["niah_multivalue", "vt_noise"])
def test_sweep_rows_are_the_engines_answers(engine, task, tmp_path):
    sample = make_sample(task, 1024, engine.target.tokenizer, seed=5, index=0)
    cfg = SweepConfig(
        tasks=[task], lengths=[1024], seeds=[5], num_samples=1, split="tuning", budgets=[64, 128],
        candidates=["speckv-v1", "snapkv", "speckv-look-last8", "speckv-look-last8-alloc", "speckv-look-last8-profile-smollm2-b64"],
        extra=[("speckv-cov70su", 1024)], output_dir=str(tmp_path),
    )
    rows = {(r["method"], r["budget"]): r["prediction"] for r in sweep_one(engine, sample, cfg)}
    # A resumed sweep answers only what the file lacks, and the same answers.
    resumed = sweep_one(engine, sample, cfg, frozenset({"full", "snapkv@64", "speckv-cov70su@1024"}))
    assert {(r["method"], r["budget"]) for r in resumed} == set(rows) - {("full", None), ("snapkv", 64), ("speckv-cov70su", 1024)}
    assert all(r["prediction"] == rows[(r["method"], r["budget"])] for r in resumed)
    prompt = sample.chat_prompt(engine.target.tokenizer)
    common = dict(max_new_tokens=sample.max_new_tokens, chat=False)
    assert rows[("full", None)] == engine.generate(prompt, method="full", **common).text
    configs = {  # candidate -> how engine.generate runs it
        "speckv-look-last8": dict(method="speckv", config=SpecKVConfig(allocation="uniform")),
        "speckv-v1": dict(method="speckv", config=V1),
        "speckv-look-last8-alloc": dict(method="speckv", config=SpecKVConfig(allocation="global")),
        "speckv-look-last8-profile-smollm2-b64": dict(method="speckv", config=SpecKVConfig(allocation="profile")),
        "snapkv": dict(method="snapkv", config=SpecKVConfig(allocation="uniform")),
    }
    for budget in (64, 128):
        for candidate, how in configs.items():
            expected = engine.generate(prompt, budget=budget, **how, **common).text
            assert rows[(candidate, budget)] == expected, (candidate, budget)
    # The self-sizing budget: one count per request from the lookahead's attention (SpecKVConfig.coverage).
    sized = engine.generate(prompt, method="speckv", config=SpecKVConfig(budget=1024, coverage=0.7), **common)
    assert rows[("speckv-cov70su", 1024)] == sized.text
    # The global allocation keeps its budget's bytes: 30 layers x 128 entries on average, split unevenly.
    ids = encode_prompt(engine.target, None, prompt)
    with engine.lock:
        obs = observe(engine.target, ids, window=cfg.window, max_new_tokens=sample.max_new_tokens)
    kept = CANDIDATES["speckv-look-last8-alloc"](obs, 128)
    sizes = [k.shape[-1] for k in kept.values()]
    assert sum(sizes) == 128 * len(kept) and len(set(sizes)) > 1
