"""Runs inside the fresh virtualenv of test_extras.py (only ``pip install .[langchain]``); not a test module.

Usage: python _venv_probe.py <input.json>. Prints one JSON object (what it saw) as its last stdout line.
"""

import json
import sys
import traceback


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as exc:  # reported, judged by the test
        from draftapprox_integrations.engine.errors import MissingExtraError

        return {
            "ok": False,
            "type": type(exc).__name__,
            "message": str(exc),
            "missing_extra": isinstance(exc, MissingExtraError),
            "traceback": traceback.format_exc(),
        }


def compress(spec):
    from langchain_core.documents import Document

    from draftapprox_integrations.langchain import SpecPCCompressor

    compressor = SpecPCCompressor(
        draft_model=spec["model"],
        device="cpu",
        dtype="float32",
        budget=spec["budget"],
        starting_layer_index=1,
        window_size=16,
        kernel_size=5,
    )
    docs = [Document(page_content=text, metadata={"source": f"doc-{i}"}) for i, text in enumerate(spec["docs"])]
    out = compressor.compress_documents(docs, spec["query"])
    return [
        {"type": type(d).__name__, "page_content": d.page_content, "metadata": d.metadata}
        for d in out
    ]


def import_llama_index():
    import llama_index  # noqa: F401

    return "imported"


def import_adapter_package():
    import draftapprox_integrations.llama_index  # noqa: F401

    return "imported"


def import_adapter_class():
    from draftapprox_integrations.llama_index import SpecPCNodePostprocessor  # noqa: F401

    return "imported"


def import_matplotlib():
    import matplotlib  # noqa: F401

    return "imported"


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    import draftapprox_integrations

    report = {
        "package_file": draftapprox_integrations.__file__,
        "prefix": sys.prefix,
        "compress": attempt(lambda: compress(spec)),
        "llama_index": attempt(import_llama_index),
        "adapter_package": attempt(import_adapter_package),
        "adapter_class": attempt(import_adapter_class),
        "matplotlib": attempt(import_matplotlib),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
