"""One `transformers serve` for the module's tests (the embedded SmolLM2, converted to a safetensors folder)."""

from __future__ import annotations

import os

import pytest

from draftapprox_integrations.engine.loading import converted_folder, resolve_reference

from tests.helpers import SMOLLM2
from tests.integration.serving.server import transformers_serve


@pytest.fixture(scope="package")
def served(tmp_path_factory):
    """The running server (base_url, model name); stopped, and checked gone, after the package's tests."""
    folder = converted_folder(resolve_reference(SMOLLM2))
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with transformers_serve(folder, log) as server:
        yield server
    with pytest.raises(ProcessLookupError):  # no stray process: the whole group is gone
        os.killpg(server.process.pid, 0)
