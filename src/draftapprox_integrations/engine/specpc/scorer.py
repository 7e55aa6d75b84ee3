"""The expensive half of SpecPC: draft forwards under attention capture, one score per context token.

The caller holds whatever lock guards the draft; nothing here selects or renders text.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..alignment import Span
from ..capture import AttentionCapture, ForwardStopped
from ..config import SpecPCConfig
from ..decoding import greedy_lookahead, new_cache
from ..errors import ConfigError
from ..prompts import eos_token_ids
from .layout import PromptLayout, build_layout, plan_chunks
from .selection import combine_scores, reduce_window_attention

logger = logging.getLogger(__name__)


@dataclass
class EncodedDocuments:
    """The context texts in draft tokens, with each token's character span (tokenised once per call)."""

    texts: list[str]
    token_ids: list[list[int]]
    offsets: list[list[Span]]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.token_ids]


@dataclass
class ScoredContext:
    """The draft's scores of every context token, before any selection."""

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
    draft,
    docs: EncodedDocuments,
    query: str | None,
    config: SpecPCConfig,
    *,
    lookahead_ids: list[int] | None = None,
    max_prompt_tokens: int | None = None,
    progress: bool = False,
) -> ScoredContext:
    """Run the draft over the documents + question (in chunks when needed) and score every context token.

    ``lookahead_ids``: a given answer (draft tokens) to score with instead of generating
    ``config.lookahead_tokens``. A context scored in several chunks is logged at INFO (the plan, then each
    chunk's time) and, with ``progress``, shows a tqdm bar on stderr: a long input is not silent work.
    """
    layout = build_layout(draft, query, len(docs.texts))
    n_look = len(lookahead_ids) if lookahead_ids is not None else config.lookahead_tokens
    limit = draft.context_length if max_prompt_tokens is None else min(draft.context_length, max_prompt_tokens)
    chunks = plan_chunks(docs.lengths, layout, limit - n_look - 1)
    doc_scores = [torch.zeros(n) for n in docs.lengths]
    lookaheads: list[str] = []
    if len(chunks) > 1:
        logger.info("SpecPC: scoring %d context tokens in %d chunks of at most %d draft tokens",
                    sum(docs.lengths), len(chunks), limit)
    bar = tqdm(chunks, desc="SpecPC scoring", unit="chunk", disable=not progress or len(chunks) < 2, leave=False)
    for k, pieces in enumerate(bar):
        started = time.perf_counter()
        prompt, placed = _chunk_prompt(layout, pieces, docs.token_ids, query is not None)
        window = len(layout.question) if query is not None else len(prompt)
        scores, look = score_prompt(
            draft, prompt, observation=min(config.window_size, window), config=config, lookahead_ids=lookahead_ids
        )
        for pos, piece in placed:
            doc_scores[piece.doc][piece.start : piece.end] = scores[pos : pos + piece.end - piece.start]
        lookaheads.append(draft.tokenizer.decode(look, skip_special_tokens=True))
        if len(chunks) > 1:
            logger.info("SpecPC: chunk %d/%d (%d draft tokens) scored in %.2f s",
                        k + 1, len(chunks), len(prompt), time.perf_counter() - started)
    return ScoredContext(docs.texts, docs.offsets, doc_scores, query, lookaheads, len(chunks))


def _chunk_prompt(layout: PromptLayout, pieces, doc_ids: list[list[int]], with_question: bool):
    """One chunk's prompt ids and where each document piece starts in it."""
    prompt = list(layout.prefix)
    placed = []
    for k, piece in enumerate(pieces):
        if k:
            prompt += layout.between
        prompt += layout.header[piece.doc]
        placed.append((len(prompt), piece))
        prompt += doc_ids[piece.doc][piece.start : piece.end]
    if with_question:
        prompt += layout.between + layout.question
    return prompt, placed


@torch.inference_mode()
def score_prompt(
    draft,
    prompt_ids: list[int],
    *,
    observation: int,
    config: SpecPCConfig,
    lookahead_ids: list[int] | None,
) -> tuple[torch.Tensor, list[int]]:
    """Per-position scores [len(prompt_ids)] of one draft prompt, and the lookahead ids (given or generated).

    The last ``observation`` prompt queries form one scoring step; each lookahead token is one more step.
    A given lookahead is scored in the same forward as the prompt; otherwise the draft writes
    ``config.lookahead_tokens`` greedily and each token's attention is captured as it is fed.
    """
    model = draft.model
    layers = _scored_layers(model, config)
    prompt_len = len(prompt_ids)
    given = list(lookahead_ids) if lookahead_ids is not None else None
    # What the reducer needs to know about the forward it is looking at (updated before each lookahead feed).
    state = {"lookahead": len(given or ()), "total": prompt_len + len(given or ())}

    def reducer(weights: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        return reduce_window_attention(
            weights,
            lookahead=state["lookahead"],
            prompt_len=prompt_len,
            head_reduction=config.head_reduction,
            weighted_query=config.weighted_query,
            total_len=state["total"],
        ).cpu()

    def before_feed(n: int) -> None:
        state.update(lookahead=1, total=prompt_len + n)

    device = draft.input_device
    window = observation + len(given or ())
    # Without tokens to generate no logits are needed: the forward stops after the last scored layer.
    one_pass = given is not None or config.lookahead_tokens == 0
    stop = layers[-1] if one_pass and layers[-1] < _layer_count(model) - 1 else None
    with AttentionCapture(model, window, layers=layers, reducer=reducer, stop_after=stop) as capture:
        if one_pass:
            ids = prompt_ids + (given or [])
            try:
                model(input_ids=torch.tensor([ids], device=device), use_cache=False, logits_to_keep=1)
            except ForwardStopped:
                pass
            look = given or []
        else:
            look = _generate_lookahead(draft, prompt_ids, config.lookahead_tokens, before_feed)
    per_layer = [torch.cat(capture.records[i], dim=0) for i in layers if i in capture.records]
    if not per_layer:
        raise RuntimeError("attention capture recorded nothing: is the draft loaded with the draftapprox attention?")
    return combine_scores(torch.stack(per_layer), config.layer_reduction, config.step_reduction), look


def _generate_lookahead(draft, prompt_ids: list[int], n_tokens: int, before_feed) -> list[int]:
    """Prefill the prompt and let the draft write ``n_tokens`` (>= 1) greedily, feeding each one (EOS ends early)."""
    model = draft.model
    cache = new_cache(model)
    out = model(input_ids=torch.tensor([prompt_ids], device=draft.input_device), cache=cache, use_cache=True, logits_to_keep=1)
    look = greedy_lookahead(
        model, draft.tokenizer, cache, out.logits[0, -1], len(prompt_ids),
        max_tokens=n_tokens, eos_ids=eos_token_ids(draft), before_feed=before_feed,
    )
    return look.token_ids


def _layer_count(model) -> int:
    return int(getattr(model.config, "num_hidden_layers", 0) or 0)


def _scored_layers(model, config: SpecPCConfig) -> range:
    n_layers = _layer_count(model)
    for name in ("starting_layer_index", "ending_layer_index"):
        value = getattr(config, name)
        if value is not None and value >= n_layers:
            raise ConfigError(f"{name}={value} but the draft has only {n_layers} layers; use a value below {n_layers}")
    end = n_layers if config.ending_layer_index is None else config.ending_layer_index + 1
    return range(config.starting_layer_index, end)
