"""Throughput of the engine's loop: a batch of requests decoded together against the same requests one by one.

For each context length and batch size b, b different prompts of that length (haystack samples whose
instruction asks to copy text, so that answers run to ``max_new_tokens`` rather than stopping after a few
tokens) are answered twice in the same run: one ``engine.generate`` after another, then all at once with
``engine.generate_batch``. Reported per cell:

* end-to-end throughput: generated tokens / wall seconds, sequential and batched, and their ratio;
* decode throughput: tokens after the first / seconds of decoding. Batched rows all start decoding at the
  same step (every prefill runs first), so the batch's decode time is its slowest row's; one by one, it is
  the sum over rows. ``decode_speedup`` is batched over sequential.

Every number comes from one run, on one machine: compare them as ratios.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

COPY_INSTRUCTION = "Copy the first five sentences of the text above, word for word."


def copy_prompts(tokenizer, length: int, count: int, *, seed: int = 0) -> list[str]:
    """``count`` different chat prompts of about ``length`` tokens that ask for a long answer."""
    from .tasks import make_sample

    prompts = []
    for index in range(count):
        sample = make_sample("niah_single", length, tokenizer, seed=seed, index=index)
        messages = [{"role": "user", "content": f"{sample.context}\n\n{COPY_INSTRUCTION}"}]
        if getattr(tokenizer, "chat_template", None):
            prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        else:
            prompts.append(messages[0]["content"])
    return prompts


def _decode_tokens(results) -> int:
    return sum(max(r.stats.completion_tokens - 1, 0) for r in results)


def measure_throughput(engine, prompts: Sequence[str], **generate_kwargs: Any) -> dict[str, Any]:
    """The same prompts one by one, then as one batch (same run): tokens, seconds and tokens/s of both."""
    kwargs = dict(generate_kwargs, chat=False, temperature=0.0)
    started = time.perf_counter()
    sequential = [engine.generate(p, **kwargs) for p in prompts]
    sequential_seconds = time.perf_counter() - started
    started = time.perf_counter()
    batched = engine.generate_batch(list(prompts), **kwargs)
    batched_seconds = time.perf_counter() - started
    seq_tokens = sum(r.stats.completion_tokens for r in sequential)
    batch_tokens = sum(r.stats.completion_tokens for r in batched)
    seq_decode = sum(r.stats.decode_seconds for r in sequential)
    batch_decode = max(r.stats.decode_seconds for r in batched)
    row = {
        "batch_size": len(prompts),
        "same_answers": [r.token_ids for r in sequential] == [r.token_ids for r in batched],
        "sequential_seconds": round(sequential_seconds, 3),
        "batched_seconds": round(batched_seconds, 3),
        "sequential_tokens": seq_tokens,
        "batched_tokens": batch_tokens,
        "sequential_tokens_per_second": round(seq_tokens / sequential_seconds, 3),
        "batched_tokens_per_second": round(batch_tokens / batched_seconds, 3),
        "sequential_decode_tokens_per_second": round(_decode_tokens(sequential) / max(seq_decode, 1e-9), 3),
        "batched_decode_tokens_per_second": round(_decode_tokens(batched) / max(batch_decode, 1e-9), 3),
        "kv_bytes_kept_per_row": batched[0].stats.kv_bytes_kept,
        "kv_bytes_peak_per_row": max(r.stats.kv_bytes_peak for r in batched),
    }
    row["end_to_end_speedup"] = round(row["batched_tokens_per_second"] / row["sequential_tokens_per_second"], 3)
    row["decode_speedup"] = round(row["batched_decode_tokens_per_second"] / max(row["sequential_decode_tokens_per_second"], 1e-9), 3)
    return row


def run_throughput(engine, *, lengths: Sequence[int], batch_sizes: Sequence[int], methods: Sequence[str], budget: int,
                   max_new_tokens: int, seed: int = 0, progress=None) -> list[dict[str, Any]]:
    """Every (method, length, batch size) cell of :func:`measure_throughput` on ``engine``."""
    rows = []
    tokenizer = engine.target.tokenizer
    for length in lengths:
        prompts = copy_prompts(tokenizer, length, max(batch_sizes), seed=seed)
        for method in methods:
            for size in batch_sizes:
                kwargs = dict(method=method, max_new_tokens=max_new_tokens)
                if method != "full":
                    kwargs["budget"] = budget
                row = measure_throughput(engine, prompts[:size], **kwargs)
                row.update(method=method, length=length, budget=budget if method != "full" else None)
                rows.append(row)
                if progress:
                    progress(row)
    return rows


def throughput_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A markdown table of :func:`run_throughput`'s rows."""
    lines = [
        "| method | length | batch | sequential tok/s | batched tok/s | end-to-end x | decode tok/s, one by one | decode tok/s, batched | decode x | same answers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['length']} | {r['batch_size']} | {r['sequential_tokens_per_second']:.2f} | "
            f"{r['batched_tokens_per_second']:.2f} | {r['end_to_end_speedup']:.2f} | "
            f"{r['sequential_decode_tokens_per_second']:.2f} | {r['batched_decode_tokens_per_second']:.2f} | "
            f"{r['decode_speedup']:.2f} | {'yes' if r['same_answers'] else 'no'} |"
        )
    return lines
