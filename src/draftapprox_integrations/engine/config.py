"""Validated configurations of the two methods, with the paper's defaults (arXiv 2506.08373)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ConfigError
from .layer_profiles import check_profile

# The model every component uses when none is named: the embedded SmolLM2-135M-Instruct.
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Method:
    """One approximation method, as every layer sees it.

    kind: "generation" methods answer through ``engine.generate(method=...)`` (they decide what the target's
    KV cache keeps; ``full`` keeps everything); "prompt" methods shorten the prompt text first, and the target
    then answers with full KV. needs_draft: the method runs the draft model. needs_prompt_budget: it takes a
    ``prompt_budget`` (draft tokens of the prompt to keep) besides the KV ``budget``.
    """

    name: str
    kind: str
    needs_draft: bool
    summary: str
    needs_prompt_budget: bool = False


# The one method table: the engine, the adapters, the CLI, the eval runner and the bench read it.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", "generation", False, "no compression: the reference"),
        Method("speckv", "generation", True, "SnapKV scoring extended with the draft's approximate answer"),
        Method("snapkv", "generation", False, "the last prompt queries score the prompt keys"),
        Method("streamingllm", "generation", False, "attention sinks plus the most recent entries"),
        Method("speckv-pc", "generation", True, "SpecPC cuts the prompt, then SpecKV cuts the KV", True),
        Method("specpc", "prompt", True, "the draft's attention keeps the prompt tokens that matter"),
        Method("random", "prompt", False, "uniformly random prompt tokens (seeded)"),
        Method("perplexity", "prompt", True, "LLMLingua-style: the draft's least predictable tokens"),
    )
}
GENERATION_METHODS = tuple(n for n, m in METHODS.items() if m.kind == "generation")
PROMPT_METHODS = tuple(n for n, m in METHODS.items() if m.kind == "prompt")
DRAFT_METHODS = tuple(n for n, m in METHODS.items() if m.needs_draft)


def check_generation_method(method: str) -> Method:
    """The table entry of a method ``engine.generate`` runs; ConfigError for any other name."""
    spec = METHODS.get(method) if isinstance(method, str) else None
    if spec is None or spec.kind != "generation":
        raise ConfigError(f"unknown method {method!r}: use one of {', '.join(GENERATION_METHODS)}")
    return spec


def check_rate(rate: Any) -> float:
    """``rate``, a kept fraction in (0, 1], as a float; ConfigError for anything else (bool, NaN, inf, text).

    The one check of the concept for both methods: SpecPC's ``rate`` (tokens of the context kept) and
    SpecKV's (KV entries of the prompt kept); each turns it into a count its own way.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ConfigError(f"rate must be a number in (0, 1], got {rate!r}")
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"rate must be in (0, 1] (the fraction kept), got {rate}")
    return float(rate)


_REDUCTIONS = ("max", "mean")
_POOLINGS = ("max", "avg", "none")
_ALLOCATIONS = ("uniform", "global", "profile", "auto")


def _check_positive_int(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


class _ConfigMixin:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[arg-type]

    def replace(self, **changes: Any):
        known = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown {type(self).__name__} field(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class SpecPCConfig(_ConfigMixin):
    """SpecPC: the draft's attention from the question window and lookahead picks the prompt tokens to keep.

    window_size: last prompt tokens whose queries score the prompt (always kept).
    lookahead_tokens: tokens the draft generates; each new token's attention is scored too.
    pooling / kernel_size: centred 1-D smoothing of the token scores.
    neighbor_tokens: each selected position grows by this many nearest neighbours (None: kernel_size).
    head_reduction: over heads and window queries; layer_reduction: over layers; step_reduction: over
    the prefill and lookahead steps.
    starting_layer_index: layers below this are ignored (early layers attend broadly).
    ending_layer_index: the last layer scored (None: the draft's last). When the draft writes no lookahead
    (``lookahead_tokens=0``, or an answer is given), its forward stops after this layer: a cheaper pass.
    weighted_query: window queries weighted linearly 0 -> 1 so later queries count more.

    Defaults are tuned for the small embedded drafts (SmolLM2-135M, 30 layers): avg pooling over 8 tokens,
    no neighbour growth, layers >= 12. On RULER-style tasks at 2k/4k tokens (single needle, multi-key,
    multi-value, variable tracking; 5 samples each) and a 10% budget they keep 95%/98% of the answers in the
    compressed text where the paper's settings (``SpecPCConfig.paper()``: max pooling over 32, 32 neighbours,
    layers >= 8, tuned for 1.5B-8B drafts) keep 75%/83%: a wide max-pooled kernel
    spends a 200-token budget on three or four 64-token blocks and misses the scattered facts of
    multi-value and variable-tracking questions.
    """

    window_size: int = 64
    lookahead_tokens: int = 1
    pooling: str = "avg"
    kernel_size: int = 8
    neighbor_tokens: int | None = 0
    head_reduction: str = "max"
    layer_reduction: str = "max"
    step_reduction: str = "max"
    starting_layer_index: int = 12
    weighted_query: bool = True
    ending_layer_index: int | None = None

    @classmethod
    def paper(cls, **changes: Any) -> SpecPCConfig:
        """The paper's settings (Qwen2.5 / Llama 3 drafts): window 64, max pooling over 32, 32 neighbours,
        lookahead 1, layers >= 8, max reductions, weighted queries."""
        base = cls(pooling="max", kernel_size=32, neighbor_tokens=None, starting_layer_index=8)
        return base.replace(**changes) if changes else base

    def __post_init__(self) -> None:
        _check_positive_int("window_size", self.window_size)
        _check_positive_int("lookahead_tokens", self.lookahead_tokens, allow_zero=True)
        _check_choice("pooling", self.pooling, _POOLINGS)
        _check_positive_int("kernel_size", self.kernel_size)
        if self.neighbor_tokens is not None:
            _check_positive_int("neighbor_tokens", self.neighbor_tokens, allow_zero=True)
        _check_choice("head_reduction", self.head_reduction, _REDUCTIONS)
        _check_choice("layer_reduction", self.layer_reduction, _REDUCTIONS)
        _check_choice("step_reduction", self.step_reduction, _REDUCTIONS)
        _check_positive_int("starting_layer_index", self.starting_layer_index, allow_zero=True)
        if self.ending_layer_index is not None:
            _check_positive_int("ending_layer_index", self.ending_layer_index, allow_zero=True)
            if self.ending_layer_index < self.starting_layer_index:
                raise ConfigError(
                    f"ending_layer_index={self.ending_layer_index} is below starting_layer_index={self.starting_layer_index}"
                )
        if not isinstance(self.weighted_query, bool):
            raise ConfigError(f"weighted_query must be a bool, got {self.weighted_query!r}")

    @property
    def neighbors(self) -> int:
        return self.kernel_size if self.neighbor_tokens is None else self.neighbor_tokens


@dataclass(frozen=True)
class SpecKVConfig(_ConfigMixin):
    """SpecKV: the draft's approximate answer extends SnapKV's observation window.

    budget: KV entries kept per layer and KV head (the paper's max_capacity_prompt), window included.
    (``rate=`` of engine.generate, the adapters and the CLI sets it per prompt instead: speckv.resolve_rate.)
    window_size: last prompt tokens whose queries observe the prompt (SnapKV's window).
    keep_last: last prompt tokens always kept when a lookahead scores the keys (None: the whole window); the
    rest of the window competes on score. With no lookahead (SnapKV) the whole window is kept.
    score_window: whether the window's queries score the keys beside the lookahead's (the paper: True).
    allocation: how the budget's entries are split between layers, always at the same total. ``uniform``:
    ``budget`` in every layer. ``global``: per request, one threshold over every layer's normalised scores
    (Ada-KV / PyramidKV's idea). ``profile``: fixed shares per layer learned offline for the model
    (``engine.layer_profiles``: the global allocation averaged over a tuning split), the same for every request.
    ``auto``: the model's profile when one is known (SmolLM2-135M) and a lookahead scores (SpecKV), else
    uniform (SnapKV stays the published baseline).
    layer_profile: the shares ``profile``/``auto`` use instead of the model's: a name of
    ``engine.layer_profiles.LAYER_PROFILES`` or a tuple with one share per full-attention layer (normalised).
    kernel_size / pooling: odd 1-D smoothing of key scores before top-k.
    reduction: over observation queries and the query heads of each KV group.
    lookahead_tokens: draft tokens to generate as the approximate answer (None: as many as the target's
    max_new_tokens).
    sink_tokens: first entries StreamingLLM (the baseline) always keeps; the rest of its budget is recent.
    coverage: a budget that sizes itself per request (None: the budget is ``budget``). Each layer counts the
    fewest keys per KV head whose share of the lookahead's attention reaches ``coverage`` (the largest its
    heads need; the first ``sink_tokens`` positions out of the mass and always kept), and every layer of the
    request keeps the mean of those counts, at least ``coverage_floor`` besides the kept tail and at most
    ``budget``: a one-needle question keeps little, an aggregation over the text much, and each request
    keeps one count in every layer (rows group by size in a decode batch). Issue 23 measured a count per
    layer too: it lost 9.5 points to a fixed budget of fewer entries (results/cpu/speckv-quality/round2).

    The default kernel is 15, not the paper's 7 (``SpecKVConfig.paper()``): the embedded SmolLM2 tokenizes
    numbers one digit per token, so a 7-digit value is 7 keys, and a kernel of 7 centred on the digit the
    lookahead attends to most can leave an end digit out of a head's top-k. Multi-key retrieval at a
    128-entry budget (n=12 at 2k, n=8 at 4k, SmolLM2 as its own draft): kernel 15 gave the full-KV answer on
    all 20 samples, kernel 7 dropped a digit on one 2k sample (results/cpu/speckv/NOTES.md). SnapKV and
    SpecKV share the kernel so the baselines compare at equal settings.

    ``score_window=False`` and ``keep_last=8`` (the paper scores with the window too and keeps all of it) were
    chosen on the tuning split of issue 14's sweep (``draftapprox sweep-kv``, results/cpu/speckv-quality/):
    six task families at 2k and 4k tokens, SmolLM2 as its own draft. The window's queries (the question's
    tail and the chat template) spread their attention over format tokens that then take budget from the
    answer's sources, and a 32-token window is half of a 64-entry budget; scoring with the lookahead alone
    and keeping only the last 8 tokens gave +14.9 points at 64 entries and +7.7 at 128 over the paper's rule
    there (tuning run 3). The held-out split (other seeds, 2k/4k/8k) reports them. ``allocation="global"``
    won a further +7.2 points at 64 entries (none at 128) on issue 14's tuning split but stays opt-in: the
    layer-wise prefill holds up to 3x the mean per layer until every layer is scored, and every request has
    its own per-layer shape. The default ``auto`` takes its gain without either cost where a profile is
    known: on issue 23's held-out split (140 samples per length, seven families) SmolLM2's profile scored
    +3.7 points over the uniform split at 64 entries (95% interval +1.9 to +5.6; 2k and 4k) and +0.5 at 128
    (-0.8 to +1.9), at the same bytes (results/cpu/speckv-quality/round2/NOTES.md).
    """

    budget: int = 256
    window_size: int = 32
    kernel_size: int = 15
    pooling: str = "max"
    reduction: str = "max"
    lookahead_tokens: int | None = None
    sink_tokens: int = 4
    keep_last: int | None = 8
    allocation: str = "auto"
    score_window: bool = False
    coverage: float | None = None
    coverage_floor: int = 16
    layer_profile: str | tuple[float, ...] | None = None

    @classmethod
    def paper(cls, **changes: Any) -> SpecKVConfig:
        """The paper's settings: window 32, max pooling over 7, max reduction, budget 256."""
        base = cls(kernel_size=7, keep_last=None, score_window=True, allocation="uniform")
        return base.replace(**changes) if changes else base

    def __post_init__(self) -> None:
        _check_positive_int("budget", self.budget)
        _check_positive_int("window_size", self.window_size)
        _check_positive_int("kernel_size", self.kernel_size)
        if self.pooling != "none" and self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd so the pooling is centred, got {self.kernel_size}")
        _check_choice("pooling", self.pooling, _POOLINGS)
        _check_choice("reduction", self.reduction, _REDUCTIONS)
        if self.lookahead_tokens is not None:
            _check_positive_int("lookahead_tokens", self.lookahead_tokens, allow_zero=True)
        _check_positive_int("sink_tokens", self.sink_tokens, allow_zero=True)
        if self.keep_last is not None:  # above window_size it keeps the window (the tail is never longer)
            _check_positive_int("keep_last", self.keep_last)
        _check_choice("allocation", self.allocation, _ALLOCATIONS)
        if isinstance(self.layer_profile, list):  # a profile read from JSON: frozen as the tuple it means
            object.__setattr__(self, "layer_profile", tuple(self.layer_profile))
        check_profile(self.layer_profile)
        if self.layer_profile is not None and self.allocation not in ("profile", "auto"):
            raise ConfigError(f"layer_profile applies to allocation='profile' or 'auto', not {self.allocation!r}")
        if not isinstance(self.score_window, bool):
            raise ConfigError(f"score_window must be True or False, got {self.score_window!r}")
        if self.coverage is not None:
            if isinstance(self.coverage, bool) or not isinstance(self.coverage, (int, float)) or not 0 < self.coverage <= 1:
                raise ConfigError(f"coverage must be a share of the attention in (0, 1], got {self.coverage!r}")
            if self.allocation not in ("uniform", "auto"):
                raise ConfigError(f"coverage gives every layer of a request the same self-sized count: it replaces "
                                  f"allocation={self.allocation!r} (use 'uniform' or 'auto')")
        _check_positive_int("coverage_floor", self.coverage_floor, allow_zero=True)
        if self.window_size > self.budget:
            raise ConfigError(
                f"window_size ({self.window_size}) is larger than budget ({self.budget}): the window is always "
                "kept, so the budget must hold it; raise the budget or shrink the window"
            )
