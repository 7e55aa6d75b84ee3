"""The SpecPC adapters keep what the user passed in (FINDINGS BUG-10, BUG-11, BUG-12, BUG-15).

Bad documents raise InvalidInputError before the draft runs; user metadata is never overwritten (ours goes
under ``specpc_*`` keys, and under the plain names only where they are free); LlamaIndex nodes are shallow
copies (metadata objects come back as the same objects, the inputs are not mutated) and every node type that
carries text is compressed.
"""

from __future__ import annotations

import threading

import pytest
from langchain_core.documents import Document as LCDocument
from llama_index.core.schema import Document, MediaResource, MetadataMode, Node, NodeWithScore, TextNode

from draftapprox_integrations.engine import DraftApproxEngine
from draftapprox_integrations.engine.errors import InvalidInputError
from draftapprox_integrations.langchain import SpecPCCompressor
from draftapprox_integrations.llama_index import SpecPCNodePostprocessor
from tests.helpers import TINY, words

QUERY = "Which word follows copper?"
OURS = ("specpc_original_tokens", "specpc_compressed_tokens", "specpc_compression_ratio", "specpc_relevance_score")


class Obj:
    """A custom object (not deep-copyable to an equal object: no __eq__)."""


@pytest.fixture
def fresh_engine(tiny_model_factory):
    """An unloaded draft-only engine, to check that bad input fails before any model work."""
    return DraftApproxEngine(str(tiny_model_factory("llama")), None, device="cpu", dtype="float32")


# -- BUG-15: bad documents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "documents, match",
    [
        ("a string", "list of langchain_core Document objects; got a str"),
        (["a string"], "item 0 is a str"),
        ([LCDocument(page_content="ok"), {"page_content": "x"}], "item 1 is a dict"),
        (LCDocument(page_content="one"), "wrap it in a list"),
        (None, "got a NoneType"),
    ],
)
def test_langchain_bad_documents(fresh_engine, documents, match):
    compressor = SpecPCCompressor(engine=fresh_engine, budget=20, **TINY)
    with pytest.raises(InvalidInputError, match=match):
        compressor.compress_documents(documents, QUERY)
    assert fresh_engine.loaded is False


def test_langchain_documents_may_be_a_tuple_or_generator(tiny_engine):
    compressor = SpecPCCompressor(engine=tiny_engine, budget=30, **TINY)
    docs = (LCDocument(page_content=words(80, 1)), LCDocument(page_content=words(60, 2)))
    assert len(compressor.compress_documents(docs, QUERY)) == len(compressor.compress_documents(iter(docs), QUERY))


@pytest.mark.parametrize(
    "nodes, match",
    [("a string", "got a str"), ([TextNode(text="x")], "wrap it"), (["x"], "item 0 is a str"), (None, "NoneType")],
)
def test_llama_index_bad_nodes(fresh_engine, nodes, match):
    postprocessor = SpecPCNodePostprocessor(engine=fresh_engine, budget=20, **TINY)
    with pytest.raises(InvalidInputError, match=match):
        postprocessor.postprocess_nodes(nodes, query_str=QUERY)
    with pytest.raises(InvalidInputError, match="needs a query"):  # a string where the QueryBundle goes
        postprocessor.postprocess_nodes([NodeWithScore(node=TextNode(text="x"))], QUERY)
    assert fresh_engine.loaded is False


# -- BUG-12: user metadata is never overwritten ----------------------------------------------------------------

USER = {"relevance_score": 0.87, "original_tokens": "mine", "source": "a.txt"}


def _check_ours(meta: dict, user: dict) -> None:
    for key, value in user.items():
        assert meta[key] is value  # the user's value, the same object
    assert all(key in meta for key in OURS)
    assert isinstance(meta["specpc_original_tokens"], int) and meta["specpc_original_tokens"] > 0
    assert 0.0 <= meta["specpc_relevance_score"] <= 1.0
    # Plain names stay readable where they are free.
    assert meta["compressed_tokens"] == meta["specpc_compressed_tokens"]
    assert meta["compression_ratio"] == meta["specpc_compression_ratio"]


def test_langchain_keeps_user_metadata(tiny_engine):
    doc = LCDocument(page_content=words(120, 1), metadata=dict(USER))
    out = SpecPCCompressor(engine=tiny_engine, budget=30, **TINY).compress_documents([doc], QUERY)[0]
    _check_ours(out.metadata, USER)
    assert doc.metadata == USER  # the input is not changed


def test_langchain_plain_names_when_free(tiny_engine):
    doc = LCDocument(page_content=words(120, 1), metadata={"source": "a.txt"})
    meta = SpecPCCompressor(engine=tiny_engine, budget=30, **TINY).compress_documents([doc], QUERY)[0].metadata
    for key in OURS:
        assert meta[key.removeprefix("specpc_")] == meta[key]


def test_llama_index_keeps_user_metadata_and_does_not_hide_it(tiny_engine):
    node = TextNode(text=words(120, 1), metadata=dict(USER), excluded_llm_metadata_keys=["source"])
    out = SpecPCNodePostprocessor(engine=tiny_engine, budget=30, **TINY).postprocess_nodes(
        [NodeWithScore(node=node, score=0.5)], query_str=QUERY
    )[0].node
    _check_ours(out.metadata, USER)
    assert "relevance_score" not in out.excluded_llm_metadata_keys  # the user's key: still shown to the LLM
    assert "original_tokens" not in out.excluded_embed_metadata_keys
    llm_view = out.get_content(metadata_mode=MetadataMode.LLM)
    assert "relevance_score: 0.87" in llm_view and "specpc_" not in llm_view and "compressed_tokens" not in llm_view
    assert node.excluded_llm_metadata_keys == ["source"] and node.metadata == USER  # input untouched


def test_same_metadata_keys_in_both_frameworks(tiny_engine):
    text = words(120, 1)
    lc = SpecPCCompressor(engine=tiny_engine, budget=30, **TINY).compress_documents(
        [LCDocument(page_content=text, metadata=dict(USER))], QUERY
    )[0]
    li = SpecPCNodePostprocessor(engine=tiny_engine, budget=30, **TINY).postprocess_nodes(
        [NodeWithScore(node=TextNode(text=text, metadata=dict(USER)))], query_str=QUERY
    )[0]
    assert lc.metadata == li.node.metadata and lc.page_content == li.node.text


# -- BUG-10: shallow copies, no deep copy ----------------------------------------------------------------------


def test_llama_index_metadata_objects_are_not_copied(tiny_engine):
    lock, obj, nested = threading.Lock(), Obj(), {"a": [1, 2]}
    node = TextNode(text=words(120, 1), id_="n1", metadata={"lock": lock, "obj": obj, "nested": nested})
    before = (node.text, dict(node.metadata), list(node.excluded_llm_metadata_keys))
    item = NodeWithScore(node=node, score=0.7)
    out = SpecPCNodePostprocessor(engine=tiny_engine, budget=30, **TINY).postprocess_nodes([item], query_str=QUERY)[0]
    meta = out.node.metadata
    assert meta["lock"] is lock and meta["obj"] is obj and meta["nested"] is nested
    assert out.node is not node and out.node.node_id == "n1" and out.score == 0.7
    assert len(out.node.text) < len(node.text)
    assert (node.text, node.metadata, node.excluded_llm_metadata_keys) == before  # the input node is not mutated
    assert item.node is node


def test_llama_index_skipped_and_passed_through_nodes_are_copies_too(tiny_engine):
    lock = threading.Lock()
    node = Node(metadata={"lock": lock})  # no text resource: skipped
    out = SpecPCNodePostprocessor(engine=tiny_engine, budget=30, **TINY).postprocess_nodes(
        [NodeWithScore(node=node), NodeWithScore(node=TextNode(text=words(60, 2)))], query_str=QUERY
    )
    assert out[0].node.metadata["lock"] is lock and "specpc_skipped" in out[0].node.metadata
    assert "specpc_skipped" not in node.metadata


# -- BUG-11: every node type that carries text --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda text: Document(text=text, id_="d1", metadata={"k": 1}),
        lambda text: Node(text_resource=MediaResource(text=text, mimetype="text/plain"), id_="d1", metadata={"k": 1}),
        lambda text: TextNode(text=text, id_="d1", metadata={"k": 1}),
    ],
    ids=["Document", "Node", "TextNode"],
)
def test_llama_index_compresses_every_text_node_type(tiny_engine, make):
    text = words(150, 3)
    node = make(text)
    out = SpecPCNodePostprocessor(engine=tiny_engine, budget=30, **TINY).postprocess_nodes(
        [NodeWithScore(node=node, score=1.0)], query_str=QUERY
    )[0].node
    assert type(out) is type(node) and out.node_id == "d1" and out.metadata["k"] == 1
    assert "specpc_skipped" not in out.metadata
    assert 0 < out.metadata["specpc_compressed_tokens"] < out.metadata["specpc_original_tokens"]
    compressed = out.get_content(metadata_mode=MetadataMode.NONE)
    assert 0 < len(compressed) < len(text)
    assert node.get_content(metadata_mode=MetadataMode.NONE) == text  # the input keeps its text
    if isinstance(node, Node):
        assert out.text_resource.mimetype == node.text_resource.mimetype  # the resource's other fields are kept
