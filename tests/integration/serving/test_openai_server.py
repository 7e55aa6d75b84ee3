"""SpecPC in front of a real OpenAI-compatible server (`transformers serve`, SmolLM2 as the answering model):
the examples' LangChain chain and LlamaIndex query engine end to end, the server's own prompt-token count
against what the compressor reported, and the failures a remote target brings (unreachable, wrong model name,
a server error), after which the compressed documents are still at hand."""

from __future__ import annotations

import http.server
import json
import os
import threading

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent

from draftapprox_integrations.engine.loading import load_tokenizer
from draftapprox_integrations.engine.specpc import DEFAULT_SEPARATOR
from draftapprox_integrations.langchain import SpecPCCompressor
from draftapprox_integrations.langchain.compressor import COMPRESSION_EVENT
from draftapprox_integrations.llama_index import SpecPCNodePostprocessor
from draftapprox_integrations.llama_index.postprocessor import SpecPCCompressionEvent

from examples.serving_langchain import build_chain, remote_chat_model, report_documents
from examples.serving_llama_index import build_query_engine, remote_llm, report_nodes
from tests.helpers import SMOLLM2
from tests.integration.serving.server import ServerStartError, free_port, transformers_serve

RATE = 0.1


class KeepCompression(BaseCallbackHandler):
    """What a user's handler sees of each compression: its token accounting and the documents."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def on_custom_event(self, name, data, *, run_id, **kwargs):
        if name == COMPRESSION_EVENT:
            self.events.append(data)


class Collect(BaseEventHandler):
    """LlamaIndex instrumentation: the SpecPC events and the LLM's raw chat responses."""

    specpc: list = []
    responses: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event, **kwargs) -> None:
        if isinstance(event, SpecPCCompressionEvent):
            self.specpc.append(event)
        elif isinstance(event, LLMChatEndEvent):
            self.responses.append(event.response)


@pytest.fixture
def collect():
    handler = Collect(specpc=[], responses=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)


@pytest.fixture(scope="module")
def compressor():
    return SpecPCCompressor(rate=RATE, draft_model=SMOLLM2, device="cpu")


@pytest.fixture(scope="module")
def postprocessor():
    return SpecPCNodePostprocessor(rate=RATE, draft_model=SMOLLM2, device="cpu")


def _expected_saving(stats: dict, texts: list[str]) -> tuple[int, int]:
    """(tokens the server should read less, tolerance). The compressor counts the kept spans' tokens; the
    separators it writes between spans are read by the server too, and token boundaries where kept text meets
    a separator or another document can merge or split: one token either way per join."""
    tokenizer = load_tokenizer(SMOLLM2)
    separators = sum(t.count(DEFAULT_SEPARATOR) for t in texts)
    separator_tokens = len(tokenizer(DEFAULT_SEPARATOR, add_special_tokens=False)["input_ids"])
    joins = separators * 2 + len(texts)
    return stats["saved_tokens"] - separators * separator_tokens, joins


def test_langchain_chain_through_the_server(served, compressor):
    docs, question, expected = report_documents()
    llm = remote_chat_model(served.base_url, served.model, max_tokens=24)
    handler = KeepCompression()
    out = build_chain(llm, compressor).invoke({"documents": docs, "question": question}, config={"callbacks": [handler]})
    assert expected in out["answer"].content
    (stats,) = handler.events
    assert stats["documents"] == out["documents"] and stats["compressed_tokens"] <= RATE * stats["original_tokens"] + 1
    full = build_chain(llm).invoke({"documents": docs, "question": question})
    saving = full["answer"].usage_metadata["input_tokens"] - out["answer"].usage_metadata["input_tokens"]
    want, tolerance = _expected_saving(stats, [d.page_content for d in out["documents"]])
    assert abs(saving - want) <= tolerance, (saving, want, tolerance)


def test_llama_index_query_engine_through_the_server(served, postprocessor, collect):
    nodes, question, expected = report_nodes()
    llm = remote_llm(served.base_url, served.model, max_tokens=24)
    response = build_query_engine(nodes, llm, postprocessor).query(question)
    assert expected in str(response)
    (event,) = collect.specpc
    assert [n.node.text for n in event.nodes] == [n.node.text for n in response.source_nodes]
    assert {n.node.node_id for n in response.source_nodes} <= {n.node_id for n in nodes}  # ids kept
    build_query_engine(nodes, llm).query(question)
    compressed, full = (r.raw.usage.prompt_tokens for r in collect.responses)
    want, tolerance = _expected_saving(event.stats, [n.node.text for n in event.nodes])
    assert abs((full - compressed) - want) <= tolerance, (full - compressed, want, tolerance)


class _Failing(http.server.BaseHTTPRequestHandler):
    """An OpenAI-shaped server whose every chat completion fails with 500."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"error": {"message": "the target ran out of memory", "type": "server_error"}}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def failing_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _failure(case: str, served, failing_url) -> tuple[str, str, type[Exception], str]:
    """(base_url, model, the client's error, what its message says) for each failure a remote target brings."""
    if case == "unreachable":
        return f"http://127.0.0.1:{free_port()}/v1", served.model, openai.APIConnectionError, "Connection error"
    if case == "wrong model":
        return served.base_url, "not-the-served-model", openai.BadRequestError, "not-the-served-model"
    return failing_url, served.model, openai.InternalServerError, "ran out of memory"


FAILURES = ["unreachable", "wrong model", "server error"]


@pytest.mark.parametrize("case", FAILURES)
def test_langchain_failure_raises_the_clients_error_and_keeps_the_compression(case, served, failing_url, compressor):
    base_url, model, error, says = _failure(case, served, failing_url)
    docs, question, _ = report_documents()
    handler = KeepCompression()
    chain = build_chain(remote_chat_model(base_url, model, max_retries=0), compressor)
    with pytest.raises(error, match=says):
        chain.invoke({"documents": docs, "question": question}, config={"callbacks": [handler]})
    (stats,) = handler.events
    kept = stats["documents"]
    assert kept and sum(d.metadata["specpc_compressed_tokens"] for d in kept) == stats["compressed_tokens"] < stats["original_tokens"]
    assert all(d.metadata["source"] == "field-report" for d in kept)


@pytest.mark.parametrize("case", FAILURES)
def test_llama_index_failure_raises_the_clients_error_and_keeps_the_compression(case, served, failing_url, postprocessor, collect):
    base_url, model, error, says = _failure(case, served, failing_url)
    nodes, question, _ = report_nodes()
    engine = build_query_engine(nodes, remote_llm(base_url, model, max_retries=0), postprocessor)
    with pytest.raises(error, match=says):
        engine.query(question)
    (event,) = collect.specpc
    assert event.nodes and event.stats["compressed_tokens"] < event.stats["original_tokens"]
    assert {n.node.node_id for n in event.nodes} <= {n.node_id for n in nodes}


def test_a_server_that_cannot_start_is_a_clear_error_and_leaves_no_process(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ServerStartError, match="exited with status") as info:
        with transformers_serve(empty, tmp_path / "server.log", deadline_s=120):
            pytest.fail("the server answered without a model")
    with pytest.raises(ProcessLookupError):
        os.killpg(info.value.pid, 0)


def test_a_server_that_does_not_answer_in_time_is_stopped(tmp_path):
    from draftapprox_integrations.engine.loading import converted_folder, resolve_reference

    with pytest.raises(ServerStartError, match="did not answer") as info:
        with transformers_serve(converted_folder(resolve_reference(SMOLLM2)), tmp_path / "server.log", deadline_s=0.5):
            pytest.fail("the server answered within half a second")
    with pytest.raises(ProcessLookupError):
        os.killpg(info.value.pid, 0)
