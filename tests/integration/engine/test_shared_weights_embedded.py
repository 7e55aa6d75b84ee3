"""The README's pairing on the real SmolLM2: a SpecPC compressor and a chat model over the same model, used
from two threads at once, each call equal to its solo result (FINDINGS-2 D1: 0 of 672 compressor calls
succeeded beside a snapkv chat model before the fix).

The compressor gets a draft-only engine and the chat model a draft + target engine: two engines, two loop
threads, one copy of the weights, forwards running at the same time. float32, so that equality is exact.
"""

from __future__ import annotations

import concurrent.futures as cf

from langchain_core.documents import Document

from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.langchain import ChatSpecKV, SpecPCCompressor

CALLS = 3


def test_compressor_beside_a_snapkv_chat_model_on_one_set_of_weights():
    report, question, code = station_report()
    sections = report.split("\n\n")
    docs = [Document(page_content=s, metadata={"i": i}) for i, s in enumerate(sections[:4])]
    compressor = SpecPCCompressor(rate=0.1, device="cpu", dtype="float32")
    chat = ChatSpecKV(method="snapkv", budget=64, max_tokens=6, device="cpu", dtype="float32")
    assert compressor.get_engine() is not chat.get_engine()
    assert compressor.get_engine().draft.model is chat.get_engine().target.model
    prompt = [("human", report + "\n\nQuestion: " + question)]

    def compress():
        return [d.page_content for d in compressor.compress_documents(docs, question)]

    def answer():
        return chat.invoke(prompt).content

    alone = {"compress": compress(), "answer": answer()}
    with cf.ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(lambda f=f: [f() for _ in range(CALLS)]) for name, f in
                   (("compress", compress), ("answer", answer))}
        results = {name: f.result(timeout=600) for name, f in futures.items()}
    assert results == {name: [value] * CALLS for name, value in alone.items()}
