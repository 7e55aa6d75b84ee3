"""Property: every constrained answer that ends by its grammar parses and validates against its schema, and every
answer that max_tokens cuts raises the adapters' parsing error saying so, on 50 generated schemas (nested objects,
enums, arrays, optional fields, bounded strings) decoded by a tiny random model with seeded sampling."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draftapprox_integrations._shared.tool_calls import schema_instruction
from draftapprox_integrations.engine import DraftApproxEngine, JsonSchema
from tests.unit.properties._strategies import SETTINGS, examples

NAMES = st.sampled_from(["a", "b", "name", "count", "tags", "ok", "kind", "x_1"])
LEAVES = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 6)),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span}, st.integers(-50, 50), st.integers(0, 99)),
    st.just({"type": "boolean"}),
    st.builds(lambda values: {"enum": values}, st.lists(st.sampled_from(["red", "green", 3, None, True]), min_size=1, max_size=3, unique=True)),
)


def _object(children):
    def build(props, required_mask):
        required = [k for k, keep in zip(props, required_mask) if keep]
        return {"type": "object", "properties": props, "required": required}

    return st.dictionaries(NAMES, children, min_size=1, max_size=3).flatmap(
        lambda props: st.lists(st.booleans(), min_size=len(props), max_size=len(props)).map(lambda mask: build(props, mask)))


def _array(children):
    return st.builds(lambda items, n: {"type": "array", "items": items, "maxItems": n}, children, st.integers(0, 3))


SCHEMAS = _object(st.recursive(LEAVES, lambda children: st.one_of(_object(children), _array(children)), max_leaves=6))


@pytest.fixture(scope="module")
def engine(tiny_model_factory):
    path = str(tiny_model_factory("llama"))
    return DraftApproxEngine(path, path, device="cpu", dtype="float32")


def test_generated_schemas_parse_validate_or_raise(engine):
    from draftapprox_integrations.langchain import ChatSpecKV
    from draftapprox_integrations.langchain._tools import IncompleteOutputError

    chat = ChatSpecKV(engine=engine, method="full", temperature=1.0)
    seen = {"whole": 0, "cut": 0}

    @settings(max_examples=examples(50), **SETTINGS)
    @given(schema=SCHEMAS, seed=st.integers(0, 2**16), budget=st.integers(4, 32))
    def check(schema, seed, budget):
        messages = [{"role": "system", "content": schema_instruction(schema)}, {"role": "user", "content": "Describe it."}]
        answer = engine.generate(messages, method="full", max_new_tokens=budget, temperature=1.0, seed=seed,
                                 constraint=JsonSchema(schema))  # what the adapter sends
        structured = chat.with_structured_output(schema, method="json_schema")
        if answer.stats.constraint_complete:
            seen["whole"] += 1
            jsonschema.validate(json.loads(answer.text), schema)
            assert structured.invoke("Describe it.", seed=seed, max_tokens=budget) == json.loads(answer.text)
        else:
            seen["cut"] += 1
            assert answer.finish_reason == "length"
            with pytest.raises(IncompleteOutputError, match="finish reason 'length'"):
                structured.invoke("Describe it.", seed=seed, max_tokens=budget)

    check()
    assert seen["whole"] and seen["cut"], seen  # both outcomes were exercised
