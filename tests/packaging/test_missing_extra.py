"""Fast checks of the extras' error path inside the dev venv: a missing framework is simulated in a child
interpreter (``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from draftapprox_integrations.engine.errors import DraftApproxError, MissingExtraError

LANGCHAIN_HINT = 'pip install "draftapprox-integrations[langchain]"'
LLAMA_INDEX_HINT = 'pip install "draftapprox-integrations[llama-index]"'

# Runs in the child after the simulated uninstall: each statement's outcome, as JSON on the last line.
_PROBE = textwrap.dedent(
    """
    import json, sys
    for name in BLOCKED:
        sys.modules[name] = None
    from draftapprox_integrations.engine.errors import DraftApproxError, MissingExtraError
    results = []
    for stmt in STATEMENTS:
        try:
            exec(stmt, {})
        except BaseException as exc:
            results.append({
                "stmt": stmt, "ok": False, "type": type(exc).__name__, "message": str(exc),
                "missing_extra": isinstance(exc, MissingExtraError), "import_error": isinstance(exc, ImportError),
                "draftapprox_error": isinstance(exc, DraftApproxError), "extra": getattr(exc, "extra", None),
                "name": getattr(exc, "name", None),
            })
        else:
            results.append({"stmt": stmt, "ok": True})
    results.append({"loaded": sorted(m for m in ("langchain_core", "llama_index.core", "matplotlib")
                                     if sys.modules.get(m) is not None)})
    print(json.dumps(results))
    """
)


def _probe(blocked: list[str], statements: list[str]) -> list[dict]:
    code = f"BLOCKED = {blocked!r}\nSTATEMENTS = {statements!r}\n" + _PROBE
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"probe failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_error_class_is_an_import_error_and_names_the_extra():
    err = MissingExtraError("draftapprox_integrations.langchain", "langchain", "langchain_core")
    assert isinstance(err, ImportError) and isinstance(err, DraftApproxError)
    assert err.extra == "langchain" and err.name == "langchain_core"
    assert LANGCHAIN_HINT in str(err) and "langchain_core" in str(err)
    MissingExtraError.require("json", "evals", ["json", "os.path"])  # present: no error
    with pytest.raises(MissingExtraError, match=r"\[evals\]") as info:
        MissingExtraError.require("plots", "evals", ["json", "no_such_module_xyz.sub"])
    assert info.value.name == "no_such_module_xyz.sub"


def test_langchain_without_langchain_core():
    stmts = [
        "import draftapprox_integrations",  # the core never needs the framework
        "import draftapprox_integrations.langchain",
        "from draftapprox_integrations.langchain import SpecPCCompressor",  # again: still raises
        "from draftapprox_integrations.langchain import ChatSpecKV",
    ]
    core, sub, cls, chat, state = _probe(["langchain_core"], stmts)
    assert core["ok"]
    for r in (sub, cls, chat):
        assert not r["ok"] and r["type"] == "MissingExtraError", r
        assert r["missing_extra"] and r["import_error"] and r["draftapprox_error"]
        assert LANGCHAIN_HINT in r["message"] and r["extra"] == "langchain" and r["name"] == "langchain_core"
    assert state["loaded"] == []


def test_llama_index_without_llama_index_core():
    stmts = [
        "import draftapprox_integrations",
        "import draftapprox_integrations.llama_index",
        "from draftapprox_integrations.llama_index import SpecPCNodePostprocessor",
        "from draftapprox_integrations.llama_index import SpecKVLLM",
    ]
    core, *failed, state = _probe(["llama_index", "llama_index.core"], stmts)
    assert core["ok"]
    for r in failed:
        assert not r["ok"] and r["type"] == "MissingExtraError", r
        assert LLAMA_INDEX_HINT in r["message"] and r["extra"] == "llama-index"
    assert state["loaded"] == []


def test_one_framework_missing_leaves_the_other_usable():
    lc, li, _ = _probe(
        ["llama_index", "llama_index.core"],
        ["from draftapprox_integrations.langchain import SpecPCCompressor", "import draftapprox_integrations.llama_index"],
    )
    assert lc["ok"], lc
    assert not li["ok"] and LLAMA_INDEX_HINT in li["message"]


def test_partial_framework_install_gives_the_same_error_at_class_access():
    # langchain-core is found, but a module the adapter needs is not: the class import names the extra too.
    sub, cls, _ = _probe(
        ["langchain_core.documents"],
        ["import draftapprox_integrations.langchain", "from draftapprox_integrations.langchain import SpecPCCompressor"],
    )
    assert sub["ok"], sub
    assert not cls["ok"] and cls["type"] == "MissingExtraError" and LANGCHAIN_HINT in cls["message"], cls
    assert cls["name"] == "langchain_core.documents"


def test_cli_parser_needs_no_framework_and_no_evals_extra():
    # demo/compress/generate must work with the core only: building the parser (which registers eval/bench)
    # imports neither framework nor matplotlib.
    (r, state) = _probe(
        ["langchain_core", "llama_index", "llama_index.core", "matplotlib"],
        ["from draftapprox_integrations.cli import build_parser; build_parser().parse_args(['compress', '-q', 'x'])"],
    )
    assert r["ok"], r
    assert state["loaded"] == []
