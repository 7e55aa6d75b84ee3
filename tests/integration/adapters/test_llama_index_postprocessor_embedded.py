"""SpecPCNodePostprocessor end to end on the embedded SmolLM2: a LlamaIndex query engine."""

from __future__ import annotations

import random

import pytest

from draftapprox_integrations.llama_index import SpecPCNodePostprocessor


# -- end to end on the embedded SmolLM2 --------------------------------------------------------------


def _corpus_texts() -> list[str]:
    rng = random.Random(1)
    subjects = ["The gardener", "An old sailor", "The baker", "The mayor", "A quiet student"]
    verbs = ["repaired", "painted", "carried", "described", "measured"]
    objects = ["the wooden gate", "a basket of pears", "the copper kettle", "an old map"]

    def filler(n: int) -> str:
        return " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(n))

    texts = [filler(40) for _ in range(3)]
    texts[1] = filler(20) + " The access code of the Corvin Bay station is 4829. " + filler(20)
    return texts


@pytest.fixture(scope="module")
def smollm2_engine_module():
    from draftapprox_integrations import get_engine

    return get_engine("smollm2-135m-instruct", "smollm2-135m-instruct", device="cpu").load()


def _target_llm(engine):
    """A LlamaIndex CustomLLM over the real SmolLM2 target (greedy, chat template)."""
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    class SmolLM2(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(context_window=8192, num_output=24, model_name="smollm2-135m-instruct")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            target = engine.target
            ids = target.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with engine.lock:
                out = target.model.generate(**ids, max_new_tokens=24, do_sample=False)
            return CompletionResponse(text=target.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            yield self.complete(prompt)

    return SmolLM2()


def test_query_engine_end_to_end(smollm2_engine_module):
    from llama_index.core import Document, SummaryIndex

    engine = smollm2_engine_module
    index = SummaryIndex.from_documents([Document(text=t, metadata={"file": f"log-{i}"}) for i, t in enumerate(_corpus_texts())])
    post = SpecPCNodePostprocessor(engine=engine, rate=0.15, whole_sentences=True)
    query_engine = index.as_query_engine(llm=_target_llm(engine), node_postprocessors=[post], response_mode="compact")
    response = query_engine.query("What is the access code of the Corvin Bay station?")
    assert "4829" in str(response)
    sources = response.source_nodes
    assert sources and all("compressed_tokens" in n.node.metadata for n in sources)
    assert any("4829" in n.node.get_content() for n in sources)
    assert sum(n.node.metadata["compressed_tokens"] for n in sources) < 0.3 * sum(n.node.metadata["original_tokens"] for n in sources)
