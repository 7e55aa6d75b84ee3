"""The ``draftapprox eval`` and ``draftapprox bench`` subcommands (registered by the main CLI)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..engine.config import DEFAULT_MODEL, GENERATION_METHODS
from ..engine.errors import MissingExtraError
from .bench import BENCH_METHODS, DEFAULT_BENCH, LARGE_BENCH_CPU, RANDOM_SHAPES, REAL_PAIRS
from .extras import BENCH_MODULES, EVAL_MODULES, RENDER_MODULES, require
from .gpu_bench import GRID as GPU_GRID
from .runner import DEFAULT_GRID, LARGE_GRID, METHODS, PROMPT_STYLES
from .kv_candidates import CANDIDATES
from .tasks import TASKS

THROUGHPUT_METHODS = ("full", "speckv")


def _missing_extra(command: str, modules: tuple[str, ...]) -> int | None:
    """Exit status 2 with a one-line hint when a package of the ``[evals]`` extra is missing, else None."""
    try:
        require(f"draftapprox {command}", modules)
    except MissingExtraError as exc:
        print(exc, file=sys.stderr)
        return 2
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    missing = _missing_extra("eval", RENDER_MODULES if args.render_only else EVAL_MODULES)
    if missing is not None:
        return missing
    from .runner import EvalConfig, render_results, run_eval, summary_lines

    if args.render_only:
        print("\n".join(summary_lines(render_results(args.out))))
        return 0
    grid = dict(LARGE_GRID if args.grid == "large" else DEFAULT_GRID)
    cfg = EvalConfig(
        draft=args.draft,
        target=args.target,
        device=args.device,
        dtype=args.dtype,
        methods=args.methods or list(METHODS),
        budgets=args.budgets or list(grid["budgets"]),
        tasks=args.tasks or list(grid["tasks"]),
        lengths=args.lengths or list(grid["lengths"]),
        num_samples=args.samples or grid["num_samples"],
        seed=args.seed,
        output_dir=args.out,
        prompt_style=args.prompt_style,
        pc_prompt_factor=args.pc_prompt_factor,
        max_new_tokens=args.max_new_tokens,
        lookahead_tokens=args.lookahead_tokens,
        progress=not args.no_progress,
    )
    report = run_eval(cfg)
    print("\n".join(summary_lines(report)))
    return 1 if report.errors else 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.grid == "large-gpu":  # no plots, no extras: it runs where only torch and transformers are
        from .gpu_bench import GpuBench

        records = GpuBench(args.tokenizer, Path(args.out), small=args.small, seconds=args.seconds).run()
        return 1 if any("error" in r for r in records) or not records else 0
    missing = _missing_extra("bench", BENCH_MODULES)
    if missing is not None:
        return missing
    from .bench import BenchConfig, run_bench, run_throughput_bench, summary_lines

    grid = dict({"small": DEFAULT_BENCH, "large-cpu": LARGE_BENCH_CPU}[args.grid])
    throughput = args.throughput_batches
    methods = args.methods or (list(THROUGHPUT_METHODS) if throughput else list(BENCH_METHODS))
    if throughput and (set(methods) - set(GENERATION_METHODS) or min(throughput) < 1):
        print("draftapprox bench: --throughput-batches takes batch sizes >= 1 and generation methods "
              f"({', '.join(GENERATION_METHODS)})", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        pairs=args.pairs or list(grid["pairs"]),
        lengths=args.lengths or list(grid["lengths"]),
        methods=methods,
        budget=args.budget or grid["budget"],
        pc_prompt_factor=args.pc_prompt_factor,
        max_new_tokens=args.max_new_tokens or grid["max_new_tokens"],
        repeats=args.repeats,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        output_dir=args.out,
    )
    if throughput:
        for label, done in run_throughput_bench(cfg, throughput).items():
            print(f"{label}: {done['md']}")
            print(done["table"])
        return 0
    written = run_bench(cfg)
    print("\n".join(summary_lines(written)))
    return 0


def cmd_sweep_kv(args: argparse.Namespace) -> int:
    missing = _missing_extra("sweep-kv", EVAL_MODULES)
    if missing is not None:
        return missing
    from .sweep_runner import SweepConfig, load_sweep, render_sweep, run_sweep

    if args.learn_profile:
        from .layer_profiles import learn_profile

        rows = [r for r in load_sweep(f"{args.out}/results.jsonl") if r["split"] == "tuning"]
        for budget in args.budgets:
            print(f"{args.learn_profile!r} at budget {budget} (from {sum(r['method'] == 'full' for r in rows)} tuning samples):")
            print(repr(learn_profile(rows, budget)))
        return 0
    if args.render_only:
        text = render_sweep(load_sweep(f"{args.out}/results.jsonl"))
        with open(f"{args.out}/results.md", "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        cfg = SweepConfig(
            tasks=args.tasks, lengths=args.lengths, seeds=args.seeds, num_samples=args.samples, split=args.split,
            budgets=args.budgets, candidates=args.candidates or list(CANDIDATES), extra=[tuple(p) for p in args.extra],
            window=args.window, model=args.model, device=args.device, dtype=args.dtype, output_dir=args.out,
            progress=not args.no_progress,
        )
        text = run_sweep(cfg).with_name("results.md").read_text(encoding="utf-8")  # the table run_sweep wrote
    print(text)
    return 0


def _candidate_budget(text: str) -> tuple[str, int]:
    name, _, budget = text.partition("@")
    if name not in CANDIDATES or not budget.isdigit():
        raise argparse.ArgumentTypeError(f"expected CANDIDATE@BUDGET with a candidate of {', '.join(CANDIDATES)}")
    return name, int(budget)


def _device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32 (default: %(default)s)")


def add_subcommands(sub, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``eval`` and ``bench`` to the main parser's subparsers (``parents``: options every command shares)."""
    ev = sub.add_parser(
        "eval",
        parents=list(parents),
        help="quality at a budget on offline RULER-style tasks (resumable JSONL, markdown table, PNG plot)",
        description=(
            f"Default grid: {DEFAULT_GRID}. --grid large: {LARGE_GRID}. Results are appended to OUT/results.jsonl "
            "(rows already there are skipped), then OUT/results.md and OUT/accuracy.png are rendered. "
            "Exit status 1 when some rows failed (they are recorded)."
        ),
    )
    ev.add_argument("--draft", default=DEFAULT_MODEL, help="draft model reference: alias, folder, .gguf or hub id (default: %(default)s)")
    ev.add_argument("--target", default=DEFAULT_MODEL, help="target model reference (default: %(default)s)")
    _device_args(ev)
    ev.add_argument("--grid", choices=["small", "large"], default="small", help="preset grid; the options below override it")
    ev.add_argument("--methods", nargs="+", choices=METHODS, help=f"default: all ({', '.join(METHODS)})")
    ev.add_argument("--budgets", nargs="+", type=int, help="KV entries kept per layer and head (SpecPC: context tokens kept)")
    ev.add_argument("--tasks", nargs="+", choices=list(TASKS), help="tasks to run (default: the grid's)")
    ev.add_argument("--lengths", nargs="+", type=int, help="context lengths in target tokens (256..131072)")
    ev.add_argument("--samples", type=int, help="samples per task and length")
    ev.add_argument("--seed", type=int, default=0, help="seed of the generated samples (default: %(default)s)")
    ev.add_argument("--out", default="draftapprox-results/eval", help="output folder (JSONL, table, plot)")
    ev.add_argument("--prompt-style", choices=PROMPT_STYLES, default="auto", help="auto: chat template when the target has one")
    ev.add_argument("--pc-prompt-factor", type=float, default=2.0, help="speckv-pc: SpecPC keeps factor x budget prompt tokens")
    ev.add_argument("--max-new-tokens", type=int, default=None, help="default: per task (24-96)")
    ev.add_argument("--lookahead-tokens", type=int, default=None,
                    help="speckv / speckv-pc: tokens of the draft's lookahead (default: SpecKVConfig's)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--render-only", action="store_true", help="only re-render OUT/results.md and OUT/accuracy.png from OUT/results.jsonl")
    ev.set_defaults(func=cmd_eval)

    be = sub.add_parser(
        "bench",
        parents=list(parents),
        help="cost as context grows: TTFT, latency, decode tokens/s, peak memory, KV bytes, compression time",
        description=(
            f"Pairs: {', '.join(REAL_PAIRS)} (real weights) or DRAFT:TARGET from {', '.join(RANDOM_SHAPES)} "
            f"(random weights, cost only). --grid small: {DEFAULT_BENCH}; large-cpu: {LARGE_BENCH_CPU}; "
            f"large-gpu: random models built in GPU memory, {GPU_GRID} (evals/gpu_bench.py: correctness of the graphed "
            "decode, decode against plain and graphed transformers steps, TTFT, throughput, 16 x 32k, SpecPC)."
        ),
    )
    be.add_argument("--grid", choices=["small", "large-cpu", "large-gpu"], default="small", help="preset grid; the options below override it")
    be.add_argument("--pairs", nargs="+", help=f"model pairs: {', '.join(REAL_PAIRS)} or DRAFT:TARGET of random shapes (see above)")
    be.add_argument("--lengths", nargs="+", type=int, help="context lengths in target tokens")
    be.add_argument("--methods", nargs="+", choices=BENCH_METHODS, help=f"default: all ({', '.join(BENCH_METHODS)})")
    be.add_argument("--budget", type=int, help="KV entries kept per layer and head (SpecPC: context tokens kept)")
    be.add_argument("--pc-prompt-factor", type=float, default=2.0, help="speckv-pc: SpecPC keeps factor x budget prompt tokens")
    be.add_argument("--max-new-tokens", type=int, help="tokens generated per run (default: the grid's)")
    be.add_argument("--repeats", type=int, default=1, help="timed runs per point (default: %(default)s)")
    be.add_argument("--throughput-batches", nargs="+", type=int, metavar="B",
                    help="measure throughput instead: B requests one by one against one batch of B, for each B "
                         f"(methods default to {' '.join(THROUGHPUT_METHODS)})")
    _device_args(be)
    be.add_argument("--tokenizer", metavar="FOLDER", help="large-gpu: the random models' tokenizer (default: SmolLM2's, embedded)")
    be.add_argument("--small", action="store_true", help="large-gpu: toy shapes and short prompts (a dry run, any device)")
    be.add_argument("--seconds", type=float, help="large-gpu: the time it may take; sections that would not fit are skipped")
    be.add_argument("--seed", type=int, default=0, help="seed of the prompts and the random weights (default: %(default)s)")
    be.add_argument("--out", default="draftapprox-results/bench", help="output folder (JSON + PNG per pair)")
    be.set_defaults(func=cmd_bench)

    sw = sub.add_parser(
        "sweep-kv",
        parents=list(parents),
        help="SpecKV's candidate KV selections compared on one prefill per sample (tuning / held-out split)",
        description=(
            "One model is its own draft: each sample is prefilled once, its greedy answer (full KV's answer and "
            "SpecKV's lookahead) written with attention captured, and every candidate's cache gathered from the full "
            "one and decoded. Rows are appended to OUT/results.jsonl (finished samples are skipped); OUT/results.md "
            "is rendered per split."
        ),
    )
    sw.add_argument("--model", default=DEFAULT_MODEL, help="model, its own draft (default: %(default)s)")
    _device_args(sw)
    sw.add_argument("--tasks", nargs="+", choices=list(TASKS), default=["niah_multikey", "niah_multivalue"],
                    help="task families (default: %(default)s)")
    sw.add_argument("--lengths", nargs="+", type=int, default=[2048], help="context lengths in target tokens (default: %(default)s)")
    sw.add_argument("--seeds", nargs="+", type=int, default=[100], help="sample seeds; the split's label says what they are for")
    sw.add_argument("--samples", type=int, default=2, help="samples per task, length and seed")
    sw.add_argument("--split", choices=["tuning", "heldout"], default="tuning",
                    help="what the seeds are for: choosing defaults (tuning) or only reporting them (heldout)")
    sw.add_argument("--budgets", nargs="+", type=int, default=[64, 128], help="KV entries per layer and KV head")
    sw.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), help="default: all")
    sw.add_argument("--learn-profile", metavar="NAME",
                    help="print the layer profile (evals/layer_profiles.py) of OUT's tuning rows at each --budgets, then stop")
    sw.add_argument("--extra", nargs="*", type=_candidate_budget, default=[("snapkv", 256)],
                    help="CANDIDATE@BUDGET runs besides the grid (default: snapkv@256)")
    sw.add_argument("--window", type=int, default=32, help="observation window (default: %(default)s)")
    sw.add_argument("--out", default="draftapprox-results/sweep-kv", help="output folder (results.jsonl, results.md)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.add_argument("--render-only", action="store_true", help="only re-render OUT/results.md from OUT/results.jsonl")
    sw.set_defaults(func=cmd_sweep_kv)


__all__ = ["add_subcommands", "cmd_eval", "cmd_bench", "cmd_sweep_kv"]
