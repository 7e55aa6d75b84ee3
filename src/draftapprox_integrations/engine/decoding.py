"""The token-by-token decode loop shared by every generation method (and by the draft's lookahead).

The loop is deliberately plain: one forward per token from a given cache, with explicit ``position_ids``
so that a compressed cache (fewer entries than tokens seen) still gives every new token its true
position. Sampling is greedy at temperature 0, otherwise temperature + nucleus (top-p) sampling from a
seeded generator. Stop sequences are checked on the decoded text (a stop string may span tokens) and
trimmed from the answer; text that could still be the start of a stop sequence is held back while
streaming, so a streamed answer never shows a stop sequence that the final answer trims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError


def check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    """The one rule for sampling options (engine and adapters): NaN and infinity are refused too, since
    ``nan < 0`` is False and would otherwise reach ``torch.multinomial`` after the whole prefill."""
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ConfigError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")


def check_stop(stop: Sequence[str] | str | None) -> tuple[str, ...]:
    """Normalise stop sequences: a single string becomes one sequence; empty strings are refused."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ConfigError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    out = tuple(stop)
    for s in out:
        if not isinstance(s, str) or not s:
            raise ConfigError(f"stop sequences must be non-empty strings, got {s!r}")
    return out


class TokenSampler:
    """Picks the next token from logits: greedy at temperature 0, else temperature + top-p with a seed."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> None:
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        # A CPU generator keeps sampling reproducible for a seed whatever device the logits live on.
        self.generator = torch.Generator(device="cpu")
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    @property
    def greedy(self) -> bool:
        # Below float32's smallest normal number a temperature is argmax anyway, and as a float32 divisor it
        # would underflow to 0 (NaN probabilities).
        return self.temperature < torch.finfo(torch.float32).tiny

    def __call__(self, logits: torch.Tensor) -> int:
        logits = logits.reshape(-1).float()
        if self.greedy:
            return int(torch.argmax(logits))
        # Shift by the max first: a tiny positive temperature then sends the other logits to -inf (one-hot)
        # instead of overflowing the largest to inf (NaN probabilities).
        probs = torch.softmax((logits - logits.max()) / self.temperature, dim=-1).cpu()
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            outside = cumulative - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=self.generator)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=self.generator))


class StopTextTracker:
    """Turns a growing list of token ids into text deltas, honouring stop sequences.

    ``push(token_id)`` returns the newly safe text and whether a stop sequence ended the answer. Text is
    re-decoded from all tokens each step (cheap at answer lengths) because a token's text can depend on
    its neighbours (byte-level merges, leading spaces).
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.token_ids: list[int] = []
        self.emitted = 0  # characters of the answer already handed out
        self.text = ""
        self.stopped = False

    def _decode(self) -> str:
        return self.tokenizer.decode(self.token_ids, skip_special_tokens=True)

    def push(self, token_id: int) -> tuple[str, bool]:
        self.token_ids.append(int(token_id))
        text = self._decode()
        cut = None
        for s in self.stop:
            at = text.find(s)
            if at != -1 and (cut is None or at < cut):
                cut = at
        if cut is not None:
            self.text = text[:cut]
            self.stopped = True
            delta = self.text[self.emitted :] if len(self.text) > self.emitted else ""
            self.emitted = max(self.emitted, len(self.text))
            return delta, True
        self.text = text
        safe = len(text)
        # An unfinished multi-byte character decodes as U+FFFD until its last byte arrives.
        while safe > self.emitted and text[safe - 1] == "\ufffd":
            safe -= 1
        # Hold back the longest suffix that could be the beginning of a stop sequence.
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[safe - k : safe] == s[:k]:
                    hold = max(hold, k)
                    break
        safe -= hold
        delta = text[self.emitted : safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return delta, False

    def flush(self) -> str:
        """The held-back remainder once generation ends without a stop sequence."""
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta


@dataclass
class DecodeStep:
    """One generated token (``token_id`` None on a final flush) with its text delta; ``finish_reason`` on the last."""

    token_id: int | None
    text: str
    finish_reason: str | None = None


class TokenStream:
    """One answer's decode state: it samples each next token and says whether the answer goes on.

    ``next(logits)`` samples from the logits of the last fed position and returns the step; a step without
    ``finish_reason`` carries a token that must be fed (at ``position``) to get the next logits. EOS is not
    part of the answer. The same state serves a lone decode loop and a row of a batched one.
    """

    def __init__(
        self, tokenizer, *, max_new_tokens: int, sampler: TokenSampler, eos_ids: set[int], stop: Sequence[str] = (),
        next_position: int = 0,
    ) -> None:
        self.tracker = StopTextTracker(tokenizer, stop)
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.eos_ids = eos_ids
        self.position = next_position  # the true position of the next token fed
        self.sampled = 0

    def next(self, logits: torch.Tensor) -> DecodeStep:
        token = self.sampler(logits)
        self.sampled += 1
        if token in self.eos_ids:
            return DecodeStep(None, self.tracker.flush(), "eos")
        delta, stopped = self.tracker.push(token)
        if stopped:
            return DecodeStep(token, delta, "stop")
        if self.sampled >= self.max_new_tokens:
            return DecodeStep(token, delta + self.tracker.flush(), "length")
        return DecodeStep(token, delta)

    def fed(self) -> int:
        """Advance past the token just fed; returns its position."""
        self.position += 1
        return self.position - 1


@torch.no_grad()
def decode_tokens(
    model,
    tokenizer,
    cache,
    first_logits: torch.Tensor,
    next_position: int,
    *,
    max_new_tokens: int,
    sampler: TokenSampler,
    eos_ids: set[int],
    stop: Sequence[str] = (),
    before_feed: Callable[[int], None] | None = None,
) -> Iterator[DecodeStep]:
    """Sample up to ``max_new_tokens`` tokens, starting from the logits of the last prompt token.

    ``cache`` holds the (possibly compressed) prompt KV; ``next_position`` is the true position of the
    first new token (the prompt length), used as ``position_ids`` whatever the cache length is. EOS is not
    part of the answer. The last step carries ``finish_reason``: "eos", "stop" or "length".
    ``before_feed(n)`` runs before the forward that feeds the n-th sampled token (1-based), so a caller that
    captures attention knows which step it is looking at.
    """
    stream = TokenStream(
        tokenizer, max_new_tokens=max_new_tokens, sampler=sampler, eos_ids=eos_ids, stop=stop, next_position=next_position
    )
    device = first_logits.device
    logits = first_logits
    while True:
        step = stream.next(logits)
        yield step
        if step.finish_reason is not None:
            return
        if before_feed is not None:
            before_feed(stream.sampled)
        out = model(
            input_ids=torch.tensor([[step.token_id]], device=device),
            position_ids=torch.tensor([[stream.fed()]], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[0, -1]


def new_cache(model):
    """An empty KV cache laid out for ``model`` (sliding-window layers included)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@dataclass
class Lookahead:
    """A greedy continuation: its text (stop sequence trimmed), token ids, and why it ended."""

    text: str
    token_ids: list[int]
    finish_reason: str


@torch.no_grad()
def greedy_lookahead(
    model,
    tokenizer,
    cache,
    first_logits: torch.Tensor,
    next_position: int,
    *,
    max_tokens: int,
    eos_ids: set[int],
    stop: Sequence[str] = (),
    feed_last: bool = True,
    before_feed: Callable[[int], None] | None = None,
) -> Lookahead:
    """The greedy answer that continues ``cache``: the draft's lookahead in SpecPC and SpecKV.

    With ``feed_last`` every kept token is fed through the model, the last one too (decode_tokens never
    feeds its last sample), so each lookahead token's attention is seen by an active capture and its KV sits
    in ``cache``. EOS ends the lookahead and is neither kept nor fed.
    """
    if max_tokens <= 0:
        return Lookahead("", [], "length")
    text, ids, finish, fed = "", [], "length", 0

    def count_feed(n: int) -> None:
        nonlocal fed
        fed = n
        if before_feed is not None:
            before_feed(n)

    steps = decode_tokens(
        model, tokenizer, cache, first_logits, next_position,
        max_new_tokens=max_tokens, sampler=TokenSampler(0.0), eos_ids=eos_ids, stop=stop, before_feed=count_feed,
    )
    for step in steps:
        text += step.text
        if step.token_id is not None:
            ids.append(step.token_id)
        if step.finish_reason:
            finish = step.finish_reason
    if feed_last and len(ids) > fed:
        count_feed(len(ids))
        model(
            input_ids=torch.tensor([[ids[-1]]], device=first_logits.device),
            position_ids=torch.tensor([[next_position + len(ids) - 1]], device=first_logits.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return Lookahead(text, ids, finish)
