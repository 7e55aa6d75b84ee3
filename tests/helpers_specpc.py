"""Helpers shared by the SpecPC tests (engine, LangChain compressor, LlamaIndex postprocessor).

Imported as ``from helpers_specpc import ...`` (tests/ is on sys.path: it has no __init__.py). The
``tiny_engine`` fixture they use lives in conftest.py.
"""

from __future__ import annotations

import random

# A SpecPC config that fits the tiny random drafts (few layers, short texts).
TINY = dict(starting_layer_index=1, window_size=16, kernel_size=5)


def words(n: int, seed: int) -> str:
    """``n`` random words from a small vocabulary (deterministic for ``seed``), ending with a full stop."""
    rng = random.Random(seed)
    vocab = ["river", "stone", "quiet", "lamp", "north", "garden", "copper", "window", "seven", "market", "cloud"]
    return " ".join(rng.choice(vocab) for _ in range(n)) + "."
