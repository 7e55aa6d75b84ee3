"""LangChain adapters. Imported lazily so that `import draftapprox_integrations` never pulls LangChain in.

They need the ``langchain`` extra (``pip install "draftapprox-integrations[langchain]"``): without
langchain-core, importing this subpackage (or a class from it) raises
:class:`~draftapprox_integrations.engine.errors.MissingExtraError` naming that extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..engine.errors import MissingExtraError

_EXTRA = "langchain"
_FRAMEWORK = ("langchain_core",)

# Checked on the first import of this subpackage (and so of any class in it); nothing is imported here.
MissingExtraError.require(__name__, _EXTRA, _FRAMEWORK)

_EXPORTS = {
    "SpecPCCompressor": ".compressor",
    "ChatSpecKV": ".chat_models",
    "SpecKVLLM": ".llms",
}

__all__ = list(_EXPORTS)


def _is_framework(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") or m.startswith(module + ".") for m in _FRAMEWORK)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        try:
            module = importlib.import_module(_EXPORTS[name], __name__)
        except ModuleNotFoundError as exc:  # a partial install: langchain-core found, one of its modules not
            if exc.name and _is_framework(exc.name):
                raise MissingExtraError(f"{__name__}.{name}", _EXTRA, exc.name) from exc
            raise
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
