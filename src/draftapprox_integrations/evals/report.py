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

from .methods import BENCH_METHODS, EVAL_METHODS, PromptMethod
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


# What a budget counts, by the kind of method: one unit per axis, so the two kinds get separate panels.
BUDGET_UNITS = {
    "kv": "KV entries kept per layer and KV head",
    "prompt": "draft tokens of the context kept",
}


def budget_unit(method: str) -> str:
    """``"prompt"`` for a method that cuts the prompt (its budget counts draft tokens), else ``"kv"``."""
    return "prompt" if method in EVAL_METHODS and isinstance(EVAL_METHODS[method], PromptMethod) else "kv"


def _n_label(ns: Sequence[int]) -> str:
    """"n=3" when every cell has the same number of samples, "n=2-3" otherwise."""
    lo, hi = min(ns), max(ns)
    return f"n={lo}" if lo == hi else f"n={lo}-{hi}"


def machine_caption(machine: dict[str, Any] | None) -> str:
    """One line naming the machine (CPU or GPU, cores, RAM, torch / transformers), or "" when unknown."""
    if not machine:
        return ""
    where = machine.get("gpu") or f"{machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores"
    parts = [where]
    if machine.get("ram_gib"):
        parts.append(f"{machine['ram_gib']} GiB RAM")
    parts += [f"torch {machine.get('torch', '?')}", f"transformers {machine.get('transformers', '?')}"]
    return "machine: " + ", ".join(parts)


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | os.PathLike, machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accuracy against budget per method: one row of panels per (length, budget unit), one panel per task; full
    KV as a dashed line; the number of samples per cell in each panel's title. Returns what it drew (panel
    titles and axis labels, the caption) for tests and logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    lengths = sorted({k[0] for k in agg}) or [0]
    units = [u for u in BUDGET_UNITS if any(k[3] is not None and budget_unit(k[2]) == u for k in agg)] or ["kv"]
    panel_rows = [(length, unit) for length in lengths for unit in units]
    tasks = sorted({k[1] for k in agg}, key=lambda t: list(TASKS).index(t) if t in TASKS else 99) or ["-"]
    fig, axes = plt.subplots(
        len(panel_rows), len(tasks), figsize=(max(7.5, 3.6 * len(tasks)), 1.2 + 3.0 * len(panel_rows)), squeeze=False
    )
    drawn: dict[str, Any] = {"panels": []}
    for i, (length, unit) in enumerate(panel_rows):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            ns = _draw_accuracy_panel(ax, agg, length, task, unit)
            ax.set_title(f"{task} @ {length}" + (f" ({_n_label(ns)})" if ns else ""), fontsize=9)
            ax.set_xlabel(f"budget: {BUDGET_UNITS[unit]}", fontsize=8)
            if j == 0:
                ax.set_ylabel("accuracy (%)")
            drawn["panels"].append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": "accuracy (%)"})
    _shared_legend(fig, axes)
    models = sorted({(r.get("draft"), r.get("target")) for r in rows})
    fig.suptitle("accuracy vs budget; " + "; ".join(f"draft {d} -> target {t}" for d, t in models), fontsize=10)
    all_ns = [v["n"] for v in agg.values()]
    caption = (f"samples per cell: {_n_label(all_ns)[2:]}" if all_ns else "no finished rows") + (
        f"; {machine_caption(machine)} (accuracy does not depend on how busy it was)" if machine else ""
    )
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.1 if len(panel_rows) > 1 else 0.16, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    drawn["caption"] = caption
    return drawn


def _draw_accuracy_panel(ax, agg: dict[tuple, dict[str, float]], length: int, task: str, unit: str) -> list[int]:
    """One panel: the methods of ``unit`` against their budgets and the full-KV line; returns the n of its cells."""
    ns: list[int] = []
    full = agg.get((length, task, "full", None))
    if full is not None:
        ax.axhline(100 * full["accuracy"], color="black", linestyle="--", linewidth=1, label="full")
        ns.append(full["n"])
    methods = sorted({k[2] for k in agg if k[3] is not None and budget_unit(k[2]) == unit}, key=_method_order)
    for m in methods:
        cells = sorted((k[3], v) for k, v in agg.items() if k[:3] == (length, task, m) and k[3] is not None)
        if cells:
            # Dodge the methods sideways a little (log scale) so equal scores at a budget stay visible.
            dodge = 2 ** (0.06 * (_method_order(m) - len(METHODS) / 2))
            ax.plot([b * dodge for b, _ in cells], [100 * v["accuracy"] for _, v in cells], marker="o",
                    color=f"C{_method_order(m)}", label=m)
            ns += [v["n"] for _, v in cells]
    budgets = sorted({k[3] for k in agg if k[3] is not None and budget_unit(k[2]) == unit})
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    if budgets:
        ax.set_xlim(min(budgets) / 1.5, max(budgets) * 1.5)
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    return ns


def _shared_legend(fig, axes) -> None:
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", bbox_to_anchor=(0.5, 0.03),
                   ncol=min(5, len(handles)), fontsize=8)


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


# A CPU run counts as quiet when the process got at least this share of its torch threads' CPU time while it
# measured (process CPU seconds / wall seconds / threads): other jobs on the cores push it down.
QUIET_CPU_SHARE = 0.8


def quiet_verdict(result: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether the machine was quiet while the bench ran, and why: on a CPU from the share of its threads' time
    the process got (``QUIET_CPU_SHARE``), and from the load average at the start where it was recorded; on a
    GPU (where CPU time says little) from the load average only. (None, reason) when it cannot be told."""
    machine = result.get("machine") or {}
    threads = machine.get("torch_threads") or machine.get("cpu_count")
    load = machine.get("load_average_1m")
    cores = machine.get("cpu_count")
    load_text = f"load average {load:.2f} on {cores} cores at the start" if load is not None and cores else ""
    load_quiet = None if not load_text else load / cores < 0.25
    shares = [
        r["latency_cpu_seconds"] / r["latency_seconds"] / threads
        for r in result.get("rows", [])
        if threads and r.get("latency_seconds") and r.get("latency_cpu_seconds") is not None
    ]
    if str(result.get("device", "cpu")).startswith("cpu") and shares:
        share = sum(shares) / len(shares)
        quiet = share >= QUIET_CPU_SHARE and load_quiet is not False
        why = f"the process got {100 * share:.0f}% of its {threads} thread(s)' time" + (f"; {load_text}" if load_text else "")
        return quiet, f"{'quiet' if quiet else 'BUSY (other jobs shared the cores: compare the CPU-second panels)'}: {why}"
    if load_quiet is not None:
        return load_quiet, f"{'quiet' if load_quiet else 'BUSY'}: {load_text}"
    return None, "quiet or busy: not recorded"


def bench_caption(result: dict[str, Any]) -> str:
    """The bench plot's caption: runs per point, the machine and whether it was quiet, what the budget counts."""
    rows = [r for r in result["rows"] if "error" not in r]
    per_point: dict[tuple, int] = defaultdict(int)
    for r in rows:
        per_point[(r["method"], r["length"])] += 1
    runs = _n_label(list(per_point.values()))[2:] if per_point else "0"
    cfg = result.get("config", {})
    _, quiet = quiet_verdict(result)
    lines = [
        f"n = {runs} run(s) per point (mean); budget {cfg.get('budget')}: KV entries per layer and KV head for the KV "
        "methods, draft tokens of the prompt for specpc",
        "; ".join(part for part in (machine_caption(result.get("machine")), quiet) if part),
    ]
    return "\n".join(lines)


def plot_bench(result: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Cost against context length, one quantity (one unit) per panel; the caption names the runs per point, the
    machine and whether it was quiet. Returns what it drew (panel titles, the caption)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    gpu = any("peak_gpu_allocated_bytes" in r for r in rows)
    panels = [
        ("ttft_seconds", "time to first token, wall (s)", 1.0),
        ("ttft_cpu_seconds", "time to first token, process CPU (s)", 1.0),
        ("latency_seconds", "end-to-end latency, wall (s)", 1.0),
        ("latency_cpu_seconds", "end-to-end latency, process CPU (s)", 1.0),
        ("decode_tokens_per_cpu_second", "decode speed (tokens per CPU s)", 1.0),
        ("peak_gpu_allocated_bytes" if gpu else "peak_rss_bytes", "peak GPU memory (GiB)" if gpu else "peak process RSS (GiB)", 2**-30),
        ("kv_bytes", "KV cache kept (MiB)", 2**-20),
        ("compression_seconds", "draft / compression time (s)", 1.0),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(17, 8))
    methods = [m for m in BENCH_METHODS if any(r["method"] == m for r in rows)]
    lengths = sorted({r["length"] for r in rows})
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
        if lengths:
            ax.set_xticks(lengths)
            ax.set_xticklabels([f"{x // 1024}k" if x >= 1024 else str(x) for x in lengths])
        ax.set_xlabel("context (tokens)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.05), ncol=len(handles))
    weights = "RANDOM WEIGHTS (cost only)" if result.get("random_weights") else "real weights"
    cfg = result.get("config", {})
    fig.suptitle(
        f"{result['draft']} -> {result['target']}  [{weights}]  {result['dtype']} on {result['device']}; "
        f"budget {cfg.get('budget')}, {cfg.get('max_new_tokens')} new tokens",
        fontsize=10,
        color="firebrick" if result.get("random_weights") else "black",
    )
    caption = bench_caption(result)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.11, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"panels": [{"title": title, "xlabel": "context (tokens)"} for _, title, _ in panels], "caption": caption}


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
