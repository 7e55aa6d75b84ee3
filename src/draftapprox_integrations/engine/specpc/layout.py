"""How SpecPC frames a RAG prompt for the draft, and how a long one is packed into chunks that fit.

The draft reads ``[intro] Document 1: <doc> ... Document n: <doc> Question: <query> [generation prompt]``
(inside its chat template when it has one, else as a completion prompt ending ``Answer:``). Each part is
tokenised on its own, so every context token keeps its place in its document. Without a query the
documents are one continuous text with no framing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ContextLengthError

RAG_INTRO = "Read the documents below, then answer the question.\n\n"




@dataclass
class PromptLayout:
    """Token ids of the fixed prompt parts around the documents."""

    prefix: list[int]
    header: list[list[int]]  # per document
    between: list[int]
    question: list[int]


def build_layout(loaded, query: str | None, n_docs: int) -> PromptLayout:
    tok = loaded.tokenizer

    def ids(text: str, special: bool = False) -> list[int]:
        return list(tok(text, add_special_tokens=special)["input_ids"]) if text or special else []

    if query is None:
        # A plain prompt: the documents as one continuous text, no framing.
        return PromptLayout(prefix=ids("", special=True), header=[[] for _ in range(n_docs)], between=ids("\n\n"), question=[])
    headers = [ids(f"Document {i + 1}:\n") for i in range(n_docs)]
    if loaded.has_chat_template:
        marker = "\u2063DRAFTAPPROX_CONTENT\u2063"
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
        )
        before, after = rendered.split(marker, 1)
        bos = getattr(tok, "bos_token", None)
        has_bos = bool(bos) and before.startswith(bos)
        prefix = ids(before + RAG_INTRO, special=not has_bos)
        question = ids(f"Question: {query.strip()}" + after)
    else:
        prefix = ids(RAG_INTRO, special=True)
        question = ids(f"Question: {query.strip()}\nAnswer:")
    return PromptLayout(prefix=prefix, header=headers, between=ids("\n\n"), question=question)


@dataclass
class Piece:
    doc: int
    start: int  # token range inside the document's tokens
    end: int


def plan_chunks(doc_lengths: list[int], layout: PromptLayout, max_context: int) -> list[list[Piece]]:
    """Pack documents (split when needed) into chunks whose prompts fit ``max_context`` tokens."""
    fixed = len(layout.prefix) + len(layout.question)
    chunks: list[list[Piece]] = []
    current: list[Piece] = []
    used = fixed
    for d, n in enumerate(doc_lengths):
        start = 0
        while start < n:
            overhead = len(layout.header[d]) + len(layout.between)
            room = max_context - used - overhead
            if room < 8 and current:
                chunks.append(current)
                current, used = [], fixed
                continue
            if room < 8:
                raise ContextLengthError(
                    f"the question and prompt framing take {fixed + overhead} tokens, leaving no room for context "
                    f"in the draft's {max_context}-token window; shorten the question"
                )
            take = min(room, n - start)
            current.append(Piece(d, start, start + take))
            used += overhead + take
            start += take
    if current:
        chunks.append(current)
    return chunks
