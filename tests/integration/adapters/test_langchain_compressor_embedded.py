"""SpecPCCompressor end to end on the embedded SmolLM2: a retriever and an LCEL chain."""

from __future__ import annotations

import random
import re

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from draftapprox_integrations.langchain import SpecPCCompressor


# -- end to end on the embedded SmolLM2 --------------------------------------------------------------


class KeywordRetriever(BaseRetriever):
    """Ranks documents by how many query words they contain (offline, no embeddings)."""

    documents: list[Document]
    k: int = 3

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        words = set(re.findall(r"\w+", query.lower()))
        scored = sorted(self.documents, key=lambda d: -len(words & set(re.findall(r"\w+", d.page_content.lower()))))
        return scored[: self.k]


def _corpus() -> list[Document]:
    rng = random.Random(0)
    subjects = ["The gardener", "An old sailor", "The baker", "The mayor", "A quiet student"]
    verbs = ["repaired", "painted", "carried", "described", "measured"]
    objects = ["the wooden gate", "a basket of pears", "the copper kettle", "an old map"]

    def filler(n: int) -> str:
        return " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(n))

    docs = [Document(page_content=filler(40), metadata={"source": f"log-{i}"}) for i in range(4)]
    needle = "The access code of the Corvin Bay station is 4829."
    docs[2].page_content = filler(20) + " " + needle + " " + filler(20)
    return docs


@pytest.fixture(scope="module")
def smollm2_engine_module():
    from draftapprox_integrations import get_engine

    return get_engine("smollm2-135m-instruct", "smollm2-135m-instruct", device="cpu").load()


def test_contextual_compression_retriever_end_to_end(smollm2_engine_module):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    compressor = SpecPCCompressor(rate=0.2, engine=smollm2_engine_module, whole_sentences=True)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=KeywordRetriever(documents=_corpus()))
    docs = retriever.invoke("What is the access code of the Corvin Bay station?")
    assert any("4829" in d.page_content for d in docs)
    assert all("compressed_tokens" in d.metadata and d.metadata["source"].startswith("log-") for d in docs)
    total_in = sum(d.metadata["original_tokens"] for d in docs)
    assert sum(d.metadata["compressed_tokens"] for d in docs) < 0.4 * total_in


def test_lcel_chain_answers_from_the_compressed_context(smollm2_engine_module):
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    engine = smollm2_engine_module
    compressor = SpecPCCompressor(rate=0.2, engine=engine, whole_sentences=True)

    def answer(prompt_value) -> str:
        # The real SmolLM2 target, greedy, through its chat template.
        target = engine.target
        messages = [{"role": "user", "content": prompt_value.to_messages()[0].content}]
        ids = target.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = target.model.generate(**ids, max_new_tokens=16, do_sample=False)
        return target.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    prompt = ChatPromptTemplate.from_template("{context}\n\nQuestion: {question} Answer with the number only.")
    chain = (
        {"documents": KeywordRetriever(documents=_corpus()), "query": RunnablePassthrough()}
        | RunnablePassthrough.assign(compressed=compressor.as_runnable())
        | (lambda x: {"context": "\n\n".join(d.page_content for d in x["compressed"]), "question": x["query"]})
        | prompt
        | RunnableLambda(answer)
        | StrOutputParser()
    )
    reply = chain.invoke("What is the access code of the Corvin Bay station?")
    assert "4829" in reply
