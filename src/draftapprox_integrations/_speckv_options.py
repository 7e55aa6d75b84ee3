"""Fields, validation and engine plumbing shared by the SpecKV adapters (LangChain chat model and LLM,
LlamaIndex LLM). Framework-free: a pydantic mixin each adapter inherits; no algorithm here (that lives in
``engine/speckv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .engine.config import SpecKVConfig
from .engine.errors import ConfigError
from .engine.speckv import METHODS

DEFAULT_MODEL = "smollm2-135m-instruct"


class SpecKVOptions(BaseModel):
    """Model references, method, budget and sampling options; the engine is created (not loaded) lazily."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    draft_model: str | None = DEFAULT_MODEL
    target_model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    method: str = "speckv"
    budget: int | None = None
    prompt_budget: int | None = None
    config: SpecKVConfig | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _validate_options(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        self.resolved_config()  # window vs budget, budget >= 1: fail at construction, not at first call
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        self._check_sampling()
        if self.method == "speckv-pc" and self.prompt_budget is None:
            raise ConfigError("method='speckv-pc' needs prompt_budget (draft tokens of the prompt SpecPC keeps)")
        return self

    def _check_sampling(self) -> None:
        """Adapter hook for checks of temperature/top_p at construction (none by default)."""

    def resolved_config(self, budget: int | None = None, config: SpecKVConfig | None = None) -> SpecKVConfig:
        base = config or self.config or SpecKVConfig()
        chosen = budget if budget is not None else self.budget
        return base.replace(budget=chosen) if chosen is not None else base

    def get_engine(self):
        """The shared engine for these model references (created on first use; weights load on first call)."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from .engine.engine import get_engine

            self._engine = get_engine(
                self.draft_model, self.target_model, device=self.device, dtype=self.dtype, quantization=self.quantization
            )
        return self._engine

    def _engine_kwargs(self, kwargs: dict[str, Any], supported: Sequence[str], stop: list[str] | None) -> dict[str, Any]:
        """engine.generate keyword arguments: the fields, overridden per call by ``kwargs`` (only the
        ``supported`` names; anything else is refused with a clear error); ``stop`` is already resolved."""
        unknown = set(kwargs) - set(supported)
        if unknown:
            raise ConfigError(f"unsupported option(s) {', '.join(sorted(unknown))}; supported: {', '.join(supported)}")
        max_tokens = kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_tokens))
        method = kwargs.get("method", self.method)
        return {
            "method": method,
            "config": self.resolved_config(kwargs.get("budget"), kwargs.get("config")),
            "prompt_budget": kwargs.get("prompt_budget", self.prompt_budget) if method == "speckv-pc" else None,
            "max_new_tokens": max_tokens,
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "seed": kwargs.get("seed", self.seed),
            "stop": stop,
        }
