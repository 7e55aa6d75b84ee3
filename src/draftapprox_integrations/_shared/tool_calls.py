"""What both adapters do with tools and structured answers, written once and framework-free.

* :func:`tool_choice`: a framework's tool choice (LangChain's "any", True, a name, an OpenAI-style dict;
  LlamaIndex's ``tool_required``) as the engine's ``ToolCalls`` choice;
* :func:`parse_answer`: the engine's answer under a ``ToolCalls`` constraint as text or one call;
* :class:`CallStream`: the same while it streams: text deltas, then the call's name once it is known and
  its arguments' JSON piece by piece (LangChain's ``tool_call_chunks``), which join to the final call;
* :func:`schema_instruction`: the system message that tells a model the JSON schema it answers in;
* :func:`incomplete_message`: what a framework's parsing error says when ``max_tokens`` cut a constrained answer.

The engine writes a call as ``{"name": "<tool>", "arguments": {...}}`` (``engine.constraints``), one per answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.constraints import ConstraintError

# The prefix of a call as the engine writes it; tool names are plain (letters, digits, _ . : -), never escaped.
_PREFIX = re.compile(r'^\{"name": "([A-Za-z0-9_.:-]+)", "arguments": ')


def tool_choice(choice: Any, names: list[str]) -> str:
    """The engine's choice ("auto", "required", "none" or a tool's name) for a framework's ``tool_choice``."""
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, Mapping):  # {"type": "function", "function": {"name": ...}} or {"name": ...}
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    raise ConstraintError(f"tool_choice must be 'auto', 'any'/'required', 'none' or one of the tools {names}, got {choice!r}")


@dataclass
class Answer:
    """An answer under a tool constraint: ``text``, or one call (``name`` and ``arguments``)."""

    text: str = ""
    name: str | None = None
    arguments: dict[str, Any] | None = None


def parse_answer(text: str, choice: str) -> Answer:
    """The answer the engine wrote: a call when the constraint asked for one and the answer is one."""
    if choice == "none" or not text.startswith("{"):
        return Answer(text=text)
    found = _PREFIX.match(text)
    if found is None:
        raise ValueError(f"not a tool call: {text[:80]!r}")
    return Answer(name=found.group(1), arguments=json.loads(text[found.end() : -1]))


class CallStream:
    """Splits a streaming answer into text deltas, or a call's name and its arguments' JSON in pieces.

    ``push(delta)`` returns (text, name, args): the text to show, the call's name the first time it is known
    (else None) and the next piece of its arguments' JSON. The arguments hold back their last character,
    which may be the call's closing brace; ``finish()`` releases the rest. The pieces join to the arguments'
    JSON exactly.
    """

    def __init__(self, choice: str) -> None:
        self.choice = choice
        self.mode: str | None = None  # "text" or "call", decided by the first character
        self.buffer = ""
        self.name: str | None = None
        self._sent = 0  # characters of the arguments handed out

    def push(self, delta: str) -> tuple[str, str | None, str]:
        if self.mode is None and (delta or self.buffer):
            self.mode = "call" if self.choice != "none" and (self.buffer + delta).startswith("{") else "text"
        if self.mode != "call":
            return delta, None, ""
        self.buffer += delta
        name = None
        if self.name is None:
            found = _PREFIX.match(self.buffer)
            if found is None:
                return "", None, ""
            name = self.name = found.group(1)
            self.buffer = self.buffer[found.end() :]
        ready = max(self._sent, len(self.buffer) - 1)
        piece, self._sent = self.buffer[self._sent : ready], ready
        return "", name, piece

    def finish(self) -> str:
        """The arguments' last piece (without the call's closing brace)."""
        if self.mode != "call" or self.name is None:
            return ""
        end = len(self.buffer) - 1 if self.buffer.endswith("}") else len(self.buffer)
        piece, self._sent = self.buffer[self._sent : end], max(self._sent, end)
        return piece


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The system message of a ``json_schema`` answer: the model reads the schema it is held to."""
    return "Reply with only a JSON object that matches this JSON schema:\n" + json.dumps(schema, ensure_ascii=False)


def incomplete_message(what: str, text: str) -> str:
    return (f"the {what} was cut by max_tokens before it closed (finish reason 'length'): {text[:200]!r}; raise "
            "max_tokens, or bound the answer in its schema (maxLength on strings, maxItems on arrays, enums)")
