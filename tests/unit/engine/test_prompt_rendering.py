"""Issue 13, item 1: a string prompt is rendered with the model's chat template by default; ``chat=False``
opts out; a model without a template reads the string as given. Tiny random models: what is asserted is the
token ids each rule produces, not what a model answers (tests/integration/test_readme.py covers answers)."""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations import ConfigError, DraftApproxEngine, SpecKVConfig, SpecPCConfig
from draftapprox_integrations.engine import loading
from draftapprox_integrations.engine.prompts import encode_prompt, normalize_messages, transcript

from tests.helpers import TINY

PROMPT = "The vault code is 4417. What is the vault code?"
KV = SpecKVConfig(budget=8, window_size=4)


@pytest.fixture(scope="module")
def chat_model(tiny_model_factory):
    """The tiny llama with the SmolLM2 tokenizer, which has a chat template."""
    return loading.load_model(loading.resolve_reference(str(tiny_model_factory("llama"))), device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module")
def base_folder(tiny_model_factory, tmp_path_factory):
    """The same tiny llama saved with a tokenizer that has no chat template (a base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(tiny_model_factory("llama"))
    folder = tmp_path_factory.mktemp("tiny-base")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = None
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    return str(folder)


@pytest.fixture(scope="module")
def base_model(base_folder):
    loaded = loading.load_model(loading.resolve_reference(base_folder), device=torch.device("cpu"), dtype=torch.float32)
    assert not loaded.has_chat_template
    return loaded


def _templated(loaded, messages) -> list[int]:
    tok = loaded.tokenizer
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tok(rendered, add_special_tokens=False)["input_ids"])


def _plain(loaded, text) -> list[int]:
    return list(loaded.tokenizer(text, add_special_tokens=True)["input_ids"])


def test_a_string_uses_the_chat_template_by_default(chat_model):
    expected = _templated(chat_model, [{"role": "user", "content": PROMPT}])
    assert encode_prompt(chat_model, *normalize_messages(PROMPT, None)) == expected
    assert encode_prompt(chat_model, *normalize_messages(PROMPT, True)) == expected
    assert expected != _plain(chat_model, PROMPT)


def test_chat_false_sends_the_plain_text(chat_model):
    assert encode_prompt(chat_model, *normalize_messages(PROMPT, False)) == _plain(chat_model, PROMPT)


def test_a_base_model_reads_the_string_as_given(base_model):
    assert encode_prompt(base_model, *normalize_messages(PROMPT, None)) == _plain(base_model, PROMPT)
    assert encode_prompt(base_model, *normalize_messages(PROMPT, False)) == _plain(base_model, PROMPT)
    # chat=True asks for a message explicitly: a model without a template reads it as a transcript.
    as_transcript = transcript([{"role": "user", "content": PROMPT}])
    assert encode_prompt(base_model, *normalize_messages(PROMPT, True)) == _plain(base_model, as_transcript)


def test_messages_keep_their_rule(chat_model, base_model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    assert encode_prompt(chat_model, *normalize_messages(messages, None)) == _templated(chat_model, messages)
    assert encode_prompt(base_model, *normalize_messages(messages, None)) == _plain(base_model, transcript(messages))
    assert encode_prompt(chat_model, *normalize_messages(messages, False)) == _plain(chat_model, transcript(messages))


def test_chat_must_be_a_bool_or_none():
    with pytest.raises(ConfigError, match="chat must be"):
        normalize_messages(PROMPT, "yes")


@pytest.mark.parametrize("method", ["full", "speckv", "speckv-pc"])
def test_engine_generate_follows_the_rule(tiny_model_factory, method):
    """engine.generate's prompt token count is the templated prompt by default and the plain one with chat=False,
    for every method (speckv-pc cuts the templated prompt's user message and keeps the rule)."""
    path = str(tiny_model_factory("llama"))
    engine = DraftApproxEngine(path, path, device="cpu", dtype="float32")
    extra = {"prompt_budget": 10_000, "specpc_config": SpecPCConfig(**TINY)} if method == "speckv-pc" else {}
    default = engine.generate(PROMPT, method=method, config=KV, max_new_tokens=2, **extra)
    raw = engine.generate(PROMPT, method=method, config=KV, max_new_tokens=2, chat=False, **extra)
    target = engine.target
    assert default.stats.prompt_tokens == len(_templated(target, [{"role": "user", "content": PROMPT}]))
    assert raw.stats.prompt_tokens == len(_plain(target, PROMPT))


def test_speckv_pc_on_a_base_target_keeps_plain_text(base_folder):
    """The SpecKV-PC cut of a string prompt reaches a base target as plain text, not as a transcript."""
    engine = DraftApproxEngine(base_folder, base_folder, device="cpu", dtype="float32")
    result = engine.generate(
        PROMPT, method="speckv-pc", prompt_budget=10_000, specpc_config=SpecPCConfig(**TINY), config=KV, max_new_tokens=2
    )
    assert result.stats.prompt_tokens == len(_plain(engine.target, PROMPT))
