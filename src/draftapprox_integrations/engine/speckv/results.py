"""What a SpecKV generation returns: the text, the finish reason and what it cost and kept."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class GenerationStats:
    """What one generation cost and kept.

    KV entries count per full-attention layer and KV head (the budget's unit); KV bytes count every layer
    (sliding layers hold at most their window), keys and values, in the cache's dtype, for the prompt.
    ``prefill_seconds`` is the time to first token: it includes ``draft_seconds`` (and SpecPC for the cascade).
    """

    method: str
    prompt_tokens: int
    completion_tokens: int = 0
    kv_entries_full: int = 0
    kv_entries_kept: int = 0
    kv_bytes_full: int = 0
    kv_bytes_kept: int = 0
    kv_bytes_peak: int = 0  # the largest KV cache alive during the target's prefill
    draft_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    fell_back_to_full: bool = False
    note: str = ""
    lookahead_tokens: int = 0  # target tokens of the draft's answer that scored the keys
    lookahead_text: str = ""
    compressed_prompt_tokens: int | None = None  # speckv-pc: target tokens after SpecPC
    budget: int | None = None
    constraint: str | None = None  # json_schema | regex | tool_calls, for a constrained answer
    # A constrained answer: whether it is whole (False only when max_new_tokens cut it before its grammar closed).
    constraint_complete: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def kv_fraction_kept(self) -> float:
        return self.kv_bytes_kept / self.kv_bytes_full if self.kv_bytes_full else 1.0


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "eos"
    stats: GenerationStats

    @classmethod
    def from_chunks(cls, chunks: Iterable[StreamChunk]) -> GenerationResult:
        """The whole answer of a stream of chunks (the last one carries the stats)."""
        text, ids, finish, stats = "", [], "length", None
        for chunk in chunks:
            text += chunk.text
            if chunk.token_id is not None:
                ids.append(chunk.token_id)
            if chunk.stats is not None:
                stats, finish = chunk.stats, chunk.finish_reason or finish
        if stats is None:
            raise RuntimeError("the generation ended without its final chunk")
        return cls(text=text, token_ids=ids, finish_reason=finish, stats=stats)


@dataclass
class StreamChunk:
    """A text delta; ``stats`` (and ``finish_reason``) are set on the final chunk only."""

    text: str
    token_id: int | None = None
    stats: GenerationStats | None = None
    finish_reason: str | None = None

    def is_final(self) -> bool:
        return self.finish_reason is not None
