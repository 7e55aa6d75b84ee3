"""Prompts longer than the target's context (FINDINGS BUG-5) and prompts that are not valid text (BUG-3).

speckv-pc cuts the prompt with SpecPC on the draft (in chunks when it is long) before the target sees it, so
it takes prompts the target could not hold; every other method refuses them with a ContextLengthError.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from draftapprox_integrations.engine import ContextLengthError, DraftApproxEngine, SpecKVConfig, SpecPCConfig
from draftapprox_integrations.engine.errors import InvalidInputError
from draftapprox_integrations.engine.speckv import encode_prompt, normalize_messages

CONTEXT = 256
LONG = "The door code is 4521. The lamp is green. " * 40 + "What is the door code?"  # ~480 tokens
PC = SpecPCConfig(starting_layer_index=1, window_size=8, kernel_size=5)
KV = SpecKVConfig(budget=32, window_size=8)


@pytest.fixture(scope="module")
def short_folder(tiny_model_factory, tmp_path_factory) -> str:
    """The tiny llama with its context cut to 256 positions (a copy with max_position_embeddings edited)."""
    folder = tmp_path_factory.mktemp("tiny-llama-256")
    for path in Path(tiny_model_factory("llama")).iterdir():
        shutil.copy(path, folder / path.name)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def short(short_folder):
    """Draft and target: one tiny llama with a 256-token context."""
    return DraftApproxEngine(short_folder, short_folder, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def long_draft(short_folder, tiny_model_factory):
    """A 256-token target with a draft (same tokenizer) whose 4096-token context holds the whole prompt."""
    return DraftApproxEngine(str(tiny_model_factory("llama", seed=1)), short_folder, device="cpu", dtype="float32")


def _pc(engine, prompt=LONG, **kw):
    options = dict(method="speckv-pc", prompt_budget=96, config=KV, specpc_config=PC, max_new_tokens=4)
    return engine.generate(prompt, **{**options, **kw})


def test_speckv_pc_takes_a_prompt_longer_than_both_contexts(short):
    n_prompt = len(encode_prompt(short.target, *normalize_messages(LONG, None)))
    assert n_prompt > CONTEXT
    result = _pc(short)
    stats = result.stats
    assert stats.method == "speckv-pc" and stats.prompt_tokens == n_prompt
    assert stats.compressed_prompt_tokens < CONTEXT - 4
    assert 0 < stats.completion_tokens <= 4 or result.finish_reason == "stop"
    # The draft could not answer the whole prompt: SpecPC scored it in chunks with its own lookahead, and the
    # draft's answer to the cut prompt became SpecKV's lookahead.
    assert "SpecPC kept" in stats.note and "chunks" in stats.note
    assert "too long for the draft's context" in stats.note and "answered the cut prompt" in stats.note
    assert stats.kv_entries_kept <= KV.budget


def test_speckv_pc_stream_and_chat_messages_take_a_long_prompt(short):
    chunks = list(short.stream(LONG, method="speckv-pc", prompt_budget=96, config=KV, specpc_config=PC, max_new_tokens=3))
    assert chunks[-1].stats is not None and chunks[-1].stats.compressed_prompt_tokens < CONTEXT
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": LONG}]
    assert _pc(short, messages).stats.compressed_prompt_tokens < CONTEXT


def test_speckv_pc_with_a_draft_that_holds_the_prompt(long_draft):
    stats = _pc(long_draft).stats
    assert stats.compressed_prompt_tokens < CONTEXT and stats.lookahead_tokens > 0
    assert "too long for the draft" not in stats.note and "chunks" not in stats.note


def test_speckv_pc_shortens_max_new_tokens_after_the_cut_not_before(short):
    # The prompt fits the target, but not with 120 new tokens; after the cut both fit.
    prompt = "The door code is 4521. " * 20 + "What is the code?"
    n_prompt = len(encode_prompt(short.target, *normalize_messages(prompt, None)))
    assert n_prompt < CONTEXT < n_prompt + 120
    stats = _pc(short, prompt, prompt_budget=40, max_new_tokens=120).stats
    assert stats.compressed_prompt_tokens + 120 <= CONTEXT and "max_new_tokens cut" not in stats.note
    assert "SpecPC kept" in stats.note


@pytest.mark.parametrize("method", ["speckv", "snapkv", "streamingllm", "full"])
def test_other_methods_refuse_a_long_prompt_and_point_to_speckv_pc(short, method):
    with pytest.raises(ContextLengthError) as err:
        short.generate(LONG, method=method, config=KV, max_new_tokens=4)
    message = str(err.value)
    assert f"context of {CONTEXT}" in message and "method='speckv-pc'" in message


def test_speckv_pc_errors_name_prompt_budget_not_speckv_pc(short):
    # prompt_budget not below the prompt's length: SpecPC would keep it all, refused before any model work.
    with pytest.raises(ContextLengthError) as err:
        _pc(short, prompt_budget=5000)
    assert "prompt_budget=5000" in str(err.value) and "method='speckv-pc'" not in str(err.value)
    # A cut prompt that still cannot fit the target's context.
    with pytest.raises(ContextLengthError) as err:
        _pc(short, prompt_budget=300)
    message = str(err.value)
    assert "cut by SpecPC" in message and "smaller prompt_budget" in message and "method='speckv-pc'" not in message


def test_speckv_pc_stream_with_a_cut_too_long_raises_and_frees_the_engine(short):
    stream = short.stream(LONG, method="speckv-pc", prompt_budget=300, config=KV, specpc_config=PC, max_new_tokens=4)
    with pytest.raises(ContextLengthError, match="smaller prompt_budget"):
        list(stream)
    assert _pc(short).stats.compressed_prompt_tokens < CONTEXT


@pytest.mark.parametrize(
    "prompt",
    [
        "The code is 4521 \ud800. What is the code?",
        [{"role": "user", "content": "code \udcff?"}],
        [{"role": "system", "content": "ok"}, {"role": "user\ud800", "content": "What is the code?"}],
    ],
)
@pytest.mark.parametrize("method", ["speckv", "full", "speckv-pc"])
def test_lone_surrogates_are_invalid_input_before_any_model_work(tiny_model_factory, prompt, method):
    engine = DraftApproxEngine(str(tiny_model_factory("llama")), str(tiny_model_factory("llama")), device="cpu")
    kw = {"prompt_budget": 16} if method == "speckv-pc" else {}
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        engine.generate(prompt, method=method, max_new_tokens=2, **kw)
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        engine.stream(prompt, method=method, max_new_tokens=2, **kw)
    assert engine._target is None and engine._draft is None  # nothing loaded
