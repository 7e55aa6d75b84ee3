"""The langchain-tests standard unit suite against ChatSpecKV (construction only: no model is loaded)."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from draftapprox_integrations.langchain import ChatSpecKV


class TestChatSpecKVStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatSpecKV]:
        return ChatSpecKV

    @property
    def chat_model_params(self) -> dict:
        return {"budget": 128, "method": "speckv"}

    # A local text-only model: what it does not do, declared.
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False
