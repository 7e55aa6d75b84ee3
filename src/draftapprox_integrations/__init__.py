"""draftapprox-integrations: draft-based approximate inference (SpecPC, SpecKV) for RAG pipelines.

The core lives in :mod:`draftapprox_integrations.engine` and knows no framework; the LangChain and
LlamaIndex adapters live in :mod:`draftapprox_integrations.langchain` and
:mod:`draftapprox_integrations.llama_index` and are imported only when used.
"""

from .engine import (
    ConfigError,
    ConstraintError,
    ContextLengthError,
    DraftApproxEngine,
    DraftApproxError,
    EngineUsageError,
    IncompatibleModelsError,
    MissingEmbeddedModelError,
    MissingExtraError,
    RequestCancelled,
    UnknownOptionError,
    ModelReferenceError,
    SpecKVConfig,
    SpecPCConfig,
    JsonSchema,
    Regex,
    ToolCalls,
    clear_engines,
    get_engine,
)

__version__ = "0.1.0"

__all__ = [
    "DraftApproxEngine",
    "SpecKVConfig",
    "SpecPCConfig",
    "JsonSchema",
    "Regex",
    "ToolCalls",
    "get_engine",
    "clear_engines",
    "ConfigError",
    "ConstraintError",
    "ContextLengthError",
    "DraftApproxError",
    "EngineUsageError",
    "IncompatibleModelsError",
    "MissingEmbeddedModelError",
    "MissingExtraError",
    "RequestCancelled",
    "UnknownOptionError",
    "ModelReferenceError",
    "__version__",
]
