"""Issue 13, items 1-4 at the adapters: a plain prompt gets the chat template, token counting uses the target's
tokenizer (no weights), LlamaIndex's system_prompt / context_window / tokenizer hook, the same aliases in both
frameworks, model keywords through the adapters' options. Tiny random models: token counts, not answers."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from llama_index.core import Settings
from llama_index.core.llms import ChatMessage, MessageRole

from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig, get_engine, weights
from draftapprox_integrations.engine.errors import ConfigError, InvalidInputError
from draftapprox_integrations.langchain import ChatSpecKV
from draftapprox_integrations.langchain import SpecKVLLM as LangChainLLM
from draftapprox_integrations.llama_index import SpecKVLLM as LlamaIndexLLM

KV = SpecKVConfig(budget=8, window_size=4)
PROMPT = "The vault code is 4417. What is the vault code?"
SYSTEM = "Answer with the code only."


@pytest.fixture(scope="module")
def tiny_path(tiny_model_factory) -> str:
    return str(tiny_model_factory("llama"))


@pytest.fixture(scope="module")
def pair(tiny_path):
    return DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32")


def templated_length(engine, messages) -> int:
    tok = engine.target.tokenizer
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tok(rendered, add_special_tokens=False)["input_ids"])


def plain_length(engine, text) -> int:
    return len(engine.target.tokenizer(text, add_special_tokens=True)["input_ids"])


# -- item 1 -------------------------------------------------------------------------------------------


def test_langchain_llm_uses_the_chat_template_by_default(pair):
    user = [{"role": "user", "content": PROMPT}]
    default = LangChainLLM(engine=pair, config=KV, max_tokens=2).generate([PROMPT])
    raw = LangChainLLM(engine=pair, config=KV, max_tokens=2, chat=False).generate([PROMPT])
    assert default.generations[0][0].generation_info["token_usage"]["input_tokens"] == templated_length(pair, user)
    assert raw.generations[0][0].generation_info["token_usage"]["input_tokens"] == plain_length(pair, PROMPT)


def test_llama_index_complete_uses_the_chat_template(pair):
    llm = LlamaIndexLLM(engine=pair, config=KV, max_tokens=2)
    response = llm.complete(PROMPT)
    assert response.additional_kwargs["prompt_tokens"] == templated_length(pair, [{"role": "user", "content": PROMPT}])
    # formatted=True: the caller formatted the prompt (LlamaIndex's meaning), so it is sent as it is.
    assert llm.complete(PROMPT, formatted=True).additional_kwargs["prompt_tokens"] == plain_length(pair, PROMPT)


# -- item 2 -------------------------------------------------------------------------------------------


def test_token_counting_uses_the_target_tokenizer_without_weights(tiny_path, monkeypatch):
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("token counting loaded the weights"))
    engine = DraftApproxEngine(tiny_path, tiny_path, device="cpu", dtype="float32")
    expected = engine.target_tokenizer.encode(PROMPT, add_special_tokens=False)
    for model in (ChatSpecKV(engine=engine), LangChainLLM(engine=engine)):
        assert model.get_token_ids(PROMPT) == expected
        assert model.get_num_tokens(PROMPT) == len(expected)
    li = LlamaIndexLLM(engine=engine)
    assert li.tokenizer(PROMPT) == expected
    assert not engine.loaded


def test_llama_index_tokenizer_hook_counts_with_the_target(pair):
    from llama_index.core.utilities.token_counting import TokenCounter

    llm = LlamaIndexLLM(engine=pair)
    previous = Settings._tokenizer
    try:
        Settings.tokenizer = llm.tokenizer
        assert TokenCounter().get_string_tokens(PROMPT) == len(pair.target_tokenizer.encode(PROMPT, add_special_tokens=False))
    finally:
        Settings._tokenizer = previous
        import llama_index.core

        llama_index.core.global_tokenizer = None


def test_langchain_custom_get_token_ids_still_wins(pair):
    chat = ChatSpecKV(engine=pair, custom_get_token_ids=lambda text: [1, 2, 3])
    assert chat.get_num_tokens(PROMPT) == 3


def test_token_counting_refuses_what_is_not_text(pair):
    with pytest.raises(InvalidInputError):
        ChatSpecKV(engine=pair).get_token_ids(["a list"])
    with pytest.raises(InvalidInputError):
        LlamaIndexLLM(engine=pair).tokenizer("\ud800")


def test_langchain_trim_messages_counts_with_the_target(pair):
    """trim_messages(token_counter=chat) keeps history by the target's own token counts."""
    from langchain_core.messages import trim_messages

    chat = ChatSpecKV(engine=pair)
    history = [HumanMessage(f"message {i}: " + "river stone " * 10) for i in range(6)]
    per_message = chat.get_num_tokens_from_messages(history[:1])
    kept = trim_messages(history, max_tokens=per_message * 2, token_counter=chat, strategy="last")
    assert len(kept) == 2 and kept == history[-2:]


# -- item 3 -------------------------------------------------------------------------------------------


def test_llama_index_chat_honours_system_prompt(pair):
    user = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    with_system = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    llm = LlamaIndexLLM(engine=pair, config=KV, max_tokens=2, system_prompt=SYSTEM)
    assert llm.chat(user).additional_kwargs["prompt_tokens"] == templated_length(pair, with_system)
    # Messages that bring their own system message keep it, and get no second one.
    own = [ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), *user]
    own_length = templated_length(pair, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}])
    assert llm.chat(own).additional_kwargs["prompt_tokens"] == own_length
    # predict() (what query engines call) adds the system prompt itself: it is sent once.
    assert LlamaIndexLLM(engine=pair, config=KV, max_tokens=2).chat(user).additional_kwargs["prompt_tokens"] == templated_length(
        pair, [{"role": "user", "content": PROMPT}]
    )


def test_llama_index_complete_honours_system_prompt(pair):
    with_system = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    llm = LlamaIndexLLM(engine=pair, config=KV, max_tokens=2, system_prompt=SYSTEM)
    assert llm.complete(PROMPT).additional_kwargs["prompt_tokens"] == templated_length(pair, with_system)
    streamed = list(llm.stream_complete(PROMPT))[-1]
    assert streamed.additional_kwargs["prompt_tokens"] == templated_length(pair, with_system)
    # formatted=True: the prompt is final, no system prompt is added.
    assert llm.complete(PROMPT, formatted=True).additional_kwargs["prompt_tokens"] == plain_length(pair, PROMPT)


def test_llama_index_completion_to_prompt_is_sent_as_written(pair):
    llm = LlamaIndexLLM(engine=pair, config=KV, max_tokens=2, system_prompt=SYSTEM, completion_to_prompt=lambda p: f"Q: {p}\nA:")
    assert llm.complete(PROMPT).additional_kwargs["prompt_tokens"] == plain_length(pair, f"Q: {PROMPT}\nA:")


def test_llama_index_context_window(pair, tiny_path):
    assert LlamaIndexLLM(engine=pair).metadata.context_window == 4096  # the tiny model's config
    assert LlamaIndexLLM(engine=pair, context_window=1024).metadata.context_window == 1024
    for bad in (0, -5, "2048", True):
        with pytest.raises(ConfigError, match="context_window"):
            LlamaIndexLLM(engine=pair, context_window=bad)


@pytest.mark.parametrize("cls", [ChatSpecKV, LangChainLLM, LlamaIndexLLM], ids=["lc-chat", "lc-llm", "li-llm"])
def test_aliases_are_the_same_in_both_frameworks(cls, tiny_path):
    model = cls(model=tiny_path, max_new_tokens=7, model_kwargs={"revision": "main"})
    assert (model.target_model, model.max_tokens, model.target_model_kwargs) == (tiny_path, 7, {"revision": "main"})
    with pytest.raises(ConfigError, match="not both"):
        cls(model_kwargs={}, target_model_kwargs={})
    with pytest.raises(ConfigError, match="attn_implementation"):
        cls(draft_model_kwargs={"attn_implementation": "eager"})


# -- item 4 at the adapters ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ChatSpecKV, LlamaIndexLLM], ids=["lc-chat", "li-llm"])
def test_adapters_pass_model_kwargs_to_their_engine(cls, tiny_path):
    model = cls(draft_model=tiny_path, target_model=tiny_path, device="cpu", target_model_kwargs={"revision": "main"})
    engine = model.get_engine()
    assert engine is get_engine(tiny_path, tiny_path, device="cpu", target_model_kwargs={"revision": "main"})
    assert engine.target_model_kwargs == {"revision": "main"} and engine.draft_model_kwargs == {}


def test_adapters_take_ready_models_through_an_engine(tiny_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_path), AutoTokenizer.from_pretrained(tiny_path)
    engine = get_engine(model, model, draft_tokenizer=tokenizer, target_tokenizer=tokenizer)
    chat = ChatSpecKV(engine=engine, config=KV, max_tokens=2)
    reply = chat.invoke([HumanMessage(PROMPT)])
    assert engine.target.model is model and reply.usage_metadata["output_tokens"] <= 2


@pytest.mark.parametrize("cls", [ChatSpecKV, LangChainLLM, LlamaIndexLLM])
def test_max_batch_size_beside_an_engine_must_be_the_engines(cls, pair):
    # FINDINGS-2 (minor): ChatSpecKV(engine=E, max_batch_size=2) silently kept E's 8.
    with pytest.raises(ConfigError, match="max_batch_size=2 applies to the engine an adapter creates"):
        cls(engine=pair, max_batch_size=2)
    assert cls(engine=pair, max_batch_size=pair.max_batch_size).get_engine() is pair
