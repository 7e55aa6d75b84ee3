"""RULER-style scoring: expected strings found in the reply, case-insensitive, as substrings.

``match="all"``: the fraction of the expected strings that occur in the reply (RULER's string_match_all,
partial credit: 3 of 4 values found scores 0.75). ``match="any"``: 1.0 when at least one occurs
(string_match_part). Scores are in [0, 1]; a task's accuracy is the mean over its samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..engine.errors import ConfigError

MATCH_MODES = ("all", "any")


def score_prediction(prediction: str, answers: Sequence[str], match: str = "all") -> float:
    if match not in MATCH_MODES:
        raise ConfigError(f"match must be one of {', '.join(MATCH_MODES)}; got {match!r}")
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        raise ConfigError("a sample needs at least one expected answer")
    text = (prediction or "").lower()
    hits = [a.lower() in text for a in answers]
    if match == "all":
        return sum(hits) / len(hits)
    return 1.0 if any(hits) else 0.0


def mean_score(scores: Iterable[float]) -> float:
    values = list(scores)
    return sum(values) / len(values) if values else float("nan")
