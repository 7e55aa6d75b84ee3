"""LlamaIndex node postprocessor backed by SpecPC (the algorithm lives in ``engine/specpc.py``).

    from draftapprox_integrations.llama_index import SpecPCNodePostprocessor
    query_engine = index.as_query_engine(llm=llm, node_postprocessors=[SpecPCNodePostprocessor(rate=0.1)])
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from ..engine.config import SpecPCConfig
from ..engine.errors import ConfigError, InvalidInputError
from ..engine.specpc import DEFAULT_SEPARATOR

ORIGINAL_TOKENS = "original_tokens"
COMPRESSED_TOKENS = "compressed_tokens"
COMPRESSION_RATIO = "compression_ratio"
RELEVANCE_SCORE = "relevance_score"
SKIPPED = "specpc_skipped"
_ADDED_KEYS = (ORIGINAL_TOKENS, COMPRESSED_TOKENS, COMPRESSION_RATIO, RELEVANCE_SCORE, SKIPPED)


class SpecPCNodePostprocessor(BaseNodePostprocessor):
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

    draft_model: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: str = "auto"
    budget: int | None = None
    rate: float | None = None
    config: SpecPCConfig = Field(default_factory=SpecPCConfig)
    separator: str = DEFAULT_SEPARATOR
    whole_sentences: bool = False
    keep_empty: bool = False
    reorder_by_relevance: bool = False
    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SpecPCNodePostprocessor"

    @model_validator(mode="before")
    @classmethod
    def _config_from_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = set(SpecPCConfig.__dataclass_fields__)
        loose = {k: data.pop(k) for k in list(data) if k in names}
        config = data.get("config")
        if isinstance(config, dict):
            config = SpecPCConfig(**config)
        if loose:
            config = (config or SpecPCConfig()).replace(**loose)
        if config is not None:
            data["config"] = config
        return data

    @model_validator(mode="after")
    def _check_budget(self) -> SpecPCNodePostprocessor:
        if self.budget is not None and self.rate is not None:
            raise ConfigError("give exactly one of budget= (tokens to keep) or rate= (kept fraction in (0, 1])")
        if self.budget is None and self.rate is None:
            self.rate = 0.1
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and 0.0 < self.rate <= 1.0):
            raise ConfigError(f"rate must be in (0, 1] (the fraction of tokens kept), got {self.rate}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget must be >= 1 token, got {self.budget}")
        return self

    def get_engine(self):
        """The engine (shared with every component built on the same draft), created on first use."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from ..engine.engine import get_engine

            self._engine = get_engine(self.draft_model, None, device=self.device, dtype=self.dtype)
        return self._engine

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
        compressed = {}
        if texts:
            result = self.get_engine().compress(
                texts,
                query,
                budget=self.budget,
                rate=self.rate if self.budget is None else None,
                config=self.config,
                separator=self.separator,
                whole_sentences=self.whole_sentences,
            )
            compressed = dict(zip(positions, result.documents))
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
            node.metadata.update(
                {
                    ORIGINAL_TOKENS: doc.original_tokens,
                    COMPRESSED_TOKENS: doc.compressed_tokens,
                    COMPRESSION_RATIO: round(doc.compression_ratio, 4),
                    RELEVANCE_SCORE: doc.relevance,
                }
            )
            _hide_keys(node)
            out.append((doc.relevance, i, NodeWithScore(node=node, score=item.score)))
        if self.reorder_by_relevance:
            out.sort(key=lambda t: (-t[0], t[1]))
        return [n for _, _, n in out]


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
        for k in _ADDED_KEYS:
            if k in node.metadata and k not in keys:
                keys.append(k)
