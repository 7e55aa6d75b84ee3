"""Shared fixtures: tiny random models (unit tests) and the real embedded models (integration tests).

The folder is the marker: every test under tests/integration/ gets ``@pytest.mark.integration`` here, so
``pytest -m "not integration"`` runs tests/unit/ only. Constants and helpers are in tests/helpers.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.helpers import SMOLLM2

INTEGRATION_DIR = Path(__file__).parent / "integration"
# tests/vllm/ starts real vLLM servers from their own virtualenv (make vllm-setup): `make test-vllm` runs them
# (DRAFTAPPROX_VLLM_TESTS=1); `make test` and CI never collect them.
collect_ignore = [] if os.environ.get("DRAFTAPPROX_VLLM_TESTS") == "1" else ["vllm"]

_TINY_CONFIGS = {
    # GQA everywhere (4 query heads over 2 KV heads) so head grouping is exercised.
    "llama": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(model_type="qwen2", num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(model_type="mistral", num_attention_heads=4, num_key_value_heads=2, sliding_window=None),
    "gemma3_text": dict(
        model_type="gemma3_text",
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
    ),
}


def pytest_collection_modifyitems(config, items):
    """Mark every test collected from tests/integration/ as ``integration``."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


class _DeprecationLog(logging.Handler):
    """Collects transformers' deprecation notices, which it logs (warning_once) instead of warning."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


@pytest.fixture(autouse=True)
def no_transformers_deprecation():
    """Fail any test during which transformers logs a deprecation: a deprecated call is removed later."""
    handler = _DeprecationLog()
    log = logging.getLogger("transformers")
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
    if handler.messages:
        pytest.fail("transformers logged a deprecation: " + " | ".join(handler.messages), pytrace=False)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from draftapprox_integrations.engine.loading import load_tokenizer

    return load_tokenizer(SMOLLM2)


def build_tiny_model_folder(folder: Path, arch: str, tokenizer, *, seed: int = 0, layers: int = 4, **overrides) -> Path:
    """Save a tiny random-weight model of architecture ``arch`` with the SmolLM2 tokenizer into ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(_TINY_CONFIGS[arch])
    model_type = spec.pop("model_type")
    spec.update(overrides)
    spec.setdefault("max_position_embeddings", 4096)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random init with std 0.02 gives near-uniform attention; sharper weights make scoring tests meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, smollm2_tokenizer):
    """factory(arch, **config_overrides) -> path of a saved tiny random model (cached per arguments)."""
    made: dict[tuple, Path] = {}

    def make(arch: str = "llama", **overrides) -> Path:
        key = (arch, tuple(sorted(overrides.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            made[key] = build_tiny_model_folder(folder, arch, smollm2_tokenizer, **overrides)
        return made[key]

    return make


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_factory):
    """A draft-only engine on the tiny random llama (one per test module; a module may define its own)."""
    from draftapprox_integrations.engine import DraftApproxEngine

    return DraftApproxEngine(str(tiny_model_factory("llama")), None, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def smollm2_engine():
    """The shared engine with SmolLM2 as draft and target (one copy of the weights)."""
    from draftapprox_integrations import get_engine

    return get_engine(SMOLLM2, SMOLLM2, device="cpu").load()
