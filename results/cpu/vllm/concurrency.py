"""How many ~7.5k-token requests run at once in a fixed KV space, plain and with SpecKV (one server, one run).

One `vllm serve` with the plugin, VLLM_CPU_KVCACHE_SPACE=1 (GiB). Eight niah_single prompts of about 7,400
tokens, each asked for exactly 256 reply tokens, are sent at once, first plain, then with SpecKV arguments
(budget 128). /metrics is read every 0.5 s: requests running and waiting, KV usage, preemptions. The SpecKV
requests carry an empty draft answer (the window's queries score the keys, the engine's rule for that case):
the kept size is the budget either way, and a draft answer's own entries (tens of tokens) live only during
its prefill. Writes concurrency.json. Run from the repository root (after `make vllm-setup`):
    .venv/bin/python results/cpu/vllm/concurrency.py
"""

from __future__ import annotations

import json
import platform
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
HERE = Path(__file__).resolve().parent
N_REQUESTS, LENGTH, REPLY, BUDGET, KV_GIB = 8, 7400, 256, 128, 1


def prompts() -> list[list[int]]:
    from transformers import AutoTokenizer

    from draftapprox_integrations.evals.tasks import make_sample
    from tests.vllm.server import model_folder

    tok = AutoTokenizer.from_pretrained(model_folder())
    out = []
    for i in range(N_REQUESTS):
        s = make_sample("niah_single", LENGTH, tok, seed=11, index=i)
        out.append(list(tok(s.chat_prompt(tok), add_special_tokens=False)["input_ids"]))
    return out


def _gauge(m: dict, name: str) -> float:
    return next((v for k, v in m.items() if k.startswith(name + "{") or k == name), 0.0)


def run_wave(base: str, ids: list[list[int]], xargs: dict | None) -> dict:
    from tests.vllm.server import metrics, post

    def one(p):
        body = dict(model="smollm2", prompt=p, max_tokens=REPLY, min_tokens=REPLY, temperature=0.0)
        if xargs is not None:
            body["vllm_xargs"] = xargs
        post(base, "/v1/completions", body, timeout=3600)

    before = _gauge(metrics(base), "vllm:num_preemptions_total")
    threads = [threading.Thread(target=one, args=(p,)) for p in ids]
    started = time.perf_counter()
    for t in threads:
        t.start()
    series = []
    while any(t.is_alive() for t in threads):
        m = metrics(base)
        series.append(dict(t=round(time.perf_counter() - started, 1),
                           running=_gauge(m, "vllm:num_requests_running"),
                           waiting=_gauge(m, "vllm:num_requests_waiting"),
                           kv_usage=round(_gauge(m, "vllm:kv_cache_usage_perc"), 4)))
        time.sleep(0.5)
    for t in threads:
        t.join()
    return dict(seconds=round(time.perf_counter() - started, 1), max_running=max(s["running"] for s in series),
                max_kv_usage=max(s["kv_usage"] for s in series),
                preemptions=_gauge(metrics(base), "vllm:num_preemptions_total") - before, series=series)


def main() -> None:
    from draftapprox_integrations.vllm_plugin.xargs import speckv_xargs
    from tests.vllm.server import metrics, vllm_server

    ids = prompts()
    with vllm_server(8461, kv_cache_gib=KV_GIB, log=HERE / "tmp-concurrency-server.log") as base:
        info = next(k for k in metrics(base) if k.startswith("vllm:cache_config_info"))
        blocks = int(info.split('num_gpu_blocks="')[1].split('"')[0])
        plain = run_wave(base, ids, None)
        speckv = run_wave(base, ids, speckv_xargs([], BUDGET))
    result = dict(
        requests=N_REQUESTS, prompt_tokens=[len(p) for p in ids], reply_tokens=REPLY, budget=BUDGET,
        kv_cache_space_gib=KV_GIB, kv_blocks=blocks, block_size=128,
        plain={k: v for k, v in plain.items() if k != "series"}, speckv={k: v for k, v in speckv.items() if k != "series"},
        series=dict(plain=plain["series"], speckv=speckv["series"]),
        machine=f"{platform.machine()}, 2 cores, float32, OMP_NUM_THREADS=2",
        command=".venv/bin/python results/cpu/vllm/concurrency.py",
    )
    (HERE / "concurrency.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=1))


if __name__ == "__main__":
    main()
