"""The expensive half of SpecPC: draft forwards under attention capture, one score per context token.

Written as steps (``engine.steps``): one forward between two yields, a generated lookahead handed out as a
decode request. The caller holds whatever lock guards the draft while a step runs; nothing here selects or
renders text.
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
from ..decoding import new_cache
from ..errors import ConfigError
from ..prompts import eos_token_ids
from ..steps import DecodeRequest, Steps
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
) -> Steps[ScoredContext]:
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
        scores, look = yield from score_prompt(
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


def score_prompt(
    draft,
    prompt_ids: list[int],
    *,
    observation: int,
    config: SpecPCConfig,
    lookahead_ids: list[int] | None,
) -> Steps[tuple[torch.Tensor, list[int]]]:
    """Per-position scores [len(prompt_ids)] of one draft prompt, and the lookahead ids (given or generated).

    The last ``observation`` prompt queries form one scoring step; each lookahead token is one more step.
    A given lookahead is scored in the same forward as the prompt. Otherwise the draft writes up to
    ``config.lookahead_tokens`` greedily (a decode request, nothing captured) and one forward over them on
    the prompt's cache scores them: under causal attention that forward sees what each token saw when it was
    written.
    """
    model = draft.model
    layers = _scored_layers(model, config)
    prompt_len = len(prompt_ids)
    given = list(lookahead_ids) if lookahead_ids is not None else None
    device = draft.input_device
    # Without tokens to generate no logits are needed: the forward stops after the last scored layer.
    one_pass = given is not None or config.lookahead_tokens == 0
    stop = layers[-1] if one_pass and layers[-1] < _layer_count(model) - 1 else None
    records: list[dict] = []
    if one_pass:
        capture = _capture(model, layers, config, prompt_len, observation + len(given or ()), len(given or ()), stop)
        with torch.inference_mode(), capture:
            try:
                model(input_ids=torch.tensor([prompt_ids + (given or [])], device=device), use_cache=False, logits_to_keep=1)
            except ForwardStopped:
                pass
        records.append(capture.records)
        look = given or []
        yield
    else:
        cache = new_cache(model)
        capture = _capture(model, layers, config, prompt_len, observation, 0, None)
        with torch.inference_mode(), capture:
            out = model(input_ids=torch.tensor([prompt_ids], device=device), cache=cache, use_cache=True, logits_to_keep=1)
        records.append(capture.records)
        request = DecodeRequest(
            model, draft.tokenizer, cache, out.logits[0, -1], prompt_len, config.lookahead_tokens, eos_token_ids(draft),
            keep_prompt=prompt_len,
        )
        del cache, out
        yield
        decoded = yield request
        look = decoded.lookahead.token_ids
        if look:
            capture = _capture(model, layers, config, prompt_len, len(look), len(look), None)
            with torch.inference_mode(), capture:
                model(
                    input_ids=torch.tensor([look], device=device),
                    position_ids=torch.arange(prompt_len, prompt_len + len(look), device=device)[None],
                    cache=decoded.cache, use_cache=True, logits_to_keep=1,
                )
            records.append(capture.records)
            yield
    per_layer = [torch.cat([r[i][0] for r in records if i in r], dim=0) for i in layers if any(i in r for r in records)]
    if not per_layer:
        raise RuntimeError("attention capture recorded nothing: is the draft loaded with the draftapprox attention?")
    return combine_scores(torch.stack(per_layer), config.layer_reduction, config.step_reduction), look


def _capture(model, layers, config: SpecPCConfig, prompt_len: int, window: int, lookahead: int, stop_after):
    """A capture of ``window`` queries (the last ``lookahead`` of them lookahead tokens, one scoring step
    each) reduced at once to per-step scores of the prompt's tokens."""

    def reducer(weights: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        return reduce_window_attention(
            weights, lookahead=lookahead, prompt_len=prompt_len, head_reduction=config.head_reduction,
            weighted_query=config.weighted_query, total_len=prompt_len + lookahead,
        )

    return AttentionCapture(model, window, layers=layers, reducer=reducer, stop_after=stop_after)


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
