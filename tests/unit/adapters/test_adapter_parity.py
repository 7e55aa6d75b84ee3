"""The adapters agree: one set of SpecKV options, checks, per-call options, roles and usage for LangChain and
LlamaIndex; constructing any adapter or reading LlamaIndex metadata loads no weights."""

from __future__ import annotations

import importlib
import math

import pytest

from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine import loading
from draftapprox_integrations.engine.errors import ConfigError, InvalidInputError
from tests.helpers import SMOLLM2, words

SPECKV_CLASSES = ["langchain.ChatSpecKV", "langchain.SpecKVLLM", "llama_index.SpecKVLLM"]
SPECPC_CLASSES = ["langchain.SpecPCCompressor", "llama_index.SpecPCNodePostprocessor"]
# Options of an engine no other test loads (float16 on the CPU): `loaded` then says what these tests did.
UNLOADED = dict(device="cpu", dtype="float16")


def adapter(name: str) -> type:
    package, cls = name.split(".")
    return getattr(importlib.import_module(f"draftapprox_integrations.{package}"), cls)


def call(model, **kwargs):
    """One generation through the adapter's own entry point."""
    if hasattr(model, "complete"):
        return model.complete("Say something.", **kwargs)
    return model.invoke("Say something.", **kwargs)


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_factory):
    """Draft and target: one tiny random llama with enough layers for SpecPC's default starting layer (12)."""
    folder = str(tiny_model_factory("llama", layers=13))
    return DraftApproxEngine(folder, folder, device="cpu", dtype="float32")


# -- construction: the same bad option, the same error ---------------------------------------------------

BAD_FIELDS = [
    (dict(temperature=-1), "temperature"),
    (dict(top_p=5), "top_p"),
    (dict(temperature=math.nan), "temperature"),
    (dict(method="h2o"), "unknown method"),
    (dict(method="specpc"), "unknown method"),  # a prompt method: not one engine.generate runs
    (dict(budget=16), "window_size"),  # the default window (32) does not fit
    (dict(method="speckv-pc"), "prompt_budget"),
    (dict(max_tokens=0), "max_new_tokens"),
    (dict(stop=""), "stop"),
    (dict(config={"budget": 64, "window": 8}), "unknown SpecKVConfig field"),
    (dict(method="streamingllm", budget=32, config={"window_size": 8, "sink_tokens": 32}), "sink_tokens"),
    (dict(budget=64, rate=0.5), "budget= .* or rate= .*not both"),
    (dict(rate=0.0), "rate"),
    (dict(rate=1.5), "rate"),
    (dict(rate=math.inf), "rate"),
]


@pytest.mark.parametrize("name", SPECKV_CLASSES)
@pytest.mark.parametrize("kwargs, match", BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_bad_option_at_construction_same_error(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):  # the package's error, not pydantic's (BUG-14)
        adapter(name)(**kwargs)


@pytest.mark.parametrize("kwargs, match", BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_bad_option_at_construction_same_message_in_all_three(kwargs, match):
    messages = set()
    for name in SPECKV_CLASSES:
        with pytest.raises(ConfigError) as caught:
            adapter(name)(**kwargs)
        messages.add(str(caught.value))
    assert len(messages) == 1, messages


@pytest.mark.parametrize("name", SPECKV_CLASSES)
def test_aliases_accepted_in_both_frameworks(name):
    model = adapter(name)(model=SMOLLM2, max_new_tokens=9, config={"budget": 64, "window_size": 8}, stop="END")
    assert model.target_model == SMOLLM2 and model.max_tokens == 9
    assert model.config == SpecKVConfig(budget=64, window_size=8) and model.stop == ["END"]


# -- per call: one option list, checked the same way --------------------------------------------------------

BAD_CALLS = [
    (dict(frequency_penalty=0.5), "unsupported option"),
    (dict(temperature=-1), "temperature"),
    (dict(temperature=math.nan), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(method="h2o"), "unknown method"),
    (dict(budget=8), "window_size"),
    (dict(method="speckv-pc"), "prompt_budget"),
    (dict(max_tokens=0), "max_new_tokens"),
    (dict(seed="abc"), "seed"),
    (dict(seed=2**70), "seed"),
    (dict(method="snapkv", prompt_budget=64), "prompt_budget"),
    (dict(rate=2.0), "rate"),
    (dict(rate=math.nan), "rate"),
    (dict(budget=32, rate=0.5), "not both"),
]


@pytest.mark.parametrize("name", SPECKV_CLASSES)
@pytest.mark.parametrize("kwargs, match", BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_bad_option_per_call_same_error_before_loading(name, kwargs, match, tiny_model_factory):
    folder = str(tiny_model_factory("llama"))
    engine = DraftApproxEngine(folder, folder, device="cpu", dtype="float32")
    model = adapter(name)(engine=engine, budget=64)
    with pytest.raises(ConfigError, match=match):
        call(model, **kwargs)
    assert engine.loaded is False


@pytest.mark.parametrize("name", SPECKV_CLASSES)
def test_per_call_prompt_budget(name, tiny_pair):
    """speckv-pc per call, with a per-call prompt_budget, in both frameworks: a smaller budget cuts more."""
    model = adapter(name)(engine=tiny_pair, method="snapkv", config=SpecKVConfig(budget=24, window_size=8), max_tokens=2)
    prompt = words(160, seed=3) + "\nWhich word comes first?"
    compressed = []
    for prompt_budget in (30, 80):
        options = dict(method="speckv-pc", prompt_budget=prompt_budget)
        if name == "llama_index.SpecKVLLM":
            stats = model.complete(prompt, **options).additional_kwargs["speckv"]
        elif name == "langchain.SpecKVLLM":
            stats = model.generate([prompt], **options).generations[0][0].generation_info["speckv"]
        else:
            stats = model.invoke(prompt, **options).response_metadata["speckv"]
        assert stats["method"] == "speckv-pc" and "SpecPC kept" in stats["note"]
        compressed.append(stats["compressed_prompt_tokens"])
    assert compressed[0] < compressed[1] < stats["prompt_tokens"]


def _stats(name: str, model, prompt: str, **options) -> dict:
    """The KV statistics of one generation through the adapter's own entry point."""
    if name == "llama_index.SpecKVLLM":
        return model.complete(prompt, **options).additional_kwargs["speckv"]
    if name == "langchain.SpecKVLLM":
        return model.generate([prompt], **options).generations[0][0].generation_info["speckv"]
    return model.invoke(prompt, **options).response_metadata["speckv"]


@pytest.mark.parametrize("name", SPECKV_CLASSES)
def test_rate_field_and_per_call_rate_reach_the_engine(name, tiny_pair):
    """rate= as a field and per call: the engine keeps ceil(rate * prompt tokens) entries; a call's rate
    replaces the field's budget (and a call's budget the field's rate)."""
    prompt = words(120, seed=5) + "\nWhich word comes first?"
    window = SpecKVConfig(window_size=8)
    by_rate = adapter(name)(engine=tiny_pair, method="snapkv", rate=0.25, config=window, max_tokens=2)
    assert by_rate.rate == 0.25
    stats = _stats(name, by_rate, prompt)
    assert stats["budget"] == stats["kv_entries_kept"] == math.ceil(0.25 * stats["prompt_tokens"])
    assert _stats(name, by_rate, prompt, budget=24)["kv_entries_kept"] == 24
    by_budget = adapter(name)(engine=tiny_pair, method="snapkv", budget=24, config=window, max_tokens=2)
    stats = _stats(name, by_budget, prompt, rate=0.5)
    assert stats["budget"] == stats["kv_entries_kept"] == math.ceil(0.5 * stats["prompt_tokens"])


# -- roles and usage: one table, one count ----------------------------------------------------------------


def test_one_role_table_for_both_frameworks():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from llama_index.core.llms import ChatMessage as LlamaMessage

    from draftapprox_integrations.langchain.chat_models import to_engine_messages as from_langchain
    from draftapprox_integrations.llama_index.llms import to_engine_messages as from_llama_index

    langchain = [SystemMessage("s"), HumanMessage("u"), AIMessage("a")]
    llama = [LlamaMessage(role=r, content=c) for r, c in (("system", "s"), ("user", "u"), ("assistant", "a"))]
    expected = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    assert from_langchain(langchain) == from_llama_index(llama) == expected
    # A tool result is role "tool" in both, with the call it answers.
    tool = {"role": "tool", "content": "3", "tool_call_id": "x", "name": None}
    assert from_langchain([ToolMessage("3", tool_call_id="x")]) == [tool]
    assert from_llama_index([LlamaMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "x"})]) == [tool]


def test_one_usage_count_in_each_framework_format():
    from draftapprox_integrations.engine.speckv import GenerationStats
    from draftapprox_integrations.langchain._speckv_params import usage_from_stats
    from draftapprox_integrations.llama_index._messages import response_info

    stats = GenerationStats(method="snapkv", prompt_tokens=40, completion_tokens=7)
    assert usage_from_stats(stats) == {"input_tokens": 40, "output_tokens": 7, "total_tokens": 47}
    info = response_info(stats, "length")
    assert (info["prompt_tokens"], info["completion_tokens"], info["total_tokens"]) == (40, 7, 47)


# -- no weights for construction or metadata -------------------------------------------------------------


@pytest.fixture
def no_weights(monkeypatch):
    """Any weight load raises; facts are read afresh."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    from transformers import AutoModelForCausalLM

    from draftapprox_integrations.engine import weights

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(weights, "load_model", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(loading, "_facts_cache", {})


def test_construction_and_metadata_load_no_weights(no_weights):
    for name in SPECKV_CLASSES + SPECPC_CLASSES:
        model = adapter(name)(**UNLOADED)
        if name == "llama_index.SpecKVLLM":
            meta = model.metadata
            assert (meta.context_window, meta.is_chat_model, meta.num_output) == (8192, True, 128)
        assert model.get_engine().loaded is False, name


def test_metadata_of_a_tiny_model_folder(no_weights, tiny_model_factory):
    from draftapprox_integrations.llama_index import SpecKVLLM

    folder = str(tiny_model_factory("llama"))  # max_position_embeddings=4096, SmolLM2's tokenizer and template
    meta = SpecKVLLM(target_model=folder, draft_model=folder, **UNLOADED).metadata
    assert (meta.context_window, meta.is_chat_model) == (4096, True)
    engine = DraftApproxEngine(folder, folder, device="cpu", dtype="float32")
    assert SpecKVLLM(engine=engine).metadata.context_window == 4096  # an explicit engine's target counts
    assert engine.loaded is False


def test_embedded_facts_without_the_converted_folder(no_weights, monkeypatch, tmp_path):
    monkeypatch.setenv(loading.CACHE_ENV_VAR, str(tmp_path))  # an empty cache: nothing converted yet
    assert loading.describe_model(SMOLLM2) == loading.ModelFacts(8192, True)
    for spec in loading.EMBEDDED_MODELS.values():
        try:
            facts = loading.describe_model(spec.alias)
        except loading.MissingEmbeddedModelError:
            continue
        assert facts == loading.ModelFacts(spec.context_length, spec.has_chat_template)
    assert not any(tmp_path.iterdir())  # and nothing was converted


def test_gguf_facts_from_the_header(no_weights, monkeypatch, tmp_path):
    gguf = pytest.importorskip("gguf")
    monkeypatch.setenv(loading.CACHE_ENV_VAR, str(tmp_path / "cache"))
    path = tmp_path / "header-only.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(1234)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert loading.describe_model(str(path)) == loading.ModelFacts(1234, True)


def test_metadata_falls_back_when_the_files_cannot_be_read(no_weights):
    from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW

    from draftapprox_integrations.llama_index import SpecKVLLM

    meta = SpecKVLLM(target_model="nobody/no-such-model", **UNLOADED).metadata  # offline: not in the hub cache
    assert (meta.context_window, meta.is_chat_model) == (DEFAULT_CONTEXT_WINDOW, False)
