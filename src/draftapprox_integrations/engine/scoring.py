"""Pure tensor functions shared by SpecPC and SpecKV: reductions, centred pooling, weighted queries."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reduce(x: torch.Tensor, dim: int | tuple[int, ...], mode: str) -> torch.Tensor:
    """Reduce ``x`` over ``dim`` with ``max`` or ``mean``."""
    if mode == "mean":
        return x.mean(dim=dim)
    if mode == "max":
        return x.amax(dim=dim)
    raise ValueError(f"reduction must be 'max' or 'mean', got {mode!r}")


def query_weights(n: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Linear weights 0 -> 1 over ``n`` window queries (later queries count more). n == 1 gives [1]."""
    if n == 1:
        return torch.ones(1, device=device, dtype=dtype)
    return torch.linspace(0.0, 1.0, n, device=device, dtype=dtype)


def pool1d(scores: torch.Tensor, kernel_size: int, mode: str) -> torch.Tensor:
    """Centred 1-D pooling over the last dimension, same length out.

    An even kernel is centred on the left of its two middle elements. ``mode`` is max | avg | none.
    Average pooling divides by the number of real (non-padding) elements under the kernel.
    """
    if mode == "none" or kernel_size <= 1:
        return scores
    if mode not in ("max", "avg"):
        raise ValueError(f"pooling must be 'max', 'avg' or 'none', got {mode!r}")
    shape = scores.shape
    flat = scores.reshape(-1, 1, shape[-1]).float()
    left = (kernel_size - 1) // 2
    right = kernel_size - 1 - left
    if mode == "max":
        padded = F.pad(flat, (left, right), value=float("-inf"))
        out = F.max_pool1d(padded, kernel_size, stride=1)
    else:
        padded = F.pad(flat, (left, right), value=0.0)
        sums = F.avg_pool1d(padded, kernel_size, stride=1) * kernel_size
        counts = F.avg_pool1d(F.pad(torch.ones_like(flat), (left, right), value=0.0), kernel_size, stride=1) * kernel_size
        out = sums / counts
    return out.reshape(shape).to(scores.dtype)
