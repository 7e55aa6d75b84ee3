"""Compression time per 1k context tokens: SpecPC (default 1-token lookahead; no lookahead; no lookahead with
the draft stopped after layer 20 or 12; the draft's answer of up to 32 tokens) against the LLMLingua-style perplexity token drop of evals/baselines.py, same draft
(SmolLM2-135M), same contexts (the evals' niah_single samples), budget = 10% of the context's draft tokens.

TIMING: run it on quiet cores only (nothing else running), and compare the figures as ratios within one run:

    OMP_NUM_THREADS=2 PYTHONPATH=src python results/cpu/scale-out/compress_timing.py --dtype float32 \
        --lengths 1024 2048 4096 --repeats 3 --out results/cpu/scale-out/compress-timing.json

Each point: one warm-up call, then ``repeats`` timed calls; wall and process CPU seconds, median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import transformers

from draftapprox_integrations import DraftApproxEngine
from draftapprox_integrations.evals.baselines import perplexity_token_drop
from draftapprox_integrations.evals.tasks import generate_samples

MODEL = "smollm2-135m-instruct"


def _timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default="results/cpu/scale-out/compress-timing.json")
    args = parser.parse_args()
    engine = DraftApproxEngine(MODEL, None, device="cpu", dtype=args.dtype).load()
    draft = engine.draft
    rows = []
    for length in args.lengths:
        (sample,) = generate_samples(["niah_single"], [length], 1, draft.tokenizer)
        n = len(draft.tokenizer(sample.context, add_special_tokens=False)["input_ids"])
        budget = max(1, n // 10)
        variants = {
            "specpc (lookahead 1)": lambda: engine.compress(sample.context, sample.question, budget=budget),
            "specpc (no lookahead)": lambda: engine.compress(sample.context, sample.question, budget=budget, lookahead_tokens=0),
            "specpc (no lookahead, layers 12-20: stops at 21/30)": lambda: engine.compress(
                sample.context, sample.question, budget=budget, lookahead_tokens=0, ending_layer_index=20),
            "specpc (no lookahead, layers 6-12: stops at 13/30)": lambda: engine.compress(
                sample.context, sample.question, budget=budget, lookahead_tokens=0, starting_layer_index=6, ending_layer_index=12),
            "specpc (answer, 32)": lambda: engine.compress(sample.context, sample.question, budget=budget, lookahead_tokens=32),
            "perplexity (LLMLingua-style)": lambda: perplexity_token_drop(sample.context, budget, draft, query=sample.question),
        }
        for name, fn in variants.items():
            wall, cpu = _timed(fn, args.repeats)
            rows.append({"length": length, "context_tokens": n, "method": name, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                         "wall_s_per_1k": round(1000 * wall / n, 3), "cpu_s_per_1k": round(1000 * cpu / n, 3)})
            print(json.dumps(rows[-1]), flush=True)
    base = {r["length"]: r["wall_s"] for r in rows if r["method"].startswith("perplexity")}
    for r in rows:
        r["ratio_to_perplexity"] = round(r["wall_s"] / base[r["length"]], 3)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
               "transformers": transformers.__version__, "dtype": args.dtype, "threads": torch.get_num_threads()}
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "repeats": args.repeats, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
