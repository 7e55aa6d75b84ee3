"""Fields, validation and engine plumbing shared by the SpecPC adapters (LangChain compressor, LlamaIndex
node postprocessor). Framework-free: a pydantic mixin each adapter inherits; no algorithm here (that lives
in ``engine/specpc/``), and the budget rule is the engine's own (``engine.specpc.resolve_budget``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ..engine.config import DEFAULT_MODEL, SpecPCConfig
from ..engine.specpc import DEFAULT_SEPARATOR, resolve_budget

# The kept fraction when neither budget nor rate is given.
DEFAULT_RATE = 0.1

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

    draft_model: str = Field(
        default=DEFAULT_MODEL, description="draft model reference (embedded alias, folder, .gguf or hub id)"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    dtype: str = Field(default="auto", description="auto, bfloat16, float16 or float32")
    budget: int | None = Field(default=None, description="draft tokens kept over all documents (instead of rate)")
    rate: float | None = Field(
        default=None, description=f"kept fraction of the draft tokens, in (0, 1]; {DEFAULT_RATE} when neither is given"
    )
    config: SpecPCConfig = Field(default_factory=SpecPCConfig, description="a SpecPCConfig (or a dict of its fields)")
    separator: str = Field(default=DEFAULT_SEPARATOR, description="marks the text left out between kept spans")
    whole_sentences: bool = Field(default=False, description="grow kept spans to whole sentences")
    keep_empty: bool = Field(default=False, description="return documents that keep no text (else dropped)")
    reorder_by_relevance: bool = Field(default=False, description="return the most attended documents first")
    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _config_from_fields(cls, data: Any) -> Any:
        # Accept SpecPCConfig field names directly (window_size=..., kernel_size=...) and config as a dict.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        names = set(SpecPCConfig.__dataclass_fields__)
        loose = {k: data.pop(k) for k in list(data) if k in names}
        config = data.get("config")
        if isinstance(config, dict):
            config = SpecPCConfig().replace(**config)
        if loose:
            config = (config or SpecPCConfig()).replace(**loose)
        if config is not None:
            data["config"] = config
        return data

    @model_validator(mode="after")
    def _check_budget(self):
        if self.budget is None and self.rate is None:
            self.rate = DEFAULT_RATE
        resolve_budget(1, self.budget, self.rate)  # the engine's rule: exactly one, budget >= 1, rate in (0, 1]
        return self

    # -- engine ----------------------------------------------------------------------------------

    def get_engine(self):
        """The engine (shared with every component built on the same draft), created on first use."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from ..engine.engine import get_engine

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
            rate=self.rate,
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
