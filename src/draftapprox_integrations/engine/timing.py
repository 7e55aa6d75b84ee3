"""Clocks that mean something on an accelerator.

CUDA kernels run asynchronously: a clock read right after a forward is launched measures the launch, not
the work (the first GPU run of this engine reported a 0.44 s prefill that took 1.4 s). Every clock the
engine's statistics read goes through :func:`synced_clock`, which waits for the device's queued work first.
"""

from __future__ import annotations

import time

import torch


def synced_clock(device=None) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` has finished (a no-op wait off CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
