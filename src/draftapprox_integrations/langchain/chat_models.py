"""LangChain chat model backed by the SpecKV engine (the algorithm lives in ``engine/speckv/``).

    from draftapprox_integrations.langchain import ChatSpecKV
    chat = ChatSpecKV(budget=128, max_tokens=64)          # cheap: the models load on first use
    reply = chat.invoke([("system", "Answer briefly."), ("human", long_document + "\\n\\nQuestion: ...")])
    reply.usage_metadata                 # input/output/total tokens
    reply.response_metadata["speckv"]    # KV entries/bytes kept vs full, draft/prefill/decode seconds, notes

The target's chat template renders the messages (a plain "Role: content" transcript for a base model that
has none, e.g. Gemma-3-270M). ``bind_tools`` and ``with_structured_output`` (json_schema, function_calling,
json_mode) decode under a grammar (``engine.constraints``): a tool call or a JSON answer always parses, even
from a 135M model. Text only: no image/audio inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from .._shared.speckv_options import ROLES, engine_role
from ..engine.errors import InvalidInputError, check_keywords
from .._shared.tool_calls import incomplete_message
from ._speckv_params import SpecKVParams, metadata_from_result, usage_from_stats
from ._tools import BOUND, ChunkMaker, IncompleteOutputError, bind_kwargs, call_constraint, message_from_answer, structured_runnable


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
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call") and isinstance(message, AIMessage):
            continue  # a call written as a content block: the message's tool_calls carry it
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidInputError(f"ChatSpecKV takes text only; got a {kind!r} content block")
    return "".join(parts)


def to_engine_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> [{"role", "content", ...}] for the target's chat template.

    Message types map through the shared role table; a ``ChatMessage`` names its role itself, and a role
    outside the table is passed to the chat template as given. An AIMessage's ``tool_calls`` and a
    ToolMessage's ``tool_call_id`` and ``name`` go along (``engine.tool_prompts`` renders them).
    """
    out = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = ROLES.get(message.role, message.role)
        else:
            role = engine_role(message.type, "ChatSpecKV")
        item: dict[str, Any] = {"role": role, "content": _message_text(message)}
        if isinstance(message, AIMessage) and message.tool_calls:
            item["tool_calls"] = [{"name": c["name"], "arguments": c["args"], "id": c.get("id")} for c in message.tool_calls]
        if isinstance(message, ToolMessage):
            item["tool_call_id"], item["name"] = message.tool_call_id, message.name
        out.append(item)
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

    ``bind_tools(tools, tool_choice=...)``: "auto" (default: a call or text, the model's pick), "any" /
    "required" / True, "none", or a tool's name; the answer is one call, in ``tool_calls`` (streamed as
    ``tool_call_chunks``). ``with_structured_output(schema, method="json_schema" | "function_calling" |
    "json_mode", include_raw=...)``. A constrained answer cut by ``max_tokens`` raises IncompleteOutputError
    (an OutputParserException); bound free strings with ``maxLength`` or raise ``max_tokens``.
    """

    @property
    def _llm_type(self) -> str:
        return "speckv-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params("chat", stop, kwargs)

    # -- tools and structured output ----------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """This model with ``tools`` bound: each call may (or, by ``tool_choice``, must) answer with a call of
        one of them. Tools and choice are checked now: ConstraintError (a ConfigError) before any model work."""
        return super().bind(**bind_kwargs(tools, tool_choice), **kwargs)

    def with_structured_output(
        self, schema: dict | type | None = None, *, method: str = "json_schema", include_raw: bool = False, **kwargs: Any
    ) -> Runnable:
        """A runnable whose answers are ``schema``'s objects (a pydantic instance, else a dict), decoded under the
        schema's grammar. ``method``: "json_schema" (the schema as the answer's grammar, and in a system message),
        "function_calling" (a forced call of the schema as a tool) or "json_mode" (any JSON object; say in the
        prompt which). ``include_raw``: {"raw", "parsed", "parsing_error"}, a cut answer's error in
        "parsing_error"."""
        kwargs.pop("strict", None)  # the grammar always holds the answer to the schema, strict or not
        check_keywords("ChatSpecKV.with_structured_output", kwargs, ())
        return structured_runnable(self, schema, method, include_raw)

    # -- generation ---------------------------------------------------------------------------------

    def _split(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]):
        """(engine messages, generate keywords with the constraint, answer kind, tool choice, on_incomplete)."""
        kwargs = dict(kwargs)
        bound = {k: kwargs.pop(k) for k in BOUND if k in kwargs}
        on_incomplete = bound.pop("on_incomplete", "raise")
        choice = bound.get("tool_choice") or "auto"
        constraint, engine_messages, kind = call_constraint(bound, to_engine_messages(messages))
        gen_kwargs = self.generation_kwargs(stop, kwargs)
        return engine_messages, {**gen_kwargs, "constraint": constraint}, kind, choice, on_incomplete

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
            final = AIMessage(content=message.content, tool_calls=message.tool_calls,
                              usage_metadata=message.usage_metadata, response_metadata=dict(message.response_metadata))
            return ChatResult(generations=[ChatGeneration(message=final, generation_info=info)])
        engine_messages, gen_kwargs, kind, choice, on_incomplete = self._split(messages, stop, kwargs)
        result = self.get_engine().generate(engine_messages, chat=True, **gen_kwargs)
        meta = self._metadata(result.finish_reason, result.stats, result.text, on_incomplete)
        if meta.get("constraint_complete") is False:  # on_incomplete="return": the raw text, for include_raw
            message = AIMessage(content=result.text, usage_metadata=usage_from_stats(result.stats), response_metadata=meta)
        else:
            message = message_from_answer(result.text, kind, choice, usage_metadata=usage_from_stats(result.stats),
                                          response_metadata=meta)
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=meta)],
            llm_output={"model_name": self.target_model, "token_usage": usage_from_stats(result.stats)},
        )

    def _metadata(self, finish_reason: str, stats, text: str, on_incomplete: str) -> dict[str, Any]:
        """response_metadata; IncompleteOutputError for a constrained answer that max_tokens cut (unless the
        caller asked for the message, ``on_incomplete="return"``)."""
        meta = metadata_from_result(self.target_model, finish_reason, stats)
        if stats.constraint is not None:
            meta["constraint_complete"] = stats.constraint_complete
            if not stats.constraint_complete and on_incomplete == "raise":
                raise IncompleteOutputError(incomplete_message("constrained answer", text), llm_output=text)
        return meta

    def _chunks(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        engine_messages, gen_kwargs, kind, choice, on_incomplete = self._split(messages, stop, kwargs)
        maker, text = ChunkMaker(kind, choice), ""
        for piece in self.get_engine().stream(engine_messages, chat=True, **gen_kwargs):
            text += piece.text
            if piece.stats is None:
                yield ChatGenerationChunk(message=maker.chunk(piece.text))
                continue
            meta = self._metadata(piece.finish_reason or "length", piece.stats, text, on_incomplete)
            yield ChatGenerationChunk(
                message=maker.chunk(piece.text, last=True, usage_metadata=usage_from_stats(piece.stats),
                                    response_metadata=meta, chunk_position="last"),
                generation_info=meta,
            )
