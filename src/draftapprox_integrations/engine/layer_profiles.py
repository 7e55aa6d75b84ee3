"""Fixed per-layer shares of a SpecKV budget, learned offline per model (``SpecKVConfig(allocation="profile")``).

The global allocation (``allocation="global"``) moves entries between layers per request, from that request's
scores, so every request has its own per-layer shape and the prefill holds up to 3x the mean per layer until
every layer is scored. A profile is that allocation averaged over a tuning split and frozen: every request of a
model keeps the same number of entries per layer, known before the prefill, so each layer is cut to its final
size as soon as its attention has run and requests of one budget share a decode batch's per-layer capacities.
Issue 23 measured it on held-out samples (results/cpu/speckv-quality/round2/NOTES.md).

``draftapprox sweep-kv --learn-profile NAME`` prints a profile from a sweep's rows (each full-KV row records the
global allocation's per-layer counts of its sample); a model's own shares can also be passed as
``SpecKVConfig(layer_profile=(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class ModelShape:
    """What identifies a model's architecture for a profile: its attention layout, not its file name (an
    embedded model loads from a GGUF into a temporary folder; a fine-tune of the same base shares it)."""

    model_type: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int


def model_shape(model) -> ModelShape:
    cfg = model.config.get_text_config()
    return ModelShape(cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                      cfg.num_key_value_heads)


# name -> share of the selected keys (besides the kept tail) per full-attention layer, in layer order; sums to 1.
# SmolLM2-135M-Instruct (30 layers): the global allocation's mean share at budget 64 over 28 samples of seed 102
# (seven task families at 2k and 4k tokens; results/cpu/speckv-quality/round2/profile-seed102), which no tuning
# or held-out sample uses:
#   draftapprox sweep-kv --learn-profile smollm2 --budgets 64 128 --out results/cpu/speckv-quality/round2/profile-seed102
# The shares learned at 128 ("smollm2-b128") scored no better on the tuning split and are kept for re-runs.
LAYER_PROFILES: dict[str, tuple[float, ...]] = {
    "smollm2-b64": (0.0269, 0.0227, 0.0395, 0.0366, 0.0371, 0.0339, 0.0307, 0.0341, 0.0382, 0.0369, 0.0337, 0.0282,
                    0.029, 0.0226, 0.0401, 0.0368, 0.0276, 0.0401, 0.0411, 0.0247, 0.0378, 0.0418, 0.0398, 0.0457,
                    0.0375, 0.021, 0.0313, 0.0263, 0.028, 0.0304),
    "smollm2-b128": (0.0343, 0.0342, 0.0457, 0.0533, 0.0508, 0.0434, 0.037, 0.0411, 0.04, 0.0427, 0.0455, 0.0355,
                     0.0212, 0.0165, 0.0293, 0.0314, 0.02, 0.0355, 0.0295, 0.0191, 0.0319, 0.0348, 0.0321, 0.039,
                     0.0386, 0.0155, 0.0281, 0.0219, 0.0245, 0.0276),
}

# The profile each known architecture gets from ``allocation="profile"`` / ``"auto"``.
MODEL_PROFILES: dict[ModelShape, str] = {
    ModelShape("llama", 30, 576, 9, 3): "smollm2-b64",  # SmolLM2-135M (the embedded Instruct model)
}


def full_attention_layers(model) -> int:
    """How many layers of ``model`` attend to the whole context (a profile's length: sliding-window layers
    keep their window whatever the budget)."""
    cfg = model.config.get_text_config()
    types = getattr(cfg, "layer_types", None)
    return sum(t != "sliding_attention" for t in types) if types else cfg.num_hidden_layers


def check_profile(profile) -> None:
    """A ``layer_profile`` setting: None, a name of :data:`LAYER_PROFILES`, or positive shares (any scale:
    they are normalised). Raises ConfigError."""
    if profile is None:
        return
    if isinstance(profile, str):
        if profile not in LAYER_PROFILES:
            raise ConfigError(f"unknown layer_profile {profile!r}: use one of {', '.join(LAYER_PROFILES)} or a tuple of shares")
        return
    if not isinstance(profile, tuple) or not profile:
        raise ConfigError(f"layer_profile must be a profile name or a tuple of per-layer shares, got {profile!r}")
    for share in profile:
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not share >= 0 or share == float("inf"):
            raise ConfigError(f"layer_profile shares must be finite numbers >= 0, got {share!r}")
    if sum(profile) <= 0:
        raise ConfigError("layer_profile shares must not all be 0")


def layer_shares(allocation: str, profile, model, layers: int) -> tuple[float, ...] | None:
    """The per-layer shares a request on ``model`` (``layers`` full-attention layers) uses, or None for the
    same count in every layer. ``allocation="profile"`` without a profile needs one for the model;
    ``"auto"`` uses it when there is one. Raises ConfigError (before any model work: the plan checks it)."""
    if allocation not in ("profile", "auto"):
        return None
    name = profile if profile is not None else MODEL_PROFILES.get(model_shape(model))
    if name is None:
        if allocation == "auto":
            return None
        raise ConfigError(
            "allocation='profile': no layer profile is known for this model; pass layer_profile=(shares per layer) "
            "(draftapprox sweep-kv --learn-profile learns one) or use allocation='uniform'"
        )
    return profile_shares(name, layers)


def profile_shares(profile, layers: int) -> tuple[float, ...]:
    """A profile (a name of :data:`LAYER_PROFILES` or shares, checked by :func:`check_profile`) as shares
    summing to 1 for ``layers`` full-attention layers; ConfigError when its length is not ``layers``."""
    shares = LAYER_PROFILES[profile] if isinstance(profile, str) else tuple(float(s) for s in profile)
    if len(shares) != layers:
        raise ConfigError(f"the layer profile has {len(shares)} layers; the model has {layers} full-attention layers")
    total = sum(shares)
    return tuple(s / total for s in shares)
