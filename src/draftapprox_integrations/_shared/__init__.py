"""Framework-free plumbing shared by the LangChain and LlamaIndex adapters.

``specpc_options`` (fields and validation of the SpecPC compressor and node postprocessor),
``speckv_options`` (fields, per-call options, role map and token usage of the SpecKV LLMs) and ``threads``
(running the blocking engine from async code). Nothing here imports LangChain or LlamaIndex, and nothing
here is an algorithm: that lives in ``engine/``.
"""
