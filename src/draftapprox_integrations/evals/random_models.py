"""Random-weight models of published shapes, for the bench's cost measurements at sizes we have no weights for.

A shape is a Llama/Qwen config (hidden size, layers, heads, ...) with the default model's tokenizer (SmolLM2,
49,152 tokens), so its embedding and LM head are smaller than the real model's; everything else has the real
shape. Such a model measures cost only, never quality.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError

# The embedded SmolLM2 alias, by name rather than as engine.config.DEFAULT_MODEL: the bench's "smollm2" pair
# is SmolLM2 whatever the default becomes, and a cached random-model folder (keyed by shape, seed and
# positions) must not silently change tokenizer with it.
SMOLLM2 = "smollm2-135m-instruct"

# Published shapes (hidden, intermediate, layers, query heads, KV heads); vocabulary is the tokenizer's.
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-3b": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "llama-3.2-3b": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    # Llama-shaped toys, for a CPU dry run of the GPU bench (seconds, not a measurement).
    "llama-toy-draft": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    "llama-toy": dict(model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
}


def random_model_folder(shape: str, *, seed: int = 0, max_positions: int = 32768, root: Path | None = None) -> Path:
    """A folder (config + safetensors + SmolLM2 tokenizer) of a random-weight bf16 model of ``shape``.

    Built once and cached. The model is created on the meta device and materialised with ``to_empty`` so that
    a multi-billion-parameter shape skips transformers' slow per-module initialisation; weights are then
    drawn N(0, 0.02) (norms 1), which is all a cost measurement needs.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ..engine.loading import cache_dir, load_tokenizer

    if shape not in RANDOM_SHAPES:
        raise ConfigError(f"unknown random shape {shape!r}; known: {', '.join(RANDOM_SHAPES)}")
    digest = hashlib.sha256(json.dumps([RANDOM_SHAPES[shape], seed, max_positions], sort_keys=True).encode()).hexdigest()[:10]
    folder = (root or cache_dir() / "random-models") / f"{shape}-{digest}"
    if (folder / "draftapprox-random.json").is_file():
        return folder
    tokenizer = load_tokenizer(SMOLLM2)
    config = random_config(shape, tokenizer, max_positions)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives tied parameters separate storage; re-tie before filling
    fill_random(model, seed)
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    (tmp / "draftapprox-random.json").write_text(json.dumps({"shape": shape, "seed": seed, "parameters": n_params, "random_weights": True}))
    del model
    gc.collect()
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def random_config(shape: str, tokenizer, max_positions: int):
    """The transformers config of ``shape`` with ``tokenizer``'s vocabulary and special tokens, bf16."""
    import torch
    from transformers import AutoConfig

    if shape not in RANDOM_SHAPES:
        raise ConfigError(f"unknown random shape {shape!r}; known: {', '.join(RANDOM_SHAPES)}")
    spec = dict(RANDOM_SHAPES[shape])
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), max_position_embeddings=max_positions, rope_theta=1_000_000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    config.dtype = torch.bfloat16
    return config


def fill_random(model, seed: int) -> None:
    """Weights N(0, 0.02), norms 1, biases 0, drawn on the model's own device: all a cost measurement needs."""
    import torch

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    model.eval()
