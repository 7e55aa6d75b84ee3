"""LlamaIndex node postprocessor backed by SpecPC (the algorithm lives in ``engine/specpc/``).

    from draftapprox_integrations.llama_index import SpecPCNodePostprocessor
    query_engine = index.as_query_engine(llm=llm, node_postprocessors=[SpecPCNodePostprocessor(rate=0.1)])
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.base import BaseEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, Node, NodeWithScore, QueryBundle, TextNode

from .._shared.specpc_options import SKIPPED, SpecPCOptions, compression_metadata, extended_metadata
from ..engine.errors import InvalidInputError
from ..engine.prompts import check_text

dispatcher = get_dispatcher(__name__)

# The key of the call's token accounting in the legacy callback event's end payload.
SPECPC_PAYLOAD = "specpc"


class SpecPCCompressionEvent(BaseEvent):
    """Sent through LlamaIndex's instrumentation dispatcher once per postprocessor call: the call's token
    accounting (``CompressionSummary.to_dict``: draft tokens before / after / saved, seconds, ...), the query
    and the nodes returned, so an event handler holds the compressed nodes even when a later step fails."""

    query_str: str
    stats: dict[str, Any]
    nodes: list[NodeWithScore]

    @classmethod
    def class_name(cls) -> str:
        return "SpecPCCompressionEvent"


class SpecPCNodePostprocessor(SpecPCOptions, BaseNodePostprocessor):
    """Compresses the text of retrieved nodes to what the draft model attends to when it reads the query.

    All nodes are scored together (the budget goes where the attention is). Every node type that carries
    text is compressed: ``TextNode`` (and its subclasses), ``Document`` and ``Node`` (text resource). Each
    returned node is a shallow copy with its id, score, relationships and metadata values (the same
    objects, never deep-copied); its text becomes the kept spans of its original text, gaps marked with
    ``separator``. Its metadata is a new dict that gains ``specpc_original_tokens``,
    ``specpc_compressed_tokens``, ``specpc_compression_ratio`` (kept fraction, draft tokens) and
    ``specpc_relevance_score`` (share of the draft's attention), each also under its plain name
    (``relevance_score``, ...) unless the node already has that key: the user's value is never overwritten.
    The keys added are excluded from what the LLM and the embedder see; the user's own keys are not.
    The nodes passed in are not changed.

    Budget: at most one of ``budget`` (draft tokens over all nodes) or ``rate`` (kept fraction in (0, 1]);
    with neither, ``rate=0.1``. Nodes without text (an image node without text, a Node without a text
    resource) pass through, marked ``specpc_skipped``. Nodes that keep no text are dropped unless
    ``keep_empty``. A query is required. Each call reports its token accounting as events (see
    ``_postprocess_nodes``); ``show_progress=True`` shows a progress bar while a long input is scored in chunks.
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
        """Compress the nodes' text. Each call with nodes is one ``CBEventType.RERANKING`` event for the
        callback manager (LlamaIndex's event type for node postprocessors; no compression type exists): its
        end payload holds the nodes returned and, under ``"specpc"``, the call's token accounting; the same
        goes out as a :class:`SpecPCCompressionEvent` through the instrumentation dispatcher."""
        nodes = _checked_nodes(nodes)
        if not nodes:
            return []
        query = _query_of(query_bundle)
        summary = self._summary(len(nodes))
        payload = {EventPayload.NODES: nodes, EventPayload.QUERY_STR: query, EventPayload.MODEL_NAME: summary.draft_model}
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            out, result = self._compressed(nodes, query)
            stats = summary.record(result, len(out)).to_dict()
            dispatcher.event(SpecPCCompressionEvent(query_str=query, stats=stats, nodes=out))
            event.on_end(payload={EventPayload.NODES: out, SPECPC_PAYLOAD: stats})
        return out

    def _compressed(self, nodes: list[NodeWithScore], query: str) -> tuple[list[NodeWithScore], Any]:
        """The compressed nodes (in order, or by relevance) and the engine's result (None: no text)."""
        texts: list[str] = []
        positions: list[int] = []
        for i, item in enumerate(nodes):
            text = _text_of(item.node)
            if text is not None:
                texts.append(text)
                positions.append(i)
        compressed, result = self._compress_by_position(texts, positions, query)
        out: list[tuple[float, int, NodeWithScore]] = []
        for i, item in enumerate(nodes):
            doc = compressed.get(i)
            if doc is None:
                node = _copy_with(item.node, {SKIPPED: "node has no text to compress"})
                out.append((0.0, i, NodeWithScore(node=node, score=item.score)))
                continue
            if not doc.text and not self.keep_empty:
                continue
            node = _copy_with(item.node, compression_metadata(doc), text=doc.text)
            out.append((doc.relevance, i, NodeWithScore(node=node, score=item.score)))
        return self._ordered(out), result


def _checked_nodes(nodes: Any) -> list[NodeWithScore]:
    """``nodes`` as a list, or InvalidInputError naming what was expected and what came instead."""
    expected = "SpecPCNodePostprocessor takes a list of NodeWithScore"
    if not isinstance(nodes, (list, tuple)):
        raise InvalidInputError(f"{expected}; got a {type(nodes).__name__}")
    for i, item in enumerate(nodes):
        if not isinstance(item, NodeWithScore):
            hint = " (wrap it: NodeWithScore(node=..., score=...))" if isinstance(item, BaseNode) else ""
            raise InvalidInputError(f"{expected}; item {i} is a {type(item).__name__}{hint}")
    return list(nodes)


def _query_of(query_bundle: Any) -> str:
    query = getattr(query_bundle, "query_str", None) if isinstance(query_bundle, QueryBundle) else None
    if isinstance(query_bundle, str) or not isinstance(query, str) or not query.strip():
        raise InvalidInputError(
            "SpecPCNodePostprocessor needs a query (the draft scores the nodes by its attention to it): "
            "call postprocess_nodes(nodes, query_str=...) or postprocess_nodes(nodes, QueryBundle(...)), "
            "or use it inside a query engine"
        )
    check_text(query, "the query")  # refused even when no node has text to compress
    return query


def _text_of(node: Any) -> str | None:
    """The text a node carries (TextNode and subclasses, Document / Node with a text resource), else None.
    An image node whose text is empty carries no text."""
    if isinstance(node, TextNode):
        text = node.text
        if isinstance(node, ImageNode) and not (text or "").strip():
            return None
        return text if isinstance(text, str) else None
    if isinstance(node, Node):
        resource = node.text_resource
        return resource.text if resource is not None and isinstance(resource.text, str) else None
    if isinstance(node, BaseNode):  # another node type: its own get_content, if it gives text
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        return text if isinstance(text, str) and text else None
    return None


def _copy_with(node: BaseNode, ours: dict[str, Any], text: str | None = None) -> BaseNode:
    """A shallow copy of ``node`` with a new metadata dict (the user's entries plus ``ours``, none
    overwritten), the added keys hidden from the LLM and the embedder, and ``text`` as its text when given.
    ``node`` itself and its metadata values are not touched or copied."""
    metadata, added = extended_metadata(node.metadata, ours)
    update: dict[str, Any] = {"metadata": metadata}
    for attr in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys"):
        keys = list(getattr(node, attr, None) or [])
        update[attr] = keys + [k for k in added if k not in keys]
    if text is not None:
        if isinstance(node, TextNode):
            update["text"] = text
        elif isinstance(node, Node) and node.text_resource is not None:
            update["text_resource"] = node.text_resource.model_copy(update={"text": text})
    copy = node.model_copy(update=update)
    if text is not None and not isinstance(node, (TextNode, Node)):
        copy.set_content(text)
    return copy
