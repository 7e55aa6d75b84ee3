"""What every adapter's options share: the engine field, the package's own errors at construction, and no
unknown keyword. Framework-free (pydantic only): the SpecPC and SpecKV option mixins build on it.
"""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..engine.errors import ConfigError, DraftApproxError


class AdapterOptions(BaseModel):
    """A pydantic base whose construction raises the package's errors, never pydantic's ValidationError."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:  # pydantic wraps our errors: raise the package's own instead
            raise error_from_validation(type(self).__name__, exc) from None

    def get_engine(self):
        """The engine given as ``engine=``, else the shared one for these options' model references, created on
        first use (its weights load on the first call)."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            self._engine = self._shared_engine()
        return self._engine

    def _shared_engine(self):
        """The process-wide engine (``engine.get_engine``) these options' model references name."""
        raise NotImplementedError


def error_from_validation(owner: str, exc: Exception) -> DraftApproxError:
    """The package error behind a pydantic ``ValidationError`` raised while building ``owner``.

    An error one of our validators raised (a DraftApproxError, which pydantic wraps) comes back as itself;
    any other failure (a wrong type for a field, a framework field's own check) becomes a ConfigError that
    names each field, the problem and the value given.
    """
    errors = exc.errors() if hasattr(exc, "errors") else []
    for error in errors:
        inner = (error.get("ctx") or {}).get("error")
        if isinstance(inner, DraftApproxError):
            return inner
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ())) or "input"
        parts.append(f"{field}: {error.get('msg', 'invalid')} (got {reprlib.repr(error.get('input'))})")
    return ConfigError(f"{owner}: " + ("; ".join(parts) or str(exc)))


def keyword_names(model_cls: type) -> set[str]:
    """Every keyword a pydantic model class takes: its declared fields (its own and its bases', frameworks'
    included) and their aliases."""
    names = set()
    for name, field in getattr(model_cls, "model_fields", {}).items():
        names.add(name)
        for alias in (getattr(field, "alias", None), getattr(field, "validation_alias", None)):
            if isinstance(alias, str):
                names.add(alias)
    return names
