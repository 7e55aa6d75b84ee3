"""The same bad input gives the same error type in the LangChain and LlamaIndex adapters, before any model
work (FINDINGS BUG-9 for LlamaIndex chat; the constructor and document cases of BUG-7/8/14/15 side by side)."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from langchain_core.documents import Document as LCDocument
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import AudioBlock, ChatMessage, DocumentBlock, ImageBlock, TextBlock
from llama_index.core.schema import NodeWithScore, TextNode

from draftapprox_integrations.engine import DraftApproxEngine
from draftapprox_integrations.engine.errors import ConfigError, InvalidInputError, UnknownOptionError

SPECKV_CLASSES = ["langchain.ChatSpecKV", "langchain.SpecKVLLM", "llama_index.SpecKVLLM"]
SPECPC_CLASSES = ["langchain.SpecPCCompressor", "llama_index.SpecPCNodePostprocessor"]


def adapter(name: str) -> type:
    package, cls = name.split(".")
    return getattr(importlib.import_module(f"draftapprox_integrations.{package}"), cls)


@pytest.fixture
def fresh_engine(tiny_model_factory):
    """An unloaded engine (draft and target: the tiny llama): a check passes only if it stays unloaded."""
    folder = str(tiny_model_factory("llama"))
    return DraftApproxEngine(folder, folder, device="cpu", dtype="float32")


# -- construction: one error type per bad input, in all five adapters --------------------------------------

BAD_CONSTRUCTION = [
    (dict(budgett=64), UnknownOptionError),
    (dict(budget=True), ConfigError),
    (dict(budget="64"), ConfigError),
    (dict(budget=0), ConfigError),
    (dict(config={"bogus": 1}), ConfigError),
    (dict(config="abc"), ConfigError),
]


@pytest.mark.parametrize("kwargs, error", BAD_CONSTRUCTION, ids=[str(k) for k, _ in BAD_CONSTRUCTION])
def test_same_bad_construction_same_error_type(kwargs, error):
    types = set()
    for name in SPECKV_CLASSES + SPECPC_CLASSES:
        with pytest.raises(error) as caught:
            adapter(name)(**kwargs)
        types.add(type(caught.value))
    assert types == {error}


# -- documents / nodes ------------------------------------------------------------------------------------


def _compress(name: str, engine, documents, query):
    model = adapter(name)(engine=engine, budget=20)
    if name.startswith("langchain"):
        return model.compress_documents(documents, query)
    return model.postprocess_nodes(documents, query_str=query)


def _as_framework(name: str, texts):
    if name.startswith("langchain"):
        return [LCDocument(page_content=t) for t in texts]
    return [NodeWithScore(node=TextNode(text=t)) for t in texts]


@pytest.mark.parametrize("name", SPECPC_CLASSES)
def test_same_bad_documents_same_error(name, fresh_engine):
    for documents in ("a string", ["a string"], 42):
        with pytest.raises(InvalidInputError):
            _compress(name, fresh_engine, documents, "code?")
    for query in ("", "   ", None):
        with pytest.raises(InvalidInputError, match="query"):
            _compress(name, fresh_engine, _as_framework(name, ["The code is 4521."]), query)
    assert _compress(name, fresh_engine, [], "code?") == []
    assert fresh_engine.loaded is False


# -- BUG-9: non-text content in chat ------------------------------------------------------------------------

NON_TEXT_BLOCKS = [
    ImageBlock(image=b"\x89PNG fake", image_mimetype="image/png"),
    AudioBlock(audio=b"RIFF fake", format="wav"),
    DocumentBlock(data=b"%PDF fake", document_mimetype="application/pdf"),
]


def _llama_chat_forms(llm, messages):
    """The four chat forms, each run to its first response."""

    async def first(agen_coro):
        agen = await agen_coro
        async for item in agen:
            return item

    return {
        "chat": lambda: llm.chat(messages),
        "stream_chat": lambda: next(iter(llm.stream_chat(messages))),
        "achat": lambda: asyncio.run(llm.achat(messages)),
        "astream_chat": lambda: asyncio.run(first(llm.astream_chat(messages))),
    }


@pytest.mark.parametrize("block", NON_TEXT_BLOCKS, ids=lambda b: b.block_type)
def test_llama_index_chat_refuses_non_text_blocks(block, fresh_engine):
    from draftapprox_integrations.llama_index import SpecKVLLM

    llm = SpecKVLLM(engine=fresh_engine, budget=64, max_tokens=2)
    messages = [ChatMessage(role="user", blocks=[block, TextBlock(text="Describe the image.")])]
    for form, run in _llama_chat_forms(llm, messages).items():
        with pytest.raises(InvalidInputError, match=f"text only; got a '{block.block_type}' content block"):
            run()
    assert fresh_engine.loaded is False


def test_stream_chat_refuses_when_called_not_when_read(fresh_engine):
    from draftapprox_integrations.llama_index import SpecKVLLM

    llm = SpecKVLLM(engine=fresh_engine, budget=64)
    image = [ChatMessage(role="user", blocks=[NON_TEXT_BLOCKS[0]])]
    with pytest.raises(InvalidInputError):
        llm.stream_chat(image)  # no iteration needed
    with pytest.raises(ConfigError, match="unsupported option"):
        llm.stream_complete("hi", frequency_penalty=0.5)
    assert fresh_engine.loaded is False


def test_an_image_is_refused_by_both_chat_adapters(fresh_engine):
    from draftapprox_integrations.langchain import ChatSpecKV
    from draftapprox_integrations.llama_index import SpecKVLLM

    lc_image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "Describe it."])
    li_image = ChatMessage(role="user", blocks=[NON_TEXT_BLOCKS[0], TextBlock(text="Describe it.")])
    errors = []
    for run in (
        lambda: ChatSpecKV(engine=fresh_engine, budget=64).invoke([lc_image]),
        lambda: SpecKVLLM(engine=fresh_engine, budget=64).chat([li_image]),
    ):
        with pytest.raises(InvalidInputError, match="text only") as caught:
            run()
        errors.append(type(caught.value))
    assert errors[0] is errors[1]
    assert fresh_engine.loaded is False


def test_llama_index_text_blocks_still_work():
    from draftapprox_integrations.llama_index.llms import to_engine_messages

    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", blocks=[TextBlock(text="The code is "), TextBlock(text="4521.")]),
        ChatMessage(role="assistant", content=None),
    ]
    assert to_engine_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The code is 4521."},
        {"role": "assistant", "content": ""},
    ]
    with pytest.raises(InvalidInputError, match="list of ChatMessage"):
        to_engine_messages("hello")
