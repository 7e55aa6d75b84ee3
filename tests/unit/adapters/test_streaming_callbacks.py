"""With ``streaming=True`` every generated token reaches LangChain's callbacks, in every form of the call
(FINDINGS-2 D4: ``SpecKVLLM.ainvoke`` / ``abatch`` fired none). Tiny random models, greedy."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from draftapprox_integrations.langchain import ChatSpecKV, SpecKVLLM

PROMPTS = ["hello there, which word came first?", "bye now"]


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token, **kwargs) -> None:
        self.tokens.append(token)


class _AsyncTokens(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token, **kwargs) -> None:
        self.tokens.append(token)


def _text(output) -> str:
    return output if isinstance(output, str) else output.content


@pytest.mark.parametrize("cls", [SpecKVLLM, ChatSpecKV])
@pytest.mark.parametrize("handler", [_Tokens, _AsyncTokens])
@pytest.mark.parametrize("form", ["invoke", "ainvoke", "batch", "abatch"])
def test_every_token_reaches_the_callbacks(tiny_model_factory, cls, handler, form):
    path = str(tiny_model_factory("llama"))
    model = cls(draft_model=path, target_model=path, device="cpu", dtype="float32", budget=24,
                config={"window_size": 4}, max_tokens=6, streaming=True)
    seen = handler()
    config = {"callbacks": [seen]}
    if form == "invoke":
        outputs = [model.invoke(PROMPTS[0], config=config)]
    elif form == "ainvoke":
        outputs = [asyncio.run(model.ainvoke(PROMPTS[0], config=config))]
    elif form == "batch":
        outputs = model.batch(PROMPTS, config=config)
    else:
        outputs = asyncio.run(model.abatch(PROMPTS, config=config))
    assert len(seen.tokens) == 6 * len(outputs)  # max_tokens each: random weights never say EOS this early
    assert sorted("".join(seen.tokens)) == sorted("".join(_text(o) for o in outputs))
