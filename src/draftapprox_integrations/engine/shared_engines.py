"""Process-wide engines: components built with the same references share one engine, so one copy of the
weights and one loop serve them all."""

from __future__ import annotations

import threading
from typing import Any

import torch

from .config import DEFAULT_MODEL
from .engine import DraftApproxEngine
from .weights import entry_key

_engines: dict[tuple, DraftApproxEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    draft_model: Any = DEFAULT_MODEL,
    target_model: Any = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    quantization: str | None = None,
    draft_tokenizer: Any = None,
    target_tokenizer: Any = None,
    draft_model_kwargs: dict[str, Any] | None = None,
    target_model_kwargs: dict[str, Any] | None = None,
    max_batch_size: int = 8,
) -> DraftApproxEngine:
    """The process-wide engine for these models and options (as :class:`DraftApproxEngine` takes them):
    components built alike share one engine and one copy of the weights."""
    # Building an engine only checks and resolves (nothing loads): the candidate names the key it is shared under.
    candidate = DraftApproxEngine(
        draft_model, target_model, device=device, dtype=dtype, quantization=quantization, draft_tokenizer=draft_tokenizer,
        target_tokenizer=target_tokenizer, draft_model_kwargs=draft_model_kwargs, target_model_kwargs=target_model_kwargs,
        max_batch_size=max_batch_size,
    )
    key = (
        entry_key(candidate.draft_source, candidate.draft_model_kwargs),
        entry_key(candidate.target_source, candidate.target_model_kwargs),
        str(candidate.device), candidate.dtype, candidate.quantization, max_batch_size,
    )
    with _engines_lock:
        return _engines.setdefault(key, candidate)


def clear_engines() -> None:
    """Forget the shared engines (their weights are freed once no component holds them)."""
    with _engines_lock:
        _engines.clear()
