"""One loaded copy of each model per process, whichever engines name it.

Engines that name the same model (a draft-only compressor engine and a draft+target LLM engine, say)
share one loaded copy; so do engines handed the same ready model object. Weak values: the weights are
freed once no engine holds them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from .errors import ConfigError, EngineUsageError
from .loading import LoadedModel, ModelSource, check_model_kwargs, load_model, model_kwargs_key, model_source

_loaded_models: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_loaded_lock = threading.Lock()


def load_shared(
    source: ModelSource,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantization: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """The loaded model for these settings, loading it only if no live engine holds it already. A ready model
    object is one copy whatever the settings: it is used where it is, in its own dtype."""
    if source.kind == "object":
        key: tuple = (source.kind, source.location)
    else:
        kwargs_key = model_kwargs_key(check_model_kwargs(model_kwargs))
        key = (source.kind, source.location, str(device), dtype, quantization, kwargs_key)
    with _loaded_lock:
        loaded = _loaded_models.get(key)
        if loaded is None:
            loaded = load_model(source, device=device, dtype=dtype, quantization=quantization, model_kwargs=model_kwargs)
            _loaded_models[key] = loaded
        return loaded


def model_entry(
    model: Any, tokenizer: Any, kwargs: Any, role: str, quantization: str | None = None
) -> tuple[ModelSource | None, dict[str, Any]]:
    """One role of an engine (``role`` is draft or target), checked: (its source or None, its model keywords).
    ``quantization`` is the engine's for the target. Raises EngineUsageError, ConfigError or ModelReferenceError
    before anything loads."""
    checked = check_model_kwargs(kwargs, f"{role}_model_kwargs")
    if model is None:
        if tokenizer is not None:
            raise EngineUsageError(f"{role}_tokenizer was given without a {role}_model")
        return None, checked
    source = model_source(model, tokenizer, role=role)
    if source.kind == "object" and checked:
        raise ConfigError(f"{role}_model_kwargs apply to loading a reference; the ready {role} model is loaded already")
    if source.kind == "object" and quantization:
        raise EngineUsageError(f"quantization applies to a {role} loaded from a reference; a ready model is used as it is")
    return source, checked


def entry_key(source: ModelSource | None, kwargs: dict[str, Any]) -> tuple | None:
    """What makes two engines' roles the same model: the reference (or the very object) and its keywords."""
    if source is None:
        return None
    return (source.location if source.kind == "object" else source.name), model_kwargs_key(kwargs)
