"""Offline tasks (determinism, sizing, answerability), RULER scoring and the prompt-compression baselines."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.evals.baselines import (
    perplexity_token_drop,
    random_token_drop,
    spans_of_positions,
    token_surprisal,
    tokenize_with_offsets,
)
from draftapprox_integrations.evals.scoring import score_prediction
from draftapprox_integrations.evals.tasks import TASKS, generate_samples, make_sample


def _count(tok, text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


# -- tasks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(TASKS))
def test_generation_is_deterministic_per_seed(task, smollm2_tokenizer):
    a = make_sample(task, 1024, smollm2_tokenizer, seed=3, index=1)
    b = make_sample(task, 1024, smollm2_tokenizer, seed=3, index=1)
    c = make_sample(task, 1024, smollm2_tokenizer, seed=4, index=1)
    d = make_sample(task, 1024, smollm2_tokenizer, seed=3, index=2)
    assert a.to_dict() == b.to_dict()
    assert a.context != c.context and a.answers != c.answers
    assert a.context != d.context


@pytest.mark.parametrize("length", [2048, 4096])
@pytest.mark.parametrize("task", list(TASKS))
def test_length_within_two_percent(task, length, smollm2_tokenizer):
    s = make_sample(task, length, smollm2_tokenizer, seed=0)
    measured = _count(smollm2_tokenizer, s.prompt())
    assert measured == s.length_tokens
    assert abs(measured - length) <= 0.02 * length, (task, length, measured)


def test_longer_lengths_and_other_seeds_stay_within_tolerance(smollm2_tokenizer):
    for task in ("niah_single", "vt", "cwe"):
        for seed in (1, 2):
            s = make_sample(task, 8192, smollm2_tokenizer, seed=seed)
            assert abs(_count(smollm2_tokenizer, s.prompt()) - 8192) <= 0.02 * 8192


@pytest.mark.parametrize("task", list(TASKS))
def test_every_sample_is_answerable_and_the_question_comes_last(task, smollm2_tokenizer):
    for s in generate_samples([task], [1024, 2048], 2, smollm2_tokenizer, seed=5):
        assert s.answers and s.match in ("all", "any")
        for a in s.answers:
            assert a in s.context, (s.id, a)
            assert a not in s.question or task in ("vt",), "the question must not give the answer away"
        prompt = s.prompt()
        assert prompt.index(s.question) > len(s.context) - 1
        assert prompt.endswith(s.answer_prefix)
        assert s.question not in s.context


def test_needle_tasks_place_their_needles(smollm2_tokenizer):
    s = make_sample("niah_single", 2048, smollm2_tokenizer, seed=1)
    key = s.metadata["queried_keys"][0]
    assert f"One of the special magic numbers for {key} is: {s.answers[0]}." in s.context
    assert key in s.question
    multi = make_sample("niah_multikey", 2048, smollm2_tokenizer, seed=1)
    needles = re.findall(r"special magic numbers for ([\w-]+) is: (\d+)\.", multi.context)
    assert len(needles) == 4 and len({k for k, _ in needles}) == 4  # 3 distractor keys
    asked = multi.metadata["queried_keys"][0]
    assert [v for k, v in needles if k == asked] == multi.answers
    hay = make_sample("niah_multikey_needles", 2048, smollm2_tokenizer, seed=1)
    lines = hay.context.split("\n")[1:]
    assert all(line.startswith("One of the special magic numbers for ") for line in lines)
    assert sum(hay.answers[0] in line for line in lines) == 1
    mv = make_sample("niah_multivalue", 2048, smollm2_tokenizer, seed=1)
    assert len(mv.answers) == 4 and len(set(mv.answers)) == 4 and mv.match == "all"
    mq = make_sample("niah_multiquery", 2048, smollm2_tokenizer, seed=1)
    assert all(k in mq.question for k in mq.metadata["queried_keys"]) and len(mq.answers) == 4
    uuid_task = make_sample("niah_multikey_uuid", 2048, smollm2_tokenizer, seed=1)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid_task.answers[0])


def test_variable_tracking_chains_resolve_to_the_asked_value(smollm2_tokenizer):
    s = make_sample("vt", 2048, smollm2_tokenizer, seed=2)
    assigns = dict(re.findall(r"VAR ([A-Z]{5}) = ((?:VAR )?[A-Z0-9]+)\.", s.context))
    value = s.metadata["value"]

    def resolve(name):
        v = assigns[name]
        return resolve(v[4:]) if v.startswith("VAR ") else v

    holders = sorted(n for n in assigns if resolve(n) == value)
    assert holders == sorted(s.answers)
    assert len(assigns) == 10  # two chains of five: one asked, one distractor
    # each statement of a chain comes after the one it copies from
    positions = [s.context.index(f"VAR {n} =") for n in s.answers]
    assert positions == sorted(positions)


def test_common_and_frequent_words_are_really_the_most_common(smollm2_tokenizer):
    cwe = make_sample("cwe", 2048, smollm2_tokenizer, seed=3)
    words = re.findall(r"^\d+\. (\w+)$", cwe.context, flags=re.M)
    counts = Counter(words)
    top = {w for w, _ in counts.most_common(10)}
    assert top == set(cwe.answers)
    assert min(counts[w] for w in cwe.answers) > max(c for w, c in counts.items() if w not in top)
    fwe = make_sample("fwe", 2048, smollm2_tokenizer, seed=3)
    body = fwe.context.split("\n", 1)[1].replace("...", " ")
    fcounts = Counter(body.split())
    ranked = [w for w, _ in fcounts.most_common()]
    assert ranked[:3] == fwe.answers
    assert fcounts[ranked[2]] > fcounts[ranked[3]]


DOCQA = [t for t in TASKS if t.startswith("qa_")]


@pytest.mark.parametrize("task", DOCQA)
def test_document_qa_plants_two_far_passages_among_distractors(task, smollm2_tokenizer):
    for length in (2048, 8192):
        s = make_sample(task, length, smollm2_tokenizer, seed=7, index=1)
        assert abs(_count(smollm2_tokenizer, s.prompt()) - length) <= 0.02 * length
        meta = s.metadata
        assert meta["entity"] in s.question and s.match == "all"
        # both passages about the asked entity are in the document, where the metadata says, far apart
        assert len(meta["passages"]) == 2
        for passage, offset in zip(meta["passages"], meta["passage_offsets"]):
            assert s.context.index(passage) == offset and s.context.count(passage) == 1
        assert abs(meta["passage_depths"][0] - meta["passage_depths"][1]) >= 0.25, meta["passage_depths"]
        # one answer in each passage, each once in the whole text; both passages name the entity
        assert [sum(a in p for a in s.answers) for p in meta["passages"]] == [1, 1]
        assert all(s.context.count(a) == 1 for a in s.answers) and len(s.answers) == 2
        assert all(meta["entity"].lower() in p.lower() for p in meta["passages"])
        # distractors: two other entities of the same shape with their own values, none an answer
        assert len(meta["distractor_entities"]) == 2 and meta["entity"] not in meta["distractor_entities"]
        assert all(e.lower() in s.context.lower() for e in meta["distractor_entities"])
        assert len(set(meta["distractor_values"])) == 2 * len(s.answers)
        for v in meta["distractor_values"]:
            assert s.context.count(v) == 1 and all(v not in a and a not in v for a in s.answers)
        # the entities share no word past "the", so the asked name alone picks its passages
        names = [meta["entity"], *meta["distractor_entities"]]
        words = [w for n in names for w in n.lower().split()[1:]]
        assert len(words) == len(set(words))


def test_document_kinds_read_like_their_kind_and_seeds_change_them(smollm2_tokenizer):
    report = make_sample("qa_report", 2048, smollm2_tokenizer, seed=0)
    manual = make_sample("qa_manual", 2048, smollm2_tokenizer, seed=0)
    meeting = make_sample("qa_meeting", 2048, smollm2_tokenizer, seed=0)
    assert report.context.startswith("Quarterly progress report") and "\nSection 1. " in report.context
    assert "service manual" in manual.context.split("\n", 1)[0] and "\n1. " in manual.context
    assert meeting.context.startswith("Minutes of the") and "\nItem 1." in meeting.context
    for s in (report, manual, meeting):
        paragraphs = [p for p in s.context.split("\n\n") if p.strip()]
        assert len(paragraphs) >= 20  # many paragraphs, not one block
        assert "special magic" not in s.context and "VAR " not in s.context
    other = make_sample("qa_report", 2048, smollm2_tokenizer, seed=1)
    assert other.context != report.context and other.metadata["entity"] != report.metadata["entity"]
    assert set(other.answers).isdisjoint(report.answers)


def test_bad_task_arguments_raise(smollm2_tokenizer):
    with pytest.raises(ConfigError, match="unknown task"):
        make_sample("nope", 2048, smollm2_tokenizer)
    with pytest.raises(ConfigError, match="length"):
        make_sample("niah_single", 10, smollm2_tokenizer)
    with pytest.raises(ConfigError, match="num_samples"):
        generate_samples(["niah_single"], [1024], 0, smollm2_tokenizer)


def test_chat_prompt_keeps_question_and_prefix(smollm2_tokenizer):
    s = make_sample("niah_single", 1024, smollm2_tokenizer, seed=0)
    text = s.chat_prompt(smollm2_tokenizer, context="SHORT CONTEXT")
    assert "SHORT CONTEXT" in text and s.question in text and s.context not in text
    assert text.endswith(s.answer_prefix)
    assert text.index("SHORT CONTEXT") < text.index(s.question)


# -- scoring -------------------------------------------------------------------------------------


def test_scoring_known_cases():
    assert score_prediction(" The number is 1234567.", ["1234567"]) == 1.0
    assert score_prediction("no idea", ["1234567"]) == 0.0
    assert score_prediction("123456", ["1234567"]) == 0.0  # a prefix of the answer is not the answer
    assert score_prediction("ABC-def", ["abc-DEF"]) == 1.0  # case-insensitive
    assert score_prediction("11, 22 and 44", ["11", "22", "33", "44"], "all") == 0.75  # RULER partial credit
    assert score_prediction("11", ["11", "22"], "any") == 1.0
    assert score_prediction("", ["11", "22"], "any") == 0.0
    assert score_prediction("x", "x") == 1.0
    with pytest.raises(ConfigError):
        score_prediction("x", ["x"], "most")
    with pytest.raises(ConfigError):
        score_prediction("x", [])


# -- prompt baselines ----------------------------------------------------------------------------


def _spans_are_original_slices(text, result):
    rebuilt = "".join(text[a:b] for a, b in result.spans)
    assert rebuilt == result.text
    assert all(a < b for a, b in result.spans)
    assert all(result.spans[i][1] < result.spans[i + 1][0] for i in range(len(result.spans) - 1))


def test_random_drop_respects_budget_and_is_seeded(smollm2_tokenizer):
    s = make_sample("niah_single", 2048, smollm2_tokenizer, seed=0)
    n = _count(smollm2_tokenizer, s.context)
    r1 = random_token_drop(s.context, 300, smollm2_tokenizer, seed=1)
    r2 = random_token_drop(s.context, 300, smollm2_tokenizer, seed=1)
    r3 = random_token_drop(s.context, 300, smollm2_tokenizer, seed=2)
    assert r1.compressed_tokens == 300 and r1.original_tokens == n
    assert r1.text == r2.text and r1.text != r3.text
    _spans_are_original_slices(s.context, r1)
    # the kept text re-tokenises to about the budget (merges across dropped gaps may shift it a little)
    assert abs(_count(smollm2_tokenizer, r1.text) - 300) <= 30
    whole = random_token_drop(s.context, 10 * n, smollm2_tokenizer)
    assert whole.text == s.context and whole.compressed_tokens == n
    # the question is not part of what is compressed: the rebuilt prompt carries it whole
    prompt = s.prompt(context=r1.text)
    assert prompt.endswith(f"{s.question}\n{s.answer_prefix}")
    with pytest.raises(ConfigError):
        random_token_drop(s.context, 0, smollm2_tokenizer)


def test_spans_merge_adjacent_tokens():
    offsets = [(0, 3), (3, 7), (7, 9), (9, 12)]
    assert spans_of_positions(offsets, [3, 0, 1]) == [(0, 7), (9, 12)]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_factory):
    from draftapprox_integrations.engine.loading import load_model, resolve_reference

    return load_model(resolve_reference(str(tiny_model_factory("llama"))), device=torch.device("cpu"), dtype=torch.float32)


def test_surprisal_in_chunks_matches_one_forward(tiny_lm):
    ids = tiny_lm.tokenizer("The quiet river bends past the old mill and the miller waves. " * 12, add_special_tokens=False)["input_ids"]
    prefix = tiny_lm.tokenizer("Which mill?\n\n", add_special_tokens=False)["input_ids"]
    chunked = token_surprisal(tiny_lm, ids, prefix, chunk_size=37)
    with torch.no_grad():
        full = torch.tensor(prefix + ids)[None]
        logp = torch.log_softmax(tiny_lm.model(input_ids=full).logits[0].float(), -1)
    expected = -logp[len(prefix) - 1 : -1].gather(1, torch.tensor(ids)[:, None])[:, 0]
    assert torch.allclose(chunked, expected, atol=1e-3)
    no_prefix = token_surprisal(tiny_lm, ids, (), chunk_size=50)
    assert torch.isinf(no_prefix[0]) and torch.isfinite(no_prefix[1:]).all()


def test_perplexity_drop_keeps_the_most_surprising_tokens(tiny_lm):
    s = make_sample("niah_single", 1024, tiny_lm.tokenizer, seed=0)
    r = perplexity_token_drop(s.context, 200, tiny_lm, query=s.question, chunk_size=256)
    assert r.compressed_tokens == 200
    _spans_are_original_slices(s.context, r)
    ids, offsets = tokenize_with_offsets(tiny_lm.tokenizer, s.context)
    prefix = tiny_lm.tokenizer(f"{s.question}\n\n", add_special_tokens=False)["input_ids"]
    scores = token_surprisal(tiny_lm, ids, prefix, chunk_size=256)
    kept = set(sorted(range(len(ids)), key=lambda i: (-float(scores[i]), i))[:200])
    assert r.spans == spans_of_positions(offsets, sorted(kept))
    threshold = min(float(scores[i]) for i in kept)
    assert all(float(scores[i]) <= threshold + 1e-4 for i in range(len(ids)) if i not in kept)
    assert s.prompt(context=r.text).endswith(f"{s.question}\n{s.answer_prefix}")
