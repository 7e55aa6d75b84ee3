"""LangChain plumbing shared by the SpecKV chat model and LLM (no algorithm here).

The fields, validation and engine access common to every SpecKV adapter live in ``_speckv_options``; this
adds what only LangChain has (aliases, hosted-model options, LangSmith params, streaming callbacks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from pydantic import Field, SecretStr, model_validator

from .._speckv_options import DEFAULT_MODEL, SpecKVOptions  # noqa: F401  (DEFAULT_MODEL: re-exported)
from .._threads import aiter_in_thread, run_in_thread
from ..engine.config import SpecKVConfig
from ..engine.errors import ConfigError

# Per-call keyword arguments that reach engine.generate (anything else is refused with a clear error).
_CALL_OPTIONS = ("method", "budget", "prompt_budget", "config", "max_tokens", "max_new_tokens", "temperature",
                 "top_p", "seed")


class SpecKVParams(SpecKVOptions):
    """Model references, method, budget and sampling options; the engine is created (not loaded) lazily."""

    streaming: bool = False
    # Accepted so that code written for hosted models runs unchanged; a local model has no use for them.
    timeout: float | None = Field(default=None, exclude=True)
    max_retries: int | None = Field(default=None, exclude=True)
    api_key: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "model" in data and "target_model" not in data:
                data["target_model"] = data.pop("model")
            if "max_new_tokens" in data and "max_tokens" not in data:
                data["max_tokens"] = data.pop("max_new_tokens")
            if isinstance(data.get("config"), dict):
                data["config"] = SpecKVConfig(**data["config"])
            if isinstance(data.get("stop"), str):
                data["stop"] = [data["stop"]]
        return data

    def _check_sampling(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}")

    def generation_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """engine.generate keyword arguments: the fields, overridden per call by ``kwargs`` and ``stop``."""
        return self._engine_kwargs(kwargs, _CALL_OPTIONS, stop if stop is not None else self.stop)

    def identifying_params(self) -> dict[str, Any]:
        cfg = self.resolved_config()
        return {
            "draft_model": self.draft_model,
            "target_model": self.target_model,
            "method": self.method,
            "budget": cfg.budget,
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
    # Each adapter defines _chunks(input, stop, kwargs) -> Iterator[chunk] and a synchronous _generate.

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
    return {
        "input_tokens": stats.prompt_tokens,
        "output_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def metadata_from_result(model_name: str, finish_reason: str, stats) -> dict[str, Any]:
    """response_metadata / generation_info: finish reason, model, and every KV and timing statistic."""
    return {"model_name": model_name, "finish_reason": finish_reason, "speckv": stats.to_dict()}
