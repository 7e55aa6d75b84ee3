"""The SpecKV adapters on anything: a typed error of the package, or an answer within ``max_tokens``.

LangChain's ChatSpecKV and SpecKVLLM and LlamaIndex's SpecKVLLM get generated prompts and messages (any script,
empty, huge, lone surrogates...), fields and per-call options (mostly valid, now and then one bad value). Either
a DraftApproxError (from the constructor or the call), or an answer of at most ``max_tokens`` new tokens; a blank
prompt or one with a lone surrogate is always refused, and the messages passed in are never changed. The
engine pairs a tiny random llama with itself, loaded once for the module.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from draftapprox_integrations.engine import DraftApproxEngine
from draftapprox_integrations.engine.errors import DraftApproxError
from tests.unit.properties._strategies import BROKEN_TEXT, SETTINGS, VALID_TEXT, examples, has_surrogate

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, MessageRole  # noqa: E402

from draftapprox_integrations.langchain import ChatSpecKV  # noqa: E402
from draftapprox_integrations.langchain import SpecKVLLM as LangChainSpecKVLLM  # noqa: E402
from draftapprox_integrations.llama_index import SpecKVLLM as LlamaIndexSpecKVLLM  # noqa: E402


PROMPT_TEXT = VALID_TEXT.map(lambda t: t if t.strip() else t + "Hello")


@pytest.fixture(scope="module")
def pair(pair_engine) -> DraftApproxEngine:
    """The module's engine: the tiny llama as draft and target (tests/unit/properties/conftest.py)."""
    return pair_engine


@st.composite
def adapter_fields(draw) -> dict:
    """Adapter fields: valid mostly; sometimes one bad value (a typed error at construction or at the call)."""
    window = draw(st.integers(1, 16))
    fields = {
        "method": draw(st.sampled_from(["speckv", "snapkv", "streamingllm", "full"])),
        "config": draw(st.sampled_from([{}, {"budget": 96}])) | {"window_size": window, "kernel_size": 5},
        "max_tokens": draw(st.integers(1, 5)),
        "temperature": draw(st.sampled_from([0.0, 0.7])),
        "seed": draw(st.one_of(st.none(), st.integers(0, 2**32))),
    }
    if draw(st.booleans()):
        fields["budget"] = draw(st.integers(window + 1, 200))
    if draw(st.booleans()):
        stop = st.text(min_size=1, max_size=2)
        fields["stop"] = draw(st.one_of(stop, st.lists(stop, max_size=2)))
    if draw(st.sampled_from([False, False, False, True])):
        fields.update(draw(BAD_FIELDS))
    return fields


BAD_FIELDS = st.sampled_from(
    [
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"max_tokens": 0},
        {"max_tokens": True},
        {"budget": "64"},
        {"seed": 2**64},
        {"stop": ""},
        {"method": "h2o"},
        {"max_tokenz": 3},  # a typo: an unknown keyword
        {"config": {"window": 3}},
    ]
)


CALL_OVERRIDES = st.one_of(
    st.just({}),
    st.just({}),
    st.fixed_dictionaries({"max_tokens": st.integers(1, 4)}),
    st.fixed_dictionaries({"temperature": st.sampled_from([0.0, 1.0, -2.0])}),
    st.fixed_dictionaries({"budget": st.sampled_from([40, 0])}),
    st.just({"bogus": 1}),
)
CHAT_TEXT = st.one_of(PROMPT_TEXT, PROMPT_TEXT, PROMPT_TEXT, VALID_TEXT, BROKEN_TEXT)


def max_tokens_of(fields: dict, overrides: dict) -> int:
    return overrides.get("max_tokens", fields.get("max_tokens", 128))


def call_adapter(make, fields, run):
    """(answer, completion tokens) or None after a DraftApproxError, from the constructor or the call."""
    try:
        return run(make(**fields))
    except DraftApproxError as exc:
        event(f"error: {type(exc).__name__}")
        return None


@settings(max_examples=examples(60), **SETTINGS)
@given(fields=adapter_fields(), overrides=CALL_OVERRIDES, texts=st.lists(CHAT_TEXT, min_size=1, max_size=3))
def test_chat_speckv_typed_error_or_answer(pair, fields, overrides, texts):
    """ChatSpecKV.invoke on system / human / ai messages of any text."""
    kinds = [SystemMessage, HumanMessage, AIMessage]
    msgs = [kinds[i % 3](content=t) if i < len(texts) - 1 else HumanMessage(content=t) for i, t in enumerate(texts)]
    snapshot = copy.deepcopy(msgs)

    def run(chat):
        reply = chat.invoke(msgs, **overrides)
        return reply.content, reply.usage_metadata["output_tokens"]

    out = call_adapter(lambda **kw: ChatSpecKV(engine=pair, **kw), fields, run)
    assert msgs == snapshot, "the messages passed in were changed"
    check_adapter_answer(out, fields, overrides, texts)


@settings(max_examples=examples(60), **SETTINGS)
@given(fields=adapter_fields(), overrides=CALL_OVERRIDES, prompt=CHAT_TEXT, chat=st.booleans())
def test_langchain_speckv_llm_typed_error_or_answer(pair, fields, overrides, prompt, chat):
    """LangChain's SpecKVLLM.generate on a prompt of any text, plain or through the chat template."""
    def run(llm):
        result = llm.generate([prompt], **overrides)
        generation = result.generations[0][0]
        return generation.text, generation.generation_info["token_usage"]["output_tokens"]

    out = call_adapter(lambda **kw: LangChainSpecKVLLM(engine=pair, chat=chat, **kw), fields, run)
    check_adapter_answer(out, fields, overrides, [prompt])


@settings(max_examples=examples(60), **SETTINGS)
@given(
    fields=adapter_fields(),
    overrides=CALL_OVERRIDES,
    texts=st.lists(CHAT_TEXT, min_size=1, max_size=3),
    chat=st.booleans(),
)
def test_llama_index_speckv_llm_typed_error_or_answer(pair, fields, overrides, texts, chat):
    """LlamaIndex's SpecKVLLM.chat on messages of any text, or .complete on the last one."""
    roles = [MessageRole.SYSTEM, MessageRole.USER, MessageRole.ASSISTANT]
    last = len(texts) - 1
    msgs = [ChatMessage(role=roles[i % 3] if i < last else MessageRole.USER, content=t) for i, t in enumerate(texts)]
    snapshot = copy.deepcopy(msgs)

    def run(llm):
        if chat:
            response = llm.chat(msgs, **overrides)
            return response.message.content, response.additional_kwargs["completion_tokens"]
        response = llm.complete(texts[-1], **overrides)
        return response.text, response.additional_kwargs["completion_tokens"]

    out = call_adapter(lambda **kw: LlamaIndexSpecKVLLM(engine=pair, **kw), fields, run)
    assert msgs == snapshot, "the messages passed in were changed"
    check_adapter_answer(out, fields, overrides, texts if chat else texts[-1:])


def check_adapter_answer(out, fields, overrides, texts) -> None:
    if any(has_surrogate(t) for t in texts) or not any(t.strip() for t in texts):
        assert out is None, "a blank prompt or one with a lone surrogate must be refused"
    if out is None:
        return
    text, completion_tokens = out
    assert isinstance(text, str)
    assert 0 <= completion_tokens <= max_tokens_of(fields, overrides)
    event("result")
