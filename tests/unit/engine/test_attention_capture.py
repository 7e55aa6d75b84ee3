"""The capture hook reproduces eager attention weights while the model runs SDPA."""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations.engine.capture import ATTENTION_NAME, AttentionCapture, register_attention, window_attention
from draftapprox_integrations.engine.loading import load_model, resolve_reference

from tests.helpers import CAPTURE_TOLERANCE as TOLERANCE
from tests.helpers import CAPTURE_WINDOW as WINDOW
from tests.helpers import max_capture_error as _max_capture_error


def _padded_batch(tokenizer, texts: list[str]):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any(), "the batch must actually contain padding"
    return batch["input_ids"], batch["attention_mask"]


TEXTS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
    "A short one.",
]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma3_text"])
def test_capture_matches_eager_on_tiny_random_models(arch, tiny_model_factory, smollm2_tokenizer):
    source = resolve_reference(str(tiny_model_factory(arch)))
    loaded = load_model(source, device=torch.device("cpu"), dtype=torch.float32)
    input_ids, attention_mask = _padded_batch(smollm2_tokenizer, TEXTS)
    assert _max_capture_error(loaded, input_ids, attention_mask) <= TOLERANCE


def test_capture_respects_gemma_sliding_window(tiny_model_factory, smollm2_tokenizer):
    """Sliding layers (window 8 in the tiny model) must give zero weight to keys beyond the window."""
    source = resolve_reference(str(tiny_model_factory("gemma3_text")))
    loaded = load_model(source, device=torch.device("cpu"), dtype=torch.float32)
    ids = smollm2_tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad(), AttentionCapture(loaded.model, 4) as capture:
        loaded.model(input_ids=ids)
    length = ids.shape[1]
    sliding = capture.records[0][0]  # layer 0 slides over 8 tokens
    full = capture.records[1][0]
    assert sliding[..., : length - 4 - 8 + 1].abs().max().item() == 0.0
    assert full[..., : length - 12].sum().item() > 0.0


def test_capture_during_cached_decode_matches_full_forward(tiny_model_factory, smollm2_tokenizer):
    """A decode step's captured row equals the last row of a full forward over the same tokens."""
    from transformers import DynamicCache

    loaded = load_model(resolve_reference(str(tiny_model_factory("llama"))), device=torch.device("cpu"), dtype=torch.float32)
    ids = smollm2_tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    cache = DynamicCache(config=loaded.model.config)
    with torch.no_grad():
        loaded.model(input_ids=ids[:, :-1], cache=cache)
        with AttentionCapture(loaded.model, 1) as step:
            loaded.model(input_ids=ids[:, -1:], cache=cache)
        with AttentionCapture(loaded.model, 1) as whole:
            loaded.model(input_ids=ids)
    for layer in whole.records:
        assert torch.allclose(step.records[layer][0], whole.records[layer][0], atol=1e-5)


def test_reducer_and_layer_filter(tiny_model_factory, smollm2_tokenizer):
    loaded = load_model(resolve_reference(str(tiny_model_factory("qwen2"))), device=torch.device("cpu"), dtype=torch.float32)
    ids = smollm2_tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad(), AttentionCapture(loaded.model, 4, layers=[2, 3], reducer=lambda w, m: w.sum(dim=-1)) as cap:
        loaded.model(input_ids=ids)
    assert sorted(cap.records) == [2, 3]
    # each query's weights sum to one over the keys
    assert torch.allclose(cap.records[2][0], torch.ones(1, 4, 4), atol=1e-5)


def test_no_capture_is_plain_sdpa(tiny_model_factory, smollm2_tokenizer):
    """Outside a capture the hooked model gives SDPA's logits exactly."""
    from transformers import AutoModelForCausalLM

    folder = str(tiny_model_factory("llama"))
    hooked = load_model(resolve_reference(folder), device=torch.device("cpu"), dtype=torch.float32).model
    sdpa = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    ids = smollm2_tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(hooked(input_ids=ids).logits, sdpa(input_ids=ids).logits)


def test_capture_requires_the_hooked_attention(tiny_model_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_factory("llama")), attn_implementation="sdpa")
    with pytest.raises(RuntimeError, match=ATTENTION_NAME):
        AttentionCapture(model, 4)


def test_window_attention_plain_causal_without_mask():
    torch.manual_seed(0)
    q = torch.randn(1, 4, 6, 8)
    k = torch.randn(1, 2, 6, 8)
    weights = window_attention(q, k, None, 8**-0.5, window=3)
    assert weights.shape == (1, 4, 3, 6)
    # query 3 (first of the window) cannot see keys 4 and 5
    assert weights[0, :, 0, 4:].abs().max().item() == 0.0
    assert torch.allclose(weights.sum(-1), torch.ones(1, 4, 3))
    assert register_attention() == ATTENTION_NAME
