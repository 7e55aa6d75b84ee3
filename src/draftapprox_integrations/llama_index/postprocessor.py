"""LlamaIndex node postprocessor backed by SpecPC (the algorithm lives in ``engine/specpc/``).

    from draftapprox_integrations.llama_index import SpecPCNodePostprocessor
    query_engine = index.as_query_engine(llm=llm, node_postprocessors=[SpecPCNodePostprocessor(rate=0.1)])
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from .._shared.specpc_options import ADDED_KEYS, SKIPPED, SpecPCOptions, compression_metadata
from ..engine.errors import InvalidInputError


class SpecPCNodePostprocessor(SpecPCOptions, BaseNodePostprocessor):
    """Compresses the text of retrieved nodes to what the draft model attends to when it reads the query.

    All nodes are scored together (the budget goes where the attention is). Each node keeps its id,
    score, relationships and metadata; its text becomes the kept spans of its original text, gaps marked
    with ``separator``. Metadata gains ``original_tokens``, ``compressed_tokens``, ``compression_ratio``
    (kept fraction, draft tokens) and ``relevance_score`` (share of the draft's attention); these keys are
    excluded from what the LLM and the embedder see.

    Budget: at most one of ``budget`` (draft tokens over all nodes) or ``rate`` (kept fraction in (0, 1]);
    with neither, ``rate=0.1``. Nodes without text (images, non-text nodes) pass through unchanged, marked
    ``specpc_skipped``. Nodes that keep no text are dropped unless ``keep_empty``. A query is required.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @classmethod
    def class_name(cls) -> str:
        return "SpecPCNodePostprocessor"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        query = query_bundle.query_str if query_bundle is not None else None
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError(
                "SpecPCNodePostprocessor needs a query (the draft scores the nodes by its attention to it): "
                "call postprocess_nodes(nodes, query_str=...) or use it inside a query engine"
            )
        texts: list[str] = []
        positions: list[int] = []
        for i, item in enumerate(nodes):
            if _has_text(item.node):
                texts.append(item.node.text)
                positions.append(i)
        compressed = self._compress_by_position(texts, positions, query)
        out: list[tuple[float, int, NodeWithScore]] = []
        for i, item in enumerate(nodes):
            doc = compressed.get(i)
            node = item.node.model_copy(deep=True)
            if doc is None:
                node.metadata[SKIPPED] = "node has no text to compress"
                _hide_keys(node)
                out.append((0.0, i, NodeWithScore(node=node, score=item.score)))
                continue
            if not doc.text and not self.keep_empty:
                continue
            node.set_content(doc.text)
            node.metadata.update(compression_metadata(doc))
            _hide_keys(node)
            out.append((doc.relevance, i, NodeWithScore(node=node, score=item.score)))
        return self._ordered(out)


def _has_text(node: Any) -> bool:
    """True for text-bearing nodes; an image node with no text is not text."""
    if not isinstance(node, TextNode):
        return False
    if isinstance(node, ImageNode) and not (node.text or "").strip():
        return False
    return isinstance(node.text, str)


def _hide_keys(node: Any) -> None:
    # Our bookkeeping must not leak into the LLM prompt or change embeddings.
    for attr in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys"):
        keys = getattr(node, attr, None)
        if keys is None:
            continue
        for k in ADDED_KEYS:
            if k in node.metadata and k not in keys:
                keys.append(k)
