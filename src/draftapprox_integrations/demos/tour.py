"""The `draftapprox demo` tour: one long document, one question, SpecPC's cut and SpecKV's cache."""

from __future__ import annotations

import sys
import time

from .document import station_report
from .specpc import run_specpc_demo
from .speckv import run_speckv_demo


def run_tour(engine, *, seed: int = 7, rate: float = 0.1, budget: int = 128, stream=None) -> None:
    out = stream or sys.stdout
    document, question, answer = station_report(seed)
    started = time.perf_counter()
    engine.load()
    info = engine.describe()
    print(
        f"engine: draft {info['draft']}, target {info['target']} on {info['device']} ({info['dtype']}); "
        f"loaded in {time.perf_counter() - started:.1f}s",
        file=out,
    )
    print(f"document: {len(document)} characters; expected answer: {answer}\n", file=out)

    print("== SpecPC: the draft's attention picks the text worth keeping ==", file=out)
    compressed = run_specpc_demo(engine, document, question, rate=rate, stream=out)
    reply = engine.generate(
        [{"role": "user", "content": f"{compressed.text}\n\nQuestion: {question}\nAnswer briefly."}],
        method="full",
        max_new_tokens=32,
        stop=["\n\n"],
    )
    print(f"\nA ({info['target']}, reading only the compressed text): {reply.text.strip()}", file=out)
    print(
        f"   prompt {reply.stats.prompt_tokens} target tokens; first token {reply.stats.prefill_seconds:.2f}s",
        file=out,
    )

    run_speckv_demo(engine, document, question, budget=budget, stream=out)
    print(f"\nexpected answer: {answer}", file=out)
