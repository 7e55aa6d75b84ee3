"""Attention capture that rides on the fast kernels.

We register one attention implementation with transformers (``draftapprox``) and the matching mask
function. The real attention is always computed by SDPA (on CUDA, SDPA dispatches to its flash or
memory-efficient kernels). Only while a :class:`AttentionCapture` is active for a model does the
function *also* compute softmax(q_W kᵀ) for the last W queries of each layer, in float32, and hand it
to the capture's reducer. With no capture active the only extra cost is one context-variable lookup.
Captures (and the layer-wise KV eviction, :class:`AttentionObserver`) live in a context variable, never on
the model: a forward sees only the observers of the thread or task that runs it.

The mask function must be registered too: without it transformers passes ``attention_mask=None`` to a
custom implementation, which silently drops padding and Gemma-3's sliding window.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION_NAME = "draftapprox"

# Reducer: (weights [batch, q_heads, W, keys] float32, module) -> anything to store for that layer.
Reducer = Callable[[torch.Tensor, torch.nn.Module], Any]

# The observers of the current context (thread or task): never state on the shared model (see AttentionObserver).
_active: contextvars.ContextVar[tuple[AttentionObserver, ...]] = contextvars.ContextVar("draftapprox_observers", default=())
_register_lock = threading.Lock()
_registered = False


def register_attention() -> str:
    """Register the capturing attention and its mask function with transformers (idempotent)."""
    global _registered
    if _registered:
        return ATTENTION_NAME
    with _register_lock:
        if not _registered:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

            AttentionInterface.register(ATTENTION_NAME, capturing_attention_forward)
            AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
            _registered = True
    return ATTENTION_NAME


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention modules of a decoder (those that carry a ``layer_idx``), in layer order."""
    mods = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling")]
    return sorted(mods, key=lambda m: m.layer_idx)


# A model's attention modules do not change: an observer made every decode step (a batch's masks) looks them
# up once per model instead of walking its modules each time.
_module_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _attention_module_ids(model: torch.nn.Module) -> frozenset[int]:
    ids = _module_ids.get(model)
    if ids is None:
        ids = _module_ids[model] = frozenset(id(m) for m in attention_modules(model))
    return ids


def window_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    window: int,
    softcap: float | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ·scale + mask) for the last ``window`` queries, float32, GQA-expanded.

    query [B, Hq, Q, D]; key [B, Hkv, K, D] (before GQA expansion); attention_mask as transformers gives
    it to SDPA: None (plain causal, queries are the last Q of the K keys), a bool mask (True = attend) or an
    additive float mask, shaped [B, 1 or H, Q, K]. Returns [B, Hq, W, K].
    """
    bsz, q_heads, q_len, _ = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    w = min(window, q_len)
    q = query[:, :, q_len - w :, :].float()
    k = key.float()
    groups = q_heads // kv_heads
    # Group the query heads by their KV head instead of materialising the repeated keys.
    q = q.reshape(bsz, kv_heads, groups * w, q.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)).reshape(bsz, q_heads, w, k_len) * scaling
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None:
        q_pos = torch.arange(k_len - w, k_len, device=scores.device)
        allowed = q_pos[:, None] >= torch.arange(k_len, device=scores.device)[None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
    else:
        rows = attention_mask[..., q_len - w :, :k_len]
        if rows.dtype == torch.bool:
            scores = scores.masked_fill(~rows, float("-inf"))
        else:
            scores = scores + rows.float()
    weights = torch.softmax(scores, dim=-1)
    # Fully masked rows (left padding) give NaN; they attend to nothing.
    return torch.nan_to_num(weights, nan=0.0)


class AttentionObserver:
    """Watches the attention calls of ``model`` made in the current context only (a thread, or an asyncio task).

    An observer is entered as a context manager around model calls; the capturing attention then asks it for
    the layer's :meth:`attention_mask` (a slot cache gives each layer its rows' own), and calls its
    :meth:`before` (with the query and keys, before SDPA runs) and :meth:`after` (once the layer's attention
    output is computed) for the layers it :meth:`wants`. It is never attached to the model itself: two
    engines (two threads) running forwards on one set of weights each see only their own observers, which
    is what lets any number of engines share a model (FINDINGS-2 D1: forward hooks on the shared modules
    fired for every thread's forward).
    """

    def __init__(self, model: torch.nn.Module, *, layers: Iterable[int] | None = None) -> None:
        module_ids = _attention_module_ids(model)
        if not module_ids:
            raise ValueError(f"{type(model).__name__} has no attention modules with a layer_idx to observe")
        impl = getattr(model.config, "_attn_implementation", None)
        if impl != ATTENTION_NAME:
            raise RuntimeError(
                f"attention capture needs the model loaded with attn_implementation={ATTENTION_NAME!r} (has {impl!r})"
            )
        self.layers = None if layers is None else frozenset(layers)
        self._module_ids = module_ids
        self._token: contextvars.Token | None = None

    def __enter__(self):
        self._token = _active.set(_active.get() + (self,))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _active.reset(self._token)
        self._token = None

    def wants(self, module: torch.nn.Module) -> bool:
        return id(module) in self._module_ids and (self.layers is None or module.layer_idx in self.layers)

    def attention_mask(self, module, mask):
        """The mask this layer's attention uses (default: the one the model built)."""
        return mask

    def before(self, module, query, key, attention_mask, scaling: float, softcap: float | None) -> None:
        """Called with the layer's inputs to attention (keys after the cache update)."""

    def after(self, module) -> None:
        """Called once the layer's attention has run (its keys and values are no longer read)."""


class AttentionCapture(AttentionObserver):
    """Records, per layer, the attention of the last ``window`` queries to every key during forwards.

    Use as a context manager around model calls. ``reducer`` turns each layer's weights into what is kept
    (by default the weights themselves); ``layers`` limits which layer indices are captured. Records are
    appended per forward call, so ``records[layer]`` is a list with one entry per forward. ``stop_after``: once
    that layer's weights are recorded the forward raises :class:`ForwardStopped` (the caller catches it), so a
    caller that needs no output (no logits, no cache) does not pay for the layers above.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        window: int,
        *,
        layers: Iterable[int] | None = None,
        reducer: Reducer | None = None,
        stop_after: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"capture window must be >= 1, got {window}")
        super().__init__(model, layers=layers)
        self.window = window
        self.reducer = reducer
        self.stop_after = stop_after
        self.records: dict[int, list[Any]] = {}

    def before(self, module, query, key, attention_mask, scaling: float, softcap: float | None) -> None:
        weights = window_attention(query, key, attention_mask, scaling, self.window, softcap=softcap)
        self.record(module, weights)
        if self.stop_after == module.layer_idx:
            raise ForwardStopped(module.layer_idx)

    def record(self, module: torch.nn.Module, weights: torch.Tensor) -> None:
        value = weights if self.reducer is None else self.reducer(weights, module)
        self.records.setdefault(module.layer_idx, []).append(value)


class ForwardStopped(Exception):
    """Raised inside a forward by a capture with ``stop_after``, once its last wanted layer is recorded."""


def capturing_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
):
    observers = [o for o in _active.get() if o.wants(module)]
    for observer in observers:
        attention_mask = observer.attention_mask(module, attention_mask)
    for observer in observers:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        observer.before(module, query, key, attention_mask, scale, kwargs.get("softcap"))
    if kwargs.get("softcap") is not None:
        # SDPA has no logit soft-capping (Gemma-2); fall back to the eager kernel for such models.
        from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

        output = eager_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    else:
        output = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    for observer in observers:
        observer.after(module)
    return output
