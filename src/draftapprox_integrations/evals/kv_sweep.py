"""Many KV selections of one prefill: how SpecKV's candidates were compared (``draftapprox sweep-kv``).

Answering each sample once per candidate selection through ``engine.generate`` would repeat the expensive
part, the prefill and the draft's lookahead, for every candidate. With one model as its own draft (the
project's embedded pair) that part is shared by every KV method: the prompt's prefill with the window's
attention captured, then the greedy answer, then one forward over it on the prompt's cache with its
attention captured. That greedy answer *is* full KV's answer and SpecKV's lookahead. This module does it once per
sample and keeps, per layer, the attention each query head paid to each prompt key (max and sum over the
window's queries, and over the lookahead's); a candidate (``evals.kv_candidates``) turns those into kept
positions, every candidate's cache is gathered from the one full cache, and the candidates decode together,
greedily, in one batch.

It is the engine's own path taken apart, not a model of it: the same capture, the same greedy lookahead,
the same cut (kept keys keep their rotary positions; the answer continues at the prompt's true positions).
``tests/integration/evals`` checks that the default candidate gives ``engine.generate``'s answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..engine.batching import DecodeBatch, Joining
from ..engine.capture import AttentionCapture
from ..engine.decoding import new_cache
from ..engine.prompts import eos_token_ids
from ..engine.sampling import SamplingRule
from ..engine.steps import DecodeRequest, decode_alone


@dataclass
class HeadScores:
    """One layer's attention to the prompt keys, per query head: [Hq, prompt_len] float32 each."""

    window_max: torch.Tensor
    window_sum: torch.Tensor
    window_queries: int
    look_max: torch.Tensor | None = None
    look_sum: torch.Tensor | None = None
    look_queries: int = 0


@dataclass
class Observation:
    """Everything a candidate may use about one sample, and what decoding needs."""

    prompt_len: int
    window: int
    kv_heads: int
    layers: dict[int, HeadScores]
    spans: torch.Tensor  # [prompt_len] word/number span id of each prompt token (see token_spans)
    full_keys: dict[int, torch.Tensor]  # layer -> [Hkv, prompt_len, D] of the full cache
    full_values: dict[int, torch.Tensor]
    first_logits: torch.Tensor
    answer_ids: list[int]  # the greedy answer with full KV: full KV's answer and SpecKV's lookahead
    answer_text: str


class _Accumulator:
    """A capture reducer that folds every forward into running max / sum per query head (keeping each
    answer token's [Hq, K] record would cost GBs at 8k tokens)."""

    def __init__(self, prompt_len: int) -> None:
        self.prompt_len = prompt_len
        self.layers: dict[int, HeadScores] = {}

    def __call__(self, weights: torch.Tensor, module) -> None:
        w = weights[0, :, :, : self.prompt_len].float()  # [Hq, Q, P]
        i = module.layer_idx
        if i not in self.layers:  # the prompt's prefill: the window's queries
            self.layers[i] = HeadScores(w.amax(dim=1), w.sum(dim=1), w.shape[1])
            return
        s = self.layers[i]
        if s.look_max is None:
            s.look_max, s.look_sum = w.amax(dim=1), w.sum(dim=1)
        else:
            s.look_max = torch.maximum(s.look_max, w.amax(dim=1))
            s.look_sum = s.look_sum + w.sum(dim=1)
        s.look_queries += w.shape[1]


def token_spans(tokenizer, ids: Sequence[int], max_span: int = 16) -> torch.Tensor:
    """A span id per token: a token joins its predecessor's span when both sides of their boundary are
    letters or digits (a multi-token word, number or code); whitespace or punctuation starts a new span.
    Spans are capped at ``max_span`` tokens so an unbroken run (scripts without spaces) stays local."""
    pieces = [tokenizer.decode([t]) for t in ids]
    out, span, length, prev = [], -1, 0, ""
    for piece in pieces:
        joins = bool(prev) and bool(piece) and prev[-1].isalnum() and piece[0].isalnum() and length < max_span
        if joins:
            length += 1
        else:
            span, length = span + 1, 1
        out.append(span)
        prev = piece
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def observe(target, prompt_ids: Sequence[int], *, window: int, max_new_tokens: int) -> Observation:
    """Prefill ``prompt_ids`` with the window's attention captured, then the greedy answer (up to
    ``max_new_tokens``, EOS ends it), then one forward over that answer on the prompt's cache with its
    attention captured (what each answer token saw as it was written, as the engine's self-draft scores it)."""
    model, device = target.model, target.input_device
    prompt_len = len(prompt_ids)
    window = min(window, prompt_len)
    acc = _Accumulator(prompt_len)
    cache = new_cache(model)
    with AttentionCapture(model, window, reducer=acc):
        out = model(input_ids=torch.tensor([list(prompt_ids)], device=device), cache=cache, use_cache=True, logits_to_keep=1)
    first_logits = out.logits[0, -1].float()
    decoded = decode_alone(DecodeRequest(
        model, target.tokenizer, cache, first_logits, prompt_len, max_new_tokens, eos_token_ids(target),
        keep_prompt=prompt_len,
    ))
    look, cache = decoded.lookahead, decoded.cache
    if look.token_ids:
        with AttentionCapture(model, len(look.token_ids), reducer=acc):
            model(
                input_ids=torch.tensor([look.token_ids], device=device),
                position_ids=torch.arange(prompt_len, prompt_len + len(look.token_ids), device=device)[None],
                cache=cache, use_cache=True, logits_to_keep=1,
            )
    keys = {i: layer.keys[0, :, :prompt_len].clone() for i, layer in enumerate(cache.layers)}
    values = {i: layer.values[0, :, :prompt_len].clone() for i, layer in enumerate(cache.layers)}
    return Observation(
        prompt_len=prompt_len, window=window, kv_heads=model.config.num_key_value_heads, layers=acc.layers,
        spans=token_spans(target.tokenizer, prompt_ids), full_keys=keys, full_values=values,
        first_logits=first_logits, answer_ids=list(look.token_ids), answer_text=look.text,
    )


Kept = dict[int, torch.Tensor]  # layer -> [Hkv, n_layer] sorted kept prompt positions


def gathered_cache(model, obs: Observation, kept: Kept):
    """A one-row cache holding what ``kept`` keeps of the full prompt cache (keys keep their rotary positions)."""
    cache = new_cache(model)
    for i in sorted(obs.full_keys):
        idx = kept[i][None, ..., None].expand(-1, -1, -1, obs.full_keys[i].shape[-1])  # [1, Hkv, n, D]
        cache.update(obs.full_keys[i][None].gather(2, idx), obs.full_values[i][None].gather(2, idx), i)
    return cache


@torch.no_grad()
def decode_selections(target, obs: Observation, selections: Sequence[Kept], *, max_new_tokens: int) -> list[str]:
    """Greedy answers, one per selection, decoded together by the engine's DecodeBatch from the gathered
    caches (each row in its own slot: selections of any layout share the forwards)."""
    model = target.model
    eos = eos_token_ids(target)
    first = int(obs.first_logits.argmax())
    tokens = [[first] for _ in selections]
    batch = None
    for row, kept in enumerate(selections):
        if first in eos or max_new_tokens <= 1:
            continue
        cache = gathered_cache(model, obs, kept)
        batch = batch or DecodeBatch.for_cache(model, cache, max_slots=len(selections))
        batch.add(row, Joining(cache, first, obs.prompt_len, SamplingRule(), headroom=max_new_tokens))
    while batch is not None and len(batch):
        keep = []
        for i, (row, nxt) in enumerate(zip(batch.rows, batch.step())):
            tokens[row].append(nxt)
            if nxt not in eos and len(tokens[row]) < max_new_tokens:
                keep.append(i)
        batch.remove(keep)
    return [target.tokenizer.decode([t for t in row if t not in eos], skip_special_tokens=True) for row in tokens]


def answer_all(
    target, obs: Observation, named: dict[str, Kept], *, max_new_tokens: int, batch: int = 16
) -> dict[str, str]:
    """Every named selection's greedy answer, decoded in batches of at most ``batch``."""
    names = list(named)
    answers: dict[str, str] = {}
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        texts = decode_selections(target, obs, [named[n] for n in chunk], max_new_tokens=max_new_tokens)
        answers.update(zip(chunk, texts))
    return answers


Candidate = Callable[[Observation, int], Kept]  # (observation, budget) -> kept positions per layer
