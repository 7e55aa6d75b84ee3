"""LangChain's standard integration suite (``langchain_tests.integration_tests.ChatModelIntegrationTests``)
against ChatSpecKV on the embedded SmolLM2 (draft and target), offline.

The budget is 8 KV entries per layer and head with a 4-token window: the suite's prompts ("Hello", a short
conversation, ...) are 20-60 tokens after the chat template, so SpecKV really drops most of their KV cache on
every call (``test_budget_really_compresses`` checks it). Answers are capped at 8 tokens to keep the suite short.

Every upstream test that does not apply is skipped here, by name, with the reason (``NOT_APPLICABLE``), instead
of by a capability flag: the list is the declaration, and ``test_every_skip_is_declared`` keeps it complete.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from draftapprox_integrations.langchain import ChatSpecKV
from tests.helpers import SMOLLM2

TOOLS = "no tool calling: a local text model with no tool-call parser (bind_tools is not implemented)"
STRUCTURED = "no structured output: with_structured_output needs tool calling or a JSON mode, and there is neither"
TEXT_ONLY = "text only: SmolLM2 reads no {} (such a block raises InvalidInputError, tested in tests/unit/adapters)"

NOT_APPLICABLE = {
    "test_tool_calling": TOOLS,
    "test_tool_calling_async": TOOLS,
    "test_bind_runnables_as_tools": TOOLS,
    "test_tool_message_histories_string_content": TOOLS,
    "test_tool_message_histories_list_content": TOOLS,
    "test_tool_choice": TOOLS,
    "test_tool_calling_with_no_arguments": TOOLS,
    "test_tool_message_error_status": TOOLS,
    "test_structured_few_shot_examples": TOOLS,
    "test_agent_loop": TOOLS,
    "test_unicode_tool_call_integration": TOOLS,
    "test_structured_output": STRUCTURED,
    "test_structured_output_async": STRUCTURED,
    "test_structured_output_pydantic_2_v1": STRUCTURED,
    "test_structured_output_optional_param": STRUCTURED,
    "test_json_mode": "no JSON mode: generation is not constrained to a grammar",
    "test_pdf_inputs": TEXT_ONLY.format("PDF"),
    "test_audio_inputs": TEXT_ONLY.format("audio"),
    "test_image_inputs": TEXT_ONLY.format("images"),
    "test_image_tool_message": TEXT_ONLY.format("images") + "; and no tool messages",
    "test_pdf_tool_message": TEXT_ONLY.format("PDF") + "; and no tool messages",
    "test_anthropic_inputs": "Anthropic-format content blocks (tool_use, images) are not text",
    "test_invoke_with_model_override": "the model is fixed when the engine is built; a per-call model= is refused",
    "test_ainvoke_with_model_override": "the model is fixed when the engine is built; a per-call model= is refused",
    "test_stream_with_model_override": "the model is fixed when the engine is built; a per-call model= is refused",
    "test_astream_with_model_override": "the model is fixed when the engine is built; a per-call model= is refused",
    "test_stream_time": "a VCR-recorded timing benchmark of a hosted API; there is no HTTP traffic to record",
}


class TestChatSpecKVIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatSpecKV]:
        return ChatSpecKV

    @property
    def chat_model_params(self) -> dict:
        return {
            "draft_model": SMOLLM2,
            "target_model": SMOLLM2,
            "device": "cpu",
            "method": "speckv",
            "config": {"budget": 8, "window_size": 4},
            "max_tokens": 8,
        }

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": [], "stream": []}  # input/output/total only: no cache or reasoning token counts


for _name, _reason in NOT_APPLICABLE.items():
    setattr(TestChatSpecKVIntegration, _name, pytest.mark.skip(reason=_reason)(getattr(ChatModelIntegrationTests, _name)))


def test_every_skip_is_declared():
    """Every upstream test either runs or is skipped by name above; a new upstream test shows up here."""
    upstream = {name for name in dir(ChatModelIntegrationTests) if name.startswith("test_")}
    assert set(NOT_APPLICABLE) <= upstream, set(NOT_APPLICABLE) - upstream
    assert len(upstream - set(NOT_APPLICABLE)) >= 15  # the applicable ones run


def test_budget_really_compresses():
    """The suite's model keeps 8 KV entries of a short prompt like the suite's own."""
    model = ChatSpecKV(**TestChatSpecKVIntegration().chat_model_params)
    reply = model.invoke("Hello, how are you today?")
    kv = reply.response_metadata["speckv"]
    assert kv["kv_entries_kept"] == 8 < kv["kv_entries_full"]
