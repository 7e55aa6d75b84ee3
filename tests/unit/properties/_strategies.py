"""Hypothesis strategies shared by the property tests: text of every kind, and option values good and bad.

Text sizes are bounded so that every example runs on the tiny random models in milliseconds; the "huge"
texts are a generated piece repeated up to a few thousand characters.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck
from hypothesis import strategies as st

# Every property test: deterministic (a fixed seed per test, no example database), no per-example deadline
# (the first draft forward is slower), and no complaint about the deliberately large texts.
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

def examples(n: int) -> int:
    """``n`` examples, times DRAFTAPPROX_PROPERTY_SCALE when set (e.g. 20 for a long bug hunt; default 1)."""
    return max(1, round(n * float(os.environ.get("DRAFTAPPROX_PROPERTY_SCALE", "1"))))


# -- text ------------------------------------------------------------------------------------------------

CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
KANA = st.characters(min_codepoint=0x3040, max_codepoint=0x30FF)
HANGUL = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
EMOJI = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)
CONTROL = st.characters(categories=["Cc", "Cf"])  # NUL, escapes, bidi marks, zero-width joiners...
COMBINING = st.characters(categories=["Mn", "Me"])
SPACES = st.sampled_from([" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x85"])
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
SENTENCE_ENDS = st.sampled_from([". ", "! ", "? ", "。", "！", "…", "\n\n", '." ', "\r\n"])
PUNCTUATION = st.sampled_from(".!?。！？…\"'”’)」")
WORDS = st.sampled_from(
    ["river", "stone", "the", "code", "4829", "Zugang", "Привет", "مرحبا", "नमस्ते", "ŝpruc", "x_y-z", "https://a.b/c?d=1"]
)

# One character of any kind the package may meet (no lone surrogates: those are VALID_OR_NOT's business).
ANY_CHAR = st.one_of(st.characters(codec="utf-8"), CJK, KANA, HANGUL, EMOJI, CONTROL, COMBINING, SPACES, PUNCTUATION)


def _repeat(piece: str, size: int) -> str:
    return (piece * (size // max(1, len(piece)) + 1))[:size] if piece else ""


@st.composite
def _worded(draw) -> str:
    """Words and sentence ends of mixed scripts: text with structure to select from."""
    parts = draw(st.lists(st.one_of(WORDS, SENTENCE_ENDS, st.text(ANY_CHAR, min_size=1, max_size=6)), max_size=40))
    return " ".join(parts)


# Valid Unicode text: empty, whitespace only, any characters, one script, spaceless runs, prose, huge.
VALID_TEXT = st.one_of(
    st.just(""),
    st.text(SPACES, min_size=1, max_size=8),
    st.text(ANY_CHAR, max_size=80),
    st.text(st.one_of(CJK, KANA, st.sampled_from("。、！？")), min_size=1, max_size=120),  # CJK, no spaces
    st.text(st.one_of(EMOJI, st.just("\u200d"), st.just("\ufe0f")), min_size=1, max_size=60),
    st.text(st.characters(categories=["Ll", "Lu", "Nd"]), min_size=40, max_size=200),  # one spaceless word
    st.text(CONTROL, min_size=1, max_size=30),
    _worded(),
    st.builds(_repeat, st.text(ANY_CHAR, min_size=1, max_size=30), st.integers(1500, 4000)),  # huge
    st.builds(_repeat, _worded(), st.integers(1500, 4000)),  # huge prose
)


@st.composite
def _with_surrogate(draw) -> str:
    text = draw(st.text(ANY_CHAR, max_size=40))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(SURROGATE) + text[at:]


# Text that is not valid Unicode: a lone surrogate somewhere (the package must refuse it, typed).
BROKEN_TEXT = _with_surrogate()
# Mostly valid text; now and then one with a lone surrogate.
TEXT = st.one_of(VALID_TEXT, VALID_TEXT, VALID_TEXT, BROKEN_TEXT)



def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# -- option values -----------------------------------------------------------------------------------------

NOT_A_NUMBER = st.sampled_from([True, False, "7", b"7", None, [1], 1j])
BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, -0.5, -1e300, 1e300])


def ints_and_junk(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly ``good``; sometimes zero, negative, huge, a bool, a float or a string."""
    return st.one_of(good, good, good, st.integers(-(2**70), 0), st.just(2**70), NOT_A_NUMBER, st.floats(0.5, 100))


def floats_and_junk(good: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(good, good, good, BAD_FLOATS, NOT_A_NUMBER, st.floats(allow_nan=True, allow_infinity=True))

