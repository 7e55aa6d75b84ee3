"""Bad input to the SpecKV adapters: clear errors at construction or before any model loads."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, ToolMessage

from draftapprox_integrations.engine import ConfigError
from draftapprox_integrations.engine.errors import InvalidInputError


def test_langchain_construction_validates_cheaply():
    from draftapprox_integrations.langchain import ChatSpecKV, SpecKVLLM

    for cls in (ChatSpecKV, SpecKVLLM):
        model = cls(budget=64, method="snapkv", max_tokens=7, model="smollm2-135m-instruct", dtype="float16")
        assert model.get_engine().loaded is False  # nothing loaded by construction
        assert model.target_model == "smollm2-135m-instruct" and model.max_tokens == 7
        with pytest.raises(ConfigError, match="window_size"):
            cls(budget=16)  # the default window (32) does not fit
        with pytest.raises(ConfigError, match="unknown method"):
            cls(method="h2o")
        with pytest.raises(ConfigError, match="prompt_budget"):
            cls(method="speckv-pc", budget=64)


def test_chat_model_refuses_non_text_messages_before_loading():
    from draftapprox_integrations.langchain import ChatSpecKV

    chat = ChatSpecKV(budget=64, device="cpu", dtype="float16")  # an engine no other test loads
    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    with pytest.raises(InvalidInputError, match="text only"):
        chat.invoke([image])
    with pytest.raises(InvalidInputError, match="text only"):
        chat.invoke([HumanMessage(content="hi"), ToolMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}], tool_call_id="x")])
    with pytest.raises(ConfigError, match="unsupported option"):
        chat.invoke("hi", frequency_penalty=0.5)
    assert chat.get_engine().loaded is False


def test_llama_index_construction_validates_cheaply():
    from draftapprox_integrations.llama_index import SpecKVLLM

    llm = SpecKVLLM(budget=64, device="cpu", dtype="float16")
    assert llm.get_engine().loaded is False
    with pytest.raises(ConfigError, match="window_size"):
        SpecKVLLM(budget=8)
    with pytest.raises(ConfigError, match="unknown method"):
        SpecKVLLM(method="h2o")
    with pytest.raises(ConfigError, match="unsupported option"):
        llm.complete("hi", frequency_penalty=0.5)
