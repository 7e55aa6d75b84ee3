"""Prompt-compression baselines that SpecPC is measured against, at the same budget.

* :func:`random_token_drop`: keep ``budget`` tokens of the context chosen uniformly at random (seeded).
* :func:`perplexity_token_drop`: in the style of LLMLingua (Jiang et al., 2023), a small LM (the draft)
  reads the context and the tokens it finds most predictable are dropped: the ``budget`` tokens of highest
  surprisal, -log p(token | everything before it), are kept. With a question, the draft reads the question
  first, so what the question makes predictable counts as predictable (a cheap nod to LongLLMLingua's
  question-aware scoring). Unlike LLMLingua's iterative segment-wise pruning, it meets the budget exactly.

Both count the budget in tokens of the *given* tokenizer (the draft's) over the context only, never touch
the question (it is not part of what they compress), and build their output from character spans of the
original text (``engine.alignment``: the same offsets and span merging SpecPC uses), so any model, with any
tokenizer, can read it. They return SpecPC's result shape, a ``CompressionResult`` holding one
``CompressedDocument``, so a caller handles every prompt method alike.

One difference from SpecPC's text is kept on purpose: the kept spans are joined with nothing between them
(no elision marker, no snapping to whole words). Byte-level BPE offsets carry each word's leading space, so
the plain concatenation keeps words apart, and the text re-tokenises to about the budget.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..engine.alignment import Span, token_spans, tokenize_with_offsets
from ..engine.errors import ConfigError
from ..engine.specpc import CompressedDocument, CompressionResult

PROMPT_BASELINES = ("random", "perplexity")

__all__ = [
    "PROMPT_BASELINES",
    "PromptCompression",
    "perplexity_token_drop",
    "random_token_drop",
    "spans_of_positions",
    "text_of_spans",
    "token_surprisal",
    "tokenize_with_offsets",
]

# The token -> merged character span step is SpecPC's (``alignment.token_spans``); the old name stays.
spans_of_positions = token_spans


@dataclass
class PromptCompression(CompressionResult):
    """SpecPC's ``CompressionResult`` for one text, plus which baseline made it.

    ``spans`` are the document's kept character ranges (``documents[0].spans``); ``extras`` holds the
    baseline's settings (the seed, whether the question conditioned the scores).
    """

    method: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def spans(self) -> list[Span]:
        return self.documents[0].spans if self.documents else []


def _check_budget(budget: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget must be a positive number of tokens, got {budget!r}")


def text_of_spans(text: str, spans: Sequence[Span]) -> str:
    """The kept spans of ``text`` concatenated, with no marker between them (see the module docstring)."""
    return "".join(text[a:b] for a, b in spans)


def _result(
    method: str,
    text: str,
    offsets: Sequence[Span],
    keep: Sequence[int],
    started: float,
    *,
    budget: int,
    query: str | None = None,
    chunks: int = 0,
    **extras,
) -> PromptCompression:
    n = len(offsets)
    spans = spans_of_positions(offsets, keep)
    kept_text = text_of_spans(text, spans)
    document = CompressedDocument(
        index=0,
        text=kept_text,
        spans=spans,
        original_tokens=n,
        compressed_tokens=len(keep),
        relevance=1.0 if n else 0.0,  # the only document holds all of the context
        selected_tokens=len(keep),
    )
    return PromptCompression(
        text=kept_text,
        documents=[document],
        original_tokens=n,
        compressed_tokens=len(keep),
        seconds=time.perf_counter() - started,
        lookahead_text="",
        budget=budget,
        selected_tokens=len(keep),
        passthrough=len(keep) >= n,
        chunks=chunks,
        query=query,
        method=method,
        extras=extras,
    )


def random_token_drop(text: str, budget: int, tokenizer, *, seed: int = 0) -> PromptCompression:
    """Keep ``budget`` tokens of ``text`` drawn uniformly without replacement (seeded), in their order."""
    _check_budget(budget)
    started = time.perf_counter()
    ids, offsets = tokenize_with_offsets(tokenizer, text)
    n = len(ids)
    keep = list(range(n)) if budget >= n else sorted(random.Random(seed).sample(range(n), budget))
    return _result("random", text, offsets, keep, started, budget=budget, seed=seed)


@torch.inference_mode()
def token_surprisal(model, context_ids: Sequence[int], prefix_ids: Sequence[int] = (), *, chunk_size: int = 1024) -> torch.Tensor:
    """-log p(token | prefix + context before it) for every context token, float32 [len(context_ids)].

    ``model`` is a loaded causal LM (a ``LoadedModel``). The text is read in chunks through a KV cache; when
    it outgrows the model's context the cache restarts (the first token after a restart, and the first
    token with no prefix, get +inf: nothing predicted them, so they are never dropped as predictable).
    """
    from transformers import DynamicCache

    lm = model.model
    device = model.input_device
    limit = max(chunk_size * 2, int(model.context_length))
    ids = torch.tensor(list(prefix_ids) + list(context_ids), dtype=torch.long, device=device)
    total, start_ctx = ids.numel(), len(prefix_ids)
    surprisal = torch.full((total,), float("inf"), dtype=torch.float32)
    cache = DynamicCache()
    seen = 0  # tokens in the cache
    prev_logits: torch.Tensor | None = None  # logits of the last token of the previous chunk
    pos = 0
    while pos < total:
        if seen + chunk_size > limit:
            cache, seen, prev_logits = DynamicCache(), 0, None
        chunk = ids[pos : pos + chunk_size]
        out = lm(
            input_ids=chunk[None],
            cache=cache,
            use_cache=True,
            position_ids=torch.arange(seen, seen + chunk.numel(), device=device)[None],
        )
        logits = out.logits[0].float()
        # Row i of `preds` predicts token i of the chunk; the first token of a fresh cache has no prediction.
        if prev_logits is None:
            preds, first = logits[:-1], 1
        else:
            preds, first = torch.cat([prev_logits[None], logits[:-1]], dim=0), 0
        logp = torch.log_softmax(preds, dim=-1)
        targets = chunk[first:]
        surprisal[pos + first : pos + chunk.numel()] = (-logp.gather(1, targets[:, None])[:, 0]).cpu()
        prev_logits = logits[-1]
        seen += chunk.numel()
        pos += chunk.numel()
    return surprisal[start_ctx:]


def perplexity_token_drop(
    text: str,
    budget: int,
    model,
    *,
    query: str | None = None,
    chunk_size: int = 1024,
) -> PromptCompression:
    """Keep the ``budget`` context tokens the draft ``model`` (a ``LoadedModel``) finds least predictable."""
    _check_budget(budget)
    started = time.perf_counter()
    tokenizer = model.tokenizer
    ids, offsets = tokenize_with_offsets(tokenizer, text)
    n = len(ids)
    if budget >= n:
        return _result("perplexity", text, offsets, list(range(n)), started, budget=budget, query=query)
    prefix = tokenizer(f"{query.strip()}\n\n", add_special_tokens=False)["input_ids"] if query else []
    scores = token_surprisal(model, ids, prefix, chunk_size=chunk_size)
    # Highest surprisal first; ties (e.g. several +inf) go to the earlier token so the result is deterministic.
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    keep = sorted(order[:budget])
    chunks = math.ceil((len(prefix) + n) / chunk_size)
    return _result(
        "perplexity", text, offsets, keep, started, budget=budget, query=query, chunks=chunks, query_conditioned=bool(query)
    )
