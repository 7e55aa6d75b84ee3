"""A LlamaIndex query engine that runs offline on the embedded models.

SummaryIndex (no embeddings needed) -> SpecPC node postprocessor (SmolLM2 draft keeps ~15% of the tokens)
-> local LLM (SmolLM2 through the same engine: the weights are loaded once).

    python examples/llama_index_query_engine.py
"""

from __future__ import annotations

from llama_index.core import Document, SummaryIndex

from draftapprox_integrations import get_engine
from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.llama_index import SpecKVLLM, SpecPCNodePostprocessor


def main() -> None:
    report, question, answer = station_report()
    sections = [Document(text=s, metadata={"section": i}) for i, s in enumerate(report.split("\n\n"))]
    engine = get_engine("smollm2-135m-instruct", "smollm2-135m-instruct")
    index = SummaryIndex.from_documents(sections)
    query_engine = index.as_query_engine(
        llm=SpecKVLLM(engine=engine, method="full", max_tokens=24),
        node_postprocessors=[SpecPCNodePostprocessor(engine=engine, rate=0.15, whole_sentences=True)],
        response_mode="compact",
    )
    response = query_engine.query(question)
    print(f"question: {question}\n")
    for n in response.source_nodes:
        m = n.node.metadata
        if m.get("compressed_tokens"):
            print(f"[section {m['section']}] {m['original_tokens']} -> {m['compressed_tokens']} tokens: {n.node.get_content()[:140]!r}")
    print(f"\nanswer: {str(response).strip()!r}  (expected {answer})")


if __name__ == "__main__":
    main()
