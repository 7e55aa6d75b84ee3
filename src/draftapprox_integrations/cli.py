"""`draftapprox` command line: demo | info | compress | generate | eval | bench."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback

from . import __version__
from .engine.config import DEFAULT_MODEL, GENERATION_METHODS
from .engine.errors import ConfigError, ContextLengthError, DraftApproxError, InvalidInputError, MissingExtraError
from .engine.prompts import check_text

EXIT_OK = 0
EXIT_FAILED_ROWS = 1  # eval: some rows failed (recorded in the results); also Python's own status for a crash
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_ENGINE = 4
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = f"""exit status:
  {EXIT_OK}    success
  {EXIT_FAILED_ROWS}    eval: some rows of the grid failed (they are recorded in the results);
       any command: an unexpected internal error (a bug; printed with its traceback)
  {EXIT_USAGE}    usage error: a bad option or option value (one argparse or the engine
       refuses), or a missing optional extra such as [evals]
  {EXIT_INPUT}    input error: the file or stdin is missing, a directory, not UTF-8,
       binary or empty; the text is not valid Unicode or too long for the model
  {EXIT_ENGINE}    model or engine error: any other error of the package while running
       (a model reference that does not resolve, an incompatible pair, ...)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
Errors are one line on stderr; -v/--verbose also prints the traceback."""


class InputError(Exception):
    """The command's input text cannot be used (exit status 3)."""


def exit_status(exc: BaseException) -> int:
    """The exit status for an error raised while a command runs."""
    if isinstance(exc, (InputError, InvalidInputError, ContextLengthError)):
        return EXIT_INPUT
    if isinstance(exc, (ConfigError, MissingExtraError)):
        return EXIT_USAGE
    return EXIT_ENGINE


DEFAULT_DRAFT = DEFAULT_MODEL
DEFAULT_TARGET = DEFAULT_MODEL


def _device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32 (default: %(default)s: bf16 on GPUs and CPUs with native bf16, else float32)")


def _engine_args(parser: argparse.ArgumentParser, draft: str = DEFAULT_DRAFT, target: str = DEFAULT_TARGET) -> None:
    parser.add_argument("--draft", default=draft, help="draft model reference: alias, folder, .gguf or hub id (default: %(default)s)")
    parser.add_argument("--target", default=target, help="target model reference (default: %(default)s)")
    _device_args(parser)
    parser.add_argument("--quantization", default=None, choices=["4bit", "8bit"], help="load the target quantized with bitsandbytes: 4bit or 8bit (default: none)")


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


def read_input(path: str | None) -> str:
    """The text of the file ``path``, or of stdin when there is none (or it is "-"); InputError when it is not
    readable UTF-8 text or is empty."""
    where = "stdin" if not path or path == "-" else repr(path)
    try:
        if path and path != "-":
            with open(path, "rb") as fh:
                data = fh.read()
        elif sys.stdin is None:
            raise InputError("no input: stdin is closed (give a file)")
        else:
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    except OSError as exc:
        raise InputError(f"cannot read {where}: {exc.strerror or exc}") from exc
    if isinstance(data, bytes):
        if b"\0" in data:
            raise InputError(f"{where} is binary (it holds NUL bytes), not text")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-encode it as UTF-8"
            ) from None
    check_text(data, where)
    if not data.strip():
        raise InputError(f"{where} is empty: give a file that holds text, or pipe text in")
    return data


def _check_args_text(*named: tuple[str, str | list[str] | None]) -> None:
    """Text arguments must be valid Unicode (arguments that are not UTF-8 arrive with lone surrogates)."""
    for label, values in named:
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                check_text(value, label)


def cmd_compress(args: argparse.Namespace) -> int:
    """SpecPC: compress a context (file or stdin) for a query; prints the compressed text, stats on stderr."""
    from .engine import DraftApproxEngine
    from .engine.config import SpecPCConfig

    _check_args_text(("--query", args.query), ("--separator", args.separator))
    context = read_input(args.file)
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
        progress=args.progress,
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

    _check_args_text(("the prompt", args.prompt), ("--stop", args.stop))
    prompt = args.prompt if args.prompt is not None else read_input(args.file)
    if not prompt.strip():
        raise InputError("the prompt is empty (give it as an argument, with --file, or on stdin)")
    fields = ("window_size", "kernel_size", "lookahead_tokens", "keep_last", "allocation", "score_window")
    overrides = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    if args.budget is not None:
        overrides["budget"] = args.budget
    # The draft loads only for the methods that use it (speckv, speckv-pc).
    engine = DraftApproxEngine(args.draft, args.target, device=args.device, dtype=args.dtype, quantization=args.quantization)
    kwargs = dict(
        method=args.method,
        rate=args.rate,
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


def _add_generate_parser(sub, common: list) -> None:
    gen = sub.add_parser("generate", parents=common, help="SpecKV: answer a prompt with the target, its KV cache compressed to a budget")
    gen.add_argument("prompt", nargs="?", default=None, help="the prompt text (or use --file, or stdin)")
    gen.add_argument("-f", "--file", default=None, help="read the prompt from this UTF-8 file ('-': stdin)")
    gen.add_argument("--method", default="speckv", choices=GENERATION_METHODS,
                     help="speckv (draft lookahead + SnapKV), snapkv, streamingllm, full (no compression) or speckv-pc "
                          "(SpecPC cuts the prompt first; needs --prompt-budget) (default: %(default)s)")
    size = gen.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, default=None, help="KV entries kept per layer and KV head (default 256)")
    size.add_argument("--rate", type=float, default=None,
                      help="instead of --budget: the fraction of the prompt's tokens kept per layer and KV head, in (0, 1] "
                           "(never fewer than --window-size; speckv-pc: of the prompt SpecPC leaves)")
    gen.add_argument("--prompt-budget", type=int, default=None, help="speckv-pc: draft tokens of the prompt SpecPC keeps")
    gen.add_argument("--window-size", type=int, default=None, help="last prompt tokens whose queries observe the prompt (default 32)")
    gen.add_argument("--keep-last", type=int, default=None,
                     help="last prompt tokens always kept when a lookahead scores (default 8; SnapKV keeps its window)")
    gen.add_argument("--allocation", choices=["uniform", "global", "profile", "auto"], default=None,
                     help="entries per layer at the same total: the same in each, split per request by the scores "
                          "(global), by the model's learned layer profile (profile), or the profile when the model "
                          "has one (auto)")
    gen.add_argument("--score-window", action=argparse.BooleanOptionalAction, default=None,
                     help="let the window's queries score the keys beside the lookahead's (the paper; default: off)")
    gen.add_argument("--kernel-size", type=int, default=None, help="odd width of the pooling over key scores (default 15)")
    gen.add_argument("--lookahead-tokens", type=int, default=None, help="draft answer length (default: --max-new-tokens)")
    gen.add_argument("--max-new-tokens", type=int, default=128, help="most tokens to generate (default: %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: none)")
    gen.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    style = gen.add_mutually_exclusive_group()
    style.add_argument("--raw", dest="chat", action="store_const", const=False, default=None,
                       help="send the prompt as plain text, without the target's chat template (by default a target "
                            "with a chat template reads the prompt as one user message; a base model reads plain text)")
    style.add_argument("--chat", dest="chat", action="store_const", const=True,
                       help="wrap the prompt in one user message even for a target without a chat template (a transcript)")
    gen.add_argument("--stream", action="store_true", help="print tokens as they come")
    gen.add_argument("--json", action="store_true", help="print the stats as JSON on stderr")
    _engine_args(gen)
    gen.set_defaults(func=cmd_generate)


def _add_compress_parser(sub, common: list) -> None:
    comp = sub.add_parser("compress", parents=common, help="SpecPC: compress a context (file or stdin) for a query with the draft")
    comp.add_argument("file", nargs="?", default="-", help="UTF-8 text file holding the context ('-' or none: stdin)")
    comp.add_argument("-q", "--query", default=None, help="the question (omit for query-free compression)")
    size = comp.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, default=None, help="draft tokens of the context to keep")
    size.add_argument("--rate", type=float, default=None, help="fraction of the context's tokens to keep, in (0, 1] (default 0.1)")
    comp.add_argument("--separator", default=" … ", help="marks elided text between kept spans (default: %(default)r)")
    comp.add_argument("--whole-sentences", action="store_true", help="grow kept spans to whole sentences")
    comp.add_argument("--window-size", type=int, default=None, help="last prompt tokens whose queries score the context (default 64)")
    comp.add_argument("--kernel-size", type=int, default=None, help="width of the pooling over token scores (default 8)")
    comp.add_argument("--starting-layer-index", type=int, default=None, help="draft layers below this one are not scored (default 12)")
    comp.add_argument("--lookahead-tokens", type=int, default=None, help="tokens the draft writes as its answer; their attention scores too (default 1)")
    comp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                      help="show a progress bar on stderr while a long input is scored in chunks (default: on)")
    comp.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model reference: alias, folder, .gguf or hub id (default: %(default)s)")
    _device_args(comp)
    comp.set_defaults(func=cmd_compress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="draftapprox", description="Draft-based approximate inference for RAG",
        epilog=EXIT_STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (and show loading bars); print the traceback of an error")
    # -v also after the subcommand; SUPPRESS leaves the top-level value alone when it is not given there.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log progress (and show loading bars); print the traceback of an error")
    common = [verbose]
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=common, help="run the demo on the embedded models, offline")
    _engine_args(demo)
    demo.add_argument("--seed", type=int, default=7, help="which generated field report to read (default: %(default)s)")
    demo.add_argument("--rate", type=float, default=0.1, help="SpecPC: fraction of the document's tokens to keep (default: %(default)s)")
    demo.add_argument("--budget", type=int, default=128, help="SpecKV: KV entries kept per layer and head (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", parents=common, help="embedded models, cache folder, device and dtype defaults")
    info.set_defaults(func=cmd_info)
    _add_compress_parser(sub, common)
    _add_generate_parser(sub, common)
    from .evals.cli import add_subcommands as add_eval_subcommands

    add_eval_subcommands(sub, parents=common)  # eval | bench
    return parser


@contextlib.contextmanager
def _loading_bars(shown: bool):
    """stderr is for the stats line and errors: transformers' weight-loading bars show only with -v."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not shown:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (see EXIT_STATUS_HELP). Errors are one line on stderr."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _loading_bars(args.verbose):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"draftapprox {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InputError, DraftApproxError) as exc:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"draftapprox {args.command}: error: {message}", file=sys.stderr)
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
