"""Fixed per-layer shares of a SpecKV budget, learned offline (issue 23's "layer profile" candidate).

The global allocation (``SpecKVConfig(allocation="global")``) moves entries between layers per request, from
that request's scores. A profile is its average over a tuning split, frozen per model: every request of the
model then keeps the same number of entries per layer, so its gain (if it holds) comes without per-request
shapes. ``draftapprox sweep-kv --learn-profile NAME`` prints the profile of a tuning run's rows (each "full"
row records the global allocation's per-layer counts of its sample); it is pasted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# model -> share of the selected keys (besides the kept tail) per layer, in layer order; the shares sum to 1.
LAYER_PROFILES: dict[str, tuple[float, ...]] = {}


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
