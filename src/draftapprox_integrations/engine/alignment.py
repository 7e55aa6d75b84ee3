"""Draft tokens <-> character spans of the original text.

SpecPC scores draft tokens, but what it hands back is the *original text*, sliced: a list of character
spans per document. That keeps the output free of detokenisation artefacts and lets it feed any model,
whatever its tokenizer. This module holds the text side of that: tokenising with character offsets,
turning kept token indices into merged character spans, cutting a text into the units SpecPC keeps whole
(:func:`word_units`, :func:`sentence_units`), and rendering the kept spans with a gap marker.

Every function here is pure (no model): spans are half-open ``(start, end)`` character ranges.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

Span = tuple[int, int]

# Latin-style ends need whitespace after them ("3.5", "e.g.x" do not end a sentence); CJK ends (。！？) do
# not, since Chinese and Japanese put no space between sentences.
_SENTENCE_END = re.compile(r"[.!?…](?:[\"'”’)\]]*)(?=\s)|[。！？](?:[」』”’）\"']*)|\n\s*\n|\n")

# A whitespace-delimited word of more tokens than this is not kept whole (see word_units).
MAX_WORD_TOKENS = 8

# One unit SpecPC keeps or drops whole: (first token, end token, first char, end char), half-open both.
Unit = tuple[int, int, int, int]


def tokenize_with_offsets(tokenizer, text: str) -> tuple[list[int], list[Span]]:
    """Token ids of ``text`` (no special tokens added) and each token's character span in ``text``.

    Fast (Rust) tokenizers give the offsets directly (``return_offsets_mapping=True``). For slow
    tokenizers we rebuild them by decoding growing prefixes, which is slower but exact enough for
    span slicing. Offsets are clipped to the text and made non-decreasing.
    """
    if not text:
        return [], []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    else:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        offsets = _offsets_by_decoding(tokenizer, text, ids)
    return ids, _clean_offsets(offsets, len(text))


def _offsets_by_decoding(tokenizer, text: str, ids: Sequence[int]) -> list[Span]:
    out: list[Span] = []
    previous = 0
    for i in range(len(ids)):
        decoded = tokenizer.decode(ids[: i + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = min(len(decoded), len(text))
        out.append((previous, max(previous, end)))
        previous = max(previous, end)
    return out


def _clean_offsets(offsets: Sequence[Span], length: int) -> list[Span]:
    cleaned: list[Span] = []
    floor = 0
    for a, b in offsets:
        a = min(max(a, floor), length)
        b = min(max(b, a), length)
        cleaned.append((a, b))
        floor = a  # tokens may overlap (byte-level pieces of one character); never go backwards
    return cleaned


def merge_spans(spans: Iterable[Span], text: str | None = None) -> list[Span]:
    """Sort and merge overlapping or touching spans; with ``text``, also merge across whitespace-only gaps."""
    ordered = sorted((a, b) for a, b in spans if b > a)
    merged: list[list[int]] = []
    for a, b in ordered:
        if merged:
            last = merged[-1]
            gap_is_blank = text is not None and (a <= last[1] or not text[last[1] : a].strip())
            if a <= last[1] or gap_is_blank:
                last[1] = max(last[1], b)
                continue
        merged.append([a, b])
    return [(a, b) for a, b in merged]


def token_spans(offsets: Sequence[Span], kept: Iterable[int]) -> list[Span]:
    """Character spans covered by the kept token indices, merged."""
    return merge_spans(offsets[i] for i in kept)


def _is_word_char(ch: str) -> bool:
    return not ch.isspace()


def snap_to_words(text: str, spans: Iterable[Span]) -> list[Span]:
    """Grow each span to whole words (runs of non-space characters), then trim surrounding whitespace.

    Unbounded: a span inside a long run without spaces (CJK, a hash) grows to the whole run. SpecPC keeps
    :func:`word_units` instead, which bound how far a kept token pulls in its neighbours.
    """
    out: list[Span] = []
    n = len(text)
    for a, b in spans:
        while a > 0 and _is_word_char(text[a - 1]) and (a >= n or _is_word_char(text[a])):
            a -= 1
        while b < n and b > 0 and _is_word_char(text[b - 1]) and _is_word_char(text[b]):
            b += 1
        a, b = trim(text, a, b)
        if b > a:
            out.append((a, b))
    return merge_spans(out, text)


def sentence_bounds(text: str) -> list[Span]:
    """Sentence spans of ``text``: ends at . ! ? (and closing quotes) before whitespace, or at a line break."""
    bounds: list[Span] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if end > start:
            bounds.append((start, end))
        start = end
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds


def snap_to_sentences(text: str, spans: Iterable[Span]) -> list[Span]:
    """Grow each span to the whole sentences it touches (unbounded; SpecPC uses :func:`sentence_units`)."""
    sentences = sentence_bounds(text)
    out: list[Span] = []
    for a, b in spans:
        for s, e in sentences:
            if s < b and e > a:
                out.append((s, e))
    return snap_to_words(text, out)


def trim(text: str, a: int, b: int) -> Span:
    """``(a, b)`` without the whitespace at its ends (an empty span where it is all whitespace)."""
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _char_groups(offsets: Sequence[Span]) -> list[Unit]:
    """Consecutive tokens that share characters (the byte pieces of one character) as one group each."""
    groups: list[list[int]] = []
    for i, (a, b) in enumerate(offsets):
        if groups and (a < groups[-1][3] or b <= a):
            groups[-1][1] = i + 1
            groups[-1][3] = max(groups[-1][3], b)
        else:
            groups.append([i, i + 1, a, b])
    return [(s, e, a, b) for s, e, a, b in groups]


def _words(text: str, groups: Sequence[Unit]) -> list[list[Unit]]:
    """The groups of each whitespace-delimited word; whitespace-only groups belong to no word."""
    words: list[list[Unit]] = []
    previous_end = -1
    for g in groups:
        a, b = g[2], g[3]
        if not text[a:b].strip():
            previous_end = -1
            continue
        joined = a == previous_end and not text[a].isspace() and not text[a - 1].isspace()
        if joined:
            words[-1].append(g)
        else:
            words.append([g])
        previous_end = b
    return words


def _pieces(text: str, word: Sequence[Unit]) -> list[list[Unit]]:
    """A word cut wherever letters/digits meet other characters ("key_4829-AB" -> key, _, 4829, -, AB)."""
    pieces = [[word[0]]]
    for g in word[1:]:
        if text[pieces[-1][-1][3] - 1].isalnum() != text[g[2]].isalnum():
            pieces.append([g])
        else:
            pieces[-1].append(g)
    return pieces


def _unit(text: str, groups: Sequence[Unit]) -> Unit:
    a, b = trim(text, groups[0][2], max(g[3] for g in groups))
    return groups[0][0], groups[-1][1], a, b


def word_units(text: str, offsets: Sequence[Span], max_tokens: int = MAX_WORD_TOKENS) -> list[Unit]:
    """The units SpecPC keeps whole outside sentence mode, in text order.

    A whitespace-delimited word of at most ``max_tokens`` tokens is one unit. A longer one (a hash, a URL,
    a line of CJK or emoji) is cut where letters/digits meet other characters, and a piece still longer
    than ``max_tokens`` goes token by token (the byte pieces of one character stay together). So a unit is
    at most ``max_tokens`` tokens, or one character's tokens. Whitespace-only tokens are in no unit.
    """
    units: list[Unit] = []
    for word in _words(text, _char_groups(offsets)):
        if word[-1][1] - word[0][0] <= max_tokens:
            units.append(_unit(text, word))
            continue
        for piece in _pieces(text, word):
            if piece[-1][1] - piece[0][0] <= max_tokens:
                units.append(_unit(text, piece))
            else:
                units.extend(_unit(text, [g]) for g in piece)
    return units


def sentence_units(text: str, offsets: Sequence[Span]) -> list[Unit]:
    """Each sentence (:func:`sentence_bounds`, trimmed) with the tokens that overlap it, in text order.

    A token across a sentence end (rare) is in both sentences' token ranges.
    """
    units: list[Unit] = []
    i, n = 0, len(offsets)
    for a, b in sentence_bounds(text):
        a, b = trim(text, a, b)
        if b <= a:
            continue
        while i < n and offsets[i][1] <= a:
            i += 1
        j = i
        while j < n and offsets[j][0] < b:
            j += 1
        if j > i:
            units.append((i, j, a, b))
    return units


def render_spans(text: str, spans: Sequence[Span], separator: str) -> str:
    """The kept spans of ``text`` joined by ``separator`` wherever text was elided between them.

    A separator also marks text elided before the first or after the last span, so a reader sees that
    the passage was cut; it is stripped of its outer whitespace there.
    """
    if not spans:
        return ""
    pieces: list[str] = []
    marker = separator.strip() or separator
    if text[: spans[0][0]].strip():
        pieces.append(marker + " ")
    for i, (a, b) in enumerate(spans):
        if i:
            pieces.append(separator)
        pieces.append(text[a:b])
    if text[spans[-1][1] :].strip():
        pieces.append(" " + marker)
    return "".join(pieces)


def count_tokens_in_spans(offsets: Sequence[Span], spans: Sequence[Span]) -> int:
    """How many tokens lie (with any non-empty part) inside the spans."""
    count = 0
    j = 0
    for a, b in offsets:
        if b <= a:
            continue
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        if j < len(spans) and spans[j][0] < b:
            count += 1
    return count
