"""Issue 13, items 2 and 4: the target's tokenizer without its weights; models given the way users have them
(from_pretrained keywords per model, or a transformers model and tokenizer loaded already)."""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations import ConfigError, DraftApproxEngine, EngineUsageError, ModelReferenceError, SpecKVConfig, get_engine
from draftapprox_integrations.engine import loading, weights
from draftapprox_integrations.engine.capture import ATTENTION_NAME

KV = SpecKVConfig(budget=8, window_size=4)
PROMPT = "The vault code is 4417. What is the vault code?"


@pytest.fixture(scope="module")
def tiny_path(tiny_model_factory) -> str:
    return str(tiny_model_factory("llama"))


@pytest.fixture()
def ready(tiny_path):
    """A tiny llama and its tokenizer as a user loads them (eager attention, float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="eager")
    return model, AutoTokenizer.from_pretrained(tiny_path)


# -- item 2: the tokenizer alone ----------------------------------------------------------------------


def test_target_tokenizer_loads_no_weights(tiny_path, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(weights, "load_model", no_weights)
    engine = DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32")
    ids = engine.target_tokenizer.encode(PROMPT, add_special_tokens=False)
    assert len(ids) > 5 and not engine.loaded
    assert engine.target_tokenizer is loading.load_tokenizer(tiny_path)  # one tokenizer per process, shared


def test_target_tokenizer_agrees_with_the_loaded_target(tiny_path):
    engine = DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32")
    before = engine.target_tokenizer.encode(PROMPT, add_special_tokens=False)
    engine.load()
    assert engine.target_tokenizer is engine.target.tokenizer
    assert engine.target_tokenizer.encode(PROMPT, add_special_tokens=False) == before


def test_a_draft_only_engine_has_no_target_tokenizer(tiny_path):
    with pytest.raises(EngineUsageError, match="draft-only"):
        DraftApproxEngine(tiny_path, None, device="cpu").target_tokenizer


def test_gguf_tokenizer_reads_the_header_without_converting(tmp_path, monkeypatch):
    """A GGUF source not converted yet gives its tokenizer from the file, with no conversion (no weights)."""
    from tests.helpers import SMOLLM2

    monkeypatch.setenv(loading.CACHE_ENV_VAR, str(tmp_path))  # an empty cache: nothing converted
    monkeypatch.setattr(loading, "converted_folder", lambda source: pytest.fail("converted the weights"))
    monkeypatch.setattr(loading, "_tokenizers", {})
    tokenizer = loading.load_tokenizer(SMOLLM2)
    assert tokenizer.decode(tokenizer.encode("door code 935", add_special_tokens=False)) == "door code 935"
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing was converted


# -- item 4: from_pretrained keywords per model ---------------------------------------------------------


def test_model_kwargs_reach_from_pretrained(tiny_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = {}
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model_spy(folder, **kwargs):
        seen["model"] = kwargs
        return real_model(folder, **kwargs)

    def tok_spy(folder, **kwargs):
        seen["tokenizer"] = kwargs
        return real_tok(folder, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model_spy)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tok_spy)
    engine = DraftApproxEngine(
        tiny_path, tiny_path, device="cpu", dtype="float32",
        draft_model_kwargs={"low_cpu_mem_usage": True}, target_model_kwargs={"revision": "main", "low_cpu_mem_usage": False},
    )
    engine.target  # noqa: B018 - loads it
    assert seen["model"]["revision"] == "main" and seen["model"]["low_cpu_mem_usage"] is False
    assert seen["model"]["attn_implementation"] == ATTENTION_NAME
    assert seen["tokenizer"]["revision"] == "main" and "low_cpu_mem_usage" not in seen["tokenizer"]
    assert engine.draft.model is not engine.target.model  # other keywords, another copy


@pytest.mark.parametrize("key", ["attn_implementation", "dtype", "device_map", "quantization_config"])
def test_model_kwargs_the_engine_owns_are_refused(tiny_path, key):
    with pytest.raises(ConfigError, match=key):
        DraftApproxEngine(tiny_path, None, draft_model_kwargs={key: "x"})


def test_model_kwargs_must_be_a_dict(tiny_path):
    with pytest.raises(ConfigError, match="target_model_kwargs must be a dict"):
        DraftApproxEngine(tiny_path, tiny_path, target_model_kwargs=["revision"])


def test_get_engine_shares_per_reference_and_keywords(tiny_path):
    a = get_engine(tiny_path, tiny_path, device="cpu", target_model_kwargs={"revision": "main"})
    assert get_engine(tiny_path, tiny_path, device="cpu", target_model_kwargs={"revision": "main"}) is a
    assert get_engine(tiny_path, tiny_path, device="cpu") is not a


# -- item 4: ready transformers objects ----------------------------------------------------------------


def test_a_ready_model_is_used_in_place_and_shared(ready):
    model, tokenizer = ready
    engine = DraftApproxEngine(model, model, draft_tokenizer=tokenizer, target_tokenizer=tokenizer, device="cpu")
    assert engine.draft is engine.target  # one object in two roles: one copy
    assert engine.target.model is model and engine.target.tokenizer is tokenizer  # not copied
    assert model.config._attn_implementation == ATTENTION_NAME
    other = DraftApproxEngine(model, None, draft_tokenizer=tokenizer)
    assert other.draft is engine.draft  # and across engines
    result = engine.generate(PROMPT, method="speckv", config=KV, max_new_tokens=3)
    assert result.stats.completion_tokens <= 3 and result.stats.kv_entries_kept == 8


def test_a_ready_model_answers_as_when_loaded_by_reference(ready, tiny_path):
    model, tokenizer = ready
    by_object = DraftApproxEngine(model, model, draft_tokenizer=tokenizer, target_tokenizer=tokenizer, device="cpu")
    by_reference = DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32")
    for method in ("full", "speckv"):
        a = by_object.generate(PROMPT, method=method, config=KV, max_new_tokens=4)
        b = by_reference.generate(PROMPT, method=method, config=KV, max_new_tokens=4)
        assert a.token_ids == b.token_ids


def test_get_engine_shares_per_object(ready):
    model, tokenizer = ready
    a = get_engine(model, model, draft_tokenizer=tokenizer, target_tokenizer=tokenizer)
    assert get_engine(model, model, draft_tokenizer=tokenizer, target_tokenizer=tokenizer) is a


def test_ready_model_errors(ready, tiny_path):
    model, tokenizer = ready
    with pytest.raises(ConfigError, match="needs its tokenizer"):
        DraftApproxEngine(model, None)
    with pytest.raises(ConfigError, match="goes with a ready draft model"):
        DraftApproxEngine(tiny_path, None, draft_tokenizer=tokenizer)
    with pytest.raises(EngineUsageError, match="without a target_model"):
        DraftApproxEngine(tiny_path, None, target_tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="loaded already"):
        DraftApproxEngine(model, None, draft_tokenizer=tokenizer, draft_model_kwargs={"revision": "x"})
    with pytest.raises(EngineUsageError, match="quantization"):
        DraftApproxEngine(None, model, target_tokenizer=tokenizer, quantization="4bit")
    with pytest.raises(ModelReferenceError, match="loaded transformers model"):
        DraftApproxEngine(torch.zeros(2), None)
