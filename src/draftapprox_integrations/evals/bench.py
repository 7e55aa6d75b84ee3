"""Cost as context grows: time to first token, latency, decode speed, peak memory, KV bytes, compression time.

For each model pair, context length and method (full, snapkv, speckv, specpc, speckv-pc) one prompt (a
single-needle sample of that length, in the target's tokenizer) is answered with a fixed number of new
tokens. Timings come from ``engine.stream`` (first chunk = first token) and the method's
``GenerationStats``; peak memory is the process RSS sampled by a thread on the CPU, or
``torch.cuda.max_memory_allocated`` on a GPU.

Pairs are real models (``smollm2``: SmolLM2-135M as draft and target) or Llama/Qwen-shaped models with
**random weights** built from a config (``qwen2.5-0.5b:qwen2.5-1.5b``), for cost at sizes we have no weights
for. Random-weight results are labelled so in the JSON and on every figure and never measure quality.
They use the SmolLM2 tokenizer (49,152 tokens), so their embedding and LM head are smaller than the real
models' (151k / 128k vocabularies); everything else has the real shape.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.errors import ConfigError
from .extras import BENCH_MODULES, require
from .machine import PeakRSS, machine_info
from .methods import BENCH_METHODS, eval_method, stats_dict
from .random_models import RANDOM_SHAPES, SMOLLM2, random_model_folder
from .report import bench_summary_lines as summary_lines
from .report import plot_bench

logger = logging.getLogger(__name__)

REAL_PAIRS = {"smollm2": (SMOLLM2, SMOLLM2)}

# Small enough for a 2-core CPU in a few minutes.
DEFAULT_BENCH = dict(pairs=("smollm2",), lengths=(1024, 2048, 4096), budget=256, max_new_tokens=32)
# The larger CPU grid behind the committed figures (random 0.5B -> 1.5B). The GPU grid is evals.gpu_bench.
LARGE_BENCH_CPU = dict(pairs=("smollm2", "qwen2.5-0.5b:qwen2.5-1.5b"), lengths=(1024, 2048, 4096), budget=256, max_new_tokens=32)


@dataclass
class BenchConfig:
    pairs: Sequence[str] = DEFAULT_BENCH["pairs"]
    lengths: Sequence[int] = DEFAULT_BENCH["lengths"]
    methods: Sequence[str] = BENCH_METHODS
    budget: int = DEFAULT_BENCH["budget"]
    pc_prompt_factor: float = 2.0
    max_new_tokens: int = DEFAULT_BENCH["max_new_tokens"]
    repeats: int = 1
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    output_dir: str = "draftapprox-results/bench"

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in BENCH_METHODS]
        if bad or not self.methods:
            raise ConfigError(f"unknown bench method(s) {bad}; choose from {', '.join(BENCH_METHODS)}")
        for p in self.pairs:
            parse_pair(p)
        if self.budget < 1 or self.max_new_tokens < 1 or self.repeats < 1:
            raise ConfigError("budget, max_new_tokens and repeats must be >= 1")


@dataclass(frozen=True)
class Pair:
    label: str
    draft: str  # reference (alias) or shape name
    target: str
    random_weights: bool


def parse_pair(text: str) -> Pair:
    """``smollm2`` (real weights) or ``DRAFT_SHAPE:TARGET_SHAPE`` of :data:`RANDOM_SHAPES` (random weights)."""
    if text in REAL_PAIRS:
        d, t = REAL_PAIRS[text]
        return Pair(text, d, t, False)
    if ":" in text:
        d, t = text.split(":", 1)
        unknown = [s for s in (d, t) if s not in RANDOM_SHAPES]
        if not unknown:
            return Pair(f"{d}_to_{t}_random", d, t, True)
    raise ConfigError(
        f"unknown bench pair {text!r}: use one of {', '.join(REAL_PAIRS)} (real weights) or "
        f"DRAFT:TARGET with shapes from {', '.join(RANDOM_SHAPES)} (random weights)"
    )


# ------------------------------------------------------------------------------------------------
# measurement


def _stream_timed(engine, prompt: str, **kwargs) -> tuple[float, float, Any, int, float]:
    """(seconds to first chunk, total seconds, final stats, chunks, process CPU seconds to first chunk)."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    first = None
    first_cpu = None
    stats = None
    chunks = 0
    for chunk in engine.stream(prompt, **kwargs):
        if first is None:
            first = time.perf_counter() - started
            first_cpu = time.process_time() - cpu_started
        chunks += 1
        if chunk.stats is not None:
            stats = chunk.stats
    total = time.perf_counter() - started
    if first is None:
        first, first_cpu = total, time.process_time() - cpu_started
    return first, total, stats, chunks, first_cpu


def measure(engine, prompt: str, context: str, question: str, method: str, cfg: BenchConfig, chat_prompt) -> dict[str, Any]:
    """One timed answer; ``chat_prompt(context)`` rebuilds the prompt from a (compressed) context."""
    how = eval_method(method)
    device = engine.device
    gen = dict(max_new_tokens=cfg.max_new_tokens, temperature=0.0, chat=False)
    gen.update(how.generate_kwargs(cfg.budget, pc_prompt_factor=cfg.pc_prompt_factor))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base_gpu = torch.cuda.memory_allocated(device)
    extra: dict[str, Any] = {}
    with PeakRSS() as rss:
        started = time.perf_counter()
        cpu_started = time.process_time()
        comp = how.compress(engine, context, question, cfg.budget, seed=cfg.seed)
        if comp is None:
            first, total, stats, chunks, first_cpu = _stream_timed(engine, prompt, **gen)
        else:
            compress_seconds = time.perf_counter() - started
            compress_cpu = time.process_time() - cpu_started
            extra.update(compressed_tokens=comp.compressed_tokens, original_tokens=comp.original_tokens)
            first, total, stats, chunks, first_cpu = _stream_timed(engine, chat_prompt(comp.text), **gen)
            first += compress_seconds
            total += compress_seconds
            first_cpu += compress_cpu
        total_cpu = time.process_time() - cpu_started
    s = stats_dict(stats)
    if comp is None:  # the draft's share of a generation method (SpecKV's lookahead, speckv-pc's cut)
        compress_seconds = float(s.get("draft_seconds") or 0.0)
    completion = int(s.get("completion_tokens") or chunks)
    decode_time = max(total - first, 1e-9)
    row = {
        "method": method,
        "ttft_seconds": round(first, 4),
        "latency_seconds": round(total, 4),
        # Process CPU time: on a shared machine wall time includes waiting for the cores; with one torch
        # thread, CPU seconds are what the same run costs on an idle core.
        "ttft_cpu_seconds": round(first_cpu, 4),
        "latency_cpu_seconds": round(total_cpu, 4),
        "decode_tokens_per_second": round((completion - 1) / decode_time, 3) if completion > 1 else None,
        "decode_tokens_per_cpu_second": round((completion - 1) / max(total_cpu - first_cpu, 1e-9), 3) if completion > 1 else None,
        "completion_tokens": completion,
        "compression_seconds": round(compress_seconds, 4),
        "kv_bytes": s.get("kv_bytes_kept"),
        "kv_bytes_full": s.get("kv_bytes_full"),
        "kv_bytes_peak": s.get("kv_bytes_peak"),
        "peak_rss_bytes": rss.peak,
        "rss_growth_bytes": rss.peak - rss.start,
        "stats": s,
        **extra,
    }
    if device.type == "cuda":
        row["peak_gpu_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        row["gpu_growth_bytes"] = row["peak_gpu_allocated_bytes"] - base_gpu
    return row


def engine_for(pair: Pair, cfg: BenchConfig, **engine_options: Any):
    """A loaded engine for ``pair`` (random-weight shapes are built, then cached) and its load seconds."""
    from ..engine import DraftApproxEngine

    if pair.random_weights:
        draft_ref = str(random_model_folder(pair.draft, seed=cfg.seed))
        target_ref = str(random_model_folder(pair.target, seed=cfg.seed + 1))
    else:
        draft_ref, target_ref = pair.draft, pair.target
    engine = DraftApproxEngine(draft_ref, target_ref, device=cfg.device, dtype=cfg.dtype, **engine_options)
    t0 = time.perf_counter()
    engine.load()
    return engine, time.perf_counter() - t0


def pair_info(pair: Pair, engine, load_seconds: float) -> dict[str, Any]:
    """What a result file says about the models it measured."""
    return {
        "pair": pair.label,
        "draft": pair.draft,
        "target": pair.target,
        "weights": "random weights (cost only, no quality)" if pair.random_weights else "real weights",
        "random_weights": pair.random_weights,
        "parameters": {
            "draft": sum(p.numel() for p in engine.draft.model.parameters()),
            "target": sum(p.numel() for p in engine.target.model.parameters()),
        },
        "device": str(engine.device),
        "dtype": str(engine.dtype).replace("torch.", ""),
        "load_seconds": round(load_seconds, 2),
    }


def warm_up(engine, seed: int) -> None:
    """The first forwards pay one-off costs (allocator, kernels) that no measured row should carry."""
    from .tasks import make_sample

    tok = engine.target.tokenizer
    warm = make_sample("niah_single", 512, tok, seed=seed)
    _stream_timed(engine, warm.chat_prompt(tok), method="full", max_new_tokens=4, temperature=0.0, chat=False)


def config_record(cfg: BenchConfig) -> dict[str, Any]:
    """The run's settings as a result file records them (lists for sequences; not the output folder)."""
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(cfg).items() if k != "output_dir"}


def run_pair(pair: Pair, cfg: BenchConfig, progress=None) -> dict[str, Any]:
    from .tasks import make_sample

    engine, load_seconds = engine_for(pair, cfg)
    tok = engine.target.tokenizer
    limit = min(engine.target.context_length, engine.draft.context_length)
    rows: list[dict[str, Any]] = []
    skipped_lengths = []
    warm_up(engine, cfg.seed)
    for length in cfg.lengths:
        if length + cfg.max_new_tokens + 64 > limit:
            skipped_lengths.append(length)
            logger.warning("%s: %d tokens exceed the models' context (%d); skipped", pair.label, length, limit)
            continue
        sample = make_sample("niah_single", length, tok, seed=cfg.seed)
        prompt = sample.chat_prompt(tok)
        for method in cfg.methods:
            for rep in range(cfg.repeats):
                if progress:
                    progress.set_postfix_str(f"{pair.label} {method} {length}")
                try:
                    row = measure(engine, prompt, sample.context, sample.question, method, cfg, lambda c: sample.chat_prompt(tok, c))
                except torch.OutOfMemoryError as exc:  # a length too long for this device: record and go on
                    row = {"method": method, "error": f"out of memory: {exc}"[:300]}
                row.update(length=length, prompt_tokens_target=sample.length_tokens, repeat=rep)
                rows.append(row)
                if progress:
                    progress.update(1)
    info = {**pair_info(pair, engine, load_seconds), "skipped_lengths": skipped_lengths, "rows": rows}
    del engine
    gc.collect()
    return info


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run every pair of ``cfg``; write ``bench-<pair>.json`` and ``bench-<pair>.png`` into ``output_dir``."""
    cfg.validate()
    require("draftapprox bench", BENCH_MODULES)
    from tqdm.auto import tqdm

    pairs = [parse_pair(p) for p in cfg.pairs]
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(pairs) * len(cfg.lengths) * len(cfg.methods) * cfg.repeats, desc="bench", unit="run")
    written = {}
    for pair in pairs:
        result = run_pair(pair, cfg, bar)
        result["machine"] = machine_info()
        result["config"] = config_record(cfg)
        json_path = out_dir / f"bench-{pair.label}.json"
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
        png_path = out_dir / f"bench-{pair.label}.png"
        plot_bench(result, png_path)
        written[pair.label] = {"json": str(json_path), "png": str(png_path), "result": result}
    bar.close()
    return written


def run_throughput_bench(cfg: BenchConfig, batch_sizes: Sequence[int]) -> dict[str, Any]:
    """The throughput grid (``evals.throughput``) for every pair; ``throughput-<pair>.json`` and ``.md`` in
    ``output_dir``. The engine's ``max_batch_size`` is the largest batch size, so a batch decodes as one."""
    from .throughput import run_throughput, throughput_table

    cfg.validate()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for pair in (parse_pair(p) for p in cfg.pairs):
        engine, load_seconds = engine_for(pair, cfg, max_batch_size=max(batch_sizes))
        warm_up(engine, cfg.seed)
        rows = run_throughput(
            engine, lengths=cfg.lengths, batch_sizes=batch_sizes, methods=cfg.methods, budget=cfg.budget,
            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
            progress=lambda r: logger.info("throughput %s %d x%d: %.2fx", r["method"], r["length"], r["batch_size"], r["end_to_end_speedup"]),
        )
        result = {**pair_info(pair, engine, load_seconds), "machine": machine_info(), "batch_sizes": list(batch_sizes),
                  "config": config_record(cfg), "rows": rows}
        json_path = out_dir / f"throughput-{pair.label}.json"
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
        md_path = out_dir / f"throughput-{pair.label}.md"
        table = "\n".join(throughput_table(rows)) + "\n"
        md_path.write_text(table, encoding="utf-8")
        written[pair.label] = {"json": str(json_path), "md": str(md_path), "table": table, "result": result}
        del engine
        gc.collect()
    return written


__all__ = [
    "BENCH_METHODS",
    "DEFAULT_BENCH",
    "LARGE_BENCH_CPU",
    "RANDOM_SHAPES",
    "REAL_PAIRS",
    "BenchConfig",
    "Pair",
    "PeakRSS",
    "machine_info",
    "measure",
    "parse_pair",
    "plot_bench",
    "random_model_folder",
    "run_bench",
    "run_throughput_bench",
    "run_pair",
    "summary_lines",
]
