"""Engine-core side of the plugin: the answer joins the prompt, and the compacted request's blocks go back.

Patched onto vLLM 0.32's V1 ``Scheduler``; plain requests pass untouched. For a request whose
``extra_args`` carry SpecKV arguments (:mod:`.xargs`):

* ``add_request``: the draft's answer (target token ids) is appended to the prompt, so vLLM prefills
  prompt + answer in one step (chunked prefill is off, see :func:`speckv_supported`), and the true prompt
  length is written into ``extra_args`` for the model runner.
* ``update_from_output`` of that step: the runner has compacted each layer's kept entries into the
  request's first positions; here the request becomes ``kept`` tokens long (+ its first answer token) and
  every block past ``ceil(kept / block_size)`` returns to the pool, so the scheduler admits the next
  requests against the compacted size at once.
* ``_preempt_request`` of a compacted request: its real prompt comes back and it is recomputed plain (the
  compacted entries are gone with its blocks; a second SpecKV prefill would need the answer's logits row
  again, which a resumed request no longer has).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import layout
from ..engine.errors import ConfigError
from .patching import wrap_method
from .xargs import PROMPT_LEN, read_speckv_args

# A child of vLLM's own logger, so its lines appear in the server log with vLLM's format and level.
logger = logging.getLogger(f"vllm.plugins.draftapprox_speckv.{__name__.rsplit('.', 1)[-1]}")


def speckv_supported(vllm_config) -> str | None:
    """None when SpecKV can run under this configuration, else why not (the request then runs plain)."""
    if vllm_config.device_config.device_type != "cpu":
        return "only vLLM's CPU attention backend is hooked so far (docs/vllm-plugin.md)"
    if vllm_config.cache_config.enable_prefix_caching:
        return "prefix caching is on (pass --no-enable-prefix-caching): a compacted block matches no hash"
    if vllm_config.scheduler_config.enable_chunked_prefill:
        return "chunked prefill is on (pass --no-enable-chunked-prefill): the answer must be scored in one step"
    if vllm_config.speculative_config is not None:
        return "speculative decoding is on"
    return None


@dataclass
class Tracked:
    prompt_ids: list[int]  # the real prompt
    kept: int
    compacted: bool = False


def install() -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    if getattr(Scheduler, "_speckv_patched", False):
        return
    Scheduler._speckv_patched = True
    for name, patch in (("add_request", _add_request), ("update_from_output", _update_from_output),
                        ("_preempt_request", _preempt_request)):
        wrap_method(Scheduler, name, patch)


def _tracked(scheduler) -> dict[str, Tracked]:
    if not hasattr(scheduler, "_speckv"):
        scheduler._speckv = {}
        scheduler._speckv_refusal = speckv_supported(scheduler.vllm_config)
    return scheduler._speckv


def _add_request(original, scheduler, request) -> None:
    tracked = _tracked(scheduler)
    params = request.sampling_params
    try:
        args = read_speckv_args(params.extra_args if params is not None else None)
    except (ConfigError, ValueError) as exc:
        logger.error("SpecKV request %s served plain: bad arguments: %s", request.request_id, exc)
        args = None
    if args is not None and request.request_id not in scheduler.requests:
        if scheduler._speckv_refusal:
            logger.error("SpecKV request %s served plain: %s", request.request_id, scheduler._speckv_refusal)
            params.extra_args.pop(PROMPT_LEN, None)
        else:
            _append_answer(scheduler, request, args, tracked)
    return original(scheduler, request)


def _append_answer(scheduler, request, args, tracked: dict[str, Tracked]) -> None:
    prompt = list(request.prompt_token_ids)
    room = layout.answer_room(len(prompt), len(args.answer_ids), scheduler.max_model_len)
    answer = list(args.answer_ids[:room])
    if room < len(args.answer_ids):
        logger.warning("SpecKV request %s: answer cut to %d tokens to fit max_model_len", request.request_id, room)
    request.prompt_token_ids = prompt + answer
    request._all_token_ids[:] = prompt + answer  # in place: request.all_token_ids is a view of this list
    request.num_prompt_tokens = len(prompt) + len(answer)
    request.sampling_params.extra_args[PROMPT_LEN] = len(prompt)
    tracked[request.request_id] = Tracked(prompt, layout.kept_entries(args.config.budget, len(prompt)))


def _update_from_output(original, scheduler, scheduler_output, model_runner_output):
    outputs = original(scheduler, scheduler_output, model_runner_output)
    tracked = _tracked(scheduler)
    for req_id in list(tracked):
        request = scheduler.requests.get(req_id)
        if request is None or request.is_finished():
            del tracked[req_id]
            continue
        entry = tracked[req_id]
        if not entry.compacted and req_id in scheduler_output.num_scheduled_tokens \
                and request.num_computed_tokens >= request.num_prompt_tokens:
            _compact(scheduler, request, entry)
    return outputs


def _compact(scheduler, request, entry: Tracked) -> None:
    """The request as the runner left it this step: ``kept`` tokens + its output, its first blocks only."""
    kept, outputs = entry.kept, list(request.output_token_ids)
    prefilled, freed_count = request.num_prompt_tokens, 0
    stand_in = layout.stand_in_prompt(entry.prompt_ids, kept)
    request.prompt_token_ids = stand_in
    request._all_token_ids[:] = stand_in + outputs
    request.num_prompt_tokens = kept
    request.num_computed_tokens = kept + len(outputs) - 1  # the last output token is fed next
    for manager in scheduler.kv_cache_manager.coordinator.single_type_managers:
        blocks = manager.req_to_blocks.get(request.request_id)
        if not blocks:
            continue
        keep = layout.blocks_kept(kept, manager.block_size)
        freed = blocks[keep:]
        del blocks[keep:]
        manager.block_pool.free_blocks(reversed(freed))
        freed_count += len(freed)
    entry.compacted = True
    logger.info("SpecKV %s: prefilled %d tokens (prompt %d + answer), kept %d entries per layer and KV head; "
                "%d blocks freed", request.request_id, prefilled, len(entry.prompt_ids), kept, freed_count)


def _preempt_request(original, scheduler, request, *args, **kwargs):
    result = original(scheduler, request, *args, **kwargs)
    entry = _tracked(scheduler).pop(request.request_id, None)
    if entry is not None and entry.compacted:
        request.prompt_token_ids = list(entry.prompt_ids)
        request._all_token_ids[:] = entry.prompt_ids + list(request.output_token_ids)
        request.num_prompt_tokens = len(entry.prompt_ids)
        logger.warning("SpecKV request %s preempted: recomputed with its full prompt", request.request_id)
    return result
