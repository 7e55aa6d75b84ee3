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

# name -> share of the selected keys (besides the kept tail) per layer, in layer order; the shares sum to 1.
# SmolLM2-135M-Instruct (30 layers), learned at budgets 64 and 128 from 28 tuning samples (seed 102: seven
# families at 2k and 4k, results/cpu/speckv-quality/round2/profile-seed102):
#   draftapprox sweep-kv --learn-profile smollm2 --budgets 64 128 --out results/cpu/speckv-quality/round2/profile-seed102
LAYER_PROFILES: dict[str, tuple[float, ...]] = {
    "smollm2-b64": (0.0269, 0.0227, 0.0395, 0.0366, 0.0371, 0.0339, 0.0307, 0.0341, 0.0382, 0.0369, 0.0337, 0.0282,
                    0.029, 0.0226, 0.0401, 0.0368, 0.0276, 0.0401, 0.0411, 0.0247, 0.0378, 0.0418, 0.0398, 0.0457,
                    0.0375, 0.021, 0.0313, 0.0263, 0.028, 0.0304),
    "smollm2-b128": (0.0343, 0.0342, 0.0457, 0.0533, 0.0508, 0.0434, 0.037, 0.0411, 0.04, 0.0427, 0.0455, 0.0355,
                     0.0212, 0.0165, 0.0293, 0.0314, 0.02, 0.0355, 0.0295, 0.0191, 0.0319, 0.0348, 0.0321, 0.039,
                     0.0386, 0.0155, 0.0281, 0.0219, 0.0245, 0.0276),
}


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
