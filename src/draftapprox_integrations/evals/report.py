"""What the eval and the bench write besides their rows: the markdown table, the plots, the summary lines.

Reads finished rows only (it runs nothing); matplotlib is imported where a plot is drawn, so the rest of the
package works without it (it comes with the ``[evals]`` extra).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .methods import BENCH_METHODS, EVAL_METHODS
from .tasks import TASKS

# The order methods are listed, coloured and dodged in: the engine's table.
METHODS = tuple(EVAL_METHODS)


# ------------------------------------------------------------------------------------------------
# the eval: aggregation, table, plot, summary


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


def eval_summary_lines(report) -> list[str]:
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


# ------------------------------------------------------------------------------------------------
# the bench: plot, summary


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


def bench_summary_lines(written: dict[str, Any]) -> list[str]:
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
