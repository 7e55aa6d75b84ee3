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
    assert {p.stem for p in EXAMPLES.glob("*.py")} == set(NAMES)


NAMES = ["langchain_retrieval_chain", "llama_index_query_engine", "langchain_chat_speckv"]


@pytest.mark.parametrize("name", NAMES)
def test_example_answers_its_question(name, capsys):
    reply, expected = load_example(name).main()
    assert expected in reply, capsys.readouterr().out
