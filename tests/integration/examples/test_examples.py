"""Every script in examples/ runs offline on the embedded models (and the MiniLM embedding of the [examples]
extra) and answers its own question: the code of the demo's station report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == set(NAMES) | set(SERVER_EXAMPLES)
    served = (Path(__file__).resolve().parents[1] / "serving" / "test_openai_server.py").read_text(encoding="utf-8")
    assert all(f"from examples.{name} import" in served for name in SERVER_EXAMPLES)


NAMES = ["langchain_retrieval_chain", "llama_index_query_engine", "langchain_chat_speckv"]
# These need an OpenAI-compatible server: tests/integration/serving/ starts one and runs their functions.
SERVER_EXAMPLES = ["serving_langchain", "serving_llama_index"]


@pytest.mark.parametrize("name", NAMES)
def test_example_answers_its_question(name, capsys):
    reply, expected = load_example(name).main()
    assert expected in reply, capsys.readouterr().out
