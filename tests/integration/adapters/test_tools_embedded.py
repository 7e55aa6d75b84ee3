"""Constrained answers on the embedded SmolLM2: 10 generated schemas parse and validate (or, cut by max_tokens,
raise the stated error), and a LlamaIndex FunctionAgent calls a Python arithmetic tool and answers with its result."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draftapprox_integrations._shared.tool_calls import schema_instruction
from draftapprox_integrations.engine import JsonSchema
from tests.unit.properties._strategies import SETTINGS, examples
from tests.unit.properties.test_constrained_properties import SCHEMAS


def test_ten_generated_schemas_on_smollm2(smollm2_engine):
    from draftapprox_integrations.langchain import ChatSpecKV
    from draftapprox_integrations.langchain._tools import IncompleteOutputError

    chat = ChatSpecKV(engine=smollm2_engine, method="full")
    seen = {"whole": 0, "cut": 0}

    @settings(max_examples=examples(10), **SETTINGS)
    @given(schema=SCHEMAS, budget=st.integers(6, 32))
    def check(schema, budget):
        question = "Describe a small red box with a few tags."
        messages = [{"role": "system", "content": schema_instruction(schema)}, {"role": "user", "content": question}]
        answer = smollm2_engine.generate(messages, method="full", max_new_tokens=budget, constraint=JsonSchema(schema))
        structured = chat.with_structured_output(schema, method="json_schema")
        if answer.stats.constraint_complete:
            seen["whole"] += 1
            jsonschema.validate(json.loads(answer.text), schema)
            assert structured.invoke(question, max_tokens=budget) == json.loads(answer.text)
        else:
            seen["cut"] += 1
            assert answer.finish_reason == "length"
            with pytest.raises(IncompleteOutputError, match="finish reason 'length'"):
                structured.invoke(question, max_tokens=budget)

    check()
    assert seen["whole"], seen


def test_function_agent_calls_an_arithmetic_tool_and_answers_with_its_result(smollm2_engine):
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from draftapprox_integrations.llama_index import SpecKVLLM

    calls = []

    def add(a: int, b: int) -> int:
        """Add two integers a and b."""
        calls.append((a, b))
        return a + b

    llm = SpecKVLLM(engine=smollm2_engine, method="full", max_tokens=48)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=add)], llm=llm, initial_tool_choice="add")

    async def ask():  # a workflow run is started inside a running event loop
        return await agent.run("What is 3 + 5?")

    answer = asyncio.run(ask())
    assert calls == [(3, 5)]  # the Python function ran, with the arguments from the question
    assert answer.tool_calls[0].tool_output.raw_output == 8
    assert "8" in str(answer)  # the final text answer carries the tool's result
