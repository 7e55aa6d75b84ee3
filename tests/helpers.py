"""Constants and helpers shared by the tests, imported as ``from tests.helpers import ...``.

Fixtures (tiny random models, the SmolLM2 tokenizer, engines) live in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from draftapprox_integrations.engine.loading import LoadedModel

# The embedded models (references resolved by draftapprox_integrations.engine.loading).
SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma-3-270m"

# A SpecPC config that fits the tiny random drafts (few layers, short texts).
TINY = dict(starting_layer_index=1, window_size=16, kernel_size=5)


def words(n: int, seed: int) -> str:
    """``n`` random words from a small vocabulary (deterministic for ``seed``), ending with a full stop."""
    rng = random.Random(seed)
    vocab = ["river", "stone", "quiet", "lamp", "north", "garden", "copper", "window", "seven", "market", "cloud"]
    return " ".join(rng.choice(vocab) for _ in range(n)) + "."


async def await_counting_ticks(awaitable):
    """(result of ``awaitable``, how many 10 ms ticks the event loop ran meanwhile): a blocking call gets ~0."""
    ticks = 0
    done = False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        result = await awaitable
    finally:
        done = True
        await task
    return result, ticks


@torch.no_grad()
def dynamic_greedy(model, cache, logits: torch.Tensor, position: int, n: int) -> list[int]:
    """Reference decode: ``n`` greedy tokens from ``logits`` (the last prompt position's), each fed at its true
    position to ``model`` over its own dynamic ``cache``, one plain transformers forward per token."""
    out = []
    for step in range(n):
        out.append(int(logits.argmax()))
        logits = model(input_ids=torch.tensor([[out[-1]]]), position_ids=torch.tensor([[position + step]]),
                       cache=cache, use_cache=True).logits[0, -1]
    return out


# -- attention capture ---------------------------------------------------------------------------------

CAPTURE_WINDOW = 8
CAPTURE_TOLERANCE = 1e-4


def _eager_twin(loaded: LoadedModel):
    """The same weights, loaded again with eager attention, in float32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        loaded.model.name_or_path, dtype=torch.float32, attn_implementation="eager", local_files_only=True
    ).eval()


def max_capture_error(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """The largest gap between captured and eager attention weights over the last CAPTURE_WINDOW queries."""
    from draftapprox_integrations.engine.capture import AttentionCapture

    eager = _eager_twin(loaded)
    with torch.no_grad():
        reference = eager(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True).attentions
        with AttentionCapture(loaded.model, CAPTURE_WINDOW) as capture:
            loaded.model(input_ids=input_ids, attention_mask=attention_mask)
    assert sorted(capture.records) == list(range(len(reference)))
    valid_queries = attention_mask[:, -CAPTURE_WINDOW:].bool()  # padded query rows have no defined attention
    worst = 0.0
    for layer, eager_weights in enumerate(reference):
        (captured,) = capture.records[layer]
        expected = eager_weights[:, :, -CAPTURE_WINDOW:, :].float()
        assert captured.shape == expected.shape
        diff = (captured - expected).abs().amax(dim=(1, 3))  # [batch, window]
        worst = max(worst, diff[valid_queries].max().item())
    return worst


# -- SpecPC results ------------------------------------------------------------------------------------


def check_spans(text: str, doc, separator: str) -> None:
    """A compressed document's spans are in range, sorted, disjoint, trimmed, snapped to words and rendered."""
    from draftapprox_integrations.engine.alignment import render_spans

    spans = doc.spans
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1)), "spans sorted and disjoint"
    for a, b in spans:
        piece = text[a:b]
        assert piece == piece.strip(), "spans are trimmed"
        # Snapped to words: no span starts or ends inside a word.
        assert a == 0 or text[a - 1].isspace() or not text[a].isalnum() or not text[a - 1].isalnum()
        assert b == len(text) or text[b].isspace() or not text[b].isalnum() or not text[b - 1].isalnum()
    assert doc.text == render_spans(text, spans, separator)
