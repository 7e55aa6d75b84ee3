"""SpecPC: the draft model's attention picks which prompt tokens to keep (arXiv 2506.08373, section 4).

Entry points
------------
``compress(engine, context, query=None, *, budget=None, rate=None, config=None, **options)``
    (also ``DraftApproxEngine.compress``) returns a :class:`CompressionResult`.

    * ``context``: one text or a sequence of documents. ``query``: the question (RAG mode) or ``None``
      (task-agnostic compression of a plain prompt).
    * Exactly one of ``budget`` (draft tokens of the context to keep) or ``rate`` (kept fraction, in (0, 1]).
    * ``config``: a :class:`SpecPCConfig`; any of its field names may also be passed as keyword options
      (``compress(..., window_size=32)``) to override single values.
    * options: ``separator`` (gap marker, default ``" … "``), ``whole_sentences`` (grow kept spans to whole
      sentences), ``lookahead_text`` (see below), ``max_prompt_tokens`` (cap on the draft prompt length,
      default the draft's context window: longer inputs are scored in chunks), ``return_scores``.

``compress(..., lookahead_text="...")`` -- for the SpecKV-PC cascade
    Scores with a *given* answer instead of letting the draft generate ``lookahead_tokens``: the text is
    tokenised with the draft tokenizer, appended after the prompt, and each of its tokens' attention to the
    prompt is one more scoring step (exactly as if the draft had generated it). One draft forward, no
    generation. ``result.lookahead_text`` echoes it. Use it when the full draft answer already exists
    (SpecKV generated it) so SpecPC and SpecKV see the same lookahead.

How a prompt is scored (RAG mode)
---------------------------------
The draft reads ``[intro] Document 1: <doc> ... Document n: <doc> Question: <query> [generation prompt]``
(inside its chat template when it has one, else as a completion prompt ending ``Answer:``). Each text is
tokenised on its own (with character offsets), so every context token maps to a character span of its
document. The *observation window* is the question part: its last ``min(window_size, question tokens)``
tokens are the queries that score the context, plus the lookahead tokens. The question is never part of
the output, so nothing of it counts against the budget: **budget = draft tokens of the documents kept**.
Scores are computed over all documents together and one global top-k spends the budget where the
attention is, not evenly per document.

Without a query, the context is scored as a plain prompt: the window is its last ``window_size`` tokens,
which are always kept and count against the budget.

Selection (pure tensor functions below): per layer >= ``starting_layer_index``, attention of the window
queries (weighted linearly 0 -> 1 when ``weighted_query``) is reduced over heads and queries; then over
layers; then over steps (prefill window, each lookahead token); centred pooling of ``kernel_size``; the
top-``budget`` positions each grow by their ``neighbor_tokens`` nearest neighbours (nearest first, left
before right), duplicates are dropped in rank order, the protected window is added, the list is cut to
exactly ``budget`` and sorted.

Output: each document's original text sliced at the kept character spans, snapped to word boundaries
(optionally whole sentences), gaps marked with ``separator``. ``compressed_tokens`` counts the draft
tokens inside the final spans, so it can exceed ``selected_tokens`` (= the budget) by the few tokens that
snapping adds. ``relevance`` is the document's share of the context's attention mass (sums to 1).

Pass-through: a budget (or rate) that covers the whole context returns every text unchanged without
running the draft (``passthrough=True``; relevance is then 0.0: nothing was scored).

Long inputs: a prompt longer than ``max_prompt_tokens`` is split into chunks of documents (a long
document is split across chunks), each chunk followed by the question; scores from all chunks are then
ranked together. Attention is normalised within each chunk, so scores of different chunks compare only
roughly. Nothing is truncated silently: a question that leaves no room for context raises
ContextLengthError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .alignment import (
    Span,
    count_tokens_in_spans,
    render_spans,
    snap_to_sentences,
    snap_to_words,
    token_spans,
    tokenize_with_offsets,
)
from .config import SpecPCConfig
from .errors import ConfigError, ContextLengthError, InvalidInputError
from .scoring import pool1d, query_weights, reduce

DEFAULT_SEPARATOR = " … "
RAG_INTRO = "Read the documents below, then answer the question.\n\n"

# ------------------------------------------------------------------------------------------------
# results


@dataclass
class CompressedDocument:
    """One input text after compression: the kept text and where it came from."""

    index: int
    text: str
    spans: list[Span]
    original_tokens: int
    compressed_tokens: int
    relevance: float
    selected_tokens: int = 0

    @property
    def compression_ratio(self) -> float:
        """Kept fraction of the draft tokens (compressed / original); 1.0 for an empty text."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0


@dataclass
class CompressionResult:
    """What ``compress`` returns. Token counts are draft tokens."""

    text: str
    documents: list[CompressedDocument]
    original_tokens: int
    compressed_tokens: int
    seconds: float
    lookahead_text: str
    budget: int = 0
    selected_tokens: int = 0
    passthrough: bool = False
    chunks: int = 0
    query: str | None = None
    scores: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def compression_ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    def stats(self) -> dict[str, Any]:
        return {
            "original_tokens": self.original_tokens,
            "compressed_tokens": self.compressed_tokens,
            "selected_tokens": self.selected_tokens,
            "budget": self.budget,
            "compression_ratio": round(self.compression_ratio, 4),
            "seconds": round(self.seconds, 3),
            "chunks": self.chunks,
            "passthrough": self.passthrough,
            "lookahead_text": self.lookahead_text,
        }


# ------------------------------------------------------------------------------------------------
# pure scoring and selection


def reduce_window_attention(
    weights: torch.Tensor,
    *,
    lookahead: int,
    prompt_len: int,
    head_reduction: str,
    weighted_query: bool,
    total_len: int | None = None,
) -> torch.Tensor:
    """Per-step scores of the prompt keys from one layer's captured attention.

    weights: [B=1, H, Q, K] attention of the last Q queries; the last ``lookahead`` of them are lookahead
    tokens (one step each), the queries before them are the observation window (one step together,
    weighted 0 -> 1 when ``weighted_query``). Keys are the last K of ``total_len`` positions (a sliding
    layer sees only its window); only the first ``prompt_len`` positions are scored.
    Returns [S, prompt_len] with S = (1 if there are window queries) + lookahead; unseen keys score 0.
    """
    if weights.dim() == 4:
        weights = weights[0]
    heads, q_len, k_len = weights.shape
    total = k_len if total_len is None else total_len
    lookahead = min(lookahead, q_len)
    n_window = q_len - lookahead
    rows: list[torch.Tensor] = []
    if n_window > 0:
        win = weights[:, :n_window, :]
        if weighted_query:
            win = win * query_weights(n_window, device=win.device)[None, :, None]
        rows.append(reduce(win, (0, 1), head_reduction)[None])
    if lookahead > 0:
        look = weights[:, n_window:, :]  # [H, m, K]
        rows.append(reduce(look, 0, head_reduction))
    per_key = torch.cat(rows, dim=0)  # [S, K]
    first_key = total - k_len  # right-align the keys of a sliding layer
    out = per_key.new_zeros(per_key.shape[0], prompt_len)
    lo, hi = max(first_key, 0), min(total, prompt_len)
    if hi > lo:
        out[:, lo:hi] = per_key[:, lo - first_key : hi - first_key]
    return out


def combine_scores(layer_step_scores: torch.Tensor, layer_reduction: str, step_reduction: str) -> torch.Tensor:
    """[layers, steps, L] -> [L]: reduce over layers, then over steps (prefill window, lookahead tokens)."""
    if layer_step_scores.dim() != 3:
        raise ValueError(f"expected [layers, steps, L], got shape {tuple(layer_step_scores.shape)}")
    per_step = reduce(layer_step_scores, 0, layer_reduction)
    return reduce(per_step, 0, step_reduction)


def neighbor_offsets(n: int) -> torch.Tensor:
    """Offsets of a position and its ``n`` nearest neighbours, nearest first, left before right: 0,-1,1,-2,2..."""
    out = [0]
    d = 1
    while len(out) < n + 1:
        out.append(-d)
        if len(out) < n + 1:
            out.append(d)
        d += 1
    return torch.tensor(out, dtype=torch.long)


def _unique_in_order(values: torch.Tensor) -> torch.Tensor:
    """Distinct values of a 1-D tensor, each at its first occurrence, in that order."""
    if values.numel() == 0:
        return values
    uniq, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(values.numel(), device=values.device)
    first = torch.full((uniq.numel(),), values.numel(), dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return uniq[first.argsort()]


def select_tokens(
    scores: torch.Tensor,
    budget: int,
    *,
    kernel_size: int,
    pooling: str,
    neighbors: int,
    protected: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sorted indices of exactly ``min(budget, L)`` positions to keep, SpecPC's selection.

    scores [L]; protected: bool [L] of positions always kept (the window), counted in the budget; if it
    alone exceeds the budget, its last ``budget`` positions are kept. The rest of the budget goes to the
    top positions of the pooled scores, each grown by its ``neighbors`` nearest neighbours (nearest first),
    de-duplicated in rank order and cut to the budget. Ties rank the earlier position first.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    length = scores.numel()
    device = scores.device
    if budget >= length:
        return torch.arange(length, device=device)
    if protected is None:
        protected = torch.zeros(length, dtype=torch.bool, device=device)
    protected_idx = protected.nonzero().flatten()
    if protected_idx.numel() >= budget:
        return protected_idx[protected_idx.numel() - budget :]
    remaining = budget - protected_idx.numel()
    pooled = pool1d(scores.float()[None], kernel_size, pooling)[0]
    pooled = pooled.masked_fill(protected, float("-inf"))
    ranked = torch.sort(pooled, descending=True, stable=True).indices[:remaining]
    grown = (ranked[:, None] + neighbor_offsets(neighbors).to(device)[None, :]).reshape(-1)
    inside = (grown >= 0) & (grown < length)
    grown = grown[inside]
    grown = grown[~protected[grown]]
    chosen = _unique_in_order(grown)[:remaining]
    return torch.sort(torch.cat([chosen, protected_idx])).values


# ------------------------------------------------------------------------------------------------
# options and budget

_OPTION_NAMES = ("separator", "whole_sentences", "lookahead_text", "max_prompt_tokens", "return_scores")


def resolve_budget(total_tokens: int, budget: int | None, rate: float | None) -> int:
    """Tokens to keep from exactly one of ``budget`` (tokens, >= 1) or ``rate`` (kept fraction in (0, 1])."""
    if (budget is None) == (rate is None):
        raise ConfigError("give exactly one of budget= (tokens to keep) or rate= (kept fraction in (0, 1])")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise ConfigError(f"budget must be an integer number of tokens, got {budget!r}")
        if budget < 1:
            raise ConfigError(f"budget must be >= 1 token, got {budget}")
        return budget
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ConfigError(f"rate must be a number in (0, 1], got {rate!r}")
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"rate must be in (0, 1] (the fraction of tokens kept), got {rate}")
    return max(1, int(math.floor(rate * total_tokens + 0.5)))


def _split_options(config: SpecPCConfig | None, options: dict[str, Any]) -> tuple[SpecPCConfig, dict[str, Any]]:
    config = config if config is not None else SpecPCConfig()
    if not isinstance(config, SpecPCConfig):
        raise ConfigError(f"config must be a SpecPCConfig, got {type(config).__name__}")
    config_names = {f.name for f in fields(SpecPCConfig)}
    overrides = {k: v for k, v in options.items() if k in config_names}
    rest = {k: v for k, v in options.items() if k not in config_names}
    unknown = set(rest) - set(_OPTION_NAMES)
    if unknown:
        raise ConfigError(
            f"unknown compress option(s): {', '.join(sorted(unknown))}; known: "
            f"{', '.join(_OPTION_NAMES)} and the SpecPCConfig fields"
        )
    if overrides:
        config = config.replace(**overrides)
    sep = rest.get("separator", DEFAULT_SEPARATOR)
    if not isinstance(sep, str):
        raise ConfigError(f"separator must be a string, got {sep!r}")
    look = rest.get("lookahead_text")
    if look is not None and not isinstance(look, str):
        raise ConfigError(f"lookahead_text must be a string, got {type(look).__name__}")
    cap = rest.get("max_prompt_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 16):
        raise ConfigError(f"max_prompt_tokens must be an integer >= 16, got {cap!r}")
    return config, rest


def _as_texts(context: str | Sequence[str]) -> tuple[list[str], bool]:
    if isinstance(context, str):
        return [context], True
    if isinstance(context, (bytes, bytearray)) or not isinstance(context, Sequence):
        raise InvalidInputError(
            f"context must be a string or a sequence of strings, got {type(context).__name__}"
        )
    texts = list(context)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(
                f"document {i} is {type(t).__name__}, not text: SpecPC compresses text only "
                "(convert it to a string, or leave such documents out)"
            )
    return texts, False


# ------------------------------------------------------------------------------------------------
# prompt layout


@dataclass
class _Layout:
    """Token ids of the fixed prompt parts around the documents."""

    prefix: list[int]
    header: list[list[int]]  # per document
    between: list[int]
    question: list[int]


def _layout(loaded, query: str | None, n_docs: int) -> _Layout:
    tok = loaded.tokenizer

    def ids(text: str, special: bool = False) -> list[int]:
        return list(tok(text, add_special_tokens=special)["input_ids"]) if text or special else []

    if query is None:
        # A plain prompt: the documents as one continuous text, no framing.
        return _Layout(prefix=ids("", special=True), header=[[] for _ in range(n_docs)], between=ids("\n\n"), question=[])
    headers = [ids(f"Document {i + 1}:\n") for i in range(n_docs)]
    if loaded.has_chat_template:
        marker = "\u2063DRAFTAPPROX_CONTENT\u2063"
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
        )
        before, after = rendered.split(marker, 1)
        bos = getattr(tok, "bos_token", None)
        has_bos = bool(bos) and before.startswith(bos)
        prefix = ids(before + RAG_INTRO, special=not has_bos)
        question = ids(f"Question: {query.strip()}" + after)
    else:
        prefix = ids(RAG_INTRO, special=True)
        question = ids(f"Question: {query.strip()}\nAnswer:")
    return _Layout(prefix=prefix, header=headers, between=ids("\n\n"), question=question)


@dataclass
class _Piece:
    doc: int
    start: int  # token range inside the document's tokens
    end: int


def _plan_chunks(doc_lengths: list[int], layout: _Layout, max_context: int) -> list[list[_Piece]]:
    """Pack documents (split when needed) into chunks whose prompts fit ``max_context`` tokens."""
    fixed = len(layout.prefix) + len(layout.question)
    chunks: list[list[_Piece]] = []
    current: list[_Piece] = []
    used = fixed
    for d, n in enumerate(doc_lengths):
        start = 0
        while start < n:
            overhead = len(layout.header[d]) + len(layout.between)
            room = max_context - used - overhead
            if room < 8 and current:
                chunks.append(current)
                current, used = [], fixed
                continue
            if room < 8:
                raise ContextLengthError(
                    f"the question and prompt framing take {fixed + overhead} tokens, leaving no room for context "
                    f"in the draft's {max_context}-token window; shorten the question"
                )
            take = min(room, n - start)
            current.append(_Piece(d, start, start + take))
            used += overhead + take
            start += take
    if current:
        chunks.append(current)
    return chunks


# ------------------------------------------------------------------------------------------------
# running the draft


def _score_prompt(
    loaded,
    prompt_ids: list[int],
    *,
    observation: int,
    config: SpecPCConfig,
    lookahead_ids: list[int] | None,
) -> tuple[torch.Tensor, list[int]]:
    """Run the draft on the prompt (+ lookahead) and return per-position scores [len(prompt_ids)] and the
    lookahead token ids (given or generated)."""
    from .capture import AttentionCapture

    model = loaded.model
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    if config.starting_layer_index >= n_layers:
        raise ConfigError(
            f"starting_layer_index={config.starting_layer_index} but the draft has only {n_layers} layers; "
            f"use a value below {n_layers}"
        )
    layers = range(config.starting_layer_index, n_layers)
    prompt_len = len(prompt_ids)
    state = {"lookahead": 0, "total": prompt_len}

    def reducer(weights: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        return reduce_window_attention(
            weights,
            lookahead=state["lookahead"],
            prompt_len=prompt_len,
            head_reduction=config.head_reduction,
            weighted_query=config.weighted_query,
            total_len=state["total"],
        ).cpu()

    device = loaded.input_device
    generated: list[int] = []
    given = list(lookahead_ids or [])
    eos = _eos_ids(loaded)
    with torch.inference_mode():
        if lookahead_ids is not None:
            # One forward of prompt + given lookahead: each lookahead query is one step.
            ids = torch.tensor([prompt_ids + given], device=device)
            state.update(lookahead=len(given), total=ids.shape[1])
            with AttentionCapture(model, observation + len(given), layers=layers, reducer=reducer) as cap:
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
            records = cap.records
        else:
            ids = torch.tensor([prompt_ids], device=device)
            need = config.lookahead_tokens
            with AttentionCapture(model, observation, layers=layers, reducer=reducer) as cap:
                out = model(input_ids=ids, use_cache=need > 0, logits_to_keep=1)
            records = cap.records
            past = out.past_key_values if need > 0 else None
            logits = out.logits
            while len(generated) < need:
                token = int(logits[0, -1].argmax())
                if token in eos:
                    break
                generated.append(token)
                state.update(lookahead=1, total=prompt_len + len(generated))
                with AttentionCapture(model, 1, layers=layers, reducer=reducer) as cap:
                    out = model(
                        input_ids=torch.tensor([[token]], device=device),
                        past_key_values=past,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                for layer, values in cap.records.items():
                    records.setdefault(layer, []).extend(values)
                past, logits = out.past_key_values, out.logits
    per_layer = [torch.cat(records[layer], dim=0) for layer in layers if layer in records]
    if not per_layer:
        raise RuntimeError("attention capture recorded nothing: is the draft loaded with the draftapprox attention?")
    scores = combine_scores(torch.stack(per_layer), config.layer_reduction, config.step_reduction)
    return scores, (given if lookahead_ids is not None else generated)


def _eos_ids(loaded) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(loaded.model, "generation_config", None), loaded.model.config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(int(loaded.tokenizer.eos_token_id))
    return ids


# ------------------------------------------------------------------------------------------------
# the method


@dataclass
class ScoredContext:
    """The draft's scores of every context token, before any selection (the expensive half of SpecPC)."""

    texts: list[str]
    offsets: list[list[Span]]
    scores: list[torch.Tensor]  # per text, one float per draft token
    query: str | None
    lookaheads: list[str]
    chunks: int

    @property
    def lengths(self) -> list[int]:
        return [len(o) for o in self.offsets]

    @property
    def total_tokens(self) -> int:
        return sum(self.lengths)


def score_context(
    loaded,
    texts: list[str],
    query: str | None,
    config: SpecPCConfig,
    *,
    lookahead_text: str | None = None,
    max_prompt_tokens: int | None = None,
) -> ScoredContext:
    """Run the draft over the documents + question (in chunks when needed) and score every context token.

    ``loaded`` is the draft's LoadedModel; the caller holds the engine lock.
    """
    tok = loaded.tokenizer
    encoded = [tokenize_with_offsets(tok, t) for t in texts]
    doc_ids = [e[0] for e in encoded]
    offsets = [e[1] for e in encoded]
    lengths = [len(x) for x in doc_ids]
    layout = _layout(loaded, query, len(texts))
    if lookahead_text is None:
        look_ids = None  # the draft generates config.lookahead_tokens
    else:
        look_ids = tokenize_with_offsets(tok, lookahead_text)[0]
    n_look = len(look_ids) if look_ids is not None else config.lookahead_tokens
    limit = loaded.context_length if max_prompt_tokens is None else min(loaded.context_length, max_prompt_tokens)
    chunks = _plan_chunks(lengths, layout, limit - n_look - 1)

    doc_scores = [torch.zeros(n) for n in lengths]
    lookaheads: list[str] = []
    for pieces in chunks:
        prompt = list(layout.prefix)
        placed: list[tuple[int, _Piece]] = []
        for k, piece in enumerate(pieces):
            if k:
                prompt += layout.between
            prompt += layout.header[piece.doc]
            placed.append((len(prompt), piece))
            prompt += doc_ids[piece.doc][piece.start : piece.end]
        if query is not None:
            prompt += layout.between + layout.question
            observation = min(config.window_size, len(layout.question))
        else:
            observation = min(config.window_size, len(prompt))
        scores, look = _score_prompt(loaded, prompt, observation=observation, config=config, lookahead_ids=look_ids)
        for pos, piece in placed:
            doc_scores[piece.doc][piece.start : piece.end] = scores[pos : pos + piece.end - piece.start]
        lookaheads.append(tok.decode(look, skip_special_tokens=True))
    return ScoredContext(texts, offsets, doc_scores, query, lookaheads, len(chunks))


def select_documents(
    scored: ScoredContext,
    keep: int,
    config: SpecPCConfig,
    *,
    separator: str = DEFAULT_SEPARATOR,
    whole_sentences: bool = False,
) -> tuple[list[CompressedDocument], int]:
    """Spend ``keep`` tokens over all documents by their scores; returns the documents and tokens selected."""
    total = scored.total_tokens
    flat = torch.cat(scored.scores) if scored.scores else torch.zeros(0)
    protected = torch.zeros(total, dtype=torch.bool)
    if scored.query is None:
        # A plain prompt: its own tail is the observation window, always kept.
        protected[max(0, total - config.window_size) :] = True
    kept = select_tokens(
        flat, keep, kernel_size=config.kernel_size, pooling=config.pooling, neighbors=config.neighbors, protected=protected
    )
    mask = torch.zeros(total, dtype=torch.bool)
    mask[kept] = True
    mass = flat.clamp_min(0)
    total_mass = float(mass.sum()) or 1.0
    docs: list[CompressedDocument] = []
    start = 0
    for i, (text, offsets) in enumerate(zip(scored.texts, scored.offsets)):
        n = len(offsets)
        chosen = mask[start : start + n].nonzero().flatten().tolist()
        spans = token_spans(offsets, chosen)
        spans = snap_to_sentences(text, spans) if whole_sentences else snap_to_words(text, spans)
        docs.append(
            CompressedDocument(
                index=i,
                text=render_spans(text, spans, separator),
                spans=spans,
                original_tokens=n,
                compressed_tokens=count_tokens_in_spans(offsets, spans),
                relevance=float(mass[start : start + n].sum()) / total_mass,
                selected_tokens=len(chosen),
            )
        )
        start += n
    return docs, int(kept.numel())


def compress(
    engine,
    context: str | Sequence[str],
    query: str | None = None,
    *,
    budget: int | None = None,
    rate: float | None = None,
    config: SpecPCConfig | None = None,
    **options: Any,
) -> CompressionResult:
    """Compress ``context`` (a text or documents) to ``budget`` draft tokens (or ``rate``) with SpecPC.

    See the module docstring for the prompt layout, the budget rule, pass-through and chunking.
    """
    started = time.perf_counter()
    config, opts = _split_options(config, options)
    texts, single = _as_texts(context)
    if query is not None:
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
        if not query.strip():
            raise InvalidInputError("query is empty: pass the question, or query=None to compress without one")
    lookahead_text = opts.get("lookahead_text")
    # Validate the budget before touching the model, so a bad value fails fast.
    resolve_budget(1, budget, rate)

    with engine.lock:
        loaded = engine.draft
        lengths = [len(tokenize_with_offsets(loaded.tokenizer, t)[0]) for t in texts]
        total = sum(lengths)
        keep = resolve_budget(total, budget, rate)
        if total == 0 or keep >= total:
            docs = [
                CompressedDocument(
                    index=i,
                    text=t,
                    spans=[(0, len(t))] if t else [],
                    original_tokens=n,
                    compressed_tokens=n,
                    relevance=0.0,
                    selected_tokens=n,
                )
                for i, (t, n) in enumerate(zip(texts, lengths))
            ]
            return CompressionResult(
                text=_join(docs, single),
                documents=docs,
                original_tokens=total,
                compressed_tokens=total,
                seconds=time.perf_counter() - started,
                lookahead_text=lookahead_text or "",
                budget=keep,
                selected_tokens=total,
                passthrough=True,
                chunks=0,
                query=query,
            )
        scored = score_context(
            loaded, texts, query, config, lookahead_text=lookahead_text, max_prompt_tokens=opts.get("max_prompt_tokens")
        )

    # Selection and text work need no model: outside the lock.
    docs, selected = select_documents(
        scored,
        keep,
        config,
        separator=opts.get("separator", DEFAULT_SEPARATOR),
        whole_sentences=bool(opts.get("whole_sentences", False)),
    )
    if lookahead_text is not None:
        shown = lookahead_text
    else:
        shown = " | ".join(scored.lookaheads)
    return CompressionResult(
        text=_join(docs, single),
        documents=docs,
        original_tokens=total,
        compressed_tokens=sum(d.compressed_tokens for d in docs),
        seconds=time.perf_counter() - started,
        lookahead_text=shown,
        budget=keep,
        selected_tokens=selected,
        passthrough=False,
        chunks=scored.chunks,
        query=query,
        scores=list(scored.scores) if opts.get("return_scores") else None,
    )


def _join(docs: list[CompressedDocument], single: bool) -> str:
    if single:
        return docs[0].text if docs else ""
    return "\n\n".join(d.text for d in docs if d.text)
