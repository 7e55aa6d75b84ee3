"""LlamaIndex LLM backed by the SpecKV engine (the algorithm lives in ``engine/speckv.py``).

    from llama_index.core import Settings, VectorStoreIndex
    from draftapprox_integrations.llama_index import SpecKVLLM
    Settings.llm = SpecKVLLM(budget=128, max_tokens=64)      # cheap: the models load on first use
    index.as_query_engine().query("...")

``chat`` / ``stream_chat`` render the messages with the target's chat template (a plain transcript for a
base model without one); ``complete`` sends the prompt as plain text. The async forms run the engine in a
worker thread. Every response's ``additional_kwargs`` holds the token usage and the KV statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from .._speckv_options import DEFAULT_MODEL, SpecKVOptions
from .._threads import aiter_in_thread, run_in_thread
from ..engine.errors import InvalidInputError

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "chatbot": "assistant",
          "model": "assistant"}
# Per-call keyword arguments that reach engine.generate (anything else is refused with a clear error).
_CALL_OPTIONS = ("budget", "max_tokens", "method", "seed", "stop", "temperature", "top_p")


def to_engine_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    out = []
    for message in messages:
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        if role not in _ROLES:
            raise InvalidInputError(f"SpecKVLLM does not support {role!r} messages (no tool calling)")
        out.append({"role": _ROLES[role], "content": message.content or ""})
    return out


def _info(result_stats, finish_reason: str) -> dict[str, Any]:
    return {
        "finish_reason": finish_reason,
        "prompt_tokens": result_stats.prompt_tokens,
        "completion_tokens": result_stats.completion_tokens,
        "total_tokens": result_stats.prompt_tokens + result_stats.completion_tokens,
        "speckv": result_stats.to_dict(),
    }


class SpecKVLLM(SpecKVOptions, CustomLLM):
    """A local LLM whose KV cache keeps only ``budget`` entries per layer and head (SpecKV).

    Fields: ``draft_model`` / ``target_model``, ``device``, ``dtype``, ``quantization``; ``method``
    (speckv | snapkv | streamingllm | full | speckv-pc), ``budget``, ``prompt_budget``, ``config``;
    ``max_tokens`` (= ``metadata.num_output``), ``temperature``, ``top_p``, ``stop``, ``seed``. Per call,
    method/budget/max_tokens/temperature/top_p/seed/stop may be overridden as keyword arguments.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    draft_model: str | None = Field(default=DEFAULT_MODEL, description="draft model reference")
    target_model: str = Field(default=DEFAULT_MODEL, description="target model reference")
    _target_info: tuple[int, bool] | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SpecKVLLM"

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        # LlamaIndex passes its own bookkeeping keywords (e.g. formatted); they are not generation options.
        kwargs.pop("formatted", None)
        return self._engine_kwargs(kwargs, _CALL_OPTIONS, kwargs.get("stop", self.stop))

    # -- metadata ------------------------------------------------------------------------------------

    def _target_facts(self) -> tuple[int, bool]:
        """(context window, has a chat template) of the target, read from the loaded model (loads it once)."""
        if self._target_info is None:
            target = self.get_engine().target
            self._target_info = (target.context_length, target.has_chat_template)
        return self._target_info

    @property
    def metadata(self) -> LLMMetadata:
        context_window, is_chat = self._target_facts()
        return LLMMetadata(
            context_window=context_window,
            num_output=self.max_tokens,
            is_chat_model=is_chat,
            is_function_calling_model=False,
            model_name=f"{self.target_model} ({self.method})",
        )

    # -- completion -----------------------------------------------------------------------------------

    def _prompt(self, prompt: str, formatted: bool) -> str:
        if not formatted and self.completion_to_prompt is not None:
            return self.completion_to_prompt(prompt)
        return prompt

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self.get_engine().generate(self._prompt(prompt, formatted), **self._kwargs(kwargs))
        return CompletionResponse(text=result.text, additional_kwargs=_info(result.stats, result.finish_reason))

    def _completion_stream(self, prompt: str, kwargs: dict[str, Any]):
        text = ""
        for piece in self.get_engine().stream(prompt, **self._kwargs(kwargs)):
            text += piece.text
            extra = _info(piece.stats, piece.finish_reason or "length") if piece.stats is not None else {}
            yield CompletionResponse(text=text, delta=piece.text, additional_kwargs=extra)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._completion_stream(self._prompt(prompt, formatted), kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        prompt = self._prompt(prompt, formatted)
        result = await run_in_thread(self.get_engine().generate, prompt, **self._kwargs(kwargs))
        return CompletionResponse(text=result.text, additional_kwargs=_info(result.stats, result.finish_reason))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        prompt = self._prompt(prompt, formatted)
        return aiter_in_thread(lambda: self._completion_stream(prompt, kwargs))

    # -- chat -------------------------------------------------------------------------------------------

    def _chat_response(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        result = self.get_engine().generate(to_engine_messages(messages), chat=True, **self._kwargs(kwargs))
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text),
            additional_kwargs=_info(result.stats, result.finish_reason),
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(messages, kwargs)

    def _chat_stream(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]):
        text = ""
        for piece in self.get_engine().stream(to_engine_messages(messages), chat=True, **self._kwargs(kwargs)):
            text += piece.text
            extra = _info(piece.stats, piece.finish_reason or "length") if piece.stats is not None else {}
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece.text, additional_kwargs=extra
            )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chat_stream(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await run_in_thread(self._chat_response, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return aiter_in_thread(lambda: self._chat_stream(messages, kwargs))
