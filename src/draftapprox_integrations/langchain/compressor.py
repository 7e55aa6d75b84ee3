"""LangChain document compressor backed by SpecPC (the algorithm lives in ``engine/specpc/``).

    from draftapprox_integrations.langchain import SpecPCCompressor
    compressor = SpecPCCompressor(rate=0.1)                       # cheap: the draft loads on first use
    docs = compressor.compress_documents(retrieved_docs, "the question")

With ``langchain-classic`` installed it plugs into
``langchain_classic.retrievers.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=r)``.
Without it, the LCEL equivalent is ``{"documents": r, "query": RunnablePassthrough()} | compressor.as_runnable()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManager, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import ConfigDict

from .._shared.specpc_options import SKIPPED, SpecPCOptions, compression_metadata, extended_metadata
from ..engine.errors import InvalidInputError
from ..engine.prompts import check_text

# The custom callback event every call sends (``on_custom_event``): the call's token accounting and the
# documents it returns, so a handler (or a trace) holds the compressed documents even when a later step fails.
COMPRESSION_EVENT = "specpc_compression"


class SpecPCCompressor(SpecPCOptions, BaseDocumentCompressor):
    """Keeps the parts of retrieved documents that the draft model attends to when it reads the question.

    All documents are scored together, so the token budget goes to the documents (and passages) that
    matter. Each returned document is its original text sliced at the kept spans (word boundaries, or
    whole sentences), gaps marked with ``separator``. Its metadata is a new dict: the original keys and
    values, untouched (the same objects), plus ``specpc_original_tokens``, ``specpc_compressed_tokens``,
    ``specpc_compression_ratio`` (kept fraction, draft tokens) and ``specpc_relevance_score`` (the
    document's share of the draft's attention, summing to 1). Each is also written under its plain name
    (``relevance_score``, ...) unless the document already has that key: the user's value is never
    overwritten.

    Budget: at most one of ``budget`` (draft tokens kept over all documents) or ``rate`` (kept fraction in
    (0, 1]); with neither, ``rate=0.1``. A budget that covers everything passes the documents through
    unchanged (relevance 0.0: nothing was scored).
    Documents whose content is not a string pass through unchanged, marked ``specpc_skipped``.
    Documents that keep no text are dropped unless ``keep_empty``. The input documents are not changed.
    Each call reports its token accounting to the callbacks (see :meth:`compress_documents`);
    ``show_progress=True`` shows a progress bar while a long input is scored in chunks (logged at INFO anyway).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # -- compression -------------------------------------------------------------------------------

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress ``documents`` (a list of Document) for ``query``. An empty list returns an empty list.

        Each call is a chain run named ``SpecPCCompressor`` for ``callbacks`` (and any tracer configured for
        the process): its outputs hold the documents and ``specpc``, the call's token accounting
        (``CompressionSummary.to_dict``: original / compressed / saved draft tokens, seconds, ...), which
        also goes out as the custom event ``specpc_compression`` with the documents.

        Raises InvalidInputError, before the draft runs, for anything but a list of Documents or a query
        that is not a non-empty string."""
        documents = _checked_documents(documents)
        if not documents:
            return []
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("SpecPCCompressor needs the query: the draft scores the documents by its attention to it")
        check_text(query, "the query")  # refused even when no document has text to compress
        run = CallbackManager.configure(inheritable_callbacks=callbacks).on_chain_start(
            {"name": type(self).__name__}, {"query": query, "documents": documents}, name=type(self).__name__
        )
        summary = self._summary(len(documents))
        try:
            out, result = self._compressed(documents, query)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        stats = summary.record(result, len(out)).to_dict()
        run.get_child().on_custom_event(COMPRESSION_EVENT, {**stats, "documents": out}, run_id=run.run_id)
        run.on_chain_end({"documents": out, "specpc": stats})
        return out

    def _compressed(self, documents: list[Document], query: str) -> tuple[list[Document], Any]:
        """The compressed documents (in order, or by relevance) and the engine's result (None: no text)."""
        texts: list[str] = []
        text_positions: list[int] = []
        for i, doc in enumerate(documents):
            if isinstance(doc.page_content, str):
                texts.append(doc.page_content)
                text_positions.append(i)
        compressed, result = self._compress_by_position(texts, text_positions, query)
        out: list[tuple[float, int, Document]] = []
        for i, doc in enumerate(documents):
            item = compressed.get(i)
            if item is None:
                meta, _ = extended_metadata(doc.metadata, {SKIPPED: f"content is {type(doc.page_content).__name__}, not text"})
                out.append((0.0, i, doc.model_copy(update={"metadata": meta})))
                continue
            if not item.text and not self.keep_empty:
                continue
            meta, _ = extended_metadata(doc.metadata, compression_metadata(item))
            out.append((item.relevance, i, doc.model_copy(update={"page_content": item.text, "metadata": meta})))
        return self._ordered(out), result

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

        def run(value: dict, config: RunnableConfig) -> list[Document]:
            return list(self.compress_documents(*_inputs(value), callbacks=config.get("callbacks")))

        async def arun(value: dict, config: RunnableConfig) -> list[Document]:
            return list(await self.acompress_documents(*_inputs(value), callbacks=config.get("callbacks")))

        return RunnableLambda(run, afunc=arun, name="SpecPCCompressor")


def _checked_documents(documents: Any) -> list[Document]:
    """``documents`` as a list, or InvalidInputError naming what was expected and what came instead."""
    expected = "SpecPCCompressor.compress_documents takes a list of langchain_core Document objects"
    if isinstance(documents, (str, bytes, Mapping, Document)) or not isinstance(documents, Iterable):
        hint = " (wrap it in a list)" if isinstance(documents, Document) else ""
        raise InvalidInputError(f"{expected}; got a {type(documents).__name__}{hint}")
    documents = list(documents)
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise InvalidInputError(f"{expected}; item {i} is a {type(doc).__name__}: wrap text in Document(page_content=...)")
    return documents
