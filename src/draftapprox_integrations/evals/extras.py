"""The optional packages behind ``draftapprox eval`` and ``draftapprox bench``: the ``[evals]`` extra.

Nothing else in the package needs them: they are imported where they are used, and the eval and the bench
check for them before any model is loaded, so a missing one costs a one-line ``MissingExtraError`` naming
``pip install "draftapprox-integrations[evals]"``, not a failed run.
"""

from __future__ import annotations

from ..engine.errors import MissingExtraError

EXTRA = "evals"
EVAL_MODULES = ("tqdm", "matplotlib")  # progress bar; the accuracy plot
RENDER_MODULES = ("matplotlib",)  # --render-only: the table and the plot
BENCH_MODULES = ("tqdm", "matplotlib")  # progress bar; the cost plots (psutil is a core dependency)


def require(feature: str, modules: tuple[str, ...]) -> None:
    """Raise ``MissingExtraError`` (an ImportError) for the first of ``modules`` that is not installed."""
    MissingExtraError.require(feature, EXTRA, modules)
