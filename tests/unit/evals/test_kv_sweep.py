"""The sweep's pure parts: candidates keep their budget's bytes and the tail, the Options re-implementation
agrees with the engine's selection where they overlap, spans group digits, the runner resumes and renders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.evals.kv_candidates import CANDIDATES, span_max
from draftapprox_integrations.evals.kv_sweep import HeadScores, Observation, token_spans
from draftapprox_integrations.evals.sweep_runner import SweepConfig, _done, cell_means, load_sweep, render_sweep

P, HQ, HKV, LAYERS, WINDOW = 400, 6, 2, 5, 32


def _observation(seed: int = 0, look: bool = True) -> Observation:
    g = torch.Generator().manual_seed(seed)

    def scores(power: float) -> torch.Tensor:
        return torch.rand(HQ, P, generator=g) ** power

    layers = {
        i: HeadScores(scores(1 + i), scores(1), WINDOW, scores(2 + 2 * i) if look else None, scores(1) if look else None, 7 if look else 0)
        for i in range(LAYERS)
    }
    return Observation(P, WINDOW, HKV, layers, torch.arange(P) // 4, {}, {}, torch.zeros(3), [], "")


# The self-sizing ones and the per-model profiles (30 layers: SmolLM2's) are tested below.
FIXED = [name for name in CANDIDATES if "-cov" not in name and "-profile-" not in name]


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("budget", [48, 128])
def test_every_candidate_keeps_its_budgets_bytes_sorted_and_unique(name, budget):
    kept = CANDIDATES[name](_observation(), budget)
    assert sorted(kept) == list(range(LAYERS))
    assert sum(k.shape[-1] for k in kept.values()) == budget * LAYERS
    for k in kept.values():
        assert k.shape[0] == HKV and (k.diff(dim=-1) > 0).all() and int(k.max()) == P - 1


def test_options_reimplementation_agrees_with_the_engine_where_they_overlap():
    obs = _observation(3)
    for ours, engines in [("speckv-recent8", "speckv-last8"), ("speckv-look-recent8", "speckv-look-last8")]:
        a, b = CANDIDATES[ours](obs, 96), CANDIDATES[engines](obs, 96)
        assert all(torch.equal(a[i], b[i]) for i in a), ours


def test_tails_and_the_snapkv_window():
    obs = _observation(1)
    last8 = CANDIDATES["speckv-look-last8"](obs, 64)
    snap = CANDIDATES["snapkv"](obs, 64)
    for i in range(LAYERS):
        assert last8[i][:, -8:].tolist() == [list(range(P - 8, P))] * HKV
        assert snap[i][:, -WINDOW:].tolist() == [list(range(P - WINDOW, P))] * HKV
    # With no lookahead recorded, scoring "with the lookahead only" falls back to the window's queries.
    bare = _observation(1, look=False)
    assert all(torch.equal(CANDIDATES["speckv-look-last8"](bare, 64)[i], CANDIDATES["speckv-last8"](bare, 64)[i]) for i in range(LAYERS))


def test_span_max_raises_each_score_to_its_spans_peak():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0]])
    spans = torch.tensor([0, 0, 1, 1, 2])
    assert torch.equal(span_max(scores, spans), torch.tensor([[0.5, 0.5, 0.9, 0.9, 0.0]]))


def test_token_spans_join_letters_and_digits_only(smollm2_tokenizer):
    ids = smollm2_tokenizer("is: 1234567. VAR QWERT = 5", add_special_tokens=False)["input_ids"]
    spans = token_spans(smollm2_tokenizer, ids).tolist()
    pieces = [smollm2_tokenizer.decode([t]) for t in ids]
    first = pieces.index("1")
    assert "".join(pieces[first : first + 7]) == "1234567"
    assert len(set(spans[first : first + 7])) == 1  # one number, one span (SmolLM2 has a token per digit)
    assert spans[first + 7] != spans[first]  # the full stop starts its own
    q = pieces.index(" Q")
    assert spans[q] == spans[q + 1] == spans[q + 2] != spans[q - 1]  # " Q" "W" "ERT": one name


def _row(method, budget, task, score, seed=1, sample=0, length=2048, split="heldout"):
    return dict(method=method, budget=budget, task=task, length=length, seed=seed, sample=sample, split=split, score=score)


def test_render_means_over_families_and_names_n(tmp_path):
    rows = [_row("full", None, "fwe", 1.0), _row("full", None, "vt_noise", 0.5), _row("speckv-v1", 64, "fwe", 0.0),
            _row("speckv-v1", 64, "vt_noise", 0.5), _row("full", None, "fwe", 0.0, sample=1), _row("full", None, "vt_noise", 0.5, sample=1),
            _row("speckv-v1", 64, "fwe", 1.0, sample=1), _row("speckv-v1", 64, "vt_noise", 0.5, sample=1)]
    cells = cell_means(rows)
    assert cells[("heldout", "full", 2048, "fwe")] == (50.0, 2)
    text = render_sweep(rows)
    assert "| full | 50.0 | 50.0 |" in text and "| speckv-v1@64 | 50.0 | 50.0 |" in text and "n >= 2" in text
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn", encoding="utf-8")
    assert len(load_sweep(path)) == 8
    assert _done(path)["fwe|2048|1|0"] == {"full", "speckv-v1@64"}


@pytest.mark.parametrize(
    "change,match",
    [(dict(tasks=["nope"]), "task"), (dict(candidates=["nope"]), "candidate"), (dict(split="test"), "split"),
     (dict(budgets=[32]), "exceed the window"), (dict(seeds=[]), "seed")],
)
def test_bad_sweep_configs_are_refused(change, match):
    base = dict(tasks=["fwe"], lengths=[2048], seeds=[1], num_samples=1, split="heldout")
    with pytest.raises(ConfigError, match=match):
        SweepConfig(**{**base, **change}).validate()


def _one_layer(mass: torch.Tensor) -> Observation:
    """An observation whose every layer's lookahead paid ``mass`` [P] of attention to the prompt's keys."""
    look = mass.expand(HQ, -1).clone()
    layers = {i: HeadScores(torch.rand(HQ, P), torch.rand(HQ, P), WINDOW, look, look, 7) for i in range(LAYERS)}
    return Observation(P, WINDOW, HKV, layers, torch.arange(P) // 4, {}, {}, torch.zeros(3), [], "")


@pytest.mark.parametrize("name", [n for n in CANDIDATES if "-cov" in n])
def test_a_self_sizing_budget_keeps_little_for_one_needle_and_much_for_spread_attention(name):
    needle = torch.full((P,), 1e-4)
    needle[[40, 41, 200]] = 1.0  # three keys hold almost all the mass
    spread = torch.ones(P)  # every key alike: reaching a share of the mass takes that share of the keys
    small, large = CANDIDATES[name](_one_layer(needle), 256), CANDIDATES[name](_one_layer(spread), 256)
    for kept in (small, large):
        for k in kept.values():
            assert (k.diff(dim=-1) > 0).all() and k[:, -8:].tolist() == [list(range(P - 8, P))] * HKV
            assert 16 + 8 <= k.shape[-1] <= 256  # between the floor (16 + the tail) and the maximum given
    assert all(small[i].shape[-1] == 16 + 8 for i in small)  # the three keys are within the floor
    coverage = float(name.split("-cov")[1][:2]) / 100
    sinks = 4 if name.endswith(("s", "su")) else 0
    # Spread attention: every key alike, so a share c of the (non-sink) mass takes that share of the keys,
    # less the 8 of the kept tail; the sinks are counted as kept.
    expected = min(256, 8 + sinks + math.ceil(coverage * (P - sinks) - 8))
    assert all(large[i].shape[-1] == expected for i in large), (expected, [large[i].shape[-1] for i in large])


def test_one_size_per_request_gives_every_layer_the_layers_mean_count():
    needle = torch.full((P,), 1e-4)
    needle[[40, 41, 200]] = 1.0
    obs = _one_layer(torch.ones(P))
    focused = _one_layer(needle).layers[0]
    obs.layers[0] = focused  # one layer needs the floor, the others much more
    each = CANDIDATES["speckv-cov80s"](obs, 256)
    even = CANDIDATES["speckv-cov80su"](obs, 256)
    sizes = [each[i].shape[-1] - 8 for i in sorted(each)]  # selected keys, less the kept tail
    assert len(set(sizes)) == 2
    assert {even[i].shape[-1] - 8 for i in even} == {round(sum(sizes) / len(sizes))}


def test_the_windows_share_is_chosen_by_the_windows_queries():
    obs = _observation(4)
    both = CANDIDATES["speckv-look-last8-win50"](obs, 72)
    look_only = CANDIDATES["speckv-look-last8"](obs, 72)
    for i in range(LAYERS):
        assert both[i].shape == look_only[i].shape  # the same bytes
        assert not torch.equal(both[i], look_only[i])  # some keys chosen by the window instead


def test_a_layer_profile_is_the_mean_share_of_the_global_allocation():
    from draftapprox_integrations.evals.layer_profiles import learn_profile

    rows = [
        {"method": "full", "global_counts": {"64": [10, 30, 60]}},
        {"method": "full", "global_counts": {"64": [30, 30, 40]}},
        {"method": "speckv", "global_counts": {"64": [100, 0, 0]}},  # not a full row: not counted
    ]
    assert learn_profile(rows, 64) == (0.2, 0.3, 0.5)
    with pytest.raises(ValueError, match="budget 128"):
        learn_profile(rows, 128)


@pytest.mark.parametrize("name", [n for n in CANDIDATES if "-profile-" in n])
def test_a_layer_profile_keeps_the_budgets_bytes_in_its_shares(name):
    from draftapprox_integrations.engine.layer_profiles import LAYER_PROFILES

    shares = LAYER_PROFILES[name.split("-profile-")[1]]
    g = torch.Generator().manual_seed(5)
    layers = {i: HeadScores(torch.rand(HQ, P, generator=g), torch.rand(HQ, P, generator=g), WINDOW,
                            torch.rand(HQ, P, generator=g), torch.rand(HQ, P, generator=g), 7) for i in range(len(shares))}
    obs = Observation(P, WINDOW, HKV, layers, torch.arange(P) // 4, {}, {}, torch.zeros(3), [], "")
    kept = CANDIDATES[name](obs, 72)
    counts = [kept[i].shape[-1] - 8 for i in range(len(shares))]
    assert sum(counts) == 64 * len(shares)  # the same bytes as 72 entries everywhere
    assert [abs(c - s * 64 * len(shares)) <= 1 for c, s in zip(counts, shares)] == [True] * len(shares)
    with pytest.raises(ConfigError, match="has 30 layers; the model has 5"):
        CANDIDATES[name](_observation(), 72)
