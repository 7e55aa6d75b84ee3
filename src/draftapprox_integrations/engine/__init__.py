"""Framework-free core: model loading, attention capture, scoring and the two methods."""

from .config import DEFAULT_MODEL, GENERATION_METHODS, METHODS, PROMPT_METHODS, Method, SpecKVConfig, SpecPCConfig
from .constraints import ConstraintError, JsonSchema, Regex, ToolCalls
from .engine import DraftApproxEngine
from .shared_engines import clear_engines, get_engine
from .errors import (
    ConfigError,
    ContextLengthError,
    DraftApproxError,
    EngineUsageError,
    IncompatibleModelsError,
    InvalidInputError,
    MissingEmbeddedModelError,
    MissingExtraError,
    RequestCancelled,
    UnknownOptionError,
    ModelReferenceError,
)
from .loading import EMBEDDED_MODELS, cache_dir, resolve_reference

__all__ = [
    "DraftApproxEngine",
    "SpecKVConfig",
    "SpecPCConfig",
    "DEFAULT_MODEL",
    "GENERATION_METHODS",
    "METHODS",
    "Method",
    "PROMPT_METHODS",
    "get_engine",
    "clear_engines",
    "EMBEDDED_MODELS",
    "cache_dir",
    "resolve_reference",
    "JsonSchema",
    "Regex",
    "ToolCalls",
    "ConstraintError",
    "ConfigError",
    "ContextLengthError",
    "DraftApproxError",
    "EngineUsageError",
    "IncompatibleModelsError",
    "InvalidInputError",
    "MissingEmbeddedModelError",
    "MissingExtraError",
    "RequestCancelled",
    "UnknownOptionError",
    "ModelReferenceError",
]
