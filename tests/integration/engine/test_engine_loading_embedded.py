"""Loading the real embedded SmolLM2: GGUF conversion cache and 4-bit quantisation on CPU."""

from __future__ import annotations

import torch

from draftapprox_integrations import DraftApproxEngine
from draftapprox_integrations.engine import loading

from tests.helpers import SMOLLM2


def test_gguf_is_converted_once_then_loaded_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(loading.CACHE_ENV_VAR, str(tmp_path))
    source = loading.resolve_reference(SMOLLM2)
    folder = loading.converted_folder(source)
    assert folder.parent.parent == tmp_path
    assert (folder / "draftapprox.json").is_file() and list(folder.glob("*.safetensors"))
    stamp = (folder / "draftapprox.json").stat().st_mtime_ns
    assert loading.converted_folder(source) == folder
    assert (folder / "draftapprox.json").stat().st_mtime_ns == stamp  # not converted again
    loaded = loading.load_model(source, device=torch.device("cpu"), dtype=torch.float32)
    assert loaded.model.config.model_type == "llama" and loaded.has_chat_template
    assert loaded.context_length == 8192


def test_target_quantised_to_4bit_on_cpu_still_answers():
    engine = DraftApproxEngine(None, SMOLLM2, device="cpu", quantization="4bit")
    target = engine.target
    assert any("Linear4bit" in type(m).__name__ for m in target.model.modules())
    ids = target.tokenizer("The capital of France is", return_tensors="pt")
    out = target.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
