"""SpecKV: the draft's approximate answer decides which prompt KV entries the target keeps (arXiv 2506.08373).

Modules, in call order: ``plan`` (check a request, tokenise it for the target), ``generate`` (lookahead,
prefill, then the answer's decode state, which the engine's loop steps; written as steps, ``engine.steps``),
``lookahead`` (the draft's answer, the SpecKV-PC cut), ``prefill`` (capture -> select -> cut; ``self_draft``
when one model is its own draft), ``selection`` (pure key scoring and top-k), ``cache`` (recording cache and
KV surgery), ``results``.
"""

from ..config import GENERATION_METHODS as METHODS
from ..prompts import encode_prompt, normalize_messages, transcript
from .cache import CompressedPrefill, compress_cache
from .generate import AnswerRow, generation_steps
from .lookahead import draft_answer
from .plan import GenerationPlan, check_generation, check_options, check_prompt_list, per_prompt, resolve_rate, tokenize_plan
from .prefill import prefill_and_compress
from .results import GenerationResult, GenerationStats, StreamChunk
from .selection import observation_key_scores, select_kept_indices, streaming_indices
from .self_draft import self_draft_steps

__all__ = [
    "METHODS",
    "AnswerRow",
    "CompressedPrefill",
    "GenerationPlan",
    "GenerationResult",
    "GenerationStats",
    "StreamChunk",
    "check_generation",
    "check_options",
    "check_prompt_list",
    "per_prompt",
    "compress_cache",
    "draft_answer",
    "generation_steps",
    "encode_prompt",
    "normalize_messages",
    "observation_key_scores",
    "prefill_and_compress",
    "resolve_rate",
    "select_kept_indices",
    "self_draft_steps",
    "streaming_indices",
    "tokenize_plan",
    "transcript",
]
