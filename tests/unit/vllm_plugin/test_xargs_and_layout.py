"""The plugin's request arguments and its paged-cache arithmetic (no vLLM needed)."""

from __future__ import annotations

import json

import pytest

from draftapprox_integrations.engine.config import SpecKVConfig
from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.vllm_plugin import layout
from draftapprox_integrations.vllm_plugin.xargs import ANSWER, BUDGET, CONFIG, read_speckv_args, speckv_xargs


def test_xargs_round_trip_with_engine_defaults():
    args = speckv_xargs([5, 6, 7], 128)
    assert args == {BUDGET: 128, ANSWER: [5, 6, 7]}  # defaults are not sent
    read = read_speckv_args(json.loads(json.dumps(args)))  # what arrives after the JSON body
    assert read.answer_ids == (5, 6, 7)
    assert read.config == SpecKVConfig(budget=128, allocation="uniform")  # the server's split, whatever the client's


def test_xargs_carry_changed_selection_settings():
    args = speckv_xargs([1], 64, SpecKVConfig.paper())
    assert json.loads(args[CONFIG]) == {"kernel_size": 7, "keep_last": None, "score_window": True}
    assert read_speckv_args(args).config == SpecKVConfig.paper(budget=64)


def test_plain_requests_have_no_speckv_args():
    assert read_speckv_args(None) is None
    assert read_speckv_args({"session_id": "x"}) is None


@pytest.mark.parametrize("bad", [{BUDGET: 0}, {BUDGET: 64, ANSWER: "12"}, {BUDGET: 64, ANSWER: [-1]},
                                 {BUDGET: 64, CONFIG: json.dumps({"allocation": "global"})},
                                 {BUDGET: 8, CONFIG: json.dumps({"window_size": 32})}])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ConfigError):
        read_speckv_args(bad)


@pytest.mark.parametrize("config", [SpecKVConfig(allocation="global"), SpecKVConfig(allocation="profile"),
                                    SpecKVConfig(coverage=0.6)])
def test_per_layer_budgets_cannot_be_sent(config):
    with pytest.raises(ConfigError, match="uniform"):
        speckv_xargs([1], 64, config)


@pytest.mark.parametrize(("kept", "block", "blocks"), [(128, 128, 1), (129, 128, 2), (128, 32, 4), (1, 16, 1)])
def test_blocks_kept(kept, block, blocks):
    assert layout.blocks_kept(kept, block) == blocks


def test_positions_and_logits_row():
    # A 2000-token prompt with a 30-token answer, compacted to 128: vLLM's next index is 128, RoPE's 2000.
    assert layout.kept_entries(128, 2000) == 128 and layout.kept_entries(128, 100) == 100
    assert 128 + layout.position_offset(2000, 128) == 2000
    # The request starts at row 500 of the step: its last prompt token is row 500 + 1999.
    assert layout.first_token_row(500, 0, 2000) == 2499


def test_answer_room_keeps_prompt_answer_and_first_token_below_max_len():
    assert layout.answer_room(2000, 30, 8192) == 30
    assert layout.answer_room(8150, 100, 8192) == 40  # 8150 + 40 + the first token = 8191
    assert layout.answer_room(8191, 5, 8192) == 0


def test_stand_in_prompt_is_the_prompt_tail():
    assert layout.stand_in_prompt([1, 2, 3, 4, 5], 2) == [4, 5]
    assert layout.stand_in_prompt([1, 2], 2) == [1, 2]


def _config(prefix=False, chunked=False, spec=None, device="cpu"):
    from types import SimpleNamespace

    return SimpleNamespace(device_config=SimpleNamespace(device_type=device),
                           cache_config=SimpleNamespace(enable_prefix_caching=prefix),
                           scheduler_config=SimpleNamespace(enable_chunked_prefill=chunked), speculative_config=spec)


def test_speckv_runs_only_with_whole_prefills_and_no_prefix_cache():
    from draftapprox_integrations.vllm_plugin.scheduler import speckv_supported

    assert speckv_supported(_config()) is None
    assert "--no-enable-prefix-caching" in speckv_supported(_config(prefix=True))
    assert "--no-enable-chunked-prefill" in speckv_supported(_config(chunked=True))
    assert "speculative" in speckv_supported(_config(spec=object()))
    assert "CPU" in speckv_supported(_config(device="cuda"))
