"""How the plugin patches vLLM's classes: a method is replaced by a wrapper that hands the original to the
patch, so the patch decides when (and whether) vLLM's own code runs; ``__wrapped__`` keeps the original
reachable for tests and for a second look."""

from __future__ import annotations


def wrap_method(cls, name: str, patch) -> None:
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        return patch(original, self, *args, **kwargs)

    wrapper.__wrapped__ = original
    setattr(cls, name, wrapper)
