"""SpecKV when the draft *is* the target: one prefill serves both (the capture -> select -> cut of
``prefill``, on the self-draft route).

Memory: the model's own lookahead, written after the prompt, must attend to the whole prompt in every layer,
so nothing can be cut before it is written: the peak is the full KV of prompt + lookahead, as for the draft of
any two-model pair (while the lookahead decodes, the prompt's KV lives in its decode slot and is handed back
from there; when other rows share that batch, it is copied back, so for that moment it is held twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from ..config import SpecKVConfig
from ..decoding import Lookahead
from ..prompts import eos_token_ids
from ..steps import DecodeRequest, Steps
from ..timing import synced_clock
from .cache import CompressedPrefill, cut_prefill, recording_cache
from .prefill import key_capture, kept_of_layers, kept_tail


def self_draft_steps(
    model_,
    prompt_ids: Sequence[int],
    n_lookahead: int,
    *,
    config: SpecKVConfig,
    stop: Sequence[str] = (),
) -> Steps[tuple[CompressedPrefill, str, list[int]]]:
    """SpecKV when the draft *is* the target: one prefill serves both.

    The model prefills the prompt once (the window's queries captured), writes its greedy lookahead from
    there (a decode request: batched with other rows, nothing captured), then one forward over the lookahead
    on the prompt's cache scores the keys with the lookahead's queries. Causal attention makes that forward's
    scores those of the target's prefill of prompt + lookahead, and those of capturing each lookahead token as
    it was decoded (one forward instead of one capture per token). The lookahead's entries are then dropped
    and the prompt's compressed. Returns the prefill, the lookahead text and ids.
    """
    model, device = model_.model, model_.input_device
    prompt_len = len(prompt_ids)
    budget = min(config.budget, prompt_len)
    window = min(config.window_size, prompt_len)
    cache, full_layers = recording_cache(model)
    scoring = budget < prompt_len
    tail = kept_tail(config, window, n_lookahead > 0)  # a lookahead that ends at once falls back to the window
    records: dict[int, list] = {}
    with torch.no_grad(), _scoring(model, full_layers, scoring, prompt_len, tail, window, config, records):
        out = model(input_ids=torch.tensor([list(prompt_ids)], device=device), cache=cache, use_cache=True, logits_to_keep=1)
    first_logits = out.logits[0, -1].float()
    del out
    yield
    started = synced_clock(device)
    look = Lookahead("", [], "length")
    if n_lookahead > 0:
        decoded = yield DecodeRequest(
            model, model_.tokenizer, cache, first_logits, prompt_len, n_lookahead, eos_token_ids(model_), tuple(stop),
            keep_prompt=prompt_len,
        )
        look = decoded.lookahead
    if look.token_ids:
        ids = torch.tensor([look.token_ids], device=device)
        positions = torch.arange(prompt_len, prompt_len + len(look.token_ids), device=device)[None]
        with torch.no_grad(), _scoring(model, full_layers, scoring, prompt_len, tail, len(look.token_ids), config, records):
            model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        yield
    kept: dict[int, torch.Tensor] = {}
    if scoring:
        # records[i][0] is the prompt's forward (the window's queries), then the lookahead's forward.
        skip = 0 if config.score_window or not look.token_ids else 1
        kept = kept_of_layers(records, model, full_layers, prompt_len=prompt_len, budget=budget, config=config, skip=skip,
                              tail=kept_tail(config, window, bool(look.token_ids)), lookahead=bool(look.token_ids))
    prefill = cut_prefill(
        cache, first_logits, prompt_len, budget, kept, len(look.token_ids),
        lookahead_seconds=synced_clock(device) - started,
    )
    return prefill, look.text, look.token_ids


@contextmanager
def _scoring(model, layers, scoring: bool, prompt_len: int, tail: int, queries: int, config: SpecKVConfig, records: dict):
    """A key capture of ``queries`` queries whose records go into ``records`` (nothing when not scoring)."""
    if not scoring:
        yield
        return
    capture = key_capture(model, layers, prompt_len=prompt_len, tail=tail, queries=queries, config=config)
    with capture:
        yield
    for i, found in capture.records.items():
        records.setdefault(i, []).extend(found)
