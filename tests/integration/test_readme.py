"""README.md, run as a new user would: every ```python block, top to bottom, in one namespace, offline on the
embedded models; the README's own question must be answered right by every component it shows.

A block that cannot run standalone is preceded by ``<!-- readme-test: skip (the reason) -->``; the reason is
required, and every other block runs.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->")
FENCE = re.compile(r"^```python\n(?P<code>.*?)^```$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason or None) of each ```python block."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.fullmatch(before.strip())
        blocks.append((line, match.group("code"), skip.group("reason") if skip else None))
    return blocks


def test_skip_markers_are_well_formed():
    text = README.read_text(encoding="utf-8")
    markers = [line for line in text.splitlines() if "readme-test" in line]
    skipped = [b for b in python_blocks(text) if b[2] is not None]
    assert all(SKIP.fullmatch(m.strip()) for m in markers), markers
    assert len(skipped) == len(markers), "a skip marker must sit on the line right above a ```python block"


def test_readme_runs_top_to_bottom_and_answers_its_question(capsys):
    text = README.read_text(encoding="utf-8")
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for line, code, reason in python_blocks(text):
        if reason is not None:
            continue
        exec(compile(code, f"README.md (block at line {line})", "exec"), namespace)  # noqa: S102 - the README's own code
        ran += 1
    out = capsys.readouterr().out
    assert ran >= 5, f"only {ran} README blocks ran"

    question, code = namespace["question"], namespace["code"]
    assert f"# {question}" in text, "the README shows a different question than the one its code asks"
    # LangChain: the compressed retrieved documents still hold the answer.
    assert any(code in doc.page_content for doc in namespace["docs"])
    # LlamaIndex query engine, LangChain chat model, the engine's generate and its stream answer it.
    assert code in str(namespace["response"])
    assert code in namespace["reply"].content
    assert code in namespace["answer"].text
    assert namespace["batch"][0].token_ids == namespace["answer"].token_ids  # a batch answers like one call
    assert out.count(code) >= 6, out  # printed by the LangChain, LlamaIndex, chat, generate, stream and batch blocks
    assert namespace["result"].compressed_tokens <= namespace["result"].budget
    # Tools and structured answers: a call that parses, and the door code extracted into a schema by both frameworks.
    assert namespace["call"]["name"] == "add" and namespace["call"]["args"] == {"a": 3, "b": 5}
    assert namespace["found"].code == namespace["door"].code == code
    assert namespace["agent_answer"].tool_calls[0].tool_kwargs == {"a": 6, "b": 7} and "42" in str(namespace["agent_answer"])
