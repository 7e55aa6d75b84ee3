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
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from .._threads import aiter_in_thread, run_in_thread
from ..engine.config import SpecKVConfig
from ..engine.errors import ConfigError, InvalidInputError
from ..engine.speckv import METHODS

DEFAULT_MODEL = "smollm2-135m-instruct"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "chatbot": "assistant",
          "model": "assistant"}


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


class SpecKVLLM(CustomLLM):
    """A local LLM whose KV cache keeps only ``budget`` entries per layer and head (SpecKV).

    Fields: ``draft_model`` / ``target_model``, ``device``, ``dtype``, ``quantization``; ``method``
    (speckv | snapkv | streamingllm | full | speckv-pc), ``budget``, ``prompt_budget``, ``config``;
    ``max_tokens`` (= ``metadata.num_output``), ``temperature``, ``top_p``, ``stop``, ``seed``. Per call,
    method/budget/max_tokens/temperature/top_p/seed/stop may be overridden as keyword arguments.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    draft_model: str | None = Field(default=DEFAULT_MODEL, description="draft model reference")
    target_model: str = Field(default=DEFAULT_MODEL, description="target model reference")
    device: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    method: str = "speckv"
    budget: int | None = None
    prompt_budget: int | None = None
    config: SpecKVConfig | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    engine: Any = Field(default=None, exclude=True, description="a DraftApproxEngine to use instead of get_engine(...)")

    _engine: Any = PrivateAttr(default=None)
    _target_info: tuple[int, bool] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _validate_options(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        self._config()
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.method == "speckv-pc" and self.prompt_budget is None:
            raise ConfigError("method='speckv-pc' needs prompt_budget (draft tokens of the prompt SpecPC keeps)")
        return self

    @classmethod
    def class_name(cls) -> str:
        return "SpecKVLLM"

    def _config(self, budget: int | None = None) -> SpecKVConfig:
        base = self.config or SpecKVConfig()
        chosen = budget if budget is not None else self.budget
        return base.replace(budget=chosen) if chosen is not None else base

    def get_engine(self):
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            from ..engine.engine import get_engine

            self._engine = get_engine(
                self.draft_model, self.target_model, device=self.device, dtype=self.dtype, quantization=self.quantization
            )
        return self._engine

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        # LlamaIndex passes its own bookkeeping keywords (e.g. formatted); they are not generation options.
        kwargs.pop("formatted", None)
        allowed = {"method", "budget", "max_tokens", "temperature", "top_p", "seed", "stop"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise ConfigError(f"unsupported option(s) {', '.join(sorted(unknown))}; supported: {', '.join(sorted(allowed))}")
        method = kwargs.get("method", self.method)
        return {
            "method": method,
            "config": self._config(kwargs.get("budget")),
            "prompt_budget": self.prompt_budget if method == "speckv-pc" else None,
            "max_new_tokens": kwargs.get("max_tokens", self.max_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "seed": kwargs.get("seed", self.seed),
            "stop": kwargs.get("stop", self.stop),
        }

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
