"""Constrained decoding in the engine on a tiny random model: masks, EOS, cuts, batches, and bad input refused
before any model work."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import torch

from draftapprox_integrations.engine import ConfigError, ConstraintError, DraftApproxEngine, JsonSchema, Regex, ToolCalls
from draftapprox_integrations.engine.grammar import RowGrammar, mask_logits, unpack_bits
from draftapprox_integrations.engine.constraints import check_constraint
from tests.helpers import SMOLLM2

ADD = {"name": "add", "description": "Add two integers.",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}
ECHO = {"name": "echo", "description": "Repeat a word.",
        "parameters": {"type": "object", "properties": {"word": {"enum": ["yes", "no"]}}, "required": ["word"]}}
SMALL = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                          "tag": {"enum": ["red", "blue"]}}, "required": ["n", "tag"]}


@pytest.fixture(scope="module")
def engine(tiny_model_factory):
    path = str(tiny_model_factory("llama"))
    return DraftApproxEngine(path, path, device="cpu", dtype="float32")


@pytest.mark.parametrize("constraint, match", [
    (JsonSchema({"type": "foo"}), "Invalid type"),
    (JsonSchema({"type": "object", "properties": 5}), "properties must be an object"),
    (JsonSchema({"not": {"type": "string"}}), "Unimplemented"),
    (JsonSchema(["not", "a", "dict"]), "must be a dict"),
    (JsonSchema({"type": "string", "pattern": "(("}), "unclosed group"),
    (Regex("[a-z"), "unclosed character class"),
    (Regex(""), "non-empty"),
    (ToolCalls([{"description": "no name"}]), "needs a name"),
    (ToolCalls([ADD, ADD]), "two tools are named"),
    (ToolCalls([ADD], "sometimes"), "tool choice"),
    (ToolCalls([{**ADD, "parameters": {"type": "array"}}]), "object schema"),
    (ToolCalls([]), "non-empty list"),
    ("a string", "must be a JsonSchema"),
])
def test_bad_constraints_are_refused_before_any_weight_loads(constraint, match):
    engine = DraftApproxEngine(SMOLLM2, SMOLLM2, device="cpu", dtype="float16")  # never loaded by this test
    with pytest.raises(ConstraintError, match=match):
        engine.generate("hi", constraint=constraint)
    assert isinstance(ConstraintError("x"), ConfigError)
    assert engine.loaded is False


def test_stop_sequences_are_refused_beside_a_grammar():
    with pytest.raises(ConfigError, match="stop sequences would cut"):
        DraftApproxEngine(SMOLLM2, SMOLLM2, device="cpu", dtype="float16").generate("hi", stop=["}"], constraint=JsonSchema(SMALL))


def test_answers_match_their_grammar_and_inputs_come_back_unchanged(engine):
    schema, tools = copy.deepcopy(SMALL), [copy.deepcopy(ADD), copy.deepcopy(ECHO)]
    answer = engine.generate("hello", method="full", max_new_tokens=40, constraint=JsonSchema(schema))
    assert answer.finish_reason == "eos" and answer.stats.constraint_complete is True
    jsonschema.validate(json.loads(answer.text), SMALL)
    assert answer.stats.constraint == "json_schema"
    code = engine.generate("hello", method="full", max_new_tokens=12, constraint=Regex(r"[0-9]{3}-[A-Z]{2}"))
    assert re.fullmatch(r"[0-9]{3}-[A-Z]{2}", code.text) and code.finish_reason == "eos"
    named = engine.generate("hello", method="full", max_new_tokens=40, constraint=ToolCalls(tools, "echo"))
    call = json.loads(named.text)
    assert call["name"] == "echo" and call["arguments"]["word"] in ("yes", "no")
    assert schema == SMALL and tools == [ADD, ECHO]  # the caller's dicts: not closed, not copied into


def test_a_cut_answer_says_so(engine):
    cut = engine.generate("hello", method="full", max_new_tokens=3, constraint=JsonSchema(SMALL))
    assert cut.finish_reason == "length" and cut.stats.constraint_complete is False
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.text)


def test_eos_is_allowed_exactly_where_the_grammar_accepts(engine):
    target = engine.target
    eos = {target.tokenizer.eos_token_id}
    vocab = target.model.config.vocab_size
    row = RowGrammar.start(check_constraint(Regex("ab|abc")), target.tokenizer, vocab, eos)
    allowed = lambda: set(torch.nonzero(mask_logits(torch.zeros(1, vocab), row.mask[None], unpack_bits("cpu"))[0] == 0).flatten().tolist())
    assert not allowed() & eos  # nothing written yet: no EOS
    for token in target.tokenizer("ab", add_special_tokens=False)["input_ids"]:
        row.advance(token)
    assert row.accepting and not row.done and eos <= allowed()  # "ab" is whole, "abc" may follow
    row.advance(target.tokenizer("c", add_special_tokens=False)["input_ids"][0])
    assert row.done  # "abc": nothing may follow, the answer ends without a forward for EOS


def test_a_mixed_batch_equals_the_same_calls_one_by_one(engine):
    prompts = ["hello", "add two and three", "say yes", "a code please"]
    constraints = [JsonSchema(SMALL), None, ToolCalls([ADD, ECHO], "required"), Regex(r"[0-9]{2}-[a-z]{3}")]
    batch = engine.generate_batch(prompts, method="full", max_new_tokens=24, constraint=constraints)
    alone = [engine.generate(p, method="full", max_new_tokens=24, constraint=c) for p, c in zip(prompts, constraints)]
    assert [b.token_ids for b in batch] == [a.token_ids for a in alone]
    assert [b.finish_reason for b in batch] == [a.finish_reason for a in alone]
    assert batch[1].stats.constraint is None and batch[0].stats.constraint == "json_schema"
    seeded = dict(method="speckv", budget=40, max_new_tokens=24, temperature=0.9, seed=7)
    sampled = engine.generate_batch(prompts, constraint=constraints, **seeded)
    assert [s.text for s in sampled] == [engine.generate(p, constraint=c, **seeded).text for p, c in zip(prompts, constraints)]


def test_generate_batch_wants_one_constraint_per_prompt(engine):
    with pytest.raises(ConfigError, match="one entry per prompt"):
        engine.generate_batch(["a", "b"], constraint=[None])


def test_tools_reach_the_prompt_in_the_packages_wording_or_the_template(engine, tiny_model_factory):
    from draftapprox_integrations.engine.prompts import encode_prompt, normalize_messages, with_tools

    target = engine.target
    messages = with_tools(normalize_messages("What is 2 + 3?", None)[0], [ADD], "required")
    text = target.tokenizer.decode(encode_prompt(target, messages, None))
    assert '"name": "add"' in text and "Always reply with a tool call." in text
    history = [{"role": "user", "content": "2 + 3?"},
               {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}, "id": "c1"}]},
               {"role": "tool", "content": "5", "tool_call_id": "c1"}]
    rendered = target.tokenizer.decode(encode_prompt(target, normalize_messages(history, None)[0], None))
    assert '{"name": "add", "arguments": {"a": 2, "b": 3}}' in rendered and "add returned: 5" in rendered
    with pytest.raises(ConfigError, match="chat prompt"):
        engine.generate("plain", chat=False, constraint=ToolCalls([ADD]))


def test_a_template_that_renders_tools_gets_them_natively(smollm2_tokenizer):
    from draftapprox_integrations.engine import tool_prompts
    from draftapprox_integrations.engine.prompts import normalize_messages, with_tools

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = (
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}"
        "{% if m.tool_calls %}CALL:{% for c in m.tool_calls %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}{% endif %}\n"
        "{% endfor %}"
    )
    assert tool_prompts.support(tokenizer) == (True, True)
    history = [{"role": "user", "content": "2 + 3?"},
               {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {"a": 2}, "id": "c1"}]},
               {"role": "tool", "content": "5", "tool_call_id": "c1"}]
    text = tool_prompts.render(tokenizer, with_tools(normalize_messages(history, None)[0], [ADD], "auto"))
    assert text.startswith("TOOLS:add;") and 'CALL:add{"a": 2}' in text and "tool: 5" in text
    assert "You can call these tools" not in text  # the template's own rendering, not the package's message
