"""A LangChain retrieval chain that runs offline on the embedded models.

retriever (keyword overlap, no embeddings) -> SpecPC compressor (SmolLM2 draft keeps ~15% of the tokens,
where its attention to the question goes) -> prompt -> local chat model (SmolLM2 target, through the
same engine, so the weights are loaded once).

    python examples/langchain_retrieval_chain.py
"""

from __future__ import annotations

import re

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough

from draftapprox_integrations import get_engine
from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.langchain import ChatSpecKV, SpecPCCompressor


class KeywordRetriever(BaseRetriever):
    """Ranks documents by how many words of the query they contain (a stand-in for any retriever)."""

    documents: list[Document]
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        words = set(re.findall(r"\w+", query.lower()))
        ranked = sorted(self.documents, key=lambda d: -len(words & set(re.findall(r"\w+", d.page_content.lower()))))
        return ranked[: self.k]


def main() -> None:
    report, question, answer = station_report()
    documents = [
        Document(page_content=section, metadata={"source": "field-report", "section": i})
        for i, section in enumerate(report.split("\n\n"))
    ]
    engine = get_engine("smollm2-135m-instruct", "smollm2-135m-instruct")  # one engine: draft and target
    compressor = SpecPCCompressor(engine=engine, rate=0.15, whole_sentences=True)
    retriever = KeywordRetriever(documents=documents)
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


if __name__ == "__main__":
    main()
