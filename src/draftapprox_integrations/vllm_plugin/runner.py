"""Worker side of the plugin: SpecKV's scoring prefill, the per-head compaction and true positions.

Patched onto vLLM 0.32's V1 model runner (``GPUModelRunner``, which ``CPUModelRunner`` extends) and the CPU
attention backend; every patch passes plain requests through untouched. One step of a SpecKV request:

1. ``_prepare_inputs``: the request's prefill (its prompt + the draft's answer, appended by the scheduler)
   is scheduled whole; the row whose logits are sampled becomes the last *prompt* token's, so the first
   answer token is the target's own, as in the engine. A compacted request's decode positions get
   ``prompt_len - kept`` added (vLLM counts it ``kept`` tokens long; RoPE needs the true position).
2. Attention, per layer, after vLLM's kernel has run: the answer's queries score the prompt keys
   (:mod:`.scoring`), and each KV head's kept entries are written into the slots of the request's first
   ``kept`` positions with the backend's own cache write, so no block layout is assumed here.
3. ``sample_tokens``: the runner's bookkeeping is cut to ``kept`` tokens and the request's first blocks; the
   scheduler (:mod:`.scheduler`) frees the rest at the same step.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch

from . import layout
from .patching import wrap_method
from .xargs import PROMPT_LEN, read_speckv_args

# A child of vLLM's own logger, so its lines appear in the server log with vLLM's format and level.
logger = logging.getLogger(f"vllm.plugins.draftapprox_speckv.{__name__.rsplit('.', 1)[-1]}")
_LAYER = re.compile(r"layers\.(\d+)\.")


@dataclass
class Prefill:
    """A SpecKV request whose scoring prefill runs in this step."""

    req_id: str
    start: int  # its first row in the flattened batch
    prompt_len: int
    n_tokens: int  # prompt + answer
    kept: int
    config: object
    layers_done: set = field(default_factory=set)


# The prefills of the step being run, set by _prepare_inputs, read by the attention hook. One worker process
# runs one model runner, and a step's forward runs in the thread that prepared it.
_STEP: dict[str, Prefill] = {}


def install() -> None:
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner, "_speckv_patched", False):
        return
    GPUModelRunner._speckv_patched = True
    wrap_method(GPUModelRunner, "_update_states", _update_states)
    wrap_method(GPUModelRunner, "_prepare_inputs", _prepare_inputs)
    wrap_method(GPUModelRunner, "sample_tokens", _sample_tokens)
    wrap_method(CPUAttentionBackendImpl, "forward", _attention_forward)


def _state(runner) -> dict:
    """Per runner: req_id -> (true prompt length, original prompt ids) of compacted requests, and the ids of
    requests served plain after a preemption."""
    if not hasattr(runner, "_speckv"):
        from .scheduler import speckv_supported

        runner._speckv = {"compacted": {}, "plain": set(), "supported": speckv_supported(runner.vllm_config) is None}
    return runner._speckv


def _update_states(original, runner, scheduler_output):
    state = _state(runner)
    for req_id in scheduler_output.finished_req_ids:
        state["compacted"].pop(req_id, None)
        state["plain"].discard(req_id)
    # A compacted request that was preempted is recomputed from its real prompt, without SpecKV (the
    # scheduler restored the same on its side).
    for req_id in scheduler_output.scheduled_cached_reqs.resumed_req_ids:
        if req_id in state["compacted"]:
            _, prompt_ids = state["compacted"].pop(req_id)
            req = runner.requests[req_id]
            req.prompt_token_ids, req.num_prompt_tokens = list(prompt_ids), len(prompt_ids)
            state["plain"].add(req_id)
    return original(runner, scheduler_output)


def _prepare_inputs(original, runner, scheduler_output, num_scheduled_tokens):
    logits_indices, spec_metadata, max_sampled = original(runner, scheduler_output, num_scheduled_tokens)
    _STEP.clear()
    state = _state(runner)
    if not state["supported"] or spec_metadata is not None:
        return logits_indices, spec_metadata, max_sampled
    batch = runner.input_batch
    starts = runner.query_start_loc.cpu[: batch.num_reqs + 1].tolist()
    changed = False
    for row, req_id in enumerate(batch.req_ids):
        if req_id in state["compacted"]:
            prompt_len, _ = state["compacted"][req_id]
            offset = layout.position_offset(prompt_len, runner.requests[req_id].num_prompt_tokens)
            runner.positions[starts[row] : starts[row + 1]] += offset
            continue
        prefill = _scoring_prefill(runner, req_id, row, starts, state)
        if prefill is not None:
            if not changed:
                logits_indices, changed = logits_indices.clone(), True
            logits_indices[row] = layout.first_token_row(starts[row], 0, prefill.prompt_len)
            _STEP[req_id] = prefill
    return logits_indices, spec_metadata, max_sampled


def _scoring_prefill(runner, req_id: str, row: int, starts: list[int], state: dict) -> Prefill | None:
    """The request's SpecKV prefill if this step runs it (whole: the scheduler never chunks it)."""
    if req_id in state["plain"]:
        return None
    req = runner.requests[req_id]
    extra = req.sampling_params.extra_args if req.sampling_params is not None else None
    if not extra or PROMPT_LEN not in extra:
        return None
    n_tokens = starts[row + 1] - starts[row]
    if runner.input_batch.num_computed_tokens_cpu[row] != 0 or n_tokens != req.num_prompt_tokens:
        raise RuntimeError(f"SpecKV request {req_id}: its prefill was split; the plugin needs it whole")
    args = read_speckv_args(extra)
    prompt_len = int(extra[PROMPT_LEN])
    kept = layout.kept_entries(args.config.budget, prompt_len)
    return Prefill(req_id, starts[row], prompt_len, n_tokens, kept, args.config)


def _attention_forward(original, impl, layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs):
    result = original(impl, layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs)
    if _STEP and attn_metadata is not None and key is not None:
        from .scoring import gather_kept, kept_positions

        match = _LAYER.search(getattr(layer, "layer_name", ""))
        for prefill in _STEP.values():
            rows = slice(prefill.start, prefill.start + prefill.n_tokens)
            n, heads, kv_heads = prefill.n_tokens, impl.num_heads, impl.num_kv_heads
            q, k, v = (query[rows].view(n, heads, -1), key[rows].view(n, kv_heads, -1), value[rows].view(n, kv_heads, -1))
            kept = kept_positions(q, k, scale=impl.scale, prompt_len=prefill.prompt_len, config=prefill.config)
            # The slots of the request's first `kept` positions, as vLLM mapped them for this very step.
            slots = attn_metadata.slot_mapping[prefill.start : prefill.start + prefill.kept]
            impl.do_kv_cache_update(layer, gather_kept(k, kept), gather_kept(v, kept), kv_cache, slots)
            prefill.layers_done.add(int(match.group(1)) if match else id(layer))
    return result


def _sample_tokens(original, runner, *args, **kwargs):
    out = original(runner, *args, **kwargs)
    state = _state(runner)
    for req_id, prefill in list(_STEP.items()):
        _compact_bookkeeping(runner, prefill, state)
    _STEP.clear()
    return out


def _compact_bookkeeping(runner, prefill: Prefill, state: dict) -> None:
    """The runner's view of the request after its cache was compacted: ``kept`` tokens (stand-ins, never
    fed again) + the first answer token, its first blocks; the true prompt length is kept for positions."""
    req_id, kept = prefill.req_id, prefill.kept
    req, batch = runner.requests[req_id], runner.input_batch
    row = batch.req_id_to_index[req_id]
    prompt_ids = list(req.prompt_token_ids[: prefill.prompt_len])
    stand_in = layout.stand_in_prompt(prompt_ids, kept)
    req.prompt_token_ids, req.num_prompt_tokens = stand_in, kept
    batch.num_prompt_tokens[row] = kept
    batch.token_ids_cpu[row, :kept] = stand_in
    n_out = len(req.output_token_ids)
    batch.token_ids_cpu[row, kept : kept + n_out] = req.output_token_ids
    batch.num_tokens_no_spec[row] = kept + n_out
    batch.num_computed_tokens_cpu[row] = kept
    block_tables = batch.block_table.block_tables
    for group, table in enumerate(block_tables):
        keep = layout.blocks_kept(kept, table.block_size)
        table.num_blocks_per_row[row] = min(int(table.num_blocks_per_row[row]), keep)
        del req.block_ids[group][keep:]
    state["compacted"][req_id] = (prefill.prompt_len, prompt_ids)
    logger.debug("SpecKV %s: prompt %d -> %d entries per layer and head", req_id, prefill.prompt_len, kept)
