"""Starts `transformers serve` on 127.0.0.1 for the tests, and stops it in every outcome.

The server runs in its own process group (so the kill reaches any worker it spawns) with one OpenMP thread:
with two threads on a busy 2-core machine each answer took 28-32 s instead of 2 s (oversubscription).
Start-up is awaited on ``/v1/models`` with a deadline; a server that exits or never answers raises
:class:`ServerStartError` with the tail of its log, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_DEADLINE_S = 180.0
STOP_GRACE_S = 10.0


class ServerStartError(RuntimeError):
    """The server exited or did not answer /v1/models before the deadline (``pid``: its process, stopped)."""

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass
class RunningServer:
    process: subprocess.Popen
    base_url: str  # the OpenAI-compatible root, ending in /v1
    model: str  # the name the server answers to
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _models_listed(base_url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as reply:
            return [m["id"] for m in json.load(reply)["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after a grace period; returns once it is gone."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # a worker left behind in the group
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def transformers_serve(model_dir: str | Path, log: Path, *, deadline_s: float = START_DEADLINE_S) -> Iterator[RunningServer]:
    """`transformers serve MODEL_DIR` on a free 127.0.0.1 port, pinned to that model, on the CPU in float32;
    yields once /v1/models lists it; stopped (process group killed) however the block ends."""
    port = free_port()
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32", "--log-level", "warning",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        ends = time.monotonic() + deadline_s
        while (listed := _models_listed(base_url)) is None:
            if process.poll() is not None:
                raise ServerStartError(
                    f"transformers serve exited with status {process.returncode} before answering; its log:\n{_log_tail(log)}",
                    process.pid,
                )
            if time.monotonic() > ends:
                raise ServerStartError(f"transformers serve did not answer {base_url}/models within {deadline_s:.0f} s; its log:\n{_log_tail(log)}",
                    process.pid,
                )
            time.sleep(0.5)
        yield RunningServer(process, base_url, listed[0] if listed else str(model_dir), log)
    finally:
        stop(process)
