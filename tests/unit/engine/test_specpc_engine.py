"""SpecPC through the engine on tiny random drafts: budgets, spans, chunking, errors, the CLI.

The quality checks on the embedded SmolLM2 are in tests/integration/engine/test_specpc_engine_embedded.py.
"""

from __future__ import annotations

import pytest
import torch

from draftapprox_integrations.engine import SpecPCConfig
from draftapprox_integrations.engine.alignment import tokenize_with_offsets
from draftapprox_integrations.engine.errors import ConfigError, ContextLengthError, InvalidInputError

from tests.helpers import TINY, words
from tests.helpers import check_spans as _check_spans


# -- mechanics on a tiny random draft ----------------------------------------------------------------


def test_budget_is_exact_over_documents_and_spans_map_to_the_original(tiny_engine):
    docs = [words(120, 1), words(200, 2), words(60, 3)]
    result = tiny_engine.compress(docs, "Which word comes after copper?", budget=50, config=SpecPCConfig(**TINY))
    assert result.selected_tokens == 50
    assert sum(d.selected_tokens for d in result.documents) == 50
    assert result.original_tokens == sum(d.original_tokens for d in result.documents)
    for text, doc in zip(docs, result.documents):
        assert doc.original_tokens == len(tokenize_with_offsets(tiny_engine.draft.tokenizer, text)[0])
        _check_spans(text, doc, " … ")
        # Snapping to words only grows spans: at least the selected tokens are inside.
        assert doc.compressed_tokens >= doc.selected_tokens
    assert result.text == "\n\n".join(d.text for d in result.documents if d.text)
    assert abs(sum(d.relevance for d in result.documents) - 1.0) < 1e-4
    assert not result.passthrough and result.chunks == 1


def test_kept_spans_cover_the_selected_tokens(tiny_engine):
    text = words(300, 4)
    result = tiny_engine.compress(text, "What is north of the garden?", rate=0.2, config=SpecPCConfig(**TINY), return_scores=True)
    doc = result.documents[0]
    ids, offsets = tokenize_with_offsets(tiny_engine.draft.tokenizer, text)
    assert result.scores is not None and result.scores[0].shape == (len(ids),)
    covered = [any(a < e and s < b for a, b in doc.spans) for s, e in offsets if e > s]
    assert sum(covered) == doc.compressed_tokens
    assert result.budget == round(0.2 * len(ids))


def test_chunked_long_input_scores_every_chunk_and_keeps_the_budget(tiny_engine):
    docs = [words(400, 5), words(350, 6)]
    cfg = SpecPCConfig(**TINY)
    full = tiny_engine.compress(docs, "Where is the lamp?", budget=80, config=cfg, return_scores=True)
    chunked = tiny_engine.compress(docs, "Where is the lamp?", budget=80, config=cfg, max_prompt_tokens=200, return_scores=True)
    assert full.chunks == 1
    total = chunked.original_tokens
    assert chunked.chunks >= total // 200 + 1
    assert chunked.selected_tokens == 80
    # Nothing was truncated: every context token got a (positive) attention score in some chunk.
    for scores in chunked.scores:
        assert bool((scores > 0).all())
    for text, doc in zip(docs, chunked.documents):
        _check_spans(text, doc, " … ")


def test_question_too_long_for_the_window_raises(tiny_engine):
    with pytest.raises(ContextLengthError, match="question"):
        tiny_engine.compress(words(200, 7), words(150, 8), budget=20, config=SpecPCConfig(**TINY), max_prompt_tokens=100)


def test_query_free_compression_keeps_the_window(tiny_engine):
    text = words(200, 9)
    result = tiny_engine.compress(text, None, budget=40, config=SpecPCConfig(**TINY))
    doc = result.documents[0]
    assert result.selected_tokens == 40
    assert doc.spans[-1][1] == len(text)  # the last window_size tokens are always kept
    ids, offsets = tokenize_with_offsets(tiny_engine.draft.tokenizer, text)
    window_start = offsets[len(ids) - TINY["window_size"]][0]
    assert any(a <= window_start + 1 and b == len(text) for a, b in doc.spans)


def test_given_lookahead_text_is_scored_without_generation(tiny_engine):
    text = words(150, 10)
    cfg = SpecPCConfig(**TINY)
    a = tiny_engine.compress(text, "Which colour?", budget=30, config=cfg, lookahead_text="copper window seven", return_scores=True)
    b = tiny_engine.compress(text, "Which colour?", budget=30, config=cfg, lookahead_text="", return_scores=True)
    assert a.lookahead_text == "copper window seven"
    assert b.lookahead_text == ""
    # The lookahead tokens are extra scoring steps (max over steps): scores can only grow.
    assert bool((a.scores[0] >= b.scores[0] - 1e-4).all())
    assert not torch.allclose(a.scores[0], b.scores[0])


def test_pass_through_when_the_budget_covers_everything(tiny_engine):
    docs = ["First short text.", "", "Second one, also short."]
    result = tiny_engine.compress(docs, "Anything?", budget=10_000)
    assert result.passthrough
    assert [d.text for d in result.documents] == docs
    assert result.text == "First short text.\n\nSecond one, also short."
    assert result.compressed_tokens == result.original_tokens
    assert tiny_engine.compress(docs, "Anything?", rate=1.0).passthrough


def test_no_documents_and_empty_documents(tiny_engine):
    empty = tiny_engine.compress([], "Anything?", rate=0.5)
    assert empty.documents == [] and empty.text == "" and empty.original_tokens == 0
    blanks = tiny_engine.compress(["", ""], "Anything?", rate=0.5)
    assert [d.text for d in blanks.documents] == ["", ""]
    mixed = tiny_engine.compress(["", words(200, 11)], "Anything?", budget=20, config=SpecPCConfig(**TINY))
    assert mixed.documents[0].text == "" and mixed.documents[0].spans == []
    assert mixed.documents[1].selected_tokens == 20


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rate=0.0), ConfigError, "rate"),
        (dict(rate=1.5), ConfigError, "rate"),
        (dict(rate=-0.2), ConfigError, "rate"),
        (dict(budget=0), ConfigError, "budget"),
        (dict(), ConfigError, "exactly one"),
        (dict(budget=10, rate=0.5), ConfigError, "exactly one"),
        (dict(budget=10, window_size=0), ConfigError, "window_size"),
        (dict(budget=10, separator=3), ConfigError, "separator"),
        (dict(budget=10, colour="red"), ConfigError, "unknown compress option"),
    ],
)
def test_bad_options(tiny_engine, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_engine.compress("some text here", "q?", **kwargs)


def test_bad_inputs(tiny_engine):
    with pytest.raises(InvalidInputError, match="not text"):
        tiny_engine.compress(["fine", b"bytes"], "q?", budget=5)
    with pytest.raises(InvalidInputError, match="not text"):
        tiny_engine.compress(["fine", {"image": 1}], "q?", budget=5)
    with pytest.raises(InvalidInputError, match="string or a sequence"):
        tiny_engine.compress(42, "q?", budget=5)
    with pytest.raises(InvalidInputError, match="query is empty"):
        tiny_engine.compress("text", "   ", budget=5)
    with pytest.raises(ConfigError, match="starting_layer_index"):
        tiny_engine.compress(words(100, 12), "q?", budget=5, starting_layer_index=8)


def test_compress_cli(tiny_model_factory, tmp_path, capsys):
    from draftapprox_integrations.cli import main

    text = words(300, 13)
    path = tmp_path / "context.txt"
    path.write_text(text, encoding="utf-8")
    args = ["compress", str(path), "-q", "Where is the lamp?", "--budget", "30", "--draft", str(tiny_model_factory("llama")),
            "--device", "cpu", "--dtype", "float32", "--starting-layer-index", "1", "--kernel-size", "5"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    printed = out.strip()
    assert 0 < len(printed) < len(text)
    for piece in printed.split(" … "):
        assert piece.strip(" …") in text
    assert "-> " in err and "budget 30" in err
    with pytest.raises(SystemExit):
        main(["compress", str(path), "--budget", "5", "--rate", "0.5"])  # mutually exclusive
