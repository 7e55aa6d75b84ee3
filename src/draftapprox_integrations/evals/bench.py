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
import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.errors import ConfigError

logger = logging.getLogger(__name__)

BENCH_METHODS = ("full", "snapkv", "speckv", "specpc", "speckv-pc")
REAL_PAIRS = {"smollm2": ("smollm2-135m-instruct", "smollm2-135m-instruct")}

# Published shapes (hidden, intermediate, layers, query heads, KV heads); vocabulary is the tokenizer's.
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-3b": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "llama-3.2-3b": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}

# Small enough for a 2-core CPU in a few minutes.
DEFAULT_BENCH = dict(pairs=("smollm2",), lengths=(1024, 2048, 4096), budget=256, max_new_tokens=32)
# The larger grids behind the committed figures (CPU: random 0.5B -> 1.5B; GPU: random 0.5B -> 8B, 8k-32k).
LARGE_BENCH_CPU = dict(pairs=("smollm2", "qwen2.5-0.5b:qwen2.5-1.5b"), lengths=(1024, 2048, 4096), budget=256, max_new_tokens=32)
LARGE_BENCH_GPU = dict(pairs=("qwen2.5-0.5b:llama-3.1-8b",), lengths=(8192, 16384, 32768), budget=1024, max_new_tokens=64)


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
# random-weight model folders


def random_model_folder(shape: str, *, seed: int = 0, max_positions: int = 32768, root: Path | None = None) -> Path:
    """A folder (config + safetensors + SmolLM2 tokenizer) of a random-weight bf16 model of ``shape``.

    Built once and cached. The model is created on the meta device and materialised with ``to_empty`` so that
    a multi-billion-parameter shape skips transformers' slow per-module initialisation; weights are then
    drawn N(0, 0.02) (norms 1), which is all a cost measurement needs.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..engine.loading import cache_dir, load_tokenizer

    if shape not in RANDOM_SHAPES:
        raise ConfigError(f"unknown random shape {shape!r}; known: {', '.join(RANDOM_SHAPES)}")
    spec = dict(RANDOM_SHAPES[shape])
    digest = hashlib.sha256(json.dumps([spec, seed, max_positions], sort_keys=True).encode()).hexdigest()[:10]
    folder = (root or cache_dir() / "random-models") / f"{shape}-{digest}"
    if (folder / "draftapprox-random.json").is_file():
        return folder
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        rope_theta=1_000_000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives tied parameters separate storage; re-tie before filling
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    (tmp / "draftapprox-random.json").write_text(json.dumps({"shape": shape, "seed": seed, "parameters": n_params, "random_weights": True}))
    del model
    gc.collect()
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


# ------------------------------------------------------------------------------------------------
# measurement


class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = self.start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


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


def _stats(stats) -> dict[str, Any]:
    if stats is None:
        return {}
    return dict(stats.to_dict()) if hasattr(stats, "to_dict") else dict(vars(stats))


def measure(engine, prompt: str, context: str, question: str, method: str, cfg: BenchConfig, chat_prompt) -> dict[str, Any]:
    """One timed answer; ``chat_prompt(context)`` rebuilds the prompt from a (compressed) context."""
    device = engine.device
    gen = dict(max_new_tokens=cfg.max_new_tokens, temperature=0.0, chat=False)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base_gpu = torch.cuda.memory_allocated(device)
    compress_seconds = 0.0
    extra: dict[str, Any] = {}
    with PeakRSS() as rss:
        started = time.perf_counter()
        cpu_started = time.process_time()
        if method == "specpc":
            comp = engine.compress(context, question, budget=cfg.budget)
            compress_seconds = time.perf_counter() - started
            compress_cpu = time.process_time() - cpu_started
            extra.update(compressed_tokens=comp.compressed_tokens, original_tokens=comp.original_tokens)
            first, total, stats, chunks, first_cpu = _stream_timed(engine, chat_prompt(comp.text), method="full", **gen)
            first += compress_seconds
            total += compress_seconds
            first_cpu += compress_cpu
        else:
            kw = dict(gen, method=method)
            if method != "full":
                kw["budget"] = cfg.budget
            if method == "speckv-pc":
                kw["prompt_budget"] = int(round(cfg.budget * cfg.pc_prompt_factor))
            first, total, stats, chunks, first_cpu = _stream_timed(engine, prompt, **kw)
        total_cpu = time.process_time() - cpu_started
    s = _stats(stats)
    if method != "specpc":
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
        "peak_rss_bytes": rss.peak,
        "rss_growth_bytes": rss.peak - rss.start,
        "stats": s,
        **extra,
    }
    if device.type == "cuda":
        row["peak_gpu_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        row["gpu_growth_bytes"] = row["peak_gpu_allocated_bytes"] - base_gpu
    return row


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (no paths, no host names)."""
    import psutil
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def run_pair(pair: Pair, cfg: BenchConfig, progress=None) -> dict[str, Any]:
    from ..engine import DraftApproxEngine
    from .tasks import make_sample

    if pair.random_weights:
        draft_ref = str(random_model_folder(pair.draft, seed=cfg.seed))
        target_ref = str(random_model_folder(pair.target, seed=cfg.seed + 1))
    else:
        draft_ref, target_ref = pair.draft, pair.target
    engine = DraftApproxEngine(draft_ref, target_ref, device=cfg.device, dtype=cfg.dtype)
    t0 = time.perf_counter()
    engine.load()
    load_seconds = time.perf_counter() - t0
    tok = engine.target.tokenizer
    limit = min(engine.target.context_length, engine.draft.context_length)
    rows: list[dict[str, Any]] = []
    skipped_lengths = []
    # Warm-up: the first forwards pay one-off costs (allocator, kernels) that no row should carry.
    warm = make_sample("niah_single", 512, tok, seed=cfg.seed)
    _stream_timed(engine, warm.chat_prompt(tok), method="full", max_new_tokens=4, temperature=0.0, chat=False)
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
    info = {
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
        "skipped_lengths": skipped_lengths,
        "rows": rows,
    }
    del engine
    gc.collect()
    return info


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run every pair of ``cfg``; write ``bench-<pair>.json`` and ``bench-<pair>.png`` into ``output_dir``."""
    cfg.validate()
    pairs = [parse_pair(p) for p in cfg.pairs]
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs) * len(cfg.lengths) * len(cfg.methods) * cfg.repeats, desc="bench", unit="run")
    except ImportError:  # pragma: no cover
        bar = None
    written = {}
    for pair in pairs:
        result = run_pair(pair, cfg, bar)
        result["machine"] = machine_info()
        result["config"] = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(cfg).items() if k != "output_dir"}
        json_path = out_dir / f"bench-{pair.label}.json"
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
        png_path = out_dir / f"bench-{pair.label}.png"
        plot_bench(result, png_path)
        written[pair.label] = {"json": str(json_path), "png": str(png_path), "result": result}
    if bar:
        bar.close()
    return written


def plot_bench(result: dict[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    panels = [
        ("ttft_seconds", "time to first token, wall (s)", 1.0),
        ("ttft_cpu_seconds", "time to first token, process CPU (s)", 1.0),
        ("latency_seconds", "end-to-end latency, wall (s)", 1.0),
        ("latency_cpu_seconds", "end-to-end latency, process CPU (s)", 1.0),
        ("decode_tokens_per_cpu_second", "decode speed (tokens per CPU s)", 1.0),
        ("peak_gpu_allocated_bytes" if any("peak_gpu_allocated_bytes" in r for r in rows) else "peak_rss_bytes",
         "peak GPU memory (GiB)" if any("peak_gpu_allocated_bytes" in r for r in rows) else "peak process RSS (GiB)", 2**-30),
        ("kv_bytes", "KV cache kept (MiB)", 2**-20),
        ("compression_seconds", "draft / compression time (s)", 1.0),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    methods = [m for m in BENCH_METHODS if any(r["method"] == m for r in rows)]
    for ax, (key, label, scale) in zip(axes.flat, panels):
        for i, m in enumerate(methods):
            pts: dict[int, list[float]] = {}
            for r in rows:
                if r["method"] == m and r.get(key) is not None:
                    pts.setdefault(r["length"], []).append(float(r[key]) * scale)
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], marker="o", label=m, color=f"C{i}")
        ax.set_xscale("log", base=2)
        lengths = sorted({r["length"] for r in rows})
        if lengths:
            ax.set_xticks(lengths)
            ax.set_xticklabels([f"{x // 1024}k" if x >= 1024 else str(x) for x in lengths])
        ax.set_xlabel("context (tokens)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles))
    weights = "RANDOM WEIGHTS (cost only)" if result.get("random_weights") else "real weights"
    cfg = result.get("config", {})
    machine = result.get("machine", {})
    where = machine.get("gpu") or f"{machine.get('cpu', '?')} x{machine.get('cpu_count', '?')}"
    fig.suptitle(
        f"{result['draft']} -> {result['target']}  [{weights}]  {result['dtype']} on {result['device']} ({where}); "
        f"budget {cfg.get('budget')}, {cfg.get('max_new_tokens')} new tokens",
        fontsize=10,
        color="firebrick" if result.get("random_weights") else "black",
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_lines(written: dict[str, Any]) -> list[str]:
    lines = []
    for label, w in written.items():
        res = w["result"]
        lines.append(f"{label} [{res['weights']}] -> {w['json']}, {w['png']}")
        for r in res["rows"]:
            if "error" in r:
                lines.append(f"  {r['length']:>6} {r['method']:>10}: {r['error'][:80]}")
                continue
            kv = r.get("kv_bytes")
            lines.append(
                f"  {r['length']:>6} {r['method']:>10}: ttft {r['ttft_seconds']:.2f}s (cpu {r['ttft_cpu_seconds']:.2f}s)  "
                f"latency {r['latency_seconds']:.2f}s (cpu {r['latency_cpu_seconds']:.2f}s)  "
                f"decode {r['decode_tokens_per_second'] or 0:.1f} tok/s  compress {r['compression_seconds']:.2f}s  "
                f"KV {kv / 2**20 if kv else float('nan'):.1f} MiB  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB"
            )
    return lines
