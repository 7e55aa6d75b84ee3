"""Cheaper SpecPC passes against the default, by how often the compressed text (10% of the context's draft
tokens) still holds every answer of the evals' tasks. Compression only (no target); the rows that win are then
checked with the target answering (server_eval.py). No timing here: see compress_timing.py for that.

    PYTHONPATH=src python results/cpu/scale-out/specpc_variants.py --lengths 2048 --samples 2 \
        --out results/cpu/scale-out/specpc-variants
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from draftapprox_integrations import DraftApproxEngine
from draftapprox_integrations.evals.tasks import generate_samples

MODEL = "smollm2-135m-instruct"
TASKS = ["niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt"]
# name -> (SpecPCConfig overrides, share of the draft's 30 layers its forward runs)
VARIANTS = {
    "default (lookahead 1, layers 12-29)": ({}, "30/30 + 1 token"),
    "no lookahead, layers 12-29": ({"lookahead_tokens": 0}, "30/30"),
    "no lookahead, layers 12-20": ({"lookahead_tokens": 0, "ending_layer_index": 20}, "21/30"),
    "no lookahead, layers 8-16": ({"lookahead_tokens": 0, "starting_layer_index": 8, "ending_layer_index": 16}, "17/30"),
    "no lookahead, layers 6-12": ({"lookahead_tokens": 0, "starting_layer_index": 6, "ending_layer_index": 12}, "13/30"),
}


def kept(text: str, answers: list[str]) -> float:
    return sum(a.lower() in text.lower() for a in answers) / len(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[2048, 4096])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--out", default="results/cpu/scale-out/specpc-variants")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = DraftApproxEngine(MODEL, None, device="cpu").load()
    samples = generate_samples(TASKS, args.lengths, args.samples, engine.draft.tokenizer)
    rows = []
    for sample in samples:
        for name, (overrides, _) in VARIANTS.items():
            comp = engine.compress(sample.context, sample.question, rate=args.rate, **overrides)
            rows.append({"id": sample.id, "task": sample.task, "length": sample.target_length, "variant": name,
                         "answer_kept": kept(comp.text, sample.answers), "compressed_tokens": comp.compressed_tokens,
                         "original_tokens": comp.original_tokens})
            print(json.dumps(rows[-1]), flush=True)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = ["| variant | draft layers run | " + " | ".join(f"{n} answer kept % (n)" for n in args.lengths) + " |",
             "|---|---|" + "---:|" * len(args.lengths)]
    for name, (_, share) in VARIANTS.items():
        cells = []
        for length in args.lengths:
            group = [r["answer_kept"] for r in rows if r["variant"] == name and r["length"] == length]
            cells.append(f"{100 * sum(group) / len(group):.1f} ({len(group)})")
        table.append(f"| {name} | {share} | " + " | ".join(cells) + " |")
    command = "PYTHONPATH=src python results/cpu/scale-out/specpc_variants.py " + " ".join(sys.argv[1:])
    (out / "results.md").write_text(
        "# SpecPC variants: answers kept in the 10% text\n\n"
        f"Command: `{command}`\n\nMachine: 2-core CPU (shared), no GPU, torch 2.13.0 CPU, transformers 5.24.0; draft "
        "SmolLM2-135M-Instruct (dtype auto). Tasks: " + ", ".join(TASKS) + f" ({args.samples} samples each, pooled: "
        "n per cell in brackets). A cell is the mean fraction of a sample's answers found in the compressed text.\n\n"
        + "\n".join(table) + "\n"
    )


if __name__ == "__main__":
    main()
