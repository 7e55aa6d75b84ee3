"""SpecPC: the draft model's attention picks which prompt tokens to keep (arXiv 2506.08373, section 4).

``compress(draft, context, query=None, *, budget=None, rate=None, config=None, ...)`` (the engine's
``DraftApproxEngine.compress`` with its draft) returns a :class:`CompressionResult`:

* ``context`` is one text or a sequence of documents; ``query`` the question (RAG mode) or ``None``
  (task-agnostic compression of a plain prompt). Exactly one of ``budget`` (draft tokens of the context to
  keep) or ``rate`` (kept fraction in (0, 1]).
* In RAG mode the observation window is the question: its last ``window_size`` tokens, plus the lookahead
  tokens, score the context, and the question itself never counts against the budget. Without a query the
  window is the prompt's own tail, kept first (as far as the budget goes) and counted.
* ``lookahead_text=`` scores with a given answer (the SpecKV-PC cascade passes the draft answer SpecKV
  already wrote) in the same forward, instead of letting the draft write ``lookahead_tokens``.
* One global ranking over all documents spends the budget where the attention is, on whole units: words
  of at most ``alignment.MAX_WORD_TOKENS`` (8) tokens, a longer run without spaces (CJK, hashes, base64,
  URLs, emoji) cut where letters meet other characters and then token by token, or, with
  ``whole_sentences``, whole sentences (ranked by their best token; one that does not fit is skipped, and
  only if none fits are words kept instead). A unit is taken only while it fits, so the kept tokens
  (``compressed_tokens``, whitespace tokens joining kept units included) never exceed the budget:
  ``compressed_tokens <= budget`` for every input, ``over_budget_tokens`` (0) and ``within_budget`` say so
  in the result and its ``stats()``. It can keep a little less (a unit that does not fit is skipped); a
  budget below every unit (1 token of emoji text) keeps nothing.
* The output is each document's original text sliced at the kept character spans, gaps marked with
  ``separator``; ``relevance`` is a document's share of the attention mass.
* Text that is not valid Unicode (lone surrogates) is refused by ``prepare`` with ``InvalidInputError``.
* A budget that covers the whole context passes every text through without running the draft; a prompt
  longer than ``max_prompt_tokens`` (default: the draft's context) is scored in chunks, each followed by
  the question, and the chunks' scores are ranked together.

Modules: ``selection`` (pure scoring and ranking), ``fitting`` (whole units within the budget), ``layout``
(prompt framing and chunking), ``scorer`` (draft forwards under capture), ``compress`` (the request, its
steps and the rendered result), ``results``.
"""

from .compress import (
    DEFAULT_SEPARATOR,
    CompressionRequest,
    ScoredRequest,
    compress,
    compress_steps,
    finish,
    prepare,
    score_steps,
    select_documents,
)
from .fitting import spend_budget
from .layout import RAG_INTRO
from .results import CompressedDocument, CompressionResult
from .scorer import EncodedDocuments, ScoredContext, score_context, score_prompt
from .selection import (
    combine_scores,
    neighbor_offsets,
    rank_positions,
    reduce_window_attention,
    resolve_budget,
    select_tokens,
)

__all__ = [
    "DEFAULT_SEPARATOR",
    "RAG_INTRO",
    "CompressedDocument",
    "CompressionRequest",
    "CompressionResult",
    "EncodedDocuments",
    "ScoredContext",
    "ScoredRequest",
    "combine_scores",
    "compress",
    "compress_steps",
    "finish",
    "neighbor_offsets",
    "prepare",
    "rank_positions",
    "reduce_window_attention",
    "resolve_budget",
    "score_context",
    "score_prompt",
    "score_steps",
    "select_documents",
    "select_tokens",
    "spend_budget",
]
