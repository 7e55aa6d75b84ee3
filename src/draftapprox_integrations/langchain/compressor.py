"""LangChain document compressor backed by SpecPC (the algorithm lives in ``engine/specpc.py``).

    from draftapprox_integrations.langchain import SpecPCCompressor
    compressor = SpecPCCompressor(rate=0.1)                       # cheap: the draft loads on first use
    docs = compressor.compress_documents(retrieved_docs, "the question")

With ``langchain-classic`` installed it plugs into
``langchain_classic.retrievers.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=r)``.
Without it, the LCEL equivalent is ``{"documents": r, "query": RunnablePassthrough()} | compressor.as_runnable()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..engine.config import SpecPCConfig
from ..engine.errors import ConfigError, InvalidInputError
from ..engine.specpc import DEFAULT_SEPARATOR

# Metadata keys this compressor adds to every document it returns.
ORIGINAL_TOKENS = "original_tokens"
COMPRESSED_TOKENS = "compressed_tokens"
COMPRESSION_RATIO = "compression_ratio"
RELEVANCE_SCORE = "relevance_score"
SKIPPED = "specpc_skipped"


class SpecPCCompressor(BaseDocumentCompressor):
    """Keeps the parts of retrieved documents that the draft model attends to when it reads the question.

    All documents are scored together, so the token budget goes to the documents (and passages) that
    matter. Each returned document is its original text sliced at the kept spans (word boundaries, or
    whole sentences), gaps marked with ``separator``; its metadata is kept and extended with
    ``original_tokens``, ``compressed_tokens``, ``compression_ratio`` (kept fraction, draft tokens) and
    ``relevance_score`` (the document's share of the draft's attention, summing to 1).

    Budget: at most one of ``budget`` (draft tokens kept over all documents) or ``rate`` (kept fraction in
    (0, 1]); with neither, ``rate=0.1``. A budget that covers everything passes the documents through
    unchanged (relevance 0.0: nothing was scored).
    Documents whose content is not a string pass through unchanged, marked ``specpc_skipped``.
    Documents that keep no text are dropped unless ``keep_empty``.
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

    @model_validator(mode="before")
    @classmethod
    def _config_from_fields(cls, data: Any) -> Any:
        # Accept SpecPCConfig field names directly (window_size=..., kernel_size=...) and config as a dict.
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
    def _check_budget(self) -> SpecPCCompressor:
        if self.budget is not None and self.rate is not None:
            raise ConfigError("give exactly one of budget= (tokens to keep) or rate= (kept fraction in (0, 1])")
        if self.budget is None and self.rate is None:
            self.rate = 0.1
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and 0.0 < self.rate <= 1.0):
            raise ConfigError(f"rate must be in (0, 1] (the fraction of tokens kept), got {self.rate}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget must be >= 1 token, got {self.budget}")
        return self

    # -- engine ----------------------------------------------------------------------------------

    def get_engine(self):
        """The engine (shared with every component built on the same draft), created on first use."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from ..engine.engine import get_engine

            self._engine = get_engine(self.draft_model, None, device=self.device, dtype=self.dtype)
        return self._engine

    # -- compression -------------------------------------------------------------------------------

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress ``documents`` for ``query``. An empty list returns an empty list."""
        if not documents:
            return []
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("SpecPCCompressor needs the query: the draft scores the documents by its attention to it")
        texts: list[str] = []
        text_positions: list[int] = []
        for i, doc in enumerate(documents):
            if isinstance(doc.page_content, str):
                texts.append(doc.page_content)
                text_positions.append(i)
        result = None
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
        out: list[tuple[float, int, Document]] = []
        compressed = dict(zip(text_positions, result.documents if result is not None else []))
        for i, doc in enumerate(documents):
            item = compressed.get(i)
            if item is None:
                meta = dict(doc.metadata)
                meta[SKIPPED] = f"content is {type(doc.page_content).__name__}, not text"
                out.append((0.0, i, doc.model_copy(update={"metadata": meta})))
                continue
            if not item.text and not self.keep_empty:
                continue
            meta = dict(doc.metadata)
            meta.update(
                {
                    ORIGINAL_TOKENS: item.original_tokens,
                    COMPRESSED_TOKENS: item.compressed_tokens,
                    COMPRESSION_RATIO: round(item.compression_ratio, 4),
                    RELEVANCE_SCORE: item.relevance,
                }
            )
            out.append((item.relevance, i, doc.model_copy(update={"page_content": item.text, "metadata": meta})))
        if self.reorder_by_relevance:
            out.sort(key=lambda t: (-t[0], t[1]))
        return [doc for _, _, doc in out]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async version: the draft runs in a worker thread, so the event loop stays free."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)

    # -- LCEL --------------------------------------------------------------------------------------

    def as_runnable(self) -> Runnable:
        """A Runnable ``{"documents": [...], "query": str} -> list[Document]`` for LCEL chains.

        ``{"documents": retriever, "query": RunnablePassthrough()} | compressor.as_runnable()`` is the LCEL
        form of ContextualCompressionRetriever.
        """

        def _inputs(value: dict) -> tuple[Sequence[Document], str]:
            if not isinstance(value, dict) or "documents" not in value or "query" not in value:
                raise InvalidInputError('the SpecPC runnable takes {"documents": [...], "query": "..."}')
            return value["documents"], value["query"]

        def run(value: dict) -> list[Document]:
            return list(self.compress_documents(*_inputs(value)))

        async def arun(value: dict) -> list[Document]:
            return list(await self.acompress_documents(*_inputs(value)))

        return RunnableLambda(run, afunc=arun, name="SpecPCCompressor")
