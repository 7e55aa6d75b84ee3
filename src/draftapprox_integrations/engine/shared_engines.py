"""Process-wide engines: components built with the same references share one engine, so one copy of the
weights and one loop serve them all."""

from __future__ import annotations

import threading

import torch

from .config import DEFAULT_MODEL
from .engine import DraftApproxEngine
from .loading import check_quantization, resolve_device, resolve_dtype, resolve_reference

_engines: dict[tuple, DraftApproxEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    draft_model: str | None = DEFAULT_MODEL,
    target_model: str | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    quantization: str | None = None,
) -> DraftApproxEngine:
    """The process-wide engine for these references: components built alike share one copy of the weights."""
    dev = resolve_device(device)
    key = (
        resolve_reference(draft_model).name if draft_model is not None else None,
        resolve_reference(target_model).name if target_model is not None else None,
        str(dev),
        resolve_dtype(dtype, dev),
        check_quantization(quantization),
    )
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = DraftApproxEngine(draft_model, target_model, device=dev, dtype=key[3], quantization=key[4])
            _engines[key] = engine
        return engine


def clear_engines() -> None:
    """Forget the shared engines (their weights are freed once no component holds them)."""
    with _engines_lock:
        _engines.clear()
