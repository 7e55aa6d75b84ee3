"""Tool calling and structured output through both adapters, on a tiny random model: a random model writes
nonsense values, but the grammar holds every answer to its shape, so every call and object parses."""

from __future__ import annotations

import asyncio
import json
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, Field
from typing_extensions import Annotated, TypedDict

from draftapprox_integrations.engine import ConfigError, ConstraintError, DraftApproxEngine
from tests.helpers import SMOLLM2


class Pick(BaseModel):
    """A colour and a count."""

    colour: Literal["red", "blue"]
    count: Optional[int] = Field(default=None, ge=0, le=99)


class PickDict(TypedDict):
    """A colour."""

    colour: Annotated[Literal["red", "blue"], ..., "a colour"]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(scope="module")
def engine(tiny_model_factory):
    path = str(tiny_model_factory("llama"))
    return DraftApproxEngine(path, path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def chat(engine):
    from draftapprox_integrations.langchain import ChatSpecKV

    return ChatSpecKV(engine=engine, method="full", max_tokens=48)


def test_bind_tools_returns_calls_with_langchain_ids(chat):
    from langchain_core.tools import tool

    bound = chat.bind_tools([tool(add)], tool_choice="any")
    reply = bound.invoke("What is 2 + 3?")
    (call,) = reply.tool_calls
    assert call["name"] == "add" and set(call["args"]) == {"a", "b"} and call["id"].startswith("lc_")
    assert reply.content == "" and reply.response_metadata["constraint_complete"] is True
    forced = chat.bind_tools([tool(add), Pick], tool_choice="Pick").invoke("a colour")
    assert forced.tool_calls[0]["name"] == "Pick" and "colour" in forced.tool_calls[0]["args"]
    none = chat.bind_tools([tool(add)], tool_choice="none").invoke("hi")
    assert none.tool_calls == [] and isinstance(none.content, str)


def test_streamed_tool_call_chunks_join_to_the_final_call(chat):
    bound = chat.bind_tools([add], tool_choice="required")
    chunks = list(bound.stream("What is 2 + 3?"))
    pieces = [c.tool_call_chunks[0] for c in chunks if c.tool_call_chunks]
    assert len(pieces) > 2 and pieces[0]["name"] == "add" and all(p["name"] is None for p in pieces[1:])
    joined = chunks[0]
    for chunk in chunks[1:]:
        joined = joined + chunk
    whole = bound.invoke("What is 2 + 3?")  # greedy: the same answer
    assert [(c["name"], c["args"]) for c in joined.tool_calls] == [(c["name"], c["args"]) for c in whole.tool_calls]
    assert json.loads("".join(p["args"] for p in pieces)) == whole.tool_calls[0]["args"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize("schema", [Pick, PickDict, Pick.model_json_schema()], ids=["pydantic", "typeddict", "json_schema"])
def test_with_structured_output_parses_every_method_and_schema_kind(chat, method, schema):
    from draftapprox_integrations.langchain._tools import IncompleteOutputError

    structured = chat.with_structured_output(schema, method=method)
    if method == "json_mode":  # any JSON object: a random model's free strings may run past max_tokens
        try:
            result = structured.invoke("Pick a colour. Answer in JSON.")
        except IncompleteOutputError as error:  # never half an object
            assert "finish reason 'length'" in str(error) and error.llm_output.startswith("{")
            return
        assert isinstance(result, dict) or isinstance(result, Pick)
        return
    result = structured.invoke("Pick a colour. Answer in JSON.")
    assert isinstance(result, Pick) if schema is Pick else isinstance(result, dict)
    assert (result.colour if schema is Pick else result["colour"]) in ("red", "blue")


def test_include_raw_and_a_cut_answer(chat, engine):
    from draftapprox_integrations.langchain import ChatSpecKV
    from draftapprox_integrations.langchain._tools import IncompleteOutputError

    raw = chat.with_structured_output(Pick, include_raw=True).invoke("a colour")
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], Pick) and raw["raw"].content.startswith("{")
    short = ChatSpecKV(engine=engine, method="full", max_tokens=2)
    cut = short.with_structured_output(Pick, include_raw=True).invoke("a colour")
    assert cut["parsed"] is None and isinstance(cut["parsing_error"], IncompleteOutputError)
    assert "finish reason 'length'" in str(cut["parsing_error"])
    with pytest.raises(IncompleteOutputError, match="finish reason 'length'"):
        short.with_structured_output(Pick).invoke("a colour")
    with pytest.raises(IncompleteOutputError, match="finish reason 'length'"):
        list(short.bind_tools([add], tool_choice="any").stream("2 + 3"))


def test_bad_tools_and_schemas_raise_before_any_weight_loads():
    from draftapprox_integrations.langchain import ChatSpecKV
    from draftapprox_integrations.llama_index import SpecKVLLM

    chat = ChatSpecKV(budget=64, device="cpu", dtype="float16")  # never loaded here
    with pytest.raises(ConstraintError, match="name"):
        chat.bind_tools([{"description": "no name", "parameters": {}}])
    with pytest.raises(ConstraintError, match="tool_choice"):
        chat.bind_tools([add], tool_choice="multiply")
    with pytest.raises(ConstraintError, match="Invalid type"):
        chat.with_structured_output({"title": "T", "type": "foo"})
    with pytest.raises(ConfigError, match="method"):
        chat.with_structured_output(Pick, method="xml")
    llm = SpecKVLLM(budget=64, device="cpu", dtype="float16")
    with pytest.raises(ConstraintError, match="name"):
        llm.chat_with_tools([object()], user_msg="hi")
    assert chat.get_engine().loaded is False


def test_llama_index_function_calling(engine):
    from llama_index.core.llms import ChatMessage
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.tools import FunctionTool

    from draftapprox_integrations.llama_index import SpecKVLLM

    llm = SpecKVLLM(engine=engine, method="full", max_tokens=48)
    assert llm.metadata.is_function_calling_model
    tool = FunctionTool.from_defaults(fn=add)
    response = llm.chat_with_tools([tool], user_msg="What is 2 + 3?", tool_required=True)
    (selection,) = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "add" and set(selection.tool_kwargs) == {"a", "b"}
    streamed = list(llm.stream_chat_with_tools([tool], user_msg="What is 2 + 3?", tool_required=True))
    assert llm.get_tool_calls_from_response(streamed[-1])[0].tool_kwargs == selection.tool_kwargs
    later = asyncio.run(llm.achat_with_tools([tool], chat_history=[ChatMessage(role="user", content="2 + 3?"), response.message],
                                             tool_choice="none"))
    assert llm.get_tool_calls_from_response(later, error_on_no_tool_call=False) == []
    assert isinstance(llm.structured_predict(Pick, PromptTemplate("Pick a colour for {x}."), x="a cat"), Pick)
    assert json.loads(llm.as_structured_llm(Pick).chat([ChatMessage(role="user", content="a colour")]).message.content)
