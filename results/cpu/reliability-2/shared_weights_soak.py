"""Two (three) engines over one set of weights, from 4 threads for 60 s, every call against its solo result.

FINDINGS-2 D1: layer-wise eviction hooks on the shared model fired for every thread's forward. Here, in
float32 (equality is exact), SmolLM2's weights are held once and used by three engines at the same time:
  * a draft-only engine (SpecPC compression, as a SpecPCCompressor gets),
  * SmolLM2 as its own draft (SnapKV and self-draft SpecKV),
  * Gemma-3-270M drafting for SmolLM2 (two-model SpecKV and the SpecKV-PC cascade).
Run from the project root: .venv/bin/python results/cpu/reliability-2/shared_weights_soak.py [SECONDS]
"""

import collections
import sys
import threading
import time

from draftapprox_integrations import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.demos.document import station_report

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
report, question, _ = station_report()
sections = report.split("\n\n")
prompt = "\n\n".join(sections[:5]) + "\n\nQuestion: " + question
cfg = SpecKVConfig(budget=64, lookahead_tokens=8)

compressor = DraftApproxEngine("smollm2-135m-instruct", None, device="cpu", dtype="float32").load()
self_draft = DraftApproxEngine("smollm2-135m-instruct", "smollm2-135m-instruct", device="cpu", dtype="float32").load()
two_models = DraftApproxEngine("gemma-3-270m", "smollm2-135m-instruct", device="cpu", dtype="float32").load()
assert compressor.draft.model is self_draft.target.model is two_models.target.model  # one copy of the weights

calls = {
    "specpc (draft-only engine)": lambda: compressor.compress(sections[:5], question, rate=0.1).text,
    "snapkv (self-draft engine)": lambda: self_draft.generate(prompt, method="snapkv", config=cfg, max_new_tokens=8).token_ids,
    "speckv (self-draft engine)": lambda: self_draft.generate(prompt, config=cfg, max_new_tokens=8).token_ids,
    "speckv (gemma -> smollm2)": lambda: two_models.generate(prompt, config=cfg, max_new_tokens=8).token_ids,
    "speckv-pc (gemma -> smollm2)": lambda: two_models.generate(prompt, method="speckv-pc", prompt_budget=300, config=cfg,
                                                                 max_new_tokens=8).token_ids,
}
solo = {name: call() for name, call in calls.items()}
counts: collections.Counter = collections.Counter()
stop_at = time.monotonic() + SECONDS
names = list(calls)


def worker(offset: int) -> None:
    i = offset
    while time.monotonic() < stop_at:
        name = names[i % len(names)]
        i += 1
        try:
            counts[(name, "equal" if calls[name]() == solo[name] else "DIFFERENT")] += 1
        except Exception as exc:
            counts[(name, f"error {type(exc).__name__}: {exc}"[:120])] += 1


threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
started = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"4 threads, {time.monotonic() - started:.0f} s, float32, one copy of SmolLM2's weights in 3 engines:")
for (name, outcome), n in sorted(counts.items()):
    print(f"  {name}: {n} {outcome}")
print("every call equal to its solo result:", all(outcome == "equal" for (_, outcome) in counts))
