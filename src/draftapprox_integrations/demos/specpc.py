"""Demo: which text SpecPC keeps for a question over a long document, highlighted."""

from __future__ import annotations

import sys
import time

from ..engine.config import SpecPCConfig
from ..engine.specpc import CompressionResult

_ON = "\033[1;30;43m"  # bold dark text on yellow: the kept spans
_DIM = "\033[2m"  # elided text, dimmed
_OFF = "\033[0m"


def highlight(text: str, spans: list[tuple[int, int]], *, color: bool) -> str:
    """The whole ``text`` with the kept ``spans`` marked: ANSI colours, or ``[[...]]`` markers without them."""
    out: list[str] = []
    pos = 0
    for a, b in spans:
        gap = text[pos:a]
        out.append(f"{_DIM}{gap}{_OFF}" if color and gap else gap)
        out.append(f"{_ON}{text[a:b]}{_OFF}" if color else f"[[{text[a:b]}]]")
        pos = b
    tail = text[pos:]
    out.append(f"{_DIM}{tail}{_OFF}" if color and tail else tail)
    return "".join(out)


def run_specpc_demo(
    engine,
    document: str,
    question: str,
    *,
    rate: float = 0.1,
    config: SpecPCConfig | None = None,
    stream=None,
    color: bool | None = None,
) -> CompressionResult:
    """Compress ``document`` for ``question`` with SpecPC and print the document with the kept text highlighted,
    then the compressed context, token counts and time. Returns the compression result."""
    stream = stream or sys.stdout
    if color is None:
        color = bool(getattr(stream, "isatty", lambda: False)())
    started = time.perf_counter()
    result = engine.compress(document, question, rate=rate, config=config)
    wall = time.perf_counter() - started
    doc = result.documents[0]
    legend = "highlighted" if color else "inside [[...]]"
    print(f"SpecPC: question {question!r}; kept text {legend}:\n", file=stream)
    print(highlight(document, doc.spans, color=color), file=stream)
    print("\ncompressed context:\n", file=stream)
    print(result.text, file=stream)
    print(
        f"\n{result.original_tokens} -> {result.compressed_tokens} draft tokens "
        f"({100 * result.compression_ratio:.1f}% kept, budget {result.budget}); "
        f"draft lookahead {result.lookahead_text!r}; {result.seconds:.2f}s compressing"
        + (f" (+{wall - result.seconds:.2f}s overhead)" if wall - result.seconds > 0.05 else ""),
        file=stream,
    )
    return result
