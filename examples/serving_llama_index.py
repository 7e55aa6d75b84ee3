"""SpecPC in front of any OpenAI-compatible server, in LlamaIndex: a query engine whose node postprocessor
(the draft, on the application's machine) cuts the retrieved nodes before ``OpenAILike`` sends them to the
serving engine (vLLM, llama.cpp's server, TGI, `transformers serve`, a hosted API).

Start a server (see the README, "Serving the target elsewhere"), then:

    python examples/serving_llama_index.py --base-url http://127.0.0.1:8000/v1 --model MODEL_NAME

The index is a ``SummaryIndex`` (every node is retrieved; no embedding model is needed); any retriever or index
works the same. Each compression is a callback event (and a ``SpecPCCompressionEvent`` for instrumentation
handlers) carrying the token counts before and after and the seconds.
"""

from __future__ import annotations

import argparse
from typing import Any

from llama_index.core import SummaryIndex
from llama_index.core.query_engine import BaseQueryEngine
from llama_index.core.schema import TextNode
from llama_index.llms.openai_like import OpenAILike

from draftapprox_integrations.demos.document import station_report
from draftapprox_integrations.llama_index import SpecPCNodePostprocessor


def remote_llm(base_url: str, model: str, *, max_tokens: int = 32, context_window: int = 8192, **options: Any) -> OpenAILike:
    """An LLM on an OpenAI-compatible server, through its chat endpoint. Set ``context_window`` to the served
    model's: LlamaIndex packs the retrieved text to fit it."""
    options.setdefault("api_key", "not-needed")  # local servers take any key; a hosted API needs its own
    return OpenAILike(
        api_base=base_url, model=model, is_chat_model=True, context_window=context_window,
        max_tokens=max_tokens, temperature=0.0, **options,
    )


def build_query_engine(nodes: list[TextNode], llm: OpenAILike, postprocessor: SpecPCNodePostprocessor | None = None) -> BaseQueryEngine:
    """A query engine over ``nodes`` that compresses them with ``postprocessor`` (None: sends them whole)."""
    return SummaryIndex(nodes).as_query_engine(
        llm=llm, node_postprocessors=[postprocessor] if postprocessor is not None else [], response_mode="compact"
    )


def report_nodes(seed: int = 7) -> tuple[list[TextNode], str, str]:
    """The demo's field report as one node per section, its question and the expected answer."""
    report, question, expected = station_report(seed=seed)
    nodes = [TextNode(text=s, metadata={"section": i}) for i, s in enumerate(report.split("\n\n"))]
    return nodes, question, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the server's OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="the model name the server expects")
    parser.add_argument("--rate", type=float, default=0.1, help="fraction of the nodes' draft tokens to keep")
    args = parser.parse_args()
    nodes, question, expected = report_nodes()
    engine = build_query_engine(nodes, remote_llm(args.base_url, args.model), SpecPCNodePostprocessor(rate=args.rate))
    response = engine.query(question)
    before = sum(n.node.metadata["specpc_original_tokens"] for n in response.source_nodes)
    after = sum(n.node.metadata["specpc_compressed_tokens"] for n in response.source_nodes)
    print(f"Q: {question}\nA: {str(response).strip()}   (expected {expected})")
    print(f"SpecPC kept {after} of {before} draft tokens")


if __name__ == "__main__":
    main()
