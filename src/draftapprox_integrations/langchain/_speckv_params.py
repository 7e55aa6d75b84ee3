"""LangChain glue shared by the SpecKV chat model and LLM (no algorithm, no validation of its own).

The fields, their aliases and checks, the per-call options and the token usage are those of every SpecKV
adapter (``_shared/speckv_options``); this adds only what LangChain has: streaming callbacks, LangSmith
params, and fields accepted for code written against hosted models.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk
from pydantic import Field, SecretStr

from .._shared.speckv_options import SpecKVOptions, token_usage
from .._shared.threads import aiter_in_thread, run_in_thread


class SpecKVParams(SpecKVOptions):
    """The shared SpecKV options plus LangChain's streaming flag and hosted-model no-op fields.

    Contract: a subclass implements :meth:`_chunks` (one generation as LangChain chunks) and LangChain's
    synchronous ``_generate``; ``_stream``, ``_agenerate`` and ``_astream`` are written here on top of them.
    """

    streaming: bool = Field(default=False, strict=True, description="generate by streaming (callbacks see every token)")
    # Accepted so that code written for hosted models runs unchanged; a local model has no use for them.
    timeout: float | None = Field(default=None, exclude=True, description="accepted and ignored (local model)")
    max_retries: int | None = Field(default=None, exclude=True, description="accepted and ignored (local model)")
    api_key: SecretStr | None = Field(default=None, exclude=True, description="accepted and ignored (local model)")

    @abstractmethod
    def _chunks(
        self, input: Any, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[ChatGenerationChunk | GenerationChunk]:
        """Stream one generation for ``input`` (messages or a prompt) as LangChain chunks, the last one
        carrying the usage and the KV statistics. ``kwargs`` are the call's options (see ``generation_kwargs``)."""

    def generation_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """engine.generate keyword arguments: the fields, overridden per call by ``kwargs`` and ``stop``."""
        return self.call_options(kwargs, stop)

    def identifying_params(self) -> dict[str, Any]:
        cfg = self.resolved_config()
        return {
            "draft_model": self.draft_model,
            "target_model": self.target_model,
            "method": self.method,
            "budget": None if self.rate is not None else cfg.budget,
            "rate": self.rate,
            "window_size": cfg.window_size,
            "prompt_budget": self.prompt_budget,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }

    def ls_params(self, model_type: str, stop: list[str] | None, kwargs: dict[str, Any]) -> LangSmithParams:
        """LangSmith parameters of one call (``model_type`` "chat" or "llm")."""
        params = LangSmithParams(
            ls_provider="draftapprox",
            ls_model_name=kwargs.get("model") if isinstance(kwargs.get("model"), str) else self.target_model,
            ls_model_type=model_type,
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = stops
        return params

    # -- streaming and async, the same for messages (chat model) and prompts (LLM) --------------------

    def _stream(
        self,
        input: Any,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        for chunk in self._chunks(input, stop, kwargs):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        input: Any,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Any:
        # The engine runs in a worker thread; the event loop keeps serving other tasks meanwhile.
        return await run_in_thread(self._generate, input, stop, None, **kwargs)

    async def _astream(
        self,
        input: Any,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        async for chunk in aiter_in_thread(lambda: self._chunks(input, stop, kwargs)):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def usage_from_stats(stats) -> dict[str, int]:
    """The shared token usage under LangChain's ``usage_metadata`` keys."""
    usage = token_usage(stats)
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def metadata_from_result(model_name: str, finish_reason: str, stats) -> dict[str, Any]:
    """response_metadata / generation_info: finish reason, model, and every KV and timing statistic."""
    return {"model_name": model_name, "finish_reason": finish_reason, "speckv": stats.to_dict()}
