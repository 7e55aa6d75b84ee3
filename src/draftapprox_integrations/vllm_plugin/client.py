"""Client side of SpecKV on a vLLM server: the draft writes its answer beside the client (no vLLM here).

:class:`DraftAnswers` renders the request's messages (or completion text) for the draft, lets it answer
greedily as the engine's SpecKV does, and turns that answer into target token ids with the server's own
``/tokenize`` endpoint, so the ids are the target's whatever the draft. The result is the request's
``vllm_xargs`` (:func:`.xargs.speckv_xargs`). The LangChain and LlamaIndex clients call :meth:`xargs`.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Sequence

from ..engine.config import DEFAULT_MODEL, SpecKVConfig
from ..engine.prompts import encode_prompt
from ..engine.shared_engines import get_engine
from ..engine.speckv.lookahead import draft_answer
from ..engine.steps import run_alone
from .xargs import speckv_xargs


def server_root(base_url: str) -> str:
    """http://host:port from an OpenAI base URL (http://host:port/v1): vLLM's /tokenize sits at the root."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class DraftAnswers:
    """The draft's answer to a request, as the SpecKV arguments of that request for one vLLM server."""

    def __init__(self, base_url: str, model: str, *, draft_model: str = DEFAULT_MODEL, budget: int = 256,
                 config: SpecKVConfig | None = None, lookahead_tokens: int | None = None,
                 device: str = "auto", dtype: str = "auto", timeout: float = 120.0) -> None:
        self.root, self.model = server_root(base_url), model
        self.draft_model, self.device, self.dtype = draft_model, device, dtype
        self.config = (config or SpecKVConfig()).replace(budget=budget)
        self.lookahead_tokens, self.timeout = lookahead_tokens, timeout
        self._lock = threading.Lock()  # one draft forward at a time (the draft's weights are shared)

    def xargs(self, messages: Sequence[dict] | None = None, text: str | None = None,
              max_tokens: int = 128) -> dict:
        """``vllm_xargs`` for chat ``messages`` ([{"role", "content"}]) or a completion ``text``."""
        n = next(v for v in (self.config.lookahead_tokens, self.lookahead_tokens, max_tokens) if v is not None)
        draft = get_engine(self.draft_model, device=self.device, dtype=self.dtype).draft
        with self._lock:
            ids = encode_prompt(draft, list(messages) if messages is not None else None, text)
            answer = run_alone(draft_answer(draft, ids, n)).text
        return speckv_xargs(self.target_ids(answer), self.config.budget, self.config)

    def target_ids(self, text: str) -> list[int]:
        """The server's token ids of ``text`` (no special tokens: it continues a prompt)."""
        if not text:
            return []
        body = json.dumps({"model": self.model, "prompt": text, "add_special_tokens": False}).encode()
        request = urllib.request.Request(self.root + "/tokenize", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:
            return list(json.loads(resp.read())["tokens"])
