"""ChatSpecKV in LangChain, offline on the embedded SmolLM2: a long document, a question, a small KV cache.

The draft (SmolLM2) writes a quick answer; the target (SmolLM2, same weights) reads document + question +
that answer once, keeps only `budget` KV entries per layer and head where the attention went, and answers
from them. The reply carries the token usage and the KV statistics.

    python examples/langchain_chat_speckv.py
"""

from __future__ import annotations

import asyncio

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.langchain import ChatSpecKV


def main() -> tuple[str, str]:
    """Run the tour; returns (the SpecKV answer of step 1, the expected code)."""
    document, question, answer = station_report()
    chat = ChatSpecKV(budget=128, max_tokens=24, stop=["\n\n"])  # cheap: the models load on first use

    # 1. invoke: the reply's metadata says what the KV cache kept.
    reply = chat.invoke([("system", "Answer with the code only."), ("human", f"{document}\n\nQuestion: {question}")])
    kv = reply.response_metadata["speckv"]
    print(f"Q: {question}\nA: {reply.content.strip()}   (expected {answer})")
    print(
        f"KV kept: {kv['kv_entries_kept']} of {kv['kv_entries_full']} entries per layer and head, "
        f"{kv['kv_bytes_kept'] / 2**20:.2f} of {kv['kv_bytes_full'] / 2**20:.2f} MiB; "
        f"usage {reply.usage_metadata}"
    )

    # 2. In a chain (LCEL), streamed token by token.
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer with the code only."), ("human", "{document}\n\nQuestion: {question}")]
    )
    chain = prompt | chat | StrOutputParser()
    print("streamed: ", end="")
    for piece in chain.stream({"document": document, "question": question}):
        print(piece, end="", flush=True)
    print()

    # 3. Async: the engine runs in a worker thread, the event loop stays free.
    async def ask_async() -> str:
        return await chain.ainvoke({"document": document, "question": question})

    print(f"async: {asyncio.run(ask_async()).strip()}")

    # 4. The same call with the baselines, for comparison at the same budget.
    for method in ("snapkv", "streamingllm", "full"):
        other = chat.invoke([("human", f"{document}\n\nQuestion: {question}")], method=method)
        print(f"{method:>12}: {other.content.strip()!r}  KV {other.response_metadata['speckv']['kv_entries_kept']} entries")
    return reply.content, answer


if __name__ == "__main__":
    main()
