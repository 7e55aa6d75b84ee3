"""A constraint at decode time: one llguidance matcher per constrained row on the host, one token bitmask per
row on the device.

Each step of a decode batch masks its logits with the rows' bitmasks before sampling (:func:`mask_logits`, on
the device, inside the step a CUDA graph captures; an unconstrained row's mask allows every token). After the
step's one host read, each constrained row's matcher consumes the sampled token and fills the row's next
mask (:meth:`RowGrammar.advance`), which the batch copies into the row's slot before the next step. The first
token is sampled from the prefill's logits under the grammar's initial mask.

EOS is allowed exactly when the grammar accepts (the matcher knows the model's EOS ids); once the grammar can
take nothing more the row ends at once, without a forward for its EOS. The llguidance tokenizer of a model
(about half a second for SmolLM2's 49k tokens) and the compiled matcher of a grammar are built once and kept.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from .constraints import CompiledConstraint, ConstraintError

_lock = threading.Lock()
_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # HF tokenizer -> (LLTokenizer, words)
_MATCHERS_KEPT = 64  # compiled grammars kept per tokenizer (a matcher is copied for each row)


def mask_words(vocab: int) -> int:
    """int32 words of a bitmask over ``vocab`` tokens."""
    return (vocab + 31) // 32


def _llg_tokenizer(tokenizer, vocab: int, eos_ids: set[int]) -> tuple[Any, dict[str, Any]]:
    """The llguidance tokenizer of ``tokenizer`` (over ``vocab`` logits, EOS = ``eos_ids``) and its grammar cache."""
    import llguidance.hf

    with _lock:
        entry = _tokenizers.get(tokenizer)
        if entry is None:
            n_vocab = max(vocab, len(tokenizer))
            try:
                lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=sorted(eos_ids))
            except ValueError as exc:  # a slow (Python) tokenizer: llguidance reads fast ones only
                raise ConstraintError(f"constrained decoding needs a fast tokenizer: {exc}") from None
            entry = _tokenizers[tokenizer] = (lltok, {})
        return entry


def prepare_grammar(compiled: CompiledConstraint | None, tokenizer, vocab: int, eos_ids: set[int]):
    """The compiled matcher of a constraint for this tokenizer (over ``vocab`` logits), built once and kept;
    None when the constraint enforces nothing. ConstraintError when llguidance refuses it."""
    if compiled is None or compiled.grammar is None:
        return None
    import llguidance

    lltok, matchers = _llg_tokenizer(tokenizer, vocab, eos_ids)
    with _lock:
        template = matchers.get(compiled.grammar)
        if template is None:
            template = llguidance.LLMatcher(lltok, compiled.grammar, log_level=0)
            if template.is_error():
                raise ConstraintError(f"the {compiled.kind} constraint cannot be compiled: {template.get_error()}")
            if len(matchers) >= _MATCHERS_KEPT:
                matchers.pop(next(iter(matchers)))
            matchers[compiled.grammar] = template
        return template


class RowGrammar:
    """One row's matcher and its next-token bitmask (``mask``, int32 [words] on the CPU)."""

    def __init__(self, matcher, words: int) -> None:
        self.matcher = matcher
        self.mask = torch.zeros(words, dtype=torch.int32)
        self._fill()

    @classmethod
    def start(cls, compiled: CompiledConstraint | None, tokenizer, vocab: int, eos_ids: set[int]) -> RowGrammar | None:
        """A row's grammar in its initial state, a copy of the constraint's compiled matcher (None when the
        constraint enforces nothing)."""
        template = prepare_grammar(compiled, tokenizer, vocab, eos_ids)
        if template is None:
            return None
        return cls(template.deep_copy(), mask_words(max(vocab, len(tokenizer))))

    def advance(self, token: int) -> None:
        """Take the sampled ``token`` and compute the next mask. A token the mask did not allow is a bug."""
        if not self.matcher.consume_token(int(token)):
            raise ConstraintError(f"the grammar refused token {token}: {self.matcher.get_error()}")
        self._fill()

    @property
    def done(self) -> bool:
        """The grammar takes nothing more (but EOS): the answer is complete."""
        return self.matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        """The text so far is a whole answer of the grammar."""
        return self.matcher.is_accepting()

    def _fill(self) -> None:
        if self.matcher.is_stopped():
            return  # nothing more will be sampled under it
        self.matcher.unsafe_compute_mask_ptr(self.mask.data_ptr(), self.mask.numel() * 4)
        if self.matcher.is_error():
            raise ConstraintError(f"the grammar failed: {self.matcher.get_error()}")


def unpack_bits(device) -> torch.Tensor:
    """The shifts that unpack an int32 word into its 32 bits (a batch keeps one on its device)."""
    return torch.arange(32, dtype=torch.int32, device=device)


def mask_logits(logits: torch.Tensor, bitmask: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``logits`` [R, V] with every token whose bit is 0 in ``bitmask`` [R, words] set to -inf (no host sync)."""
    allowed = ((bitmask[:, :, None] >> bits) & 1).reshape(bitmask.shape[0], -1)[:, : logits.shape[-1]]
    return logits.masked_fill(allowed == 0, float("-inf"))
