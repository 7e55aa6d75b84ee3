"""What SpecPC returns: the compressed documents and the call's totals (token counts are draft tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..alignment import Span


@dataclass
class CompressedDocument:
    """One input text after compression: the kept text and where it came from."""

    index: int
    text: str
    spans: list[Span]
    original_tokens: int
    compressed_tokens: int
    relevance: float
    selected_tokens: int = 0

    @property
    def compression_ratio(self) -> float:
        """Kept fraction of the draft tokens (compressed / original); 1.0 for an empty text."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0


@dataclass
class CompressionResult:
    """What ``compress`` returns. Token counts are draft tokens.

    ``compressed_tokens`` (the tokens inside the kept spans) is at most ``budget``, for any input: SpecPC
    keeps whole units (words of at most ``alignment.MAX_WORD_TOKENS`` tokens, or sentences) only while they
    fit. ``over_budget_tokens`` is how far it still went over (0 unless that rule is ever broken; a budget
    that covers the whole context passes it through, at or under the budget), ``within_budget`` whether it
    held; both are in :meth:`stats`. ``selected_tokens`` counts the tokens of the units taken (the
    kept tokens less the whitespace tokens that join neighbouring units).
    """

    text: str
    documents: list[CompressedDocument]
    original_tokens: int
    compressed_tokens: int
    seconds: float
    lookahead_text: str
    budget: int = 0
    selected_tokens: int = 0
    passthrough: bool = False
    chunks: int = 0
    query: str | None = None
    scores: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def compression_ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def over_budget_tokens(self) -> int:
        return max(0, self.compressed_tokens - self.budget)

    @property
    def within_budget(self) -> bool:
        return self.over_budget_tokens == 0

    def stats(self) -> dict[str, Any]:
        return {
            "original_tokens": self.original_tokens,
            "compressed_tokens": self.compressed_tokens,
            "selected_tokens": self.selected_tokens,
            "budget": self.budget,
            "over_budget_tokens": self.over_budget_tokens,
            "within_budget": self.within_budget,
            "compression_ratio": round(self.compression_ratio, 4),
            "seconds": round(self.seconds, 3),
            "chunks": self.chunks,
            "passthrough": self.passthrough,
            "lookahead_text": self.lookahead_text,
        }

