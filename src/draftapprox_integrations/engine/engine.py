"""The shared engine: one draft and one target model, loaded once, lazily, safe across threads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import specpc, speckv
from .config import DEFAULT_MODEL, SpecKVConfig, SpecPCConfig
from .errors import ConfigError, EngineUsageError, naming_row
from .loading import LoadedModel, check_quantization, load_tokenizer, resolve_device, resolve_dtype
from .locking import FairRLock
from .prompts import same_vocabulary
from .serving import EngineLoop, GenerationStream, Request
from .warmup import warm_up
from .weights import load_shared, model_entry


class DraftApproxEngine:
    """A draft model (small, scores attention) and a target model (answers), shared by every component.

    Constructing an engine validates its options and resolves the references (cheap); the weights are
    loaded on first use. ``target_model=None`` gives a draft-only engine (enough for SpecPC compression).
    ``quantization`` ("4bit"/"8bit", bitsandbytes) applies to the target; the draft stays in ``dtype``.
    ``draft_model_kwargs`` / ``target_model_kwargs``: extra ``from_pretrained`` keywords (``revision``, ...). A
    model may be a loaded transformers model with ``draft_tokenizer`` / ``target_tokenizer``: used in place, not
    copied (``loading.adopt_model``); one object in two roles or engines is one copy, as one reference is.

    Model work runs on the engine's loop (``serving.EngineLoop``), one thread that owns the models; calls
    submit requests to it. Answers and drafts' lookaheads decode together, up to ``max_batch_size``
    generations at a time, each row in a slot of a static cache (``engine.batching``); no caller holds a model
    lock, and a paused, abandoned or cancelled stream costs the others nothing. On CUDA a decode step is a
    captured graph (``cuda_graphs=False``: eager, as on a CPU). Every argument is checked before any weight
    loads, in the caller's thread.
    """

    def __init__(
        self,
        draft_model: Any = DEFAULT_MODEL,
        target_model: Any = None,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        quantization: str | None = None,
        draft_tokenizer: Any = None,
        target_tokenizer: Any = None,
        draft_model_kwargs: dict[str, Any] | None = None,
        target_model_kwargs: dict[str, Any] | None = None,
        max_batch_size: int = 8,
        cuda_graphs: bool = True,
    ) -> None:
        if draft_model is None and target_model is None:
            raise EngineUsageError("an engine needs at least one model: pass draft_model and/or target_model")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.quantization = check_quantization(quantization)
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        self.draft_source, self.draft_model_kwargs = model_entry(draft_model, draft_tokenizer, draft_model_kwargs, "draft")
        self.target_source, self.target_model_kwargs = model_entry(
            target_model, target_tokenizer, target_model_kwargs, "target", quantization=self.quantization
        )
        self._lock = FairRLock()
        self._loop = EngineLoop(self._lock, max_batch_size=max_batch_size, cuda_graphs=bool(cuda_graphs))
        self._draft: LoadedModel | None = None
        self._target: LoadedModel | None = None

    # -- models ---------------------------------------------------------------------------------

    lock = property(lambda self: self._lock, doc="the engine's model lock (the loop takes it for every step)")
    max_batch_size = property(lambda self: self._loop.max_batch_size, doc="the most generations decoded together")

    @property
    def has_draft(self) -> bool:
        return self.draft_source is not None

    @property
    def has_target(self) -> bool:
        return self.target_source is not None

    @property
    def draft(self) -> LoadedModel:
        """The draft model, loading it on first use."""
        if self.draft_source is None:
            raise EngineUsageError("this engine has no draft model; construct it with draft_model=...")
        with self._lock:
            if self._draft is None:
                self._draft = load_shared(self.draft_source, device=self.device, dtype=self.dtype, model_kwargs=self.draft_model_kwargs)
            return self._draft

    @property
    def target(self) -> LoadedModel:
        """The target model, loading it on first use. A draft-only engine raises EngineUsageError."""
        if self.target_source is None:
            raise EngineUsageError("this engine is draft-only (target_model=None): it can compress prompts but not "
                                   "generate; construct it with target_model=... to generate")
        with self._lock:
            if self._target is None:
                # One model as its own draft (unquantised) gets the draft's copy from the shared registry.
                self._target = load_shared(
                    self.target_source, device=self.device, dtype=self.dtype, quantization=self.quantization,
                    model_kwargs=self.target_model_kwargs,
                )
            return self._target

    @property
    def target_tokenizer(self):
        """The target's tokenizer, never loading its weights (``loading.load_tokenizer``): for counting tokens."""
        if self._target is not None or self.target_source is None:  # a draft-only engine raises EngineUsageError
            return self.target.tokenizer
        return load_tokenizer(self.target_source, self.target_model_kwargs)

    def load(self) -> DraftApproxEngine:
        """Load every configured model now (otherwise they load on first use)."""
        _ = (self.draft if self.has_draft else None), (self.target if self.has_target else None)
        return self

    @property
    def loaded(self) -> bool:
        return (not self.has_draft or self._draft is not None) and (not self.has_target or self._target is not None)

    def same_tokenizer(self) -> bool:
        """True when draft and target share a vocabulary, so token ids can pass between them unchanged."""
        return self.has_draft and self.has_target and same_vocabulary(self.draft, self.target)

    def warmup(self, lengths: Sequence[int], *, batch_sizes: Sequence[int] = (1,), methods: Sequence[str] = ("speckv",),
               budget: int | None = None, max_new_tokens: int = 8) -> dict[str, Any]:
        """Run the shapes a user expects once (prompts of ``lengths`` target tokens, each method and batch
        size) on a synthetic prompt, so a first request is not the cold one (``engine.warmup``)."""
        return warm_up(self, lengths=lengths, batch_sizes=batch_sizes, methods=methods, budget=budget,
                       max_new_tokens=max_new_tokens)

    # -- SpecPC -----------------------------------------------------------------------------------

    def compress(
        self,
        context: str | Sequence[str],
        query: str | None = None,
        *,
        budget: int | None = None,
        rate: float | None = None,
        config: SpecPCConfig | None = None,
        separator: str = specpc.DEFAULT_SEPARATOR,
        whole_sentences: bool = False,
        lookahead_text: str | None = None,
        max_prompt_tokens: int | None = None,
        return_scores: bool = False,
        progress: bool = False,
        **config_overrides: Any,
    ) -> specpc.CompressionResult:
        """SpecPC: keep ``budget`` draft tokens (or the fraction ``rate``) of ``context`` that the draft attends
        to when it reads ``query``.
        context: one text or a sequence of documents; query: the question, or None to compress a plain
        prompt (its tail is then the observation window and is always kept). Exactly one of budget / rate.
        config: a SpecPCConfig; its field names may also be passed as keywords (``window_size=32``).
        separator: marks elided text; whole_sentences: keep whole sentences, best first, while they fit; lookahead_text:
        score with this answer instead of letting the draft write one; max_prompt_tokens: cap on one draft
        prompt (longer inputs are scored in chunks, logged at INFO); return_scores: keep the per-token scores;
        progress: a tqdm bar on stderr while a chunked input is scored (off by default; the CLI turns it on).
        Every argument is checked before the draft loads; only the draft's scoring runs on the engine's loop.
        """
        request = specpc.prepare(
            context, query, budget=budget, rate=rate, config=config, separator=separator,
            whole_sentences=whole_sentences, lookahead_text=lookahead_text, max_prompt_tokens=max_prompt_tokens,
            return_scores=return_scores, progress=progress, **config_overrides,
        )
        scored = self._loop.submit(Request(lambda: specpc.score_steps(self.draft, request), streams=False)).result()
        return specpc.finish(request, scored)

    # -- SpecKV ---------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        method: str = "speckv",
        budget: int | None = None,
        rate: float | None = None,
        config: SpecKVConfig | None = None,
        prompt_budget: int | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
        chat: bool | None = None,
        specpc_config: SpecPCConfig | None = None,
    ) -> speckv.GenerationResult:
        """Answer ``prompt`` with the target, its prompt KV cut to ``budget`` (or ``rate``) entries per layer and KV head.

        prompt: text, or a list of {"role", "content"} messages. chat=None (default): a text is one user
        message rendered with each model's chat template, or read as plain text by a model without one (a base
        model); messages use the template. chat=False sends the text as it is (messages as a plain transcript);
        chat=True always wraps a text in one user message (a transcript for a model without a template).
        method: speckv | snapkv | streamingllm | full | speckv-pc. config: the SpecKVConfig; at most one of budget
        (entries) or rate (in (0, 1]: max(window_size, ceil(rate * prompt tokens)) entries; speckv-pc: of the prompt
        SpecPC's cut leaves) overrides config.budget; stats.budget is the resulting budget (``speckv.resolve_rate``).
        prompt_budget / specpc_config: speckv-pc's SpecPC cut, in draft tokens.
        max_new_tokens, temperature (0: greedy), top_p, stop (strings, trimmed from the answer), seed.
        Every argument is checked before any weight loads; raises ConfigError, EngineUsageError or
        ContextLengthError.
        """
        plan = self._plan(prompt, locals())
        return speckv.GenerationResult.from_chunks(self._answer(plan))

    def generate_batch(
        self,
        prompts: Sequence[str | Sequence[dict[str, str]]],
        *,
        method: str = "speckv",
        budget: int | None = None,
        rate: float | None = None,
        config: SpecKVConfig | None = None,
        prompt_budget: int | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
        chat: bool | None = None,
        specpc_config: SpecPCConfig | None = None,
    ) -> list[speckv.GenerationResult]:
        """:meth:`generate` for several prompts (same options), decoded together: their compressed caches stack,
        so a decode step is one forward for all (up to ``max_batch_size`` rows; the rest join as rows finish).
        Under greedy decoding the answers equal :meth:`generate`'s one by one; ``seed`` seeds every row alike.
        Every prompt is checked and tokenised before any work; an error names its prompt (``prompt 2: ...``).
        If one generation fails, the others are cancelled and its error is raised, naming its prompt.
        """
        speckv.check_prompt_list(prompts)
        options = {k: v for k, v in locals().items() if k not in ("self", "prompts")}
        plans = [naming_row(i, lambda p=prompt: self._plan(p, options)) for i, prompt in enumerate(prompts)]
        requests = [self._submit(plan) for plan in plans]  # all at once: the loop prefills them before decoding
        try:
            read = speckv.GenerationResult.from_chunks
            return [naming_row(i, lambda r=r: read(r.chunks(speckv.StreamChunk.is_final))) for i, r in enumerate(requests)]
        finally:
            for request in requests:
                request.cancel()  # a no-op for the finished; stops the others when one row failed

    def stream(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        method: str = "speckv",
        budget: int | None = None,
        rate: float | None = None,
        config: SpecKVConfig | None = None,
        prompt_budget: int | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
        chat: bool | None = None,
        specpc_config: SpecPCConfig | None = None,
    ) -> GenerationStream:
        """Like :meth:`generate` (same arguments), as an iterator of text deltas; the last chunk carries the
        stats and the finish reason. Arguments and the prompt's length are checked now, before the first chunk
        (for speckv-pc over a prompt longer than the target's context, the cut prompt's length can only be
        checked once the draft has run: that ContextLengthError comes from the first ``next()``).

        The engine's loop computes the chunks whether or not the reader keeps up: a paused stream, or one read
        from several threads, holds up no other call; ``close()`` (from any thread, also while another thread
        waits in ``next()``), or dropping the iterator, ends it before its next forward.
        """
        return self._answer(self._plan(prompt, locals()))

    def _plan(self, prompt, options: dict[str, Any]) -> speckv.GenerationPlan:
        """The checked, tokenised plan of one generation (no model work but the target's tokenizer)."""
        options = {k: v for k, v in options.items() if k not in ("self", "prompt", "prompts", "options")}
        plan = speckv.check_generation(prompt, has_draft=self.has_draft, **options)
        return speckv.tokenize_plan(plan, self.target)

    def _submit(self, plan: speckv.GenerationPlan) -> Request:
        draft = (lambda: self.draft) if plan.needs_draft else (lambda: None)
        return self._loop.submit(Request(lambda: speckv.generation_steps(plan, self.target, draft()), streams=True))

    def _answer(self, plan: speckv.GenerationPlan) -> GenerationStream:
        """The generation's chunks from the loop, submitted on the first ``next()`` (``serving.GenerationStream``)."""
        return GenerationStream(lambda: self._submit(plan), speckv.StreamChunk.is_final)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""), "quantization": self.quantization,
            "draft": self.draft_source.name if self.draft_source else None,
            "target": self.target_source.name if self.target_source else None,
        }
        for role, loaded in (("draft", self._draft), ("target", self._target)):
            if loaded is not None:
                out[f"{role}_load_seconds"] = round(loaded.load_seconds, 3)
        return out

    def __repr__(self) -> str:
        d = self.describe()
        return f"DraftApproxEngine(draft={d['draft']!r}, target={d['target']!r}, device={d['device']!r}, dtype={d['dtype']!r})"
