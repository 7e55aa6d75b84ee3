"""The GPU bench's dry run (``--grid large-gpu --small``): every section runs end to end on toy shapes, on
whatever device this is, and writes its records. Not a measurement: it keeps the one-command GPU check
working between the sessions that have a GPU."""

from __future__ import annotations

import json

from draftapprox_integrations.cli import main


def test_the_gpu_bench_runs_every_section_on_toy_shapes(tmp_path, capsys):
    assert main(["bench", "--grid", "large-gpu", "--small", "--out", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "gpu-bench.jsonl").read_text().splitlines()]
    done = {r["section"] for r in records if r.get("done")}
    assert done == {"build", "warmup", "correctness", "decode", "latency", "throughput", "specpc", "memory_bound"}
    assert not [r for r in records if "error" in r or "skipped" in r]
    correctness = [r for r in records if r["section"] == "correctness" and "rows" in r]
    assert [r["graphed_equals_eager"] for r in correctness] == [r["rows"] for r in correctness]
    latency = [r for r in records if r["section"] == "latency" and "ttft_synced" in r]
    assert {r["method"] for r in latency} == {"full", "speckv"}
    assert all(0.5 < r["stats_vs_wall"] <= 1.0 for r in latency)  # the stats' TTFT is a synced part of the wall
    throughput = [r for r in records if r["section"] == "throughput"]
    assert all(r["same_answers"] == r["rows"] for r in throughput if "rows" in r)
