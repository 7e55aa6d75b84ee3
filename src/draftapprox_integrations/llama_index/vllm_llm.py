"""``SpecKVLLM`` on a vLLM server: OpenAILike plus the draft's answer in each request's ``vllm_xargs``.

    from draftapprox_integrations.llama_index.vllm_llm import SpecKVServerLLM
    llm = SpecKVServerLLM(api_base="http://127.0.0.1:8000/v1", model="smollm2", budget=128, max_tokens=64,
                          is_chat_model=True, context_window=8192)

The draft (``draft_model``) answers beside the client; the server's SpecKV plugin (docs/vllm-plugin.md)
keeps ``budget`` prompt KV entries per layer and head. Chat and completion calls, sync and async, streaming
or not, go through OpenAILike; only the request's ``extra_body`` gains the SpecKV arguments. Needs the
``serving`` extra (llama-index-llms-openai-like).
"""

from __future__ import annotations

from typing import Any

from llama_index.llms.openai_like import OpenAILike
from pydantic import Field, PrivateAttr

from ..engine.config import DEFAULT_MODEL, SpecKVConfig
from ..vllm_plugin.client import DraftAnswers


class SpecKVServerLLM(OpenAILike):
    """OpenAILike whose requests carry SpecKV arguments (``budget``, the draft's answer) for vLLM."""

    budget: int = Field(default=256, description="prompt KV entries kept per layer and KV head")
    draft_model: str = Field(default=DEFAULT_MODEL, description="the draft that writes the answer")
    speckv_config: SpecKVConfig | None = Field(default=None, description="selection settings (budget aside)")
    _answers: DraftAnswers | None = PrivateAttr(default=None)

    def _xargs(self, messages=None, text=None) -> dict[str, Any]:
        if self._answers is None:
            self._answers = DraftAnswers(self.api_base, self.model, draft_model=self.draft_model,
                                         budget=self.budget, config=self.speckv_config)
        return self._answers.xargs(messages, text, max_tokens=self.max_tokens or 128)

    def _with_xargs(self, kwargs: dict, messages=None, text=None) -> dict:
        extra = dict(kwargs.get("extra_body") or {})
        chat = None if messages is None else [{"role": m.role.value, "content": m.content or ""} for m in messages]
        extra["vllm_xargs"] = {**extra.get("vllm_xargs", {}), **self._xargs(chat, text)}
        return {**kwargs, "extra_body": extra}

    def _chat(self, messages, **kwargs):
        return super()._chat(messages, **self._with_xargs(kwargs, messages=messages))

    def _stream_chat(self, messages, **kwargs):
        return super()._stream_chat(messages, **self._with_xargs(kwargs, messages=messages))

    def _complete(self, prompt, **kwargs):
        return super()._complete(prompt, **self._with_xargs(kwargs, text=prompt))

    def _stream_complete(self, prompt, **kwargs):
        return super()._stream_complete(prompt, **self._with_xargs(kwargs, text=prompt))

    async def _achat(self, messages, **kwargs):
        return await super()._achat(messages, **self._with_xargs(kwargs, messages=messages))

    async def _astream_chat(self, messages, **kwargs):
        return await super()._astream_chat(messages, **self._with_xargs(kwargs, messages=messages))

    async def _acomplete(self, prompt, **kwargs):
        return await super()._acomplete(prompt, **self._with_xargs(kwargs, text=prompt))

    async def _astream_complete(self, prompt, **kwargs):
        return await super()._astream_complete(prompt, **self._with_xargs(kwargs, text=prompt))
