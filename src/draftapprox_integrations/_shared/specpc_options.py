"""Fields, validation and engine plumbing shared by the SpecPC adapters (LangChain compressor, LlamaIndex
node postprocessor). Framework-free: a pydantic mixin each adapter inherits; no algorithm here (that lives
in ``engine/specpc/``), and the budget rule is the engine's own (``engine.specpc.resolve_budget``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from ..engine.config import DEFAULT_MODEL, SpecPCConfig
from ..engine.errors import ConfigError, check_keywords
from ..engine.specpc import DEFAULT_SEPARATOR, resolve_budget
from .base import AdapterOptions, keyword_names

# The kept fraction when neither budget nor rate is given.
DEFAULT_RATE = 0.1

# Metadata the adapters add to every document / node they return. Each value goes under its namespaced key
# (``specpc_relevance_score``, ...) and, for code written against earlier versions, under its plain name
# (``relevance_score``, ...) too; a key the document already has is never overwritten: the user's value
# stays, and ours is then only under the namespaced key.
ORIGINAL_TOKENS = "original_tokens"
COMPRESSED_TOKENS = "compressed_tokens"
COMPRESSION_RATIO = "compression_ratio"
RELEVANCE_SCORE = "relevance_score"
NAMESPACE = "specpc_"
SKIPPED = NAMESPACE + "skipped"
PLAIN_KEYS = (ORIGINAL_TOKENS, COMPRESSED_TOKENS, COMPRESSION_RATIO, RELEVANCE_SCORE)
ADDED_KEYS = (*(NAMESPACE + k for k in PLAIN_KEYS), *PLAIN_KEYS, SKIPPED)

_CONFIG_FIELDS = tuple(SpecPCConfig.__dataclass_fields__)


def _as_specpc_config(owner: str, config: Any, loose: dict[str, Any]) -> SpecPCConfig:
    """``config`` (a SpecPCConfig, a dict of its fields or None) with the ``loose`` field values applied."""
    if config is None:
        config = SpecPCConfig()
    elif isinstance(config, Mapping):  # unknown keys and bad values: the engine's ConfigError, as for SpecKVConfig
        if not all(isinstance(key, str) for key in config):
            raise ConfigError(f"{owner}: config keys must be SpecPCConfig field names, got {sorted(map(repr, config))}")
        config = SpecPCConfig().replace(**config)
    elif not isinstance(config, SpecPCConfig):
        raise ConfigError(f"{owner}: config must be a SpecPCConfig or a dict of its fields, got {type(config).__name__}")
    return config.replace(**loose) if loose else config


class SpecPCOptions(AdapterOptions):
    """Draft model reference, budget (``budget`` or ``rate``), SpecPC config and output options.

    ``SpecPCConfig`` field names are accepted directly (``window_size=...``) and ``config`` may be a dict.
    Construction checks every keyword (unknown ones raise :class:`UnknownOptionError` listing the accepted
    ones) and the budget with the engine's own rule, on the values as given (``budget=True`` or ``"7"`` is
    refused, as by ``engine.compress``); a failure raises the package's error, not pydantic's ValidationError.
    """

    draft_model: str = Field(
        default=DEFAULT_MODEL, description="draft model reference (embedded alias, folder, .gguf or hub id)"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    dtype: str = Field(default="auto", description="auto, bfloat16, float16 or float32")
    budget: int | None = Field(
        default=None, strict=True, description="draft tokens kept over all documents (instead of rate)"
    )
    rate: float | None = Field(
        default=None,
        strict=True,
        description=f"kept fraction of the draft tokens, in (0, 1]; {DEFAULT_RATE} when neither is given",
    )
    config: SpecPCConfig = Field(default_factory=SpecPCConfig, description="a SpecPCConfig (or a dict of its fields)")
    separator: str = Field(default=DEFAULT_SEPARATOR, description="marks the text left out between kept spans")
    whole_sentences: bool = Field(default=False, strict=True, description="keep whole sentences, best first, while they fit the budget")
    keep_empty: bool = Field(default=False, strict=True, description="return documents that keep no text (else dropped)")
    reorder_by_relevance: bool = Field(
        default=False, strict=True, description="return the most attended documents first"
    )
    show_progress: bool = Field(
        default=False, strict=True, description="a tqdm bar on stderr while a long (chunked) input is scored"
    )

    @model_validator(mode="before")
    @classmethod
    def _check_input(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        check_keywords(cls.__name__, data, keyword_names(cls) | set(_CONFIG_FIELDS))
        data = dict(data)
        loose = {k: data.pop(k) for k in list(data) if k in _CONFIG_FIELDS}
        data["config"] = _as_specpc_config(cls.__name__, data.get("config"), loose)
        if data.get("budget") is None and data.get("rate") is None:
            data["rate"] = DEFAULT_RATE
        # The engine's rule on the values as given: exactly one, budget an int >= 1, rate in (0, 1].
        resolve_budget(1, data.get("budget"), data.get("rate"))
        return data

    # -- engine ----------------------------------------------------------------------------------

    def _shared_engine(self):
        """A draft-only engine, shared with every component built on the same draft."""
        from ..engine.shared_engines import get_engine

        return get_engine(self.draft_model, None, device=self.device, dtype=self.dtype)

    # -- compression -------------------------------------------------------------------------------

    def _compress_by_position(self, texts: list[str], positions: list[int], query: str) -> tuple[dict[int, Any], Any]:
        """Compress ``texts`` together for ``query``: ({position: compressed document}, the engine's
        CompressionResult); ({}, None) without texts."""
        if not texts:
            return {}, None
        result = self.get_engine().compress(
            texts,
            query,
            budget=self.budget,
            rate=self.rate,
            config=self.config,
            separator=self.separator,
            whole_sentences=self.whole_sentences,
            progress=self.show_progress,
        )
        return dict(zip(positions, result.documents)), result

    def _summary(self, documents_in: int) -> CompressionSummary:
        """A started summary of one call (its clock runs from here), naming the draft that scores it."""
        source = getattr(self.get_engine(), "draft_source", None)
        return CompressionSummary(documents_in=documents_in, draft_model=getattr(source, "name", str(self.draft_model)))

    def _ordered(self, scored: list[tuple[float, int, Any]]) -> list[Any]:
        """The items of ``(relevance, position, item)`` triples, by relevance when ``reorder_by_relevance``."""
        if self.reorder_by_relevance:
            scored = sorted(scored, key=lambda t: (-t[0], t[1]))
        return [item for _, _, item in scored]


@dataclass
class CompressionSummary:
    """One adapter call's token accounting, sent to the framework's callbacks (LangChain) or events
    (LlamaIndex). Token counts are the draft's; ``saved_tokens`` is what a server with the same tokenizer
    reads less (less the separators' own tokens). ``seconds`` is the call's wall time, waiting included."""

    documents_in: int
    documents_out: int = 0
    original_tokens: int = 0
    compressed_tokens: int = 0
    budget: int = 0
    chunks: int = 0
    passthrough: bool = False
    draft_model: str = ""
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def saved_tokens(self) -> int:
        return self.original_tokens - self.compressed_tokens

    def record(self, result: Any, documents_out: int) -> CompressionSummary:
        """Fill in the engine's result (None: no document had text) and stop the clock."""
        if result is not None:
            self.original_tokens, self.compressed_tokens = result.original_tokens, result.compressed_tokens
            self.budget, self.chunks, self.passthrough = result.budget, result.chunks, result.passthrough
        self.documents_out = documents_out
        self.seconds = time.perf_counter() - self.started
        return self

    def to_dict(self) -> dict[str, Any]:
        ratio = self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0
        return {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "original_tokens": self.original_tokens,
            "compressed_tokens": self.compressed_tokens,
            "saved_tokens": self.saved_tokens,
            "compression_ratio": round(ratio, 4),
            "budget": self.budget,
            "chunks": self.chunks,
            "passthrough": self.passthrough,
            "draft_model": self.draft_model,
            "seconds": round(self.seconds, 3),
        }


def compression_metadata(doc: Any) -> dict[str, Any]:
    """What an adapter records for one compressed document (token counts, kept fraction, relevance), by
    plain name; :func:`extended_metadata` decides the keys."""
    return {
        ORIGINAL_TOKENS: doc.original_tokens,
        COMPRESSED_TOKENS: doc.compressed_tokens,
        COMPRESSION_RATIO: round(doc.compression_ratio, 4),
        RELEVANCE_SCORE: doc.relevance,
    }


def extended_metadata(user: Mapping[str, Any], ours: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(a new dict: ``user`` with ``ours`` added, the keys added). ``user`` is neither changed nor overwritten:
    each of our values goes under its namespaced key and its plain name, wherever the key is free."""
    meta = dict(user)
    added = []
    for key, value in ours.items():
        for name in dict.fromkeys((key if key.startswith(NAMESPACE) else NAMESPACE + key, key)):
            if name not in meta:
                meta[name] = value
                added.append(name)
    return meta, added
