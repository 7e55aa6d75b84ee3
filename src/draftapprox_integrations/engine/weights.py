"""One loaded copy of each model per process, whichever engines name it.

Engines that name the same model (a draft-only compressor engine and a draft+target LLM engine, say)
share one loaded copy. Weak values: the weights are freed once no engine holds them.
"""

from __future__ import annotations

import threading
import weakref

import torch

from .loading import LoadedModel, ModelSource, load_model

_loaded_models: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_loaded_lock = threading.Lock()


def load_shared(source: ModelSource, *, device: torch.device, dtype: torch.dtype, quantization: str | None = None) -> LoadedModel:
    """The loaded model for these settings, loading it only if no live engine holds it already."""
    key = (source.kind, source.location, str(device), dtype, quantization)
    with _loaded_lock:
        loaded = _loaded_models.get(key)
        if loaded is None:
            loaded = load_model(source, device=device, dtype=dtype, quantization=quantization)
            _loaded_models[key] = loaded
        return loaded
