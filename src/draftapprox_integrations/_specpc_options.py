"""Fields, validation and engine plumbing shared by the SpecPC adapters (LangChain compressor, LlamaIndex
node postprocessor). Framework-free: a pydantic mixin each adapter inherits; no algorithm here (that lives
in ``engine/specpc.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .engine.config import SpecPCConfig
from .engine.errors import ConfigError
from .engine.specpc import DEFAULT_SEPARATOR

# Metadata keys the adapters add to every document / node they return.
ORIGINAL_TOKENS = "original_tokens"
COMPRESSED_TOKENS = "compressed_tokens"
COMPRESSION_RATIO = "compression_ratio"
RELEVANCE_SCORE = "relevance_score"
SKIPPED = "specpc_skipped"
ADDED_KEYS = (ORIGINAL_TOKENS, COMPRESSED_TOKENS, COMPRESSION_RATIO, RELEVANCE_SCORE, SKIPPED)


class SpecPCOptions(BaseModel):
    """Draft model reference, budget (``budget`` or ``rate``), SpecPC config and output options.

    ``SpecPCConfig`` field names are accepted directly (``window_size=...``) and ``config`` may be a dict.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    draft_model: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: str = "auto"
    budget: int | None = None
    rate: float | None = None
    config: SpecPCConfig = Field(default_factory=SpecPCConfig)
    separator: str = DEFAULT_SEPARATOR
    whole_sentences: bool = False
    keep_empty: bool = False
    reorder_by_relevance: bool = False
    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _config_from_fields(cls, data: Any) -> Any:
        # Accept SpecPCConfig field names directly (window_size=..., kernel_size=...) and config as a dict.
        if not isinstance(data, dict):
            return data
        names = set(SpecPCConfig.__dataclass_fields__)
        loose = {k: data.pop(k) for k in list(data) if k in names}
        config = data.get("config")
        if isinstance(config, dict):
            config = SpecPCConfig(**config)
        if loose:
            config = (config or SpecPCConfig()).replace(**loose)
        if config is not None:
            data["config"] = config
        return data

    @model_validator(mode="after")
    def _check_budget(self):
        if self.budget is not None and self.rate is not None:
            raise ConfigError("give exactly one of budget= (tokens to keep) or rate= (kept fraction in (0, 1])")
        if self.budget is None and self.rate is None:
            self.rate = 0.1
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and 0.0 < self.rate <= 1.0):
            raise ConfigError(f"rate must be in (0, 1] (the fraction of tokens kept), got {self.rate}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget must be >= 1 token, got {self.budget}")
        return self

    # -- engine ----------------------------------------------------------------------------------

    def get_engine(self):
        """The engine (shared with every component built on the same draft), created on first use."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from .engine.engine import get_engine

            self._engine = get_engine(self.draft_model, None, device=self.device, dtype=self.dtype)
        return self._engine

    # -- compression -------------------------------------------------------------------------------

    def _compress_by_position(self, texts: list[str], positions: list[int], query: str) -> dict[int, Any]:
        """Compress ``texts`` together for ``query``: {position: compressed document}; {} without texts."""
        if not texts:
            return {}
        result = self.get_engine().compress(
            texts,
            query,
            budget=self.budget,
            rate=self.rate if self.budget is None else None,
            config=self.config,
            separator=self.separator,
            whole_sentences=self.whole_sentences,
        )
        return dict(zip(positions, result.documents))

    def _ordered(self, scored: list[tuple[float, int, Any]]) -> list[Any]:
        """The items of ``(relevance, position, item)`` triples, by relevance when ``reorder_by_relevance``."""
        if self.reorder_by_relevance:
            scored = sorted(scored, key=lambda t: (-t[0], t[1]))
        return [item for _, _, item in scored]


def compression_metadata(doc: Any) -> dict[str, Any]:
    """The metadata an adapter adds for one compressed document (token counts, kept fraction, relevance)."""
    return {
        ORIGINAL_TOKENS: doc.original_tokens,
        COMPRESSED_TOKENS: doc.compressed_tokens,
        COMPRESSION_RATIO: round(doc.compression_ratio, 4),
        RELEVANCE_SCORE: doc.relevance,
    }
