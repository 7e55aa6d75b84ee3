"""Issue 13, item 7: plots that read on their own: n per cell, one unit per axis (KV entries and prompt tokens
in separate panels), the machine and whether it was quiet in the caption."""

from __future__ import annotations

import json
from pathlib import Path

from draftapprox_integrations.evals.report import BUDGET_UNITS, budget_unit, plot_accuracy, plot_bench, quiet_verdict

RESULTS = Path(__file__).resolve().parents[3] / "results" / "cpu"
MACHINE = {"cpu": "AMD EPYC", "cpu_count": 2, "ram_gib": 23.5, "torch": "2.13.0+cpu", "transformers": "5.24.0", "torch_threads": 2}


def _row(method, budget, task, score, sample):
    return {"method": method, "budget": budget, "task": task, "length": 2048, "sample": sample, "status": "ok",
            "score": score, "draft": "d", "target": "t", "seconds": 1.0}


def test_budget_units_follow_the_method_kind():
    assert {budget_unit(m) for m in ("snapkv", "speckv", "streamingllm", "speckv-pc")} == {"kv"}
    assert {budget_unit(m) for m in ("specpc", "random", "perplexity")} == {"prompt"}


def test_accuracy_plot_separates_units_and_shows_n(tmp_path):
    rows = [_row("full", None, "niah_single", 1.0, s) for s in range(3)]
    rows += [_row(m, b, "niah_single", s % 2, s) for m in ("speckv", "specpc") for b in (64, 128) for s in range(3)]
    rows += [_row("snapkv", 64, "niah_single", 0.0, s) for s in range(2)]  # a cell with fewer samples
    drawn = plot_accuracy(rows, tmp_path / "a.png", machine=MACHINE)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    xlabels = [p["xlabel"] for p in drawn["panels"]]
    assert sorted(xlabels) == sorted(f"budget: {BUDGET_UNITS[u]}" for u in ("kv", "prompt"))  # one unit per axis
    titles = {p["xlabel"]: p["title"] for p in drawn["panels"]}
    assert titles[f"budget: {BUDGET_UNITS['prompt']}"].endswith("(n=3)")
    assert titles[f"budget: {BUDGET_UNITS['kv']}"].endswith("(n=2-3)")  # snapkv's cell has 2
    assert "samples per cell: 2-3" in drawn["caption"] and "AMD EPYC, 2 cores" in drawn["caption"]


def test_bench_caption_names_runs_machine_and_quiet_from_committed_results(tmp_path):
    """The quiet bench in results/ was run with nothing else on the cores; the CPU-time share says so."""
    result = json.loads((RESULTS / "bench-quiet" / "bench-smollm2.json").read_text())
    quiet, why = quiet_verdict(result)
    assert quiet is True and "thread(s)' time" in why
    drawn = plot_bench(result, tmp_path / "b.png")
    assert "n = 1 run(s) per point" in drawn["caption"] and "AMD EPYC" in drawn["caption"] and "quiet" in drawn["caption"]
    assert all(p["xlabel"] == "context (tokens)" for p in drawn["panels"])


def test_a_busy_run_is_called_busy():
    rows = [{"method": "full", "length": 1024, "latency_seconds": 10.0, "latency_cpu_seconds": 8.0}]
    busy = {"rows": rows, "device": "cpu", "machine": dict(MACHINE)}
    assert quiet_verdict(busy)[0] is False and "BUSY" in quiet_verdict(busy)[1]  # 40% of 2 threads
    loaded = {"rows": [], "device": "cuda", "machine": dict(MACHINE, load_average_1m=3.0)}
    assert quiet_verdict(loaded) == (False, "BUSY: load average 3.00 on 2 cores at the start")
    assert quiet_verdict({"rows": [], "device": "cuda", "machine": {}})[0] is None
