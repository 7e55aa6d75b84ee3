"""The decode loop's pieces: stop-text tracking, token sampling, option checks, and decode_tokens itself.

StopTextTracker runs on the real SmolLM2 tokenizer (byte-level BPE: multi-byte characters split across
tokens); decode_tokens runs on the tiny random llama.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from draftapprox_integrations.engine.decoding import (
    DecodeStep,
    StopTextTracker,
    TokenSampler,
    check_sampling,
    check_stop,
    decode_tokens,
)
from draftapprox_integrations.engine.errors import ConfigError

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


# -- TokenSampler --------------------------------------------------------------------------------------


def test_greedy_is_argmax():
    gen = torch.Generator().manual_seed(0)
    sampler = TokenSampler(0.0, seed=1)
    assert sampler.greedy
    for _ in range(20):
        logits = torch.randn(1, 300, generator=gen)  # any shape: it is flattened
        assert sampler(logits) == int(logits.argmax())
    assert not TokenSampler(0.7).greedy


def _draws(sampler: TokenSampler, logits: torch.Tensor, n: int) -> list[int]:
    return [sampler(logits) for _ in range(n)]


def test_same_seed_same_sequence_other_seed_differs():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(3))
    a = _draws(TokenSampler(1.0, seed=123), logits, 200)
    b = _draws(TokenSampler(1.0, seed=123), logits, 200)
    c = _draws(TokenSampler(1.0, seed=124), logits, 200)
    assert a == b
    assert a != c
    assert sum(x != y for x, y in zip(a, c)) > 50  # not just one draw apart
    assert len(set(a)) > 5  # really sampling, not stuck on one token
    # The same holds with nucleus sampling.
    assert _draws(TokenSampler(0.8, top_p=0.9, seed=7), logits, 100) == _draws(TokenSampler(0.8, top_p=0.9, seed=7), logits, 100)


def test_tiny_top_p_always_picks_the_most_likely_token():
    logits = torch.tensor([1.0, 1.2, 0.9, 1.1, 0.5])  # the top token has only ~25% of the mass
    sampler = TokenSampler(1.5, top_p=1e-6, seed=0)
    assert set(_draws(sampler, logits, 300)) == {1}


def test_temperature_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2])
    n = 4000
    counts = Counter(_draws(TokenSampler(1.0, seed=0), probs.log(), n))
    assert set(counts) == {0, 1, 2}
    for token, p in enumerate(probs.tolist()):
        assert abs(counts[token] / n - p) < 0.04  # > 5 standard deviations for n = 4000

    # Temperature 0.5 squares the probabilities (then renormalises): sharper, same order.
    sharp = probs**2 / (probs**2).sum()
    counts = Counter(_draws(TokenSampler(0.5, seed=1), probs.log(), n))
    for token, p in enumerate(sharp.tolist()):
        assert abs(counts[token] / n - p) < 0.04


def test_top_p_keeps_the_smallest_prefix_that_reaches_it():
    probs = torch.tensor([0.2, 0.5, 0.3])  # sorted: 0.5, 0.3 | 0.2 -> top_p 0.7 keeps tokens 1 and 2
    n = 4000
    counts = Counter(_draws(TokenSampler(1.0, top_p=0.7, seed=2), probs.log(), n))
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


# -- decode_tokens on a tiny random llama --------------------------------------------------------------

PROMPT = "The river runs north past the copper market and the quiet garden."


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_factory):
    from draftapprox_integrations.engine.loading import load_model, resolve_reference

    return load_model(resolve_reference(str(tiny_model_factory("llama"))), device=torch.device("cpu"), dtype=torch.float32)


def _prefill(loaded, prompt: str = PROMPT):
    """(cache, logits of the last prompt token, prompt length) after one forward over the prompt."""
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = loaded.model(input_ids=ids, use_cache=True)
    return out.cache, out.logits[0, -1], ids.shape[1]


def _run(loaded, *, model=None, first_logits=None, **kwargs) -> list[DecodeStep]:
    cache, logits, length = _prefill(loaded)
    kwargs.setdefault("sampler", TokenSampler(0.0))
    kwargs.setdefault("eos_ids", set())
    return list(
        decode_tokens(
            model or loaded.model, loaded.tokenizer, cache, logits if first_logits is None else first_logits, length, **kwargs
        )
    )


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


def _tokens(steps: list[DecodeStep]) -> list[int]:
    return [s.token_id for s in steps if s.token_id is not None]


def test_greedy_decode_equals_a_plain_greedy_loop(tiny_lm):
    steps = _run(tiny_lm, max_new_tokens=12)
    assert _tokens(steps) == _greedy_by_full_forwards(tiny_lm, 12)
    ids = tiny_lm.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        generated = tiny_lm.model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert _tokens(steps) == generated[0, ids["input_ids"].shape[1] :].tolist()


def test_length_finish_and_text_is_the_decoded_tokens(tiny_lm):
    steps = _run(tiny_lm, max_new_tokens=6)
    assert len(steps) == 6 and all(s.token_id is not None for s in steps)
    assert [s.finish_reason for s in steps] == [None] * 5 + ["length"]
    assert "".join(s.text for s in steps) == tiny_lm.tokenizer.decode(_tokens(steps), skip_special_tokens=True)


def test_length_finish_releases_text_held_for_a_stop_that_never_came(tiny_lm):
    full = "".join(s.text for s in _run(tiny_lm, max_new_tokens=6))
    stop = full[-1] + "\u0007"  # the answer's last character could start it, so it is held back until the end
    assert stop not in full
    steps = _run(tiny_lm, max_new_tokens=6, stop=[stop])
    assert steps[-1].finish_reason == "length"
    assert steps[-1].text.endswith(full[-1])
    assert "".join(s.text for s in steps) == full


def test_single_token_budget(tiny_lm):
    (step,) = _run(tiny_lm, max_new_tokens=1)
    assert step.finish_reason == "length"
    assert step.token_id == _greedy_by_full_forwards(tiny_lm, 1)[0]


def test_eos_from_the_first_logits_ends_with_no_tokens(tiny_lm):
    eos = tiny_lm.tokenizer.eos_token_id
    _, logits, _ = _prefill(tiny_lm)
    forced = logits.clone()
    forced[eos] = forced.max() + 100.0
    steps = _run(tiny_lm, first_logits=forced, max_new_tokens=8, eos_ids={eos})
    assert steps == [DecodeStep(None, "", "eos")]


class _EosAfter:
    """Wraps a model: from its ``n``-th forward on, the EOS logit is pushed to the top."""

    def __init__(self, model, eos: int, n: int) -> None:
        self.model, self.eos, self.n, self.calls = model, eos, n, 0

    def __call__(self, **kwargs):
        out = self.model(**kwargs)
        self.calls += 1
        if self.calls >= self.n:
            out.logits[..., self.eos] = out.logits.max() + 100.0
        return out


def test_eos_mid_answer_is_not_part_of_it(tiny_lm):
    eos = tiny_lm.tokenizer.eos_token_id
    greedy = _greedy_by_full_forwards(tiny_lm, 3)
    assert eos not in greedy
    wrapped = _EosAfter(tiny_lm.model, eos, 3)
    steps = _run(tiny_lm, model=wrapped, max_new_tokens=10, eos_ids={eos})
    # The first token comes from the prefill logits, the next two from forwards 1 and 2, EOS from forward 3.
    assert _tokens(steps) == greedy
    assert [s.finish_reason for s in steps] == [None, None, None, "eos"]
    assert steps[-1].token_id is None
    assert wrapped.calls == 3
    assert "".join(s.text for s in steps) == tiny_lm.tokenizer.decode(greedy, skip_special_tokens=True)


def test_stop_sequence_finishes_and_is_trimmed(tiny_lm):
    reference = _run(tiny_lm, max_new_tokens=16)
    full = "".join(s.text for s in reference)
    # A three-character stop string taken from the middle of the greedy answer, at its first occurrence.
    at = next(i for i in range(len(full) // 3, len(full) - 3) if full.find(full[i : i + 3]) == i and "\ufffd" not in full[i : i + 3])
    stop = full[at : at + 3]
    steps = _run(tiny_lm, max_new_tokens=16, stop=[stop])
    assert steps[-1].finish_reason == "stop"
    assert all(s.finish_reason is None for s in steps[:-1])
    assert "".join(s.text for s in steps) == full[:at]
    assert len(steps) < len(reference)
    assert _tokens(steps) == _tokens(reference)[: len(steps)]  # same tokens up to the stop


def test_seeded_sampling_decode_is_reproducible(tiny_lm):
    def sampled(seed: int) -> list[int]:
        return _tokens(_run(tiny_lm, max_new_tokens=10, sampler=TokenSampler(1.0, top_p=0.95, seed=seed)))

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
