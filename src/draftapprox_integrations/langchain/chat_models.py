"""LangChain chat model backed by the SpecKV engine (the algorithm lives in ``engine/speckv/``).

    from draftapprox_integrations.langchain import ChatSpecKV
    chat = ChatSpecKV(budget=128, max_tokens=64)          # cheap: the models load on first use
    reply = chat.invoke([("system", "Answer briefly."), ("human", long_document + "\\n\\nQuestion: ...")])
    reply.usage_metadata                 # input/output/total tokens
    reply.response_metadata["speckv"]    # KV entries/bytes kept vs full, draft/prefill/decode seconds, notes

The target's chat template renders the messages (a plain "Role: content" transcript for a base model that
has none, e.g. Gemma-3-270M). Text only: no tool calling, structured output or image/audio inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from .._shared.speckv_options import ROLES, engine_role
from ..engine.errors import InvalidInputError
from ._speckv_params import SpecKVParams, metadata_from_result, usage_from_stats


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
    """LangChain messages -> [{"role", "content"}] for the target's chat template.

    Message types map through the shared role table; a ``ChatMessage`` names its role itself, and a role
    outside the table is passed to the chat template as given.
    """
    out = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = ROLES.get(message.role, message.role)
        else:
            role = engine_role(message.type, "ChatSpecKV")
        out.append({"role": role, "content": _message_text(message)})
    return out


class ChatSpecKV(SpecKVParams, BaseChatModel):
    """A local chat model whose KV cache keeps only ``budget`` entries per layer and head (SpecKV).

    Fields: ``draft_model`` / ``target_model`` (embedded alias, folder, .gguf or hub id), ``device``,
    ``dtype``, ``quantization``; ``method`` (speckv | snapkv | streamingllm | full | speckv-pc), ``budget``
    or ``rate`` (the fraction of the prompt kept, in (0, 1]; not both), ``prompt_budget`` (speckv-pc), ``config``
    (a SpecKVConfig); ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``. Any of
    method/budget/rate/prompt_budget/config/max_tokens/temperature/top_p/seed may be overridden per call
    (``chat.invoke(msgs, budget=64)``; a call's budget or rate replaces both fields), checked as at construction. Components built on
    the same model references share one engine; pass ``engine=`` to share one explicitly.
    Every keyword is checked at construction (unknown ones raise UnknownOptionError listing the accepted
    ones; bad values ConfigError, never pydantic's ValidationError), every call option before any model work.
    """

    @property
    def _llm_type(self) -> str:
        return "speckv-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params("chat", stop, kwargs)

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
