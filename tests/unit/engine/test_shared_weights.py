"""Any number of engines over one set of weights: each call answers as it does alone (FINDINGS-2 D1).

Two engines that share a loaded model run their forwards on their own loop threads at the same time. What
one of them attaches to a forward (attention capture, layer-wise KV eviction) must belong to its own forward
only. Tiny random models, float32, greedy: every threaded result is compared with the same call alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import torch

from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.capture import AttentionCapture
from draftapprox_integrations.engine.speckv.prefill import LayerwiseEviction
from draftapprox_integrations.engine.decoding import new_cache
from tests.helpers import TINY, words

CFG = SpecKVConfig(budget=24, window_size=4, lookahead_tokens=4)
LONG = words(500, 3) + " Which word came first?"
SHORT = words(60, 1) + " Which word came first?"
DOCS = [words(200, s) for s in range(2)]


def _calls(first: DraftApproxEngine, second: DraftApproxEngine):
    """(name, call) pairs: layer-wise eviction (snapkv, speckv, streamingllm), SpecPC capture, two models."""
    return [
        ("snapkv on the first", lambda: first.generate(LONG, method="snapkv", config=CFG, max_new_tokens=4).token_ids),
        ("speckv on the second", lambda: second.generate(SHORT, config=CFG, max_new_tokens=12).token_ids),
        ("streamingllm on the second", lambda: second.generate(LONG, method="streamingllm", config=CFG, max_new_tokens=3).token_ids),
        ("compress on the first", lambda: first.compress(DOCS, "Which word came first?", budget=40, **TINY).text),
    ]


def test_two_engines_over_one_set_of_weights_answer_as_alone(tiny_model_factory):
    target, draft = str(tiny_model_factory("llama")), str(tiny_model_factory("llama", seed=1))
    first = DraftApproxEngine(draft, target, device="cpu", dtype="float32").load()
    second = DraftApproxEngine(draft, target, device="cpu", dtype="float32", max_batch_size=4).load()
    assert first.target.model is second.target.model and first.lock is not second.lock
    calls = _calls(first, second)
    alone = {name: call() for name, call in calls}

    def repeat(name, call, times=6):
        return [(name, call()) for _ in range(times)]

    with cf.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(repeat, name, call) for name, call in calls]
        results = [pair for f in futures for pair in f.result(timeout=300)]
    assert len(results) == 6 * len(calls)
    assert [name for name, got in results if got != alone[name]] == []


@torch.no_grad()
def test_an_observer_sees_the_forwards_of_its_own_thread_only(tiny_model_factory):
    folder = str(tiny_model_factory("llama"))
    model = DraftApproxEngine(folder, folder, device="cpu", dtype="float32").target.model
    ids = torch.tensor([list(range(5, 45))])
    mine, other = new_cache(model), new_cache(model)
    capture = AttentionCapture(model, 4)
    eviction = LayerwiseEviction(model, mine, range(model.config.num_hidden_layers), lambda i: None, 20)
    with capture, eviction:
        thread = threading.Thread(target=lambda: model(input_ids=ids, cache=other, use_cache=True))
        thread.start()
        thread.join()
        assert capture.records == {} and eviction.cut == set()  # another thread's forward: not observed
        assert other.layers[0].keys.shape[-2] == 40  # and not cut
        model(input_ids=ids, cache=mine, use_cache=True)
    assert sorted(capture.records) == list(range(model.config.num_hidden_layers))
    assert eviction.cut == set(range(model.config.num_hidden_layers))
    assert mine.layers[0].keys.shape[-2] == 20  # this thread's cache: cut to the prompt of 20 it was given
