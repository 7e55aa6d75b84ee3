"""SpecPCCompressor: a LangChain BaseDocumentCompressor over engine.compress."""

from __future__ import annotations

import re
import time

import pytest
from langchain_core.documents import BaseDocumentCompressor, Document

from draftapprox_integrations.engine import SpecPCConfig
from draftapprox_integrations.engine.errors import ConfigError, InvalidInputError
from draftapprox_integrations.langchain import SpecPCCompressor

from tests.helpers import TINY, await_counting_ticks, words


def _docs() -> list[Document]:
    return [
        Document(page_content=words(150, 1), metadata={"source": "a.txt", "page": 1}, id="doc-a"),
        Document(page_content=words(90, 2), metadata={"source": "b.txt"}),
        Document(page_content=words(120, 3), metadata={}),
    ]


def test_is_a_document_compressor_and_cheap_to_construct():
    started = time.perf_counter()
    c = SpecPCCompressor()
    assert time.perf_counter() - started < 1.0  # no weights are loaded here
    assert isinstance(c, BaseDocumentCompressor)
    assert c._engine is None and c.engine is None
    assert c.rate == 0.1 and c.budget is None
    assert c.config == SpecPCConfig()


def test_config_fields_by_name_or_object():
    assert SpecPCCompressor(window_size=16, kernel_size=9).config == SpecPCConfig(window_size=16, kernel_size=9)
    assert SpecPCCompressor(config={"kernel_size": 7}).config.kernel_size == 7
    cfg = SpecPCConfig(pooling="avg")
    assert SpecPCCompressor(config=cfg, budget=100).config is not None
    assert SpecPCCompressor(config=cfg, budget=100).budget == 100


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rate=0.0), "rate"),
        (dict(rate=1.2), "rate"),
        (dict(rate=-1.0), "rate"),
        (dict(budget=0), "budget"),
        (dict(budget=10, rate=0.5), "exactly one"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(pooling="median"), "pooling"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        SpecPCCompressor(**kwargs)


def test_compresses_and_extends_metadata(tiny_engine):
    docs = _docs()
    c = SpecPCCompressor(engine=tiny_engine, budget=60, keep_empty=True, **TINY)
    out = c.compress_documents(docs, "Which word follows copper?")
    assert len(out) == 3
    for before, after in zip(docs, out):
        for key, value in before.metadata.items():
            assert after.metadata[key] == value
        assert after.id == before.id
        m = after.metadata
        assert m["original_tokens"] > 0
        assert m["compressed_tokens"] <= m["original_tokens"]
        assert m["compression_ratio"] == pytest.approx(m["compressed_tokens"] / m["original_tokens"], abs=1e-4)
        assert 0.0 <= m["relevance_score"] <= 1.0
        # Every kept piece is verbatim text of the original.
        for piece in re.split(r"\s*…\s*", after.page_content):
            assert piece in before.page_content
    assert sum(d.metadata["relevance_score"] for d in out) == pytest.approx(1.0, abs=1e-4)
    assert docs[0].metadata == {"source": "a.txt", "page": 1}  # inputs untouched


def test_reorder_by_relevance(tiny_engine):
    c = SpecPCCompressor(engine=tiny_engine, budget=60, keep_empty=True, reorder_by_relevance=True, **TINY)
    out = c.compress_documents(_docs(), "Which word follows copper?")
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)


def test_bad_input(tiny_engine):
    c = SpecPCCompressor(engine=tiny_engine, budget=40, **TINY)
    assert c.compress_documents([], "q?") == []
    with pytest.raises(InvalidInputError, match="query"):
        c.compress_documents(_docs(), "")
    with pytest.raises(InvalidInputError, match="query"):
        c.compress_documents(_docs(), None)  # type: ignore[arg-type]

    # Empty documents keep nothing: dropped by default, kept (with metadata) on request.
    docs = [Document(page_content="", metadata={"k": 1}), Document(page_content=words(100, 4), metadata={"k": 2})]
    out = c.compress_documents(docs, "Where is the lamp?")
    assert [d.metadata["k"] for d in out] == [2]
    kept = SpecPCCompressor(engine=tiny_engine, budget=40, keep_empty=True, **TINY).compress_documents(docs, "Where?")
    assert [d.metadata["k"] for d in kept] == [1, 2]
    assert kept[0].page_content == "" and kept[0].metadata["original_tokens"] == 0

    # Non-text content passes through unchanged, marked.
    odd = Document.model_construct(page_content=["an", "image"], metadata={"k": 3}, type="Document")
    out = c.compress_documents([odd, docs[1]], "Where is the lamp?")
    assert out[0].page_content == ["an", "image"]
    assert out[0].metadata["k"] == 3 and "not text" in out[0].metadata["specpc_skipped"]
    assert out[1].metadata["k"] == 2


def test_budget_larger_than_input_passes_through(tiny_engine):
    docs = _docs()
    out = SpecPCCompressor(engine=tiny_engine, budget=100_000).compress_documents(docs, "Anything?")
    assert [d.page_content for d in out] == [d.page_content for d in docs]
    assert all(d.metadata["compression_ratio"] == 1.0 for d in out)
    assert out[0].metadata["source"] == "a.txt"


async def test_acompress_does_not_block_the_event_loop(tiny_engine):
    c = SpecPCCompressor(engine=tiny_engine, budget=60, **TINY)
    docs = [Document(page_content=words(1500, 5))]
    out, ticks = await await_counting_ticks(c.acompress_documents(docs, "Where is the lamp?"))
    assert out[0].metadata["original_tokens"] > 1000
    assert ticks >= 3  # the loop kept running while the draft worked


async def test_runnable_form(tiny_engine):
    c = SpecPCCompressor(engine=tiny_engine, budget=60, **TINY)
    runnable = c.as_runnable()
    sync = runnable.invoke({"documents": _docs(), "query": "Where is the lamp?"})
    asynced = await runnable.ainvoke({"documents": _docs(), "query": "Where is the lamp?"})
    assert [d.page_content for d in sync] == [d.page_content for d in asynced]
    with pytest.raises(InvalidInputError):
        runnable.invoke(_docs())
