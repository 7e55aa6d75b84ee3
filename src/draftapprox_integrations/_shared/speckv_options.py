"""What the three SpecKV adapters (LangChain chat model and LLM, LlamaIndex LLM) share, written once.

* :class:`SpecKVOptions`: the fields (model references, method, budget, sampling), their input aliases
  (``model``, ``max_new_tokens``, ``config`` as a dict, ``stop`` as a string) and their validation;
* :data:`CALL_OPTIONS` and :meth:`SpecKVOptions.call_options`: the keyword arguments a call may override,
  resolved and checked by the same code that checks the fields at construction;
* :data:`ROLES` / :func:`engine_role`: message roles of both frameworks -> the engine's chat roles;
* :func:`token_usage`: prompt / completion / total tokens of one generation.

Framework-free (each adapter inherits the pydantic mixin and formats what it returns); no algorithm here:
the checks are the engine's own (``engine.config``, ``engine.decoding``), so adapters and engine agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ..engine.config import DEFAULT_MODEL, METHODS, SpecKVConfig
from ..engine.speckv import check_options
from ..engine.errors import ConfigError, InvalidInputError

# Keyword arguments a call may pass to override a field (anything else is refused with a clear error).
# ``max_new_tokens`` is an alias of ``max_tokens``.
CALL_OPTIONS = (
    "method", "budget", "prompt_budget", "config", "max_tokens", "max_new_tokens", "temperature", "top_p", "seed",
    "stop",
)

# Message roles -> engine chat roles: LangChain message types (human, ai, system) and LlamaIndex
# MessageRole values (system, developer, user, assistant, chatbot, model). Tool and function messages
# are absent on purpose: the adapters do no tool calling.
ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
}


def engine_role(role: str, owner: str) -> str:
    """The engine role of a framework role; InvalidInputError naming ``owner`` (the adapter) for any other."""
    mapped = ROLES.get(role)
    if mapped is None:
        raise InvalidInputError(
            f"{owner} does not support {role!r} messages (no tool calling); use system, user (human) or "
            "assistant (ai) messages"
        )
    return mapped


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one generation: the prompt (input), the answer (output / completion) and their sum."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def token_usage(stats: Any) -> TokenUsage:
    """The usage of a generation from its ``GenerationStats``; each adapter names the keys its framework uses."""
    return TokenUsage(stats.prompt_tokens, stats.completion_tokens, stats.prompt_tokens + stats.completion_tokens)


def as_speckv_config(value: Any) -> Any:
    """``config`` given as a dict becomes a SpecKVConfig (unknown keys and bad values raise ConfigError)."""
    return SpecKVConfig().replace(**value) if isinstance(value, Mapping) else value


class SpecKVOptions(BaseModel):
    """Model references, method, budget and sampling options; the engine is created (not loaded) lazily."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    draft_model: str | None = Field(
        default=DEFAULT_MODEL, description="draft model reference (embedded alias, folder, .gguf or hub id)"
    )
    target_model: str = Field(
        default=DEFAULT_MODEL, description="target model reference, the model that answers (alias: model)"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    dtype: str = Field(default="auto", description="auto, bfloat16, float16 or float32")
    quantization: str | None = Field(default=None, description="None, 4bit or 8bit (bitsandbytes; the target only)")
    method: str = Field(default="speckv", description="a generation method of engine.config.METHODS")
    budget: int | None = Field(default=None, description="KV entries kept per layer and KV head (overrides config)")
    prompt_budget: int | None = Field(
        default=None, description="speckv-pc only: draft tokens of the prompt SpecPC keeps"
    )
    config: SpecKVConfig | None = Field(default=None, description="a SpecKVConfig (or a dict of its fields)")
    max_tokens: int = Field(default=128, description="most new tokens per answer (alias: max_new_tokens)")
    temperature: float = Field(default=0.0, description="sampling temperature; 0 is greedy")
    top_p: float = Field(default=1.0, description="nucleus sampling mass, in (0, 1]")
    stop: list[str] | None = Field(default=None, description="stop sequences, trimmed from the answer")
    seed: int | None = Field(default=None, description="seed of the sampler")
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
            data["config"] = as_speckv_config(data.get("config"))
            if isinstance(data.get("stop"), str):
                data["stop"] = [data["stop"]]
        return data

    @model_validator(mode="after")
    def _validate_options(self):
        # The fields are checked exactly as a call without overrides: fail at construction, not at first use.
        self.call_options({})
        return self

    def resolved_config(self, budget: int | None = None, config: SpecKVConfig | None = None) -> SpecKVConfig:
        """``config`` (else the field, else the defaults) with ``budget`` (else the field) applied."""
        base = config or self.config or SpecKVConfig()
        chosen = budget if budget is not None else self.budget
        return base.replace(budget=chosen) if chosen is not None else base

    def call_options(self, kwargs: Mapping[str, Any], stop: Any = None) -> dict[str, Any]:
        """engine.generate keyword arguments: the fields, overridden by ``kwargs`` (names of
        :data:`CALL_OPTIONS` only) and by ``stop`` when given; every value is checked here, before any
        weight loads, with the engine's own checks. Raises ConfigError."""
        unknown = set(kwargs) - set(CALL_OPTIONS)
        if unknown:
            raise ConfigError(f"unsupported option(s) {', '.join(sorted(unknown))}; supported: {', '.join(CALL_OPTIONS)}")
        method = kwargs.get("method", self.method)
        prompt_budget = kwargs.get("prompt_budget")
        if prompt_budget is None and method in METHODS and METHODS[method].needs_prompt_budget:
            prompt_budget = self.prompt_budget  # the field applies only to the method that uses it
        options = {
            "method": method,
            "config": self.resolved_config(kwargs.get("budget"), as_speckv_config(kwargs.get("config"))),
            "prompt_budget": prompt_budget,
            "max_new_tokens": kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_tokens)),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "seed": kwargs.get("seed", self.seed),
        }
        _, stops = check_options(stop=stop if stop is not None else kwargs.get("stop", self.stop), **options)
        return {**options, "stop": list(stops) or None}

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
