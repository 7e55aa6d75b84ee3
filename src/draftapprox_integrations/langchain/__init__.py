"""LangChain adapters. Imported lazily so that `import draftapprox_integrations` never pulls LangChain in."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SpecPCCompressor": ".compressor",
    "ChatSpecKV": ".chat_models",
    "SpecKVLLM": ".llms",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
