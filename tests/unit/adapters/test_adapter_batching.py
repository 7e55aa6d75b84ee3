"""The adapters reach the engine's batched loop: LangChain ``batch``/``abatch`` and concurrent LlamaIndex
calls decode together and answer exactly like the same calls one by one (greedy, tiny random llama)."""

from __future__ import annotations

import asyncio

import pytest

from draftapprox_integrations.engine import ConfigError, DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.langchain import ChatSpecKV, SpecKVLLM
from draftapprox_integrations.llama_index import SpecKVLLM as LlamaSpecKVLLM
from tests.helpers import words

PROMPTS = [words(70, seed) + " Which word came first?" for seed in range(4)]
OPTIONS = dict(config=SpecKVConfig(budget=24, window_size=4), max_tokens=8)


@pytest.fixture
def engine(tiny_model_factory):
    folder = str(tiny_model_factory("llama"))
    return DraftApproxEngine(folder, folder, device="cpu", dtype="float32").load()


class _BatchSizes:
    def __init__(self, engine):
        self.sizes: list[int] = []
        self._handle = engine.target.model.register_forward_hook(lambda m, a, out: self.sizes.append(out.logits.shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def test_langchain_llm_batch_is_one_engine_batch(engine):
    llm = SpecKVLLM(engine=engine, **OPTIONS)
    one_by_one = [llm.invoke(p) for p in PROMPTS]
    with _BatchSizes(engine) as seen:
        batched = llm.batch(PROMPTS)
    assert batched == one_by_one
    assert max(seen.sizes) == len(PROMPTS)


def test_langchain_chat_abatch_decodes_the_concurrent_calls_together(engine):
    chat = ChatSpecKV(engine=engine, **OPTIONS)
    one_by_one = [chat.invoke(p).content for p in PROMPTS]
    with _BatchSizes(engine) as seen:
        batched = asyncio.run(chat.abatch(PROMPTS))
    assert [m.content for m in batched] == one_by_one
    assert max(seen.sizes) > 1  # concurrent ainvokes shared decode forwards


def test_llama_index_concurrent_completions_share_forwards(engine):
    llm = LlamaSpecKVLLM(engine=engine, **OPTIONS)
    one_by_one = [llm.complete(p).text for p in PROMPTS]

    async def together():
        return await asyncio.gather(*(llm.acomplete(p) for p in PROMPTS))

    with _BatchSizes(engine) as seen:
        answers = asyncio.run(together())
    assert [a.text for a in answers] == one_by_one
    assert max(seen.sizes) > 1


@pytest.mark.parametrize("cls", [ChatSpecKV, SpecKVLLM, LlamaSpecKVLLM])
@pytest.mark.parametrize("size", [0, -2, True])
def test_max_batch_size_is_checked_at_construction(cls, size):
    with pytest.raises(ConfigError, match="max_batch_size"):
        cls(max_batch_size=size)


def test_a_bad_prompt_in_a_langchain_batch_names_its_row_before_any_work(engine):
    llm = SpecKVLLM(engine=engine, **OPTIONS)
    with _BatchSizes(engine) as seen, pytest.raises(ConfigError, match="^prompt 1: "):
        llm.batch([PROMPTS[0], "", PROMPTS[1]])
    assert seen.sizes == []
