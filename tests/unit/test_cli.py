"""The `draftapprox` command line: one-line errors, documented exit statuses, help for every option (BUG-4, BUG-3).

Exit statuses: 2 usage (argparse, or an option value the engine refuses), 3 input (the file or stdin is not
usable text), 4 model/engine (any other DraftApproxError). Most tests call ``main([...])`` in-process on tiny
models; one runs the console script for real stdin bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from draftapprox_integrations import __version__
from draftapprox_integrations.cli import EXIT_ENGINE, EXIT_INPUT, EXIT_USAGE, build_parser, main
from tests.helpers import TINY

DOC = "The quiet river bends past the old mill, and the miller waves at the boats. The door code is 4521. " * 6
COMMANDS = ("demo", "info", "compress", "generate", "eval", "bench", "sweep-kv")


class _Stdin:
    """A stand-in for sys.stdin that hands out bytes, as a pipe does."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.fixture(scope="module")
def model(tiny_model_factory) -> str:
    return str(tiny_model_factory("llama"))


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text(DOC, encoding="utf-8")
    return path


def _run(capsys, *argv: str, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith(f"draftapprox {command}: error: "), err
    return lines[0]


def _compress(model: str, *args: str) -> list[str]:
    return ["compress", *args, "--draft", model, "--device", "cpu", "--dtype", "float32"]


def _generate(model: str, *args: str) -> list[str]:
    return ["generate", *args, "--draft", model, "--target", model, "--device", "cpu", "--dtype", "float32"]


def test_compress_and_generate_succeed_with_status_0(capsys, model, doc):
    code, out, err = _run(capsys, *_compress(model, str(doc), "-q", "What is the code?", "--budget", "20",
                                             *(f"--{k.replace('_', '-')}={v}" for k, v in TINY.items())))
    assert code == 0 and out.strip() and "[specpc]" in err
    code, out, err = _run(capsys, *_generate(model, "Say hi.", "--method", "full", "--max-new-tokens", "2"))
    assert code == 0 and "[full]" in err


@pytest.mark.parametrize(
    "case", ["missing", "directory", "latin1", "binary", "empty", "whitespace"]
)
def test_unusable_input_files_exit_3_with_one_line(capsys, model, tmp_path, case):
    path = tmp_path / "input.txt"
    if case == "directory":
        path.mkdir()
    elif case == "latin1":
        path.write_bytes("caf\u00e9: the code is 4521".encode("latin-1"))
    elif case == "binary":
        path.write_bytes(b"\x00\x01\x02code 4521\x00")
    elif case in ("empty", "whitespace"):
        path.write_text("" if case == "empty" else "  \n\t", encoding="utf-8")
    for argv in (_compress(model, str(path), "-q", "code?", "--budget", "10"), _generate(model, "--file", str(path))):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_INPUT, err
        _one_line_error(err, argv[0])


@pytest.mark.parametrize(
    "data", [b"", b"  \n", b"caf\xe9 au lait", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(256)) * 4]
)
def test_unusable_stdin_exits_3_with_one_line(capsys, monkeypatch, model, data):
    for argv in (_compress(model, "-q", "code?", "--budget", "10"), _generate(model)):
        code, _, err = _run(capsys, *argv, stdin=data, monkeypatch=monkeypatch)
        assert code == EXIT_INPUT, err
        assert "stdin" in _one_line_error(err, argv[0])


def test_utf8_stdin_with_a_bom_is_read(capsys, monkeypatch, model):
    code, _, err = _run(capsys, *_generate(model, "--method", "full", "--max-new-tokens", "1"),
                        stdin="\ufeffSay hi, caf\u00e9.".encode("utf-8"), monkeypatch=monkeypatch)
    assert code == 0, err


def test_text_arguments_with_lone_surrogates_exit_3(capsys, model, doc):
    # Arguments that are not UTF-8 reach Python as lone surrogates (surrogateescape).
    for argv in (
        _generate(model, "caf\udce9?", "--max-new-tokens", "1"),
        _generate(model, "Say hi.", "--stop", "\ud800"),
        _compress(model, str(doc), "-q", "code \udcff?", "--budget", "10"),
    ):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_INPUT, err
        assert "lone surrogate" in _one_line_error(err, argv[0])


def test_option_values_the_engine_refuses_exit_2(capsys, model, doc):
    for argv in (
        _compress(model, str(doc), "-q", "code?", "--rate", "0"),
        _generate(model, "Say hi.", "--temperature", "nan", "--max-new-tokens", "2"),
        _generate(model, "Say hi.", "--method", "speckv-pc"),  # needs --prompt-budget
        ["compress", str(doc), "-q", "code?", "--device", "tpu"],
    ):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_USAGE, err
        _one_line_error(err, argv[0])


def test_argparse_errors_exit_2(capsys, doc):
    code, _, err = _run(capsys, "compress", str(doc), "--budget", "abc")
    assert code == EXIT_USAGE and "invalid int value" in err and "Traceback" not in err
    code, _, err = _run(capsys, "generate", "--method", "h2o", "x")
    assert code == EXIT_USAGE and "invalid choice" in err


def test_model_and_engine_errors_exit_4(capsys, tmp_path, doc):
    missing = str(tmp_path / "no-such-model")
    code, _, err = _run(capsys, "generate", "Say hi.", "--draft", missing, "--target", missing, "--device", "cpu")
    assert code == EXIT_ENGINE, err
    assert "no-such-model" in _one_line_error(err, "generate")
    code, _, err = _run(capsys, "compress", str(doc), "-q", "code?", "--budget", "10", "--draft", missing, "--device", "cpu")
    assert code == EXIT_ENGINE, err
    _one_line_error(err, "compress")


def test_a_prompt_too_long_for_the_context_is_an_input_error(capsys, model):
    code, _, err = _run(capsys, *_generate(model, "word " * 5000, "--method", "snapkv", "--budget", "64"))
    assert code == EXIT_INPUT, err
    assert "context" in _one_line_error(err, "generate")


def test_verbose_prints_the_traceback_too(capsys, tmp_path):
    for argv in (["-v", "compress", str(tmp_path / "nope.txt")], ["compress", "-v", str(tmp_path / "nope.txt")]):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_INPUT
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("draftapprox compress: error: cannot read")


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"draftapprox {__version__}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == set(COMMANDS)
    missing = [
        f"{name}: {'/'.join(a.option_strings) or a.dest}"
        for name, sub in [("draftapprox", parser), *commands.items()]
        for a in sub._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help and a.help.strip())
    ]
    assert not missing, missing


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(capsys, command):
    code, out, _ = _run(capsys, command, "--help")
    assert code == 0 and f"usage: draftapprox {command}" in out and "--verbose" in out


def test_top_level_help_documents_the_exit_statuses(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "exit status:" in out
    for status in (EXIT_USAGE, EXIT_INPUT, EXIT_ENGINE):
        assert f"\n  {status} " in out


def test_console_script_on_binary_stdin(model):
    """The installed entry point with real pipe bytes (/dev/urandom-like), as in FINDINGS BUG-3/BUG-4."""
    code = "import sys; from draftapprox_integrations.cli import main; sys.exit(main())"
    data = bytes((i * 167 + 13) % 256 for i in range(3000))
    done = subprocess.run(
        [sys.executable, "-c", code, *_compress(model, "-q", "code?", "--budget", "10")],
        input=data, capture_output=True, timeout=300,
    )
    err = done.stderr.decode()
    assert done.returncode == EXIT_INPUT, err
    _one_line_error(err, "compress")


def test_generate_uses_the_chat_template_unless_raw(capsys, model):
    """`draftapprox generate` renders the prompt with the target's chat template by default; --raw sends it as
    written (the prompt token counts of --json's stats tell which)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    prompt = "The vault code is 4417. What is the vault code?"
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    counts = {}
    for style in ("", "--raw", "--chat"):
        argv = _generate(model, prompt, "--method", "full", "--max-new-tokens", "1", "--json", *([style] if style else []))
        code, _, err = _run(capsys, *argv)
        assert code == 0, err
        counts[style] = json.loads(err)["prompt_tokens"]
    assert counts[""] == counts["--chat"] == len(tok(rendered, add_special_tokens=False)["input_ids"])
    assert counts["--raw"] == len(tok(prompt)["input_ids"])
    code, _, err = _run(capsys, *_generate(model, prompt, "--raw", "--chat"))
    assert code == 2 and "not allowed with" in err


def test_generate_rate_keeps_that_fraction_of_the_prompt_and_excludes_budget(capsys, model):
    """`--rate F` keeps ceil(F * prompt tokens) entries (never fewer than --window-size); with --budget it is
    argparse's error; a rate outside (0, 1] is the engine's (exit 2, one line)."""
    prompt = "Alice keeps the red key in the kitchen drawer; Bob hides the blue key under the mat. Where is the blue key?"
    argv = _generate(model, prompt, "--method", "snapkv", "--window-size", "4", "--max-new-tokens", "1", "--json")
    code, _, err = _run(capsys, *argv, "--rate", "0.5")
    assert code == 0, err
    stats = json.loads(err)
    assert stats["budget"] == stats["kv_entries_kept"] == math.ceil(0.5 * stats["prompt_tokens"]) < stats["prompt_tokens"]
    code, _, err = _run(capsys, *argv, "--rate", "0.01")
    assert code == 0 and json.loads(err)["kv_entries_kept"] == 4, err
    code, _, err = _run(capsys, *argv, "--rate", "0.5", "--budget", "8")
    assert code == EXIT_USAGE and "not allowed with" in err
    for bad in ("0", "1.5", "nan"):
        code, _, err = _run(capsys, *argv, "--rate", bad)
        assert code == EXIT_USAGE, err
        assert "rate" in _one_line_error(err, "generate")


def test_generate_selection_options_reach_the_engine(capsys, model):
    """--keep-last / --allocation / --score-window set SpecKVConfig's fields: the global allocation keeps the
    bytes of the uniform one (moved between layers), a bad choice is argparse's error."""
    prompt = "Alice keeps the red key in the kitchen drawer; Bob hides the blue key under the mat. Where is the blue key?"
    argv = _generate(model, prompt, "--method", "speckv", "--window-size", "4", "--budget", "12", "--max-new-tokens", "2", "--json")
    code, _, err = _run(capsys, *argv, "--keep-last", "2", "--allocation", "uniform", "--no-score-window")
    assert code == 0, err
    uniform = json.loads(err)
    code, _, err = _run(capsys, *argv, "--keep-last", "2", "--allocation", "global", "--score-window")
    assert code == 0, err
    moved = json.loads(err)
    assert moved["kv_bytes_kept"] == uniform["kv_bytes_kept"] < uniform["kv_bytes_full"]
    code, _, err = _run(capsys, *argv, "--allocation", "pyramid")
    assert code == EXIT_USAGE and "invalid choice" in err
    code, _, err = _run(capsys, *argv, "--keep-last", "2", "--allocation", "auto", "--no-score-window")
    assert code == 0 and json.loads(err)["kv_bytes_kept"] == uniform["kv_bytes_kept"]  # no profile for a tiny model
    code, _, err = _run(capsys, *argv, "--allocation", "profile")
    assert code != 0 and "no layer profile is known" in err


def test_sweep_kv_writes_a_row_per_candidate_and_renders(capsys, model, tmp_path):
    """`draftapprox sweep-kv` on a tiny model: one full row and one row per (candidate, budget) per sample,
    resumable (a second run adds nothing), --render-only redraws the table; a bad CANDIDATE@BUDGET is a usage error."""
    out = tmp_path / "sweep"
    argv = ["sweep-kv", "--model", model, "--device", "cpu", "--dtype", "float32", "--tasks", "niah_single", "--lengths", "256",
            "--seeds", "3", "--samples", "1", "--candidates", "speckv-v1", "speckv-look-last8", "--budgets", "40",
            "--extra", "snapkv@48", "--out", str(out), "--no-progress"]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["budget"]) for r in rows) == [
        ("full", None), ("snapkv", 48), ("speckv-look-last8", 40), ("speckv-v1", 40)]
    assert "| speckv-v1@40 |" in stdout and (out / "results.md").read_text().strip() == stdout.strip()
    code, _, err = _run(capsys, *argv)
    assert code == 0 and len((out / "results.jsonl").read_text().splitlines()) == 4, err
    code, stdout, _ = _run(capsys, "sweep-kv", "--render-only", "--out", str(out))
    assert code == 0 and "| full |" in stdout
    code, _, err = _run(capsys, *argv[:-3], "--extra", "nope@12")
    assert code == EXIT_USAGE and "CANDIDATE@BUDGET" in err
