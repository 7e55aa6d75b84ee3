"""SpecPCNodePostprocessor: a LlamaIndex BaseNodePostprocessor over engine.compress."""

from __future__ import annotations

import time

import pytest
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import ImageNode, MetadataMode, NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

from draftapprox_integrations.engine import SpecPCConfig
from draftapprox_integrations.engine.errors import ConfigError, InvalidInputError
from draftapprox_integrations.llama_index import SpecPCNodePostprocessor

from tests.helpers import TINY, await_counting_ticks, words


def _nodes() -> list[NodeWithScore]:
    a = TextNode(text=words(150, 1), id_="node-a", metadata={"file": "a.txt"})
    a.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="doc-1")
    b = TextNode(text=words(100, 2), id_="node-b", metadata={"file": "b.txt", "page": 4})
    c = TextNode(text=words(80, 3), id_="node-c")
    return [NodeWithScore(node=a, score=0.9), NodeWithScore(node=b, score=0.5), NodeWithScore(node=c, score=None)]


def test_is_a_postprocessor_and_cheap_to_construct():
    started = time.perf_counter()
    p = SpecPCNodePostprocessor(kernel_size=9)
    assert time.perf_counter() - started < 1.0
    assert isinstance(p, BaseNodePostprocessor)
    assert p._engine is None and p.rate == 0.1
    assert p.config == SpecPCConfig(kernel_size=9)
    for bad in (dict(rate=0.0), dict(rate=2.0), dict(budget=0), dict(budget=5, rate=0.5)):
        with pytest.raises((ConfigError, ValueError)):
            SpecPCNodePostprocessor(**bad)


def test_ids_scores_metadata_preserved_text_compressed(tiny_engine):
    nodes = _nodes()
    p = SpecPCNodePostprocessor(engine=tiny_engine, budget=50, keep_empty=True, **TINY)
    out = p.postprocess_nodes(nodes, query_str="Which word follows copper?")
    assert [n.node.node_id for n in out] == ["node-a", "node-b", "node-c"]
    assert [n.score for n in out] == [0.9, 0.5, None]
    assert out[0].node.relationships[NodeRelationship.SOURCE].node_id == "doc-1"
    assert out[1].node.metadata["page"] == 4 and out[1].node.metadata["file"] == "b.txt"
    assert sum(n.node.metadata["compressed_tokens"] for n in out) < sum(n.node.metadata["original_tokens"] for n in out)
    for before, after in zip(nodes, out):
        assert len(after.node.text) < len(before.node.text)
        m = after.node.metadata
        assert m["compression_ratio"] == pytest.approx(m["compressed_tokens"] / m["original_tokens"], abs=1e-4)
        # Our bookkeeping is hidden from the LLM and the embedder.
        llm_view = after.node.get_content(metadata_mode=MetadataMode.LLM)
        assert "compressed_tokens" not in llm_view and "relevance_score" not in llm_view
        assert "compressed_tokens" not in after.node.get_content(metadata_mode=MetadataMode.EMBED)
    assert "compressed_tokens" not in nodes[0].node.metadata  # inputs untouched
    assert sum(n.node.metadata["relevance_score"] for n in out) == pytest.approx(1.0, abs=1e-4)


def test_bad_input(tiny_engine):
    p = SpecPCNodePostprocessor(engine=tiny_engine, budget=40, **TINY)
    with pytest.raises(InvalidInputError, match="needs a query"):
        p.postprocess_nodes(_nodes())
    with pytest.raises(InvalidInputError, match="needs a query"):
        p.postprocess_nodes(_nodes(), query_str="  ")
    assert p.postprocess_nodes([], query_str="q?") == []

    # An image node without text passes through, marked; an empty text node is dropped unless keep_empty.
    image = NodeWithScore(node=ImageNode(image="aGVsbG8=", id_="img", metadata={"kind": "photo"}), score=0.3)
    empty = NodeWithScore(node=TextNode(text="", id_="empty", metadata={"x": 1}), score=0.2)
    out = p.postprocess_nodes([image, empty, *_nodes()[:1]], query_str="Where is the lamp?")
    assert [n.node.node_id for n in out] == ["img", "node-a"]
    assert out[0].node.metadata["kind"] == "photo" and "specpc_skipped" in out[0].node.metadata
    assert out[0].node.image == "aGVsbG8=" and out[0].score == 0.3
    kept = SpecPCNodePostprocessor(engine=tiny_engine, budget=40, keep_empty=True, **TINY).postprocess_nodes(
        [empty, *_nodes()[:1]], query_str="Where?"
    )
    assert [n.node.node_id for n in kept] == ["empty", "node-a"] and kept[0].node.metadata["x"] == 1

    # Budget larger than the input: text passes through unchanged.
    nodes = _nodes()
    same = SpecPCNodePostprocessor(engine=tiny_engine, budget=100_000).postprocess_nodes(nodes, query_str="Anything?")
    assert [n.node.text for n in same] == [n.node.text for n in nodes]


async def test_async_postprocess(tiny_engine):
    p = SpecPCNodePostprocessor(engine=tiny_engine, budget=50, **TINY)
    nodes = [NodeWithScore(node=TextNode(text=words(1500, 7), id_="long"), score=1.0)]
    out, ticks = await await_counting_ticks(p.apostprocess_nodes(nodes, query_str="Where is the lamp?"))
    assert out[0].node.node_id == "long" and out[0].node.metadata["original_tokens"] > 1000
    assert ticks >= 3
