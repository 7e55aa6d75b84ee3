"""LlamaIndex LLM backed by the SpecKV engine (the algorithm lives in ``engine/speckv/``).

    from llama_index.core import Settings, VectorStoreIndex
    from draftapprox_integrations.llama_index import SpecKVLLM
    Settings.llm = SpecKVLLM(budget=128, max_tokens=64)      # cheap: the models load on first use
    index.as_query_engine().query("...")

``chat`` / ``stream_chat`` render the messages with the target's chat template (a plain transcript for a
base model without one); ``complete`` sends the prompt as one user message through the chat template when the
target has one, as plain text when it has none, and as it is with ``formatted=True``. ``system_prompt`` is honoured as LlamaIndex's own LLMs do:
``chat`` puts it first as a system message unless the messages start with one; ``complete`` (unless
``formatted=True`` or a ``completion_to_prompt`` of yours formats the prompt) sends it as a system message,
or for a base model writes it before the prompt. The async forms run the engine in a worker thread. Every
response's ``additional_kwargs`` holds the token usage and the KV statistics.

It is a ``FunctionCallingLLM``: ``chat_with_tools`` (and its async and streaming forms) decodes under a
grammar of the tools' schemas (``engine.constraints``), so ``FunctionAgent``, ``predict_and_call``,
``structured_predict`` and ``as_structured_llm`` work with it; a call comes back as a ``ToolCallBlock``.
"""

from __future__ import annotations

import logging
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
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection, default_completion_to_prompt

from .._shared.speckv_options import SpecKVOptions
from .._shared.threads import aiter_in_thread, run_in_thread
from .._shared.tool_calls import CallStream
from .._shared.tool_calls import tool_choice as engine_tool_choice
from ..engine.constraints import ToolCalls, check_constraint
from ..engine.errors import DraftApproxError, InvalidInputError
from ..engine.loading import ModelFacts, describe_model
from ._messages import IncompleteOutputError  # noqa: F401 - raised by chat_with_tools; importable from here
from ._messages import answer_message, response_info, tool_spec, to_engine_messages

logger = logging.getLogger(__name__)


class SpecKVLLM(SpecKVOptions, FunctionCallingLLM):
    """A local LLM whose KV cache keeps only ``budget`` entries per layer and head (SpecKV).

    Fields (shared with the LangChain adapters, with the same aliases and checks): ``draft_model`` /
    ``target_model`` (alias ``model``), ``device``, ``dtype``, ``quantization``; ``method`` (speckv | snapkv |
    streamingllm | full | speckv-pc), ``budget`` or ``rate`` (the fraction of the prompt kept, in (0, 1]; not
    both), ``prompt_budget``, ``config``; ``max_tokens`` (alias ``max_new_tokens``; = ``metadata.num_output``),
    ``temperature``, ``top_p``, ``stop``, ``seed``. Per call, method/budget/rate/prompt_budget/config/max_tokens/
    temperature/top_p/seed/stop may be overridden as keyword arguments (a call's budget or rate replaces both
    fields). ``context_window`` (default: the target's, read from its config) is what ``metadata`` reports,
    which LlamaIndex uses to pack retrieved text into prompts. ``metadata`` reads the target's config files and
    ``tokenizer`` (for ``Settings.tokenizer``, a token counter) the target's tokenizer: neither loads weights.

    Every keyword and option is checked before any model work (unknown ones raise UnknownOptionError, bad
    values ConfigError). Text only: a message with an image, audio, document or other non-text block raises
    InvalidInputError, in chat, achat, stream_chat and astream_chat alike (when called, not when read).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    context_window: int | None = Field(
        default=None, strict=True, gt=0, description="the context window metadata reports (default: the target's)"
    )

    _facts: ModelFacts | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SpecKVLLM"

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        # LlamaIndex passes its own bookkeeping keywords (e.g. formatted); they are not generation options.
        kwargs.pop("formatted", None)
        tools, choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        options = self.call_options(kwargs)
        if tools is not None:  # bound by _prepare_chat_with_tools: specs and the engine's choice
            options["constraint"] = ToolCalls(tools, choice)
        return options

    # -- metadata ------------------------------------------------------------------------------------

    def _target_facts(self) -> ModelFacts:
        """Context window and chat template of the target, from its config files (no weights load); LlamaIndex's
        defaults when they cannot be read."""
        if self._facts is None:
            engine = self.engine if self.engine is not None else self._engine
            source = getattr(engine, "target_source", None)
            reference = source.location if source is not None else self.target_model
            try:
                self._facts = describe_model(reference)
            except (DraftApproxError, OSError, ValueError) as exc:
                logger.warning("cannot read the config of %r (%s); metadata uses LlamaIndex's defaults", reference, exc)
                self._facts = ModelFacts(context_length=DEFAULT_CONTEXT_WINDOW, has_chat_template=False)
        return self._facts

    @property
    def metadata(self) -> LLMMetadata:
        facts = self._target_facts()
        return LLMMetadata(
            context_window=self.context_window or facts.context_length,
            num_output=self.max_tokens,
            is_chat_model=facts.has_chat_template,
            is_function_calling_model=True,
            model_name=f"{self.target_model} ({self.method})",
        )

    # -- completion -----------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The target's tokenizer as LlamaIndex's token counters take it (``Settings.tokenizer = llm.tokenizer``):
        text -> token ids, no special tokens. The tokenizer loads on the first call, the weights never."""
        return self.get_token_ids

    def _prompt(self, prompt: str, formatted: bool) -> tuple[str | list[dict[str, str]], bool | None]:
        """(what the engine reads, its ``chat`` argument) for a completion prompt."""
        if not isinstance(prompt, str):
            raise InvalidInputError(f"SpecKVLLM.complete takes a string prompt, got {type(prompt).__name__}")
        if formatted:  # formatted by the caller (LlamaIndex's own meaning of the flag): sent as it is
            return prompt, False
        if self.completion_to_prompt not in (None, default_completion_to_prompt):
            return self.completion_to_prompt(prompt), False  # your own format: sent as it is
        if not self.system_prompt:
            return prompt, None
        if self._target_facts().has_chat_template:
            return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}], None
        return f"{self.system_prompt}\n\n{prompt}", None  # a base model: the system prompt leads, as LLM.predict writes it

    def _with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt and not (messages and messages[0]["role"] == "system"):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        (text, chat), options = self._prompt(prompt, formatted), self._kwargs(kwargs)
        result = self.get_engine().generate(text, chat=chat, **options)
        return CompletionResponse(text=result.text, additional_kwargs=response_info(result.stats, result.finish_reason))

    def _completion_stream(self, prompt: tuple[Any, bool | None], options: dict[str, Any]):
        text = ""
        for piece in self.get_engine().stream(prompt[0], chat=prompt[1], **options):
            text += piece.text
            extra = response_info(piece.stats, piece.finish_reason or "length") if piece.stats is not None else {}
            yield CompletionResponse(text=text, delta=piece.text, additional_kwargs=extra)

    # The stream and async forms check their input on the calling thread, when called (not at the first
    # item, not in the worker thread): the same errors as the plain forms, before any model work.

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._completion_stream(self._prompt(prompt, formatted), self._kwargs(kwargs))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        (text, chat), options = self._prompt(prompt, formatted), self._kwargs(kwargs)
        result = await run_in_thread(self.get_engine().generate, text, chat=chat, **options)
        return CompletionResponse(text=result.text, additional_kwargs=response_info(result.stats, result.finish_reason))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        prompt, options = self._prompt(prompt, formatted), self._kwargs(kwargs)
        return aiter_in_thread(lambda: self._completion_stream(prompt, options))

    # -- chat -------------------------------------------------------------------------------------------

    def _chat_response(self, messages: list[dict[str, str]], options: dict[str, Any]) -> ChatResponse:
        result = self.get_engine().generate(messages, chat=True, **options)
        return ChatResponse(
            message=answer_message(result.text, options, result.stats),
            additional_kwargs=response_info(result.stats, result.finish_reason),
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(self._with_system(to_engine_messages(messages)), self._kwargs(kwargs))

    def _chat_stream(self, messages: list[dict[str, str]], options: dict[str, Any]):
        """Text deltas as they come; under a tool constraint a call streams no text and the last response holds
        it as a ToolCallBlock."""
        constraint = options.get("constraint")
        calls = CallStream(constraint.choice) if constraint is not None else None
        text, shown = "", ""
        for piece in self.get_engine().stream(messages, chat=True, **options):
            text += piece.text
            delta = piece.text if calls is None else calls.push(piece.text)[0]
            shown += delta
            if piece.stats is None:
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=shown), delta=delta)
                continue
            yield ChatResponse(message=answer_message(text, options, piece.stats), delta=delta,
                               additional_kwargs=response_info(piece.stats, piece.finish_reason or "length"))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chat_stream(self._with_system(to_engine_messages(messages)), self._kwargs(kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        engine_messages, options = self._with_system(to_engine_messages(messages)), self._kwargs(kwargs)
        return await run_in_thread(self._chat_response, engine_messages, options)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        engine_messages, options = self._with_system(to_engine_messages(messages)), self._kwargs(kwargs)
        return aiter_in_thread(lambda: self._chat_stream(engine_messages, options))

    # -- function calling --------------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """chat() keywords for a call that may (``tool_required``: must) call one of ``tools``; ``tool_choice``
        ("auto", "required", "none", a tool's name) overrides. One call per answer, whatever
        ``allow_parallel_tool_calls`` says. The tools are checked now (ConstraintError)."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
        specs = [tool_spec(tool) for tool in tools]
        if not specs:
            return {"messages": messages, **kwargs}
        choice = engine_tool_choice(tool_choice if tool_choice is not None else ("required" if tool_required else "auto"),
                                    [spec["name"] for spec in specs])
        check_constraint(ToolCalls(specs, choice))
        return {"messages": messages, "tools": specs, "tool_choice": choice, **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The calls in a response (its ToolCallBlocks); ValueError when there is none and one was expected."""
        calls = [
            ToolSelection(tool_id=block.tool_call_id or "", tool_name=block.tool_name,
                          tool_kwargs=block.tool_kwargs if isinstance(block.tool_kwargs, dict) else {})
            for block in response.message.blocks if isinstance(block, ToolCallBlock)
        ]
        if not calls and error_on_no_tool_call:
            raise ValueError(f"expected a tool call, got the text {response.message.content!r}")
        return calls
