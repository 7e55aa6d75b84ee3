"""Engines for the property tests, one per module: hypothesis runs many examples in one test call, and
function-scoped fixtures would not be rebuilt between them anyway (the tiny models come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from draftapprox_integrations.engine import DraftApproxEngine


@pytest.fixture(scope="module")
def tiny_path(tiny_model_factory) -> str:
    """The saved tiny random llama (4 layers, the SmolLM2 tokenizer)."""
    return str(tiny_model_factory("llama"))


@pytest.fixture(scope="module")
def draft_engine(tiny_path) -> DraftApproxEngine:
    """A draft-only engine (SpecPC), loaded."""
    return DraftApproxEngine(tiny_path, None, device="cpu", dtype="float32").load()


@pytest.fixture(scope="module")
def pair_engine(tiny_path) -> DraftApproxEngine:
    """The tiny llama as its own draft and target (generation), loaded."""
    return DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32").load()
