"""The host side of decoding: sampled token ids in, answer text and finish reasons out.

The device side (forwards over a batch of rows, the sampling) is ``engine.batching`` and ``engine.sampling``;
what comes back to the host each step is one token id per row. Here each row's :class:`TokenStream` turns its
ids into text deltas and decides when the answer ends: EOS (not part of the answer), a stop sequence (checked
on the decoded text, since a stop string may span tokens, and trimmed), or ``max_new_tokens``. Text that could
still be the start of a stop sequence is held back while streaming, so a streamed answer never shows a stop
sequence that the final answer trims.

Detokenisation is incremental: each step decodes only the few tokens since the last settled point (a token's
text can depend on its neighbours: byte-level merges, leading spaces), and stop sequences are searched only in
the new text and the tail that could start one: O(new tokens) per step, not O(answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigError

_UNFINISHED = "\ufffd"  # what a multi-byte character decodes to until its last byte arrives


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


class IncrementalDecoder:
    """Token ids -> text, decoding a short window per token instead of the whole answer each time.

    The window starts one settled piece back (``prefix``), so a tokenizer that drops the leading space of the
    first token it decodes drops it from both texts it compares; a piece is settled only once it decodes to
    whole characters. ``text`` is always the decode of every id pushed so far, less an unfinished character.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # ids[_prefix:_read] decode to the end of the settled text
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one id; returns the text it settles (empty while a character is unfinished)."""
        self.ids.append(int(token_id))
        return self._settle(final=False)

    def finish(self) -> str:
        """Whatever is still pending (an unfinished character at the end stays as the tokenizer decodes it)."""
        return self._settle(final=True)

    def _settle(self, *, final: bool) -> str:
        if self._read == len(self.ids):
            return ""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if not after.startswith(before) or (after.endswith(_UNFINISHED) and not final):
            if final:  # not a clean continuation: fall back to the whole answer once
                piece = self._decode(self.ids)[len(self.text) :]
                self.text += piece
                self._prefix = self._read = len(self.ids)
                return piece
            return ""
        piece = after[len(before) :]
        if not piece and not final:
            return ""  # e.g. a special token, skipped: keep the window where it is
        self.text += piece
        self._prefix, self._read = self._read, len(self.ids)
        return piece


class StopTextTracker:
    """Turns a growing list of token ids into text deltas, honouring stop sequences.

    ``push(token_id)`` returns the newly safe text and whether a stop sequence ended the answer; ``flush()``
    releases what was held back once the answer ends without one. ``text`` is the answer so far (trimmed at
    the stop once one appeared).
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop = tuple(stop)
        self._longest = max((len(s) for s in self.stop), default=0)
        self.emitted = 0  # characters of the answer already handed out
        self._searched = 0  # text before this index holds no stop sequence start that is complete
        self.stopped = False

    @property
    def token_ids(self) -> list[int]:
        return self.decoder.ids

    @property
    def text(self) -> str:
        return self.decoder.text

    def push(self, token_id: int) -> tuple[str, bool]:
        self.decoder.push(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """The held-back remainder once generation ends without a stop sequence."""
        self.decoder.finish()
        delta, _ = self._release(final=True)
        return delta

    def _release(self, *, final: bool) -> tuple[str, bool]:
        text = self.decoder.text
        cut = self._find_stop(text)
        if cut is not None:
            self.decoder.text = text = text[:cut]
            self.stopped = True
            return self._emit(len(text)), True
        safe = len(text)
        if not final:
            safe -= self._held(text)
        return self._emit(safe), False

    def _find_stop(self, text: str) -> int | None:
        """The earliest stop sequence in text not searched yet (and the tail that could start one)."""
        if not self.stop:
            return None
        start = max(0, self._searched - self._longest + 1)
        self._searched = len(text)
        found = [at for s in self.stop if (at := text.find(s, start)) != -1]
        return min(found) if found else None

    def _held(self, text: str) -> int:
        """The longest suffix that could be the beginning of a stop sequence (held back while streaming)."""
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return hold

    def _emit(self, upto: int) -> str:
        delta = self.decoder.text[self.emitted : upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return delta


@dataclass
class DecodeStep:
    """One generated token (``token_id`` None on a final flush) with its text delta; ``finish_reason`` on the last."""

    token_id: int | None
    text: str
    finish_reason: str | None = None


class TokenStream:
    """One answer's decode state on the host: each sampled id in, a step out, until the answer ends.

    ``push(token)`` takes the id the device sampled and returns the step; a step without ``finish_reason``
    carries a token the device feeds next. EOS is not part of the answer. The same state serves an answer
    that streams to its caller and a draft's lookahead.
    """

    def __init__(self, tokenizer, *, max_new_tokens: int, eos_ids: set[int], stop: Sequence[str] = ()) -> None:
        self.tracker = StopTextTracker(tokenizer, stop)
        self.max_new_tokens = max_new_tokens
        self.eos_ids = eos_ids
        self.sampled = 0

    def push(self, token: int) -> DecodeStep:
        self.sampled += 1
        if token in self.eos_ids:
            return DecodeStep(None, self.tracker.flush(), "eos")
        delta, stopped = self.tracker.push(token)
        if stopped:
            return DecodeStep(token, delta, "stop")
        if self.sampled >= self.max_new_tokens:
            return DecodeStep(token, delta + self.tracker.flush(), "length")
        return DecodeStep(token, delta)


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
