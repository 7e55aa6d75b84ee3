"""A prompt -> token ids for one model: messages or text, its chat template or a plain transcript, EOS ids.

Both methods read prompts through here, so the draft and the target render the same messages the same way
(each with its own template), and "does this token end the answer" has one answer per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import tool_prompts
from .errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from .loading import LoadedModel

Prompt = str | Sequence[dict[str, str]]
Messages = list[dict[str, Any]]


# Marks the one user message made from a plain string under ``chat=None``: a model with a chat template renders
# it with the template, a model without one reads the string as it was given (not a "User: ..." transcript).
# A key of the message dict, so it survives the copies SpecKV-PC makes when it cuts the message's content.
FROM_TEXT = "draftapprox_from_text"


def normalize_messages(prompt: Prompt, chat: bool | None) -> tuple[Messages | None, str | None]:
    """(messages, None) for a chat prompt, (None, text) for a plain one: the one home of the ``chat`` rule.

    A string: ``chat=None`` (the default) is one user message that each model renders with its own chat
    template when it has one and reads as plain text when it has none (a base model); ``chat=True`` is one
    user message always (a transcript for a model without a template); ``chat=False`` is plain text always.
    A list of messages: the chat template (``None``/``True``), or a plain transcript (``chat=False``).
    Raises ConfigError on empty input and InvalidInputError on text that is not valid Unicode.
    """
    if chat is not None and not isinstance(chat, bool):
        raise ConfigError(f"chat must be True, False or None, got {chat!r}")
    if isinstance(prompt, str):
        check_text(prompt, "the prompt")
        if not prompt.strip():
            raise ConfigError("the prompt is empty: pass some text (or a non-empty list of messages)")
        if chat is None:
            return [{"role": "user", "content": prompt, FROM_TEXT: True}], None
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
            check_text(m["role"], f"the role of message {len(messages) + 1}")
            check_text(m["content"], f"message {len(messages) + 1}")
            messages.append(_message(m, len(messages) + 1))
        if not any(m["content"].strip() for m in messages):
            raise ConfigError("every message of the prompt is empty")
        if chat is False:
            return None, transcript(messages)
        return messages, None
    raise ConfigError(f"prompt must be a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}")


def _message(m: dict[str, Any], n: int) -> dict[str, Any]:
    """A message's role and content, and what a tool conversation adds: an assistant's earlier ``tool_calls``
    ([{"name", "arguments", "id"?}]), a tool result's ``tool_call_id``."""
    out = {"role": m["role"], "content": m["content"]}
    if m.get("tool_calls"):
        out["tool_calls"] = tool_prompts.check_tool_calls(m["tool_calls"], f"message {n}")
    for key in ("tool_call_id", "name"):  # a tool result: the call it answers, the tool's name
        if m.get(key) is not None:
            out[key] = str(m[key])
    return out


def with_tools(messages: Messages | None, tools, choice: str) -> Messages:
    """The messages with ``tools`` (and the tool choice) to render into the prompt (``engine.tool_prompts``)."""
    if messages is None:
        raise ConfigError("tools need a chat prompt (messages, or a string with chat=None/True); chat=False sends the "
                          "text as written, with no place for them")
    first = {**messages[0], tool_prompts.TOOLS_KEY: {"tools": [dict(t) for t in tools], "choice": choice}}
    return [first, *messages[1:]]


def check_text(text: str, what: str) -> None:
    """Raise InvalidInputError unless ``text`` is valid Unicode: no lone surrogate (U+D800..U+DFFF), which no
    tokenizer can encode (bytes that are not UTF-8 arrive as such when read with ``surrogateescape``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid Unicode text: it holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character "
            f"{exc.start}, e.g. from bytes that are not UTF-8; decode the input as UTF-8 and pass real text"
        ) from None


def is_plain_text(messages: Sequence[dict]) -> bool:
    """True for the one user message :func:`normalize_messages` made from a plain string under ``chat=None``."""
    return len(messages) == 1 and bool(messages[0].get(FROM_TEXT))


def transcript(messages: Sequence[dict[str, str]]) -> str:
    """A plain "Role: content" transcript ending "Assistant:", for base models without a chat template."""
    lines = [f"{m['role'].strip().capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def encode_prompt(loaded: LoadedModel, messages: Messages | None, text: str | None) -> list[int]:
    """Token ids of the prompt for one model: its chat template when it has one; else the text of a plain-string
    prompt as given, or a transcript of real messages."""
    tok = loaded.tokenizer
    if messages is not None and loaded.has_chat_template:
        rendered = tool_prompts.render(tok, messages)
        # Templates write their own BOS where the model wants one.
        return list(tok(rendered, add_special_tokens=False)["input_ids"])
    if messages is not None:
        plain = tool_prompts.transcript_messages(messages)
        if is_plain_text(messages):  # a base model reads the string as given, after the tools (if any)
            text = "\n\n".join(m["content"] for m in plain)
        else:
            text = transcript(plain)
    return list(tok(text, add_special_tokens=True)["input_ids"])


def eos_token_ids(loaded: LoadedModel) -> set[int]:
    """Every token id that ends generation for this model: tokenizer EOS plus the generation config's list."""
    ids: set[int] = set()
    candidates = [getattr(loaded.tokenizer, "eos_token_id", None)]
    for cfg in (getattr(loaded.model, "generation_config", None), loaded.model.config):
        if cfg is not None:
            candidates.append(getattr(cfg, "eos_token_id", None))
    for value in candidates:
        if value is None:
            continue
        if isinstance(value, int):
            ids.add(value)
        else:
            ids.update(int(v) for v in value)
    return ids


def same_vocabulary(a: LoadedModel, b: LoadedModel) -> bool:
    """True when two models share a vocabulary, so token ids can pass between them unchanged."""
    ta, tb = a.tokenizer, b.tokenizer
    return ta is tb or (len(ta) == len(tb) and ta.get_vocab() == tb.get_vocab())
