"""Quality at a budget: methods x budgets x tasks x lengths x samples, resumable, with a table and a plot.

Methods: every method of the engine's table (``engine.config.METHODS``); how each answers one sample is
``evals.methods`` (``full`` reads the whole prompt; the KV methods keep ``budget`` KV entries, ``speckv-pc``
after a SpecPC cut to ``pc_prompt_factor * budget`` draft tokens; the prompt methods compress the context to
``budget`` draft tokens given the question, then the target answers with its full KV).

Every finished (method, budget, task, length, sample, seed, draft, target) row is appended to a JSONL file
as soon as it is done, so an interrupted run resumes where it stopped; rows that errored are retried.
A method the engine does not offer yet (AttributeError / NotImplementedError) is reported as such and
skipped, not recorded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..engine.config import DEFAULT_MODEL, GENERATION_METHODS, SpecKVConfig
from ..engine.config import PROMPT_METHODS as _TABLE_PROMPT_METHODS
from ..engine.errors import ConfigError
from .extras import EVAL_MODULES, RENDER_MODULES, require
from .machine import machine_info
from .methods import EVAL_METHODS, eval_method, stats_dict
from .report import aggregate, plot_accuracy, render_table
from .report import eval_summary_lines as summary_lines
from .scoring import score_prediction
from .tasks import TASKS, Sample, generate_samples

logger = logging.getLogger(__name__)

# All from the engine's table (engine.config.METHODS), in its order.
METHODS = tuple(EVAL_METHODS)
KV_METHODS = tuple(m for m in GENERATION_METHODS if EVAL_METHODS[m].uses_budget)
PROMPT_METHODS = tuple(_TABLE_PROMPT_METHODS)
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
    draft: str = DEFAULT_MODEL
    target: str = DEFAULT_MODEL
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
    lookahead_tokens: int | None = None  # the draft's lookahead of speckv / speckv-pc (None: the config's default)
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
        if not self.budgets and any(eval_method(m).uses_budget for m in self.methods):
            raise ConfigError("give at least one budget for the compressing methods")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if not self.pc_prompt_factor >= 1.0:
            raise ConfigError(f"pc_prompt_factor must be >= 1 (the SpecPC cut keeps more than the KV budget), got {self.pc_prompt_factor}")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.lookahead_tokens is not None and (isinstance(self.lookahead_tokens, bool) or self.lookahead_tokens < 0):
            raise ConfigError(f"lookahead_tokens must be an integer >= 0, got {self.lookahead_tokens!r}")


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


def run_one(engine, sample: Sample, method: str, budget: int | None, cfg: EvalConfig) -> dict[str, Any]:
    """Answer one sample with one method at one budget; returns the measured fields of its row."""
    how = eval_method(method)
    target_tok = engine.target.tokenizer
    max_new = cfg.max_new_tokens or sample.max_new_tokens
    out: dict[str, Any] = {}
    started = time.perf_counter()
    seed = cfg.seed * 7919 + sample_index(sample)
    comp = how.compress(engine, sample.context, sample.question, budget, seed=seed)
    context = None
    if comp is not None:
        out.update(how.compression_fields(comp))
        context = comp.text
        out["answers_kept"] = sum(a.lower() in context.lower() for a in sample.answers) / len(sample.answers)
    kwargs = how.generate_kwargs(budget, pc_prompt_factor=cfg.pc_prompt_factor)
    if cfg.lookahead_tokens is not None and how.spec.needs_draft and how.spec.kind == "generation":
        kwargs["config"] = SpecKVConfig(lookahead_tokens=cfg.lookahead_tokens)
    result = engine.generate(
        _prompt(sample, target_tok, cfg.prompt_style, context),
        max_new_tokens=max_new,
        temperature=0.0,
        chat=False,
        **kwargs,
    )
    out["seconds"] = round(time.perf_counter() - started, 4)
    out["prediction"] = result.text
    out["finish_reason"] = getattr(result, "finish_reason", None)
    out["stats"] = stats_dict(getattr(result, "stats", None))
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
            for budget in list(cfg.budgets) if eval_method(method).uses_budget else [None]:
                jobs.append((sample, method, budget))
    return jobs


def run_eval(cfg: EvalConfig, engine=None) -> EvalReport:
    """Run (or resume) the grid of ``cfg``; write JSONL, a markdown table and a PNG plot into ``output_dir``."""
    cfg.validate()
    require("draftapprox eval", EVAL_MODULES)
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
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="eval", unit="run", disable=not cfg.progress)
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
                    pc_prompt_factor=cfg.pc_prompt_factor if eval_method(method).spec.needs_prompt_budget else None,
                    time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                )
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                new_rows += 1
            bar.update(1)
    bar.close()
    rows = [r for r in load_rows(results_path) if r.get("draft") == draft_label and r.get("target") == target_label]
    table_path = out_dir / "results.md"
    table_path.write_text(render_table(rows), encoding="utf-8")
    plot_path = out_dir / "accuracy.png"
    plot_accuracy(rows, plot_path, machine=machine_info())
    return EvalReport(
        rows=rows,
        new_rows=new_rows,
        skipped_rows=skipped,
        errors=errors,
        results_path=str(results_path),
        table_path=str(table_path),
        plot_path=str(plot_path),
    )


def render_results(output_dir: str | os.PathLike) -> EvalReport:
    """Re-render ``results.md`` and ``accuracy.png`` from an output folder's JSONL, running nothing."""
    out_dir = Path(output_dir)
    results_path = out_dir / "results.jsonl"
    require("draftapprox eval --render-only", RENDER_MODULES)
    if not results_path.is_file():
        raise ConfigError(f"no results.jsonl in {out_dir}: run `draftapprox eval --out {out_dir}` first")
    rows = load_rows(results_path)
    table_path, plot_path = out_dir / "results.md", out_dir / "accuracy.png"
    table_path.write_text(render_table(rows), encoding="utf-8")
    plot_accuracy(rows, plot_path, machine=machine_info())
    return EvalReport(rows=rows, new_rows=0, skipped_rows=len(rows), results_path=str(results_path), table_path=str(table_path), plot_path=str(plot_path))


def config_dict(cfg: EvalConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(cfg).items()}


__all__ = [
    "DEFAULT_GRID",
    "KV_METHODS",
    "LARGE_GRID",
    "METHODS",
    "PROMPT_METHODS",
    "PROMPT_STYLES",
    "EvalConfig",
    "EvalReport",
    "aggregate",
    "config_dict",
    "load_rows",
    "plot_accuracy",
    "render_results",
    "render_table",
    "row_key",
    "run_eval",
    "run_one",
    "summary_lines",
]
