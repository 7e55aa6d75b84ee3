"""The arithmetic of a compacted request in vLLM's paged cache (pure; unit-tested without vLLM).

After SpecKV's prefill a request holds ``kept = min(budget, prompt_len)`` entries per layer and KV head, in
its first ``ceil(kept / block_size)`` blocks; the draft's answer and the rest of the prompt are gone. vLLM
then counts the request as ``kept`` tokens long (its slot for the next token is index ``kept``), while the
rotary position of that token must stay ``prompt_len``: the model runner adds ``prompt_len - kept``.
"""

from __future__ import annotations


def kept_entries(budget: int, prompt_len: int) -> int:
    return min(budget, prompt_len)


def blocks_kept(kept: int, block_size: int) -> int:
    """Blocks that hold ``kept`` entries: the request's first ones; every later block is freed."""
    return -(-kept // block_size)


def position_offset(prompt_len: int, kept: int) -> int:
    """What the model runner adds to vLLM's position (the compacted length + t) to get the true one."""
    return prompt_len - kept


def first_token_row(query_start: int, num_computed: int, prompt_len: int) -> int:
    """The flattened-batch row whose logits give the first answer token: the last *prompt* token, not the
    last token of prompt + draft answer that vLLM would sample from."""
    return query_start + prompt_len - 1 - num_computed


def answer_room(prompt_len: int, answer_len: int, max_model_len: int) -> int:
    """Answer tokens that fit: prompt + answer + the first sampled token must stay below max_model_len (vLLM
    stops a request whose token count reaches it)."""
    return max(0, min(answer_len, max_model_len - prompt_len - 2))


def stand_in_prompt(prompt_ids: list[int], kept: int) -> list[int]:
    """Token ids vLLM's bookkeeping holds for the compacted prompt. Each KV head keeps its own positions, so
    no single token list describes the cache; the ids are never fed again (the cache is), only counted."""
    return list(prompt_ids[len(prompt_ids) - kept:])
