"""engine.generate on anything: a typed error of the package, or an answer within ``max_new_tokens``; and every
invalid input (bad temperature / top_p / seed / stop / budget / method values, empty or surrogate-containing
prompts) refused before any weight loads.

The engine pairs a tiny random llama (tests/conftest.py) with itself, loaded once for the module; the
"before any weight loads" checks use a fresh engine that nothing has loaded.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from draftapprox_integrations.engine import GENERATION_METHODS, DraftApproxEngine, SpecKVConfig, SpecPCConfig
from draftapprox_integrations.engine.errors import DraftApproxError
from tests.helpers import TINY
from tests.unit.properties._strategies import BROKEN_TEXT, SETTINGS, SPACES, VALID_TEXT, examples

FINISH_REASONS = {"stop", "length", "eos"}

@pytest.fixture(scope="module")
def pair(pair_engine) -> DraftApproxEngine:
    """The module's engine: the tiny llama as draft and target (tests/unit/properties/conftest.py)."""
    return pair_engine


def unloaded(tiny_path: str) -> DraftApproxEngine:
    """A fresh engine nothing has loaded: a refused input must leave it so."""
    return DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32")


def assert_not_loaded(engine: DraftApproxEngine) -> None:
    assert engine._draft is None and engine._target is None, "a model was loaded for an input that is refused"


# -- strategies ---------------------------------------------------------------------------------------------

PROMPT_TEXT = VALID_TEXT.map(lambda t: t if t.strip() else t + "Hello")
ROLES = st.sampled_from(["system", "user", "assistant", "user", "user"])


@st.composite
def messages(draw, text=PROMPT_TEXT) -> list[dict]:
    out = [{"role": draw(ROLES), "content": draw(VALID_TEXT)} for _ in range(draw(st.integers(0, 2)))]
    return out + [{"role": "user", "content": draw(text)}]


PROMPTS = st.one_of(PROMPT_TEXT, PROMPT_TEXT, messages())
STOPS = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=3),
    st.lists(st.one_of(st.text(min_size=1, max_size=3), st.sampled_from([".", "\n", " the", "Ġ"])), max_size=3),
)


@st.composite
def generation_options(draw) -> dict:
    """Valid generation options for the tiny pair (budgets small enough to cut most prompts)."""
    method = draw(st.sampled_from(GENERATION_METHODS))
    window = draw(st.integers(1, 16))
    options = {
        "method": method,
        "config": SpecKVConfig(
            budget=draw(st.integers(window + 4, 96)),
            window_size=window,
            kernel_size=draw(st.sampled_from([1, 3, 5, 7])),
            pooling=draw(st.sampled_from(["max", "avg"])),
            sink_tokens=draw(st.integers(0, 3)),
            lookahead_tokens=draw(st.one_of(st.none(), st.integers(0, 3))),
        ),
        "max_new_tokens": draw(st.integers(1, 6)),
        # (positive temperatures below float32's smallest normal, ~1.2e-38, have their own test below)
        "temperature": draw(st.one_of(st.just(0.0), st.floats(1e-30, 3.0), st.integers(0, 2))),
        "top_p": draw(st.one_of(st.just(1.0), st.floats(0.01, 1.0))),
        "seed": draw(st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1))),
        "stop": draw(STOPS),
        "chat": draw(st.sampled_from([None, True, False])),
    }
    if draw(st.booleans()):
        options["budget"] = draw(st.integers(window + 1, 300))
    if method == "speckv-pc":
        options["prompt_budget"] = draw(st.integers(1, 80))
        options["specpc_config"] = SpecPCConfig(**TINY)
    return options


# One bad ingredient each, bad whatever the valid options it joins: refused before any weight loads.
BAD_OPTIONS = st.one_of(
    st.fixed_dictionaries({"temperature": st.sampled_from([-0.1, -1, float("nan"), float("inf"), True, "0.5", None])}),
    st.fixed_dictionaries({"top_p": st.sampled_from([0, 0.0, -0.5, 1.0001, 5, float("nan"), float("-inf"), True, None])}),
    st.fixed_dictionaries({"seed": st.sampled_from([True, False, 1.5, 2**64, -(2**63) - 1, 10**30, "7"])}),
    st.fixed_dictionaries({"stop": st.sampled_from(["", [""], ["a", ""], 5, [5], [None], {"x"}, b"x"])}),
    st.fixed_dictionaries({"budget": st.sampled_from([0, -3, True, 1.5, "64"])}),
    st.just({"budget": 31, "config": None}),  # below the default window (32)
    st.fixed_dictionaries({"max_new_tokens": st.sampled_from([0, -1, True, 2.0, None, "4"])}),
    st.fixed_dictionaries({"method": st.sampled_from(["specpc", "h2o", "", None, 5, "SPECKV"])}),
    st.fixed_dictionaries({"method": st.sampled_from(["speckv", "snapkv", "full"]), "prompt_budget": st.just(5)}),
    st.fixed_dictionaries({"method": st.sampled_from(["speckv", "full"]), "specpc_config": st.just(SpecPCConfig(**TINY))}),
    st.just({"method": "speckv-pc", "prompt_budget": None}),  # speckv-pc needs its prompt_budget
    st.fixed_dictionaries({"method": st.just("speckv-pc"), "prompt_budget": st.sampled_from([0, -1, True, 2.5, "9"])}),
    st.fixed_dictionaries({"method": st.just("speckv-pc"), "prompt_budget": st.just(8), "specpc_config": st.just({"window_size": 8})}),
    st.fixed_dictionaries({"config": st.sampled_from([{"budget": 64}, "speckv", 64])}),
    st.just({"method": "streamingllm", "budget": None, "config": SpecKVConfig(budget=8, window_size=4, sink_tokens=8)}),
)


@st.composite
def bad_prompts(draw):
    """Prompts that are no prompt: empty, blank, lone surrogates, empty or malformed message lists."""
    kind = draw(st.sampled_from(["empty", "blank", "surrogate", "no messages", "blank messages", "surrogate message",
                                 "surrogate role", "bad message", "type"]))
    if kind == "empty":
        return ""
    if kind == "blank":
        return draw(st.text(SPACES, min_size=1, max_size=6))
    if kind == "surrogate":
        return draw(BROKEN_TEXT)
    if kind == "no messages":
        return draw(st.sampled_from([[], ()]))
    if kind == "blank messages":
        return [{"role": "user", "content": draw(st.text(SPACES, max_size=4))} for _ in range(draw(st.integers(1, 3)))]
    if kind == "surrogate message":
        return draw(messages(text=BROKEN_TEXT))
    if kind == "surrogate role":
        return [{"role": draw(BROKEN_TEXT), "content": "Hello"}]
    if kind == "bad message":
        return [draw(st.sampled_from([{"role": "user"}, {"content": "hi"}, {"role": "user", "content": 5}, "hi", None]))]
    return draw(st.sampled_from([None, 5, b"hello", {"role": "user", "content": "hi"}]))


# -- engine.generate ------------------------------------------------------------------------------------------


def check_generation(result, max_new_tokens: int, stop) -> None:
    assert result.finish_reason in FINISH_REASONS
    stats = result.stats
    assert 0 <= stats.completion_tokens <= max_new_tokens, f"{stats.completion_tokens} > {max_new_tokens} new tokens"
    assert len(result.token_ids) == stats.completion_tokens
    assert stats.prompt_tokens >= 1
    assert 0 <= stats.kv_entries_kept <= stats.kv_entries_full
    if result.finish_reason == "length":
        assert stats.completion_tokens >= 1
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    assert not any(s in result.text for s in stops), f"a stop sequence left in {result.text!r}"


@settings(max_examples=examples(120), **SETTINGS)
@given(prompt=PROMPTS, options=generation_options())
def test_generate_typed_error_or_answer_within_max_new_tokens(pair, prompt, options):
    try:
        result = pair.generate(prompt, **options)
    except DraftApproxError as exc:
        event(f"error: {type(exc).__name__}")
        return
    event(f"result: {options['method']}, {result.finish_reason}")
    check_generation(result, options["max_new_tokens"], options["stop"])


@pytest.mark.parametrize("top_p", [1.0, 0.9])
@pytest.mark.parametrize("temperature", [1e-39, 1e-45, 5e-324])
def test_tiny_positive_temperature_is_typed_error_or_answer(pair, temperature, top_p):
    try:
        result = pair.generate("Hello", method="full", max_new_tokens=1, temperature=temperature, top_p=top_p, seed=0)
    except DraftApproxError:
        return
    check_generation(result, 1, None)


@settings(max_examples=examples(100), **SETTINGS)
@given(data=st.data(), options=generation_options(), stream=st.booleans())
def test_invalid_input_refused_before_any_model_loads(tiny_path, data, options, stream):
    """One bad option, or a prompt that is no prompt: a DraftApproxError from generate (and from stream, at the
    call, not at the first chunk), with no weight loaded."""
    if data.draw(st.sampled_from(["bad option", "bad prompt"])) == "bad option":
        prompt = data.draw(PROMPTS)
        options = {**options, **data.draw(BAD_OPTIONS)}
    else:
        prompt = data.draw(bad_prompts())
    engine = unloaded(tiny_path)
    with pytest.raises(DraftApproxError) as caught:
        (engine.stream if stream else engine.generate)(prompt, **options)
    event(f"refused: {type(caught.value).__name__}")
    assert_not_loaded(engine)
