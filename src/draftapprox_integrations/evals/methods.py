"""How the evals answer one sample with each method of the engine's table (``engine.config.METHODS``).

Three shapes cover the table, chosen by a method's ``kind``:

* ``full`` (:class:`FullMethod`): the target reads the whole prompt with its full KV cache; no budget.
* the other generation methods (:class:`KVMethod`): ``engine.generate(method=..., budget=...)`` keeps
  ``budget`` KV entries of the prompt; a method that takes a prompt budget (``speckv-pc``) first cuts the
  prompt to :func:`prompt_budget` draft tokens with SpecPC.
* prompt methods (:class:`PromptMethod`: ``specpc``, ``random``, ``perplexity``): the context is compressed
  to ``budget`` draft tokens given the question (every one returns SpecPC's ``CompressionResult``), then the
  target answers from the compressed context with ``method="full"``.

The runner and the bench look a method up with :func:`eval_method` and never branch on its name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..engine.config import METHODS as ENGINE_METHODS
from ..engine.config import Method
from ..engine.errors import ConfigError


def prompt_budget(budget: int, pc_prompt_factor: float) -> int:
    """Draft tokens of the prompt SpecPC keeps before SpecKV cuts the KV to ``budget`` (``speckv-pc``)."""
    return int(round(budget * pc_prompt_factor))


def stats_dict(stats: Any) -> dict[str, Any]:
    """A result's ``GenerationStats`` as a plain dict for a row ({} when there are none)."""
    if stats is None:
        return {}
    return dict(stats.to_dict()) if hasattr(stats, "to_dict") else dict(vars(stats))


@dataclass(frozen=True)
class EvalMethod:
    """One method as the evals run it: an optional prompt compression, then the target's answer."""

    spec: Method

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uses_budget(self) -> bool:
        """Whether the method is run at each budget of a grid (``full`` runs once, with no budget)."""
        return True

    def compress(self, engine, context: str, question: str, budget: int | None, *, seed: int = 0):
        """The compressed context (a ``CompressionResult``), or None when the method keeps the prompt whole."""
        return None

    def generate_kwargs(self, budget: int | None, *, pc_prompt_factor: float) -> dict[str, Any]:
        """The method-specific keyword arguments of the target's ``engine.generate`` / ``engine.stream``."""
        raise NotImplementedError

    def compression_fields(self, comp) -> dict[str, Any]:
        """The row fields that describe a compression (empty for methods that compress no prompt)."""
        return {}


@dataclass(frozen=True)
class FullMethod(EvalMethod):
    @property
    def uses_budget(self) -> bool:
        return False

    def generate_kwargs(self, budget: int | None, *, pc_prompt_factor: float) -> dict[str, Any]:
        return {"method": self.name}


@dataclass(frozen=True)
class KVMethod(EvalMethod):
    def generate_kwargs(self, budget: int | None, *, pc_prompt_factor: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"method": self.name, "budget": budget}
        if self.spec.needs_prompt_budget:
            kwargs["prompt_budget"] = prompt_budget(budget, pc_prompt_factor)
        return kwargs


Compressor = Callable[..., Any]  # (engine, context, question, budget, seed) -> CompressionResult


@dataclass(frozen=True)
class PromptMethod(EvalMethod):
    compressor: Compressor = None  # type: ignore[assignment]
    # SpecPC's rows also record the tokens it selected and the draft's lookahead; the baselines' rows never
    # had those fields, and committed results keep their columns.
    reports_draft_fields: bool = False

    def compress(self, engine, context: str, question: str, budget: int | None, *, seed: int = 0):
        return self.compressor(engine, context, question, budget, seed)

    def generate_kwargs(self, budget: int | None, *, pc_prompt_factor: float) -> dict[str, Any]:
        return {"method": "full"}

    def compression_fields(self, comp) -> dict[str, Any]:
        out: dict[str, Any] = {"compressed_tokens": comp.compressed_tokens, "original_tokens": comp.original_tokens}
        if self.reports_draft_fields:
            out["selected_tokens"] = comp.selected_tokens
        out["compress_seconds"] = comp.seconds
        if self.reports_draft_fields:
            out["lookahead_text"] = comp.lookahead_text
        return out


# ------------------------------------------------------------------------------------------------
# the prompt compressors: each returns a CompressionResult (SpecPC's shape)


def _specpc(engine, context: str, question: str, budget: int, seed: int):
    return engine.compress(context, question, budget=budget)


def _random(engine, context: str, question: str, budget: int, seed: int):
    from .baselines import random_token_drop

    with engine.lock:
        tokenizer = engine.draft.tokenizer
        return random_token_drop(context, budget, tokenizer, seed=seed)


def _perplexity(engine, context: str, question: str, budget: int, seed: int):
    from .baselines import perplexity_token_drop

    with engine.lock:
        return perplexity_token_drop(context, budget, engine.draft, query=question)


def _missing(engine, context: str, question: str, budget: int, seed: int):
    raise NotImplementedError("engine.config.METHODS has this prompt method, but evals/methods.py has no compressor for it")


# Prompt method name -> its compressor. tests/unit/evals checks these are exactly the table's prompt methods;
# a table entry with none still imports (the CLI keeps working) and its rows fail with NotImplementedError.
COMPRESSORS: dict[str, Compressor] = {"specpc": _specpc, "random": _random, "perplexity": _perplexity}
# SpecPC's rows also record the tokens it selected and the draft's lookahead (see PromptMethod).
_DRAFT_FIELDS = ("specpc",)


def _entry(spec: Method) -> EvalMethod:
    if spec.kind == "prompt":
        compressor = COMPRESSORS.get(spec.name, _missing)
        return PromptMethod(spec, compressor, reports_draft_fields=spec.name in _DRAFT_FIELDS)
    if spec.kind == "generation":
        return FullMethod(spec) if spec.name == "full" else KVMethod(spec)
    raise RuntimeError(f"engine.config.METHODS[{spec.name!r}] has an unknown kind {spec.kind!r}")


# Method name -> how the evals run it: exactly the names of engine.config.METHODS, in its order.
EVAL_METHODS: dict[str, EvalMethod] = {name: _entry(spec) for name, spec in ENGINE_METHODS.items()}


def eval_method(name: str) -> EvalMethod:
    """The eval entry of a method of the engine's table; ConfigError for any other name."""
    try:
        return EVAL_METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(EVAL_METHODS)}") from None


def check_subset(names: Iterable[str], what: str) -> tuple[str, ...]:
    """``names`` as a tuple after checking each is a method of the table (for chosen subsets)."""
    names = tuple(names)
    unknown = [n for n in names if n not in EVAL_METHODS]
    if unknown:
        raise RuntimeError(f"{what} names method(s) missing from engine.config.METHODS: {', '.join(unknown)}")
    return names


# The bench's chosen subset of the table, in the order of its plots' colours (evals.bench re-exports it).
BENCH_METHODS = check_subset(("full", "snapkv", "speckv", "specpc", "speckv-pc"), "BENCH_METHODS")
