"""``ChatSpecKV`` on a vLLM server: ChatOpenAI plus the draft's answer in each request's ``vllm_xargs``.

    from draftapprox_integrations.langchain.vllm_chat import ChatSpecKVServer
    chat = ChatSpecKVServer(base_url="http://127.0.0.1:8000/v1", model="smollm2", budget=128, max_tokens=64)

A chain that used ``ChatSpecKV(budget=128, max_tokens=64)`` switches to the server by changing that one
class: the draft (``draft_model``, the same default small model) answers beside the client, the server's
SpecKV plugin (docs/vllm-plugin.md) keeps ``budget`` prompt KV entries per layer and head. Everything else
is ChatOpenAI's (streaming, batching, async, callbacks). Needs the ``serving`` extra (langchain-openai).
"""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI
from pydantic import ConfigDict, Field, PrivateAttr

from ..engine.config import DEFAULT_MODEL, SpecKVConfig
from ..vllm_plugin.client import DraftAnswers


class ChatSpecKVServer(ChatOpenAI):
    """ChatOpenAI whose requests carry SpecKV arguments (``budget``, the draft's answer) for vLLM."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)
    budget: int = 256
    draft_model: str = DEFAULT_MODEL
    speckv_config: SpecKVConfig | None = Field(default=None, description="selection settings (budget aside)")
    draft_device: str = "auto"
    draft_dtype: str = "auto"
    _answers: DraftAnswers | None = PrivateAttr(default=None)

    def _draft(self) -> DraftAnswers:
        if self._answers is None:
            self._answers = DraftAnswers(str(self.openai_api_base), self.model_name, draft_model=self.draft_model,
                                         budget=self.budget, config=self.speckv_config, device=self.draft_device,
                                         dtype=self.draft_dtype)
        return self._answers

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        messages = [{"role": m["role"], "content": m["content"]} for m in payload["messages"]]
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens") or 128
        extra = dict(payload.get("extra_body") or {})
        extra["vllm_xargs"] = {**extra.get("vllm_xargs", {}), **self._draft().xargs(messages, max_tokens=max_tokens)}
        payload["extra_body"] = extra
        return payload
