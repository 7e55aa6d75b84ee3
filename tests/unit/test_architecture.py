"""The package's shape, asserted: calls run downward, no import cycle, engine files small enough to read.

Imports are read from the source (every ``import`` statement, at module level or inside a function), so a
lazy import that runs upward counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import draftapprox_integrations

ROOT = Path(draftapprox_integrations.__file__).parent
PKG = "draftapprox_integrations"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """Package modules named by one ``from ... import ...`` statement."""
    if node.level:
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    # `from . import specpc` names a module; `from .config import X` names a name in a module.
    named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return named or [target]


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path, node))
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_no_import_cycle_inside_the_package():
    done: set[str] = set()
    for start in GRAPH:
        stack, on_path = [(start, iter(sorted(GRAPH[start])))], {start}
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                done.add(node)
                continue
            assert child not in on_path, f"import cycle: {' -> '.join([n for n, _ in stack] + [child])}"
            if child not in done:
                stack.append((child, iter(sorted(GRAPH[child]))))
                on_path.add(child)


def test_calls_run_downward():
    facade = f"{PKG}.engine.engine"
    # The facade's own level: the process-wide engines (they build facades).
    facade_level = (facade, f"{PKG}.engine", f"{PKG}.engine.shared_engines")
    above_engine = [f"{PKG}.langchain", f"{PKG}.llama_index", f"{PKG}._shared", f"{PKG}.evals", f"{PKG}.cli", f"{PKG}.demos"]
    methods = [f"{PKG}.engine.specpc", f"{PKG}.engine.speckv"]
    for module, deps in GRAPH.items():
        if _under(module, f"{PKG}.engine"):
            upward = {d for d in deps if any(_under(d, a) for a in above_engine)}
            assert not upward, f"{module} imports {sorted(upward)}, which sit above the engine"
            if module not in facade_level:
                assert facade not in deps, f"{module} imports the engine facade"
        if not any(_under(module, m) for m in methods) and _under(module, f"{PKG}.engine") and module not in facade_level:
            into_methods = {d for d in deps if any(_under(d, m) for m in methods)}
            assert not into_methods, f"shared helper {module} imports a method package: {sorted(into_methods)}"
    specpc_deps = {d for m, deps in GRAPH.items() if _under(m, methods[0]) for d in deps}
    assert not any(_under(d, methods[1]) for d in specpc_deps), "SpecPC must not depend on SpecKV"


def test_engine_files_and_functions_are_small():
    too_long_files, too_long_functions = [], []
    for module, path in MODULES.items():
        if not _under(module, f"{PKG}.engine"):
            continue
        if path.name == "loading.py":
            continue  # model loading (references, GGUF conversion, devices) is the one agreed exception
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > 300:
            too_long_files.append((module, source.count("\n")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body_start = node.body[0].lineno
                if isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant):
                    body_start = node.body[0].end_lineno + 1  # the docstring is not logic
                if node.end_lineno - body_start + 1 > 50:
                    too_long_functions.append((module, node.name, node.end_lineno - body_start + 1))
    assert not too_long_files, too_long_files
    assert not too_long_functions, too_long_functions
