"""SpecPC's one-pass scoring (no lookahead to generate) stops the draft after its last scored layer: the layers
above never run, and the scores are those of the full forward."""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations.engine import SpecPCConfig
from draftapprox_integrations.engine.capture import attention_modules
from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.engine.specpc import scorer

from tests.helpers import TINY, words

QUERY = "Where is the copper lamp?"


def _calls_per_layer(model) -> tuple[dict[int, int], list]:
    counts: dict[int, int] = {}
    handles = []
    for module in attention_modules(model):
        def hook(mod, args, _idx=module.layer_idx):  # on entry: a layer stopped inside still counts
            counts[_idx] = counts.get(_idx, 0) + 1
        handles.append(module.register_forward_pre_hook(hook))
    return counts, handles


@pytest.mark.parametrize("extra", [dict(lookahead_tokens=0), dict(lookahead_text="the lamp is north")])
def test_one_pass_stops_after_the_last_scored_layer_with_the_same_scores(tiny_engine, monkeypatch, extra):
    text = words(200, 7)
    model = tiny_engine.draft.model
    counts, handles = _calls_per_layer(model)
    try:
        stopped = tiny_engine.compress(text, QUERY, budget=30, return_scores=True, **{**TINY, "ending_layer_index": 2}, **extra)
        assert counts.get(2) == 1 and 3 not in counts  # layer 3 (the last of 4) never ran
        counts.clear()
        monkeypatch.setattr(scorer, "_layer_count", lambda m: 3)  # the stop is skipped: a full forward
        full = tiny_engine.compress(text, QUERY, budget=30, return_scores=True, **{**TINY, "ending_layer_index": 2}, **extra)
        assert counts.get(3) == 1
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(stopped.scores[0], full.scores[0]) and stopped.text == full.text


def test_a_generated_lookahead_still_runs_every_layer(tiny_engine):
    counts, handles = _calls_per_layer(tiny_engine.draft.model)
    try:
        tiny_engine.compress(words(100, 3), QUERY, budget=20, lookahead_tokens=1, **{**TINY, "ending_layer_index": 2})
    finally:
        for h in handles:
            h.remove()
    assert counts.get(3) == 2  # prefill and the fed lookahead token: the logits need the last layer


def test_ending_layer_index_is_checked():
    with pytest.raises(ConfigError, match="ending_layer_index"):
        SpecPCConfig(starting_layer_index=5, ending_layer_index=4)
    with pytest.raises(ConfigError, match="ending_layer_index"):
        SpecPCConfig(ending_layer_index=-1)


def test_ending_layer_beyond_the_draft_is_refused(tiny_engine):
    with pytest.raises(ConfigError, match="ending_layer_index=9 but the draft has only 4 layers"):
        tiny_engine.compress(words(50, 1), QUERY, budget=10, **{**TINY, "ending_layer_index": 9})
