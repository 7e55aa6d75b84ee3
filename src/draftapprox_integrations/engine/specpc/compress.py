"""SpecPC end to end: validate a request, score it with the draft, spend the budget, render the kept text.

The three steps are separate so a caller that guards the draft with a lock (the engine) holds it only for
``score_steps`` (written as steps, ``engine.steps``: one draft forward at a time); ``prepare`` needs no model
and ``finish`` is pure tensor and text work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from ..alignment import render_spans, tokenize_with_offsets
from ..config import SpecPCConfig
from ..errors import ConfigError, InvalidInputError
from ..prompts import check_text
from ..steps import Steps, run_alone
from ..timing import synced_clock
from .fitting import spend_budget
from .results import CompressedDocument, CompressionResult
from .scorer import EncodedDocuments, ScoredContext, score_context
from .selection import rank_positions, resolve_budget

DEFAULT_SEPARATOR = " … "


@dataclass(frozen=True)
class CompressionRequest:
    """One validated compression call (built by :func:`prepare`, before any model work)."""

    texts: list[str]
    single: bool  # one text in, one text out (else a list of documents)
    query: str | None
    budget: int | None
    rate: float | None
    config: SpecPCConfig
    separator: str = DEFAULT_SEPARATOR
    whole_sentences: bool = False
    lookahead_text: str | None = None
    max_prompt_tokens: int | None = None
    return_scores: bool = False
    progress: bool = False


@dataclass
class ScoredRequest:
    """What the draft made of a request: its tokens, the budget in tokens, and the scores (None: pass-through)."""

    docs: EncodedDocuments
    keep: int
    scored: ScoredContext | None
    started: float


def prepare(
    context: str | Sequence[str],
    query: str | None = None,
    *,
    budget: int | None = None,
    rate: float | None = None,
    config: SpecPCConfig | None = None,
    separator: str = DEFAULT_SEPARATOR,
    whole_sentences: bool = False,
    lookahead_text: str | None = None,
    max_prompt_tokens: int | None = None,
    return_scores: bool = False,
    progress: bool = False,
    **config_overrides,
) -> CompressionRequest:
    """Check every argument of a compression call; raises ConfigError / InvalidInputError, loads nothing.

    ``config_overrides`` are SpecPCConfig field names (``window_size=32``) applied over ``config``. Text
    that is not valid Unicode (lone surrogates, e.g. bytes read with ``surrogateescape``) is refused here,
    naming the document, before any tokenizer sees it.
    """
    config = _config_with(config, config_overrides)
    texts, single = _as_texts(context)
    for i, text in enumerate(texts):
        check_text(text, "the context" if single else f"document {i}")
    if query is not None:
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
        if not query.strip():
            raise InvalidInputError("query is empty: pass the question, or query=None to compress without one")
        check_text(query, "the query")
    if not isinstance(separator, str):
        raise ConfigError(f"separator must be a string, got {separator!r}")
    if lookahead_text is not None:
        if not isinstance(lookahead_text, str):
            raise ConfigError(f"lookahead_text must be a string, got {type(lookahead_text).__name__}")
        check_text(lookahead_text, "lookahead_text")
    cap = max_prompt_tokens
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 16):
        raise ConfigError(f"max_prompt_tokens must be an integer >= 16, got {cap!r}")
    resolve_budget(1, budget, rate)  # the budget's own checks, before any tokenising
    return CompressionRequest(
        texts, single, query, budget, rate, config, separator, bool(whole_sentences), lookahead_text, cap,
        bool(return_scores), bool(progress),
    )


def score_steps(draft, request: CompressionRequest) -> Steps[ScoredRequest]:
    """Tokenise the context once and, unless the budget covers it all, score it with the draft (as steps)."""
    started = synced_clock(draft.input_device)
    encoded = [tokenize_with_offsets(draft.tokenizer, t) for t in request.texts]
    docs = EncodedDocuments(request.texts, [e[0] for e in encoded], [e[1] for e in encoded])
    total = sum(docs.lengths)
    keep = resolve_budget(total, request.budget, request.rate)
    if total == 0 or keep >= total:
        return ScoredRequest(docs, keep, None, started)
    look_ids = None
    if request.lookahead_text is not None:
        look_ids = tokenize_with_offsets(draft.tokenizer, request.lookahead_text)[0]
    scored = yield from score_context(
        draft, docs, request.query, request.config, lookahead_ids=look_ids,
        max_prompt_tokens=request.max_prompt_tokens, progress=request.progress,
    )
    return ScoredRequest(docs, keep, scored, started)


def finish(request: CompressionRequest, scored: ScoredRequest) -> CompressionResult:
    """Spend the budget over the scored documents and build the result (no model)."""
    total = sum(scored.docs.lengths)
    if scored.scored is None:
        return _passthrough(request, scored.docs, scored.keep, scored.started)
    docs, selected = select_documents(
        scored.scored, scored.keep, request.config, separator=request.separator, whole_sentences=request.whole_sentences
    )
    shown = request.lookahead_text if request.lookahead_text is not None else " | ".join(scored.scored.lookaheads)
    return CompressionResult(
        text=_join(docs, request.single),
        documents=docs,
        original_tokens=total,
        compressed_tokens=sum(d.compressed_tokens for d in docs),
        seconds=synced_clock() - scored.started,
        lookahead_text=shown,
        budget=scored.keep,
        selected_tokens=selected,
        passthrough=False,
        chunks=scored.scored.chunks,
        query=request.query,
        scores=list(scored.scored.scores) if request.return_scores else None,
    )


def compress_steps(draft, context: str | Sequence[str], query: str | None = None, **options) -> Steps[CompressionResult]:
    """SpecPC as steps with a loaded draft: ``prepare`` (same arguments), ``score_steps``, ``finish``."""
    request = prepare(context, query, **options)
    scored = yield from score_steps(draft, request)
    return finish(request, scored)


def compress(draft, context: str | Sequence[str], query: str | None = None, **options) -> CompressionResult:
    """SpecPC in one call with a loaded draft, in the calling thread (:func:`compress_steps` run alone)."""
    return run_alone(compress_steps(draft, context, query, **options))


def select_documents(
    scored: ScoredContext,
    keep: int,
    config: SpecPCConfig,
    *,
    separator: str = DEFAULT_SEPARATOR,
    whole_sentences: bool = False,
) -> tuple[list[CompressedDocument], int]:
    """Spend ``keep`` tokens over all documents by their scores; returns the documents and tokens selected.

    The tokens are ranked once over all documents (``rank_positions``: pooled scores, neighbours, the
    window first without a query) and whole units are taken in that order while they fit (``fitting``):
    words of at most ``alignment.MAX_WORD_TOKENS`` tokens, or whole sentences. The kept tokens of all
    documents together never exceed ``keep``.
    """
    total = scored.total_tokens
    flat = torch.cat(scored.scores) if scored.scores else torch.zeros(0)
    protected = torch.zeros(total, dtype=torch.bool)
    if scored.query is None:
        # A plain prompt: its own tail is the observation window, kept first.
        protected[max(0, total - config.window_size) :] = True
    order = rank_positions(
        flat, kernel_size=config.kernel_size, pooling=config.pooling, neighbors=config.neighbors, protected=protected
    )
    spans, selected, compressed = spend_budget(scored.texts, scored.offsets, order.tolist(), keep, whole_sentences)
    mass = flat.clamp_min(0)
    total_mass = float(mass.sum()) or 1.0
    docs: list[CompressedDocument] = []
    start = 0
    for i, (text, offsets) in enumerate(zip(scored.texts, scored.offsets)):
        n = len(offsets)
        docs.append(
            CompressedDocument(
                index=i,
                text=render_spans(text, spans[i], separator),
                spans=spans[i],
                original_tokens=n,
                compressed_tokens=compressed[i],
                relevance=float(mass[start : start + n].sum()) / total_mass,
                selected_tokens=selected[i],
            )
        )
        start += n
    return docs, sum(selected)


def _passthrough(request: CompressionRequest, docs: EncodedDocuments, keep: int, started: float) -> CompressionResult:
    """Every text unchanged, without running the draft (the budget covers the whole context)."""
    kept = [
        CompressedDocument(
            index=i,
            text=t,
            spans=[(0, len(t))] if t else [],
            original_tokens=n,
            compressed_tokens=n,
            relevance=0.0,
            selected_tokens=n,
        )
        for i, (t, n) in enumerate(zip(docs.texts, docs.lengths))
    ]
    total = sum(docs.lengths)
    return CompressionResult(
        text=_join(kept, request.single),
        documents=kept,
        original_tokens=total,
        compressed_tokens=total,
        seconds=time.perf_counter() - started,
        lookahead_text=request.lookahead_text or "",
        budget=keep,
        selected_tokens=total,
        passthrough=True,
        chunks=0,
        query=request.query,
    )


def _config_with(config: SpecPCConfig | None, overrides: dict) -> SpecPCConfig:
    config = config if config is not None else SpecPCConfig()
    if not isinstance(config, SpecPCConfig):
        raise ConfigError(f"config must be a SpecPCConfig, got {type(config).__name__}")
    names = {f.name for f in fields(SpecPCConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(
            f"unknown compress option(s): {', '.join(sorted(unknown))}; known: separator, whole_sentences, "
            "lookahead_text, max_prompt_tokens, return_scores, progress and the SpecPCConfig fields"
        )
    return config.replace(**overrides) if overrides else config


def _as_texts(context: str | Sequence[str]) -> tuple[list[str], bool]:
    if isinstance(context, str):
        return [context], True
    if isinstance(context, (bytes, bytearray)) or not isinstance(context, Sequence):
        raise InvalidInputError(f"context must be a string or a sequence of strings, got {type(context).__name__}")
    texts = list(context)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(
                f"document {i} is {type(t).__name__}, not text: SpecPC compresses text only "
                "(convert it to a string, or leave such documents out)"
            )
    return texts, False


def _join(docs: list[CompressedDocument], single: bool) -> str:
    if single:
        return docs[0].text if docs else ""
    return "\n\n".join(d.text for d in docs if d.text)
