"""Next-token choice for a batch of rows, on the device, without a host sync.

Greedy rows take the argmax. Sampled rows draw with the Gumbel-max trick: the token with the largest
``logits / temperature + g`` wins, where ``g`` is Gumbel noise, so no sort order and no cumulative sum over
the vocabulary decides the draw. The noise of a row is a pure function of (its seed, its step, the token
id): a counter-based hash, not a generator's state. A row therefore draws the same token whether it is alone
or in a batch of any size, in any slot (FINDINGS-2 D7: ``torch.sort`` ordered near-tie probabilities
differently in a 1-row and an n-row forward, and the old multinomial draw followed that order).

Nucleus (top-p) sampling keeps the tokens whose probability is at least that of the token where the sorted
cumulative mass first reaches ``top_p``: the smallest prefix of the sorted distribution that reaches it
(ties at the edge all stay), decided by probability values, never by positions in a sort.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch

from .errors import ConfigError

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1


def check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    """The one rule for sampling options (engine and adapters): NaN and infinity are refused too, since
    ``nan < 0`` is False and would otherwise reach the sampler after the whole prefill."""
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ConfigError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")


@dataclass(frozen=True)
class SamplingRule:
    """How one row picks its tokens: greedy at temperature 0, else temperature + top-p keyed by ``key``.

    ``key`` is the row's noise key, derived from its seed (a fresh random one without a seed): the same
    seed gives the same text, alone or batched.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    key: int = 0

    @classmethod
    def of(cls, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> SamplingRule:
        if seed is None:
            seed = secrets.randbits(64)  # no seed given: any key will do (torch's global generator untouched)
        return cls(float(temperature), float(top_p), _splitmix64(int(seed) & _M64))

    @property
    def greedy(self) -> bool:
        # Below float32's smallest normal number a temperature is argmax anyway, and as a float32 divisor it
        # would underflow to 0 (NaN probabilities).
        return self.temperature < torch.finfo(torch.float32).tiny

    @property
    def nucleus(self) -> bool:
        return not self.greedy and self.top_p < 1.0

    def key_halves(self) -> tuple[int, int]:
        """The key as two 32-bit halves (a device tensor holds them as int64 without overflow)."""
        return self.key & _M32, self.key >> 32


def _splitmix64(x: int) -> int:
    """A 64-bit mix of the seed (host side, exact Python integers)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 tensors of 32-bit values, without a signed 64-bit overflow."""
    low = x * (c & 0xFFFF)
    high = ((x * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply; good avalanche) of int64 tensors of 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def gumbel_noise(keys: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Gumbel noise [R, vocab] (float32) of rows keyed by ``keys`` [R, 2] (32-bit halves) at ``steps`` [R]:
    a pure function of (key, step, token id), so a row's draw never depends on the other rows."""
    step_mix = _hash32(keys[:, 0] ^ _mul32(steps & _M32, 0x9E3779B9))
    row = _hash32(step_mix ^ keys[:, 1])
    tokens = _hash32(torch.arange(vocab, device=keys.device, dtype=torch.int64))
    bits = _hash32(row[:, None] ^ tokens[None, :]) >> 8  # 24 bits: exact in float32
    uniform = (bits.float() + 0.5) / float(1 << 24)  # in (0, 1)
    return -torch.log(-torch.log(uniform))


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    keys: torch.Tensor,
    steps: torch.Tensor,
    *,
    randomized: bool,
    nucleus: bool,
) -> torch.Tensor:
    """The next token of every row [R] (int64, on the logits' device), from logits [R, V].

    Per row: ``temperature`` [R] (0: greedy), ``top_p`` [R], ``keys`` [R, 2] and ``steps`` [R] (the row's
    sampled-token count). ``randomized`` / ``nucleus``: whether any row samples / uses top-p < 1, known on
    the host, so an all-greedy batch runs the argmax alone. No host sync.
    """
    logits = logits.float()
    greedy_pick = logits.argmax(dim=-1)
    if not randomized:
        return greedy_pick
    greedy = temperature < torch.finfo(torch.float32).tiny
    # Shift by the max first: a tiny positive temperature then sends the other logits to -inf (one-hot)
    # instead of overflowing the largest to inf.
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    scaled = shifted / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    scores = scaled + gumbel_noise(keys, steps, logits.shape[-1])
    if nucleus:
        probs = torch.softmax(scaled, dim=-1)
        ordered = probs.sort(dim=-1, descending=True).values
        before = ordered.cumsum(dim=-1) - ordered  # mass of the tokens above each one
        # The last kept token is the last whose mass above is below top_p (the first always stays).
        last = ((before < top_p[:, None]).sum(dim=-1) - 1).clamp(min=0)
        floor = ordered.gather(-1, last[:, None])
        scores = scores.masked_fill(probs < floor, float("-inf"))
    return torch.where(greedy, greedy_pick, scores.argmax(dim=-1))


def rule_tensors(rules: list[SamplingRule], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(temperature [R], top_p [R], keys [R, 2]) of the rows' rules, on ``device``."""
    temperature = torch.tensor([r.temperature for r in rules], dtype=torch.float32, device=device)
    top_p = torch.tensor([r.top_p for r in rules], dtype=torch.float32, device=device)
    keys = torch.tensor([r.key_halves() for r in rules], dtype=torch.int64, device=device).reshape(len(rules), 2)
    return temperature, top_p, keys
