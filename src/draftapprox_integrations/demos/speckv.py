"""Demo: SpecKV answers a question over a long document from a small KV cache, next to full KV."""

from __future__ import annotations

import sys

from ..engine.config import SpecKVConfig


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run_speckv_demo(
    engine,
    document: str,
    question: str,
    *,
    budget: int = 128,
    max_new_tokens: int = 32,
    compare_full: bool = True,
    stream=None,
) -> None:
    """Answer ``question`` over ``document`` with SpecKV (``budget`` KV entries per layer and head), streaming the
    answer, then print the KV memory kept versus full and the timings; with ``compare_full``, the full-KV answer too."""
    out = stream or sys.stdout
    engine.load()  # load before printing, so loading messages do not interleave with the streamed answer
    config = SpecKVConfig(budget=budget, window_size=min(32, budget))
    messages = [{"role": "user", "content": f"{document}\n\nQuestion: {question}\nAnswer briefly."}]
    print(f"\n== SpecKV: {engine.draft_source.name} drafts, {engine.target_source.name} answers "
          f"from {budget} KV entries per layer and head ==", file=out)
    print(f"Q: {question}", file=out)
    print("A (speckv): ", end="", file=out, flush=True)
    stats = None
    for chunk in engine.stream(messages, method="speckv", config=config, max_new_tokens=max_new_tokens, stop=["\n\n"]):
        print(chunk.text, end="", file=out, flush=True)
        stats = chunk.stats or stats
    print(file=out)
    print(f"   draft's lookahead: {stats.lookahead_text.strip()!r}", file=out)
    print(
        f"   KV cache: {stats.kv_entries_kept} of {stats.kv_entries_full} prompt entries per layer and head, "
        f"{_mib(stats.kv_bytes_kept)} of {_mib(stats.kv_bytes_full)} ({100 * stats.kv_fraction_kept:.1f}% kept)",
        file=out,
    )
    print(
        f"   time: draft {stats.draft_seconds:.2f}s, first token {stats.prefill_seconds:.2f}s, "
        f"decode {stats.decode_seconds:.2f}s ({stats.completion_tokens} tokens), total {stats.total_seconds:.2f}s",
        file=out,
    )
    if stats.note:
        print(f"   note: {stats.note}", file=out)
    if compare_full:
        full = engine.generate(messages, method="full", max_new_tokens=max_new_tokens, stop=["\n\n"])
        print(f"A (full KV): {full.text.strip()}", file=out)
        print(
            f"   KV cache: {_mib(full.stats.kv_bytes_kept)}; first token {full.stats.prefill_seconds:.2f}s, "
            f"total {full.stats.total_seconds:.2f}s",
            file=out,
        )
