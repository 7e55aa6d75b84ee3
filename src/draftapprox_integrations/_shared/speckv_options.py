"""What the three SpecKV adapters (LangChain chat model and LLM, LlamaIndex LLM) share, written once.

* :class:`SpecKVOptions`: the fields (model references, method, budget or rate, sampling), their input aliases
  (``model``, ``max_new_tokens``, ``config`` as a dict, ``stop`` as a string) and their validation
  (unknown keywords refused; errors are the package's own, not pydantic's);
* :data:`CALL_OPTIONS` and :func:`resolve_options`: the keyword arguments a call may override, resolved
  and checked by the same code that checks the fields at construction;
* :data:`ROLES` / :func:`engine_role`: message roles of both frameworks -> the engine's chat roles;
* :func:`token_usage`: prompt / completion / total tokens of one generation.

Framework-free (each adapter inherits the pydantic mixin and formats what it returns); no algorithm here:
the checks are the engine's own (``engine.config``, ``engine.decoding``), so adapters and engine agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from ..engine.config import DEFAULT_MODEL, METHODS, SpecKVConfig
from ..engine.errors import ConfigError, InvalidInputError, check_keywords
from ..engine.loading import check_model_kwargs
from ..engine.prompts import check_text
from ..engine.speckv import check_options
from .base import AdapterOptions, keyword_names

# Keyword arguments a call may pass to override a field (anything else is refused with a clear error).
# ``max_new_tokens`` is an alias of ``max_tokens``.
CALL_OPTIONS = (
    "method", "budget", "rate", "prompt_budget", "config", "max_tokens", "max_new_tokens", "temperature", "top_p", "seed",
    "stop",
)
# The fields those options override (what the engine's check_options sees).
OPTION_FIELDS = ("method", "budget", "rate", "prompt_budget", "config", "max_tokens", "temperature", "top_p", "seed", "stop")
# Constructor aliases -> fields, the same in both frameworks (giving both is an error, not a silent choice):
# the names HuggingFacePipeline / HuggingFaceLLM users know.
KEYWORD_ALIASES = {"model": "target_model", "max_new_tokens": "max_tokens", "model_kwargs": "target_model_kwargs"}

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
    if not isinstance(value, Mapping):
        return value
    if not all(isinstance(key, str) for key in value):
        raise ConfigError(f"config keys must be SpecKVConfig field names, got {sorted(map(repr, value))}")
    return SpecKVConfig().replace(**value)


def as_stop_list(value: Any) -> Any:
    """``stop`` as given, a string becoming a one-item list and a tuple a list; ConfigError for any other
    type (the engine's check_stop then checks every sequence)."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple):
        return list(value)
    raise ConfigError(f"stop must be a string or a list of strings, got {type(value).__name__}")


def resolve_options(fields: Mapping[str, Any], overrides: Mapping[str, Any], stop: Any = None) -> dict[str, Any]:
    """engine.generate keyword arguments from ``fields`` (every name of :data:`OPTION_FIELDS`) overridden by
    ``overrides`` (names of :data:`CALL_OPTIONS`) and by ``stop`` when given, checked by the engine's own
    ``check_options``: the one path for construction (the given values over the defaults) and per call
    (the fields under the call's options). Raises ConfigError."""
    if "max_tokens" in overrides and "max_new_tokens" in overrides:
        raise ConfigError("give max_tokens or its alias max_new_tokens, not both")
    method = overrides.get("method", fields["method"])
    prompt_budget = overrides.get("prompt_budget")
    if prompt_budget is None and isinstance(method, str) and method in METHODS and METHODS[method].needs_prompt_budget:
        prompt_budget = fields["prompt_budget"]  # the field applies only to the method that uses it
    config = as_speckv_config(overrides.get("config")) if overrides.get("config") is not None else fields["config"]
    budget, rate = _budget_or_rate(fields, overrides)
    options = {
        "method": method,
        "prompt_budget": prompt_budget,
        "max_new_tokens": overrides.get("max_tokens", overrides.get("max_new_tokens", fields["max_tokens"])),
        "temperature": overrides.get("temperature", fields["temperature"]),
        "top_p": overrides.get("top_p", fields["top_p"]),
        "seed": overrides.get("seed", fields["seed"]),
    }
    chosen_stop = as_stop_list(stop if stop is not None else overrides.get("stop", fields["stop"]))
    cfg, stops = check_options(budget=budget, rate=rate, config=config, stop=chosen_stop, **options)
    return {**options, "config": cfg, "rate": rate, "stop": list(stops) or None}


def _budget_or_rate(fields: Mapping[str, Any], overrides: Mapping[str, Any]) -> tuple[Any, Any]:
    """(budget, rate): a call that gives either replaces both fields (``rate=0.1`` on a model built with
    ``budget=64`` means the rate); giving both, in the fields or in one call, is check_options' error."""
    if overrides.get("budget") is not None or overrides.get("rate") is not None:
        return overrides.get("budget"), overrides.get("rate")
    return fields["budget"], fields["rate"]


class SpecKVOptions(AdapterOptions):
    """Model references, method, budget (or rate) and sampling options; the engine is created (not loaded) lazily.

    Construction checks every keyword (unknown ones raise :class:`UnknownOptionError` listing the accepted
    ones) and every option with the engine's own checks, on the values as given; a failure raises the
    package's error (ConfigError or a subclass), not pydantic's ValidationError.
    """

    draft_model: str | None = Field(
        default=DEFAULT_MODEL, description="draft model reference (embedded alias, folder, .gguf or hub id)"
    )
    target_model: str = Field(
        default=DEFAULT_MODEL, description="target model reference, the model that answers (alias: model)"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    dtype: str = Field(default="auto", description="auto, bfloat16, float16 or float32")
    quantization: str | None = Field(default=None, description="None, 4bit or 8bit (bitsandbytes; the target only)")
    draft_model_kwargs: dict[str, Any] | None = Field(
        default=None, description="extra from_pretrained keywords for the draft (revision, trust_remote_code, ...)"
    )
    target_model_kwargs: dict[str, Any] | None = Field(
        default=None, description="extra from_pretrained keywords for the target (alias: model_kwargs)"
    )
    max_batch_size: int = Field(
        default=8, strict=True, ge=1, description="answers the shared engine decodes together (batch, concurrent calls)"
    )
    method: str = Field(default="speckv", description="a generation method of engine.config.METHODS")
    budget: int | None = Field(
        default=None, strict=True, description="KV entries kept per layer and KV head (overrides config)"
    )
    rate: float | None = Field(
        default=None,
        strict=True,
        description="instead of budget: the fraction of the prompt's tokens kept, in (0, 1] (speckv-pc: of the cut prompt)",
    )
    prompt_budget: int | None = Field(
        default=None, strict=True, description="speckv-pc only: draft tokens of the prompt SpecPC keeps"
    )
    config: SpecKVConfig | None = Field(default=None, description="a SpecKVConfig (or a dict of its fields)")
    max_tokens: int = Field(default=128, strict=True, description="most new tokens per answer (alias: max_new_tokens)")
    temperature: float = Field(default=0.0, strict=True, description="sampling temperature; 0 is greedy")
    top_p: float = Field(default=1.0, strict=True, description="nucleus sampling mass, in (0, 1]")
    stop: list[str] | None = Field(default=None, description="stop sequences, trimmed from the answer")
    seed: int | None = Field(default=None, strict=True, description="seed of the sampler")

    @model_validator(mode="before")
    @classmethod
    def _check_input(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        check_keywords(cls.__name__, data, keyword_names(cls) | set(KEYWORD_ALIASES))
        data = dict(data)
        for alias, name in KEYWORD_ALIASES.items():
            if alias in data:
                if name in data:
                    raise ConfigError(f"{cls.__name__}: give {name} or its alias {alias}, not both")
                data[name] = data.pop(alias)
        for name in ("draft_model_kwargs", "target_model_kwargs"):
            check_model_kwargs(data.get(name), name)
        engine = data.get("engine")
        if engine is not None and "max_batch_size" in data and data["max_batch_size"] != engine.max_batch_size:
            raise ConfigError(f"{cls.__name__}: max_batch_size={data['max_batch_size']!r} applies to the engine an adapter "
                              f"creates; the engine given decodes up to {engine.max_batch_size} (build it with "
                              "max_batch_size=...)")
        data["config"] = as_speckv_config(data.get("config"))
        if "stop" in data:
            data["stop"] = as_stop_list(data["stop"])
        # The options as given (before pydantic could coerce "7" or True), checked as a call without overrides.
        defaults = {name: cls.model_fields[name].get_default(call_default_factory=True) for name in OPTION_FIELDS}
        resolve_options({**defaults, **{k: v for k, v in data.items() if k in OPTION_FIELDS}}, {})
        return data

    def resolved_config(self, budget: int | None = None, config: SpecKVConfig | None = None) -> SpecKVConfig:
        """``config`` (else the field, else the defaults) with ``budget`` (else the field) applied. With a
        ``rate`` the budget depends on each prompt: the config's budget is then not the one used."""
        base = config or self.config or SpecKVConfig()
        chosen = budget if budget is not None else self.budget
        return base.replace(budget=chosen) if chosen is not None else base

    def call_options(self, kwargs: Mapping[str, Any], stop: Any = None) -> dict[str, Any]:
        """engine.generate keyword arguments: the fields, overridden by ``kwargs`` (names of
        :data:`CALL_OPTIONS` only; UnknownOptionError for others) and by ``stop`` when given; every value is
        checked here, before any weight loads, by :func:`resolve_options`. Raises ConfigError."""
        check_keywords(type(self).__name__, kwargs, CALL_OPTIONS, what="option")
        return resolve_options({name: getattr(self, name) for name in OPTION_FIELDS}, kwargs, stop)

    def _shared_engine(self):
        """The draft + target engine for these model references."""
        from ..engine.shared_engines import get_engine

        return get_engine(
            self.draft_model, self.target_model, device=self.device, dtype=self.dtype, quantization=self.quantization,
            draft_model_kwargs=self.draft_model_kwargs, target_model_kwargs=self.target_model_kwargs,
            max_batch_size=self.max_batch_size,
        )

    def get_token_ids(self, text: str) -> list[int]:
        """The target's token ids of ``text`` (no special tokens), from its tokenizer alone: no weights load.
        Raises InvalidInputError for anything but valid text."""
        if not isinstance(text, str):
            raise InvalidInputError(f"get_token_ids takes a string, got {type(text).__name__}")
        check_text(text, "the text")
        custom = getattr(self, "custom_get_token_ids", None)  # LangChain's own override field, where it exists
        if custom is not None:
            return custom(text)
        return list(self.get_engine().target_tokenizer.encode(text, add_special_tokens=False))
