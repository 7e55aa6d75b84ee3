"""LlamaIndex messages to the engine and back: text blocks and tool calls in, an answer (text, or a tool call
under a grammar) out, and the statistics every response carries."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.output_parsers.base import OutputParserException

from .._shared.speckv_options import engine_role, token_usage
from .._shared.tool_calls import incomplete_message, parse_answer
from ..engine.constraints import ConstraintError
from ..engine.errors import DraftApproxError, InvalidInputError


class IncompleteOutputError(OutputParserException, DraftApproxError, ValueError):
    """``max_tokens`` ended a constrained answer (a tool call) before its grammar closed (finish reason "length")."""


def _message_text(message: ChatMessage) -> str:
    """The text of a message, joined from its TextBlocks; InvalidInputError for any other block (an image,
    audio, a document...), which a text model would otherwise drop without a word. Tool calls are not text
    (``_tool_calls`` reads them)."""
    parts = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            continue
        if not isinstance(block, TextBlock):
            kind = getattr(block, "block_type", None) or type(block).__name__
            raise InvalidInputError(f"SpecKVLLM takes text only; got a {kind!r} content block")
        parts.append(block.text)
    return "".join(parts)


def to_engine_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """LlamaIndex messages -> [{"role", "content"}] for the target's chat template (roles: the shared table).
    Raises InvalidInputError for a non-text block or a role outside the table."""
    if isinstance(messages, (str, ChatMessage)) or not isinstance(messages, Sequence):
        raise InvalidInputError(f"SpecKVLLM.chat takes a list of ChatMessage; got a {type(messages).__name__}")
    out = []
    for message in messages:
        if not isinstance(message, ChatMessage):
            raise InvalidInputError(f"SpecKVLLM.chat takes a list of ChatMessage; got a {type(message).__name__} in it")
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        item: dict[str, Any] = {"role": engine_role(role, "SpecKVLLM"), "content": _message_text(message)}
        calls = _tool_calls(message)
        if calls:
            item["tool_calls"] = calls
        if item["role"] == "tool":
            item["tool_call_id"] = message.additional_kwargs.get("tool_call_id")
            item["name"] = message.additional_kwargs.get("name")
        out.append(item)
    return out


def _tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    """An assistant message's calls, from its ToolCallBlocks (or OpenAI-style ``additional_kwargs``)."""
    calls = [{"name": b.tool_name, "arguments": b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {}, "id": b.tool_call_id}
             for b in message.blocks if isinstance(b, ToolCallBlock)]
    for call in message.additional_kwargs.get("tool_calls") or ():
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            args = call["function"].get("arguments")
            args = json.loads(args) if isinstance(args, str) else (args or {})
            calls.append({"name": call["function"].get("name"), "arguments": args, "id": call.get("id")})
    return calls


def tool_spec(tool: Any) -> dict[str, Any]:
    """A LlamaIndex tool as the engine's {"name", "description", "parameters"}."""
    metadata = getattr(tool, "metadata", None)
    if metadata is None or not getattr(metadata, "name", None):
        raise ConstraintError(f"a tool needs metadata with a name, got {tool!r}")
    return dict(metadata.to_openai_tool(skip_length_check=True)["function"])


def answer_message(text: str, options: dict[str, Any], stats) -> ChatMessage:
    """The assistant's message: its text, or under a tool constraint the call as a ToolCallBlock.
    IncompleteOutputError when max_tokens cut a constrained answer."""
    constraint = options.get("constraint")
    if constraint is None:
        return ChatMessage(role=MessageRole.ASSISTANT, content=text)
    if stats.constraint_complete is False:
        raise IncompleteOutputError(incomplete_message("tool call", text))
    answer = parse_answer(text, constraint.choice)
    if answer.name is None:
        return ChatMessage(role=MessageRole.ASSISTANT, content=answer.text)
    block = ToolCallBlock(tool_call_id=f"call_{uuid.uuid4().hex[:24]}", tool_name=answer.name, tool_kwargs=answer.arguments)
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])


def response_info(result_stats, finish_reason: str) -> dict[str, Any]:
    """additional_kwargs: finish reason, the shared token usage (prompt/completion/total) and the KV statistics."""
    return {"finish_reason": finish_reason, **asdict(token_usage(result_stats)), "speckv": result_stats.to_dict()}
