"""SpecKV inside an unchanged ``vllm serve`` (vLLM 0.32, V1 model runner, CPU attention backend).

vLLM loads :func:`register` from the ``vllm.general_plugins`` entry point in every process it starts. It
patches the scheduler (:mod:`.scheduler`) and the model runner and CPU attention (:mod:`.runner`); requests
without SpecKV arguments in ``vllm_xargs`` run as plain vLLM. The server must run with
``--no-enable-prefix-caching --no-enable-chunked-prefill --enforce-eager`` and ``VLLM_USE_V2_MODEL_RUNNER=0``
(docs/vllm-plugin.md says why); under other settings a SpecKV request is served plain, with an error logged.
The client side (:mod:`.xargs`, :mod:`.client`) needs no vLLM.
"""

from __future__ import annotations

import logging

PINNED_VLLM = "0.32"


def register() -> None:
    """vLLM's plugin hook: install the patches (idempotent; vLLM may call it more than once per process)."""
    import vllm

    if not vllm.__version__.startswith(PINNED_VLLM):
        raise RuntimeError(
            f"draftapprox SpecKV plugin: written against vLLM {PINNED_VLLM}.x, found {vllm.__version__}; "
            "its patch points (scheduler, model runner, CPU attention) change between releases"
        )
    from . import runner, scheduler

    scheduler.install()
    runner.install()
    logging.getLogger("vllm.plugins.draftapprox_speckv").info("SpecKV plugin installed (vLLM %s)", vllm.__version__)
