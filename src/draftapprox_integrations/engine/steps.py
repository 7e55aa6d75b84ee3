"""Model work written as steps, so that one loop can interleave, batch and cancel it.

A method's work (SpecKV's lookahead, prefill and cut; SpecPC's scoring) is a generator that runs at most one
forward between two ``yield``s:

* ``yield`` (None): a forward ran; whoever drives the steps may now run other work or stop here (a cancelled
  request is closed at such a point: the generator's ``finally`` blocks run, its caches are freed).
* ``result = yield DecodeRequest(...)``: decode this row (a draft's greedy lookahead, say) and send back its
  :class:`DecodeResult`. The engine's loop puts the row into a decode batch beside every other row of that
  model (other requests' lookaheads, answers), one forward per step for all.
* ``return value``: the work's result (a SpecPC result, or the answer row a generation decodes next).

A step never yields inside an attention observer's context (a capture, an eviction): those live in a
context variable of the driving thread, and another request's forward would otherwise run inside them.

:func:`run_alone` drives steps without a loop (a direct ``specpc.compress`` call, the evals): a decode request
is decoded on its own, in a one-row batch.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from .batching import DecodeBatch, Joining, first_token
from .decoding import DecodeStep, Lookahead, TokenStream
from .graphs import graphs_for
from .sampling import SamplingRule

T = TypeVar("T")
Steps = Generator[Any, Any, T]


@dataclass(eq=False)
class DecodeRequest:
    """A row to decode: ``model`` continues a one-row prefilled ``cache`` from ``first_logits`` (the last
    prompt position's), new tokens at true positions from ``position``, up to ``max_new_tokens`` (EOS, a stop
    sequence or the length ends it; EOS is not kept).

    ``keep_prompt``: the caller reads the cache's first ``keep_prompt`` entries again afterwards (a forward over
    the lookahead scores them): the result hands the same cache back holding just those, while the row decodes
    from a copy and the cache's full-attention layers are set aside meanwhile. Otherwise the cache is the
    row's: the caller must not keep a reference to it.
    """

    model: Any
    tokenizer: Any
    cache: Any
    first_logits: torch.Tensor
    position: int
    max_new_tokens: int
    eos_ids: set[int]
    stop: tuple[str, ...] = ()
    rule: SamplingRule = field(default_factory=SamplingRule)
    keep_prompt: int | None = None


@dataclass
class DecodeResult:
    lookahead: Lookahead
    cache: Any = None  # the request's cache, with its prompt entries, when it asked for keep_prompt


class LookaheadRow:
    """A decode request on its way through a batch: its token stream, and what it collected."""

    def __init__(self, request: DecodeRequest) -> None:
        self.request = request
        self.stream = TokenStream(
            request.tokenizer, max_new_tokens=request.max_new_tokens, eos_ids=request.eos_ids, stop=request.stop
        )
        self.text, self.ids, self.finish = "", [], "length"
        self._set_aside: dict[int, Any] = {}

    def start(self) -> bool:
        """Sample the first token from the prefill's logits; True when that already ends the row."""
        token = first_token(self.request.first_logits, self.request.rule)
        return self.push(token)

    def push(self, token: int) -> bool:
        """The row's next token; True once the row has ended."""
        return self._take(self.stream.push(token))

    def _take(self, step: DecodeStep) -> bool:
        self.text += step.text
        if step.token_id is not None:
            self.ids.append(step.token_id)
        if step.finish_reason is not None:
            self.finish = step.finish_reason
            return True
        return False

    def joining(self) -> Joining:
        """What the row brings to a batch. The request's cache is given up (or set aside, for keep_prompt)."""
        request = self.request
        joining = Joining(request.cache, self.ids[-1], request.position, request.rule,
                          headroom=request.max_new_tokens - len(self.ids) + 1)
        return joining

    def joined(self) -> None:
        """The batch holds a copy now: free the request's own tensors (the full layers only, for keep_prompt)."""
        request = self.request
        if request.keep_prompt is None:
            request.cache = None
            return
        for layer in request.cache.layers:
            if not getattr(layer, "is_sliding", False):
                layer.keys = layer.values = None

    def result(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> DecodeResult:
        """The row's result; ``prefix`` puts back the kept prompt entries of the full layers."""
        cache = self.request.cache if self.request.keep_prompt is not None else None
        if cache is not None and prefix:
            for i, (keys, values) in prefix.items():
                cache.layers[i].keys, cache.layers[i].values = keys, values
        self.request.cache = None
        return DecodeResult(Lookahead(self.text, self.ids, self.finish), cache)


def decode_alone(request: DecodeRequest, *, graphs: bool = True) -> DecodeResult:
    """Decode one request in a batch of its own, to its end."""
    row = LookaheadRow(request)
    if row.start():
        return row.result()
    batch = DecodeBatch.for_cache(request.model, request.cache, max_slots=1,
                                  graphs=graphs_for(request.first_logits.device, graphs))
    batch.add(row, row.joining())
    row.joined()
    while not row.push(batch.step()[0]):
        pass
    prefix = batch.prompt_prefix(0, request.keep_prompt) if request.keep_prompt is not None else None
    return row.result(prefix)


def run_alone(steps: Steps[T], *, graphs: bool = True) -> T:
    """Drive ``steps`` to its result in the calling thread, each decode request decoded on its own."""
    value = None
    while True:
        try:
            item = steps.send(value)
        except StopIteration as done:
            return done.value
        value = decode_alone(item, graphs=graphs) if isinstance(item, DecodeRequest) else None
