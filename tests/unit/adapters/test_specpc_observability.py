"""Compression is observable: each adapter call reports its token accounting through the framework's callbacks /
events, and a long (chunked) input logs its plan at INFO and shows a progress bar only when asked."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.schema import NodeWithScore, TextNode

from draftapprox_integrations.cli import main
from draftapprox_integrations.engine import DraftApproxEngine
from draftapprox_integrations.langchain import SpecPCCompressor
from draftapprox_integrations.langchain.compressor import COMPRESSION_EVENT
from draftapprox_integrations.llama_index import SpecPCNodePostprocessor
from draftapprox_integrations.llama_index.postprocessor import SPECPC_PAYLOAD, SpecPCCompressionEvent

from tests.helpers import TINY, words

QUERY = "Where is the copper lamp?"
STAT_KEYS = {"documents_in", "documents_out", "original_tokens", "compressed_tokens", "saved_tokens",
             "compression_ratio", "budget", "chunks", "passthrough", "draft_model", "seconds"}


class Recorder(BaseCallbackHandler):
    """Keeps every chain start / end / error and custom event it sees."""

    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.ends: list[dict] = []
        self.errors: list[BaseException] = []
        self.custom: list[tuple[str, Any, Any]] = []

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kwargs):
        self.starts.append({"name": kwargs.get("name"), "inputs": inputs, "run_id": run_id, "parent": parent_run_id})

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        self.ends.append({"outputs": outputs, "run_id": run_id})

    def on_chain_error(self, error, *, run_id, **kwargs):
        self.errors.append(error)

    def on_custom_event(self, name, data, *, run_id, **kwargs):
        self.custom.append((name, data, run_id))


def _docs() -> list[Document]:
    return [
        Document(page_content=words(150, 1), metadata={"source": "a.txt", "relevance_score": "mine"}),
        Document(page_content=words(120, 2), metadata={}),
    ]


def _check_stats(stats: dict, returned: list, metadata_of) -> None:
    assert set(stats) == STAT_KEYS
    assert stats["documents_in"] == 2 and stats["documents_out"] == len(returned)
    assert stats["original_tokens"] == sum(metadata_of(d)["specpc_original_tokens"] for d in returned)
    assert stats["compressed_tokens"] == sum(metadata_of(d)["specpc_compressed_tokens"] for d in returned)
    assert stats["saved_tokens"] == stats["original_tokens"] - stats["compressed_tokens"] > 0
    assert stats["compressed_tokens"] <= stats["budget"] == 40
    assert stats["chunks"] == 1 and stats["passthrough"] is False
    assert isinstance(stats["seconds"], float) and stats["seconds"] >= 0.0


def test_langchain_call_is_a_chain_run_with_its_token_accounting(tiny_engine):
    recorder = Recorder()
    docs = _docs()
    out = SpecPCCompressor(engine=tiny_engine, budget=40, **TINY).compress_documents(docs, QUERY, callbacks=[recorder])
    assert [s["name"] for s in recorder.starts] == ["SpecPCCompressor"]
    assert recorder.starts[0]["inputs"]["documents"] == docs and recorder.starts[0]["inputs"]["query"] == QUERY
    (end,) = recorder.ends
    assert end["outputs"]["documents"] == out
    _check_stats(end["outputs"]["specpc"], out, lambda d: d.metadata)
    (name, data, run_id), = recorder.custom
    assert name == COMPRESSION_EVENT and run_id == recorder.starts[0]["run_id"]
    assert data["documents"] == out and {k: data[k] for k in STAT_KEYS} == end["outputs"]["specpc"]
    # the metadata that came in goes out unchanged apart from the added keys
    assert out[0].metadata["source"] == "a.txt" and out[0].metadata["relevance_score"] == "mine"
    assert docs[0].metadata == {"source": "a.txt", "relevance_score": "mine"}


def test_langchain_run_nests_under_a_retriever_and_reaches_the_lcel_runnable(tiny_engine):
    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return _docs()

    from langchain_classic.retrievers import ContextualCompressionRetriever

    compressor = SpecPCCompressor(engine=tiny_engine, budget=40, **TINY)
    recorder = Recorder()
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=Fixed())
    out = retriever.invoke(QUERY, config={"callbacks": [recorder]})
    (start,) = [s for s in recorder.starts if s["name"] == "SpecPCCompressor"]
    assert start["parent"] is not None and [d.page_content for d in recorder.custom[0][1]["documents"]] == [d.page_content for d in out]

    recorder = Recorder()
    compressor.as_runnable().invoke({"documents": _docs(), "query": QUERY}, config={"callbacks": [recorder]})
    names = [s["name"] for s in recorder.starts]
    assert names == ["SpecPCCompressor", "SpecPCCompressor"]  # the RunnableLambda, then the call inside it
    assert recorder.starts[1]["parent"] == recorder.starts[0]["run_id"] and len(recorder.custom) == 1


def test_langchain_failure_is_reported_as_a_chain_error():
    class Broken:
        draft_source = None

        def compress(self, *args, **kwargs):
            raise RuntimeError("draft exploded")

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="draft exploded"):
        SpecPCCompressor(engine=Broken(), budget=40).compress_documents(_docs(), QUERY, callbacks=[recorder])
    assert len(recorder.starts) == 1 and [str(e) for e in recorder.errors] == ["draft exploded"]
    assert recorder.ends == [] and recorder.custom == []


def _nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=words(150, 1), metadata={"source": "a.txt", "relevance_score": "mine"}), score=0.5),
        NodeWithScore(node=TextNode(text=words(120, 2)), score=0.4),
    ]


class _Collect(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "_Collect"

    def handle(self, event, **kwargs) -> None:
        if isinstance(event, SpecPCCompressionEvent):
            self.events.append(event)


def test_llama_index_call_sends_a_callback_event_and_an_instrumentation_event(tiny_engine):
    debug = LlamaDebugHandler()
    root = get_dispatcher()
    handler = _Collect(events=[])
    root.add_event_handler(handler)
    try:
        pp = SpecPCNodePostprocessor(engine=tiny_engine, budget=40, callback_manager=CallbackManager([debug]), **TINY)
        nodes = _nodes()
        out = pp.postprocess_nodes(nodes, query_str=QUERY)
    finally:
        root.event_handlers.remove(handler)
    (pair,) = debug.get_event_pairs(CBEventType.RERANKING)
    start, end = pair
    assert start.payload["nodes"] == nodes and start.payload["query_str"] == QUERY
    assert end.payload["nodes"] == out
    _check_stats(end.payload[SPECPC_PAYLOAD], out, lambda n: n.node.metadata)
    (event,) = handler.events
    assert event.stats == end.payload[SPECPC_PAYLOAD] and event.nodes == out and event.query_str == QUERY
    assert out[0].node.metadata["relevance_score"] == "mine" and nodes[0].node.metadata == {"source": "a.txt", "relevance_score": "mine"}


# -- long inputs: INFO logs and the progress bar --------------------------------------------------------


@pytest.fixture(scope="module")
def short_context_model(tiny_model_factory) -> str:
    """A tiny draft whose context (256 tokens) forces a few hundred words into several chunks."""
    return str(tiny_model_factory("llama", max_position_embeddings=256))


def test_chunked_scoring_logs_at_info_and_shows_a_bar_only_when_asked(short_context_model, capsys, caplog):
    engine = DraftApproxEngine(short_context_model, None, device="cpu", dtype="float32")
    text = words(600, 4)
    with caplog.at_level(logging.INFO, logger="draftapprox_integrations.engine.specpc.scorer"):
        quiet = engine.compress(text, QUERY, rate=0.1, **TINY)
    assert quiet.chunks > 1
    assert f"in {quiet.chunks} chunks" in caplog.text
    assert f"chunk {quiet.chunks}/{quiet.chunks}" in caplog.text
    assert "SpecPC scoring" not in capsys.readouterr().err  # library calls: no bar by default
    shown = engine.compress(text, QUERY, rate=0.1, progress=True, **TINY)
    assert "SpecPC scoring" in capsys.readouterr().err and shown.text == quiet.text
    short = engine.compress(words(20, 5), QUERY, budget=5, progress=True, **TINY)
    assert short.chunks == 1 and "SpecPC scoring" not in capsys.readouterr().err  # one chunk: nothing to show


def test_cli_compress_shows_the_bar_by_default_and_not_with_no_progress(short_context_model, tmp_path, capsys):
    path = tmp_path / "long.txt"
    path.write_text(words(600, 4), encoding="utf-8")
    base = ["compress", str(path), "-q", QUERY, "--rate", "0.1", "--draft", short_context_model, "--device", "cpu",
            "--dtype", "float32", "--starting-layer-index", "1", "--window-size", "16", "--kernel-size", "5"]
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "SpecPC scoring" in err and "chunk(s)" in err
    assert main([*base, "--no-progress"]) == 0
    assert "SpecPC scoring" not in capsys.readouterr().err
