"""Learning a layer profile (``SpecKVConfig(allocation="profile")``, ``engine.layer_profiles``) from a sweep.

The global allocation moves entries between layers per request; a profile is its mean over a tuning split,
frozen per model. ``draftapprox sweep-kv --learn-profile NAME`` prints the profile of a run's rows (each "full"
row records the global allocation's per-layer counts of its sample); it is pasted into
``engine.layer_profiles.LAYER_PROFILES``, or passed as ``SpecKVConfig(layer_profile=(...))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def learn_profile(rows: Sequence[dict[str, Any]], budget: int) -> tuple[float, ...]:
    """The mean per-layer share of the global allocation's counts at ``budget`` over the rows that recorded
    them (the sweep's "full" rows), rounded to 4 decimals."""
    found = [r["global_counts"][str(budget)] for r in rows if r.get("method") == "full" and str(budget) in (r.get("global_counts") or {})]
    if not found:
        raise ValueError(f"no row recorded the global allocation's counts at budget {budget}")
    layers = len(found[0])
    shares = [sum(counts[i] / sum(counts) for counts in found) / len(found) for i in range(layers)]
    total = sum(shares)
    return tuple(round(s / total, 4) for s in shares)
