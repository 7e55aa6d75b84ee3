"""One SpecKV generation, top to bottom: lookahead (and the SpecKV-PC cut), prefill, decode.

``generation_steps(plan, target, draft)`` takes loaded models and a tokenised plan; it is written as steps
(``engine.steps``: one forward between two yields, the draft's lookahead handed out as a decode request)
and returns an :class:`AnswerRow`: the prefilled, compressed cache and the state of the answer's decode, which
the engine's loop (``engine.serving``) steps together with other rows (``engine.batching``). The caller (the
engine) picks the models and holds their lock while a step runs. Methods:

* ``full``: no compression (the reference).
* ``snapkv``: the last ``window_size`` prompt queries score the prompt keys; per layer and KV head the top
  ``budget - window_size`` keys are kept plus the window.
* ``speckv``: SnapKV whose observation queries also include the draft's lookahead (its greedy guess of the
  answer). The target prefills prompt + lookahead in one forward; the lookahead's own KV is dropped.
* ``streamingllm``: ``sink_tokens`` first entries + the most recent ones (no scoring).
* ``speckv-pc``: the draft's answer first drives SpecPC to cut the prompt to ``prompt_budget`` draft
  tokens, then SpecKV compresses the target's KV with the same lookahead (a ``rate`` is a fraction of the
  cut prompt, so the two cuts compound: prompt_budget / prompt, times rate).

After compression new tokens keep their true positions (prompt length + t): the decode loop passes
``position_ids`` explicitly. On hybrid models (Gemma-3) only full-attention layers are compressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..batching import Joining, first_token
from ..config import METHODS
from ..decoding import DecodeStep, TokenStream
from ..grammar import RowGrammar
from ..prompts import encode_prompt, eos_token_ids
from ..sampling import SamplingRule
from ..steps import Steps
from ..timing import synced_clock
from .cache import CompressedPrefill, full_bytes_uncut
from .lookahead import draft_answer, lookahead_for_target, specpc_cut
from .plan import GenerationPlan, fit_context, logits_size, resolve_rate
from .prefill import prefill_and_compress
from .self_draft import self_draft_steps
from .results import GenerationStats, StreamChunk


@dataclass
class _Run:
    """The state one generation accumulates on its way down."""

    plan: GenerationPlan
    target: object
    draft: object
    stats: GenerationStats
    method: str  # the plan's method, or "full" when the budget holds the whole prompt
    prompt_ids: list[int]
    started: float
    notes: list[str] = field(default_factory=list)
    lookahead_ids: list[int] = field(default_factory=list)
    messages: list | None = None  # the prompt as the target reads it (speckv-pc: after the cut)
    text: str | None = None


def generation_steps(plan: GenerationPlan, target, draft=None) -> Steps[AnswerRow]:
    """The draft's lookahead (if the method has one), the target's prefill and its cut: a row ready to decode."""
    run = _start(plan, target, draft)
    prefill = (yield from _lookahead(run)) if METHODS[run.method].needs_draft else None
    if prefill is None:
        prefill = _prefill(run)
    _record_prefill(run, prefill)
    return AnswerRow(run, prefill)


def _start(plan: GenerationPlan, target, draft) -> _Run:
    cfg = plan.config
    run = _Run(
        plan, target, draft,
        stats=GenerationStats(method=plan.method, prompt_tokens=len(plan.prompt_ids), budget=cfg.budget),
        method=plan.method, prompt_ids=list(plan.prompt_ids), started=synced_clock(target.input_device), notes=list(plan.notes),
        messages=plan.messages, text=plan.text,
    )
    # A speckv-pc prompt may overflow the target until SpecPC cuts it: then the cut must run. A speckv-pc
    # rate is a fraction of the cut prompt: the cut runs too, and _prefill says when nothing is dropped.
    fits = len(plan.prompt_ids) + plan.max_new_tokens <= target.context_length
    if plan.method != "full" and not plan.budget_after_cut and cfg.budget >= len(plan.prompt_ids) and fits:
        run.notes.append(f"budget {cfg.budget} >= prompt length {len(plan.prompt_ids)}: nothing to drop, full KV used")
        run.method = "full"
        run.stats.fell_back_to_full = True
    return run


def _lookahead(run: _Run) -> Steps[CompressedPrefill | None]:
    """The draft's answer (and, for speckv-pc, the cut prompt). Returns the prefill when one model is its own
    draft: its prefill and lookahead then serve as the target's prefill too."""
    plan, draft, target, stats = run.plan, run.draft, run.target, run.stats
    started = synced_clock(draft.input_device)
    n_look = plan.config.lookahead_tokens if plan.config.lookahead_tokens is not None else plan.max_new_tokens
    draft_ids = encode_prompt(draft, plan.messages, plan.text)
    fits = len(draft_ids) + n_look <= draft.context_length
    prefill, answered = None, True
    if run.method == "speckv" and draft is target and draft_ids == run.prompt_ids and fits:
        prefill, text, run.lookahead_ids = yield from self_draft_steps(
            target, run.prompt_ids, n_look, config=plan.config, stop=plan.stop
        )
        stats.draft_seconds = prefill.lookahead_seconds
        run.notes.append("self-draft: one prefill served the draft and the target")
    else:
        if fits:
            answer = yield from _draft_answer(run, draft_ids, n_look)
        else:
            answer = yield from _long_prompt_answer(run, len(draft_ids), n_look)
        text, ids = answer or ("", [])
        stats.draft_seconds = synced_clock(draft.input_device) - started
        room = target.context_length - len(run.prompt_ids)
        run.lookahead_ids = lookahead_for_target(draft, target, text, ids)[:room]
        answered = answer is not None
    if not answered:
        run.notes.append("no lookahead: SnapKV behaviour")
    elif n_look == 0:
        run.notes.append("lookahead_tokens=0: no lookahead, SnapKV behaviour")
    elif not run.lookahead_ids:
        run.notes.append("the draft's answer is empty (EOS at once): SnapKV behaviour")
    stats.lookahead_text = text
    stats.lookahead_tokens = len(run.lookahead_ids)
    return prefill


def _draft_answer(run: _Run, draft_ids: list[int], n_look: int) -> Steps[tuple[str, list[int]]]:
    """The draft answers the whole prompt; speckv-pc's SpecPC then cuts the prompt with that answer."""
    look = yield from draft_answer(run.draft, draft_ids, n_look, run.plan.stop)
    if run.method == "speckv-pc":
        yield from _cascade(run, look.text)
    return look.text, look.token_ids


def _long_prompt_answer(run: _Run, n_draft: int, n_look: int) -> Steps[tuple[str, list[int]] | None]:
    """The prompt is too long for the draft to answer in one forward (None: no lookahead, said in a note).

    speckv-pc: SpecPC scores the prompt in chunks, each with its own short lookahead (``lookahead_tokens`` of
    the SpecPC config), and the draft then answers the cut prompt, when that fits, for SpecKV's lookahead.
    """
    draft = run.draft
    too_long = f"prompt ({n_draft} draft tokens) + lookahead too long for the draft's context ({draft.context_length})"
    run.notes.append(too_long)
    if run.method != "speckv-pc" or not (yield from _cascade(run, None)):
        return None
    cut_ids = encode_prompt(draft, run.messages, run.text)
    if len(cut_ids) + n_look > draft.context_length:
        run.notes.append(f"so is the cut prompt ({len(cut_ids)} draft tokens)")
        return None
    run.notes.append("SpecPC scored it with its own lookahead per chunk, then the draft answered the cut prompt")
    look = yield from draft_answer(draft, cut_ids, n_look, run.plan.stop)
    return look.text, look.token_ids


def _cascade(run: _Run, lookahead_text: str | None) -> Steps[bool]:
    """SpecKV-PC: SpecPC (with the draft's answer, or its own lookahead when None) cuts the prompt before the
    target sees it; then the cut prompt must fit the target. Returns whether SpecPC cut it."""
    plan = run.plan
    cut = plan.prompt_budget < len(run.prompt_ids)
    if cut:
        run.messages, run.text, note = yield from specpc_cut(plan, run.draft, lookahead_text)
        run.notes.append(note)
        run.prompt_ids = encode_prompt(run.target, run.messages, run.text)
    else:
        run.notes.append("prompt_budget >= prompt length: SpecPC skipped")
    run.stats.compressed_prompt_tokens = len(run.prompt_ids)
    if plan.budget_after_cut:
        plan = resolve_rate(plan, len(run.prompt_ids))
        run.stats.budget = plan.config.budget
    hint = f"pass a smaller prompt_budget (now {plan.prompt_budget} draft tokens)"
    what = "the prompt cut by SpecPC" if cut else "the prompt"
    max_new, notes = fit_context(len(run.prompt_ids), plan.max_new_tokens, run.target, hint=hint, what=what)
    run.plan = replace(plan, max_new_tokens=max_new)
    run.notes.extend(notes)
    return cut


def _prefill(run: _Run) -> CompressedPrefill:
    cfg = run.plan.config
    method = "speckv" if METHODS[run.method].needs_draft else run.method
    if method != "full" and cfg.budget >= len(run.prompt_ids):
        run.notes.append(f"budget {cfg.budget} >= the cut prompt's {len(run.prompt_ids)} tokens: full KV of the cut prompt")
    return prefill_and_compress(run.target, run.prompt_ids, run.lookahead_ids, method=method, config=cfg)


def _record_prefill(run: _Run, prefill: CompressedPrefill) -> None:
    stats = run.stats
    stats.kv_entries_full = stats.prompt_tokens
    stats.kv_entries_kept = prefill.kept_entries
    stats.kv_bytes_full = prefill.kv_bytes_full
    if stats.compressed_prompt_tokens is not None and stats.prompt_tokens:
        # The full reference is the uncut prompt: scale the per-entry bytes of full-attention layers.
        stats.kv_bytes_full = full_bytes_uncut(prefill, stats.prompt_tokens)
    stats.kv_bytes_kept = prefill.kv_bytes_kept
    stats.kv_bytes_peak = prefill.kv_bytes_peak


class AnswerRow:
    """One answer after its prefill: its compressed cache, the logits of its first token, and its decode state.

    ``start()`` samples the first token (from the prefill's logits), ``push(token)`` takes each next one the
    device sampled; each returns the step, and ``chunk(step)`` turns it into a stream chunk, filling the stats
    on the last one. ``joining()`` is what the row brings to a decode batch (``engine.batching``). A constrained
    answer's ``grammar`` masks its first token, takes each token and gives the batch its next ``mask``; the
    answer ends as soon as the grammar takes nothing more. The draft's lookahead is never constrained.
    """

    def __init__(self, run: _Run, prefill: CompressedPrefill) -> None:
        plan, target = run.plan, run.target
        self.run = run
        self.cache = prefill.cache
        self.first_logits = prefill.first_logits
        self.position = prefill.prompt_len  # the true position of the first new token
        self.rule = SamplingRule.of(plan.temperature, plan.top_p, plan.seed)
        eos = eos_token_ids(target)
        self.stream = TokenStream(target.tokenizer, max_new_tokens=plan.max_new_tokens, eos_ids=eos, stop=plan.stop)
        self.grammar = RowGrammar.start(plan.constraint, target.tokenizer, logits_size(target.model), eos)
        self.model = target.model
        self.device = target.input_device
        self.first_token_at: float | None = None  # set by the first sample: a batched row may wait for others' prefills
        self.completion = 0
        self._last: int | None = None

    @property
    def mask(self):
        """The next token's bitmask (a constrained row's), None for a free row."""
        return self.grammar.mask if self.grammar is not None else None

    def start(self) -> DecodeStep:
        token = first_token(self.first_logits, self.rule, self.mask)
        self.first_token_at = synced_clock(self.device)
        self.run.stats.prefill_seconds = self.first_token_at - self.run.started  # the time to first token
        return self.push(token)

    def push(self, token: int) -> DecodeStep:
        self._last = token
        if self.grammar is None or token in self.stream.eos_ids:
            return self.stream.push(token)
        self.grammar.advance(token)
        return self.stream.push(token, last=self.grammar.done)

    def joining(self) -> Joining:
        return Joining(self.cache, self._last, self.position, self.rule,
                       headroom=self.stream.max_new_tokens - self.stream.sampled + 1, mask=self.mask)

    def joined(self) -> None:
        self.cache = self.first_logits = None  # the batch holds a copy: free the prefill's own tensors

    def chunk(self, step: DecodeStep) -> StreamChunk:
        if step.token_id is not None:
            self.completion += 1
        if step.finish_reason is None:
            return StreamChunk(text=step.text, token_id=step.token_id)
        run, stats = self.run, self.run.stats
        ended = synced_clock(self.device)
        stats.completion_tokens = self.completion
        stats.decode_seconds = ended - self.first_token_at
        stats.total_seconds = ended - run.started
        if run.plan.stop and step.finish_reason != "stop":
            run.notes.append("no stop sequence appeared")
        if run.plan.constraint is not None:
            stats.constraint = run.plan.constraint.kind
            # EOS is sampled only where the grammar accepts; a cut answer is whole only if it happens to be.
            stats.constraint_complete = self.grammar is None or step.finish_reason == "eos" or self.grammar.accepting
        stats.note = "; ".join(run.notes)
        return StreamChunk(text=step.text, token_id=step.token_id, stats=stats, finish_reason=step.finish_reason)
