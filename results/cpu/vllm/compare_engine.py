"""SpecKV in `vllm serve` (the plugin) against the package engine's own SpecKV, same prompts, answers, budget.

Two phases, never at once (2 cores):
  engine: the package engine (SmolLM2-135M-Instruct as target and draft, float32, greedy) answers each
          sample with method=speckv at the budget; it records the prompt ids, the draft's answer ids (the
          lookahead), the answer ids and the score.                          -> engine.jsonl
  server: a real vLLM server with the plugin answers the same prompt ids with the same draft answer and
          budget (vllm_xargs), then without SpecKV arguments; a second server with no plugin answers plain.
          Rows compare token ids; at the first differing token the server's top-2 logprob gap is shown.
                                                                               -> server.jsonl, summary.json
  summary: summary.json again from server.jsonl.
Run from the repository root:  .venv/bin/python results/cpu/vllm/compare_engine.py engine|server
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
HERE = Path(__file__).resolve().parent
TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "vt", "fwe")
LENGTH, PER_TASK, BUDGET, SEED = 2048, 4, 128, 0
EOS = {2}  # SmolLM2-135M-Instruct's <|im_end|> (config.json eos_token_id)


def engine_phase() -> None:
    from draftapprox_integrations import get_engine
    from draftapprox_integrations.engine.prompts import encode_prompt
    from draftapprox_integrations.engine.speckv.lookahead import draft_answer
    from draftapprox_integrations.engine.steps import run_alone
    from draftapprox_integrations.evals.scoring import score_prediction
    from draftapprox_integrations.evals.tasks import generate_samples

    engine = get_engine("smollm2-135m-instruct", "smollm2-135m-instruct", device="cpu", dtype="float32")
    tok = engine.target.tokenizer
    samples = generate_samples(TASKS, [LENGTH], PER_TASK, tok, seed=SEED)
    with open(HERE / "engine.jsonl", "w") as out:
        for s in samples:
            text = s.chat_prompt(tok)
            started = time.perf_counter()
            result = engine.generate(text, method="speckv", budget=BUDGET, max_new_tokens=s.max_new_tokens,
                                     temperature=0.0, chat=False)
            seconds = time.perf_counter() - started
            prompt_ids = encode_prompt(engine.target, None, text)
            look = run_alone(draft_answer(engine.draft, prompt_ids, s.max_new_tokens))
            look_text, look_ids = look.text, look.token_ids
            row = dict(id=s.id, task=s.task, answers=s.answers, match=s.match, prompt_ids=prompt_ids,
                       max_new_tokens=s.max_new_tokens, lookahead_ids=look_ids,
                       lookahead_same_as_engine=look_text == result.stats.lookahead_text,
                       engine_ids=list(result.token_ids), engine_text=result.text,
                       engine_score=score_prediction(result.text, s.answers, s.match), engine_seconds=round(seconds, 2))
            out.write(json.dumps(row) + "\n")
            print(s.id, len(prompt_ids), row["engine_score"], repr(result.text[:60]), flush=True)


def _complete(base: str, row: dict, xargs: dict | None) -> dict:
    from tests.vllm.server import post

    body = dict(model="smollm2", prompt=row["prompt_ids"], max_tokens=row["max_new_tokens"], temperature=0.0,
                logprobs=2, return_tokens_as_token_ids=True)
    if xargs:
        body["vllm_xargs"] = xargs
    started = time.perf_counter()
    choice = post(base, "/v1/completions", body)["choices"][0]
    lp = choice["logprobs"]
    ids = [int(t.split(":")[1]) for t in lp["tokens"]]
    tops = [{int(k.split(":")[1]): v for k, v in top.items()} for top in lp["top_logprobs"]]
    if choice["finish_reason"] == "stop" and ids and ids[-1] in EOS:
        ids, tops = ids[:-1], tops[:-1]  # the engine's token ids leave the EOS out; vLLM's logprobs list it
    return dict(ids=ids, text=choice["text"], tops=tops, seconds=round(time.perf_counter() - started, 2))


def _first_difference(a: list[int], b: list[int], tops: list[dict]) -> dict | None:
    """Where two token lists part, and the server's logprob gap between its pick and the other's token there."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            top = tops[i] if i < len(tops) else {}
            gap = (top[y] - top[x]) if x in top and y in top else None
            return dict(index=i, engine=x, server=y, server_logprob_gap=gap)
    if len(a) != len(b):
        return dict(index=min(len(a), len(b)), engine=None, server=None, server_logprob_gap=None)
    return None


def server_phase() -> None:
    from draftapprox_integrations.evals.scoring import score_prediction
    from draftapprox_integrations.vllm_plugin.xargs import speckv_xargs
    from tests.vllm.server import vllm_server

    rows = [json.loads(line) for line in open(HERE / "engine.jsonl")]
    with vllm_server(8431, log=HERE / "tmp-plugin-server.log") as base:
        for row in rows:
            sk = _complete(base, row, speckv_xargs(row["lookahead_ids"], BUDGET))
            plain = _complete(base, row, None)
            row.update(server_ids=sk["ids"], server_text=sk["text"], server_seconds=sk["seconds"],
                       server_score=score_prediction(sk["text"], row["answers"], row["match"]),
                       difference=_first_difference(row["engine_ids"], sk["ids"], sk["tops"]),
                       plain_plugin_ids=plain["ids"], plain_plugin_text=plain["text"])
            print(row["id"], "equal" if row["difference"] is None else row["difference"], flush=True)
    with vllm_server(8432, plugin=False, log=HERE / "tmp-noplugin-server.log") as base:
        for row in rows:
            row["plain_noplugin_ids"] = _complete(base, row, None)["ids"]
    with open(HERE / "server.jsonl", "w") as out:
        for row in rows:
            out.write(json.dumps({k: v for k, v in row.items() if k != "prompt_ids"} | {"prompt_tokens": len(row["prompt_ids"])}) + "\n")
    summary_phase()


def _strip_eos(ids: list[int]) -> list[int]:
    return ids[:-1] if ids and ids[-1] in EOS else ids


def summary_phase() -> None:
    """summary.json from server.jsonl. Token lists are compared without a final EOS: the engine's ids leave it
    out, vLLM's logprobs list it (rows written before _complete dropped it carry it)."""
    from draftapprox_integrations.evals.scoring import score_prediction

    rows = [json.loads(line) for line in open(HERE / "server.jsonl")]
    for r in rows:
        r["equal"] = _strip_eos(r["engine_ids"]) == _strip_eos(r["server_ids"])
        r["full_kv_score"] = score_prediction(r["plain_plugin_text"], r["answers"], r["match"])
    mean = lambda key: round(sum(r[key] for r in rows) / len(rows), 4)  # noqa: E731
    summary = dict(
        n=len(rows), budget=BUDGET, length=LENGTH, tasks=TASKS, per_task=PER_TASK, seed=SEED,
        speckv_equal_to_engine=sum(r["equal"] for r in rows),
        speckv_differs_from_full_kv=sum(_strip_eos(r["server_ids"]) != _strip_eos(r["plain_plugin_ids"]) for r in rows),
        engine_mean_score=mean("engine_score"), server_mean_score=mean("server_score"),
        full_kv_mean_score=mean("full_kv_score"),
        same_score=sum(r["engine_score"] == r["server_score"] for r in rows),
        plain_equal_to_no_plugin=sum(_strip_eos(r["plain_plugin_ids"]) == _strip_eos(r["plain_noplugin_ids"]) for r in rows),
        differences=[dict(id=r["id"], **r["difference"]) for r in rows if not r["equal"]],
        per_sample=[dict(id=r["id"], equal=r["equal"], engine=r["engine_score"], server=r["server_score"],
                         full_kv=r["full_kv_score"], prompt_tokens=r["prompt_tokens"],
                         answer_tokens=len(r["lookahead_ids"])) for r in rows],
        machine=f"{platform.machine()}, {platform.processor() or 'cpu'}, 2 cores, float32, OMP_NUM_THREADS=2",
        command="make vllm-setup && .venv/bin/python results/cpu/vllm/compare_engine.py engine && "
                ".venv/bin/python results/cpu/vllm/compare_engine.py server",
    )
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_sample"}, indent=1))


if __name__ == "__main__":
    {"engine": engine_phase, "server": server_phase, "summary": summary_phase}[sys.argv[1]]()
