"""What a grammar costs per decode step: constrained against free decoding of the same rows, in one run.

    python -m draftapprox_integrations.evals.mask_bench [--model smollm2-135m-instruct] [--rounds 5] [--out DIR]

Each round decodes the same prompts free and under a JSON schema (alternating, so a busy machine slows both
alike), ``rows`` at a time in one batch, and reads each answer's decode seconds per token from its stats; it
also times the two parts of the mask alone: the host's matcher step (consume a token, fill the next bitmask)
and the device's masked fill of a batch's logits. A figure, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ..engine import DraftApproxEngine, JsonSchema
from ..engine.constraints import check_constraint
from ..engine.grammar import RowGrammar, mask_logits, unpack_bits
from ..engine.prompts import eos_token_ids

SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 60},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 6},
    "year": {"type": "integer", "minimum": 1900, "maximum": 2100}}, "required": ["title", "tags", "year"]}
PROMPTS = ["Describe a film you like as JSON.", "Describe a book about the sea as JSON.",
           "Describe a song about rain as JSON.", "Describe a painting of a harbour as JSON."]


def per_token(results) -> list[float]:
    return [r.stats.decode_seconds / max(1, r.stats.completion_tokens - 1) for r in results]


def run(model: str, rounds: int, rows: int, max_new_tokens: int) -> dict:
    engine = DraftApproxEngine(model, model, device="cpu")
    prompts = PROMPTS[:rows]
    engine.generate_batch(prompts, method="full", max_new_tokens=4, constraint=JsonSchema(SCHEMA))  # warm (and compile)
    free, constrained = [], []
    for _ in range(rounds):
        free += per_token(engine.generate_batch(prompts, method="full", max_new_tokens=max_new_tokens))
        constrained += per_token(engine.generate_batch(prompts, method="full", max_new_tokens=max_new_tokens,
                                                       constraint=JsonSchema(SCHEMA)))
    target = engine.target
    vocab = target.model.config.vocab_size
    row = RowGrammar.start(check_constraint(JsonSchema(SCHEMA)), target.tokenizer, vocab, eos_token_ids(target))
    text_ids = target.tokenizer('{"title": "A quiet harbour at dawn", "tags": ["sea", "boats"], "year": 1999}',
                                add_special_tokens=False)["input_ids"]
    started = time.perf_counter()
    for token in text_ids:
        row.advance(token)
    host = (time.perf_counter() - started) / len(text_ids)
    logits, masks, bits = torch.randn(rows, vocab), row.mask[None].repeat(rows, 1), unpack_bits("cpu")
    started = time.perf_counter()
    for _ in range(50):
        mask_logits(logits, masks, bits)
    device = (time.perf_counter() - started) / 50
    mean_free, mean_con = statistics.mean(free), statistics.mean(constrained)
    return {
        "model": model, "rows": rows, "rounds": rounds, "max_new_tokens": max_new_tokens, "n_answers_each": len(free),
        "free_ms_per_token": round(1e3 * mean_free, 2), "free_sd": round(1e3 * statistics.stdev(free), 2),
        "constrained_ms_per_token": round(1e3 * mean_con, 2), "constrained_sd": round(1e3 * statistics.stdev(constrained), 2),
        "ratio": round(mean_con / mean_free, 3),
        "matcher_ms_per_token": round(1e3 * host, 3), "masked_fill_ms_per_step": round(1e3 * device, 3),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=None, help="write results.json there")
    args = parser.parse_args()
    result = run(args.model, args.rounds, args.rows, args.max_new_tokens)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
