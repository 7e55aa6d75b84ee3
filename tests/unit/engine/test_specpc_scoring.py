"""SpecPC's pure scoring and selection functions, and the span helpers, on hand-made inputs."""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations.engine.alignment import (
    count_tokens_in_spans,
    merge_spans,
    render_spans,
    snap_to_sentences,
    snap_to_words,
    token_spans,
)
from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.engine.specpc import (
    combine_scores,
    neighbor_offsets,
    reduce_window_attention,
    resolve_budget,
    select_tokens,
)

# -- selection -----------------------------------------------------------------------------------


def test_neighbor_offsets_nearest_first_left_before_right():
    assert neighbor_offsets(0).tolist() == [0]
    assert neighbor_offsets(1).tolist() == [0, -1]
    assert neighbor_offsets(4).tolist() == [0, -1, 1, -2, 2]
    assert neighbor_offsets(5).tolist() == [0, -1, 1, -2, 2, -3]


@pytest.mark.parametrize("budget", [1, 5, 17, 40, 99])
def test_budget_is_exact_and_sorted(budget):
    torch.manual_seed(budget)
    scores = torch.rand(100)
    kept = select_tokens(scores, budget, kernel_size=5, pooling="max", neighbors=4)
    assert kept.numel() == budget
    assert torch.equal(kept, torch.sort(kept).values)
    assert kept.unique().numel() == budget


def test_budget_at_or_above_length_keeps_everything():
    scores = torch.rand(10)
    assert select_tokens(scores, 10, kernel_size=3, pooling="max", neighbors=2).tolist() == list(range(10))
    assert select_tokens(scores, 50, kernel_size=3, pooling="max", neighbors=2).tolist() == list(range(10))


def test_window_always_kept_even_when_it_scores_zero():
    scores = torch.ones(50)
    scores[40:] = 0.0  # the window has the lowest scores
    protected = torch.zeros(50, dtype=torch.bool)
    protected[40:] = True
    kept = select_tokens(scores, 15, kernel_size=1, pooling="none", neighbors=0, protected=protected)
    assert kept.numel() == 15
    assert set(range(40, 50)) <= set(kept.tolist())


def test_window_larger_than_budget_keeps_its_last_positions():
    protected = torch.zeros(30, dtype=torch.bool)
    protected[20:] = True
    kept = select_tokens(torch.rand(30), 4, kernel_size=1, pooling="none", neighbors=0, protected=protected)
    assert kept.tolist() == [26, 27, 28, 29]


def test_neighbours_grow_the_top_position_nearest_first():
    scores = torch.zeros(40)
    scores[20] = 10.0
    scores[5] = 5.0
    # Budget 4 with 4 neighbours: the top peak's own neighbourhood comes first (20, 19, 21, 18);
    # the second peak (5) does not make it.
    kept = select_tokens(scores, 4, kernel_size=1, pooling="none", neighbors=4)
    assert kept.tolist() == [18, 19, 20, 21]
    # Budget 6: the rest of the first neighbourhood (22), then the second peak (5).
    kept = select_tokens(scores, 6, kernel_size=1, pooling="none", neighbors=4)
    assert kept.tolist() == [5, 18, 19, 20, 21, 22]


def test_neighbours_stay_inside_the_sequence():
    scores = torch.zeros(10)
    scores[0] = 1.0
    kept = select_tokens(scores, 3, kernel_size=1, pooling="none", neighbors=4)
    assert kept.tolist() == [0, 1, 2]


def test_without_neighbours_selection_is_plain_top_k():
    scores = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
    kept = select_tokens(scores, 3, kernel_size=1, pooling="none", neighbors=0)
    assert kept.tolist() == [1, 3, 5]


def test_max_pooling_spreads_a_peak_to_its_centred_kernel():
    scores = torch.zeros(30)
    scores[15] = 1.0
    scores[2] = 0.5
    # Kernel 5 (centred): the peak lifts 13..17 to 1.0; with a budget of 5 and no neighbours those are kept.
    kept = select_tokens(scores, 5, kernel_size=5, pooling="max", neighbors=0)
    assert kept.tolist() == [13, 14, 15, 16, 17]


def test_avg_pooling_prefers_dense_regions_over_a_lone_spike():
    scores = torch.zeros(40)
    scores[5] = 1.0  # lone spike
    scores[20:25] = 0.6  # dense region: avg over 5 = 0.6 > 1/5
    kept = select_tokens(scores, 1, kernel_size=5, pooling="avg", neighbors=0)
    assert kept.tolist() == [22]
    kept_raw = select_tokens(scores, 1, kernel_size=1, pooling="none", neighbors=0)
    assert kept_raw.tolist() == [5]


def test_ties_rank_earlier_positions_first():
    kept = select_tokens(torch.ones(10), 3, kernel_size=1, pooling="none", neighbors=0)
    assert kept.tolist() == [0, 1, 2]


# -- reductions ------------------------------------------------------------------------------------


def test_weighted_queries_ignore_the_first_window_query():
    # 1 head, 3 window queries, 4 keys. Query 0 (weight 0) attends key 0 only.
    w = torch.zeros(1, 1, 3, 4)
    w[0, 0, 0, 0] = 1.0
    w[0, 0, 1, 1] = 1.0
    w[0, 0, 2, 2] = 1.0
    out = reduce_window_attention(w, lookahead=0, prompt_len=4, head_reduction="max", weighted_query=True)
    assert out.shape == (1, 4)
    assert out[0].tolist() == [0.0, 0.5, 1.0, 0.0]
    flat = reduce_window_attention(w, lookahead=0, prompt_len=4, head_reduction="max", weighted_query=False)
    assert flat[0].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_lookahead_queries_are_separate_steps_and_keys_are_cut_to_the_prompt():
    # 2 heads; 2 window queries then 2 lookahead queries; 6 keys of which the prompt is the first 4.
    w = torch.zeros(1, 2, 4, 6)
    w[0, 0, 2, 3] = 0.8  # lookahead step 1, head 0 -> key 3
    w[0, 1, 3, 1] = 0.6  # lookahead step 2, head 1 -> key 1
    w[0, 1, 3, 5] = 0.9  # a lookahead key: outside the prompt, dropped
    w[0, 0, 1, 0] = 0.4  # window query 1 (weight 1) -> key 0
    out = reduce_window_attention(w, lookahead=2, prompt_len=4, head_reduction="max", weighted_query=True)
    assert out.shape == (3, 4)
    assert torch.allclose(out[0], torch.tensor([0.4, 0.0, 0.0, 0.0]))
    assert torch.allclose(out[1], torch.tensor([0.0, 0.0, 0.0, 0.8]))
    assert torch.allclose(out[2], torch.tensor([0.0, 0.6, 0.0, 0.0]))


def test_sliding_layer_keys_are_right_aligned():
    # A decode step on a sliding layer sees only the last 3 of 6 positions.
    w = torch.tensor([[[[0.2, 0.3, 0.5]]]])
    out = reduce_window_attention(w, lookahead=1, prompt_len=5, head_reduction="max", weighted_query=True, total_len=6)
    assert torch.allclose(out[0], torch.tensor([0.0, 0.0, 0.0, 0.2, 0.3]))


def test_mean_head_reduction():
    w = torch.zeros(1, 2, 1, 3)
    w[0, 0, 0, 0] = 1.0
    w[0, 1, 0, 1] = 1.0
    out = reduce_window_attention(w, lookahead=1, prompt_len=3, head_reduction="mean", weighted_query=False)
    assert out[0].tolist() == [0.5, 0.5, 0.0]


def test_combine_scores_layers_then_steps():
    x = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 2.0]],  # layer 0: step 0, step 1
            [[3.0, 0.0], [0.0, 0.0]],  # layer 1
        ]
    )
    assert combine_scores(x, "max", "max").tolist() == [3.0, 2.0]
    assert combine_scores(x, "mean", "max").tolist() == [2.0, 1.0]
    assert combine_scores(x, "max", "mean").tolist() == [1.5, 1.0]
    with pytest.raises(ValueError):
        combine_scores(x[0], "max", "max")


# -- budget ----------------------------------------------------------------------------------------


def test_resolve_budget():
    assert resolve_budget(2000, 200, None) == 200
    assert resolve_budget(2000, None, 0.1) == 200
    assert resolve_budget(3, None, 0.01) == 1
    assert resolve_budget(10, None, 1.0) == 10
    for bad in (dict(budget=None, rate=None), dict(budget=5, rate=0.5)):
        with pytest.raises(ConfigError, match="exactly one"):
            resolve_budget(10, **bad)
    for rate in (0.0, -0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ConfigError, match="rate"):
            resolve_budget(10, None, rate)
    for budget in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="budget"):
            resolve_budget(10, budget, None)


# -- spans -----------------------------------------------------------------------------------------


def test_merge_and_token_spans():
    assert merge_spans([(5, 8), (0, 2), (2, 4), (7, 10)]) == [(0, 4), (5, 10)]
    text = "ab  cd|ef"
    assert merge_spans([(0, 2), (4, 6)], text) == [(0, 6)]  # whitespace-only gap merges
    offsets = [(0, 2), (2, 4), (4, 6), (6, 9)]
    assert token_spans(offsets, [0, 1, 3]) == [(0, 4), (6, 9)]


def test_snap_to_words_grows_partial_words_and_trims_space():
    text = "The quick brown fox jumps."
    assert snap_to_words(text, [(5, 7)]) == [(4, 9)]  # "ui" -> "quick"
    assert snap_to_words(text, [(3, 4)]) == []  # only a space
    assert snap_to_words(text, [(9, 13)]) == [(10, 15)]  # " bro" -> "brown"


def test_snap_to_sentences():
    text = "First one. Second has the key 42! Third line\nFourth."
    spans = snap_to_sentences(text, [(text.index("key"), text.index("key") + 3)])
    assert [text[a:b] for a, b in spans] == ["Second has the key 42!"]


def test_render_spans_marks_every_gap():
    text = "aaa bbb ccc ddd"
    assert render_spans(text, [(4, 7), (12, 15)], " … ") == "… bbb … ddd"
    assert render_spans(text, [(0, 3), (8, 11)], " | ") == "aaa | ccc |"
    assert render_spans(text, [(0, 15)], " … ") == text
    assert render_spans(text, [], " … ") == ""


def test_count_tokens_in_spans():
    offsets = [(0, 3), (3, 4), (4, 7), (7, 8), (8, 11)]
    assert count_tokens_in_spans(offsets, [(0, 3), (8, 11)]) == 2
    assert count_tokens_in_spans(offsets, [(2, 5)]) == 3
    assert count_tokens_in_spans(offsets, []) == 0


def test_paper_settings_and_small_draft_defaults():
    from draftapprox_integrations.engine.config import SpecPCConfig

    paper = SpecPCConfig.paper()
    assert (paper.pooling, paper.kernel_size, paper.neighbors, paper.starting_layer_index) == ("max", 32, 32, 8)
    assert SpecPCConfig.paper(kernel_size=64).neighbors == 64
    tuned = SpecPCConfig()
    assert (tuned.pooling, tuned.kernel_size, tuned.neighbors, tuned.starting_layer_index) == ("avg", 8, 0, 12)
    with pytest.raises(ConfigError):
        SpecPCConfig.paper(kernel_size=0)
