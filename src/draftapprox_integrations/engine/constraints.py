"""What a constrained answer may be: a JSON schema, a call of one of several tools, or a regular expression.

A constraint is checked and compiled to a grammar here, in the caller's thread, before any model work: an
invalid schema, a tool without a name or a pattern the grammar library cannot compile raises
:class:`ConstraintError` (a ``ConfigError``). The grammar library is llguidance (``engine.grammar`` runs it per
row): one abi3 wheel without dependencies, whose JSON-schema compiler validates a schema without a tokenizer
(so the check needs no weights) and computes a row's mask in tens of microseconds on the host.

JSON is compact (``", "`` between items, ``": "`` after keys, no other whitespace): a small model cannot pad an
answer with endless blank lines, and every answer has one spelling. Objects list their properties in the
schema's order, and an object schema that does not say ``additionalProperties`` takes no other keys (the answer
is exactly the schema's shape). A tool call is ``{"name": "<tool>", "arguments": {...}}``, one call per answer.
Free strings are as long as the schema lets them be: bound them with ``maxLength`` (or ``max_new_tokens``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

JSON_FORMAT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
TOOL_CHOICES = ("auto", "required", "none")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ConstraintError(ConfigError):
    """A constraint that cannot be compiled: an invalid schema or pattern, a tool without a name, ..."""


@dataclass(frozen=True)
class JsonSchema:
    """The answer is one JSON value that validates against ``schema`` (a dict). ``{"type": "object"}`` is a JSON mode."""

    schema: Mapping[str, Any]
    kind = "json_schema"


@dataclass(frozen=True)
class Regex:
    """The answer matches ``pattern`` as a whole (Rust ``regex`` syntax: no look-around, no back-references)."""

    pattern: str
    kind = "regex"


@dataclass(frozen=True)
class ToolCalls:
    """The answer may call one of ``tools``: dicts with ``name``, ``description`` and ``parameters`` (a JSON
    schema of the arguments object). ``choice``: "required" (a call, of any tool), "auto" (a call or a text
    answer, the model's pick at its first token), "none" (text only) or a tool's name (a call of that tool).
    The tools are also written into the prompt (``engine.prompts``), whatever the choice."""

    tools: Sequence[Mapping[str, Any]]
    choice: str = "required"
    kind = "tool_calls"


Constraint = JsonSchema | Regex | ToolCalls


@dataclass(frozen=True)
class CompiledConstraint:
    """A checked constraint and its llguidance grammar (None: nothing to enforce, ``ToolCalls(choice="none")``)."""

    constraint: Constraint
    grammar: str | None
    tools: tuple[dict[str, Any], ...] = field(default=())

    @property
    def kind(self) -> str:
        return self.constraint.kind


def check_constraint(constraint: Any) -> CompiledConstraint | None:
    """The constraint checked and compiled (None for None); raises ConstraintError naming what is wrong."""
    if constraint is None:
        return None
    if isinstance(constraint, JsonSchema):
        return CompiledConstraint(constraint, _json_grammar(_schema(constraint.schema, "the JSON schema")))
    if isinstance(constraint, Regex):
        if not isinstance(constraint.pattern, str) or not constraint.pattern:
            raise ConstraintError(f"Regex needs a non-empty pattern string, got {constraint.pattern!r}")
        return CompiledConstraint(constraint, _validated(_llg().LLMatcher.grammar_from_regex(constraint.pattern), "the regex"))
    if isinstance(constraint, ToolCalls):
        return _tool_calls(constraint)
    raise ConstraintError(f"constraint must be a JsonSchema, Regex or ToolCalls, got {type(constraint).__name__}")


def _tool_calls(constraint: ToolCalls) -> CompiledConstraint:
    tools = check_tools(constraint.tools)
    names = [t["name"] for t in tools]
    choice = constraint.choice
    if not isinstance(choice, str) or (choice not in TOOL_CHOICES and choice not in names):
        raise ConstraintError(f"tool choice must be one of {list(TOOL_CHOICES)} or a tool's name {names}, got {choice!r}")
    if choice == "none":
        return CompiledConstraint(constraint, None, tools)
    chosen = [t for t in tools if choice in ("auto", "required") or t["name"] == choice]
    calls = [_call_schema(t) for t in chosen]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if choice != "auto":
        return CompiledConstraint(constraint, _json_grammar(schema), tools)
    # "auto": a call (it opens with "{") or a text answer (at least one character, not "{").
    body = json.dumps({"x-guidance": JSON_FORMAT, **schema})
    lark = f"start: call | text\ncall: %json {body}\ntext: /[^{{](.|\\n)*/\n"
    return CompiledConstraint(constraint, _validated(_llg().LLMatcher.grammar_from_lark(lark), "the tools"), tools)


def check_tools(tools: Any) -> tuple[dict[str, Any], ...]:
    """Tools as {"name", "description", "parameters"} dicts (parameters an object schema), checked."""
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence) or not tools:
        raise ConstraintError("tools must be a non-empty list of {'name', 'description', 'parameters'} dicts")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ConstraintError(f"tool {i} must be a dict with a 'name', got {type(tool).__name__}")
        name = tool.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConstraintError(f"tool {i} needs a name of 1-128 letters, digits, '_', '.', ':' or '-', got {name!r}")
        if name in seen:
            raise ConstraintError(f"two tools are named {name!r}")
        seen.add(name)
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise ConstraintError(f"tool {name!r}: description must be a string, got {type(description).__name__}")
        parameters = _schema(tool.get("parameters") or {"type": "object", "properties": {}}, f"tool {name!r}'s parameters")
        if parameters.get("type", "object") != "object":
            raise ConstraintError(f"tool {name!r}: parameters must be an object schema, got type {parameters.get('type')!r}")
        out.append({"name": name, "description": description, "parameters": parameters})
    return tuple(out)


def _call_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool["name"]}, "arguments": tool["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _schema(schema: Any, what: str) -> dict[str, Any]:
    """A deep copy of a JSON-serialisable schema dict, its open objects closed (``closed_objects``)."""
    if not isinstance(schema, Mapping):
        raise ConstraintError(f"{what} must be a dict, got {type(schema).__name__}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise ConstraintError(f"{what} is not JSON-serialisable: {exc}") from None
    return closed_objects(json.loads(text))


def closed_objects(schema: Any) -> Any:
    """``schema`` with ``"additionalProperties": false`` on every object schema that lists properties and does
    not say what other keys may be: the answer is exactly the declared shape (a small model given an open
    object invents keys). In place; returns it."""
    if isinstance(schema, dict):
        if "properties" in schema and not {"additionalProperties", "patternProperties", "unevaluatedProperties"} & set(schema):
            schema["additionalProperties"] = False
        for value in schema.values():
            closed_objects(value)
    elif isinstance(schema, list):
        for item in schema:
            closed_objects(item)
    return schema


def _json_grammar(schema: dict[str, Any]) -> str:
    try:
        grammar = _llg().LLMatcher.grammar_from_json_schema(copy.deepcopy(schema), overrides=JSON_FORMAT)
    except ValueError as exc:
        raise ConstraintError(f"the JSON schema cannot be compiled: {exc}") from None
    return _validated(grammar, "the JSON schema")


def _validated(grammar: str, what: str) -> str:
    is_error, messages = _llg().LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise ConstraintError(f"{what} cannot be compiled to a grammar: {'; '.join(messages)}")
    return grammar


def _llg():
    import llguidance  # imported on first use: an engine without constraints never loads it

    return llguidance
