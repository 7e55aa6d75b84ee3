"""LangChain chat model backed by the SpecKV engine (the algorithm lives in ``engine/speckv.py``).

    from draftapprox_integrations.langchain import ChatSpecKV
    chat = ChatSpecKV(budget=128, max_tokens=64)          # cheap: the models load on first use
    reply = chat.invoke([("system", "Answer briefly."), ("human", long_document + "\\n\\nQuestion: ...")])
    reply.usage_metadata                 # input/output/total tokens
    reply.response_metadata["speckv"]    # KV entries/bytes kept vs full, draft/prefill/decode seconds, notes

The target's chat template renders the messages (a plain "Role: content" transcript for a base model that
has none, e.g. Gemma-3-270M). Text only: no tool calling, structured output or image/audio inputs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from .._threads import aiter_in_thread, run_in_thread
from ..engine.errors import InvalidInputError
from ._speckv_params import SpecKVParams, metadata_from_result, usage_from_stats

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidInputError(f"ChatSpecKV takes text only; got a {kind!r} content block")
    return "".join(parts)


def to_engine_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> [{"role", "content"}] for the target's chat template."""
    out = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = message.role
        elif message.type in _ROLES:
            role = _ROLES[message.type]
        else:
            raise InvalidInputError(
                f"ChatSpecKV does not support {message.type!r} messages (no tool calling); use system/human/ai messages"
            )
        out.append({"role": role, "content": _message_text(message)})
    return out


class ChatSpecKV(SpecKVParams, BaseChatModel):
    """A local chat model whose KV cache keeps only ``budget`` entries per layer and head (SpecKV).

    Fields: ``draft_model`` / ``target_model`` (embedded alias, folder, .gguf or hub id), ``device``,
    ``dtype``, ``quantization``; ``method`` (speckv | snapkv | streamingllm | full | speckv-pc), ``budget``,
    ``prompt_budget`` (speckv-pc), ``config`` (a SpecKVConfig); ``max_tokens``, ``temperature``, ``top_p``,
    ``stop``, ``seed``. Any of method/budget/config/max_tokens/temperature/top_p/seed may be overridden per
    call (``chat.invoke(msgs, budget=64)``). Components built on the same model references share one
    engine; pass ``engine=`` to share one explicitly.
    """

    @property
    def _llm_type(self) -> str:
        return "speckv-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="draftapprox",
            ls_model_name=kwargs.get("model") if isinstance(kwargs.get("model"), str) else self.target_model,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = stops
        return params

    # -- generation ---------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            chunks = list(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))
            message = chunks[0].message
            for chunk in chunks[1:]:
                message = message + chunk.message
            info = chunks[-1].generation_info or {}
            final = AIMessage(
                content=message.content,
                usage_metadata=message.usage_metadata,
                response_metadata=dict(message.response_metadata),
            )
            return ChatResult(generations=[ChatGeneration(message=final, generation_info=info)])
        gen_kwargs = self.generation_kwargs(stop, kwargs)
        result = self.get_engine().generate(to_engine_messages(messages), chat=True, **gen_kwargs)
        meta = metadata_from_result(self.target_model, result.finish_reason, result.stats)
        message = AIMessage(content=result.text, usage_metadata=usage_from_stats(result.stats), response_metadata=meta)
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=meta)],
            llm_output={"model_name": self.target_model, "token_usage": usage_from_stats(result.stats)},
        )

    def _chunks(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        gen_kwargs = self.generation_kwargs(stop, kwargs)
        for piece in self.get_engine().stream(to_engine_messages(messages), chat=True, **gen_kwargs):
            if piece.stats is None:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
                continue
            meta = metadata_from_result(self.target_model, piece.finish_reason or "length", piece.stats)
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=piece.text,
                    usage_metadata=usage_from_stats(piece.stats),
                    response_metadata=meta,
                    chunk_position="last",
                ),
                generation_info=meta,
            )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # The engine runs in a worker thread; the event loop keeps serving other tasks meanwhile.
        return await run_in_thread(self._generate, messages, stop, None, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in aiter_in_thread(lambda: self._chunks(messages, stop, kwargs)):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
