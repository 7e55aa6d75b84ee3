"""Spending a token budget on whole units of the documents (words or sentences), never past it.

SpecPC ranks the context tokens (``selection.rank_positions``); what it keeps is whole units of the text:
words of at most ``alignment.MAX_WORD_TOKENS`` tokens (a longer run without spaces, such as CJK, a hash or
a URL, is cut into pieces and then tokens: ``alignment.word_units``) or, in sentence mode, whole sentences
(``alignment.sentence_units``). Walking the ranking, each token brings in its unit if the unit's new
tokens, plus the whitespace tokens that join it to kept text on either side, fit what is left of the
budget; a unit that does not fit is skipped and the walk goes on, so smaller units still fill the budget.
The kept text is then counted the way the result reports it (``count_tokens_in_spans``), and the last
units taken are given back should that count ever exceed the budget. So kept tokens <= budget, always.

In sentence mode a sentence longer than what is left is skipped whole; only if no sentence fits at all is
the budget spent on word units instead (so a budget below every sentence still returns text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..alignment import Span, count_tokens_in_spans, merge_spans, sentence_units, word_units


@dataclass
class UnitPlan:
    """The documents' units over one flat token index (the documents' tokens one after another)."""

    texts: list[str]
    offsets: list[list[Span]]
    units: list[tuple[int, int, int, int, int]]  # (document, first flat token, end flat token, char start, char end)
    unit_of: list[int]  # flat token -> the unit it brings in (-1: whitespace, in no unit)
    counted: list[bool]  # the token has characters (count_tokens_in_spans counts only those)
    blank: list[bool]  # the token is whitespace only (or empty)
    bounds: list[tuple[int, int]]  # flat token -> its document's (first, end) flat tokens


def build_plan(texts: Sequence[str], offsets: Sequence[Sequence[Span]], whole_sentences: bool) -> UnitPlan:
    """Cut every document into units: sentences with ``whole_sentences``, else words (see the module)."""
    plan = UnitPlan(list(texts), [list(o) for o in offsets], [], [], [], [], [])
    start = 0
    for doc, (text, offs) in enumerate(zip(texts, offsets)):
        n = len(offs)
        plan.unit_of.extend([-1] * n)
        plan.counted.extend(b > a for a, b in offs)
        plan.blank.extend(not text[a:b].strip() for a, b in offs)
        plan.bounds.extend([(start, start + n)] * n)
        units = sentence_units(text, offs) if whole_sentences else word_units(text, offs)
        for s, e, a, b in units:
            for t in range(start + s, start + e):
                if plan.unit_of[t] < 0:
                    plan.unit_of[t] = len(plan.units)
            plan.units.append((doc, start + s, start + e, a, b))
        start += n
    return plan


def _gap(plan: UnitPlan, kept: bytearray, t: int, step: int) -> list[int]:
    """The whitespace tokens from ``t`` on (in direction ``step``) up to kept text: what a merge would
    join in; [] when non-whitespace comes first or the document ends."""
    lo, hi = plan.bounds[t - step]  # t - step is the unit's edge token
    gap: list[int] = []
    while lo <= t < hi and not kept[t]:
        if not plan.blank[t]:
            return []
        gap.append(t)
        t += step
    return gap if lo <= t < hi else []


def fit_units(plan: UnitPlan, order: Sequence[int], budget: int) -> list[int]:
    """The units taken, in the order taken, walking ``order`` (flat tokens) within ``budget`` tokens."""
    kept = bytearray(len(plan.unit_of))
    seen = bytearray(len(plan.units))
    taken: list[int] = []
    used = 0
    for t in order:
        if used >= budget:
            break
        u = plan.unit_of[t]
        if u < 0 or seen[u]:
            continue
        seen[u] = 1
        _, s, e, _, _ = plan.units[u]
        new = [i for i in range(s, e) if not kept[i]]
        new += _gap(plan, kept, s - 1, -1) + _gap(plan, kept, e, 1)
        cost = sum(plan.counted[i] for i in new)
        if used + cost > budget:
            continue  # too big for what is left; smaller units further down may still fit
        for i in new:
            kept[i] = 1
        used += cost
        taken.append(u)
    return taken


def render_plan(plan: UnitPlan, taken: Sequence[int]) -> tuple[list[list[Span]], list[int], list[int]]:
    """Per document: the kept character spans (merged), the tokens of the taken units, and the tokens
    inside the spans (what the result reports as compressed)."""
    spans: list[list[Span]] = [[] for _ in plan.texts]
    in_units = bytearray(len(plan.unit_of))
    for u in taken:
        doc, s, e, a, b = plan.units[u]
        spans[doc].append((a, b))
        in_units[s:e] = b"\x01" * (e - s)
    spans = [merge_spans(sp, text) for sp, text in zip(spans, plan.texts)]
    compressed = [count_tokens_in_spans(offs, sp) for offs, sp in zip(plan.offsets, spans)]
    selected: list[int] = []
    start = 0
    for offs in plan.offsets:
        # A whitespace-only token inside a unit's token range lies outside its trimmed span: not selected text.
        selected.append(
            sum(1 for i in range(start, start + len(offs)) if in_units[i] and plan.counted[i] and not plan.blank[i])
        )
        start += len(offs)
    return spans, selected, compressed


def spend_budget(
    texts: Sequence[str],
    offsets: Sequence[Sequence[Span]],
    order: Sequence[int],
    budget: int,
    whole_sentences: bool = False,
) -> tuple[list[list[Span]], list[int], list[int]]:
    """Kept spans, selected and compressed tokens per document; the compressed tokens sum to <= budget."""
    plan = build_plan(texts, offsets, whole_sentences)
    taken = fit_units(plan, order, budget)
    if whole_sentences and not taken:
        plan = build_plan(texts, offsets, False)  # no sentence fits whole: spend the budget on words
        taken = fit_units(plan, order, budget)
    spans, selected, compressed = render_plan(plan, taken)
    while taken and sum(compressed) > budget:  # a safety net: the walk's own count already holds it
        taken.pop()
        spans, selected, compressed = render_plan(plan, taken)
    return spans, selected, compressed
