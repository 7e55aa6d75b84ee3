"""The eval method table against the engine's, the prompt methods' shared result shape, and the CLI without the
``[evals]`` extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from draftapprox_integrations.engine import config
from draftapprox_integrations.engine.specpc import CompressedDocument, CompressionResult
from draftapprox_integrations.evals import bench, runner
from draftapprox_integrations.engine.errors import ConfigError, MissingExtraError
from draftapprox_integrations.evals.extras import require
from draftapprox_integrations.evals.methods import (
    COMPRESSORS,
    EVAL_METHODS,
    FullMethod,
    KVMethod,
    PromptMethod,
    eval_method,
    prompt_budget,
)


def test_eval_methods_cover_exactly_the_engine_table():
    assert list(EVAL_METHODS) == list(config.METHODS)
    assert set(COMPRESSORS) == set(config.PROMPT_METHODS)  # every prompt method can be run, and no other
    for name, how in EVAL_METHODS.items():
        assert how.name == name and how.spec is config.METHODS[name]
        expected = PromptMethod if how.spec.kind == "prompt" else (FullMethod if name == "full" else KVMethod)
        assert type(how) is expected, name
    # The runner's and bench's lists come from the table.
    assert runner.METHODS == tuple(config.METHODS)
    assert set(runner.PROMPT_METHODS) == set(config.PROMPT_METHODS)
    assert set(runner.KV_METHODS) | {"full"} == set(config.GENERATION_METHODS)
    assert set(bench.BENCH_METHODS) <= set(config.METHODS)
    with pytest.raises(ConfigError, match="unknown method"):
        eval_method("magic")


@pytest.mark.parametrize("name", config.GENERATION_METHODS)
def test_generation_methods_pass_their_budgets(name):
    kwargs = EVAL_METHODS[name].generate_kwargs(100, pc_prompt_factor=2.5)
    assert kwargs["method"] == name
    if name == "full":
        assert kwargs == {"method": "full"} and not EVAL_METHODS[name].uses_budget
    else:
        assert kwargs["budget"] == 100
    needs = config.METHODS[name].needs_prompt_budget
    assert ("prompt_budget" in kwargs) == needs
    if needs:
        assert kwargs["prompt_budget"] == prompt_budget(100, 2.5) == 250
    assert EVAL_METHODS[name].compress(None, "ctx", "q", 100) is None


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_factory):
    from draftapprox_integrations.engine import DraftApproxEngine, SpecPCConfig

    draft = tiny_model_factory("llama", layers=SpecPCConfig().starting_layer_index + 2)
    return DraftApproxEngine(str(draft), str(tiny_model_factory("qwen2")), device="cpu", dtype="float32")


@pytest.mark.parametrize("name", config.PROMPT_METHODS)
def test_every_prompt_method_returns_the_specpc_result_shape(name, tiny_pair):
    from draftapprox_integrations.evals.tasks import make_sample

    sample = make_sample("niah_single", 512, tiny_pair.draft.tokenizer, seed=0)
    how = eval_method(name)
    comp = how.compress(tiny_pair, sample.context, sample.question, 64, seed=1)
    assert isinstance(comp, CompressionResult)
    assert len(comp.documents) == 1 and isinstance(comp.documents[0], CompressedDocument)
    doc = comp.documents[0]
    assert comp.text == doc.text and comp.original_tokens == doc.original_tokens > comp.compressed_tokens > 0
    assert comp.compressed_tokens == doc.compressed_tokens and not comp.passthrough
    assert doc.spans and all(0 <= a < b <= len(sample.context) for a, b in doc.spans)
    assert how.generate_kwargs(64, pc_prompt_factor=2.0) == {"method": "full"}
    fields = how.compression_fields(comp)
    assert {"compressed_tokens", "original_tokens", "compress_seconds"} <= set(fields)


def test_baselines_return_the_specpc_result_shape(smollm2_tokenizer):
    from draftapprox_integrations.evals.baselines import random_token_drop

    text = "The quiet river bends past the old mill. " * 40
    r = random_token_drop(text, 50, smollm2_tokenizer, seed=3)
    assert isinstance(r, CompressionResult) and len(r.documents) == 1
    assert r.spans == r.documents[0].spans and r.text == "".join(text[a:b] for a, b in r.spans)
    assert r.method == "random" and r.budget == 50 and r.selected_tokens == r.compressed_tokens == 50
    assert r.stats()["compressed_tokens"] == 50


EVALS_INSTALL = 'pip install "draftapprox-integrations[evals]"'


def test_require_names_the_extra():
    require("x", ("json",))
    with pytest.raises(MissingExtraError) as err:
        require("draftapprox eval", ("json", "no_such_module_for_draftapprox"))
    message = str(err.value)
    assert "\n" not in message and EVALS_INSTALL in message and "no_such_module_for_draftapprox" in message


_BLOCKED = ("matplotlib",)  # tqdm cannot be blocked here: transformers imports it
_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # any import of it raises ImportError
from draftapprox_integrations.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.exit(code)
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = _RUN.format(blocked=_BLOCKED)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_cli_without_the_evals_extra(tmp_path):
    for command in ("demo", "compress", "generate", "eval", "bench"):
        done = _cli(command, "--help")
        assert done.returncode == 0, done.stderr
    for command in (["eval", "--out", str(tmp_path)], ["eval", "--render-only", "--out", str(tmp_path)], ["bench"]):
        done = _cli(*command)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and EVALS_INSTALL in lines[0] and "matplotlib" in lines[0], done.stderr
    assert not any(tmp_path.iterdir())  # nothing ran


def test_cli_compress_and_generate_run_without_the_evals_extra(tiny_model_factory, tmp_path):
    from draftapprox_integrations.engine import SpecPCConfig

    model = str(tiny_model_factory("llama", layers=SpecPCConfig().starting_layer_index + 2))
    doc = tmp_path / "doc.txt"
    doc.write_text("The quiet river bends past the old mill, and the miller waves at the boats. " * 20)
    done = _cli("compress", str(doc), "-q", "Who waves?", "--budget", "20", "--draft", model, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    done = _cli("generate", "Say hi.", "--method", "full", "--max-new-tokens", "3", "--target", model, "--draft", model,
                "--device", "cpu", "--dtype", "float32")
    assert done.returncode == 0, done.stderr
