"""The decode loop's pieces: stop-text tracking, token sampling, option checks, and a row decoded alone.

StopTextTracker runs on the real SmolLM2 tokenizer (byte-level BPE: multi-byte characters split across
tokens); rows decode on the tiny random llama through the engine's decode batch (``steps.decode_alone``).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from draftapprox_integrations.engine.decoding import StopTextTracker, check_stop
from draftapprox_integrations.engine.errors import ConfigError
from draftapprox_integrations.engine.sampling import SamplingRule, check_sampling, rule_tensors, sample_tokens
from draftapprox_integrations.engine.steps import DecodeRequest, decode_alone

# -- StopTextTracker -----------------------------------------------------------------------------------


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _stream(tokenizer, ids: list[int], stop=()) -> tuple[StopTextTracker, list[str], bool]:
    """Push ``ids`` one by one until a stop; (tracker, every delta including the final flush, stopped)."""
    tracker = StopTextTracker(tokenizer, stop)
    deltas = []
    for token_id in ids:
        delta, stopped = tracker.push(token_id)
        deltas.append(delta)
        if stopped:
            return tracker, deltas, True
    deltas.append(tracker.flush())
    return tracker, deltas, False


def test_text_without_stop_sequences_is_the_plain_decode(smollm2_tokenizer):
    text = "The answer is 42.\nQuick note: fine"
    ids = _ids(smollm2_tokenizer, text)
    tracker, deltas, stopped = _stream(smollm2_tokenizer, ids)
    assert not stopped and not tracker.stopped
    assert tracker.text == text
    assert "".join(deltas) == text
    assert deltas[-1] == ""  # nothing was held back: no stop sequence, no partial character
    assert tracker.token_ids == ids


def test_stop_spanning_two_tokens_is_detected_and_trimmed(smollm2_tokenizer):
    ids = _ids(smollm2_tokenizer, "The answer is 42.\nQuick note: fine")
    pieces = [smollm2_tokenizer.decode([i]) for i in ids]
    four, two = pieces.index("4"), pieces.index("2")
    assert two == four + 1  # "42" really is two tokens

    tracker = StopTextTracker(smollm2_tokenizer, ["42"])
    deltas = []
    for n, token_id in enumerate(ids):
        delta, stopped = tracker.push(token_id)
        deltas.append(delta)
        if n < two:
            assert not stopped
        else:
            break
    assert stopped and tracker.stopped
    assert n == two  # stopped on the token that completes the stop string, not before
    assert "4" not in deltas[four]  # the "4" was held back: it could start "42"
    assert tracker.text == "The answer is "
    assert "".join(deltas) == "The answer is "


def test_possible_stop_prefix_is_held_back_then_released_by_later_pushes(smollm2_tokenizer):
    stop = "\nQuick fox"
    ids = _ids(smollm2_tokenizer, "The answer is 42.\nQuick note: fine")
    pieces = [smollm2_tokenizer.decode([i]) for i in ids]
    newline = pieces.index("\n")
    tracker = StopTextTracker(smollm2_tokenizer, [stop])
    deltas = [tracker.push(i)[0] for i in ids[: newline + 1]]
    assert deltas[-1] == ""  # "\n" could start "\nQuick fox"
    assert "".join(deltas) == "The answer is 42."
    delta, stopped = tracker.push(ids[newline + 1])  # "Quick": "\nQuick" still matches ...
    assert not stopped
    assert delta == ""  # ... so nothing is released yet
    delta, stopped = tracker.push(ids[newline + 2])  # " note": "\nQuick n" is no stop
    assert not stopped
    assert delta == "\nQuick note"
    rest = [tracker.push(i)[0] for i in ids[newline + 3 :]]
    final = "".join(deltas) + delta + "".join(rest) + tracker.flush()
    assert final == tracker.text == "The answer is 42.\nQuick note: fine"


def test_held_back_prefix_is_released_by_flush(smollm2_tokenizer):
    ids = _ids(smollm2_tokenizer, "It ended.\n")
    tracker = StopTextTracker(smollm2_tokenizer, ["\nQuestion:"])
    deltas = [tracker.push(i) for i in ids]
    assert not any(stopped for _, stopped in deltas)
    assert "".join(d for d, _ in deltas) == "It ended."
    assert tracker.flush() == "\n"
    assert tracker.flush() == ""  # flushing twice gives nothing new


def test_earliest_stop_wins_whatever_the_order_given(smollm2_tokenizer):
    ids = _ids(smollm2_tokenizer, "Done. END_OF_ANSWER more")  # 'Done', '.', ' END', '_', ...
    for stops in (["END", ". E"], [". E", "END"]):
        tracker, deltas, stopped = _stream(smollm2_tokenizer, ids, stops)
        assert stopped
        assert len(tracker.token_ids) == 3  # both stops complete on ' END'
        assert tracker.text == "Done"  # ". E" starts before "END"
        assert "".join(deltas) == "Done"


def test_stop_sequence_that_never_appears(smollm2_tokenizer):
    text = "The answer is 42.\nQuick note: fine"
    tracker, deltas, stopped = _stream(smollm2_tokenizer, _ids(smollm2_tokenizer, text), ["<|end|>", "Answer:"])
    assert not stopped
    assert tracker.text == text and "".join(deltas) == text


def test_multi_byte_characters_are_never_emitted_half_decoded(smollm2_tokenizer):
    text = "café 日本語 🤖 ok"
    ids = _ids(smollm2_tokenizer, text)
    halves = [i for i in ids if "\ufffd" in smollm2_tokenizer.decode([i])]
    assert len(halves) >= 6  # the CJK characters and the emoji really are split into byte tokens
    tracker, deltas, stopped = _stream(smollm2_tokenizer, ids)
    assert not stopped
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tracker.text == text


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("The answer is 42.\nQuick note: fine", ("\nQuick",)),
        ("The answer is 42.\nQuick note: fine", (" fine", "Qu")),
        ("The answer is 42.\nQuick note: fine", ("is 42.\nX", "2.")),  # the stop releases held text
        ("café 日本語 🤖 ok", ("本",)),
        ("café 日本語 🤖 ok", ("🤖",)),
        ("café 日本語 🤖 ok", ("é 日本x",)),  # never completes: long held-back prefixes, then released
        ("Done. END_OF_ANSWER more", ("_ANSWER",)),
    ],
)
def test_deltas_always_add_up_to_the_final_text(smollm2_tokenizer, text, stop):
    tracker, deltas, stopped = _stream(smollm2_tokenizer, _ids(smollm2_tokenizer, text), stop)
    cuts = [text.find(s) for s in stop if s in text]
    expected = text[: min(cuts)] if cuts else text
    assert stopped == bool(cuts)
    assert tracker.text == expected
    assert "".join(deltas) == expected
    assert all("\ufffd" not in d for d in deltas)
    assert not any(s in "".join(deltas) for s in stop)


class _CountingTokenizer:
    """A tokenizer whose ``decode`` counts the ids it is given per call."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.calls = tokenizer, []

    def decode(self, ids, **kwargs):
        self.calls.append(len(ids))
        return self.tokenizer.decode(ids, **kwargs)


def test_detokenizing_decodes_only_the_new_tokens_each_step(smollm2_tokenizer):
    # GPU-NOTES section 2: re-decoding the whole answer each step is O(n^2) (242 ms for 1,024 tokens).
    text = " ".join(f"word{i % 97} with émoji 😀 and 中文 {i}." for i in range(400))
    ids = _ids(smollm2_tokenizer, text)[:2000]
    assert len(ids) == 2000
    counting = _CountingTokenizer(smollm2_tokenizer)
    tracker = StopTextTracker(counting, stop=("never appears",))
    out, per_step = [], []
    for token_id in ids:
        before = len(counting.calls)
        out.append(tracker.push(token_id)[0])
        per_step.append(sum(counting.calls[before:]))
    out.append(tracker.flush())
    assert "".join(out) == smollm2_tokenizer.decode(ids, skip_special_tokens=True)
    assert max(per_step) <= 16  # a few tokens around the settled point, whatever the answer's length
    assert sum(per_step) <= 6 * len(ids)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_text_equals_the_whole_decode_for_random_ids(smollm2_tokenizer, seed):
    # Random ids (byte pieces split mid-character, specials among them): the deltas add up to decode(ids).
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, len(smollm2_tokenizer), (300,), generator=gen).tolist()
    tracker = StopTextTracker(smollm2_tokenizer)
    text = "".join(tracker.push(i)[0] for i in ids) + tracker.flush()
    assert text == smollm2_tokenizer.decode(ids, skip_special_tokens=True)


# -- sample_tokens (on the device, per row) ----------------------------------------------------------


def _draws(rule: SamplingRule, logits: torch.Tensor, n: int) -> list[int]:
    """``n`` consecutive draws of one row (steps 0..n-1) from the same logits."""
    temperature, top_p, keys = rule_tensors([rule] * n, logits.device)
    rows = logits.reshape(1, -1).expand(n, -1)
    steps = torch.arange(n)
    return sample_tokens(rows, temperature, top_p, keys, steps, randomized=not rule.greedy, nucleus=rule.nucleus).tolist()


def test_greedy_is_argmax():
    gen = torch.Generator().manual_seed(0)
    rule = SamplingRule.of(0.0, seed=1)
    assert rule.greedy
    for _ in range(20):
        logits = torch.randn(300, generator=gen)
        assert _draws(rule, logits, 1) == [int(logits.argmax())]
    assert not SamplingRule.of(0.7).greedy


def test_same_seed_same_sequence_other_seed_differs():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(3))
    a = _draws(SamplingRule.of(1.0, seed=123), logits, 200)
    b = _draws(SamplingRule.of(1.0, seed=123), logits, 200)
    c = _draws(SamplingRule.of(1.0, seed=124), logits, 200)
    assert a == b
    assert a != c
    assert sum(x != y for x, y in zip(a, c)) > 50  # not just one draw apart
    assert len(set(a)) > 5  # really sampling, not stuck on one token
    # The same holds with nucleus sampling.
    assert _draws(SamplingRule.of(0.8, 0.9, seed=7), logits, 100) == _draws(SamplingRule.of(0.8, 0.9, seed=7), logits, 100)


def test_a_rows_draw_does_not_depend_on_the_other_rows():
    # FINDINGS-2 D7: a row's draw must be the same alone and in a batch, in any slot, whatever the others are.
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 400, generator=gen)
    rules = [SamplingRule.of(0.7, top_p, seed=s) for s, top_p in enumerate([0.5, 0.9, 0.999, 1.0, 0.3, 0.95])]
    steps = torch.tensor([3, 0, 7, 1, 2, 9])
    temperature, top_p, keys = rule_tensors(rules, logits.device)
    together = sample_tokens(logits, temperature, top_p, keys, steps, randomized=True, nucleus=True).tolist()
    for i, rule in enumerate(rules):
        t, p, k = rule_tensors([rule], logits.device)
        alone = sample_tokens(logits[i : i + 1], t, p, k, steps[i : i + 1], randomized=True, nucleus=rule.nucleus)
        assert alone.tolist() == [together[i]]
    order = [5, 3, 0, 4, 1, 2]  # other slots
    t, p, k = rule_tensors([rules[i] for i in order], logits.device)
    shuffled = sample_tokens(logits[order], t, p, k, steps[order], randomized=True, nucleus=True).tolist()
    assert shuffled == [together[i] for i in order]


def test_greedy_rows_beside_sampled_rows_stay_greedy():
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(8))
    rules = [SamplingRule.of(0.0), SamplingRule.of(1.5, 0.8, seed=1), SamplingRule.of(0.0)]
    temperature, top_p, keys = rule_tensors(rules, logits.device)
    got = sample_tokens(logits, temperature, top_p, keys, torch.zeros(3, dtype=torch.int64), randomized=True, nucleus=True)
    assert got[0] == logits[0].argmax() and got[2] == logits[2].argmax()


def test_tiny_top_p_always_picks_the_most_likely_token():
    logits = torch.tensor([1.0, 1.2, 0.9, 1.1, 0.5])  # the top token has only ~25% of the mass
    assert set(_draws(SamplingRule.of(1.5, 1e-6, seed=0), logits, 300)) == {1}


def test_temperature_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2])
    n = 4000
    counts = Counter(_draws(SamplingRule.of(1.0, seed=0), probs.log(), n))
    assert set(counts) == {0, 1, 2}
    for token, p in enumerate(probs.tolist()):
        assert abs(counts[token] / n - p) < 0.04  # > 5 standard deviations for n = 4000

    # Temperature 0.5 squares the probabilities (then renormalises): sharper, same order.
    sharp = probs**2 / (probs**2).sum()
    counts = Counter(_draws(SamplingRule.of(0.5, seed=1), probs.log(), n))
    for token, p in enumerate(sharp.tolist()):
        assert abs(counts[token] / n - p) < 0.04


def test_top_p_keeps_the_smallest_prefix_that_reaches_it():
    probs = torch.tensor([0.2, 0.5, 0.3])  # sorted: 0.5, 0.3 | 0.2 -> top_p 0.7 keeps tokens 1 and 2
    n = 4000
    counts = Counter(_draws(SamplingRule.of(1.0, 0.7, seed=2), probs.log(), n))
    assert counts[0] == 0
    assert abs(counts[1] / n - 0.5 / 0.8) < 0.04
    assert abs(counts[2] / n - 0.3 / 0.8) < 0.04


# -- check_sampling / check_stop -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "top_p", "max_new_tokens", "match"),
    [
        (0.0, 1.0, 0, "max_new_tokens"),
        (0.0, 1.0, -3, "max_new_tokens"),
        (0.0, 1.0, True, "max_new_tokens"),
        (0.0, 1.0, 2.0, "max_new_tokens"),
        (-0.1, 1.0, 8, "temperature"),
        ("hot", 1.0, 8, "temperature"),
        (0.7, 0.0, 8, "top_p"),
        (0.7, -0.5, 8, "top_p"),
        (0.7, 1.01, 8, "top_p"),
        (float("nan"), 1.0, 8, "temperature"),
        (float("inf"), 1.0, 8, "temperature"),
        (True, 1.0, 8, "temperature"),
        (0.7, float("nan"), 8, "top_p"),
    ],
)
def test_check_sampling_refuses_bad_values(temperature, top_p, max_new_tokens, match):
    with pytest.raises(ConfigError, match=match):
        check_sampling(temperature, top_p, max_new_tokens)


@pytest.mark.parametrize(("temperature", "top_p", "max_new_tokens"), [(0.0, 1.0, 1), (0, 1, 512), (1.3, 1e-6, 7), (2.0, 0.5, 3)])
def test_check_sampling_accepts_good_values(temperature, top_p, max_new_tokens):
    assert check_sampling(temperature, top_p, max_new_tokens) is None


def test_check_stop_normalises_and_refuses_empty():
    assert check_stop(None) == ()
    assert check_stop([]) == ()
    assert check_stop("\n\n") == ("\n\n",)
    assert check_stop(["a", "bc"]) == ("a", "bc")
    assert check_stop(("x",)) == ("x",)
    for bad in ("", ["ok", ""], [None], ["ok", 3]):
        with pytest.raises(ConfigError, match="non-empty strings"):
            check_stop(bad)
    for bad in (5, {"a": 1}, b"bytes"):  # FINDINGS BUG-13: stop=5 was a raw TypeError
        with pytest.raises(ConfigError, match="stop must be"):
            check_stop(bad)


# -- a row decoded alone on a tiny random llama ---------------------------------------------------------

PROMPT = "The river runs north past the copper market and the quiet garden."


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_factory):
    from draftapprox_integrations.engine.loading import load_model, resolve_reference

    return load_model(resolve_reference(str(tiny_model_factory("llama"))), device=torch.device("cpu"), dtype=torch.float32)


def _decode(loaded, *, first_logits=None, rule=None, **kwargs):
    """A row continuing PROMPT's prefill, decoded alone: (text, token ids, finish reason)."""
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = loaded.model(input_ids=ids, use_cache=True)
    kwargs.setdefault("eos_ids", set())
    request = DecodeRequest(
        loaded.model, loaded.tokenizer, out.cache, out.logits[0, -1] if first_logits is None else first_logits,
        ids.shape[1], rule=rule or SamplingRule(), **kwargs,
    )
    look = decode_alone(request).lookahead
    return look.text, look.token_ids, look.finish_reason


def _greedy_by_full_forwards(loaded, n: int) -> list[int]:
    """Reference: greedy tokens by re-running the whole sequence each step (no cache, no position ids)."""
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            token = int(loaded.model(input_ids=ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def test_greedy_decode_equals_a_plain_greedy_loop(tiny_lm):
    _, tokens, _ = _decode(tiny_lm, max_new_tokens=12)
    assert tokens == _greedy_by_full_forwards(tiny_lm, 12)
    ids = tiny_lm.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        generated = tiny_lm.model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert tokens == generated[0, ids["input_ids"].shape[1] :].tolist()


def test_length_finish_and_text_is_the_decoded_tokens(tiny_lm):
    text, tokens, finish = _decode(tiny_lm, max_new_tokens=6)
    assert len(tokens) == 6 and finish == "length"
    assert text == tiny_lm.tokenizer.decode(tokens, skip_special_tokens=True)


def test_length_finish_releases_text_held_for_a_stop_that_never_came(tiny_lm):
    full, _, _ = _decode(tiny_lm, max_new_tokens=6)
    stop = full[-1] + "\u0007"  # the answer's last character could start it, so it is held back until the end
    assert stop not in full
    text, _, finish = _decode(tiny_lm, max_new_tokens=6, stop=(stop,))
    assert finish == "length" and text == full


def test_single_token_budget(tiny_lm):
    _, tokens, finish = _decode(tiny_lm, max_new_tokens=1)
    assert finish == "length" and tokens == _greedy_by_full_forwards(tiny_lm, 1)


def test_eos_from_the_first_logits_ends_with_no_tokens(tiny_lm):
    eos = tiny_lm.tokenizer.eos_token_id
    ids = tiny_lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        forced = tiny_lm.model(input_ids=ids).logits[0, -1].clone()
    forced[eos] = forced.max() + 100.0
    assert _decode(tiny_lm, first_logits=forced, max_new_tokens=8, eos_ids={eos}) == ("", [], "eos")


def test_eos_mid_answer_is_not_part_of_it(tiny_lm):
    greedy = _greedy_by_full_forwards(tiny_lm, 4)
    eos = greedy[3]  # the fourth greedy token plays EOS
    assert eos not in greedy[:3]
    text, tokens, finish = _decode(tiny_lm, max_new_tokens=10, eos_ids={eos})
    assert tokens == greedy[:3] and finish == "eos"
    assert text == tiny_lm.tokenizer.decode(greedy[:3], skip_special_tokens=True)


def test_stop_sequence_finishes_and_is_trimmed(tiny_lm):
    full, reference, _ = _decode(tiny_lm, max_new_tokens=16)
    # A three-character stop string taken from the middle of the greedy answer, at its first occurrence.
    at = next(i for i in range(len(full) // 3, len(full) - 3) if full.find(full[i : i + 3]) == i and "\ufffd" not in full[i : i + 3])
    stop = full[at : at + 3]
    text, tokens, finish = _decode(tiny_lm, max_new_tokens=16, stop=(stop,))
    assert finish == "stop" and text == full[:at]
    assert len(tokens) < len(reference) and tokens == reference[: len(tokens)]  # same tokens up to the stop


def test_seeded_sampling_decode_is_reproducible(tiny_lm):
    def sampled(seed: int) -> list[int]:
        return _decode(tiny_lm, max_new_tokens=10, rule=SamplingRule.of(1.0, 0.95, seed))[1]

    a, b, c = sampled(5), sampled(5), sampled(6)
    assert a == b and len(a) == 10
    assert a != c


def test_engine_refuses_bad_sampling_before_loading(tiny_model_factory):
    from draftapprox_integrations.engine import DraftApproxEngine

    engine = DraftApproxEngine(None, str(tiny_model_factory("llama")), device="cpu", dtype="float32")
    with pytest.raises(ConfigError, match="temperature"):
        engine.generate("hello there", method="snapkv", temperature=float("nan"))
    with pytest.raises(ConfigError, match="temperature"):
        engine.stream("hello there", method="snapkv", temperature=float("nan"))
    for seed in ("abc", 2**70, 1.9, True):
        with pytest.raises(ConfigError, match="seed"):
            engine.generate("hello there", method="snapkv", seed=seed)
    with pytest.raises(ConfigError, match="specpc_config"):
        engine.generate("hello there", method="speckv-pc", prompt_budget=8, specpc_config={"window_size": 4})
    assert engine.loaded is False
