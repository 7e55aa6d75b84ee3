"""Warming an engine up before its first request: the kernels, allocator pools and captured decode graphs of
the lengths and batch sizes a user expects.

On a GPU the first call at a new length ran 2-4x slower than the same call repeated (kernels chosen and
compiled, the caching allocator growing, CUDA graphs captured for each decode shape). ``engine.warmup(...)``
runs those shapes once, on a synthetic prompt, so that a user's first request is a warm one. The decode
batches it leaves behind (their buffers and graphs) stay with the engine's loop for the next rows of those
shapes (up to ``serving.rows.IDLE_MEMORY_SHARE`` of the device's memory).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError

FILLER = (
    "The survey team logged the water level, the wind and the state of each instrument before noon, "
    "then walked the northern ridge to check the relay masts and wrote down every reading twice. "
)


def synthetic_prompt(tokenizer, tokens: int) -> str:
    """A plain text of about ``tokens`` tokens of ``tokenizer`` (filler sentences, cut to length)."""
    ids = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    repeated = (ids * (tokens // max(len(ids), 1) + 1))[:tokens]
    return tokenizer.decode(repeated, skip_special_tokens=True)


def warm_up(
    engine,
    *,
    lengths: Sequence[int],
    batch_sizes: Sequence[int] = (1,),
    methods: Sequence[str] = ("speckv",),
    budget: int | None = None,
    max_new_tokens: int = 8,
) -> dict[str, Any]:
    """Run every (length, method, batch size) once on a synthetic prompt; returns what ran and how long."""
    for name, values in (("lengths", lengths), ("batch_sizes", batch_sizes)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ConfigError(f"warmup: {name} must be positive integers, got {values!r}")
    if max_new_tokens < 4:  # a decode shape is captured after a few eager steps (graphs.EAGER_STEPS)
        raise ConfigError(f"warmup: max_new_tokens must be >= 4 to reach the captured decode, got {max_new_tokens}")
    tokenizer = engine.target_tokenizer
    started, runs = time.perf_counter(), []
    for length in lengths:
        prompt = synthetic_prompt(tokenizer, length)
        for method in methods:
            options: dict[str, Any] = dict(method=method, max_new_tokens=max_new_tokens, chat=False)
            if method != "full" and budget is not None:
                options["budget"] = budget
            if method == "speckv-pc":
                options["prompt_budget"] = max(length // 2, 16)
            for size in batch_sizes:
                engine.generate_batch([prompt] * size, **options)
                runs.append({"length": length, "method": method, "batch_size": size})
    return {"runs": runs, "seconds": round(time.perf_counter() - started, 3)}
