"""The shared engine: one draft and one target model, loaded once, lazily, safe across threads."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from .errors import EngineUsageError
from .loading import (
    LoadedModel,
    ModelSource,
    check_quantization,
    load_model,
    resolve_device,
    resolve_dtype,
    resolve_reference,
)


class DraftApproxEngine:
    """A draft model (small, scores attention) and a target model (answers), shared by every component.

    Constructing an engine validates its options and resolves the references (cheap); the weights are
    loaded on first use. ``target_model=None`` gives a draft-only engine (enough for SpecPC compression).
    ``quantization`` ("4bit"/"8bit", bitsandbytes) applies to the target; the draft stays in ``dtype``.

    All model work runs under one re-entrant lock: the attention capture and the KV cache surgery are
    per-call state on shared modules, and on a CPU two concurrent forwards only compete for the same cores.
    """

    def __init__(
        self,
        draft_model: str | None = "smollm2-135m-instruct",
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
        self._lock = threading.RLock()
        self._draft: LoadedModel | None = None
        self._target: LoadedModel | None = None

    # -- models ---------------------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
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
                self._draft = _load_shared(self.draft_source, device=self.device, dtype=self.dtype)
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
                self._target = _load_shared(
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
        a, b = self.draft.tokenizer, self.target.tokenizer
        return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())

    def compress(self, context, query=None, *, budget=None, rate=None, config=None, **options):
        """SpecPC prompt compression with the draft; see :func:`draftapprox_integrations.engine.specpc.compress`."""
        from .specpc import compress

        with self._lock:
            return compress(self, context, query, budget=budget, rate=rate, config=config, **options)

    # -- SpecKV ---------------------------------------------------------------------------------

    def generate(self, prompt, **kwargs: Any):
        """Generate with the target, its KV compressed by ``method`` (see :mod:`.speckv`). -> GenerationResult"""
        from .speckv import generate

        return generate(self, prompt, **kwargs)

    def stream(self, prompt, **kwargs: Any):
        """Like :meth:`generate`, as an iterator of StreamChunk deltas (validated before the first chunk)."""
        from .speckv import stream

        return stream(self, prompt, **kwargs)

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


# -- shared weights ---------------------------------------------------------------------------------

# Engines that name the same model (a draft-only compressor engine and a draft+target LLM engine, say)
# share one loaded copy. Weak values: the weights are freed once no engine holds them.
_loaded_models: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_loaded_lock = threading.Lock()


def _load_shared(source: ModelSource, *, device: torch.device, dtype: torch.dtype, quantization: str | None = None) -> LoadedModel:
    key = (source.kind, source.location, str(device), dtype, quantization)
    with _loaded_lock:
        loaded = _loaded_models.get(key)
        if loaded is None:
            loaded = load_model(source, device=device, dtype=dtype, quantization=quantization)
            _loaded_models[key] = loaded
        return loaded


# -- shared engines ---------------------------------------------------------------------------------

_engines: dict[tuple, DraftApproxEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    draft_model: str | None = "smollm2-135m-instruct",
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
