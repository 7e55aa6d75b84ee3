"""The bench on a GPU in one command: ``draftapprox bench --grid large-gpu`` (or ``python -m
draftapprox_integrations bench --grid large-gpu`` where nothing is installed).

Random-weight models of published shapes (a Llama-3.2-1B-shaped draft, a Llama-3.1-8B-shaped target, bf16)
are built in GPU memory (an 8B is never written to disk), with the tokenizer of a folder you name. Random
weights measure cost only. Sections, each timed with the device synchronised before every clock, each after
its shapes were warmed up, each written as JSON lines as it finishes and catching its own errors:

1. ``correctness``: the graphed decode gives the eager decode's greedy tokens (the first thing to check on a
   new path), and a decode step makes no host sync (``torch.cuda.set_sync_debug_mode("error")``);
2. ``decode``: per-token decode of the engine (full KV) against a plain transformers step and a CUDA-graph
   step of the same model, measured in the same run, alternating;
3. ``latency``: TTFT (synced wall clock and the stats' own) and per-token decode of full KV and SpecKV at each
   length, and the answer length at which SpecKV's end-to-end time equals full KV's;
4. ``throughput``: 1 / 4 / 8 requests at 8k one by one against one batch;
5. ``memory_bound``: 16 requests of 32k decoding 256 tokens together, SpecKV against full KV (decode alone:
   the difference between a 1-token and a 256-token batch);
6. ``specpc``: SpecPC at 32k, rate 0.1: compression time and the target's TTFT with and without it.

``--small`` runs the same sections on toy shapes and short prompts: a dry run in seconds on any machine.
"""

from __future__ import annotations

import gc
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.timing import synced_clock

GRID = dict(draft="llama-3.2-1b", target="llama-3.1-8b", lengths=(8192, 16384, 32768), budget=1024, new=64,
            batches=(1, 4, 8), batch_new=128, many_rows=16, many_new=256, specpc_rate=0.1, seconds=420)
SMALL = dict(draft="llama-toy-draft", target="llama-toy", lengths=(1024, 2048), budget=32, new=12,
             batches=(1, 3), batch_new=12, many_rows=3, many_new=12, specpc_rate=0.25, seconds=240)


@dataclass
class GpuBench:
    """One run: the models, the engine and where the records go."""

    tokenizer_path: str | None
    out: Path
    small: bool = False
    seconds: float | None = None
    dtype: torch.dtype = torch.bfloat16

    def __post_init__(self) -> None:
        self.grid = dict(SMALL if self.small else GRID)
        self.seconds = self.seconds or self.grid["seconds"]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type != "cuda":
            self.dtype = torch.float32
        self.out.mkdir(parents=True, exist_ok=True)
        self._log = open(self.out / "gpu-bench.jsonl", "a", encoding="utf-8")
        self._started = time.perf_counter()
        self.records: list[dict[str, Any]] = []

    # -- plumbing -------------------------------------------------------------------------------------

    def emit(self, **record: Any) -> None:
        record["t"] = round(time.perf_counter() - self._started, 1)
        self.records.append(record)
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        print(json.dumps(record), flush=True)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self._started)

    def clock(self) -> float:
        return synced_clock(self.device)

    def peak_start(self) -> int:
        if self.device.type != "cuda":
            return 0
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak_gib(self, base: int) -> float | None:
        if self.device.type != "cuda":
            return None
        return round((torch.cuda.max_memory_allocated(self.device) - base) / 2**30, 3)

    def section(self, name: str, fn, needs: float = 30.0) -> None:
        if self.left() < needs:
            self.emit(section=name, skipped=f"under {needs:.0f} s left")
            return
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # a failing section is a finding; the others still run
            self.emit(section=name, error=f"{type(exc).__name__}: {exc}"[:800], traceback=traceback.format_exc()[-2000:])
        self.emit(section=name, done=True, seconds=round(time.perf_counter() - started, 1))
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- models and prompts ---------------------------------------------------------------------------

    def build(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..engine import DraftApproxEngine
        from ..engine.loading import load_tokenizer
        from .random_models import SMOLLM2, fill_random, random_config

        started = self.clock()
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path) if self.tokenizer_path else load_tokenizer(SMOLLM2)
        positions = max(self.grid["lengths"]) + 2048
        models = []
        for seed, shape in enumerate((self.grid["draft"], self.grid["target"]), start=1):
            config = random_config(shape, self.tokenizer, positions)
            with torch.device(self.device):
                model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
            fill_random(model, seed)
            models.append(model)
        self.draft, self.target = models

        def engine(**options):
            return DraftApproxEngine(self.draft, self.target, draft_tokenizer=self.tokenizer,
                                     target_tokenizer=self.tokenizer, device=self.device, **options).load()

        self.engine = engine(max_batch_size=max(self.grid["many_rows"], max(self.grid["batches"])))
        self.eager = engine(cuda_graphs=False)  # the same weights: two engines over one copy
        weights = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
        self.emit(section="build", device=str(self.device), gpu=torch.cuda.get_device_name(0) if self.device.type == "cuda" else None,
                  torch=torch.__version__, draft=self.grid["draft"], target=self.grid["target"], dtype=str(self.dtype),
                  weights_gib=round(weights / 2**30, 2), seconds=round(self.clock() - started, 1))

    def prompts(self, n: int, length: int) -> list[str]:
        from .tasks import make_sample

        return [make_sample("niah_single", length, self.tokenizer, seed=7, index=i).prompt() for i in range(n)]

    def kv(self, method: str, lookahead: int | None = None) -> dict[str, Any]:
        from ..engine import SpecKVConfig

        if method == "full":
            return dict(method="full")
        return dict(method=method, config=SpecKVConfig(budget=self.grid["budget"], lookahead_tokens=lookahead))

    def warm(self) -> None:
        """Every length and method once, and the batch sizes at the first length: the timed calls are warm."""
        started = self.clock()
        warm = self.engine.warmup(self.grid["lengths"], methods=("full", "speckv", "snapkv"), budget=self.grid["budget"])
        self.engine.warmup(self.grid["lengths"][:1], batch_sizes=self.grid["batches"], methods=("full", "speckv"),
                           budget=self.grid["budget"])
        self.emit(section="warmup", runs=len(warm["runs"]), seconds=round(self.clock() - started, 1))

    # -- sections -------------------------------------------------------------------------------------

    def correctness(self) -> None:
        prompts = self.prompts(3, self.grid["lengths"][0] // 2)
        for method in ("full", "speckv"):
            options = dict(self.kv(method, lookahead=8), max_new_tokens=24)
            graphed = [r.token_ids for r in self.engine.generate_batch(prompts, **options)]
            eager = [r.token_ids for r in self.eager.generate_batch(prompts, **options)]
            self.emit(section="correctness", method=method, rows=len(prompts),
                      graphed_equals_eager=sum(a == b for a, b in zip(graphed, eager)))
        self.emit(section="correctness", host_syncs_in_a_step=self._syncs_in_a_step())

    def _syncs_in_a_step(self) -> str:
        """Run one decode step of a 3-row batch (graphed when on CUDA) with sync debugging set to error."""
        from ..engine.batching import DecodeBatch, Joining
        from ..engine.decoding import new_cache
        from ..engine.graphs import graphs_for
        from ..engine.sampling import SamplingRule

        if self.device.type != "cuda":
            return "not checked (no CUDA)"
        batch = None
        with torch.no_grad(), self.engine.lock:
            for r, rule in enumerate([SamplingRule(), SamplingRule.of(0.8, 0.9, seed=1), SamplingRule()]):
                ids = torch.randint(100, 1000, (1, 300 + 50 * r), device=self.device)
                cache = new_cache(self.target)
                self.target(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
                batch = batch or DecodeBatch.for_cache(self.target, cache, slots=3, graphs=graphs_for(self.device))
                batch.add(r, Joining(cache, 11, ids.shape[1], rule))
            for _ in range(6):  # past the eager steps: the graph is captured
                batch.step()
            torch.cuda.set_sync_debug_mode("error")
            try:
                batch.graphs.run(batch, 3, True, True)
                batch.forward_and_sample(3, True, True)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return f"0 (graphed and eager step under set_sync_debug_mode('error'); {batch.graphs.captures} graphs captured)"

    def decode(self) -> None:
        """Full-KV decode per token at the first length: the engine, a plain eager step, a graphed step."""
        length = self.grid["lengths"][0]
        prompt = self.prompts(1, length)[0]
        steps = 32
        for round_ in (1, 2):  # the first round warms every path; the second is the figure
            eager_ms = self._plain_step_ms(length, steps, graphed=False)
            graph_ms = self._plain_step_ms(length, steps, graphed=True) if self.device.type == "cuda" else None
            result = self.engine.generate(prompt, method="full", max_new_tokens=steps + 1)
            engine_ms = 1000 * result.stats.decode_seconds / max(result.stats.completion_tokens - 1, 1)
            self.emit(section="decode", round=round_, length=length, engine_full_ms=round(engine_ms, 2),
                      plain_eager_ms=round(eager_ms, 2), plain_graphed_ms=None if graph_ms is None else round(graph_ms, 2),
                      engine_over_graphed=None if not graph_ms else round(engine_ms / graph_ms, 2))

    @torch.no_grad()
    def _plain_step_ms(self, length: int, steps: int, *, graphed: bool) -> float:
        """A plain transformers decode step of the target after a ``length``-token prefill: eager over a dynamic
        cache, or one step captured in a CUDA graph over a ``StaticCache`` and replayed."""
        from transformers import DynamicCache, StaticCache

        model = self.target
        ids = torch.randint(100, 1000, (1, length), device=self.device)
        with self.engine.lock:
            cache = StaticCache(config=model.config, max_cache_len=length + steps + 8) if graphed else DynamicCache(config=model.config)
            token = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
            position = torch.tensor([[length]], device=self.device)

            def step():
                nxt = model(input_ids=token, position_ids=position, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
                token.copy_(nxt)
                position.add_(1)

            if graphed:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                run = graph.replay
            else:
                run = step
            for _ in range(3):
                run()
            started = self.clock()
            for _ in range(steps):
                run()
            return 1000 * (self.clock() - started) / steps

    def latency(self) -> None:
        new = self.grid["new"]
        for length in self.grid["lengths"]:
            prompt = self.prompts(1, length)[0]
            rows = {}
            for method in ("full", "speckv"):
                if self.left() < 40:
                    self.emit(section="latency", skipped=f"{method} at {length}")
                    continue
                options = self.kv(method, lookahead=64)
                started = self.clock()
                stream = self.engine.stream(prompt, max_new_tokens=new, **options)
                next(stream)
                ttft = self.clock() - started
                stats = [c for c in stream if c.stats is not None][-1].stats
                base = self.peak_start()
                result = self.engine.generate(prompt, max_new_tokens=new, **options)
                s = result.stats
                rows[method] = dict(ttft=ttft, decode_ms=1000 * s.decode_seconds / max(s.completion_tokens - 1, 1))
                self.emit(section="latency", length=length, method=method, ttft_synced=round(ttft, 3),
                          ttft_stats=round(stats.prefill_seconds, 3), stats_vs_wall=round(stats.prefill_seconds / ttft, 3),
                          draft_seconds=round(s.draft_seconds, 3), decode_ms_per_token=round(rows[method]["decode_ms"], 2),
                          total_seconds=round(s.total_seconds, 3), new=s.completion_tokens,
                          kv_kept_mib=round(s.kv_bytes_kept / 2**20, 1), kv_full_mib=round(s.kv_bytes_full / 2**20, 1),
                          kv_peak_mib=round(s.kv_bytes_peak / 2**20, 1), gpu_peak_over_weights_gib=self.peak_gib(base))
            if len(rows) == 2:
                full, spec = rows["full"], rows["speckv"]
                gain = full["decode_ms"] - spec["decode_ms"]
                even = (spec["ttft"] - full["ttft"]) * 1000 / gain if gain > 0 else None
                self.emit(section="latency", length=length, ttft_speckv_over_full=round(spec["ttft"] / full["ttft"], 2),
                          break_even_tokens=None if even is None else round(even))

    def throughput(self) -> None:
        length = self.grid["lengths"][0]
        prompts = self.prompts(max(self.grid["batches"]), length)
        for method in ("speckv", "full"):
            for size in self.grid["batches"]:
                if self.left() < 60:
                    self.emit(section="throughput", skipped=f"{method} x{size}")
                    continue
                options = dict(self.kv(method, lookahead=32), max_new_tokens=self.grid["batch_new"])
                started = self.clock()
                one = [self.engine.generate(p, **options) for p in prompts[:size]]
                sequential = self.clock() - started
                base = self.peak_start()
                started = self.clock()
                batch = self.engine.generate_batch(prompts[:size], **options)
                batched = self.clock() - started
                tokens = sum(r.stats.completion_tokens for r in batch)
                self.emit(section="throughput", method=method, length=length, rows=size, new_each=self.grid["batch_new"],
                          sequential_s=round(sequential, 2), batch_s=round(batched, 2), speedup=round(sequential / batched, 2),
                          tok_s_sequential=round(sum(r.stats.completion_tokens for r in one) / sequential, 1),
                          tok_s_batch=round(tokens / batched, 1),
                          same_answers=sum(a.token_ids == b.token_ids for a, b in zip(one, batch)),
                          gpu_peak_over_weights_gib=self.peak_gib(base))

    def memory_bound(self) -> None:
        length, rows, new = self.grid["lengths"][-1], self.grid["many_rows"], self.grid["many_new"]
        prompts = self.prompts(rows, length)
        for method in ("speckv", "full"):
            if self.left() < 120:
                self.emit(section="memory_bound", skipped=method)
                continue
            options = self.kv(method, lookahead=32)
            started = self.clock()
            self.engine.generate_batch(prompts, max_new_tokens=1, **options)
            first = self.clock() - started
            base = self.peak_start()
            started = self.clock()
            out = self.engine.generate_batch(prompts, max_new_tokens=new, **options)
            wall = self.clock() - started
            tokens = sum(r.stats.completion_tokens for r in out)
            self.emit(section="memory_bound", method=method, rows=rows, length=length, new_each=new, wall=round(wall, 2),
                      first_token_wall=round(first, 2),
                      decode_tok_s=round((tokens - rows) / (wall - first), 1) if wall > first else None,
                      kv_per_request_mib=round(max(r.stats.kv_bytes_kept for r in out) / 2**20, 1),
                      gpu_peak_over_weights_gib=self.peak_gib(base))

    def specpc(self) -> None:
        from .tasks import make_sample

        length, rate = self.grid["lengths"][-1], self.grid["specpc_rate"]
        sample = make_sample("niah_single", length, self.tokenizer, seed=7, index=0)
        for round_ in (1, 2):
            started = self.clock()
            # SpecPC's default first scored layer (12) is past a toy draft's last.
            layer = min(12, self.draft.config.num_hidden_layers // 2)
            cut = self.engine.compress(sample.context, sample.question, rate=rate, starting_layer_index=layer)
            compress = self.clock() - started
            started = self.clock()
            self.engine.generate(sample.prompt(), method="full", max_new_tokens=1)
            full = self.clock() - started
            started = self.clock()
            self.engine.generate(sample.prompt(cut.text), method="full", max_new_tokens=1)
            cut_ttft = self.clock() - started
            self.emit(section="specpc", round=round_, length=length, rate=rate, kept=cut.compressed_tokens,
                      of=cut.original_tokens, compress_s=round(compress, 3), full_ttft=round(full, 3),
                      compress_plus_ttft=round(compress + cut_ttft, 3), ttft_speedup=round(full / (compress + cut_ttft), 2))

    def run(self) -> list[dict[str, Any]]:
        self.section("build", self.build, needs=0)
        if not hasattr(self, "engine"):
            return self.records
        self.section("warmup", self.warm)
        self.section("correctness", self.correctness)
        self.section("decode", self.decode)
        self.section("latency", self.latency)
        self.section("throughput", self.throughput)
        self.section("specpc", self.specpc)
        self.section("memory_bound", self.memory_bound, needs=120)  # last: the largest, skipped when late
        self.emit(section="end", seconds=round(time.perf_counter() - self._started, 1))
        return self.records
