"""LangChain's tools and structured output on ChatSpecKV: its objects in, the engine's constraints out, and back.

``bind_tools`` binds ``tools`` (OpenAI-style function dicts) and a ``tool_choice``; ``with_structured_output``
binds a ``response_format`` (a JSON schema, or any JSON object for ``json_mode``) or a forced tool
(``function_calling``) and a parser. At each call :func:`call_constraint` turns what is bound into the engine's
``ToolCalls`` / ``JsonSchema`` and :func:`message_from_answer` turns the answer into an ``AIMessage`` with
``tool_calls`` (ids made by LangChain's ``ensure_id``). A constrained answer that ``max_tokens`` cut raises
:class:`IncompleteOutputError`, LangChain's ``OutputParserException``: never half an object.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticOutputParser, PydanticToolsParser
from langchain_core.runnables import RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from langchain_core.utils.utils import ensure_id

from .._shared.tool_calls import CallStream, incomplete_message, parse_answer, schema_instruction, tool_choice
from ..engine.constraints import ConstraintError, JsonSchema, ToolCalls, check_constraint
from ..engine.errors import ConfigError, DraftApproxError
from ..engine.tool_prompts import with_system

# Keyword arguments bind_tools / with_structured_output bind (popped before the generation options are checked).
BOUND = ("tools", "tool_choice", "response_format", "on_incomplete")
METHODS = ("json_schema", "function_calling", "json_mode")


class IncompleteOutputError(OutputParserException, DraftApproxError):
    """``max_tokens`` ended a constrained answer before its grammar closed (finish reason "length")."""


def tool_specs(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """LangChain tools (BaseTool, functions, pydantic classes, TypedDicts, dicts) as {"name", "description",
    "parameters"} dicts, checked by the engine's rule (ConstraintError for a tool without a name, ...)."""
    specs = []
    for i, tool in enumerate(tools):
        try:
            specs.append(dict(convert_to_openai_tool(tool)["function"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConstraintError(f"tool {i} cannot be read as a tool (it needs a name and a schema): {exc}") from None
    return specs


def bind_kwargs(tools: Sequence[Any], choice: Any) -> dict[str, Any]:
    """What bind_tools binds: the tool specs and the engine's choice, checked now (no model work)."""
    if isinstance(tools, (str, dict)) or not isinstance(tools, Sequence) or not tools:
        raise ConstraintError("bind_tools takes a non-empty list of tools")
    specs = tool_specs(tools)
    chosen = tool_choice(choice, [s["name"] for s in specs])
    check_constraint(ToolCalls(specs, chosen))
    return {"tools": specs, "tool_choice": chosen}


def call_constraint(kwargs: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]], str]:
    """(the engine's constraint, the messages, what the answer is: "tools" | "json" | "text") from what a call
    binds; a json_schema answer's messages get a system message with the schema."""
    tools, response_format = kwargs.pop("tools", None), kwargs.pop("response_format", None)
    choice = kwargs.pop("tool_choice", None) or "auto"
    if tools is not None:
        return ToolCalls(tools, choice), messages, "tools"
    if response_format is None:
        return None, messages, "text"
    schema = response_format.get("schema")
    if schema is None:  # json_mode: any JSON object; the prompt says which (LangChain's own rule for JSON mode)
        return JsonSchema({"type": "object"}), messages, "json"
    return JsonSchema(schema), with_system(messages, schema_instruction(schema)), "json"


def message_from_answer(text: str, kind: str, choice: str, **fields: Any) -> AIMessage:
    """The AIMessage of a whole answer: a tool call (content "") or the text."""
    if kind != "tools":
        return AIMessage(content=text, **fields)
    answer = parse_answer(text, choice)
    if answer.name is None:
        return AIMessage(content=answer.text, **fields)
    call = {"name": answer.name, "args": answer.arguments, "id": ensure_id(None), "type": "tool_call"}
    return AIMessage(content="", tool_calls=[call], **fields)


class ChunkMaker:
    """AIMessageChunks of a streaming answer: text as content, a tool call as ``tool_call_chunks``."""

    def __init__(self, kind: str, choice: str) -> None:
        self.calls = CallStream(choice) if kind == "tools" else None
        self.id = ensure_id(None)

    def chunk(self, delta: str, last: bool = False, **fields: Any) -> AIMessageChunk:
        if self.calls is None:
            return AIMessageChunk(content=delta, **fields)
        text, name, args = self.calls.push(delta)
        if last:
            args += self.calls.finish()
        if name is None and not args:
            return AIMessageChunk(content=text, **fields)
        piece = {"name": name, "args": args, "id": self.id if name else None, "index": 0, "type": "tool_call_chunk"}
        return AIMessageChunk(content=text, tool_call_chunks=[piece], **fields)


def check_complete(message: BaseMessage) -> BaseMessage:
    """The message, or IncompleteOutputError when max_tokens cut its constrained answer."""
    if (getattr(message, "response_metadata", None) or {}).get("constraint_complete") is False:
        text = message.text if isinstance(message.text, str) else str(message.content)
        raise IncompleteOutputError(incomplete_message("structured answer", text), llm_output=text)
    return message


def structured_runnable(model, schema: Any, method: str, include_raw: bool, strict: Any = None):
    """ChatSpecKV.with_structured_output: the model bound to the schema's constraint, then LangChain's parser."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
    if schema is None and method != "json_mode":
        raise ConfigError(f"method={method!r} needs a schema (a pydantic class, a TypedDict or a JSON schema dict)")
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    on_incomplete = {"on_incomplete": "return"} if include_raw else {}
    trace = {"ls_structured_output_format": {"kwargs": {"method": method}, "schema": schema}} if schema is not None else {}
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, **trace, **on_incomplete)
        parser = (PydanticToolsParser(tools=[schema], first_tool_only=True) if pydantic
                  else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    else:
        json_schema = _json_schema(schema) if method == "json_schema" else None
        check_constraint(JsonSchema(json_schema or {"type": "object"}))
        llm = model.bind(response_format={"schema": json_schema}, **trace, **on_incomplete)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
    checked = RunnableLambda(check_complete) | parser
    if not include_raw:
        return llm | parser
    assign = RunnablePassthrough.assign(parsed=itemgetter("raw") | checked, parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | assign.with_fallbacks([fallback], exception_key="parsing_error")


def _json_schema(schema: Any) -> dict[str, Any]:
    if isinstance(schema, dict) and "function" not in schema:
        return schema  # a JSON schema already (LangChain's converter would want a title)
    try:
        return convert_to_json_schema(schema)
    except (ValueError, TypeError) as exc:
        raise ConstraintError(f"the schema cannot be read as a JSON schema: {exc}") from None
