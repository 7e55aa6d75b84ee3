"""The SpecPC adapters on anything: a typed error, or documents / nodes that keep the adapters' promises.

LangChain's SpecPCCompressor and LlamaIndex's SpecPCNodePostprocessor get generated texts (any script, empty,
huge, lone surrogates...), metadata (the plain and ``specpc_*`` names the adapters add among the user's own
keys, mutable values) and option values. Either a DraftApproxError, or: every output's metadata is the
user's, untouched and holding the same objects, plus only the adapters' keys (never overwriting one of the
user's); the kept tokens fit the budget; the text is slices of the original; everything passes through when
the budget covers it; and the documents / nodes passed in are not changed in any way.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from draftapprox_integrations._shared.specpc_options import ADDED_KEYS, DEFAULT_RATE, NAMESPACE, PLAIN_KEYS, SKIPPED
from draftapprox_integrations.engine import DraftApproxEngine
from draftapprox_integrations.engine.alignment import tokenize_with_offsets
from draftapprox_integrations.engine.errors import DraftApproxError
from tests.helpers import TINY
from tests.unit.properties._strategies import BROKEN_TEXT, SETTINGS, VALID_TEXT, examples, has_surrogate

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import Document as LlamaDocument  # noqa: E402
from llama_index.core.schema import ImageNode, NodeWithScore, TextNode  # noqa: E402

from draftapprox_integrations.langchain import SpecPCCompressor  # noqa: E402
from draftapprox_integrations.llama_index import SpecPCNodePostprocessor  # noqa: E402


@pytest.fixture(scope="module")
def engine(draft_engine) -> DraftApproxEngine:
    """The module's draft-only engine on the tiny llama (tests/unit/properties/conftest.py)."""
    return draft_engine


class Marker:
    """A user object in metadata: compared by value (so a deep snapshot equals it), identity checked apart."""

    def __init__(self, value) -> None:
        self.value = value
        self.touched: list = []  # mutable state, compared too

    def __eq__(self, other) -> bool:
        return isinstance(other, Marker) and (self.value, self.touched) == (other.value, other.touched)

    __hash__ = None  # type: ignore[assignment]


# -- strategies ---------------------------------------------------------------------------------------------

# The adapters' own key names (plain and namespaced) among arbitrary user keys.
META_KEYS = st.one_of(
    st.sampled_from(ADDED_KEYS), st.sampled_from(["source", "page", "title", "score"]), st.text(max_size=8)
)
META_VALUES = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(Marker, st.integers()),
)
METADATA = st.dictionaries(META_KEYS, META_VALUES, max_size=6)
DOC_TEXT = st.one_of(VALID_TEXT, VALID_TEXT, VALID_TEXT, VALID_TEXT, BROKEN_TEXT)
QUERY = st.one_of(
    st.sampled_from(["Where is the key?", "鍵はどこですか？", "🔑❓"]),
    VALID_TEXT,  # may be blank: refused
    BROKEN_TEXT,
)


@st.composite
def adapter_options(draw) -> dict:
    """Adapter keywords: mostly valid, sometimes a bad budget, rate, flag or a typo (a typed error at construction)."""
    options = dict(TINY)
    budget = draw(st.one_of(st.integers(1, 48), st.integers(1, 10**6), st.floats(0.01, 1.0), st.none()))
    if isinstance(budget, float):
        options["rate"] = budget
    elif budget is not None:
        options["budget"] = budget
    options.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "keep_empty": st.booleans(),
                    "reorder_by_relevance": st.booleans(),
                    "whole_sentences": st.booleans(),
                    "separator": st.sampled_from([" … ", " [...] ", "\n---\n"]),
                },
            )
        )
    )
    if draw(st.sampled_from([False, False, False, True])):
        options.update(
            draw(
                st.sampled_from(
                    [
                        {"budget": 0},
                        {"budget": True},
                        {"budget": "12"},
                        {"budget": 12.0},
                        {"rate": 0.0},
                        {"rate": 2.0},
                        {"rate": float("nan")},
                        {"budget": 5, "rate": 0.5},
                        {"keep_empty": "yes"},
                        {"window_size": 0},
                        {"pooling": "median"},
                        {"starting_layer_index": 9},  # past the tiny draft's 4 layers: refused when it runs
                        {"budgett": 5},
                        {"config": {"window": 3}},
                    ]
                )
            )
        )
    return options


# -- the independent checks -------------------------------------------------------------------------------


def token_count(engine: DraftApproxEngine, text: str) -> int:
    return len(tokenize_with_offsets(engine.draft.tokenizer, text)[0])


def assert_slices(original: str, kept: str, separator: str) -> None:
    """``kept`` is pieces of ``original``, in order, joined by ``separator`` (plus an elision marker at an end)."""
    if kept in ("", original):
        return
    marker = separator.strip() or separator
    if marker in original or separator in original:
        return  # ambiguous: the separator cannot be told from the text
    pieces = kept.split(separator)
    if pieces[0].startswith(marker + " "):
        pieces[0] = pieces[0][len(marker) + 1 :]
    if pieces[-1].endswith(" " + marker):
        pieces[-1] = pieces[-1][: -len(marker) - 1]
    pos = 0
    for piece in pieces:
        assert piece, f"an empty piece in {kept!r}"
        found = original.find(piece, pos)
        assert found >= 0, f"{piece!r} is not a slice of the original after position {pos}: {original!r}"
        pos = found + len(piece)


def check_metadata(user_refs: dict, out_meta: dict, expect_skipped: bool) -> dict:
    """The output metadata: the user's entries (the same objects), plus our keys where they were free.
    Returns our values by plain name (those readable under a key we added)."""
    assert out_meta is not user_refs
    for key, value in user_refs.items():
        assert key in out_meta and out_meta[key] is value, f"the user's {key!r} was overwritten or copied"
    added = set(out_meta) - set(user_refs)
    assert added <= set(ADDED_KEYS), f"unexpected keys {added - set(ADDED_KEYS)}"
    ours: dict = {}
    if expect_skipped:
        assert SKIPPED in out_meta
        assert added <= {SKIPPED}
        return ours
    assert SKIPPED not in added
    for plain in PLAIN_KEYS:
        namespaced = NAMESPACE + plain
        assert namespaced in out_meta and plain in out_meta  # ours, or the user's value kept
        # Ours goes under every one of the two names that was free, and nowhere else.
        assert (namespaced in added) == (namespaced not in user_refs)
        assert (plain in added) == (plain not in user_refs)
        values = [out_meta[k] for k in (namespaced, plain) if k in added]
        if values:
            assert all(v == values[0] for v in values)
            ours[plain] = values[0]
    return ours


def check_our_values(ours: dict) -> None:
    if {"original_tokens", "compressed_tokens"} <= set(ours):
        assert 0 <= ours["compressed_tokens"] <= ours["original_tokens"]
    if "relevance_score" in ours:
        assert 0.0 <= ours["relevance_score"] <= 1.0 + 1e-6


def keep_budget(options: dict, total: int) -> int:
    """The budget in tokens: the one given, or the rate's share (the adapters' default rate when neither)."""
    if "budget" in options:
        return options["budget"]
    rate = options.get("rate", DEFAULT_RATE)
    return max(1, int(rate * total + 0.5))


# -- LangChain --------------------------------------------------------------------------------------------


@st.composite
def langchain_docs(draw) -> list[Document]:
    texts = [draw(DOC_TEXT) for _ in range(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 1, 2, 3])))]
    return [Document(page_content=t, metadata=draw(METADATA), id=f"doc-{i}") for i, t in enumerate(texts)]


@settings(max_examples=examples(150), **SETTINGS)
@given(docs=langchain_docs(), query=QUERY, options=adapter_options())
def test_langchain_compressor_typed_error_or_faithful_documents(engine, docs, query, options):
    snapshot = copy.deepcopy(docs)
    meta_dicts = [d.metadata for d in docs]
    refs = [dict(d.metadata) for d in docs]  # the user's value objects
    try:
        out = SpecPCCompressor(engine=engine, **options).compress_documents(docs, query)
    except DraftApproxError as exc:
        event(f"error: {type(exc).__name__}")
        out = None
    # The documents passed in are unchanged, whatever happened.
    for doc, before, meta in zip(docs, snapshot, meta_dicts):
        assert doc.metadata is meta
        assert (doc.id, doc.page_content, doc.metadata) == (before.id, before.page_content, before.metadata)
    if docs and (has_surrogate(query) or not query.strip() or any(has_surrogate(d.page_content) for d in docs)):
        assert out is None, "a blank query or text with a lone surrogate must be refused"
    if out is None:
        return
    event("result: empty input" if not docs else f"result: {len(out)} of {len(docs)} documents")
    by_id = {d.id: i for i, d in enumerate(docs)}
    ids = [d.id for d in out]
    assert len(set(ids)) == len(ids) and set(ids) <= set(by_id)
    if not options.get("reorder_by_relevance"):
        assert ids == sorted(ids, key=by_id.get)
    if options.get("keep_empty"):
        assert len(out) == len(docs)
    separator = options.get("separator", " … ")
    total = sum(token_count(engine, d.page_content) for d in docs)
    kept = 0
    for doc in out:
        i = by_id[doc.id]
        original = docs[i].page_content
        assert doc is not docs[i]
        assert doc.page_content or options.get("keep_empty")
        assert_slices(original, doc.page_content, separator)
        ours = check_metadata(refs[i], doc.metadata, expect_skipped=False)
        check_our_values(ours)
        if "compressed_tokens" in ours:
            kept += ours["compressed_tokens"]
    budget = keep_budget(options, total)
    assert kept <= budget, f"{kept} tokens kept over a budget of {budget}"
    if budget >= total:  # pass-through: every document with text, unchanged
        # (nothing is scored, every relevance is 0.0: reorder_by_relevance keeps the order too)
        assert [d.page_content for d in out] == [d.page_content for d in docs if d.page_content or options.get("keep_empty")]


# -- LlamaIndex --------------------------------------------------------------------------------------------


@st.composite
def llama_nodes(draw) -> list[NodeWithScore]:
    nodes = []
    for i in range(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 1, 2, 3]))):
        kind = draw(st.sampled_from(["text", "text", "document", "image"]))
        meta = draw(METADATA)
        excluded = draw(st.lists(st.sampled_from(["source", "page", *ADDED_KEYS]), max_size=2, unique=True))
        common = dict(metadata=meta, id_=f"node-{i}", excluded_llm_metadata_keys=excluded)
        if kind == "image":  # no text: passed through, marked specpc_skipped
            node = ImageNode(image="aGVsbG8=", **common)
        elif kind == "document":
            node = LlamaDocument(text=draw(DOC_TEXT), **common)
        else:
            node = TextNode(text=draw(DOC_TEXT), **common)
        nodes.append(NodeWithScore(node=node, score=draw(st.one_of(st.none(), st.floats(-1, 1)))))
    return nodes


def carried_text(node) -> str | None:
    """The text a node carries: a TextNode's text; a Document's only with a text resource (``Document(text="")``
    has none, so it is passed through as skipped); an image node here carries none."""
    if isinstance(node, ImageNode):
        return None
    if isinstance(node, LlamaDocument):
        return node.text_resource.text if node.text_resource is not None else None
    return node.text


def node_state(item: NodeWithScore) -> tuple:
    node = item.node
    return (
        node.id_,
        type(node).__name__,
        node.get_content(metadata_mode="none"),
        node.metadata,
        list(node.excluded_llm_metadata_keys),
        list(node.excluded_embed_metadata_keys),
        item.score,
    )


@settings(max_examples=examples(150), **SETTINGS)
@given(nodes=llama_nodes(), query=QUERY, options=adapter_options())
def test_llama_index_postprocessor_typed_error_or_faithful_nodes(engine, nodes, query, options):
    snapshot = [node_state(n) for n in copy.deepcopy(nodes)]
    meta_dicts = [n.node.metadata for n in nodes]
    refs = [dict(n.node.metadata) for n in nodes]
    try:
        out = SpecPCNodePostprocessor(engine=engine, **options).postprocess_nodes(nodes, query_str=query)
    except DraftApproxError as exc:
        event(f"error: {type(exc).__name__}")
        out = None
    for item, before, meta in zip(nodes, snapshot, meta_dicts):
        assert item.node.metadata is meta
        assert node_state(item) == before
    texts = {i: text for i, n in enumerate(nodes) if (text := carried_text(n.node)) is not None}
    # A blank query, or one with a lone surrogate, is refused whenever there are nodes (with text or not).
    if nodes and (not query.strip() or has_surrogate(query) or any(has_surrogate(t) for t in texts.values())):
        assert out is None, "a blank query or text with a lone surrogate must be refused"
    if out is None:
        return
    event("result: empty input" if not nodes else f"result: {len(out)} of {len(nodes)} nodes")
    by_id = {n.node.id_: i for i, n in enumerate(nodes)}
    ids = [n.node.id_ for n in out]
    assert len(set(ids)) == len(ids) and set(ids) <= set(by_id)
    if not options.get("reorder_by_relevance"):
        assert ids == sorted(ids, key=by_id.get)
    if options.get("keep_empty"):
        assert len(out) == len(nodes)
    separator = options.get("separator", " … ")
    total = sum(token_count(engine, t) for t in texts.values())
    kept = 0
    for item in out:
        i = by_id[item.node.id_]
        source = nodes[i]
        assert item.node is not source.node and type(item.node) is type(source.node)
        assert item.score == source.score
        skipped = i not in texts
        ours = check_metadata(refs[i], item.node.metadata, expect_skipped=skipped)
        added = set(item.node.metadata) - set(refs[i])
        # The keys we add are hidden from the LLM and the embedder; the user's exclusions stay.
        for attr in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys"):
            now = getattr(item.node, attr)
            assert added <= set(now) and set(getattr(source.node, attr)) <= set(now)
        if skipped:  # passed through as it came
            assert item.node.get_content(metadata_mode="none") == source.node.get_content(metadata_mode="none")
            continue
        assert_slices(texts[i], item.node.text, separator)
        assert item.node.text or options.get("keep_empty")
        check_our_values(ours)
        kept += ours.get("compressed_tokens", 0)
    budget = keep_budget(options, total)
    assert kept <= budget, f"{kept} tokens kept over a budget of {budget}"
    if budget >= total:
        kept_texts = sorted(n.node.text for n in out if by_id[n.node.id_] in texts)
        assert kept_texts == sorted(t for t in texts.values() if t or options.get("keep_empty"))
