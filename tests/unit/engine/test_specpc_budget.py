"""SpecPC holds its budget for every script (FINDINGS BUG-2) and refuses text that is not Unicode (BUG-3).

Kept units: words of at most MAX_WORD_TOKENS tokens, cut further where a run has no spaces (CJK, hashes,
base64, URLs, emoji), or whole sentences; they are taken only while they fit, so compressed_tokens <= budget.
Pure unit/fitting checks use the SmolLM2 tokenizer; the end-to-end ones a tiny random draft.
"""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from draftapprox_integrations.engine import SpecPCConfig
from draftapprox_integrations.engine.alignment import (
    MAX_WORD_TOKENS,
    count_tokens_in_spans,
    render_spans,
    sentence_bounds,
    sentence_units,
    tokenize_with_offsets,
    trim,
    word_units,
)
from draftapprox_integrations.engine.errors import InvalidInputError
from draftapprox_integrations.engine.specpc import prepare
from draftapprox_integrations.engine.specpc.fitting import build_plan, fit_units, render_plan, spend_budget

from tests.helpers import TINY

CHINESE = (
    "仪器大厅的门禁密码是四五二一。管理员把备用钥匙放在气压计旁边的蓝色柜子里。游客必须在日志上签名。"
    "园丁在河边修好了木门。老水手在港口旁边搬走了一篮梨！市长在集市广场上描述了旧地图？"
) * 4
JAPANESE = (
    "庭師は港の近くで木の門を直した。コルヴィン湾駅の秘密のアクセスコードは四八二九です。"
    "年老いた船乗りは川のそばで梨のかごを運んだ！町長は市場の広場で古い地図を説明した。"
) * 4
HASHES = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(12))
BASE64 = base64.b64encode(bytes(range(256)) * 3).decode()
URL = "https://example.com/a/very/long/path/" + "/".join(f"segment{i}?q={i * 7919}&lang=zh_CN" for i in range(30))
EMOJI = "😀🎉🔥👍🚀🌍" * 30 + " " + "👨‍👩‍👧" * 10 + " " + "🇫🇷🇯🇵" * 10
MIXED = (
    "Der Zugangscode für 科维恩湾站 ist 4829-ALPHA 😀 siehe https://example.org/codes?id=4829&lang=ja "
    "コードは秘密です。Привет, мир! مرحبا بالعالم. "
) * 6
IDENTIFIERS = (
    "The function compute_user_account_identifier_checksum_v2 returns 0x7f3a9c2b5e1d4f6a8b0c and stores it "
    "in AccountIdentifierChecksumRegistryFactoryBean. Call it as session.registry.lookup(account_uuid="
    "'3f2b9c1e-8d4a-4b7f-9e2c-5a6d7e8f9012'). "
) * 5
TEXTS = {
    "chinese": CHINESE,
    "japanese": JAPANESE,
    "hashes": HASHES,
    "base64": BASE64,
    "url": URL,
    "emoji": EMOJI,
    "mixed": MIXED,
    "identifiers": IDENTIFIERS,
}
QUESTION = "What is the access code?"


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


def _check_document(text: str, doc, separator: str = " … ") -> None:
    """Spans in range, sorted, disjoint, trimmed, rendered from the original, counted exactly."""
    spans = doc.spans
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))
    assert all(text[a:b] == text[a:b].strip() for a, b in spans)
    assert doc.text == render_spans(text, spans, separator)


# -- units ---------------------------------------------------------------------------------------------


def _unit_texts(text, tok, fn=word_units):
    _, offsets = tokenize_with_offsets(tok, text)
    return [text[a:b] for _, _, a, b in fn(text, offsets)]


def test_short_words_are_whole_units(tok):
    assert _unit_texts("The quick  brown fox.\n\nNext one", tok) == ["The", "quick", "brown", "fox.", "Next", "one"]


def test_a_long_word_is_cut_where_letters_meet_other_characters(tok):
    # key _ 4 8 2 9 - AL PHA: 9 tokens, more than MAX_WORD_TOKENS, so the word is cut into its pieces.
    assert _unit_texts("see key_4829-ALPHA now", tok) == ["see", "key", "_", "4829", "-", "ALPHA", "now"]
    assert _unit_texts("code 4829-AB.", tok) == ["code", "4829-AB."]  # short enough to stay whole


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_every_unit_is_bounded_and_keeps_characters_whole(name, tok):
    text = TEXTS[name]
    _, offsets = tokenize_with_offsets(tok, text)
    units = word_units(text, offsets)
    assert units, name
    for s, e, a, b in units:
        assert (a, b) == trim(text, a, b) and b > a
        # At most MAX_WORD_TOKENS tokens, or the byte pieces of one character group (sharing characters).
        assert e - s <= MAX_WORD_TOKENS or all(offsets[i][0] < offsets[i - 1][1] for i in range(s + 1, e))
        assert offsets[s][0] <= a and b <= max(o[1] for o in offsets[s:e])
    assert all(units[i][1] <= units[i + 1][0] for i in range(len(units) - 1))  # disjoint, in order
    if name in ("chinese", "hashes", "emoji"):
        assert max(e - s for s, e, _, _ in units) <= 4  # runs without spaces go (nearly) token by token


def test_cjk_sentences_end_without_a_space(tok):
    text = "第一句。第二句！第三句？「引用です。」最後"
    assert [text[a:b] for a, b in sentence_bounds(text)] == ["第一句。", "第二句！", "第三句？", "「引用です。」", "最後"]
    assert len(_unit_texts(CHINESE, tok, sentence_units)) == 24
    latin = "Pi is 3.14 here. Next"
    assert [latin[a:b] for a, b in sentence_bounds(latin)] == ["Pi is 3.14 here.", " Next"]


@pytest.mark.parametrize("whole_sentences", [False, True])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_the_walk_counts_exactly_what_is_rendered(name, whole_sentences, tok):
    """Any ranking, any budget: the units taken render to <= budget tokens without the safety net."""
    text = TEXTS[name]
    _, offsets = tokenize_with_offsets(tok, text)
    texts, offs = [text, IDENTIFIERS], [offsets, tokenize_with_offsets(tok, IDENTIFIERS)[1]]
    plan = build_plan(texts, offs, whole_sentences)
    total = len(plan.unit_of)
    rng = random.Random(len(text))
    for budget in (1, 2, 5, 13, 40, 150, total - 1):
        order = list(range(total))
        rng.shuffle(order)
        _, selected, compressed = render_plan(plan, fit_units(plan, order, budget))
        assert sum(selected) <= sum(compressed) <= budget
        spans, _, again = spend_budget(texts, offs, order, budget, whole_sentences)
        assert again == [count_tokens_in_spans(o, sp) for o, sp in zip(offs, spans)]
        if not whole_sentences and budget >= 2 * MAX_WORD_TOKENS:
            assert sum(again) >= budget - MAX_WORD_TOKENS  # smaller units fill what big ones leave


def test_sentence_mode_falls_back_to_words_when_no_sentence_fits(tok):
    text = "x" * 1200 + "7" * 600  # one 900-token sentence
    _, offsets = tokenize_with_offsets(tok, text)
    spans, _, compressed = spend_budget([text], [offsets], list(range(len(offsets))), 20, whole_sentences=True)
    assert 0 < compressed[0] <= 20 and spans[0][0][0] == 0


# -- end to end on the tiny draft ----------------------------------------------------------------------

BUDGETS = [dict(budget=b) for b in (1, 3, 8, 20, 64)] + [dict(rate=r) for r in (0.05, 0.1, 0.3)]


@pytest.mark.parametrize("whole_sentences", [False, True])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_budget_holds_for_every_script(tiny_engine, name, whole_sentences):
    text = TEXTS[name]
    cfg = SpecPCConfig(**TINY)
    for spend in BUDGETS:
        result = tiny_engine.compress(text, QUESTION, config=cfg, whole_sentences=whole_sentences, **spend)
        assert not result.passthrough and result.original_tokens > 100
        assert result.compressed_tokens <= result.budget, (name, spend, result.compressed_tokens)
        assert result.over_budget_tokens == 0 and result.within_budget
        assert result.stats()["over_budget_tokens"] == 0 and result.stats()["within_budget"] is True
        doc = result.documents[0]
        _check_document(text, doc)
        offsets = tokenize_with_offsets(tiny_engine.draft.tokenizer, text)[1]
        assert doc.compressed_tokens == count_tokens_in_spans(offsets, doc.spans)
        assert doc.selected_tokens <= doc.compressed_tokens
        if not whole_sentences and result.budget >= 2 * MAX_WORD_TOKENS:
            assert result.compressed_tokens >= result.budget - MAX_WORD_TOKENS  # the budget is spent, too


def test_the_reported_repro_is_compressed(tiny_engine):
    cfg = SpecPCConfig(**TINY)
    cjk = "仪器大厅的门禁密码是四五二一。管理员把备用钥匙放在气压计旁边的蓝色柜子里。游客必须在日志上签名。" * 3
    r = tiny_engine.compress([cjk], "What is the door code?", rate=0.1, config=cfg)
    assert (r.original_tokens, r.budget) == (264, 26) and r.compressed_tokens <= 26 and r.text != cjk
    r = tiny_engine.compress(["x" * 1200 + "7" * 600], "What is the door code?", budget=20, config=cfg)
    assert r.original_tokens == 900 and 12 <= r.compressed_tokens <= 20


def test_whole_sentences_are_whole_and_within_budget(tiny_engine):
    cfg = SpecPCConfig(**TINY)
    for text in (CHINESE, JAPANESE, IDENTIFIERS):
        starts_ends = {trim(text, a, b) for a, b in sentence_bounds(text)}
        starts, ends = {a for a, _ in starts_ends}, {b for _, b in starts_ends}
        result = tiny_engine.compress(text, QUESTION, rate=0.3, config=cfg, whole_sentences=True)
        assert 0 < result.compressed_tokens <= result.budget
        for a, b in result.documents[0].spans:
            assert a in starts and b in ends, text[a:b]


def test_documents_share_one_budget_and_relevance_sums_to_one(tiny_engine):
    docs = [CHINESE, EMOJI, IDENTIFIERS, JAPANESE]
    for ws in (False, True):
        result = tiny_engine.compress(docs, QUESTION, budget=60, config=SpecPCConfig(**TINY), whole_sentences=ws)
        assert result.compressed_tokens == sum(d.compressed_tokens for d in result.documents) <= 60
        assert result.selected_tokens == sum(d.selected_tokens for d in result.documents)
        assert abs(sum(d.relevance for d in result.documents) - 1.0) < 1e-4
        for text, doc in zip(docs, result.documents):
            _check_document(text, doc)


def test_query_free_prompt_keeps_its_tail_within_budget(tiny_engine):
    result = tiny_engine.compress(CHINESE, None, budget=30, config=SpecPCConfig(**TINY))
    assert result.compressed_tokens <= 30
    assert result.documents[0].spans[-1][1] == len(CHINESE)  # the window (the tail) is taken first


def test_a_budget_covering_everything_passes_cjk_through(tiny_engine):
    result = tiny_engine.compress([CHINESE, EMOJI], QUESTION, budget=100_000)
    assert result.passthrough and [d.text for d in result.documents] == [CHINESE, EMOJI]
    assert result.within_budget and result.compressed_tokens == result.original_tokens


def test_a_budget_below_any_character_keeps_nothing_rather_than_overshoot(tiny_engine):
    # Every emoji is at least 3 draft tokens: with a budget of 1 nothing fits, so nothing is kept.
    result = tiny_engine.compress("😀🎉🔥👍" * 20, QUESTION, budget=1, config=SpecPCConfig(**TINY))
    assert result.compressed_tokens == 0 and result.text == "" and result.within_budget


# -- lone surrogates (BUG-3) -----------------------------------------------------------------------------


@pytest.fixture
def fresh_engine(tiny_model_factory):
    from draftapprox_integrations.engine import DraftApproxEngine

    return DraftApproxEngine(str(tiny_model_factory("llama")), None, device="cpu", dtype="float32")


@pytest.mark.parametrize(
    "context, query, extra, match",
    [
        (["fine text", "code 4521 \ud800"], "code?", {}, "document 1 .*surrogate"),
        ("code \udcff 4521", "code?", {}, "the context .*surrogate"),
        ("code 4521", "what \ud800 code?", {}, "the query .*surrogate"),
        ("code 4521", "code?", dict(lookahead_text="4521 \udfff"), "lookahead_text .*surrogate"),
    ],
)
def test_lone_surrogates_are_refused_before_loading(fresh_engine, context, query, extra, match):
    with pytest.raises(InvalidInputError, match=match):
        fresh_engine.compress(context, query, budget=2, **extra)
    with pytest.raises(InvalidInputError, match=match):
        prepare(context, query, budget=2, **extra)
    assert fresh_engine.loaded is False
