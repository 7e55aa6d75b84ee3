"""A fresh virtualenv with only ``pip install <repo>[langchain]``: the LangChain adapter works, the
LlamaIndex one fails with the error naming its extra, and the CLI runs on the core alone.

Slow (minutes: a pip install of torch, transformers and langchain-core) and it needs the package
index the machine's pip configuration names; ``-m "not packaging"`` leaves it out.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The metadata keys SpecPCCompressor documents for each compressed document.
ORIGINAL_TOKENS, COMPRESSED_TOKENS = "original_tokens", "compressed_tokens"
COMPRESSION_RATIO, RELEVANCE_SCORE = "compression_ratio", "relevance_score"

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("_venv_probe.py")
PIP_TIMEOUT = 1800  # seconds per pip command: generous, a cold pip cache downloads a few hundred MB
RUN_TIMEOUT = 600
# What a pip install of the project needs from the source tree (a copy: no stale build/ in the repo is
# packaged, and concurrent runs do not race on it).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "src")
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")

LLAMA_INDEX_HINT = 'pip install "draftapprox-integrations[llama-index]"'


def _torch_spec() -> str:
    """The torch requirement the Makefile installs first (TORCH_SPEC, overridable from the environment as there)."""
    spec = os.environ.get("TORCH_SPEC")
    if not spec:
        match = re.search(r"^TORCH_SPEC\s*\?=\s*(\S+)\s*$", (REPO / "Makefile").read_text(encoding="utf-8"), re.M)
        assert match, "the Makefile defines no TORCH_SPEC"
        spec = match.group(1)
    # Only an exact pin: a looser spec would let pip resolve a (CUDA, gigabytes) build from the index.
    assert re.fullmatch(r"torch==[0-9][0-9A-Za-z.+]*", spec), f"TORCH_SPEC must pin an exact torch, not {spec!r}"
    return spec


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(cmd: list[str], *, timeout: int, cwd: Path, what: str) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"{what}: no result in {timeout}s\n--- stdout (tail) ---\n{out[-4000:]}\n--- stderr (tail) ---\n{err[-8000:]}")
    print(f"{what}: {time.perf_counter() - started:.1f}s")
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout (tail) ---\n{proc.stdout[-4000:]}\n--- stderr (tail) ---\n{proc.stderr[-8000:]}"
        )
    return proc


def _text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    vocab = ["river", "stone", "quiet", "lamp", "north", "garden", "copper", "window", "seven", "market", "cloud"]
    return " ".join(rng.choice(vocab) for _ in range(n)) + "."


@pytest.fixture(scope="module")
def langchain_only_venv(tmp_path_factory) -> Path:
    """A virtualenv (no system site packages) holding torch as the Makefile pins it, then ``<repo>[langchain]``."""
    root = tmp_path_factory.mktemp("extras-venv")
    source = root / "source"
    source.mkdir()
    for item in SOURCE_ITEMS:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, source / item, ignore=COPY_IGNORE)
        else:
            shutil.copy2(src, source / item)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300, cwd=root, what="python -m venv")
    python = venv / "bin" / "python"
    torch_spec = _torch_spec()
    pip = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
    # As the Makefile does: a current pip, then the pinned torch, then the package; the pip cache is reused.
    _run(pip + ["--upgrade", "pip"], timeout=PIP_TIMEOUT, cwd=root, what="pip install --upgrade pip")
    _run(pip + [torch_spec], timeout=PIP_TIMEOUT, cwd=root, what=f"pip install {torch_spec}")
    pin = root / "torch-pin.txt"
    pin.write_text(torch_spec + "\n", encoding="utf-8")  # the package install may not move torch
    _run(pip + ["-c", str(pin), f"{source}[langchain]"], timeout=PIP_TIMEOUT, cwd=root, what="pip install .[langchain]")
    return venv


def test_langchain_extra_alone(langchain_only_venv, tiny_model_factory, tmp_path):
    venv = langchain_only_venv
    python = venv / "bin" / "python"

    # What got installed: the package (not editable), langchain-core, and nothing of the other extras.
    freeze = _run([str(python), "-m", "pip", "freeze", "--all"], timeout=300, cwd=tmp_path, what="pip freeze").stdout
    names = {re.split(r"[=@ ]", line, maxsplit=1)[0].lower().replace("_", "-") for line in freeze.splitlines() if line}
    assert "draftapprox-integrations" in names and "langchain-core" in names, freeze
    assert not names & {"llama-index-core", "matplotlib", "langchain-tests", "pytest"}, freeze
    # torch==X matches X+<local label> too (the CPU wheel is X+cpu), as pip reads the pin.
    assert re.search(r"^torch==" + re.escape(_torch_spec().split("==", 1)[1]) + r"(\+\S+)?$", freeze, re.M), freeze
    assert not any(n.startswith("nvidia-") for n in names), freeze  # no CUDA wheels came along

    # (1) + (2): compress with the LangChain adapter; LlamaIndex absent and its adapter naming the extra.
    docs = [_text(150, 1), _text(90, 2)]
    spec = {"model": str(tiny_model_factory("llama")), "docs": docs, "query": "Which river is north of the market?", "budget": 40}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    proc = _run([str(python), str(PROBE), str(spec_file)], timeout=RUN_TIMEOUT, cwd=tmp_path, what="probe script")
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    assert Path(report["package_file"]).resolve().is_relative_to(venv.resolve()), report["package_file"]
    compress = report["compress"]
    assert compress["ok"], compress.get("traceback")
    out = compress["value"]
    assert 1 <= len(out) <= 2
    kept = total = 0
    for doc in out:
        assert doc["type"] == "Document"
        meta = doc["metadata"]
        assert {ORIGINAL_TOKENS, COMPRESSED_TOKENS, COMPRESSION_RATIO, RELEVANCE_SCORE, "source"} <= set(meta), meta
        assert 0 < meta[COMPRESSED_TOKENS] < meta[ORIGINAL_TOKENS]
        original = docs[int(meta["source"].split("-")[1])]
        assert 0 < len(doc["page_content"]) < len(original)
        kept += meta[COMPRESSED_TOKENS]
        total += meta[ORIGINAL_TOKENS]
    # The budget is in draft tokens; kept spans grow to word boundaries, so allow a little over it.
    assert kept < total / 2 and kept <= spec["budget"] + 10, (kept, total)

    assert not report["llama_index"]["ok"] and report["llama_index"]["type"] == "ModuleNotFoundError", report["llama_index"]
    for key in ("adapter_package", "adapter_class"):
        r = report[key]
        assert not r["ok"] and r["type"] == "MissingExtraError" and r["missing_extra"], r
        assert LLAMA_INDEX_HINT in r["message"], r["message"]
    assert not report["matplotlib"]["ok"]  # the evals extra is not installed either

    # The console script works on the core: compress from stdin with the tiny draft.
    draftapprox = venv / "bin" / "draftapprox"
    cli = subprocess.run(
        [str(draftapprox), "compress", "-q", spec["query"], "--draft", spec["model"], "--device", "cpu",
         "--dtype", "float32", "--budget", "20", "--starting-layer-index", "1", "--window-size", "16", "--kernel-size", "5"],
        input=docs[0], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert cli.returncode == 0, f"draftapprox compress failed:\n{cli.stdout}\n{cli.stderr}"
    assert "[specpc]" in cli.stderr and 0 < len(cli.stdout.strip()) < len(docs[0]), (cli.stdout, cli.stderr)
