"""The eval runner end to end on tiny random models: JSONL rows, resuming, table and plot; the bench on one length."""

from __future__ import annotations

import json

import pytest

from draftapprox_integrations.engine import DraftApproxEngine
from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.evals.runner import METHODS, EvalConfig, load_rows, row_key, run_eval


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_factory):
    from draftapprox_integrations.engine import SpecPCConfig

    # SpecPC scores only layers >= its starting_layer_index: the tiny draft needs a few more than that.
    draft = tiny_model_factory("llama", layers=SpecPCConfig().starting_layer_index + 2)
    target = tiny_model_factory("qwen2")
    return DraftApproxEngine(str(draft), str(target), device="cpu", dtype="float32")


def _cfg(tmp_path, **kw):
    base = dict(
        methods=list(METHODS),
        budgets=[128],
        tasks=["niah_single", "vt"],
        lengths=[512],
        num_samples=1,
        output_dir=str(tmp_path / "eval"),
        max_new_tokens=4,
        progress=False,
    )
    base.update(kw)
    return EvalConfig(**base)


def test_runner_writes_resumes_and_renders(tiny_engine, tmp_path):
    cfg = _cfg(tmp_path)
    report = run_eval(cfg, engine=tiny_engine)
    expected_rows = 2 * (1 + (len(METHODS) - 1))  # 2 tasks x (full + each other method at one budget)
    assert report.errors == 0, [r.get("error") for r in report.rows if r.get("status") != "ok"]
    assert report.new_rows == expected_rows and report.skipped_rows == 0
    lines = (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == expected_rows
    assert {r["method"] for r in rows} == set(METHODS)
    for r in rows:
        assert r["status"] == "ok" and 0.0 <= r["score"] <= 1.0
        assert r["draft"] == tiny_engine.draft_source.name.rsplit("/", 1)[-1] or "/" not in r["draft"]
        assert "/" not in r["draft"] and "/" not in r["target"]  # a folder's name, never its machine path
        if r["method"] in ("random", "perplexity"):
            assert r["compressed_tokens"] == 128 < r["original_tokens"]
        if r["method"] == "specpc":  # SpecPC's own exactness is tested with SpecPC; here: it compressed
            assert r["compressed_tokens"] < r["original_tokens"]
        if r["method"] in ("speckv", "snapkv", "streamingllm"):
            assert r["stats"]["kv_entries_kept"] <= 128 < r["stats"]["kv_entries_full"]

    table = (tmp_path / "eval" / "results.md").read_text()
    for m in METHODS:
        assert f"| {m} |" in table
    assert "## 512 tokens" in table and "niah_single" in table and "vt" in table
    png = (tmp_path / "eval" / "accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # resuming redoes nothing
    again = run_eval(cfg, engine=tiny_engine)
    assert again.new_rows == 0 and again.skipped_rows == expected_rows
    assert len((tmp_path / "eval" / "results.jsonl").read_text().splitlines()) == expected_rows

    # a lost row (and a torn last line) is redone, and only that one
    kept = lines[:-1] + ['{"method": "full", "budg']
    (tmp_path / "eval" / "results.jsonl").write_text("\n".join(kept) + "\n")
    third = run_eval(cfg, engine=tiny_engine)
    assert third.new_rows == 1 and third.skipped_rows == expected_rows - 1
    keys = [row_key(r) for r in load_rows(tmp_path / "eval" / "results.jsonl")]
    assert len(keys) == len(set(keys)) == expected_rows

    # a larger grid reuses what is done
    more = run_eval(_cfg(tmp_path, methods=["full", "random"], budgets=[128, 192]), engine=tiny_engine)
    assert more.new_rows == 2 and more.skipped_rows == 4  # random@192 for 2 tasks is new


def test_runner_rejects_bad_grids(tmp_path):
    with pytest.raises(ConfigError, match="method"):
        run_eval(_cfg(tmp_path, methods=["magic"]))
    with pytest.raises(ConfigError, match="task"):
        run_eval(_cfg(tmp_path, tasks=["nope"]))
    with pytest.raises(ConfigError, match="budgets"):
        run_eval(_cfg(tmp_path, budgets=[0]))


def test_bench_on_tiny_random_shapes(tmp_path, tiny_engine):
    from draftapprox_integrations.evals.bench import BenchConfig, measure, plot_bench

    from draftapprox_integrations.evals.tasks import make_sample

    tok = tiny_engine.target.tokenizer
    sample = make_sample("niah_single", 512, tok)
    cfg = BenchConfig(budget=128, max_new_tokens=4)
    rows = []
    for method in ("full", "snapkv", "speckv", "specpc", "speckv-pc"):
        row = measure(tiny_engine, sample.chat_prompt(tok), sample.context, sample.question, method, cfg, lambda c: sample.chat_prompt(tok, c))
        row["length"] = 512
        rows.append(row)
        assert 0 < row["ttft_seconds"] <= row["latency_seconds"]
        assert row["peak_rss_bytes"] > 0 and row["kv_bytes"] > 0
    by = {r["method"]: r for r in rows}
    assert by["snapkv"]["kv_bytes"] < by["full"]["kv_bytes"]
    assert by["specpc"]["compressed_tokens"] < by["specpc"]["original_tokens"] and by["specpc"]["compression_seconds"] > 0
    result = {"rows": rows, "draft": "tiny", "target": "tiny", "dtype": "float32", "device": "cpu", "random_weights": True, "config": {}, "machine": {}}
    plot_bench(result, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
