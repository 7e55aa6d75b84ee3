"""`draftapprox` command line: demo | info | compress | eval | bench."""

from __future__ import annotations

import argparse
import logging
import sys

from .engine.config import DEFAULT_MODEL, GENERATION_METHODS

DEFAULT_DRAFT = DEFAULT_MODEL
DEFAULT_TARGET = DEFAULT_MODEL


def _engine_args(parser: argparse.ArgumentParser, draft: str = DEFAULT_DRAFT, target: str = DEFAULT_TARGET) -> None:
    parser.add_argument("--draft", default=draft, help="draft model reference (alias, folder, .gguf, hub id)")
    parser.add_argument("--target", default=target, help="target model reference")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", default=None, choices=["4bit", "8bit"])


def cmd_demo(args: argparse.Namespace) -> int:
    from .demos.tour import run_tour
    from .engine import DraftApproxEngine

    engine = DraftApproxEngine(args.draft, args.target, device=args.device, dtype=args.dtype, quantization=args.quantization)
    run_tour(engine, seed=args.seed, rate=args.rate, budget=args.budget)
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


def _read_text(path: str | None) -> str:
    """The text of the file ``path``, or of stdin when there is none (or it is "-")."""
    if path and path != "-":
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    return sys.stdin.read()


def cmd_compress(args: argparse.Namespace) -> int:
    """SpecPC: compress a context (file or stdin) for a query; prints the compressed text, stats on stderr."""
    from .engine import DraftApproxEngine
    from .engine.config import SpecPCConfig

    context = _read_text(args.file)
    if not context.strip():
        print("draftapprox compress: the context is empty (give a file or pipe text in)", file=sys.stderr)
        return 2
    if args.budget is None and args.rate is None:
        args.rate = 0.1
    overrides = {k: getattr(args, k) for k in ("window_size", "kernel_size", "starting_layer_index", "lookahead_tokens") if getattr(args, k) is not None}
    engine = DraftApproxEngine(args.draft, None, device=args.device, dtype=args.dtype)
    result = engine.compress(
        context,
        args.query,
        budget=args.budget,
        rate=args.rate,
        config=SpecPCConfig().replace(**overrides),
        separator=args.separator,
        whole_sentences=args.whole_sentences,
    )
    print(result.text)
    stats = result.stats()
    print(
        f"[specpc] {stats['original_tokens']} -> {stats['compressed_tokens']} draft tokens "
        f"({100 * result.compression_ratio:.1f}% kept, budget {stats['budget']}, {stats['chunks']} chunk(s)) "
        f"in {stats['seconds']:.2f}s; lookahead {stats['lookahead_text']!r}",
        file=sys.stderr,
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """SpecKV (or a baseline) answers a prompt (argument, file or stdin); answer on stdout, stats on stderr."""
    import json

    from .engine import DraftApproxEngine
    from .engine.config import SpecKVConfig

    prompt = args.prompt if args.prompt is not None else _read_text(args.file)
    if not prompt.strip():
        print("draftapprox generate: the prompt is empty (give it as an argument, with --file, or on stdin)", file=sys.stderr)
        return 2
    overrides = {k: getattr(args, k) for k in ("window_size", "kernel_size", "lookahead_tokens") if getattr(args, k) is not None}
    if args.budget is not None:
        overrides["budget"] = args.budget
    # The draft loads only for the methods that use it (speckv, speckv-pc).
    engine = DraftApproxEngine(args.draft, args.target, device=args.device, dtype=args.dtype, quantization=args.quantization)
    kwargs = dict(
        method=args.method,
        config=SpecKVConfig().replace(**overrides),
        prompt_budget=args.prompt_budget,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop or None,
        chat=args.chat,
    )
    stats = None
    if args.stream:
        for chunk in engine.stream(prompt, **kwargs):
            print(chunk.text, end="", flush=True)
            stats = chunk.stats or stats
        print()
    else:
        result = engine.generate(prompt, **kwargs)
        print(result.text)
        stats = result.stats
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2), file=sys.stderr)
    else:
        kept_mib, full_mib = stats.kv_bytes_kept / 2**20, stats.kv_bytes_full / 2**20
        print(
            f"[{stats.method}] prompt {stats.prompt_tokens} tokens -> KV kept {stats.kv_entries_kept}/{stats.kv_entries_full} "
            f"entries per layer and head ({kept_mib:.2f} of {full_mib:.2f} MiB); {stats.completion_tokens} tokens out; "
            f"draft {stats.draft_seconds:.2f}s, first token {stats.prefill_seconds:.2f}s, decode {stats.decode_seconds:.2f}s, "
            f"total {stats.total_seconds:.2f}s" + (f"; note: {stats.note}" if stats.note else ""),
            file=sys.stderr,
        )
    return 0


def _add_generate_parser(sub) -> None:
    gen = sub.add_parser("generate", help="SpecKV: answer a prompt with the target, its KV cache compressed to a budget")
    gen.add_argument("prompt", nargs="?", default=None, help="the prompt text (or use --file, or stdin)")
    gen.add_argument("-f", "--file", default=None, help="read the prompt from this file ('-': stdin)")
    gen.add_argument("--method", default="speckv", choices=GENERATION_METHODS)
    gen.add_argument("--budget", type=int, default=None, help="KV entries kept per layer and KV head (default 256)")
    gen.add_argument("--prompt-budget", type=int, default=None, help="speckv-pc: draft tokens of the prompt SpecPC keeps")
    gen.add_argument("--window-size", type=int, default=None)
    gen.add_argument("--kernel-size", type=int, default=None)
    gen.add_argument("--lookahead-tokens", type=int, default=None, help="draft answer length (default: --max-new-tokens)")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                     help="wrap the prompt in one user message with the target's chat template")
    gen.add_argument("--stream", action="store_true", help="print tokens as they come")
    gen.add_argument("--json", action="store_true", help="print the stats as JSON on stderr")
    _engine_args(gen)
    gen.set_defaults(func=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="draftapprox", description="Draft-based approximate inference for RAG")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo on the embedded models, offline")
    _engine_args(demo)
    demo.add_argument("--seed", type=int, default=7, help="which generated field report to read")
    demo.add_argument("--rate", type=float, default=0.1, help="SpecPC: fraction of the document's tokens to keep")
    demo.add_argument("--budget", type=int, default=128, help="SpecKV: KV entries kept per layer and head")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="embedded models, cache folder, device and dtype defaults")
    info.set_defaults(func=cmd_info)
    comp = sub.add_parser("compress", help="SpecPC: compress a context (file or stdin) for a query with the draft")
    comp.add_argument("file", nargs="?", default="-", help="text file holding the context ('-' or none: stdin)")
    comp.add_argument("-q", "--query", default=None, help="the question (omit for query-free compression)")
    size = comp.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, default=None, help="draft tokens of the context to keep")
    size.add_argument("--rate", type=float, default=None, help="fraction of the context's tokens to keep, in (0, 1] (default 0.1)")
    comp.add_argument("--separator", default=" … ", help="marks elided text between kept spans")
    comp.add_argument("--whole-sentences", action="store_true", help="grow kept spans to whole sentences")
    comp.add_argument("--window-size", type=int, default=None)
    comp.add_argument("--kernel-size", type=int, default=None)
    comp.add_argument("--starting-layer-index", type=int, default=None)
    comp.add_argument("--lookahead-tokens", type=int, default=None)
    comp.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model reference (alias, folder, .gguf, hub id)")
    comp.add_argument("--device", default="auto")
    comp.add_argument("--dtype", default="auto")
    comp.set_defaults(func=cmd_compress)
    _add_generate_parser(sub)
    from .evals.cli import add_subcommands as add_eval_subcommands

    add_eval_subcommands(sub)  # eval | bench
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
