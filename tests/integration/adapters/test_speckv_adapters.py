"""SpecKV adapters on the embedded SmolLM2 (draft and target), offline: LangChain chat + LLM, LlamaIndex LLM."""

from __future__ import annotations

import asyncio

import pytest

from draftapprox_integrations.engine import SpecKVConfig

FILLER = (
    "The harbour office opens at eight and closes at five. Ferries leave every hour in summer and every two "
    "hours in winter. The lighthouse was painted white and red in the spring. "
)
DOCUMENT = FILLER * 4 + "The access code for the archive room is 4417. " + FILLER * 4
QUESTION = "What is the access code for the archive room?"
# A plain completion prompt (no chat template) that a base or instruct model continues with the code.
COMPLETION_PROMPT = f"{DOCUMENT}\n\nTo repeat: the access code for the archive room is"
CONFIG = SpecKVConfig(budget=64, window_size=16)
OPTIONS = dict(device="cpu", config=CONFIG, max_tokens=10)


async def _ticks_while(coro_factory):
    """Run an awaitable while a ticker counts event-loop turns: a blocked loop would count none."""
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        result = await coro_factory()
    finally:
        done.set()
        await task
    return result, ticks


@pytest.fixture(scope="module")
def chat_model(smollm2_engine):
    from draftapprox_integrations.langchain import ChatSpecKV

    model = ChatSpecKV(**OPTIONS)
    assert model.get_engine() is smollm2_engine  # same references: the already loaded engine is shared
    return model


@pytest.fixture(scope="module")
def messages():
    return [("system", "Answer with the code only."), ("human", f"{DOCUMENT}\n\nQuestion: {QUESTION}")]


def test_chat_invoke_usage_and_kv_metadata(chat_model, messages):
    reply = chat_model.invoke(messages)
    assert isinstance(reply.content, str) and reply.content.strip()
    stats = reply.response_metadata["speckv"]
    assert stats["method"] == "speckv" and stats["kv_entries_kept"] == 64
    assert stats["kv_entries_full"] == reply.usage_metadata["input_tokens"] > 64
    assert stats["kv_bytes_kept"] < stats["kv_bytes_full"]
    assert reply.usage_metadata["output_tokens"] == stats["completion_tokens"] > 0
    assert reply.usage_metadata["total_tokens"] == stats["prompt_tokens"] + stats["completion_tokens"]
    assert reply.response_metadata["finish_reason"] in ("stop", "length", "eos")


def test_chat_stream_matches_invoke(chat_model, messages):
    whole = chat_model.invoke(messages)
    chunks = list(chat_model.stream(messages))
    assert "".join(c.content for c in chunks) == whole.content
    assert chunks[-1].usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"]
    assert chunks[-1].response_metadata["speckv"]["kv_entries_kept"] == 64


def test_chat_batch_and_per_call_overrides(chat_model, messages):
    first, second = chat_model.batch([messages, messages], config={"max_concurrency": 1})
    assert first.content == second.content
    snap = chat_model.invoke(messages, method="snapkv", budget=48, max_tokens=4)
    assert snap.response_metadata["speckv"]["method"] == "snapkv"
    assert snap.response_metadata["speckv"]["kv_entries_kept"] == 48
    assert snap.usage_metadata["output_tokens"] <= 4


async def test_chat_async_does_not_block_the_loop(chat_model, messages):
    reply, ticks = await _ticks_while(lambda: chat_model.ainvoke(messages))
    assert reply.content.strip() and ticks > 3

    async def collect():
        return [chunk async for chunk in chat_model.astream(messages)]

    chunks, ticks = await _ticks_while(collect)
    assert ticks > 3
    assert "".join(c.content for c in chunks) == reply.content
    assert chunks[-1].usage_metadata["input_tokens"] == reply.usage_metadata["input_tokens"]


def test_langchain_llm_invoke_stream_batch(smollm2_engine):
    from draftapprox_integrations.langchain import SpecKVLLM

    llm = SpecKVLLM(**OPTIONS, chat=True)
    prompt = f"{DOCUMENT}\n\nQuestion: {QUESTION}"
    text = llm.invoke(prompt)
    assert text.strip()
    assert "".join(llm.stream(prompt)) == text
    result = llm.generate([prompt, prompt])
    info = result.generations[0][0].generation_info
    assert info["speckv"]["kv_entries_kept"] == 64 and info["finish_reason"] in ("stop", "length", "eos")
    assert result.llm_output["token_usage"]["input_tokens"] == 2 * info["token_usage"]["input_tokens"]
    assert result.generations[1][0].text == text


async def test_langchain_llm_async(smollm2_engine):
    from draftapprox_integrations.langchain import SpecKVLLM

    llm = SpecKVLLM(**OPTIONS, chat=True)
    prompt = f"{DOCUMENT}\n\nQuestion: {QUESTION}"
    text, ticks = await _ticks_while(lambda: llm.ainvoke(prompt))
    assert text.strip() and ticks > 3

    async def collect():
        return [c async for c in llm.astream(prompt)]

    pieces, ticks = await _ticks_while(collect)
    assert "".join(pieces) == text and ticks > 3


@pytest.fixture(scope="module")
def llama_llm(smollm2_engine):
    from draftapprox_integrations.llama_index import SpecKVLLM

    return SpecKVLLM(**OPTIONS)


def test_llama_index_metadata(llama_llm, smollm2_engine):
    meta = llama_llm.metadata
    assert meta.context_window == smollm2_engine.target.model.config.max_position_embeddings == 8192
    assert meta.num_output == 10 and meta.is_chat_model  # SmolLM2-Instruct has a chat template


def test_llama_index_complete_chat_and_streams(llama_llm):
    from llama_index.core.llms import ChatMessage

    prompt = COMPLETION_PROMPT
    done = llama_llm.complete(prompt)
    assert done.additional_kwargs["speckv"]["kv_entries_kept"] == 64
    assert done.additional_kwargs["completion_tokens"] > 0 and done.text.strip()
    streamed = list(llama_llm.stream_complete(prompt))
    assert streamed[-1].text == done.text and "".join(r.delta for r in streamed) == done.text
    assert streamed[-1].additional_kwargs["completion_tokens"] == done.additional_kwargs["completion_tokens"]

    msgs = [ChatMessage(role="user", content=f"{DOCUMENT}\n\nQuestion: {QUESTION}")]
    reply = llama_llm.chat(msgs)
    assert reply.message.content.strip() and reply.additional_kwargs["prompt_tokens"] > 64
    chunks = list(llama_llm.stream_chat(msgs))
    assert chunks[-1].message.content == reply.message.content


async def test_llama_index_async(llama_llm):
    from llama_index.core.llms import ChatMessage

    prompt = COMPLETION_PROMPT
    done, ticks = await _ticks_while(lambda: llama_llm.acomplete(prompt))
    assert done.text.strip() and ticks > 3

    async def collect_completion():
        return [r async for r in await llama_llm.astream_complete(prompt)]

    streamed, ticks = await _ticks_while(collect_completion)
    assert streamed[-1].text == done.text and ticks > 3

    msgs = [ChatMessage(role="user", content=f"{DOCUMENT}\n\nQuestion: {QUESTION}")]
    reply = await llama_llm.achat(msgs)

    async def collect_chat():
        return [r async for r in await llama_llm.astream_chat(msgs)]

    chunks, ticks = await _ticks_while(collect_chat)
    assert chunks[-1].message.content == reply.message.content and ticks > 3


def test_llama_index_query_engine(llama_llm):
    from llama_index.core import Document, SummaryIndex

    # A summary index needs no embedding model: the LLM reads the nodes directly.
    index = SummaryIndex.from_documents([Document(text=DOCUMENT)])
    response = index.as_query_engine(llm=llama_llm).query(QUESTION)
    assert str(response).strip()
    assert response.source_nodes and "4417" in response.source_nodes[0].node.get_content()


def test_llm_and_compressor_share_one_copy_of_the_weights(chat_model, smollm2_engine):
    from draftapprox_integrations.langchain import SpecPCCompressor
    from draftapprox_integrations.llama_index import SpecKVLLM

    compressor = SpecPCCompressor(device="cpu")  # a draft-only engine: a different engine, the same weights
    assert compressor.get_engine() is not chat_model.get_engine()
    assert compressor.get_engine().draft is chat_model.get_engine().target is smollm2_engine.target
    assert SpecKVLLM(device="cpu").get_engine() is chat_model.get_engine()
