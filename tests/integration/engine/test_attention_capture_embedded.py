"""The capture hook reproduces eager attention weights on the real embedded models."""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations.engine.loading import load_model, resolve_reference

from tests.helpers import CAPTURE_TOLERANCE as TOLERANCE
from tests.helpers import GEMMA3, SMOLLM2
from tests.helpers import max_capture_error as _max_capture_error


@pytest.mark.parametrize("reference", [SMOLLM2, GEMMA3])
def test_capture_matches_eager_on_embedded_models(reference, smollm2_tokenizer):
    loaded = load_model(resolve_reference(reference), device=torch.device("cpu"), dtype=torch.float32)
    texts = [" ".join(["Alpha beta gamma delta."] * 150), "The key is 42."]  # ~900 tokens: past Gemma's 512 window
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    assert batch["input_ids"].shape[1] > 600
    assert _max_capture_error(loaded, batch["input_ids"], batch["attention_mask"]) <= TOLERANCE
