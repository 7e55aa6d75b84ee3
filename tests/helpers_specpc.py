"""Helpers shared by the SpecPC tests (engine, LangChain compressor, LlamaIndex postprocessor).

Imported as ``from helpers_specpc import ...`` (tests/ is on sys.path: it has no __init__.py). The
``tiny_engine`` fixture they use lives in conftest.py.
"""

from __future__ import annotations

import asyncio
import random

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
