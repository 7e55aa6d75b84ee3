"""Offline long-context tasks, RULER-style scoring, the quality-at-budget runner and the cost bench.

    from draftapprox_integrations.evals import make_sample, score_prediction
    sample = make_sample("niah_multikey", 4096, tokenizer, seed=0)
    score_prediction(reply, sample.answers, sample.match)

The runner (``evals.runner``) and bench (``evals.bench``) back ``draftapprox eval`` and ``draftapprox bench``;
``evals.methods`` says how each method of the engine's table answers one sample, and ``evals.baselines`` holds
the prompt-compression baselines (random, perplexity). Plots and progress bars need the ``[evals]`` extra.
"""

from .scoring import score_prediction
from .tasks import TASKS, Sample, generate_samples, make_sample

__all__ = ["TASKS", "Sample", "generate_samples", "make_sample", "score_prediction"]
