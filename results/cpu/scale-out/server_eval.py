"""SpecPC in front of a real OpenAI-compatible server: accuracy and the server's prompt tokens when it reads
the full context, SpecPC's 10% (the default 1-token lookahead), and SpecPC's 10% scored with the draft's
answer as the lookahead (``lookahead_tokens=32``: the draft writes up to 32 tokens greedily, EOS ends it).

The server is `transformers serve` on the embedded SmolLM2 (converted safetensors folder, float32, one OpenMP
thread), started on 127.0.0.1 and stopped at the end. Each prompt is the evals' own chat prompt (the
target's chat template, the assistant turn started with the answer prefix), sent to /v1/completions, so
the server reads exactly what `draftapprox eval` gives the local target. Scores: evals.scoring.

    PYTHONPATH=src:. python results/cpu/scale-out/server_eval.py --lengths 2048 4096 --samples 4 \
        --out results/cpu/scale-out/server-eval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import openai

from draftapprox_integrations import DraftApproxEngine
from draftapprox_integrations.engine.loading import converted_folder, load_tokenizer, resolve_reference
from draftapprox_integrations.evals.scoring import score_prediction
from draftapprox_integrations.evals.tasks import generate_samples

from tests.integration.serving.server import transformers_serve

MODEL = "smollm2-135m-instruct"
TASKS = ["niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt"]
VARIANTS = {"full": None, "specpc-10%": 1, "specpc-10%-answer": 32}  # name -> lookahead_tokens


def run(args) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = {(r["id"], r["variant"]) for r in map(json.loads, rows_path.read_text().splitlines())} if rows_path.exists() else set()
    tokenizer = load_tokenizer(MODEL)
    samples = generate_samples(args.tasks, args.lengths, args.samples, tokenizer, seed=args.seed)
    draft = DraftApproxEngine(MODEL, None, device="cpu")
    with transformers_serve(converted_folder(resolve_reference(MODEL)), out / "server.log") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0, timeout=600)
        with rows_path.open("a") as sink:
            for sample in samples:
                for variant, lookahead in VARIANTS.items():
                    if (sample.id, variant) in done:
                        continue
                    row = {"id": sample.id, "task": sample.task, "length": sample.target_length, "variant": variant}
                    context = None
                    if lookahead is not None:
                        comp = draft.compress(sample.context, sample.question, rate=args.rate, lookahead_tokens=lookahead)
                        context = comp.text
                        row.update(draft_original_tokens=comp.original_tokens, draft_compressed_tokens=comp.compressed_tokens,
                                   compress_seconds=round(comp.seconds, 3), lookahead_text=comp.lookahead_text)
                    started = time.perf_counter()
                    reply = client.completions.create(
                        model=server.model, prompt=sample.chat_prompt(tokenizer, context),
                        max_tokens=sample.max_new_tokens, temperature=0,
                    )
                    text = reply.choices[0].text
                    row.update(server_prompt_tokens=reply.usage.prompt_tokens, server_seconds=round(time.perf_counter() - started, 3),
                               answer=text, expected=sample.answers, score=score_prediction(text, sample.answers, sample.match))
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    print(sample.id, variant, row["score"], row["server_prompt_tokens"], flush=True)
    return [json.loads(line) for line in rows_path.read_text().splitlines()]


def summarise(rows: list[dict], out: Path, command: str) -> None:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["length"], r["variant"]), []).append(r)
    table = ["| length | variant | n | accuracy % | server prompt tokens (mean) | draft tokens kept / original (mean) |", "|---:|---|---:|---:|---:|---:|"]
    summary = []
    for (length, variant), group in sorted(cells.items()):
        n = len(group)
        acc = 100 * sum(r["score"] for r in group) / n
        prompt = sum(r["server_prompt_tokens"] for r in group) / n
        kept = (f"{sum(r['draft_compressed_tokens'] for r in group) / n:.0f} / {sum(r['draft_original_tokens'] for r in group) / n:.0f}"
                if "draft_compressed_tokens" in group[0] else "-")
        table.append(f"| {length} | {variant} | {n} | {acc:.1f} | {prompt:.0f} | {kept} |")
        summary.append({"length": length, "variant": variant, "n": n, "accuracy": round(acc, 2), "server_prompt_tokens_mean": round(prompt, 1)})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(
        "# SpecPC in front of a real server (transformers serve, SmolLM2-135M-Instruct answering)\n\n"
        f"Command: `{command}`\n\n"
        "Machine: 2-core CPU (shared with other jobs), no GPU, torch 2.13.0 CPU, transformers 5.24.0. Draft: SmolLM2 "
        "(dtype auto) beside the client; server: float32, OMP_NUM_THREADS=1. Tasks: " + ", ".join(TASKS) + "; "
        "n = samples per cell (tasks pooled). Per-task rows: rows.jsonl.\n\n" + "\n".join(table) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[2048, 4096])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/cpu/scale-out/server-eval")
    args = parser.parse_args()
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its server (finally)
    rows = run(args)

    summarise(rows, Path(args.out), "PYTHONPATH=src:. python " + " ".join(["results/cpu/scale-out/server_eval.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
