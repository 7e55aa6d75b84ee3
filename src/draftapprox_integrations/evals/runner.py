"""Quality at a budget: methods x budgets x tasks x lengths x samples, resumable, with a table and a plot.

Methods:
  * ``full``: the target reads the whole prompt with its full KV cache (the reference; no budget);
  * KV methods (``speckv``, ``snapkv``, ``streamingllm``, ``speckv-pc``): ``engine.generate(method=...)``
    keeps ``budget`` KV entries of the prompt (``speckv-pc`` first cuts the prompt to
    ``pc_prompt_factor * budget`` draft tokens with SpecPC);
  * prompt methods (``specpc``, ``random``, ``perplexity``): the context is compressed to ``budget`` draft
    tokens given the question, then the target answers from the compressed context with its full KV.

Every finished (method, budget, task, length, sample, seed, draft, target) row is appended to a JSONL file
as soon as it is done, so an interrupted run resumes where it stopped; rows that errored are retried.
A method the engine does not offer yet (AttributeError / NotImplementedError) is reported as such and
skipped, not recorded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError
from .scoring import score_prediction
from .tasks import TASKS, Sample, generate_samples

logger = logging.getLogger(__name__)

KV_METHODS = ("speckv", "snapkv", "streamingllm", "speckv-pc")
PROMPT_METHODS = ("specpc", "random", "perplexity")
METHODS = ("full",) + KV_METHODS + PROMPT_METHODS
PROMPT_STYLES = ("auto", "chat", "completion")

# The small default grid finishes in a few minutes on a 2-core CPU with SmolLM2 as draft and target.
DEFAULT_GRID = dict(tasks=("niah_single", "niah_multikey"), lengths=(2048,), budgets=(256,), num_samples=3)
# The larger grid behind the committed tables (tens of minutes on a 2-core CPU; minutes on a GPU).
LARGE_GRID = dict(
    tasks=("niah_single", "niah_multikey", "niah_multivalue", "vt", "cwe", "fwe"),
    lengths=(2048, 4096),
    budgets=(128, 256, 512),
    num_samples=5,
)


@dataclass
class EvalConfig:
    draft: str = "smollm2-135m-instruct"
    target: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: str = "auto"
    methods: Sequence[str] = METHODS
    budgets: Sequence[int] = DEFAULT_GRID["budgets"]
    tasks: Sequence[str] = DEFAULT_GRID["tasks"]
    lengths: Sequence[int] = DEFAULT_GRID["lengths"]
    num_samples: int = DEFAULT_GRID["num_samples"]
    seed: int = 0
    output_dir: str = "draftapprox-results/eval"
    prompt_style: str = "auto"
    pc_prompt_factor: float = 2.0
    max_new_tokens: int | None = None
    progress: bool = True

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ConfigError(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
        for b in self.budgets:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ConfigError(f"budgets must be positive integers, got {b!r}")
        if not self.budgets and any(m != "full" for m in self.methods):
            raise ConfigError("give at least one budget for the compressing methods")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if not self.pc_prompt_factor >= 1.0:
            raise ConfigError(f"pc_prompt_factor must be >= 1 (the SpecPC cut keeps more than the KV budget), got {self.pc_prompt_factor}")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")


@dataclass
class EvalReport:
    rows: list[dict[str, Any]]
    new_rows: int
    skipped_rows: int
    errors: int = 0
    results_path: str = ""
    table_path: str = ""
    plot_path: str = ""


def row_key(row: dict[str, Any]) -> str:
    budget = row.get("budget")
    return "|".join(
        str(x)
        for x in (row["method"], "-" if budget is None else budget, row["task"], row["length"], row["sample"], row["seed"], row["draft"], row["target"])
    )


def load_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results file, the last one winning for a repeated key; a torn last line is ignored."""
    p = Path(path)
    if not p.is_file():
        return []
    rows: dict[str, dict[str, Any]] = {}
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not JSON (an interrupted write?); ignored", p.name, n)
                continue
            rows[row_key(row)] = row
    return list(rows.values())


def _model_label(engine, role: str) -> str:
    source = engine.draft_source if role == "draft" else engine.target_source
    if source is None:
        return "-"
    if source.kind in ("embedded", "hub"):
        return source.name
    return Path(source.location).name  # a folder's name, never its machine path


def _prompt(sample: Sample, tokenizer, style: str, context: str | None = None) -> str:
    use_chat = style == "chat" or (style == "auto" and bool(getattr(tokenizer, "chat_template", None)))
    return sample.chat_prompt(tokenizer, context) if use_chat else sample.prompt(context)


def _stats_dict(result) -> dict[str, Any]:
    stats = getattr(result, "stats", None)
    if stats is None:
        return {}
    if hasattr(stats, "to_dict"):
        return dict(stats.to_dict())
    return dict(vars(stats))


def run_one(engine, sample: Sample, method: str, budget: int | None, cfg: EvalConfig) -> dict[str, Any]:
    """Answer one sample with one method at one budget; returns the measured fields of its row."""
    target_tok = engine.target.tokenizer
    max_new = cfg.max_new_tokens or sample.max_new_tokens
    gen_kwargs = dict(max_new_tokens=max_new, temperature=0.0, chat=False)
    out: dict[str, Any] = {}
    started = time.perf_counter()
    if method == "full" or method in PROMPT_METHODS:
        context = sample.context
        if method in PROMPT_METHODS:
            if method == "specpc":
                comp = engine.compress(sample.context, sample.question, budget=budget)
                out.update(
                    compressed_tokens=comp.compressed_tokens,
                    original_tokens=comp.original_tokens,
                    selected_tokens=getattr(comp, "selected_tokens", None),
                    compress_seconds=comp.seconds,
                    lookahead_text=getattr(comp, "lookahead_text", None),
                )
                context = comp.text
            else:
                from .baselines import perplexity_token_drop, random_token_drop

                with engine.lock:
                    draft = engine.draft
                    if method == "random":
                        comp = random_token_drop(sample.context, budget, draft.tokenizer, seed=cfg.seed * 7919 + sample_index(sample))
                    else:
                        comp = perplexity_token_drop(sample.context, budget, draft, query=sample.question)
                out.update(compressed_tokens=comp.compressed_tokens, original_tokens=comp.original_tokens, compress_seconds=comp.seconds)
                context = comp.text
            out["answers_kept"] = sum(a.lower() in context.lower() for a in sample.answers) / len(sample.answers)
        result = engine.generate(_prompt(sample, target_tok, cfg.prompt_style, context), method="full", **gen_kwargs)
    else:
        kwargs = dict(gen_kwargs, method=method, budget=budget)
        if method == "speckv-pc":
            kwargs["prompt_budget"] = int(round(budget * cfg.pc_prompt_factor))
        result = engine.generate(_prompt(sample, target_tok, cfg.prompt_style), **kwargs)
    out["seconds"] = round(time.perf_counter() - started, 4)
    out["prediction"] = result.text
    out["finish_reason"] = getattr(result, "finish_reason", None)
    out["stats"] = _stats_dict(result)
    out["score"] = score_prediction(result.text, sample.answers, sample.match)
    return out


def sample_index(sample: Sample) -> int:
    return int(sample.id.rsplit("-", 1)[-1])


def _jobs(cfg: EvalConfig, samples: Sequence[Sample]) -> list[tuple[Sample, str, int | None]]:
    jobs = []
    # Sample-major (index, then length, then task): a run cut short still covers every task and length and
    # compares every method on the same samples.
    ordered = sorted(samples, key=lambda s: (sample_index(s), s.target_length, list(cfg.tasks).index(s.task)))
    for sample in ordered:
        for method in cfg.methods:
            for budget in [None] if method == "full" else list(cfg.budgets):
                jobs.append((sample, method, budget))
    return jobs


def run_eval(cfg: EvalConfig, engine=None) -> EvalReport:
    """Run (or resume) the grid of ``cfg``; write JSONL, a markdown table and a PNG plot into ``output_dir``."""
    cfg.validate()
    if engine is None:
        from ..engine import get_engine

        engine = get_engine(cfg.draft, cfg.target, device=cfg.device, dtype=cfg.dtype)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    previous = load_rows(results_path)
    done = {row_key(r) for r in previous if r.get("status") == "ok"}
    draft_label, target_label = _model_label(engine, "draft"), _model_label(engine, "target")

    # Lengths are measured in the target's tokenizer: it is the model whose context they describe.
    samples = generate_samples(cfg.tasks, cfg.lengths, cfg.num_samples, engine.target.tokenizer, seed=cfg.seed)
    jobs = _jobs(cfg, samples)
    new_rows = skipped = errors = 0
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        tqdm = None
    bar = tqdm(total=len(jobs), desc="eval", unit="run", disable=not cfg.progress) if tqdm else None
    with results_path.open("a", encoding="utf-8") as fh:
        for sample, method, budget in jobs:
            row = {
                "method": method,
                "budget": budget,
                "task": sample.task,
                "length": sample.target_length,
                "sample": sample_index(sample),
                "seed": cfg.seed,
                "draft": draft_label,
                "target": target_label,
            }
            if bar:
                bar.set_postfix_str(f"{method}@{budget or 'full'} {sample.task}")
            if row_key(row) in done:
                skipped += 1
            else:
                try:
                    measured = run_one(engine, sample, method, budget, cfg)
                    row.update(status="ok", **measured)
                except Exception as exc:  # noqa: BLE001 - one bad row must not end a long run; it is recorded
                    logger.exception("%s@%s on %s failed", method, budget, sample.id)
                    row.update(status="error", error=f"{type(exc).__name__}: {exc}", score=None)
                    errors += 1
                row.update(
                    sample_id=sample.id,
                    answers=sample.answers,
                    match=sample.match,
                    length_tokens=sample.length_tokens,
                    prompt_style=cfg.prompt_style,
                    pc_prompt_factor=cfg.pc_prompt_factor if method == "speckv-pc" else None,
                    time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                )
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                new_rows += 1
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    rows = [r for r in load_rows(results_path) if r.get("draft") == draft_label and r.get("target") == target_label]
    table_path = out_dir / "results.md"
    table_path.write_text(render_table(rows), encoding="utf-8")
    plot_path = out_dir / "accuracy.png"
    plot_accuracy(rows, plot_path)
    return EvalReport(
        rows=rows,
        new_rows=new_rows,
        skipped_rows=skipped,
        errors=errors,
        results_path=str(results_path),
        table_path=str(table_path),
        plot_path=str(plot_path),
    )


# ------------------------------------------------------------------------------------------------
# aggregation, table, plot


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """(length, task, method, budget) -> mean score, n, mean seconds over the ``ok`` rows."""
    acc: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok" and r.get("score") is not None:
            acc[(r["length"], r["task"], r["method"], r.get("budget"))].append(r)
    out = {}
    for k, rs in acc.items():
        out[k] = {
            "accuracy": sum(r["score"] for r in rs) / len(rs),
            "n": len(rs),
            "seconds": sum(r.get("seconds", 0.0) for r in rs) / len(rs),
        }
    return out


def _method_order(m: str) -> int:
    return METHODS.index(m) if m in METHODS else len(METHODS)


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per context length, one row per method and budget, accuracy (%) per task and the mean."""
    agg = aggregate(rows)
    if not agg:
        body = "_no finished rows yet_\n"
    else:
        body = ""
    models = sorted({(r.get("draft"), r.get("target")) for r in rows})
    lines = ["# Accuracy at a budget (RULER-style scoring, %)", ""]
    if models:
        lines.append("models: " + "; ".join(f"draft `{d}` -> target `{t}`" for d, t in models))
        lines.append("")
    lines.append(
        "Budget: KV entries kept of the prompt (KV methods) or draft tokens kept of the context (prompt methods); "
        "`full` keeps everything. Cells: mean score over n samples."
    )
    lines.append("")
    for length in sorted({k[0] for k in agg}):
        tasks = sorted({k[1] for k in agg if k[0] == length}, key=lambda t: list(TASKS).index(t) if t in TASKS else 99)
        combos = sorted({(k[2], k[3]) for k in agg if k[0] == length}, key=lambda mb: (mb[1] or 0, _method_order(mb[0])))
        lines.append(f"## {length} tokens")
        lines.append("")
        lines.append("| method | budget | " + " | ".join(tasks) + " | mean | n |")
        lines.append("|---|---:|" + "---:|" * len(tasks) + "---:|---:|")
        for method, budget in combos:
            cells, vals, ns = [], [], []
            for t in tasks:
                a = agg.get((length, t, method, budget))
                if a is None:
                    cells.append("")
                else:
                    cells.append(f"{100 * a['accuracy']:.0f}")
                    vals.append(a["accuracy"])
                    ns.append(a["n"])
            mean = f"{100 * sum(vals) / len(vals):.1f}" if vals else ""
            n = f"{min(ns)}" if ns else "0"
            lines.append(f"| {method} | {budget if budget is not None else 'full'} | " + " | ".join(cells) + f" | {mean} | {n} |")
        lines.append("")
    return "\n".join(lines) + body


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Accuracy against budget per method, one panel per (length, task); full KV as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    lengths = sorted({k[0] for k in agg}) or [0]
    tasks = sorted({k[1] for k in agg}, key=lambda t: list(TASKS).index(t) if t in TASKS else 99) or ["-"]
    fig, axes = plt.subplots(
        len(lengths), len(tasks), figsize=(max(7.5, 3.6 * len(tasks)), 0.8 + 3.0 * len(lengths)), squeeze=False
    )
    methods = sorted({k[2] for k in agg}, key=_method_order)
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    for i, length in enumerate(lengths):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            for m in methods:
                pts = sorted((k[3], v["accuracy"]) for k, v in agg.items() if k[:3] == (length, task, m) and k[3] is not None)
                if m == "full":
                    full = agg.get((length, task, "full", None))
                    if full is not None:
                        ax.axhline(100 * full["accuracy"], color="black", linestyle="--", linewidth=1, label="full")
                    continue
                if pts:
                    # Dodge the methods sideways a little (log scale) so equal scores at a budget stay visible.
                    dodge = 2 ** (0.06 * (_method_order(m) - len(METHODS) / 2))
                    ax.plot([p[0] * dodge for p in pts], [100 * p[1] for p in pts], marker="o", color=colors.get(m), label=m)
            budgets = sorted({k[3] for k in agg if k[3] is not None})
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
            if budgets:
                ax.set_xlim(min(budgets) / 1.5, max(budgets) * 1.5)
            if budgets:
                ax.set_xticks(budgets)
                ax.set_xticklabels([str(b) for b in budgets])
            ax.set_ylim(-5, 105)
            ax.set_title(f"{task} @ {length}", fontsize=9)
            if j == 0:
                ax.set_ylabel("accuracy (%)")
            if i == len(lengths) - 1:
                ax.set_xlabel("budget (tokens)")
            ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(5, len(handles)), fontsize=8)
    models = sorted({(r.get("draft"), r.get("target")) for r in rows})
    title = "accuracy vs budget; " + "; ".join(f"draft {d} -> target {t}" for d, t in models)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if len(lengths) > 1 else 0.16, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_results(output_dir: str | os.PathLike) -> EvalReport:
    """Re-render ``results.md`` and ``accuracy.png`` from an output folder's JSONL, running nothing."""
    out_dir = Path(output_dir)
    results_path = out_dir / "results.jsonl"
    if not results_path.is_file():
        raise ConfigError(f"no results.jsonl in {out_dir}: run `draftapprox eval --out {out_dir}` first")
    rows = load_rows(results_path)
    table_path, plot_path = out_dir / "results.md", out_dir / "accuracy.png"
    table_path.write_text(render_table(rows), encoding="utf-8")
    plot_accuracy(rows, plot_path)
    return EvalReport(rows=rows, new_rows=0, skipped_rows=len(rows), results_path=str(results_path), table_path=str(table_path), plot_path=str(plot_path))


def summary_lines(report: EvalReport) -> list[str]:
    lines = [
        f"rows: {len(report.rows)} ({report.new_rows} new, {report.skipped_rows} already done, {report.errors} errors)",
        f"results: {report.results_path}",
        f"table:   {report.table_path}",
        f"plot:    {report.plot_path}",
    ]
    agg = aggregate(report.rows)
    by_method: dict[tuple, list[float]] = defaultdict(list)
    for (length, _task, method, budget), v in agg.items():
        by_method[(length, method, budget)].append(v["accuracy"])
    for (length, method, budget), vals in sorted(by_method.items(), key=lambda kv: (kv[0][0], kv[0][2] or 0, _method_order(kv[0][1]))):
        mean = sum(vals) / len(vals)
        if not math.isnan(mean):
            lines.append(f"  {length:>6} {method:>13} @ {budget if budget is not None else 'full':>5}: {100 * mean:5.1f}%")
    return lines


def config_dict(cfg: EvalConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(cfg).items()}
