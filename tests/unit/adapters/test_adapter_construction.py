"""Adapter constructors check every keyword and raise the package's own errors (FINDINGS BUG-7, BUG-8, BUG-14).

Unknown keywords are refused with the accepted ones listed; every documented alias and every field the
frameworks declare still works; values are checked as given (no ``"7"`` -> 7, no ``True`` -> 1); the error is a
DraftApproxError (also a ValueError), never pydantic's ValidationError. Nothing here loads a model.
"""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from draftapprox_integrations.engine import SpecKVConfig, SpecPCConfig
from draftapprox_integrations.engine.errors import ConfigError, DraftApproxError, UnknownOptionError

SPECKV_CLASSES = ["langchain.ChatSpecKV", "langchain.SpecKVLLM", "llama_index.SpecKVLLM"]
SPECPC_CLASSES = ["langchain.SpecPCCompressor", "llama_index.SpecPCNodePostprocessor"]
ALL_CLASSES = SPECKV_CLASSES + SPECPC_CLASSES
# Options of an engine no other test loads: construction must not load it.
UNLOADED = dict(device="cpu", dtype="float16")


def adapter(name: str) -> type:
    package, cls = name.split(".")
    return getattr(importlib.import_module(f"draftapprox_integrations.{package}"), cls)


# -- BUG-7: unknown keywords -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_a_typo_is_refused_with_the_accepted_keywords(name):
    with pytest.raises(UnknownOptionError) as caught:
        adapter(name)(budgett=64)
    message = str(caught.value)
    assert "'budgett' (did you mean 'budget'?)" in message
    accepted = message.split("accepted:")[1]
    assert ("rate" in accepted) if name in SPECPC_CLASSES else ("max_tokens" in accepted and "model" in accepted)
    # Python's own unexpected-keyword error is a TypeError: code catching that still works.
    assert isinstance(caught.value, (ConfigError, DraftApproxError, TypeError, ValueError))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("langchain.SpecPCCompressor", dict(budgett=64)),
        ("langchain.ChatSpecKV", dict(model_id="smollm2-135m-instruct")),
        ("langchain.SpecKVLLM", dict(pipeline_kwargs={"top_k": 5})),
        ("llama_index.SpecKVLLM", dict(foo=1)),
        ("llama_index.SpecPCNodePostprocessor", dict(top_n=3)),
    ],
)
def test_unknown_keywords_of_other_libraries_are_refused(name, kwargs):
    with pytest.raises(UnknownOptionError, match=next(iter(kwargs))):
        adapter(name)(**kwargs)


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_every_declared_field_is_accepted(name):
    """Each field the adapter and its framework base classes declare, given its default explicitly."""
    cls = adapter(name)
    for field, info in cls.model_fields.items():
        cls(**{field: info.get_default(call_default_factory=True)}, **({} if field in UNLOADED else UNLOADED))


def test_langchain_framework_and_hosted_model_fields():
    from langchain_core.callbacks import StdOutCallbackHandler
    from langchain_core.rate_limiters import InMemoryRateLimiter

    from draftapprox_integrations.langchain import ChatSpecKV, SpecKVLLM

    common = dict(
        callbacks=[StdOutCallbackHandler()], tags=["t"], metadata={"k": 1}, cache=False, verbose=False,
        timeout=30.0, max_retries=2, api_key="unused", name="mine",
    )
    chat = ChatSpecKV(**common, rate_limiter=InMemoryRateLimiter(), disable_streaming=True, output_version="v1")
    assert (chat.tags, chat.metadata, chat.disable_streaming, chat.output_version) == (["t"], {"k": 1}, True, "v1")
    llm = SpecKVLLM(**common, chat=True, streaming=True)
    assert llm.chat and llm.streaming and llm.name == "mine"


def test_llama_index_framework_fields():
    from llama_index.core.callbacks import CallbackManager

    from draftapprox_integrations.llama_index import SpecKVLLM, SpecPCNodePostprocessor

    manager = CallbackManager([])
    llm = SpecKVLLM(
        callback_manager=manager, system_prompt="Be brief.", messages_to_prompt=lambda m: "x",
        completion_to_prompt=lambda p: p, pydantic_program_mode="default", output_parser=None,
    )
    assert llm.callback_manager is manager and llm.system_prompt == "Be brief."
    assert SpecPCNodePostprocessor(callback_manager=manager).callback_manager is manager


@pytest.mark.parametrize("name", SPECKV_CLASSES)
def test_speckv_aliases(name):
    model = adapter(name)(model="smollm2-135m-instruct", max_new_tokens=9, config={"budget": 64, "window_size": 8}, stop="END")
    assert (model.target_model, model.max_tokens, model.stop) == ("smollm2-135m-instruct", 9, ["END"])
    assert model.config == SpecKVConfig(budget=64, window_size=8)
    with pytest.raises(ConfigError, match="not both"):  # an alias and its field: refused, not one dropped
        adapter(name)(max_tokens=8, max_new_tokens=9)


@pytest.mark.parametrize("name", SPECPC_CLASSES)
def test_specpc_aliases(name):
    cls = adapter(name)
    assert cls(window_size=16, kernel_size=9).config == SpecPCConfig(window_size=16, kernel_size=9)
    assert cls(config={"kernel_size": 7}, window_size=16).config == SpecPCConfig(kernel_size=7, window_size=16)


# -- BUG-8: values as given, no coercion ----------------------------------------------------------------


@pytest.mark.parametrize("name", SPECPC_CLASSES)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(budget=True), "budget"),
        (dict(budget="7"), "budget"),
        (dict(budget=7.0), "budget"),
        (dict(rate="0.5"), "rate"),
        (dict(rate=True), "rate"),
        (dict(keep_empty="yes"), "keep_empty"),
        (dict(whole_sentences=1), "whole_sentences"),
    ],
)
def test_specpc_values_are_not_coerced(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        adapter(name)(**kwargs)


@pytest.mark.parametrize("name", SPECKV_CLASSES)
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(budget=True), dict(budget="64"), dict(rate="0.5"), dict(rate=True), dict(max_tokens="7"), dict(seed="3"),
        dict(temperature="0.5"), dict(stop=5),
    ],
)
def test_speckv_values_are_not_coerced(name, kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs)).replace("max_tokens", "max_new_tokens")):
        adapter(name)(**kwargs)


# -- BUG-14: the package's error types ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CLASSES)
@pytest.mark.parametrize("kwargs", [dict(budget=0), dict(config={"bogus": 1}), dict(config=3), dict(device=5)])
def test_construction_errors_are_draftapprox_errors(name, kwargs):
    with pytest.raises(DraftApproxError) as caught:
        adapter(name)(**kwargs)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, ValidationError)


def test_specpc_examples_from_the_findings():
    from draftapprox_integrations.langchain import SpecPCCompressor

    with pytest.raises(ConfigError, match="budget must be >= 1"):
        SpecPCCompressor(budget=0)
    with pytest.raises(ConfigError, match="unknown SpecPCConfig field") as caught:
        SpecPCCompressor(config={"bogus": 1})
    assert not isinstance(caught.value, TypeError)  # a plain ConfigError, as SpecKVConfig's


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_valid_construction_loads_nothing(name):
    model = adapter(name)(budget=64, **UNLOADED)
    assert model.budget == 64 and model.get_engine().loaded is False
