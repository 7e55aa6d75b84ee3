"""`draftapprox` command line: demo | info."""

from __future__ import annotations

import argparse
import logging
import sys
import time

DEFAULT_DRAFT = "smollm2-135m-instruct"
DEFAULT_TARGET = "smollm2-135m-instruct"


def _engine_args(parser: argparse.ArgumentParser, draft: str = DEFAULT_DRAFT, target: str = DEFAULT_TARGET) -> None:
    parser.add_argument("--draft", default=draft, help="draft model reference (alias, folder, .gguf, hub id)")
    parser.add_argument("--target", default=target, help="target model reference")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", default=None, choices=["4bit", "8bit"])


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine import DraftApproxEngine

    engine = DraftApproxEngine(args.draft, args.target, device=args.device, dtype=args.dtype, quantization=args.quantization)
    print(f"engine: {engine}")
    t0 = time.perf_counter()
    engine.load()
    info = engine.describe()
    print(f"loaded in {time.perf_counter() - t0:.1f}s  (draft {info.get('draft_load_seconds')}s, target {info.get('target_load_seconds')}s)")
    target = engine.target
    prompt = "Name the capital of France in one word."
    if target.has_chat_template:
        text = target.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = f"Question: {prompt}\nAnswer:"
    ids = target.tokenizer(text, return_tensors="pt").to(target.input_device)
    t0 = time.perf_counter()
    out = target.model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = target.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"\nQ: {prompt}\nA ({args.target}, {time.perf_counter() - t0:.2f}s): {answer.strip()}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .engine import EMBEDDED_MODELS, cache_dir
    from .engine.loading import cpu_has_native_bf16, resolve_device, resolve_dtype

    dev = resolve_device("auto")
    print(f"device auto -> {dev}; dtype auto -> {resolve_dtype('auto', dev)}; native CPU bf16: {cpu_has_native_bf16()}")
    print(f"cache folder: {cache_dir()}")
    for alias, spec in EMBEDDED_MODELS.items():
        print(f"  {alias}: {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="draftapprox", description="Draft-based approximate inference for RAG")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo on the embedded models, offline")
    _engine_args(demo)
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="embedded models, cache folder, device and dtype defaults")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
