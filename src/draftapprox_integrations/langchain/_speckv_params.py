"""Fields and engine plumbing shared by the LangChain SpecKV chat model and LLM (no algorithm here)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from ..engine.config import SpecKVConfig
from ..engine.errors import ConfigError
from ..engine.speckv import METHODS

DEFAULT_MODEL = "smollm2-135m-instruct"

# Per-call keyword arguments that reach engine.generate (anything else is refused with a clear error).
_CALL_OPTIONS = ("method", "budget", "prompt_budget", "config", "max_tokens", "max_new_tokens", "temperature",
                 "top_p", "seed")


class SpecKVParams(BaseModel):
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
    streaming: bool = False
    # Accepted so that code written for hosted models runs unchanged; a local model has no use for them.
    timeout: float | None = Field(default=None, exclude=True)
    max_retries: int | None = Field(default=None, exclude=True)
    api_key: SecretStr | None = Field(default=None, exclude=True)
    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "model" in data and "target_model" not in data:
                data["target_model"] = data.pop("model")
            if "max_new_tokens" in data and "max_tokens" not in data:
                data["max_tokens"] = data.pop("max_new_tokens")
            if isinstance(data.get("config"), dict):
                data["config"] = SpecKVConfig(**data["config"])
            if isinstance(data.get("stop"), str):
                data["stop"] = [data["stop"]]
        return data

    @model_validator(mode="after")
    def _validate_options(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        self.resolved_config()  # window vs budget, budget >= 1: fail at construction, not at first call
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}")
        if self.method == "speckv-pc" and self.prompt_budget is None:
            raise ConfigError("method='speckv-pc' needs prompt_budget (draft tokens of the prompt SpecPC keeps)")
        return self

    def resolved_config(self, budget: int | None = None, config: SpecKVConfig | None = None) -> SpecKVConfig:
        base = config or self.config or SpecKVConfig()
        chosen = budget if budget is not None else self.budget
        return base.replace(budget=chosen) if chosen is not None else base

    def get_engine(self):
        """The shared engine for these model references (created on first use; weights load on first call)."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from ..engine.engine import get_engine

            self._engine = get_engine(
                self.draft_model, self.target_model, device=self.device, dtype=self.dtype, quantization=self.quantization
            )
        return self._engine

    def generation_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """engine.generate keyword arguments: the fields, overridden per call by ``kwargs`` and ``stop``."""
        unknown = set(kwargs) - set(_CALL_OPTIONS)
        if unknown:
            raise ConfigError(f"unsupported option(s) {', '.join(sorted(unknown))}; supported: {', '.join(_CALL_OPTIONS)}")
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
            "stop": stop if stop is not None else self.stop,
        }

    def identifying_params(self) -> dict[str, Any]:
        cfg = self.resolved_config()
        return {
            "draft_model": self.draft_model,
            "target_model": self.target_model,
            "method": self.method,
            "budget": cfg.budget,
            "window_size": cfg.window_size,
            "prompt_budget": self.prompt_budget,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }


def usage_from_stats(stats) -> dict[str, int]:
    return {
        "input_tokens": stats.prompt_tokens,
        "output_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def metadata_from_result(model_name: str, finish_reason: str, stats) -> dict[str, Any]:
    """response_metadata / generation_info: finish reason, model, and every KV and timing statistic."""
    return {"model_name": model_name, "finish_reason": finish_reason, "speckv": stats.to_dict()}
