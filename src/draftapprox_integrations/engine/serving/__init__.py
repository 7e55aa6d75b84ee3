"""The engine's loop: the one thread that runs model work, batching the answers it decodes."""

from .loop import EngineLoop
from .requests import GenerationStream, Request

__all__ = ["EngineLoop", "GenerationStream", "Request"]
