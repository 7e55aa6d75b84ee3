"""Tools, tool calls and tool results in a prompt, rendered for one model.

A chat template that renders tools (it prints a tool's name when given ``tools=``) gets them that way, and the
assistant's earlier calls as ``tool_calls`` when it renders those too. Any other model reads the tools in a
system message of this package's wording (merged into the conversation's own system message when it has one),
and its earlier calls as the JSON it writes under a ``ToolCalls`` constraint:
``{"name": "<tool>", "arguments": {...}}``. Tool results are messages of role ``tool``; a template that refuses
that role reads them as user messages that say they are a tool's result. Without native tool support a result
reads "<tool> returned: <result>" (its tool named from the call it answers): measured on SmolLM2-135M, a bare
result after its own call makes the model repeat the call, a named one makes it answer ("3 + 5 = 8").

Whether a template renders tools or tool calls is found by rendering a probe once per tokenizer.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError

TOOLS_KEY = "draftapprox_tools"  # on a prompt's first message: {"tools": [...], "choice": ...} (survives copies)
_PROBE = "draftapprox_probe_tool_7f3a"
_support: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> (renders tools, renders calls)


def call_text(name: str, arguments: Mapping[str, Any]) -> str:
    """A tool call as the model writes it under a ``ToolCalls`` constraint (compact JSON, as json.dumps writes it)."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def instruction(tools: Sequence[Mapping[str, Any]], choice: str) -> str:
    """The package's system message for a model whose template does not render tools."""
    listed = "\n".join(json.dumps(dict(t), ensure_ascii=False) for t in tools)
    how = ('To call a tool, reply with only one JSON object: {"name": <the tool\'s name>, "arguments": <its '
           "arguments as a JSON object>}.")
    when = {
        "auto": " If no tool is needed, answer in plain text instead.",
        "required": " Always reply with a tool call.",
        "none": " Do not call a tool now: answer in plain text.",
    }.get(choice, f" Call the tool {choice}.")
    return f"You can call these tools (name, description, and the JSON schema of the arguments):\n{listed}\n{how}{when}"


def check_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's earlier ``tool_calls``: [{"name", "arguments", "id"?}], checked and copied."""
    if not isinstance(calls, (list, tuple)):
        raise ConfigError(f"{where}: tool_calls must be a list of {{'name', 'arguments'}} dicts")
    out = []
    for call in calls:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or not isinstance(call.get("arguments", {}), Mapping):
            raise ConfigError(f"{where}: each tool call needs a string 'name' and a dict 'arguments', got {call!r}")
        out.append({"name": call["name"], "arguments": dict(call.get("arguments", {})), "id": call.get("id")})
    return out


def support(tokenizer) -> tuple[bool, bool]:
    """(the template renders tools, it renders an assistant's tool calls), probed once per tokenizer."""
    found = _support.get(tokenizer)
    if found is None:
        tool = {"type": "function", "function": {"name": _PROBE, "description": "", "parameters": {"type": "object", "properties": {}}}}
        user = [{"role": "user", "content": "x"}]
        call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": _PROBE, "arguments": {}}}]}
        found = (_renders(tokenizer, user, tools=[tool]), _renders(tokenizer, [*user, call]))
        _support[tokenizer] = found
    return found


def _renders(tokenizer, messages, **kwargs) -> bool:
    try:
        return _PROBE in tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception:  # a template that refuses the probe does not render it
        return False


def render(tokenizer, messages: list[dict[str, Any]]) -> str:
    """The prompt text of ``messages`` (with their tools, calls and results) through the model's chat template."""
    spec = messages[0].get(TOOLS_KEY) if messages else None
    tools_native, calls_native = support(tokenizer)
    plain = [_plain(m, calls_native, _names(messages)) for m in messages]
    kwargs: dict[str, Any] = {}
    if spec:
        if tools_native:
            kwargs["tools"] = [{"type": "function", "function": dict(t)} for t in spec["tools"]]
        else:
            plain = with_system(plain, instruction(spec["tools"], spec["choice"]))
    try:
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception:
        if not any(m["role"] == "tool" for m in plain):
            raise
        # A template that knows no "tool" role (it raises): the results as user messages that say what they are.
        plain = [{"role": "user", "content": m["content"]} if m["role"] == "tool" else m for m in plain]
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True, **kwargs)


def transcript_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages for a model without a chat template: tools in a first system message, calls as their JSON."""
    spec = messages[0].get(TOOLS_KEY) if messages else None
    plain = [_plain(m, False, _names(messages)) for m in messages]
    return with_system(plain, instruction(spec["tools"], spec["choice"])) if spec else plain


def with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """``text`` as the conversation's system message, before its own system message when it has one."""
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{text}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Tool call id -> tool name, from the assistant's earlier calls."""
    return {c["id"]: c["name"] for m in messages for c in m.get("tool_calls") or () if c.get("id") is not None}


def _plain(message: dict[str, Any], calls_native: bool, names: dict[str, str]) -> dict[str, Any]:
    """A message as the template reads it: role, content, and earlier tool calls in the form it renders."""
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    if message["role"] == "tool" and not calls_native:
        name = message.get("name") or names.get(message.get("tool_call_id"), "the tool")
        out["content"] = f"{name} returned: {message['content']}"
    calls = message.get("tool_calls")
    if calls and calls_native:
        out["tool_calls"] = [{"type": "function", "id": c.get("id"), "function": {"name": c["name"], "arguments": c["arguments"]}}
                             for c in calls]
    elif calls:
        written = "\n".join(call_text(c["name"], c["arguments"]) for c in calls)
        out["content"] = f"{message['content']}\n{written}" if message["content"] else written
    if message.get("tool_call_id") is not None:
        out["tool_call_id"] = message["tool_call_id"]
    return out
