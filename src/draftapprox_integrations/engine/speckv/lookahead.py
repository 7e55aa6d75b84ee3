"""The draft's side of SpecKV: its approximate answer, that answer in target tokens, and the SpecKV-PC cut."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import specpc
from ..decoding import Lookahead, new_cache
from ..prompts import Messages, eos_token_ids, same_vocabulary
from ..steps import DecodeRequest, Steps
from .plan import GenerationPlan


def draft_answer(draft, prompt_ids: Sequence[int], max_tokens: int, stop: Sequence[str] = ()) -> Steps[Lookahead]:
    """The draft's greedy answer to its own rendering of the prompt (text, token ids, finish reason): one
    prefill, then the answer decoded as a row beside the others (a decode request)."""
    if max_tokens <= 0:
        return Lookahead("", [], "length")
    cache = new_cache(draft.model)
    with torch.no_grad():
        out = draft.model(
            input_ids=torch.tensor([list(prompt_ids)], device=draft.input_device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    request = DecodeRequest(
        draft.model, draft.tokenizer, cache, out.logits[0, -1], len(prompt_ids), max_tokens, eos_token_ids(draft),
        tuple(stop),
    )
    del cache, out  # the request owns the cache now: a batch copies it, and nothing else holds it
    yield
    decoded = yield request
    return decoded.lookahead


def lookahead_for_target(draft, target, text: str, draft_ids: list[int]) -> list[int]:
    """The draft's answer as target token ids: the same ids when the vocabularies agree (no re-tokenisation
    drift), else its text re-tokenised for the target."""
    if same_vocabulary(draft, target):
        return list(draft_ids)
    if not text:
        return []
    return list(target.tokenizer(text, add_special_tokens=False)["input_ids"])


def specpc_cut(plan: GenerationPlan, draft, lookahead_text: str | None) -> Steps[tuple[Messages | None, str | None, str]]:
    """SpecPC cuts the context part of the prompt to ``prompt_budget`` draft tokens with the draft's answer
    (None: SpecPC lets the draft write its own lookahead for each chunk it scores).

    For a list of messages the last user message (the long context, usually with the question at its end)
    is the part that is cut. Returns the new (messages, text) and a note.
    """
    if plan.messages is not None:
        users = [i for i, m in enumerate(plan.messages) if m["role"] == "user"]
        idx = users[-1] if users else len(plan.messages) - 1
        context = plan.messages[idx]["content"]
    else:
        idx, context = -1, plan.text
    result = yield from specpc.compress_steps(
        draft, context, budget=plan.prompt_budget, config=plan.specpc_config, lookahead_text=lookahead_text
    )
    note = f"SpecPC kept {result.compressed_tokens} of {result.original_tokens} draft tokens of the context"
    if result.chunks > 1:
        note += f" (scored in {result.chunks} chunks)"
    if plan.messages is not None:
        messages = [dict(m) for m in plan.messages]
        messages[idx]["content"] = result.text
        return messages, None, note
    return None, result.text, note
