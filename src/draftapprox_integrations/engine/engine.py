"""The shared engine: one draft and one target model, loaded once, lazily, safe across threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from . import specpc, speckv
from .config import DEFAULT_MODEL, METHODS, SpecKVConfig, SpecPCConfig
from .errors import EngineUsageError
from .loading import LoadedModel, ModelSource, check_quantization, resolve_device, resolve_dtype, resolve_reference
from .locking import FairRLock, stepwise
from .prompts import same_vocabulary
from .weights import load_shared


class DraftApproxEngine:
    """A draft model (small, scores attention) and a target model (answers), shared by every component.

    Constructing an engine validates its options and resolves the references (cheap); the weights are
    loaded on first use. ``target_model=None`` gives a draft-only engine (enough for SpecPC compression).
    ``quantization`` ("4bit"/"8bit", bitsandbytes) applies to the target; the draft stays in ``dtype``.

    Model work runs under one fair re-entrant lock (``locking.FairRLock``), taken here and nowhere below,
    one step at a time: a SpecPC scoring pass, a generation's prefill, each decode step. The attention
    capture and the KV cache surgery are per-call state on shared modules, and on a CPU two concurrent
    forwards only compete for the same cores. The methods below this facade take loaded models and a
    validated request; every argument is checked before any weight is loaded.
    """

    def __init__(
        self,
        draft_model: str | None = DEFAULT_MODEL,
        target_model: str | None = None,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        quantization: str | None = None,
    ) -> None:
        if draft_model is None and target_model is None:
            raise EngineUsageError("an engine needs at least one model: pass draft_model and/or target_model")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.quantization = check_quantization(quantization)
        self.draft_source: ModelSource | None = resolve_reference(draft_model) if draft_model is not None else None
        self.target_source: ModelSource | None = resolve_reference(target_model) if target_model is not None else None
        self._lock = FairRLock()
        self._draft: LoadedModel | None = None
        self._target: LoadedModel | None = None

    # -- models ---------------------------------------------------------------------------------

    @property
    def lock(self) -> FairRLock:
        return self._lock

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
                self._draft = load_shared(self.draft_source, device=self.device, dtype=self.dtype)
            return self._draft

    @property
    def target(self) -> LoadedModel:
        """The target model, loading it on first use. A draft-only engine raises EngineUsageError."""
        if self.target_source is None:
            raise EngineUsageError(
                "this engine is draft-only (target_model=None): it can compress prompts but not generate; "
                "construct it with target_model=... to generate"
            )
        with self._lock:
            if self._target is None:
                # One model as its own draft (unquantised) gets the draft's copy from the shared registry.
                self._target = load_shared(
                    self.target_source, device=self.device, dtype=self.dtype, quantization=self.quantization
                )
            return self._target

    def load(self) -> DraftApproxEngine:
        """Load every configured model now (otherwise they load on first use)."""
        if self.has_draft:
            _ = self.draft
        if self.has_target:
            _ = self.target
        return self

    @property
    def loaded(self) -> bool:
        return (not self.has_draft or self._draft is not None) and (not self.has_target or self._target is not None)

    def same_tokenizer(self) -> bool:
        """True when draft and target share a vocabulary, so token ids can pass between them unchanged."""
        if not (self.has_draft and self.has_target):
            return False
        return same_vocabulary(self.draft, self.target)

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
        Every argument is checked before the draft loads; only the draft's forwards run under the lock.
        """
        request = specpc.prepare(
            context, query, budget=budget, rate=rate, config=config, separator=separator,
            whole_sentences=whole_sentences, lookahead_text=lookahead_text, max_prompt_tokens=max_prompt_tokens,
            return_scores=return_scores, progress=progress, **config_overrides,
        )
        with self._lock:
            scored = specpc.score_request(self.draft, request)
        return specpc.finish(request, scored)

    # -- SpecKV ---------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        method: str = "speckv",
        budget: int | None = None,
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
        """Answer ``prompt`` with the target, its prompt KV cut to ``budget`` entries per layer and KV head.

        prompt: text, or a list of {"role", "content"} messages (rendered with the target's chat template;
        chat=True wraps a text in one user message, chat=False renders messages as a plain transcript).
        method: speckv | snapkv | streamingllm | full | speckv-pc. budget / config: the SpecKVConfig (budget
        overrides config.budget). prompt_budget / specpc_config: speckv-pc's SpecPC cut, in draft tokens.
        max_new_tokens, temperature (0: greedy), top_p, stop (strings, trimmed from the answer), seed.
        Every argument is checked before any weight loads; raises ConfigError, EngineUsageError or
        ContextLengthError.
        """
        plan = speckv.check_generation(
            prompt, method=method, budget=budget, config=config, prompt_budget=prompt_budget,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed, chat=chat,
            specpc_config=specpc_config, has_draft=self.has_draft,
        )
        plan = speckv.tokenize_plan(plan, self.target)
        return speckv.GenerationResult.from_chunks(self._steps(plan))

    def stream(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        method: str = "speckv",
        budget: int | None = None,
        config: SpecKVConfig | None = None,
        prompt_budget: int | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
        chat: bool | None = None,
        specpc_config: SpecPCConfig | None = None,
    ) -> Iterator[speckv.StreamChunk]:
        """Like :meth:`generate` (same arguments), as an iterator of text deltas; the last chunk carries the
        stats and the finish reason. Arguments and the prompt's length are checked now, before the first chunk
        (for speckv-pc over a prompt longer than the target's context, the cut prompt's length can only be
        checked once the draft has run: that ContextLengthError comes from the first ``next()``).

        The engine lock is held only while a chunk is computed (the prefill, then one decode step), never
        while the stream waits for its reader: a paused or abandoned stream, or one read from several
        threads, holds up no other call. ``close()`` (or dropping the iterator) ends the generation.
        """
        plan = speckv.check_generation(
            prompt, method=method, budget=budget, config=config, prompt_budget=prompt_budget,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed, chat=chat,
            specpc_config=specpc_config, has_draft=self.has_draft,
        )
        plan = speckv.tokenize_plan(plan, self.target)
        return self._steps(plan)

    def _steps(self, plan: speckv.GenerationPlan) -> Iterator[speckv.StreamChunk]:
        """The generation's chunks, each computed under the lock (a cancelled caller stops it between two)."""
        return stepwise(self._lock, lambda: speckv.run_generation(plan, self.target, self._draft_for(plan.method)))

    def _draft_for(self, method: str):
        """The loaded draft when ``method`` runs one (loading it now), else None."""
        return self.draft if METHODS[method].needs_draft else None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "quantization": self.quantization,
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


# -- shared engines ---------------------------------------------------------------------------------

_engines: dict[tuple, DraftApproxEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    draft_model: str | None = DEFAULT_MODEL,
    target_model: str | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    quantization: str | None = None,
) -> DraftApproxEngine:
    """The process-wide engine for these references: components built alike share one copy of the weights."""
    dev = resolve_device(device)
    key = (
        resolve_reference(draft_model).name if draft_model is not None else None,
        resolve_reference(target_model).name if target_model is not None else None,
        str(dev),
        resolve_dtype(dtype, dev),
        check_quantization(quantization),
    )
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = DraftApproxEngine(draft_model, target_model, device=dev, dtype=key[3], quantization=key[4])
            _engines[key] = engine
        return engine


def clear_engines() -> None:
    """Forget the shared engines (their weights are freed once no component holds them)."""
    with _engines_lock:
        _engines.clear()
