"""What a SpecKV request carries in vLLM's ``vllm_xargs`` (``SamplingParams.extra_args``), written and read.

No vLLM here: the client builds the arguments with :func:`speckv_xargs`, the server's scheduler and model
runner read them with :func:`read_speckv_args`. Keys:

* ``speckv_budget`` (int): prompt KV entries kept per layer and KV head.
* ``speckv_answer_ids`` (list of int): the draft's answer in the *target's* token ids (may be empty: then the
  window's queries score the keys, SnapKV's rule, as in the package's engine).
* ``speckv_config`` (str, optional): JSON of other :class:`~draftapprox_integrations.engine.config.SpecKVConfig`
  fields (window_size, keep_last, kernel_size, pooling, reduction, score_window). Defaults: the engine's.
* ``speckv_prompt_len`` (int): written by the server's scheduler when it appends the answer to the prompt,
  so the model runner knows where the prompt ends. A client never sends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..engine.config import SpecKVConfig
from ..engine.errors import ConfigError

BUDGET, ANSWER, CONFIG, PROMPT_LEN = "speckv_budget", "speckv_answer_ids", "speckv_config", "speckv_prompt_len"
# Per-layer budgets (allocation="global" or "profile", coverage) would give layers different cache lengths,
# which one vLLM block table per request cannot hold; the draft's lookahead length is the client's business.
_SERVER_FIELDS = ("window_size", "keep_last", "kernel_size", "pooling", "reduction", "score_window")


@dataclass(frozen=True)
class SpecKVArgs:
    config: SpecKVConfig  # budget and selection settings
    answer_ids: tuple[int, ...]


def speckv_xargs(answer_ids: list[int], budget: int, config: SpecKVConfig | None = None) -> dict[str, Any]:
    """The ``vllm_xargs`` of one SpecKV request (``extra_body={"vllm_xargs": ...}`` from an OpenAI client)."""
    config = (config or SpecKVConfig()).replace(budget=budget)
    _check_server_config(config)
    args: dict[str, Any] = {BUDGET: int(budget), ANSWER: [int(t) for t in answer_ids]}
    changed = {f: getattr(config, f) for f in _SERVER_FIELDS if getattr(config, f) != getattr(SpecKVConfig(), f)}
    if changed:
        args[CONFIG] = json.dumps(changed)
    return args


def read_speckv_args(extra_args: dict[str, Any] | None) -> SpecKVArgs | None:
    """The SpecKV arguments of a request, or None for a plain request. Raises ConfigError on bad values."""
    if not extra_args or BUDGET not in extra_args:
        return None
    answer = extra_args.get(ANSWER, [])
    if not isinstance(answer, list) or not all(isinstance(t, int) and t >= 0 for t in answer):
        raise ConfigError(f"{ANSWER} must be a list of token ids, got {answer!r}")
    overrides = json.loads(extra_args[CONFIG]) if extra_args.get(CONFIG) else {}
    unknown = set(overrides) - set(_SERVER_FIELDS)
    if unknown:
        raise ConfigError(f"{CONFIG}: fields the server cannot apply: {sorted(unknown)}")
    # The server keeps the same count in every layer: the config says so (the client's "auto" means that here).
    config = SpecKVConfig(budget=int(extra_args[BUDGET]), allocation="uniform", **overrides)
    return SpecKVArgs(config=config, answer_ids=tuple(answer))


def _check_server_config(config: SpecKVConfig) -> None:
    # "auto" is the uniform split on the server: a layer profile needs per-layer lengths (see above).
    if config.allocation not in ("uniform", "auto") or config.coverage is not None:
        raise ConfigError("the vLLM plugin keeps the same budget in every layer: allocation must be 'uniform' "
                          "(or 'auto', which is uniform there) and coverage None (one block table per request "
                          "holds one length for all layers)")
