"""SpecKV: the draft's approximate answer decides which prompt KV entries the target keeps.

One call, five methods (arXiv 2506.08373, section on SpecKV; DESIGN.md section 2):

* ``full``: no compression (the reference).
* ``snapkv``: the last ``window_size`` prompt queries score the prompt keys outside the window; per layer
  and KV head the top ``budget - window_size`` keys are kept plus the window.
* ``speckv``: SnapKV whose observation queries also include the draft's lookahead (its greedy guess of the
  answer, passed as *text* and re-tokenised for the target, so the two models may use different
  tokenizers). The target prefills prompt + lookahead in one forward; the lookahead's own KV is dropped.
* ``streamingllm``: ``sink_tokens`` first entries + the most recent ones (no scoring).
* ``speckv-pc``: the draft's answer first drives SpecPC (``engine/specpc.py``, ``lookahead_text=``) to cut
  the prompt to ``prompt_budget`` draft tokens (SpecPC's unit; the window at the prompt's end, where the
  question sits, is always kept), then SpecKV compresses the target's KV with the same lookahead. For a
  list of messages the last user message is the part that is cut.

After compression the cache holds ``budget`` entries per full-attention layer and KV head, but new
tokens keep their true positions (prompt length + t): ``position_ids`` are passed explicitly. On hybrid
models (Gemma-3) only the full-attention layers are compressed; sliding-window layers keep their window.
The first answer token comes from the logits of the last *prompt* position, computed in the same
prefill (``logits_to_keep`` selects that single row: Gemma's vocabulary is 262k).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .config import SpecKVConfig
from .errors import ConfigError, ContextLengthError, EngineUsageError
from .decoding import DecodeStep, TokenSampler, check_sampling, check_stop, decode_tokens, eos_token_ids
from .capture import AttentionCapture
from .scoring import pool1d, reduce

if TYPE_CHECKING:
    from .engine import DraftApproxEngine
    from .loading import LoadedModel

METHODS = ("full", "speckv", "snapkv", "streamingllm", "speckv-pc")
_DRAFT_METHODS = ("speckv", "speckv-pc")

Prompt = str | Sequence[dict[str, str]]


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class GenerationStats:
    """What one generation cost and kept.

    KV entries count per full-attention layer and KV head (the budget's unit); KV bytes count every layer
    (sliding layers hold at most their window), keys and values, in the cache's dtype, for the prompt.
    ``prefill_seconds`` is the time to first token: it includes ``draft_seconds`` (and SpecPC for the cascade).
    """

    method: str
    prompt_tokens: int
    completion_tokens: int = 0
    kv_entries_full: int = 0
    kv_entries_kept: int = 0
    kv_bytes_full: int = 0
    kv_bytes_kept: int = 0
    draft_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    fell_back_to_full: bool = False
    note: str = ""
    lookahead_tokens: int = 0  # target tokens of the draft's answer that scored the keys
    lookahead_text: str = ""
    compressed_prompt_tokens: int | None = None  # speckv-pc: target tokens after SpecPC
    budget: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def kv_fraction_kept(self) -> float:
        return self.kv_bytes_kept / self.kv_bytes_full if self.kv_bytes_full else 1.0


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "eos"
    stats: GenerationStats


@dataclass
class StreamChunk:
    """A text delta; ``stats`` (and ``finish_reason``) are set on the final chunk only."""

    text: str
    token_id: int | None = None
    stats: GenerationStats | None = None
    finish_reason: str | None = None


# ---------------------------------------------------------------------------------------------
# prompts


def normalize_messages(prompt: Prompt, chat: bool | None) -> tuple[list[dict[str, str]] | None, str | None]:
    """(messages, None) for a chat prompt, (None, text) for a plain one; raises ConfigError on empty input."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConfigError("the prompt is empty: pass some text (or a non-empty list of messages)")
        if chat:
            return [{"role": "user", "content": prompt}], None
        return None, prompt
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise ConfigError("the prompt is an empty list of messages")
        messages = []
        for m in prompt:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ConfigError(f"each message must be a dict with string 'role' and 'content', got {m!r}")
            messages.append({"role": m["role"], "content": m["content"]})
        if not any(m["content"].strip() for m in messages):
            raise ConfigError("every message of the prompt is empty")
        if chat is False:
            return None, transcript(messages)
        return messages, None
    raise ConfigError(f"prompt must be a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}")


def transcript(messages: Sequence[dict[str, str]]) -> str:
    """A plain "Role: content" transcript ending "Assistant:", for base models without a chat template."""
    lines = [f"{m['role'].strip().capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def encode_prompt(loaded: LoadedModel, messages: list[dict[str, str]] | None, text: str | None) -> list[int]:
    """Token ids of the prompt for one model: its chat template when it has one, else a transcript."""
    tok = loaded.tokenizer
    if messages is not None and loaded.has_chat_template:
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # Templates write their own BOS where the model wants one.
        return list(tok(rendered, add_special_tokens=False)["input_ids"])
    if messages is not None:
        text = transcript(messages)
    return list(tok(text, add_special_tokens=True)["input_ids"])


# ---------------------------------------------------------------------------------------------
# scoring and selection (pure tensor functions)


def observation_key_scores(
    weights: torch.Tensor, *, prompt_len: int, window_size: int, kv_heads: int, reduction: str
) -> torch.Tensor:
    """Score the prompt keys outside the window, per KV head.

    weights: [B, Hq, Q, K] softmax attention of the Q observation queries (last window prompt tokens, then
    the lookahead) to every key. Returns [B, Hkv, prompt_len - window_size]: reduced over the queries and over
    the query heads that share each KV head (GQA), since a KV entry is kept or dropped for its whole group.
    """
    bsz, q_heads, n_queries, _ = weights.shape
    outside = weights[..., : prompt_len - window_size]
    grouped = outside.reshape(bsz, kv_heads, q_heads // kv_heads, n_queries, outside.shape[-1])
    return reduce(grouped, dim=(2, 3), mode=reduction)


def select_kept_indices(
    scores: torch.Tensor, *, prompt_len: int, budget: int, window_size: int, kernel_size: int, pooling: str
) -> torch.Tensor:
    """Sorted positions to keep, [B, Hkv, budget]: top (budget - window) pooled scores + the window."""
    bsz, heads, _ = scores.shape
    window = torch.arange(prompt_len - window_size, prompt_len, device=scores.device).expand(bsz, heads, -1)
    n_top = budget - window_size
    if n_top <= 0:
        return window.clone()
    pooled = pool1d(scores, kernel_size, pooling)
    top = pooled.topk(n_top, dim=-1).indices
    return torch.cat([top, window], dim=-1).sort(dim=-1).values


def streaming_indices(prompt_len: int, budget: int, sink_tokens: int, *, device=None) -> torch.Tensor:
    """StreamingLLM's kept positions: the first ``sink_tokens`` plus the most recent ones, [budget]."""
    recent = budget - sink_tokens
    return torch.cat(
        [torch.arange(0, sink_tokens, device=device), torch.arange(prompt_len - recent, prompt_len, device=device)]
    )


# ---------------------------------------------------------------------------------------------
# prefill + compression


@dataclass
class CompressedPrefill:
    cache: Any
    first_logits: torch.Tensor  # [vocab] at the last prompt position
    prompt_len: int
    kept_entries: int  # per full-attention layer and KV head
    kept_indices: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, Hkv, kept]
    kv_bytes_full: int = 0
    kv_bytes_kept: int = 0
    lookahead_seconds: float = 0.0  # self-draft path: the lookahead written into the shared cache


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _is_sliding(layer) -> bool:
    return bool(getattr(layer, "is_sliding", False))


def _recording_cache(model):
    """A fresh cache and the indices of its full-attention layers. Sliding-window layers keep every entry
    through the prefill, so that the lookahead's entries can be cropped off afterwards."""
    cache = _new_cache(model)
    for layer in cache.layers:
        if _is_sliding(layer):
            layer.activate_past_recording()
    full_layers = [i for i, layer in enumerate(cache.layers) if not _is_sliding(layer)]
    return cache, full_layers


def _select_by_layer(
    layer_scores: Iterable[tuple[int, torch.Tensor]], *, prompt_len: int, budget: int, window: int, config: SpecKVConfig
) -> dict[int, torch.Tensor]:
    """select_kept_indices for each (layer, key scores) pair: layer -> kept prompt indices."""
    return {
        i: select_kept_indices(
            scores,
            prompt_len=prompt_len,
            budget=budget,
            window_size=window,
            kernel_size=config.kernel_size,
            pooling=config.pooling,
        )
        for i, scores in layer_scores
    }


def _combine_records(records: Sequence[tuple[torch.Tensor, int]], reduction: str) -> torch.Tensor:
    """One layer's key scores from its per-forward (scores, number of queries) records: max combines as a
    max, mean as a mean weighted by the number of queries."""
    if reduction == "max":
        return torch.stack([r[0] for r in records]).amax(dim=0)
    total = sum(r[1] for r in records)
    return sum(r[0] * r[1] for r in records) / total


@torch.no_grad()
def prefill_and_compress(
    target: LoadedModel,
    prompt_ids: Sequence[int],
    lookahead_ids: Sequence[int] = (),
    *,
    method: str,
    config: SpecKVConfig,
) -> CompressedPrefill:
    """Prefill the target and leave in the cache what ``method`` keeps of the prompt.

    ``method`` is full | snapkv | speckv | streamingllm (speckv with an empty lookahead is snapkv). A budget
    at least the prompt length keeps every prompt entry (the lookahead's entries are still dropped), which
    is what the tests use to check that positions stay right after the surgery.
    """
    model = target.model
    device = target.input_device
    prompt_len = len(prompt_ids)
    if method not in ("full", "snapkv", "speckv", "streamingllm"):
        raise ConfigError(f"prefill_and_compress: unknown method {method!r}")
    lookahead = list(lookahead_ids) if method == "speckv" else []
    n_look = len(lookahead)
    budget = min(config.budget, prompt_len) if method != "full" else prompt_len
    scoring = method in ("snapkv", "speckv") and budget < prompt_len
    window = min(config.window_size, prompt_len)

    cache, full_layers = _recording_cache(model)

    input_ids = torch.tensor([list(prompt_ids) + lookahead], device=device)
    # Only the last prompt position's logits are needed (the first answer token comes from there).
    keep = 1 if n_look == 0 else torch.tensor([prompt_len - 1], device=device)
    forward_kwargs = dict(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=keep)
    kept_indices: dict[int, torch.Tensor] = {}
    if scoring:
        kv_heads = model.config.num_key_value_heads

        def reducer(weights: torch.Tensor, module) -> torch.Tensor:
            # Reduce inside the forward: keeping [H, W, K] float32 weights for every layer would cost GBs.
            return observation_key_scores(
                weights, prompt_len=prompt_len, window_size=window, kv_heads=kv_heads, reduction=config.reduction
            )

        with AttentionCapture(model, window + n_look, layers=full_layers, reducer=reducer) as capture:
            out = model(**forward_kwargs)
        layer_scores = ((i, capture.records[i][-1]) for i in full_layers)
        kept_indices = _select_by_layer(layer_scores, prompt_len=prompt_len, budget=budget, window=window, config=config)
    else:
        out = model(**forward_kwargs)
        if method == "streamingllm" and budget < prompt_len:
            idx = streaming_indices(prompt_len, budget, min(config.sink_tokens, budget), device=device)
            for i in full_layers:
                layer = cache.layers[i]
                kept_indices[i] = idx.expand(layer.keys.shape[0], layer.keys.shape[1], -1)
    first_logits = out.logits[0, -1].float()
    return _compressed_prefill(cache, first_logits, prompt_len, budget, kept_indices, n_look)


def _compressed_prefill(
    cache,
    first_logits: torch.Tensor,
    prompt_len: int,
    budget: int,
    kept_indices: dict[int, torch.Tensor],
    n_look: int,
    *,
    lookahead_seconds: float = 0.0,
) -> CompressedPrefill:
    """compress_cache (drop the lookahead, keep ``kept_indices`` of the prompt) and the resulting prefill."""
    kv_bytes_full, kv_bytes_kept = compress_cache(cache, kept_indices, prompt_len, n_look)
    return CompressedPrefill(
        cache=cache,
        first_logits=first_logits,
        prompt_len=prompt_len,
        kept_entries=budget,
        kept_indices=kept_indices,
        kv_bytes_full=kv_bytes_full,
        kv_bytes_kept=kv_bytes_kept,
        lookahead_seconds=lookahead_seconds,
    )


def compress_cache(cache, kept_indices: dict[int, torch.Tensor], prompt_len: int, n_look: int) -> tuple[int, int]:
    """Drop the lookahead's entries and keep ``kept_indices`` (per layer, [B, Hkv, k]) of the prompt, in place.

    Sliding-window layers are only cropped back to their window. Returns (bytes a full prompt cache would
    hold, bytes kept), keys and values, every layer.
    """
    kv_bytes_full = kv_bytes_kept = 0
    for i, layer in enumerate(cache.layers):
        if not getattr(layer, "is_initialized", True) or layer.keys is None:
            continue
        if _is_sliding(layer):
            # Drops the lookahead and restricts the layer to its window, as if only the prompt had been seen.
            layer.crop(-n_look) if n_look else layer.crop(0)
            layer.record_past = False
            full_entries = min(prompt_len, layer.sliding_window - 1)
        else:
            keys, values = layer.keys[:, :, :prompt_len], layer.values[:, :, :prompt_len]
            if i in kept_indices:
                gather = kept_indices[i][..., None].expand(-1, -1, -1, keys.shape[-1])
                keys, values = keys.gather(2, gather), values.gather(2, gather)
            layer.keys, layer.values = keys.contiguous(), values.contiguous()
            full_entries = prompt_len
        per_entry = layer.keys.shape[0] * layer.keys.shape[1] * layer.keys.shape[-1] * layer.keys.element_size() * 2
        kv_bytes_full += full_entries * per_entry
        kv_bytes_kept += layer.keys.shape[-2] * per_entry
    return kv_bytes_full, kv_bytes_kept


@torch.no_grad()
def self_draft_prefill(
    model_: LoadedModel,
    prompt_ids: Sequence[int],
    n_lookahead: int,
    *,
    config: SpecKVConfig,
    stop: Sequence[str] = (),
) -> tuple[CompressedPrefill, str, list[int]]:
    """SpecKV when the draft *is* the target (one model as its own draft): one prefill serves both.

    The model prefills the prompt once (window queries captured), then greedily writes the lookahead into
    the same cache, each new token's attention captured as it is fed. That is exactly what the target's
    prefill of prompt + lookahead would compute (same weights, same causal attention), so the separate
    target prefill is skipped. The lookahead's entries are then dropped and the prompt's compressed.
    Returns the prefill, the lookahead text and its token ids.
    """
    model = model_.model
    device = model_.input_device
    prompt_len = len(prompt_ids)
    budget = min(config.budget, prompt_len)
    window = min(config.window_size, prompt_len)
    cache, full_layers = _recording_cache(model)
    kv_heads = model.config.num_key_value_heads
    scoring = budget < prompt_len

    def reducer(weights: torch.Tensor, module) -> tuple[torch.Tensor, int]:
        # (reduction over this forward's queries, their number): max combines as a max, mean as a weighted mean.
        n_queries = weights.shape[2]
        scores = observation_key_scores(
            weights, prompt_len=prompt_len, window_size=window, kv_heads=kv_heads, reduction=config.reduction
        )
        return scores, n_queries

    capture = AttentionCapture(model, window, layers=full_layers, reducer=reducer) if scoring else None
    look_ids: list[int] = []
    text = ""
    with capture if capture is not None else _nullcontext():
        out = model(
            input_ids=torch.tensor([list(prompt_ids)], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        first_logits = out.logits[0, -1].float()
        started = time.perf_counter()
        fed = 0
        steps = decode_tokens(
            model,
            model_.tokenizer,
            cache,
            first_logits,
            prompt_len,
            max_new_tokens=n_lookahead,
            sampler=TokenSampler(0.0),
            eos_ids=eos_token_ids(model_),
            stop=stop,
        )
        for step in steps if n_lookahead > 0 else ():
            text += step.text
            if step.token_id is not None:
                look_ids.append(step.token_id)
            if step.finish_reason is None:
                fed += 1  # decode_tokens feeds every token it yields without a finish reason
        if len(look_ids) > fed:
            # The last lookahead token was sampled but not fed: feed it so its queries score the prompt too.
            model(
                input_ids=torch.tensor([[look_ids[-1]]], device=device),
                position_ids=torch.tensor([[prompt_len + fed]], device=device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
    kept_indices: dict[int, torch.Tensor] = {}
    if scoring:
        layer_scores = ((i, _combine_records(capture.records[i], config.reduction)) for i in full_layers)
        kept_indices = _select_by_layer(layer_scores, prompt_len=prompt_len, budget=budget, window=window, config=config)
    lookahead_seconds = time.perf_counter() - started
    prefill = _compressed_prefill(
        cache, first_logits, prompt_len, budget, kept_indices, len(look_ids), lookahead_seconds=lookahead_seconds
    )
    return prefill, text, look_ids


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


# ---------------------------------------------------------------------------------------------
# the draft's lookahead


@torch.no_grad()
def draft_answer(
    draft: LoadedModel, prompt_ids: Sequence[int], max_tokens: int, stop: Sequence[str] = ()
) -> tuple[str, list[int], str]:
    """The draft's greedy answer to its own rendering of the prompt: (text, token ids, finish reason)."""
    if max_tokens <= 0:
        return "", [], "length"
    device = draft.input_device
    cache = _new_cache(draft.model)
    out = draft.model(
        input_ids=torch.tensor([list(prompt_ids)], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1
    )
    text, ids, finish = "", [], "length"
    for step in decode_tokens(
        draft.model,
        draft.tokenizer,
        cache,
        out.logits[0, -1],
        len(prompt_ids),
        max_new_tokens=max_tokens,
        sampler=TokenSampler(0.0),
        eos_ids=eos_token_ids(draft),
        stop=stop,
    ):
        text += step.text
        if step.token_id is not None:
            ids.append(step.token_id)
        if step.finish_reason:
            finish = step.finish_reason
    return text, ids, finish


# ---------------------------------------------------------------------------------------------
# the public entry points


@dataclass
class _Plan:
    engine: DraftApproxEngine
    method: str
    config: SpecKVConfig
    prompt_budget: int | None
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    specpc_config: Any
    messages: list[dict[str, str]] | None
    text: str | None
    prompt_ids: list[int]
    notes: list[str]


def _resolve_config(config: SpecKVConfig | None, budget: int | None) -> SpecKVConfig:
    if config is not None and not isinstance(config, SpecKVConfig):
        raise ConfigError(f"config must be a SpecKVConfig, got {type(config).__name__}")
    base = config or SpecKVConfig()
    if budget is not None:
        base = base.replace(budget=budget)  # re-validates: a window larger than the budget raises here
    return base


def plan_generation(
    engine: DraftApproxEngine,
    prompt: Prompt,
    *,
    method: str = "speckv",
    budget: int | None = None,
    config: SpecKVConfig | None = None,
    prompt_budget: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Sequence[str] | None = None,
    seed: int | None = None,
    chat: bool | None = None,
    specpc_config: Any = None,
) -> _Plan:
    """Validate every argument and tokenise the prompt; raises before any generation starts."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    cfg = _resolve_config(config, budget)
    if prompt_budget is not None:
        if method != "speckv-pc":
            raise ConfigError("prompt_budget applies to method='speckv-pc' only")
        if isinstance(prompt_budget, bool) or not isinstance(prompt_budget, int) or prompt_budget < 1:
            raise ConfigError(f"prompt_budget must be an integer >= 1, got {prompt_budget!r}")
    if specpc_config is not None and method != "speckv-pc":
        raise ConfigError("specpc_config applies to method='speckv-pc' only")
    if method == "speckv-pc" and prompt_budget is None:
        raise ConfigError("method='speckv-pc' needs prompt_budget (draft tokens of the prompt SpecPC keeps)")
    if method == "streamingllm" and cfg.sink_tokens >= cfg.budget:
        raise ConfigError(f"sink_tokens ({cfg.sink_tokens}) must be smaller than the budget ({cfg.budget})")
    check_sampling(temperature, top_p, max_new_tokens)
    stops = check_stop(stop)
    messages, text = normalize_messages(prompt, chat)
    if method in _DRAFT_METHODS and not engine.has_draft:
        raise EngineUsageError(f"method={method!r} needs a draft model; use method='snapkv' for draft-free compression")
    target = engine.target
    ids = encode_prompt(target, messages, text)
    if not ids:
        raise ConfigError("the prompt encodes to no tokens")
    context = target.context_length
    notes: list[str] = []
    if len(ids) >= context:
        raise ContextLengthError(
            f"the prompt has {len(ids)} target tokens but {target.source.name!r} has a context of {context}; "
            "shorten it (or compress it first with SpecPC: engine.compress / method='speckv-pc')"
        )
    if len(ids) + max_new_tokens > context:
        notes.append(f"max_new_tokens cut from {max_new_tokens} to {context - len(ids)} to fit the context")
        max_new_tokens = context - len(ids)
    return _Plan(engine, method, cfg, prompt_budget, max_new_tokens, float(temperature), float(top_p), stops, seed,
                 specpc_config, messages, text, ids, notes)


def _specpc_cut(plan: _Plan, lookahead_text: str) -> tuple[list[dict[str, str]] | None, str | None, str]:
    """SpecPC cuts the context part of the prompt to ``prompt_budget`` tokens with the draft's answer."""
    engine = plan.engine
    if plan.messages is not None:
        # The last user message carries the long context (and usually the question at its end).
        idx = max(i for i, m in enumerate(plan.messages) if m["role"] == "user") if any(
            m["role"] == "user" for m in plan.messages) else len(plan.messages) - 1
        context = plan.messages[idx]["content"]
    else:
        idx, context = -1, plan.text
    result = engine.compress(context, budget=plan.prompt_budget, config=plan.specpc_config, lookahead_text=lookahead_text)
    note = f"SpecPC kept {result.compressed_tokens} of {result.original_tokens} draft tokens of the context"
    if plan.messages is not None:
        messages = [dict(m) for m in plan.messages]
        messages[idx]["content"] = result.text
        return messages, None, note
    return None, result.text, note


def stream(engine: DraftApproxEngine, prompt: Prompt, **kwargs: Any) -> Iterator[StreamChunk]:
    """Validate now, then return an iterator of text deltas; the last chunk carries the stats."""
    plan = plan_generation(engine, prompt, **kwargs)
    return _run(plan)


def generate(engine: DraftApproxEngine, prompt: Prompt, **kwargs: Any) -> GenerationResult:
    plan = plan_generation(engine, prompt, **kwargs)
    text, ids, finish, stats = "", [], "length", None
    for chunk in _run(plan):
        text += chunk.text
        if chunk.token_id is not None:
            ids.append(chunk.token_id)
        if chunk.stats is not None:
            stats, finish = chunk.stats, chunk.finish_reason or finish
    assert stats is not None
    return GenerationResult(text=text, token_ids=ids, finish_reason=finish, stats=stats)


def _run(plan: _Plan) -> Iterator[StreamChunk]:
    engine = plan.engine
    with engine.lock:
        started = time.perf_counter()
        target = engine.target
        cfg = plan.config
        prompt_ids = plan.prompt_ids
        notes = list(plan.notes)
        stats = GenerationStats(method=plan.method, prompt_tokens=len(prompt_ids), budget=cfg.budget)
        method = plan.method
        fell_back = method != "full" and cfg.budget >= len(prompt_ids)
        if fell_back:
            notes.append(f"budget {cfg.budget} >= prompt length {len(prompt_ids)}: nothing to drop, full KV used")
            method = "full"

        lookahead_ids: list[int] = []
        prefill: CompressedPrefill | None = None
        if method in _DRAFT_METHODS:
            draft = engine.draft
            t_draft = time.perf_counter()
            n_look = cfg.lookahead_tokens if cfg.lookahead_tokens is not None else plan.max_new_tokens
            draft_ids = encode_prompt(draft, plan.messages, plan.text)
            fits = len(draft_ids) + n_look <= draft.context_length
            if method == "speckv" and draft is target and draft_ids == prompt_ids and fits:
                # One model as its own draft: its prefill and lookahead serve as the target's prefill too.
                prefill, look_text, look_ids = self_draft_prefill(target, prompt_ids, n_look, config=cfg, stop=plan.stop)
                stats.draft_seconds = prefill.lookahead_seconds
                lookahead_ids = look_ids
                notes.append("self-draft: one prefill served the draft and the target")
            else:
                if not fits:
                    notes.append(
                        f"prompt ({len(draft_ids)} draft tokens) too long for the draft's context "
                        f"({draft.context_length}): no lookahead, SnapKV behaviour"
                    )
                    look_text, look_ids = "", []
                else:
                    look_text, look_ids, _ = draft_answer(draft, draft_ids, n_look, plan.stop)
                if method == "speckv-pc":
                    if plan.prompt_budget is not None and plan.prompt_budget < len(prompt_ids):
                        messages, text, pc_note = _specpc_cut(plan, look_text)
                        notes.append(pc_note)
                        prompt_ids = encode_prompt(target, messages, text)
                        stats.compressed_prompt_tokens = len(prompt_ids)
                    else:
                        notes.append("prompt_budget >= prompt length: SpecPC skipped")
                        stats.compressed_prompt_tokens = len(prompt_ids)
                stats.draft_seconds = time.perf_counter() - t_draft
                if engine.same_tokenizer():
                    lookahead_ids = list(look_ids)  # same vocabulary: no re-tokenisation drift
                elif look_text:
                    lookahead_ids = list(target.tokenizer(look_text, add_special_tokens=False)["input_ids"])
                room = target.context_length - len(prompt_ids)
                lookahead_ids = lookahead_ids[:room]
            if not lookahead_ids:
                notes.append("the draft's answer is empty (EOS at once): SnapKV behaviour")
            stats.lookahead_text = look_text
            stats.lookahead_tokens = len(lookahead_ids)

        if prefill is None:
            prefill_method = "speckv" if method in _DRAFT_METHODS else method
            if prefill_method != "full" and cfg.budget >= len(prompt_ids):
                notes.append(f"budget {cfg.budget} >= the cut prompt's {len(prompt_ids)} tokens: full KV of the cut prompt")
            prefill = prefill_and_compress(target, prompt_ids, lookahead_ids, method=prefill_method, config=cfg)
        stats.kv_entries_full = stats.prompt_tokens
        stats.kv_entries_kept = prefill.kept_entries
        stats.kv_bytes_full = prefill.kv_bytes_full
        if stats.compressed_prompt_tokens is not None and stats.prompt_tokens:
            # The full reference is the uncut prompt: scale the per-entry bytes of full-attention layers.
            stats.kv_bytes_full = _full_bytes_uncut(target, prefill, stats.prompt_tokens)
        stats.kv_bytes_kept = prefill.kv_bytes_kept
        stats.fell_back_to_full = fell_back
        first_token_at = time.perf_counter()
        stats.prefill_seconds = first_token_at - started

        finish = "length"
        completion = 0
        steps: Iterator[DecodeStep] = decode_tokens(
            target.model,
            target.tokenizer,
            prefill.cache,
            prefill.first_logits,
            prefill.prompt_len,
            max_new_tokens=plan.max_new_tokens,
            sampler=TokenSampler(plan.temperature, plan.top_p, plan.seed),
            eos_ids=eos_token_ids(target),
            stop=plan.stop,
        )
        for step in steps:
            if step.token_id is not None:
                completion += 1
            if step.finish_reason is None:
                yield StreamChunk(text=step.text, token_id=step.token_id)
                continue
            finish = step.finish_reason
            ended = time.perf_counter()
            stats.completion_tokens = completion
            stats.decode_seconds = ended - first_token_at
            stats.total_seconds = ended - started
            if plan.stop and finish != "stop":
                notes.append("no stop sequence appeared")
            stats.note = "; ".join(notes)
            yield StreamChunk(text=step.text, token_id=step.token_id, stats=stats, finish_reason=finish)
        del prefill


def _full_bytes_uncut(target: LoadedModel, prefill: CompressedPrefill, prompt_tokens: int) -> int:
    total = 0
    for layer in prefill.cache.layers:
        if layer.keys is None:
            continue
        per_entry = layer.keys.shape[0] * layer.keys.shape[1] * layer.keys.shape[-1] * layer.keys.element_size() * 2
        entries = min(prompt_tokens, layer.sliding_window - 1) if _is_sliding(layer) else prompt_tokens
        total += entries * per_entry
    return total
