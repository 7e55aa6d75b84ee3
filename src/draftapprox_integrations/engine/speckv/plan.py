"""A generation request, checked in full before any model work, then tokenised for the target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..config import METHODS, SpecKVConfig, SpecPCConfig, check_generation_method, check_rate
from ..constraints import CompiledConstraint, ToolCalls, check_constraint
from ..decoding import check_stop
from ..grammar import prepare_grammar
from ..layer_profiles import full_attention_layers, layer_shares
from ..sampling import check_sampling
from ..errors import ConfigError, ContextLengthError, EngineUsageError
from ..prompts import Messages, Prompt, encode_prompt, eos_token_ids, normalize_messages, with_tools


@dataclass(frozen=True)
class GenerationPlan:
    """Every argument of one generation, validated. ``prompt_ids`` are filled in by :func:`tokenize_plan`.

    ``rate`` (None: ``config.budget`` is the budget) becomes ``config.budget`` once the prompt the target reads
    is known (:func:`resolve_rate`): at :func:`tokenize_plan`, or for speckv-pc after SpecPC's cut.
    """

    method: str
    config: SpecKVConfig
    prompt_budget: int | None
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    specpc_config: SpecPCConfig | None
    messages: Messages | None
    text: str | None
    prompt_ids: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    rate: float | None = None
    constraint: CompiledConstraint | None = None  # what the answer may be (``engine.constraints``)

    @property
    def needs_draft(self) -> bool:
        return METHODS[self.method].needs_draft

    @property
    def budget_after_cut(self) -> bool:
        """speckv-pc with a rate: the rate is a fraction of the prompt SpecPC's cut leaves (what the target
        reads and caches), so the budget is known only after the cut (``generate._cascade``)."""
        return self.rate is not None and METHODS[self.method].needs_prompt_budget


def check_prompt_list(prompts: Any) -> None:
    """generate_batch's prompts: a list of prompts, not one prompt (a text or a message)."""
    if isinstance(prompts, (str, dict)) or not isinstance(prompts, Sequence):
        raise ConfigError("generate_batch takes a list of prompts (texts or message lists); use generate for one")


def resolve_config(config: SpecKVConfig | None, budget: int | None) -> SpecKVConfig:
    if config is not None and not isinstance(config, SpecKVConfig):
        raise ConfigError(f"config must be a SpecKVConfig, got {type(config).__name__}")
    base = config or SpecKVConfig()
    if budget is not None:
        base = base.replace(budget=budget)  # re-validates: a window larger than the budget raises here
    return base


def check_options(
    *,
    method: str = "speckv",
    budget: int | None = None,
    rate: float | None = None,
    config: SpecKVConfig | None = None,
    prompt_budget: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Sequence[str] | str | None = None,
    seed: int | None = None,
    specpc_config: SpecPCConfig | None = None,
    constraint: Any = None,
) -> tuple[SpecKVConfig, tuple[str, ...]]:
    """Every generation option but the prompt, checked: (the resolved SpecKVConfig, the stop sequences).

    The one rule for the engine and the adapters (which check their fields with it at construction).
    At most one of ``budget`` / ``rate`` (either replaces ``config.budget``); with a rate the returned
    config's budget is a placeholder until :func:`resolve_rate` knows the prompt. ``constraint``: a JsonSchema,
    Regex or ToolCalls (``engine.constraints``), compiled to check it. Raises ConfigError (ConstraintError).
    """
    spec = check_generation_method(method)
    if rate is not None:
        if budget is not None:
            raise ConfigError(
                "give budget= (KV entries per layer and KV head) or rate= (fraction of the prompt), not both"
            )
        check_rate(rate)
    cfg = resolve_config(config, budget)
    if prompt_budget is not None:
        if not spec.needs_prompt_budget:
            raise ConfigError("prompt_budget applies to method='speckv-pc' only")
        if isinstance(prompt_budget, bool) or not isinstance(prompt_budget, int) or prompt_budget < 1:
            raise ConfigError(f"prompt_budget must be an integer >= 1, got {prompt_budget!r}")
    if specpc_config is not None:
        if not spec.needs_prompt_budget:
            raise ConfigError("specpc_config applies to method='speckv-pc' only")
        if not isinstance(specpc_config, SpecPCConfig):
            raise ConfigError(f"specpc_config must be a SpecPCConfig, got {type(specpc_config).__name__}")
    if spec.needs_prompt_budget and prompt_budget is None:
        raise ConfigError("method='speckv-pc' needs prompt_budget (draft tokens of the prompt SpecPC keeps)")
    if method == "streamingllm" and cfg.coverage is not None:
        raise ConfigError("coverage needs attention scores; method='streamingllm' keeps sinks and recent tokens: "
                          "give it a budget instead")
    if method == "streamingllm" and cfg.allocation in ("global", "profile"):
        # StreamingLLM keeps sinks + the most recent tokens in every layer: no scores to share a budget by.
        raise ConfigError(f"allocation={cfg.allocation!r} splits the budget by attention scores; method='streamingllm' "
                          "keeps the same positions in every layer: use allocation='uniform' or 'auto' with it")
    if rate is None:
        _check_sinks(method, cfg)
    check_sampling(temperature, top_p, max_new_tokens)
    _check_seed(seed)
    stops = check_stop(stop)
    if constraint is not None:
        compiled = constraint if isinstance(constraint, CompiledConstraint) else check_constraint(constraint)
        if stops and compiled.grammar is not None:
            raise ConfigError("stop sequences would cut a constrained answer mid-way; bound its length in the schema "
                              "(maxLength, maxItems, enum) or with max_new_tokens instead")
    return cfg, stops


def per_prompt(constraint: Any, n: int) -> list[Any]:
    """generate_batch's ``constraint``: one for every prompt, or a list with one per prompt (None: free)."""
    if not isinstance(constraint, (list, tuple)):
        return [constraint] * n
    if len(constraint) != n:
        raise ConfigError(f"constraint: a list needs one entry per prompt ({n}), got {len(constraint)}")
    return list(constraint)


def _check_sinks(method: str, cfg: SpecKVConfig) -> None:
    if method == "streamingllm" and cfg.sink_tokens >= cfg.budget:
        raise ConfigError(f"sink_tokens ({cfg.sink_tokens}) must be smaller than the budget ({cfg.budget})")


def resolve_rate(plan: GenerationPlan, prompt_len: int) -> GenerationPlan:
    """The plan with its ``rate`` (if any) made an entry budget for a prompt of ``prompt_len`` target tokens:
    ``max(window_size, ceil(rate * prompt_len))``.

    The floor is the window because the last ``window_size`` prompt tokens are always kept (they are the
    observation queries; StreamingLLM keeps its recent tail): a budget below the window cannot be honoured
    and SpecKVConfig refuses it, so a small rate of a short prompt keeps the window and nothing more. The
    product is rounded to 9 decimals before the ceiling so that float noise (0.1 * 30 = 3.0000000000000004)
    does not add an entry. Raises ConfigError when StreamingLLM's sinks do not fit the resolved budget.
    """
    if plan.rate is None:
        return plan
    budget = max(plan.config.window_size, math.ceil(round(plan.rate * prompt_len, 9)))
    cfg = plan.config.replace(budget=budget)
    _check_sinks(plan.method, cfg)
    return replace(plan, config=cfg)


def _check_seed(seed) -> None:
    # torch.Generator.manual_seed takes any integer that fits 64 bits (signed or unsigned).
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise ConfigError(f"seed must be an integer that fits in 64 bits, got {seed!r}")


def check_generation(
    prompt: Prompt,
    *,
    method: str = "speckv",
    budget: int | None = None,
    rate: float | None = None,
    config: SpecKVConfig | None = None,
    prompt_budget: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Sequence[str] | str | None = None,
    seed: int | None = None,
    chat: bool | None = None,
    specpc_config: SpecPCConfig | None = None,
    has_draft: bool = True,
    constraint: Any = None,
) -> GenerationPlan:
    """Validate every argument (no model is touched); raises ConfigError / EngineUsageError."""
    compiled = check_constraint(constraint)
    cfg, stops = check_options(
        method=method, budget=budget, rate=rate, config=config, prompt_budget=prompt_budget, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, stop=stop, seed=seed, specpc_config=specpc_config, constraint=compiled,
    )
    messages, text = normalize_messages(prompt, chat)
    if compiled is not None and isinstance(compiled.constraint, ToolCalls):
        messages = with_tools(messages, compiled.tools, compiled.constraint.choice)
    if METHODS[method].needs_draft and not has_draft:
        raise EngineUsageError(f"method={method!r} needs a draft model; use method='snapkv' for draft-free compression")
    return GenerationPlan(
        method, cfg, prompt_budget, max_new_tokens, float(temperature), float(top_p), stops, seed, specpc_config,
        messages, text, rate=None if rate is None else float(rate), constraint=compiled,
    )


def tokenize_plan(plan: GenerationPlan, target) -> GenerationPlan:
    """The plan with the prompt in target tokens; refuses a prompt the target's context cannot hold and
    shortens ``max_new_tokens`` to what fits (with a note). A ``rate`` becomes the entry budget here
    (:func:`resolve_rate`), except speckv-pc's, which is a fraction of the cut prompt.

    A speckv-pc prompt that does not fit but that SpecPC will cut (``prompt_budget`` below its length) passes
    whatever its length: the cut runs first, on the draft (in chunks when the prompt is long), and
    :func:`fit_context` then checks the cut prompt (``speckv.start_generation``).
    """
    ids = encode_prompt(target, plan.messages, plan.text)
    if not ids:
        raise ConfigError("the prompt encodes to no tokens")
    if plan.constraint is not None:  # compiled for the target's tokenizer now, in the caller's thread
        prepare_grammar(plan.constraint, target.tokenizer, logits_size(target.model), eos_token_ids(target))
    if plan.method != "full":  # a layer profile must fit the target (ConfigError before any model work)
        layer_shares(plan.config.allocation, plan.config.layer_profile, target.model, full_attention_layers(target.model))
    if not plan.budget_after_cut:
        plan = resolve_rate(plan, len(ids))
    overflows = len(ids) + plan.max_new_tokens > target.context_length
    if overflows and METHODS[plan.method].needs_prompt_budget and plan.prompt_budget < len(ids):
        return replace(plan, prompt_ids=tuple(ids))  # SpecPC's cut must make it fit: checked after the cut
    max_new, note = fit_context(len(ids), plan.max_new_tokens, target, hint=_too_long_hint(plan))
    return replace(plan, prompt_ids=tuple(ids), max_new_tokens=max_new, notes=plan.notes + note)


def logits_size(model) -> int:
    """The width of a model's logits (its output vocabulary, which may differ from its tokenizer's length)."""
    return int(model.config.get_text_config().vocab_size)


def _too_long_hint(plan: GenerationPlan) -> str:
    if METHODS[plan.method].needs_prompt_budget:
        # SpecPC would not cut this prompt: prompt_budget is not below its length.
        return f"prompt_budget={plan.prompt_budget} keeps all of it; pass a smaller prompt_budget so SpecPC cuts it"
    return "shorten it, or cut it with SpecPC first: method='speckv-pc' with a prompt_budget, or engine.compress"


def fit_context(prompt_len: int, max_new_tokens: int, target, *, hint: str, what: str = "the prompt") -> tuple[int, tuple[str, ...]]:
    """(max_new_tokens, notes) for a prompt of ``prompt_len`` target tokens: ContextLengthError (ending with
    ``hint``) when the target's context holds no token after it, else max_new_tokens cut to what fits."""
    context = target.context_length
    if prompt_len >= context:
        raise ContextLengthError(
            f"{what} has {prompt_len} target tokens but {target.source.name!r} has a context of {context}; {hint}"
        )
    if prompt_len + max_new_tokens > context:
        return context - prompt_len, (f"max_new_tokens cut from {max_new_tokens} to {context - prompt_len} to fit the context",)
    return max_new_tokens, ()
