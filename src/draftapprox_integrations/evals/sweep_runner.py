"""``draftapprox sweep-kv``: every candidate KV selection on one grid, with a tuning / held-out split.

Rows go to ``OUT/results.jsonl`` one sample at a time (resumable: a finished (task, length, seed, sample)
is skipped), one row per (candidate, budget) plus the ``full`` row. Seeds name the split: the samples of
``--split tuning`` chose the defaults; ``--split heldout`` samples (other seeds) only report them.
``OUT/results.md`` holds per split: the mean over families per length, and the per-family table.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.config import DEFAULT_MODEL
from ..engine.errors import ConfigError
from ..engine.prompts import encode_prompt
from .kv_candidates import CANDIDATES, global_counts, kept_size
from .kv_sweep import answer_all, observe
from .scoring import score_prediction
from .tasks import TASKS, make_sample

SPLITS = ("tuning", "heldout")


@dataclass
class SweepConfig:
    tasks: Sequence[str]
    lengths: Sequence[int]
    seeds: Sequence[int]
    num_samples: int
    split: str
    budgets: Sequence[int] = (64, 128)
    candidates: Sequence[str] = tuple(CANDIDATES)
    # (candidate, budget) pairs run besides the grid, e.g. SnapKV at 256 entries.
    extra: Sequence[tuple[str, int]] = (("snapkv", 256),)
    window: int = 32
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    output_dir: str = "draftapprox-results/sweep-kv"
    progress: bool = True

    def validate(self) -> None:
        for what, names, known in (("task", self.tasks, TASKS), ("candidate", self.candidates, CANDIDATES)):
            bad = [n for n in names if n not in known]
            if bad or not names:
                raise ConfigError(f"unknown {what}(s) {bad}; choose from {', '.join(known)}")
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if any(b <= self.window for b in self.budgets) or any(b <= self.window for _, b in self.extra):
            raise ConfigError(f"every budget must exceed the window ({self.window})")
        if self.num_samples < 1 or not self.seeds:
            raise ConfigError("give at least one seed and one sample")


def _sample_key(task: str, length: int, seed: int, index: int) -> str:
    return f"{task}|{length}|{seed}|{index}"


def _done(path: Path) -> dict[str, set[str]]:
    """Sample key -> the labels (``full``, ``candidate@budget``) it already has a row for."""
    done: dict[str, set[str]] = defaultdict(set)
    if path.is_file():
        for row in load_sweep(path):
            done[_sample_key(row["task"], row["length"], row["seed"], row["sample"])].add(label(row))
    return done


def _pairs(cfg: SweepConfig) -> list[tuple[str, int]]:
    return [(c, b) for b in cfg.budgets for c in cfg.candidates] + [tuple(p) for p in cfg.extra]


def sweep_one(engine, sample, cfg: SweepConfig, done: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every (candidate, budget) answer of one sample, and full KV's, as rows; labels in ``done`` (rows a
    resumed sweep already has, when candidates were added) are not answered again. Full KV's answer is always
    decoded: the observation the candidates select from comes with it."""
    target = engine.target
    ids = encode_prompt(target, None, sample.chat_prompt(target.tokenizer))
    started = time.perf_counter()
    with engine.lock:
        obs = observe(target, ids, window=cfg.window, max_new_tokens=sample.max_new_tokens)
        pairs = [(c, b) for c, b in _pairs(cfg) if f"{c}@{b}" not in done]
        named = {f"{c}@{b}": CANDIDATES[c](obs, b) for c, b in pairs}
        answers = answer_all(target, obs, named, max_new_tokens=sample.max_new_tokens)
    seconds = round(time.perf_counter() - started, 2)
    base = dict(task=sample.task, length=sample.target_length, seed=sample.seed, sample=int(sample.id.rsplit("-", 1)[-1]),
                split=cfg.split, prompt_tokens=len(ids), answers=sample.answers, sample_seconds=seconds)
    rows = [] if "full" in done else [
        dict(base, method="full", budget=None, prediction=obs.answer_text, kept=float(len(ids)),
             score=score_prediction(obs.answer_text, sample.answers, sample.match),
             global_counts={str(b): global_counts(obs, b) for b in cfg.budgets})]
    for (c, b) in pairs:
        text = answers[f"{c}@{b}"]
        rows.append(dict(base, method=c, budget=b, prediction=text, kept=round(kept_size(named[f"{c}@{b}"]), 1),
                         score=score_prediction(text, sample.answers, sample.match)))
    return rows


def run_sweep(cfg: SweepConfig, engine=None) -> Path:
    cfg.validate()
    if engine is None:
        from ..engine import get_engine

        engine = get_engine(cfg.model, cfg.model, device=cfg.device, dtype=cfg.dtype)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = _done(path)
    wanted = {"full"} | {f"{c}@{b}" for c, b in _pairs(cfg)}
    todo = [(i, n, s, t) for i in range(cfg.num_samples) for n in cfg.lengths for s in cfg.seeds for t in cfg.tasks]
    from tqdm.auto import tqdm

    with path.open("a", encoding="utf-8") as fh:
        for i, n, s, t in tqdm(todo, desc="sweep-kv", disable=not cfg.progress):
            if wanted <= done[_sample_key(t, n, s, i)]:
                continue
            sample = make_sample(t, n, engine.target.tokenizer, seed=s, index=i)
            for row in sweep_one(engine, sample, cfg, frozenset(done[_sample_key(t, n, s, i)])):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
    (out / "results.md").write_text(render_sweep(load_sweep(path)), encoding="utf-8")
    return path


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[(row["method"], row["budget"], row["task"], row["length"], row["seed"], row["sample"])] = row
    return list(rows.values())


def label(row: dict[str, Any]) -> str:
    return row["method"] if row["budget"] is None else f"{row['method']}@{row['budget']}"


def cell_means(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int, str], tuple[float, int]]:
    """(split, label, length, task) -> (mean score in %, n)."""
    acc: dict[tuple[str, str, int, str], list[float]] = defaultdict(list)
    for r in rows:
        acc[(r["split"], label(r), r["length"], r["task"])].append(r["score"])
    return {k: (100 * sum(v) / len(v), len(v)) for k, v in acc.items()}


def _order(labels: set[str]) -> list[str]:
    return sorted(labels, key=lambda x: (x != "full", x.split("@")[-1].zfill(5) if "@" in x else "", x))


def render_sweep(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per split, the mean over families per length (and over lengths), then per family."""
    cells = cell_means(rows)
    lines = ["# KV selection sweep (scores in %, RULER-style; mean over families weights each family equally)", ""]
    for split in SPLITS:
        keys = [k for k in cells if k[0] == split]
        if not keys:
            continue
        labels = _order({k[1] for k in keys})
        lengths = sorted({k[2] for k in keys})
        tasks = [t for t in TASKS if any(k[3] == t for k in keys)]
        n = min(cells[k][1] for k in keys)
        lines += [f"## {split} split (n >= {n} per cell; seeds {sorted({r['seed'] for r in rows if r['split'] == split})})", ""]
        lines += ["| method | " + " | ".join(f"{n_} tokens" for n_ in lengths) + " | all lengths |", "|---|" + "---:|" * (len(lengths) + 1)]
        for lab in labels:
            found = [[cells[(split, lab, n_, t)][0] for t in tasks if (split, lab, n_, t) in cells] for n_ in lengths]
            per_len = [_mean(v) for v in found]
            marks = ["" if len(v) == len(tasks) else f" ({len(v)}/{len(tasks)} families)" for v in found]
            lines.append(f"| {lab} | " + " | ".join(f"{v:.1f}{m}" for v, m in zip(per_len, marks)) + f" | {_mean(per_len):.1f} |")
        lines += _kept_table([r for r in rows if r["split"] == split], labels, lengths)
        for n_ in lengths:
            lines += ["", f"### {split}, {n_} tokens", "", "| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
            for lab in labels:
                vals = [cells.get((split, lab, n_, t)) for t in tasks]
                lines.append(f"| {lab} | " + " | ".join("-" if v is None else f"{v[0]:.0f}" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _kept_table(rows: Sequence[dict[str, Any]], labels: Sequence[str], lengths: Sequence[int]) -> list[str]:
    """Mean KV entries kept per layer and KV head, per label and length (rows that recorded it)."""
    kept: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        if r.get("kept") is not None:
            kept[(label(r), r["length"])].append(r["kept"])
    if not kept:
        return []
    out = ["", "Mean KV entries kept per layer and KV head:", "",
           "| method | " + " | ".join(f"{n} tokens" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for lab in labels:
        out.append(f"| {lab} | " + " | ".join(f"{_mean(kept[(lab, n)]):.0f}" if kept[(lab, n)] else "-" for n in lengths) + " |")
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def plot_sweep(rows: Sequence[dict[str, Any]], path: str | Path, *, split: str, labels: Sequence[str], caption: str = "") -> None:
    """Grouped bars: one panel per length, families (and their mean) on the x axis, one bar per label;
    n per cell in each panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = cell_means(rows)
    keys = [k for k in cells if k[0] == split and k[1] in labels]
    lengths = sorted({k[2] for k in keys})
    tasks = [t for t in TASKS if any(k[3] == t for k in keys)]
    fig, axes = plt.subplots(len(lengths), 1, figsize=(max(8, 1.3 * (len(tasks) + 1) * len(labels) / 3), 3.2 * len(lengths)), squeeze=False)
    width = 0.8 / len(labels)
    for ax, length in zip(axes[:, 0], lengths):
        ns = sorted({cells[k][1] for k in keys if k[2] == length})
        for j, lab in enumerate(labels):
            vals = [cells.get((split, lab, length, t), (float("nan"), 0))[0] for t in tasks]
            vals.append(_mean(vals))
            ax.bar([x + j * width for x in range(len(vals))], vals, width, label=lab)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(tasks) + 1)], tasks + ["mean"], fontsize=8)
        ax.set_ylabel("score (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{split} split, {length} tokens (n = {'-'.join(str(n) for n in (ns[0], ns[-1])) if len(ns) > 1 else ns[0]} per cell)", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=min(len(labels), 4))
    if caption:
        fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03 if caption else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
