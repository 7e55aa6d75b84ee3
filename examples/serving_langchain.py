"""SpecPC in front of any OpenAI-compatible server, in LangChain: the draft (135M parameters, CPU is fine)
runs beside the application and cuts the retrieved documents; the large target runs on a serving engine
(vLLM, llama.cpp's server, TGI, `transformers serve`, a hosted API) and reads a prompt a tenth as long.

Start a server (see the README, "Serving the target elsewhere"), then:

    python examples/serving_langchain.py --base-url http://127.0.0.1:8000/v1 --model MODEL_NAME

The chain: {"documents", "question"} -> SpecPC keeps 10% of the documents' tokens -> prompt -> ChatOpenAI.
Its output holds the compressed documents next to the answer (so the saving is visible), and each
compression also reaches the callbacks as the ``specpc_compression`` event with its token accounting: a
handler keeps the compressed documents even when the server call fails.
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_openai import ChatOpenAI

from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.langchain import SpecPCCompressor

PROMPT = ChatPromptTemplate.from_messages(
    [("human", "Read the report below, then answer the question.\n\n{context}\n\nQuestion: {question}")]
)


def remote_chat_model(base_url: str, model: str, *, max_tokens: int = 32, **options: Any) -> ChatOpenAI:
    """A chat model on an OpenAI-compatible server. ChatOpenAI sends ``max_tokens`` as ``max_completion_tokens``;
    for a server that ignores that field (llama.cpp's), pass ``extra_body={"max_tokens": n}`` in ``options``."""
    options.setdefault("api_key", "not-needed")  # local servers take any key; a hosted API needs its own
    return ChatOpenAI(base_url=base_url, model=model, max_tokens=max_tokens, temperature=0, **options)


def build_chain(llm: Runnable, compressor: SpecPCCompressor | None = None) -> Runnable:
    """{"documents": [Document], "question": str} -> {"documents": compressed, "question", "answer": AIMessage}.

    With ``compressor=None`` the documents go to the server whole (the baseline the saving is measured against).
    """

    def compress(inputs: dict, config) -> list[Document]:
        if compressor is None:
            return list(inputs["documents"])
        return list(compressor.compress_documents(inputs["documents"], inputs["question"], callbacks=config.get("callbacks")))

    def context(inputs: dict) -> str:
        return "\n\n".join(d.page_content for d in inputs["documents"])

    answer = RunnablePassthrough.assign(context=context) | PROMPT | llm
    return RunnablePassthrough.assign(documents=RunnableLambda(compress, name="compress")) | RunnablePassthrough.assign(
        answer=answer
    )


def report_documents(seed: int = 7) -> tuple[list[Document], str, str]:
    """The demo's field report as one Document per section, its question and the expected answer."""
    report, question, expected = station_report(seed=seed)
    docs = [Document(page_content=s, metadata={"source": "field-report", "section": i}) for i, s in enumerate(report.split("\n\n"))]
    return docs, question, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the server's OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="the model name the server expects")
    parser.add_argument("--rate", type=float, default=0.1, help="fraction of the documents' draft tokens to keep")
    args = parser.parse_args()
    docs, question, expected = report_documents()
    chain = build_chain(remote_chat_model(args.base_url, args.model), SpecPCCompressor(rate=args.rate))
    out = chain.invoke({"documents": docs, "question": question})
    before = sum(d.metadata["specpc_original_tokens"] for d in out["documents"])
    after = sum(d.metadata["specpc_compressed_tokens"] for d in out["documents"])
    print(f"Q: {question}\nA: {out['answer'].content}   (expected {expected})")
    print(f"SpecPC kept {after} of {before} draft tokens; the server read {out['answer'].usage_metadata['input_tokens']} prompt tokens")


if __name__ == "__main__":
    main()
