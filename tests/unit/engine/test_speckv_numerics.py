"""SpecKV numerics on tiny random models: exactness against plain generation and a direct SnapKV computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from draftapprox_integrations.engine import ConfigError, ContextLengthError, DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.speckv import encode_prompt, normalize_messages, prefill_and_compress, select_kept_indices
from draftapprox_integrations.engine.speckv.selection import profile_counts

PROMPT = (
    "Alice keeps the red key in the kitchen drawer. Bob hides the blue key under the mat. "
    "The green key sits on the shelf next to the old clock. Which key is under the mat?"
)


def _engine(folder, draft_folder=None) -> DraftApproxEngine:
    return DraftApproxEngine(str(draft_folder or folder), str(folder), device="cpu", dtype="float32")


def _greedy_reference(engine: DraftApproxEngine, prompt: str, n: int) -> list[int]:
    """Plain transformers greedy generation, cut at (and without) the first EOS."""
    target = engine.target
    ids = torch.tensor([encode_prompt(target, *normalize_messages(prompt, None))])
    out = target.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0
    )
    new = out[0, ids.shape[1] :].tolist()
    eos = target.tokenizer.eos_token_id
    return new[: new.index(eos)] if eos in new else new


@pytest.mark.parametrize(
    "arch,method", [("llama", "full"), ("llama", "speckv"), ("gemma3_text", "snapkv"), ("gemma3_text", "streamingllm")]
)
def test_budget_covering_prompt_generates_plain_greedy_tokens(tiny_model_factory, arch, method):
    engine = _engine(tiny_model_factory(arch))
    n_prompt = len(encode_prompt(engine.target, *normalize_messages(PROMPT, None)))
    result = engine.generate(PROMPT, method=method, budget=n_prompt + 3, max_new_tokens=12)
    assert result.token_ids == _greedy_reference(engine, PROMPT, 12)
    assert result.stats.kv_entries_kept == result.stats.kv_entries_full == n_prompt
    assert result.stats.kv_bytes_kept == result.stats.kv_bytes_full
    if method != "full":
        assert result.stats.fell_back_to_full
        assert "full KV" in result.stats.note


def _eager_attentions(folder, input_ids: list[int]):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([input_ids]), output_attentions=True)
    return model, out.attentions


def _direct_snapkv_pooled(obs, kv_heads, kernel, pooling, reduction):
    """SnapKV written out. obs: [Hq, Q, K'] observation rows over the keys outside the window."""
    groups = obs.shape[0] // kv_heads
    per_kv = obs.reshape(kv_heads, groups * obs.shape[1], obs.shape[2])
    scores = per_kv.amax(dim=1) if reduction == "max" else per_kv.mean(dim=1)
    pad = kernel // 2
    if pooling == "max":
        pooled = F.max_pool1d(scores[:, None, :], kernel, stride=1, padding=pad)[:, 0]
    else:
        summed = F.avg_pool1d(F.pad(scores[:, None, :], (pad, pad)), kernel, stride=1)[:, 0] * kernel
        counts = F.avg_pool1d(F.pad(torch.ones_like(scores)[:, None, :], (pad, pad)), kernel, stride=1)[:, 0] * kernel
        pooled = summed / counts
    return pooled  # [Hkv, prompt_len - window]


@pytest.mark.parametrize(
    "with_lookahead,pooling,reduction",
    [(False, "avg", "mean"), (True, "avg", "mean"), (True, "avg", "max"), (True, "max", "max")],
)
def test_kept_indices_match_direct_snapkv(tiny_model_factory, smollm2_tokenizer, with_lookahead, pooling, reduction):
    folder = tiny_model_factory("llama")
    engine = _engine(folder)
    prompt_ids = encode_prompt(engine.target, *normalize_messages(PROMPT, None))
    lookahead = smollm2_tokenizer(" The blue key is under the mat.", add_special_tokens=False)["input_ids"]
    lookahead = lookahead if with_lookahead else []
    # The paper's rule: the window's and the lookahead's queries score, the whole window is kept.
    cfg = SpecKVConfig(
        budget=20, window_size=6, kernel_size=5, pooling=pooling, reduction=reduction, keep_last=None, score_window=True
    )
    got = prefill_and_compress(engine.target, prompt_ids, lookahead, method="speckv", config=cfg)

    L, la = len(prompt_ids), len(lookahead)
    model, attentions = _eager_attentions(folder, prompt_ids + lookahead)
    kv_heads = model.config.num_key_value_heads
    assert sorted(got.kept_indices) == list(range(model.config.num_hidden_layers))
    for layer, attn in enumerate(attentions):
        # The observation queries are the window's and the lookahead's rows; keys: the prompt outside the window.
        obs = attn[0, :, L - cfg.window_size : L + la, : L - cfg.window_size]
        pooled = _direct_snapkv_pooled(obs, kv_heads, cfg.kernel_size, pooling, reduction)
        n_top = cfg.budget - cfg.window_size
        window = list(range(L - cfg.window_size, L))
        kept = got.kept_indices[layer][0]
        for head in range(kv_heads):
            chosen = [i for i in kept[head].tolist() if i < L - cfg.window_size]
            assert kept[head].tolist()[-cfg.window_size :] == window
            assert len(chosen) == n_top
            expected = sorted(pooled[head].topk(n_top).indices.tolist())
            if pooling == "avg":
                assert chosen == expected, (layer, head)
            else:
                # Max pooling makes plateaus of equal scores; any choice among exact ties is right.
                kth = pooled[head].topk(n_top).values[-1]
                assert (pooled[head][chosen] >= kth - 1e-6).all(), (layer, head)
                assert set(chosen) & set(expected) and len(set(chosen) ^ set(expected)) <= 2 * n_top


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3_text"])
@pytest.mark.parametrize("method", ["snapkv", "speckv", "streamingllm"])
def test_compressed_cache_holds_exactly_budget_entries(tiny_model_factory, arch, method):
    engine = _engine(tiny_model_factory(arch))
    prompt_ids = encode_prompt(engine.target, *normalize_messages(PROMPT, None))
    cfg = SpecKVConfig(budget=17, window_size=5)
    lookahead = prompt_ids[3:10] if method == "speckv" else []
    got = prefill_and_compress(engine.target, prompt_ids, lookahead, method=method, config=cfg)
    cfg_model = engine.target.model.config
    for layer in got.cache.layers:
        assert layer.keys.shape == layer.values.shape
        assert layer.keys.shape[1] == cfg_model.num_key_value_heads
        if getattr(layer, "is_sliding", False):
            # Sliding layers keep their own window (minus the one slot the next token takes).
            assert layer.keys.shape[2] == min(len(prompt_ids), layer.sliding_window - 1)
            assert layer.get_seq_length() == len(prompt_ids)
        else:
            assert layer.keys.shape[2] == 17
    for idx in got.kept_indices.values():
        for head in idx[0]:
            assert len(set(head.tolist())) == 17 and head.max() < len(prompt_ids)
    assert got.kv_bytes_kept < got.kv_bytes_full


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_cache_that_kept_everything_decodes_full_model_logits(tiny_model_factory, arch):
    """Lookahead prefilled then dropped, every prompt entry kept: the next logits are the full model's."""
    engine = _engine(tiny_model_factory(arch))
    model = engine.target.model
    prompt_ids = encode_prompt(engine.target, *normalize_messages(PROMPT, None))
    lookahead = prompt_ids[5:17]
    cfg = SpecKVConfig(budget=len(prompt_ids) + 1, window_size=4)
    got = prefill_and_compress(engine.target, prompt_ids, lookahead, method="speckv", config=cfg)
    # The lookahead's entries are gone from every layer.
    assert all(layer.get_seq_length() == len(prompt_ids) for layer in got.cache.layers)
    next_token = 1234
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([prompt_ids + [next_token]])).logits[0]
        assert torch.allclose(got.first_logits, reference[-2], atol=1e-4)
        step = model(
            input_ids=torch.tensor([[next_token]]),
            position_ids=torch.tensor([[len(prompt_ids)]]),
            cache=got.cache,
            use_cache=True,
        ).logits[0, -1]
    assert torch.allclose(step, reference[-1], atol=1e-4)


def test_decoding_uses_true_positions_after_compression(tiny_model_factory):
    """With a compressed cache the next token's logits equal attention over the kept entries at its true position."""
    engine = _engine(tiny_model_factory("llama"))
    model = engine.target.model
    prompt_ids = encode_prompt(engine.target, *normalize_messages(PROMPT, None))
    cfg = SpecKVConfig(budget=16, window_size=4)
    got = prefill_and_compress(engine.target, prompt_ids, [], method="streamingllm", config=cfg)
    # StreamingLLM keeps the same positions in every layer: 4 sinks + the last 12. Rebuild that by masking.
    kept = torch.zeros(len(prompt_ids) + 1, dtype=torch.long)
    kept[:4] = 1
    kept[len(prompt_ids) - 12 :] = 1
    token = 777
    with torch.no_grad():
        step = model(
            input_ids=torch.tensor([[token]]),
            position_ids=torch.tensor([[len(prompt_ids)]]),
            cache=got.cache,
            use_cache=True,
        ).logits[0, -1]
        # Reference: the full sequence, the new token attending only to the kept entries (mask on its row).
        full_ids = torch.tensor([prompt_ids + [token]])
        n = full_ids.shape[1]
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
        mask[-1] = kept.bool()
        additive = torch.zeros(1, 1, n, n).masked_fill(~mask, float("-inf"))
        # Earlier rows keep the full causal prefix, as the prefill did before compression.
        reference = model(input_ids=full_ids, attention_mask=additive).logits[0, -1]
    assert torch.allclose(step, reference, atol=1e-4)


def test_gemma3_hybrid_generates_with_compression(tiny_model_factory):
    engine = _engine(tiny_model_factory("gemma3_text"))
    result = engine.generate(PROMPT, method="speckv", config=SpecKVConfig(budget=20, window_size=4), max_new_tokens=8)
    assert result.stats.kv_entries_kept == 20
    assert result.stats.completion_tokens == len(result.token_ids) > 0
    assert result.stats.lookahead_tokens > 0
    # Two of four layers slide over 8 tokens: they hold 7 entries whatever the budget.
    per_entry = 2 * 16 * 4 * 2
    assert result.stats.kv_bytes_kept == (2 * 20 + 2 * 7) * per_entry
    assert result.stats.kv_bytes_full == (2 * result.stats.prompt_tokens + 2 * 7) * per_entry


def test_stream_deltas_add_up_to_generate(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    cfg = SpecKVConfig(budget=20, window_size=4)
    whole = engine.generate(PROMPT, method="speckv", config=cfg, max_new_tokens=12)
    chunks = list(engine.stream(PROMPT, method="speckv", config=cfg, max_new_tokens=12))
    assert "".join(c.text for c in chunks) == whole.text
    assert [c.token_id for c in chunks if c.token_id is not None] == whole.token_ids
    assert all(c.stats is None for c in chunks[:-1]) and chunks[-1].stats is not None
    assert chunks[-1].finish_reason == whole.finish_reason


def test_stop_sequence_trims_and_one_that_never_appears(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    free = engine.generate(PROMPT, method="snapkv", budget=40, max_new_tokens=16)
    assert free.finish_reason == "length"
    stop = free.text[len(free.text) // 2 : len(free.text) // 2 + 3]
    cut = engine.generate(PROMPT, method="snapkv", budget=40, max_new_tokens=16, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    streamed = list(engine.stream(PROMPT, method="snapkv", budget=40, max_new_tokens=16, stop=[stop]))
    assert "".join(c.text for c in streamed) == cut.text
    never = engine.generate(PROMPT, method="snapkv", budget=40, max_new_tokens=16, stop=["\u2603never\u2603"])
    assert never.text == free.text and never.finish_reason == "length"
    assert "no stop sequence appeared" in never.stats.note


def test_sampling_is_seeded(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    kw = dict(method="snapkv", budget=40, max_new_tokens=6, temperature=1.5, top_p=0.9)
    a = engine.generate(PROMPT, seed=3, **kw)
    b = engine.generate(PROMPT, seed=3, **kw)
    c = engine.generate(PROMPT, seed=4, **kw)
    greedy = engine.generate(PROMPT, method="snapkv", budget=40, max_new_tokens=6)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids or a.token_ids != greedy.token_ids


def test_draft_that_emits_eos_at_once(tiny_model_factory, tmp_path, smollm2_tokenizer):
    """A draft whose first token is EOS: empty lookahead, SnapKV behaviour, stated in the note."""
    from transformers import AutoModelForCausalLM

    source = tiny_model_factory("llama")
    model = AutoModelForCausalLM.from_pretrained(str(source))
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: greedy argmax is token 0 ...
    model.config.eos_token_id = 0  # ... which this draft declares as its end of sequence
    model.generation_config.eos_token_id = 0
    model.save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    cfg = SpecKVConfig(budget=20, window_size=4)
    engine = _engine(source, draft_folder=tmp_path)
    spec = engine.generate(PROMPT, method="speckv", config=cfg, max_new_tokens=8)
    snap = engine.generate(PROMPT, method="snapkv", config=cfg, max_new_tokens=8)
    assert spec.stats.lookahead_tokens == 0 and spec.stats.lookahead_text == ""
    assert "EOS at once" in spec.stats.note
    assert spec.token_ids == snap.token_ids


def test_bad_inputs(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    with pytest.raises(ConfigError, match="empty"):
        engine.generate("   ")
    with pytest.raises(ConfigError, match="empty"):
        engine.generate([])
    with pytest.raises(ConfigError, match="window_size"):
        engine.generate(PROMPT, budget=16)  # the default window is 32
    with pytest.raises(ConfigError, match="window_size"):
        SpecKVConfig(budget=8, window_size=9)
    with pytest.raises(ContextLengthError, match="context"):
        engine.generate("word " * 5000, method="snapkv", budget=64)
    with pytest.raises(ConfigError, match="unknown method"):
        engine.generate(PROMPT, method="h2o")
    with pytest.raises(ConfigError, match="temperature"):
        engine.generate(PROMPT, temperature=-1)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        engine.generate(PROMPT, max_new_tokens=0)
    with pytest.raises(ConfigError, match="prompt_budget"):
        engine.generate(PROMPT, method="speckv-pc", budget=64)
    with pytest.raises(ConfigError, match="stop"):
        engine.generate(PROMPT, stop=[""])
    # Errors come before any chunk: stream() validates eagerly.
    with pytest.raises(ConfigError):
        engine.stream("", method="snapkv")


def test_speckv_pc_cascade_cuts_the_prompt_then_compresses_the_kv(tiny_model_factory):
    from draftapprox_integrations.engine import SpecPCConfig

    engine = _engine(tiny_model_factory("llama"))
    long_prompt = PROMPT * 4
    pc_config = SpecPCConfig(starting_layer_index=1, window_size=8, kernel_size=5)
    cfg = SpecKVConfig(budget=40, window_size=8)
    result = engine.generate(
        long_prompt, method="speckv-pc", prompt_budget=60, config=cfg, specpc_config=pc_config, max_new_tokens=6
    )
    stats = result.stats
    assert "SpecPC kept" in stats.note and stats.lookahead_tokens > 0
    # The cut is SpecPC's answer for the same draft lookahead; the target then keeps `budget` entries of it.
    cut = engine.compress(long_prompt, budget=60, config=pc_config, lookahead_text=stats.lookahead_text)
    assert stats.compressed_prompt_tokens == len(encode_prompt(engine.target, *normalize_messages(cut.text, None))) < stats.prompt_tokens
    assert stats.kv_entries_kept == 40
    per_entry = 2 * 16 * 4 * 2  # kv heads x head dim x float32 bytes x (K, V)
    assert stats.kv_bytes_full == 4 * stats.prompt_tokens * per_entry
    assert stats.kv_bytes_kept == 4 * 40 * per_entry


@pytest.mark.parametrize("arch,reduction", [("llama", "mean"), ("gemma3_text", "max")])
def test_self_draft_shares_one_prefill_and_matches_the_two_pass_computation(tiny_model_factory, arch, reduction):
    """One model as its own draft: prefill + lookahead in one cache equals a separate target prefill of both."""
    from draftapprox_integrations.engine.speckv import draft_answer, self_draft_steps
    from draftapprox_integrations.engine.steps import run_alone

    engine = _engine(tiny_model_factory(arch))
    loaded = engine.target
    prompt_ids = encode_prompt(loaded, *normalize_messages(PROMPT, None))
    cfg = SpecKVConfig(budget=20, window_size=4, pooling="avg", kernel_size=5, reduction=reduction)
    fused, text, look_ids = run_alone(self_draft_steps(loaded, prompt_ids, 6, config=cfg))
    ref = run_alone(draft_answer(loaded, prompt_ids, 6))
    assert (text, look_ids) == (ref.text, ref.token_ids) and len(look_ids) == 6
    two_pass = prefill_and_compress(loaded, prompt_ids, look_ids, method="speckv", config=cfg)
    assert fused.kept_indices.keys() == two_pass.kept_indices.keys()
    for layer, idx in fused.kept_indices.items():
        assert torch.equal(idx, two_pass.kept_indices[layer]), layer
    assert torch.allclose(fused.first_logits, two_pass.first_logits, atol=1e-4)
    for a, b in zip(fused.cache.layers, two_pass.cache.layers):
        assert a.keys.shape == b.keys.shape and torch.allclose(a.keys, b.keys, atol=1e-5)
    # Through the public call: the same tokens as the two-pass path would decode, and the note says so.
    result = engine.generate(PROMPT, method="speckv", config=cfg.replace(lookahead_tokens=6), max_new_tokens=6)
    assert "self-draft" in result.stats.note and result.stats.lookahead_tokens == 6


def test_paper_settings_and_digit_wide_default_kernel():
    paper = SpecKVConfig.paper()
    assert (paper.window_size, paper.kernel_size, paper.pooling, paper.reduction) == (32, 7, "max", "max")
    assert SpecKVConfig.paper(budget=128).kernel_size == 7
    assert SpecKVConfig().kernel_size == 15  # covers a 7-digit value either side of its best-scored digit
    with pytest.raises(ConfigError):
        SpecKVConfig.paper(kernel_size=8)


def test_wider_kernel_keeps_a_whole_number_around_its_peak():
    # One 7-key "number" at positions 10..16 whose attention peaks on its first digit: top-k keeps the whole
    # run only when the kernel reaches from the peak to the far end of the run. (top-15: no ties at the cut.)
    scores = torch.full((1, 1, 40), 0.01)
    scores[0, 0, 10] = 1.0
    scores[0, 0, 11:17] = torch.linspace(0.05, 0.02, 6)
    scores[0, 0, 30] = 0.5  # a competing spike elsewhere
    kept = {}
    for k in (7, 15):
        idx = select_kept_indices(scores, prompt_len=44, budget=4 + 15, window_size=4, kernel_size=k, pooling="max")
        kept[k] = set(idx[0, 0].tolist())
    assert set(range(10, 17)) <= kept[15]
    assert not set(range(10, 17)) <= kept[7]


# -- rate: the budget as a fraction of the prompt ------------------------------------------------------


@pytest.mark.parametrize("method", ["snapkv", "streamingllm", "speckv"])
def test_rate_keeps_that_fraction_of_the_prompt_and_reports_it(tiny_model_factory, method):
    engine = _engine(tiny_model_factory("llama"))
    n_prompt = len(encode_prompt(engine.target, *normalize_messages(PROMPT, None)))
    cfg = SpecKVConfig(window_size=4)
    by_rate = engine.generate(PROMPT, method=method, rate=0.5, config=cfg, max_new_tokens=4)
    expected = -(-n_prompt // 2)  # ceil(n / 2)
    assert by_rate.stats.budget == by_rate.stats.kv_entries_kept == expected < n_prompt
    assert by_rate.stats.kv_entries_full == n_prompt and not by_rate.stats.fell_back_to_full
    # The same generation as the entry budget it resolves to.
    by_budget = engine.generate(PROMPT, method=method, budget=expected, config=cfg, max_new_tokens=4)
    assert by_rate.token_ids == by_budget.token_ids


def test_rate_rounds_up_without_float_noise_and_never_below_the_window(tiny_model_factory):
    from draftapprox_integrations.engine.speckv import check_generation, resolve_rate

    plan = check_generation(PROMPT, method="snapkv", rate=0.1, config=SpecKVConfig(window_size=2))
    assert resolve_rate(plan, 30).config.budget == 3  # 0.1 * 30 is 3.0000000000000004 in floats
    assert resolve_rate(plan, 31).config.budget == 4
    assert resolve_rate(plan, 5).config.budget == 2  # ceil(0.5) = 1 < the window of 2
    engine = _engine(tiny_model_factory("llama"))
    result = engine.generate(PROMPT, method="snapkv", rate=0.01, config=SpecKVConfig(window_size=8), max_new_tokens=2)
    assert result.stats.budget == result.stats.kv_entries_kept == 8  # the window is always kept
    whole = engine.generate(PROMPT, method="snapkv", rate=1.0, max_new_tokens=2)
    assert whole.stats.fell_back_to_full and whole.stats.kv_entries_kept == whole.stats.kv_entries_full


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(rate=0.0), "rate"),
        (dict(rate=-0.5), "rate"),
        (dict(rate=1.5), "rate"),
        (dict(rate=float("nan")), "rate"),
        (dict(rate=float("inf")), "rate"),
        (dict(rate=True), "rate"),
        (dict(rate="0.5"), "rate"),
        (dict(rate=0.5, budget=64), "not both"),
        (dict(rate=0.5, method="full", budget=64), "not both"),
    ],
)
def test_bad_rate_raises_before_any_weight_loads(tiny_model_factory, options, match):
    engine = _engine(tiny_model_factory("llama"))
    for call in (engine.generate, engine.stream, lambda p, **o: engine.generate_batch([p, p], **o)):
        with pytest.raises(ConfigError, match=match):
            call(PROMPT, **options)
    assert not engine.loaded


def test_rate_with_full_is_checked_and_keeps_everything(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    result = engine.generate(PROMPT, method="full", rate=0.25, max_new_tokens=2)
    assert result.stats.kv_entries_kept == result.stats.kv_entries_full


def test_streamingllm_sinks_must_fit_the_budget_a_rate_resolves_to(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    cfg = SpecKVConfig(window_size=2, sink_tokens=4)
    with pytest.raises(ConfigError, match="sink_tokens"):
        engine.generate(PROMPT, method="streamingllm", rate=0.01, config=cfg, max_new_tokens=2)
    assert engine.generate(PROMPT, method="streamingllm", rate=0.5, config=cfg, max_new_tokens=2).stats.budget > 4


def test_batch_rows_resolve_their_rate_on_their_own_prompt(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    prompts = [PROMPT, PROMPT * 2]
    results = engine.generate_batch(prompts, method="snapkv", rate=0.25, config=SpecKVConfig(window_size=4), max_new_tokens=3)
    for prompt, result in zip(prompts, results):
        n_prompt = len(encode_prompt(engine.target, *normalize_messages(prompt, None)))
        assert result.stats.budget == result.stats.kv_entries_kept == -(-n_prompt // 4)


def test_speckv_pc_rate_is_a_fraction_of_the_cut_prompt(tiny_model_factory):
    from draftapprox_integrations.engine import SpecPCConfig

    engine = _engine(tiny_model_factory("llama"))
    options = dict(
        method="speckv-pc", prompt_budget=60, config=SpecKVConfig(window_size=8), max_new_tokens=4,
        specpc_config=SpecPCConfig(starting_layer_index=1, window_size=8, kernel_size=5),
    )
    half = engine.generate(PROMPT * 4, rate=0.5, **options).stats
    assert half.compressed_prompt_tokens < half.prompt_tokens
    assert half.budget == half.kv_entries_kept == -(-half.compressed_prompt_tokens // 2)
    # rate=1 keeps the whole cut prompt: SpecPC still cuts (a budget covering the uncut prompt would skip it).
    whole = engine.generate(PROMPT * 4, rate=1.0, **options).stats
    assert "SpecPC kept" in whole.note and not whole.fell_back_to_full
    assert whole.kv_entries_kept == whole.budget == whole.compressed_prompt_tokens < whole.prompt_tokens


PROFILE = (1.0, 2.0, 3.0, 4.0)  # shares per layer of the tiny llama (4 layers), any scale


def _three_routes(tiny_model_factory, cfg: SpecKVConfig):
    """One prompt through the self-draft prefill (all layers scored before the cut), the two-model prefill cut
    layer by layer, and the same cut after the whole prefill: (prompt ids, and the three results)."""
    from draftapprox_integrations.engine.speckv import self_draft_steps
    from draftapprox_integrations.engine.steps import run_alone

    loaded = _engine(tiny_model_factory("llama")).target
    prompt_ids = encode_prompt(loaded, *normalize_messages(PROMPT, None))
    fused, _, look_ids = run_alone(self_draft_steps(loaded, prompt_ids, 6, config=cfg))
    layerwise = prefill_and_compress(loaded, prompt_ids, look_ids, method="speckv", config=cfg)
    at_end = prefill_and_compress(loaded, prompt_ids, look_ids, method="speckv", config=cfg, layerwise=False)
    return prompt_ids, fused, layerwise, at_end


@pytest.mark.parametrize(
    "options",
    [dict(keep_last=2), dict(allocation="global"), dict(score_window=False), dict(score_window=False, keep_last=2, allocation="global"),
     dict(allocation="profile", layer_profile=PROFILE)],
)
def test_issue14_options_agree_across_the_three_prefill_routes(tiny_model_factory, options):
    """keep_last / allocation / score_window select the same entries on every route: the self-draft prefill
    (all layers scored before the cut), the two-model prefill cut layer by layer (a global share is trimmed
    from what the layer held), and the same without layer-wise eviction."""
    cfg = SpecKVConfig(budget=16, window_size=4, pooling="avg", kernel_size=3, **options)
    prompt_ids, fused, layerwise, at_end = _three_routes(tiny_model_factory, cfg)
    n_prompt = len(prompt_ids)
    for route in (layerwise, at_end):
        for layer, idx in fused.kept_indices.items():
            assert torch.equal(idx, route.kept_indices[layer]), (layer, options)
            assert route.cache.layers[layer].keys.shape[-2] == idx.shape[-1]
    tail = options.get("keep_last", 4)
    sizes = [idx.shape[-1] for idx in fused.kept_indices.values()]
    assert sum(sizes) == 16 * len(sizes)  # the same bytes whatever the allocation
    for idx in fused.kept_indices.values():
        assert idx[..., -tail:].tolist() == [[list(range(n_prompt - tail, n_prompt))] * idx.shape[1]]
    if options.get("allocation") == "global":
        assert len(set(sizes)) > 1  # the random model's layers attend differently: shares differ
    if options.get("allocation") == "profile":  # the profile's split of the same total, before any score
        assert sizes == [n + tail for n in profile_counts([s / sum(PROFILE) for s in PROFILE], 16 - tail, n_prompt - tail)]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_auto_takes_the_models_profile_for_speckv_and_keeps_snapkv_uniform(tiny_model_factory, monkeypatch):
    """allocation="auto" (the default): a model with a known profile gets it when a lookahead scores; SnapKV
    (no lookahead) keeps the same count in every layer unless the profile is asked for."""
    from draftapprox_integrations.engine import layer_profiles

    loaded = _engine(tiny_model_factory("llama")).target
    monkeypatch.setitem(layer_profiles.LAYER_PROFILES, "tiny", tuple(s / sum(PROFILE) for s in PROFILE))
    monkeypatch.setitem(layer_profiles.MODEL_PROFILES, layer_profiles.model_shape(loaded.model), "tiny")
    prompt_ids = encode_prompt(loaded, *normalize_messages(PROMPT, None))
    look = encode_prompt(loaded, *normalize_messages("the blue key is under the mat", None))[:6]
    base = SpecKVConfig(budget=16, window_size=4)
    assert base.allocation == "auto"

    def sizes(method, cfg, lookahead=()):
        kept = prefill_and_compress(loaded, prompt_ids, lookahead, method=method, config=cfg).kept_indices
        return [k.shape[-1] for k in kept.values()]

    profiled = sizes("speckv", base, look)
    assert len(set(profiled)) > 1 and sum(profiled) == 16 * len(profiled)
    assert profiled == sizes("speckv", base.replace(allocation="profile"), look)
    assert sizes("snapkv", base) == [16] * len(profiled)
    assert len(set(sizes("snapkv", base.replace(allocation="profile")))) > 1
    assert sizes("speckv", base.replace(allocation="uniform"), look) == [16] * len(profiled)


def test_a_layer_profile_is_checked_against_the_model_before_any_forward(tiny_model_factory):
    engine = _engine(tiny_model_factory("llama"))
    for cfg, match in ((SpecKVConfig(budget=16, window_size=4, allocation="profile"), "no layer profile is known"),
                       (SpecKVConfig(budget=16, window_size=4, allocation="profile", layer_profile=(1.0, 2.0)), "has 2 layers")):
        with pytest.raises(ConfigError, match=match):
            engine.generate(PROMPT, config=cfg, max_new_tokens=3)
    # "auto" on a model without a profile is the uniform split, token for token.
    auto = engine.generate(PROMPT, config=SpecKVConfig(budget=16, window_size=4, allocation="auto"), max_new_tokens=6)
    uniform = engine.generate(PROMPT, config=SpecKVConfig(budget=16, window_size=4), max_new_tokens=6)
    assert auto.token_ids == uniform.token_ids
    for bad in ("nope", (), (1.0, -1.0), (0.0, 0.0), ("a",), [float("inf")]):
        with pytest.raises(ConfigError, match="layer_profile"):
            SpecKVConfig(allocation="profile", layer_profile=bad)
    with pytest.raises(ConfigError, match="applies to allocation='profile' or 'auto'"):
        SpecKVConfig(allocation="uniform", layer_profile=(1.0, 2.0))


def test_score_window_off_scores_with_the_lookahead_only(tiny_model_factory):
    """Without score_window the kept keys are those the lookahead's queries alone pick (a two-model prefill
    whose capture sees only the lookahead rows); with no lookahead the window still scores (SnapKV)."""
    engine = _engine(tiny_model_factory("llama"))
    loaded = engine.target
    prompt_ids = encode_prompt(loaded, *normalize_messages(PROMPT, None))
    look = encode_prompt(loaded, *normalize_messages("the blue key is under the mat", None))[:6]
    on = SpecKVConfig(budget=12, window_size=4, pooling="none", kernel_size=1, score_window=True)
    off = on.replace(score_window=False)
    with_window = prefill_and_compress(loaded, prompt_ids, look, method="speckv", config=on).kept_indices
    look_only = prefill_and_compress(loaded, prompt_ids, look, method="speckv", config=off).kept_indices
    assert any(not torch.equal(with_window[i], look_only[i]) for i in with_window)
    snap_on = prefill_and_compress(loaded, prompt_ids, (), method="snapkv", config=on).kept_indices
    snap_off = prefill_and_compress(loaded, prompt_ids, (), method="snapkv", config=off).kept_indices
    assert all(torch.equal(snap_on[i], snap_off[i]) for i in snap_on)


def test_issue14_option_checks():
    with pytest.raises(ConfigError, match="keep_last"):
        SpecKVConfig(keep_last=0)
    with pytest.raises(ConfigError, match="allocation"):
        SpecKVConfig(allocation="pyramid")
    with pytest.raises(ConfigError, match="score_window"):
        SpecKVConfig(score_window="no")


@pytest.mark.parametrize("options", [dict(coverage=0.5), dict(coverage=0.9, score_window=True), dict(coverage=0.99, coverage_floor=0)])
def test_a_coverage_budget_gives_every_layer_one_self_sized_count_on_every_route(tiny_model_factory, options):
    """coverage: the request keeps one count in every layer (the mean of what each layer's attention mass
    needs, between the floor and the budget), and the self-draft prefill, the two-model prefill cut layer by
    layer and the post-hoc cut keep the same."""
    cfg = SpecKVConfig(budget=40, window_size=4, pooling="avg", kernel_size=3, **options)
    prompt_ids, fused, layerwise, at_end = _three_routes(tiny_model_factory, cfg)
    tail = 4  # keep_last 8 is cut to the window
    for route in (layerwise, at_end):
        for layer, idx in fused.kept_indices.items():
            assert torch.equal(idx, route.kept_indices[layer]), (layer, options)
            assert route.cache.layers[layer].keys.shape[-2] == idx.shape[-1]
    sizes = {idx.shape[-1] for idx in fused.kept_indices.values()}
    assert len(sizes) == 1, sizes
    assert cfg.coverage_floor + tail <= sizes.pop() <= 40
    if options["coverage"] == 0.5:
        assert fused.kept_entries < 40  # half the attention fits in fewer keys than the budget


def test_a_larger_coverage_keeps_more(tiny_model_factory):
    kept = []
    for coverage in (0.3, 0.6, 0.95):
        cfg = SpecKVConfig(budget=48, window_size=4, pooling="avg", kernel_size=3, coverage=coverage, coverage_floor=0)
        kept.append(_three_routes(tiny_model_factory, cfg)[1].kept_entries)
    assert kept == sorted(kept) and kept[0] < kept[-1], kept


def test_a_coverage_is_checked_before_any_work(tiny_model_factory):
    for bad in (0, 1.5, True, "0.9", -0.1):
        with pytest.raises(ConfigError, match="coverage"):
            SpecKVConfig(coverage=bad)
    for allocation in ("global", "profile"):
        with pytest.raises(ConfigError, match=f"replaces allocation='{allocation}'"):
            SpecKVConfig(coverage=0.9, allocation=allocation)
    engine = DraftApproxEngine(None, str(tiny_model_factory("llama")), device="cpu", dtype="float32")
    with pytest.raises(ConfigError, match="coverage needs attention scores"):
        engine.generate("hello there", method="streamingllm", config=SpecKVConfig(budget=32, coverage=0.9))
    assert not engine.loaded
