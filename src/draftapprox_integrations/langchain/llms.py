"""LangChain text-completion LLM backed by the SpecKV engine (the algorithm lives in ``engine/speckv/``).

    from draftapprox_integrations.langchain import SpecKVLLM
    llm = SpecKVLLM(target_model="gemma-3-270m", budget=128)
    llm.invoke(long_document + "\\nQuestion: ...\\nAnswer:")

A target with a chat template reads each prompt as one user message through that template (``chat=None``, the
default: SmolLM2-Instruct answers right only so); a base model without one (Gemma-3-270M) reads the plain text.
``chat=False`` sends the plain text to any target; ``chat=True`` always wraps it (a transcript without a template). Each generation's ``generation_info`` carries the
finish reason, token usage and the KV statistics; ``llm_output["token_usage"]`` sums the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.llms import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import Field

from ._speckv_params import SpecKVParams, metadata_from_result, usage_from_stats


class SpecKVLLM(SpecKVParams, BaseLLM):
    """A local completion LLM whose KV cache keeps only ``budget`` entries per layer and head (SpecKV).

    Same fields as :class:`~draftapprox_integrations.langchain.ChatSpecKV`, plus ``chat`` (None: the target's
    chat template when it has one, else plain text; False: plain text; True: always one user message). A batch
    (``batch``, ``generate`` with several prompts) decodes together on the engine's loop (``generate_batch``);
    concurrent calls share its forwards too.
    """

    chat: bool | None = Field(
        default=None, strict=True,
        description="None: the target's chat template when it has one, else plain text; False: plain text; True: a user message",
    )

    @property
    def _llm_type(self) -> str:
        return "speckv"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**self.identifying_params(), "chat": self.chat}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params("llm", stop, kwargs)

    def _generation(self, result) -> Generation:
        info = metadata_from_result(self.target_model, result.finish_reason, result.stats)
        info["token_usage"] = usage_from_stats(result.stats)
        return Generation(text=result.text, generation_info=info)

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if self.streaming:
            generations = [self._streamed(prompt, stop, run_manager, kwargs) for prompt in prompts]
        else:
            # One batch: the engine's loop decodes the prompts' compressed caches together (``generate_batch``).
            results = self.get_engine().generate_batch(prompts, chat=self.chat, **self.generation_kwargs(stop, kwargs))
            generations = [self._generation(result) for result in results]
        return self._result(generations)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if not self.streaming:
            return await super()._agenerate(prompts, stop, run_manager, **kwargs)
        # Streaming: every token reaches the run manager's callbacks, as in _generate (FINDINGS-2 D4).
        generations = []
        for prompt in prompts:
            text, info = "", {}
            async for chunk in self._astream(prompt, stop=stop, run_manager=run_manager, **kwargs):
                text += chunk.text
                info = chunk.generation_info or info
            generations.append(Generation(text=text, generation_info=info))
        return self._result(generations)

    def _result(self, generations: list[Generation]) -> LLMResult:
        totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for generation in generations:
            for key, value in generation.generation_info["token_usage"].items():
                totals[key] += value
        return LLMResult(
            generations=[[g] for g in generations], llm_output={"model_name": self.target_model, "token_usage": totals}
        )

    def _streamed(self, prompt: str, stop, run_manager, kwargs: dict[str, Any]) -> Generation:
        text, info = "", {}
        for chunk in self._stream(prompt, stop=stop, run_manager=run_manager, **kwargs):
            text += chunk.text
            info = chunk.generation_info or info
        return Generation(text=text, generation_info=info)

    def _chunks(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Iterator[GenerationChunk]:
        for piece in self.get_engine().stream(prompt, chat=self.chat, **self.generation_kwargs(stop, kwargs)):
            if piece.stats is None:
                yield GenerationChunk(text=piece.text)
                continue
            info = metadata_from_result(self.target_model, piece.finish_reason or "length", piece.stats)
            info["token_usage"] = usage_from_stats(piece.stats)
            yield GenerationChunk(text=piece.text, generation_info=info)
