"""SpecPC through the engine on the embedded SmolLM2: needles survive heavy compression."""

from __future__ import annotations

import random

import pytest

from tests.helpers import check_spans as _check_spans


# -- the embedded SmolLM2 draft ----------------------------------------------------------------------

NEEDLE = "The secret access code of the Corvin Bay station is 4829-ALPHA."
QUESTION = "What is the secret access code of the Corvin Bay station?"


def _haystack(n_sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    subjects = ["The gardener", "An old sailor", "The baker", "The mayor", "A quiet student", "The painter"]
    verbs = ["repaired", "painted", "carried", "described", "measured", "cleaned"]
    objects = ["the wooden gate", "a basket of pears", "the copper kettle", "an old map", "the garden wall"]
    places = ["near the harbour", "behind the mill", "by the river", "in the market square", "under the old oak"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}." for _ in range(n_sentences)]


@pytest.fixture(scope="module")
def smollm2_draft_engine():
    from draftapprox_integrations import get_engine

    return get_engine("smollm2-135m-instruct", None, device="cpu").load()


def test_needle_survives_10_percent_of_a_2k_haystack(smollm2_draft_engine):
    sentences = _haystack(200, 0)
    sentences.insert(117, NEEDLE)
    text = " ".join(sentences)
    result = smollm2_draft_engine.compress(text, QUESTION, rate=0.1)
    assert 1800 <= result.original_tokens <= 2600
    assert result.budget == round(0.1 * result.original_tokens)
    # Whole words are kept only while they fit: the kept text never exceeds the budget.
    assert result.selected_tokens <= result.compressed_tokens <= result.budget and result.within_budget
    assert NEEDLE in result.text
    _check_spans(text, result.documents[0], " … ")


def test_budget_goes_to_the_document_with_the_answer(smollm2_draft_engine):
    docs = [" ".join(_haystack(60, s)) for s in (1, 2, 3)]
    docs[2] = docs[2][: len(docs[2]) // 2] + " " + NEEDLE + " " + docs[2][len(docs[2]) // 2 :]
    result = smollm2_draft_engine.compress(docs, QUESTION, rate=0.1, whole_sentences=True)
    assert NEEDLE in result.documents[2].text
    assert max(result.documents, key=lambda d: d.relevance).index == 2
    assert result.documents[2].selected_tokens > max(result.documents[0].selected_tokens, result.documents[1].selected_tokens)


def test_needle_survives_chunked_scoring(smollm2_draft_engine):
    sentences = _haystack(200, 4)
    sentences.insert(150, NEEDLE)
    text = " ".join(sentences)
    result = smollm2_draft_engine.compress(text, QUESTION, rate=0.1, max_prompt_tokens=700)
    assert result.chunks >= 3
    assert result.budget == round(0.1 * result.original_tokens)
    assert result.selected_tokens <= result.compressed_tokens <= result.budget
    assert NEEDLE in result.text
