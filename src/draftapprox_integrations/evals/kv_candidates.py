"""SpecKV's candidate selections, as compared by ``draftapprox sweep-kv`` (issue 14's measurement).

Each candidate maps an :class:`~.kv_sweep.Observation` and a budget (entries per layer and KV head, on
average, window included) to kept prompt positions per layer. They share the total KV bytes of the budget
and differ in how keys are scored and where the budget goes:

* ``speckv``: the engine's selection at its default config (max over the window's and the lookahead's
  queries and over each KV group's query heads, max pooling over 15 keys, top-k per KV head);
  ``speckv-k7`` the paper's kernel, ``speckv-mean`` the mean reduction, ``speckv-look`` the lookahead's
  queries only (the window is still kept).
* ``speckv-span``: pooled scores raised to the max over each word/number span, so a span is kept whole.
* ``speckv-shared``: half of the selected keys are chosen for the whole layer (max over its KV heads) and
  kept in every head, the other half per head.
* ``speckv-pyramid``: PyramidKV-style budgets per layer, 1.5x the mean at the bottom to 0.5x at the top.
* ``speckv-global``: Ada-KV-style allocation across layers: scores normalised per layer and head, and one
  threshold over every layer decides how many keys each layer keeps.
* ``snapkv``: the window's queries only (the engine's snapkv), for the baseline.

Candidates that the measurement chose moved into the engine's ``SpecKVConfig``; every one stays here so the
committed table can be re-run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..engine.config import SpecKVConfig
from ..engine.scoring import pool1d
from ..engine.speckv.prefill import kept_tail
from ..engine.layer_profiles import LAYER_PROFILES, profile_shares
from ..engine.speckv.selection import coverage_count, layer_counts, profile_counts, round_to_total, select_all_layers
from .kv_sweep import Candidate, HeadScores, Kept, Observation

DEFAULT = SpecKVConfig(keep_last=None, score_window=True, allocation="uniform")  # where Options-based candidates start


def kv_head_scores(s: HeadScores, kv_heads: int, *, reduction: str = "max", queries: str = "all") -> torch.Tensor:
    """[Hkv, prompt_len] scores: reduced over the chosen queries (``all`` | ``window`` | ``look``) and over
    each KV group's query heads, as ``engine.speckv.selection.observation_key_scores`` does per forward."""
    parts = []
    if queries in ("all", "window") or s.look_max is None:
        parts.append((s.window_max, s.window_sum, s.window_queries))
    if queries in ("all", "look") and s.look_max is not None:
        parts.append((s.look_max, s.look_sum, s.look_queries))
    if reduction == "max":
        per_head = torch.stack([p[0] for p in parts]).amax(dim=0)
    else:
        per_head = sum(p[1] for p in parts) / sum(p[2] for p in parts)
    grouped = per_head.reshape(kv_heads, -1, per_head.shape[-1])
    return grouped.amax(dim=1) if reduction == "max" else grouped.mean(dim=1)


def engine_selection(config: SpecKVConfig = DEFAULT, queries: str | None = None) -> Candidate:
    """The engine's own selection (``engine.speckv.selection.select_all_layers`` with ``config``'s kernel,
    pooling, reduction, kept tail and allocation) on the observed scores."""

    if queries is None:
        queries = "all" if config.score_window else "look"

    def select(obs: Observation, budget: int) -> Kept:
        tail = kept_tail(config, obs.window, queries != "window")
        scores = {
            i: kv_head_scores(s, obs.kv_heads, reduction=config.reduction, queries=queries)[None, :, : obs.prompt_len - tail]
            for i, s in obs.layers.items()
        }
        kept = select_all_layers(
            scores, prompt_len=obs.prompt_len, budget=budget, tail=tail, kernel_size=config.kernel_size,
            pooling=config.pooling, allocation=config.allocation,
        )
        return {i: k[0] for i, k in kept.items()}

    return select


def span_max(scores: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Each score raised to the max over its span: [H, K] scores, [K] span ids."""
    n_spans = int(spans.max()) + 1
    index = spans.expand(scores.shape[0], -1)
    peak = torch.full((scores.shape[0], n_spans), float("-inf"), dtype=scores.dtype)
    peak = peak.scatter_reduce(1, index, scores, reduce="amax", include_self=True)
    return peak.gather(1, index)


@dataclass(frozen=True)
class Options:
    """One candidate: how keys are scored and where the budget goes.

    queries: all | window | look. kernel / pooling / reduction: as ``SpecKVConfig``. span: raise pooled scores
    to their span's max. recent: prompt tokens always kept at the end (the rest of the window competes on
    score; the window's queries still score). share: fraction of each layer's selected keys chosen for the
    whole layer. allocation: uniform | pyramid | global (entries per layer; the total is the budget's)."""

    queries: str = "all"
    kernel: int = DEFAULT.kernel_size
    pooling: str = DEFAULT.pooling
    reduction: str = DEFAULT.reduction
    span: bool = False
    recent: int | None = None
    share: float = 0.0
    allocation: str = "uniform"
    window_share: float = 0.0  # of each layer's selected keys, chosen by the window's queries (the rest: ``queries``)
    coverage: float | None = None  # a self-sizing budget: see ``coverage_counts``; the budget is then its maximum
    cover_min: int = 16  # the fewest selected keys a layer keeps under ``coverage``
    cover_heads: str = "max"  # a layer's count from its heads' counts: max (every head covered) or mean
    cover_sinks: int = 0  # first positions left out of the attention mass (attention sinks; counted as kept)
    cover_layers: str = "each"  # each layer its own count, or "mean": every layer the mean count (a uniform shape)
    profile: str | None = None  # a fixed per-layer share of the budget (``engine.layer_profiles.LAYER_PROFILES``)


def _pooled(obs: Observation, s: HeadScores, o: Options, outside: int) -> torch.Tensor:
    scores = kv_head_scores(s, obs.kv_heads, reduction=o.reduction, queries=o.queries)[:, :outside]
    pooled = pool1d(scores, o.kernel, o.pooling)
    return span_max(pooled, obs.spans[:outside]) if o.span else pooled


def _pick(pooled: torch.Tensor, n: int, share: float) -> torch.Tensor:
    """[Hkv, n] positions: round(share * n) chosen by the layer's max over heads and kept in every head,
    the rest per head among the others."""
    n = min(n, pooled.shape[-1])
    n_shared = int(round(n * share))
    if n_shared == 0:
        return pooled.topk(n, dim=-1).indices
    common = pooled.amax(dim=0).topk(n_shared).indices
    rest = pooled.clone()
    rest[:, common] = float("-inf")
    return torch.cat([common.expand(pooled.shape[0], -1), rest.topk(n - n_shared, dim=-1).indices], dim=-1)


def selection(o: Options = Options()) -> Candidate:
    def select(obs: Observation, budget: int) -> Kept:
        recent = obs.window if o.recent is None else min(o.recent, obs.window)
        outside = obs.prompt_len - recent
        tail = torch.arange(outside, obs.prompt_len).expand(obs.kv_heads, -1)
        layers = sorted(obs.layers)
        pooled = {i: _pooled(obs, obs.layers[i], o, outside) for i in layers}
        if o.coverage is not None:
            counts = coverage_counts(obs, o, outside, budget - recent)
        else:
            counts = _layer_counts(pooled, budget - recent, o)
        kept = {}
        for i in layers:
            if o.window_share:
                window = _pooled(obs, obs.layers[i], replace(o, queries="window"), outside)
                picked = _pick_two(pooled[i], window, counts[i], o.window_share)
            else:
                picked = _pick(pooled[i], counts[i], o.share)
            kept[i] = torch.cat([picked, tail], dim=-1).sort(dim=-1).values
        return kept

    return select


def _pick_two(pooled: torch.Tensor, window: torch.Tensor, n: int, window_share: float) -> torch.Tensor:
    """[Hkv, n] positions: the best ``n - round(window_share * n)`` by ``pooled`` (the lookahead's scores),
    then the window's own best among the others."""
    n = min(n, pooled.shape[-1])
    n_window = int(round(n * window_share))
    first = pooled.topk(n - n_window, dim=-1).indices
    if n_window == 0:
        return first
    rest = window.clone().scatter(-1, first, float("-inf"))
    return torch.cat([first, rest.topk(n_window, dim=-1).indices], dim=-1)


def coverage_counts(obs: Observation, o: Options, outside: int, most: int) -> dict[int, int]:
    """A budget that sizes itself (``engine.speckv.selection.coverage_count``): per layer, the fewest keys per
    KV head whose share of the lookahead's attention mass (with the always-kept tail's) reaches
    ``o.coverage``, between ``o.cover_min`` and ``most``; one count per layer, the most its heads need, or
    (``cover_heads="mean"``) their mean; with ``cover_layers="mean"`` every layer gets the layers' mean count."""
    counts = {}
    tail = obs.prompt_len - outside
    for i, s in obs.layers.items():
        look = s.look_sum if s.look_sum is not None else s.window_sum
        mass = look.reshape(obs.kv_heads, -1, look.shape[-1]).sum(dim=1)  # [Hkv, prompt_len]
        if o.cover_heads == "max":
            counts[i] = coverage_count(mass, tail=tail, coverage=o.coverage, floor=o.cover_min, most=most, sinks=o.cover_sinks)
        else:
            per_head = [coverage_count(m, tail=tail, coverage=o.coverage, floor=0, most=outside, sinks=o.cover_sinks)
                        for m in mass]
            counts[i] = int(min(max(round(sum(per_head) / len(per_head)), o.cover_min), most, outside))
    if o.cover_layers == "mean":  # the request's size from its attention, spread evenly: batches stay uniform
        even = round(sum(counts.values()) / len(counts))
        counts = dict.fromkeys(counts, even)
    return counts


def _layer_counts(pooled: dict[int, torch.Tensor], n: int, o: Options) -> dict[int, int]:
    """Selected keys per layer (besides the recent tokens): n each, a pyramid, a fixed profile, or the
    engine's global split of the total (``engine.speckv.selection.layer_counts``) without its per-layer bound."""
    layers = sorted(pooled)
    if o.profile is not None:  # the engine's split (allocation="profile"); before 4k's held-out rows were done the
        # sweep rounded the unnormalised shares (sum 1.0001), which moved one entry between two layers at 128
        counts = profile_counts(profile_shares(o.profile, len(layers)), n, pooled[layers[0]].shape[-1])
        return dict(zip(layers, counts))
    if o.allocation == "pyramid":  # PyramidKV: 1.5x the mean at the bottom to 0.5x at the top
        width = pooled[layers[0]].shape[-1]
        raw = [min(r, width) for r in (torch.linspace(1.5, 0.5, len(layers)) * n).tolist()]
        return dict(zip(layers, round_to_total(raw, n * len(layers))))
    return dict(zip(layers, layer_counts([pooled[i] for i in layers], n, o.allocation, cap=None)))


# SpecKV's defaults before issue 14: the whole window kept, scored by the window's and the lookahead's queries.
V1 = SpecKVConfig(keep_last=None, score_window=True, allocation="uniform")


def global_counts(obs: Observation, budget: int) -> list[int]:
    """The engine's global allocation at ``budget`` with its defaults (the lookahead's queries, the last 8
    kept): selected keys per layer, in layer order (what a layer profile averages, ``evals.layer_profiles``)."""
    config = SpecKVConfig(allocation="global")
    tail = kept_tail(config, obs.window, True)
    layers = sorted(obs.layers)
    pooled = [pool1d(kv_head_scores(obs.layers[i], obs.kv_heads, reduction=config.reduction, queries="look")
                     [None, :, : obs.prompt_len - tail], config.kernel_size, config.pooling) for i in layers]
    return layer_counts(pooled, budget - tail, "global")


def kept_size(kept: Kept) -> float:
    """Entries kept per layer and KV head, on average over the layers."""
    return sum(k.shape[-1] for k in kept.values()) / len(kept)

CANDIDATES: dict[str, Candidate] = {
    # The engine's selection (SpecKVConfig options), from the settings before issue 14.
    "speckv-v1": engine_selection(V1),
    "speckv-k7": engine_selection(V1.replace(kernel_size=7)),
    "speckv-mean": engine_selection(V1.replace(reduction="mean")),
    "snapkv": engine_selection(V1, queries="window"),
    "speckv-last8": engine_selection(V1.replace(keep_last=8)),
    "speckv-alloc": engine_selection(V1.replace(allocation="global")),
    "speckv-last8-alloc": engine_selection(V1.replace(keep_last=8, allocation="global")),
    "speckv-look-last8": engine_selection(V1.replace(score_window=False, keep_last=8)),
    "speckv-look-last8-alloc": engine_selection(V1.replace(score_window=False, keep_last=8, allocation="global")),
    # Selections the engine does not offer (compared on the tuning split; see the module docstring).
    "speckv-look": selection(Options(queries="look")),
    "speckv-span": selection(Options(span=True)),
    "speckv-shared": selection(Options(share=0.5)),
    "speckv-pyramid": selection(Options(allocation="pyramid")),
    "speckv-global": selection(Options(allocation="global")),
    "speckv-recent8": selection(Options(recent=8)),
    "speckv-recent16": selection(Options(recent=16)),
    "speckv-recent8-global": selection(Options(recent=8, allocation="global")),
    "speckv-recent8-span": selection(Options(recent=8, span=True)),
    "speckv-recent8-span-global": selection(Options(recent=8, span=True, allocation="global")),
    "speckv-recent8-span-shared": selection(Options(recent=8, span=True, share=0.5)),
    "speckv-span-global": selection(Options(span=True, allocation="global")),
    "speckv-look-recent8": selection(Options(queries="look", recent=8)),
    "speckv-look-global": selection(Options(queries="look", allocation="global")),
    "speckv-look-recent8-global": selection(Options(queries="look", recent=8, allocation="global")),
    # Issue 23: the window's own selection beside the lookahead's, and budgets that size themselves (the
    # budget given is then their maximum; a row's "kept" says what each used).
    "speckv-look-last8-win25": selection(Options(queries="look", recent=8, window_share=0.25)),
    "speckv-look-last8-win50": selection(Options(queries="look", recent=8, window_share=0.5)),
    "speckv-cov80": selection(Options(queries="look", recent=8, coverage=0.8)),
    "speckv-cov90": selection(Options(queries="look", recent=8, coverage=0.9)),
    "speckv-cov95": selection(Options(queries="look", recent=8, coverage=0.95)),
    "speckv-cov90-mean": selection(Options(queries="look", recent=8, coverage=0.9, cover_heads="mean")),
    # ... with the first 4 positions (attention sinks) out of the mass: "-s" (see coverage_count).
    **{f"speckv-cov{round(c * 100)}s": selection(Options(queries="look", recent=8, coverage=c, cover_sinks=4))
       for c in (0.3, 0.5, 0.7, 0.8, 0.9)},
    # ... and one size per request, every layer alike (the layers' mean count): "-su".
    **{f"speckv-cov{round(c * 100)}su": selection(Options(queries="look", recent=8, coverage=c, cover_sinks=4,
                                                          cover_layers="mean"))
       for c in (0.5, 0.6, 0.7, 0.8)},
}
# A fixed per-layer profile, for each model that has one (learned offline: ``engine.layer_profiles``).
CANDIDATES.update({
    f"speckv-look-last8-profile-{name}": selection(Options(queries="look", recent=8, profile=name)) for name in LAYER_PROFILES
})
