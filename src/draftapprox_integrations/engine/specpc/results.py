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
    """What ``compress`` returns. Token counts are draft tokens."""

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

    def stats(self) -> dict[str, Any]:
        return {
            "original_tokens": self.original_tokens,
            "compressed_tokens": self.compressed_tokens,
            "selected_tokens": self.selected_tokens,
            "budget": self.budget,
            "compression_ratio": round(self.compression_ratio, 4),
            "seconds": round(self.seconds, 3),
            "chunks": self.chunks,
            "passthrough": self.passthrough,
            "lookahead_text": self.lookahead_text,
        }

