"""The decode step of a batch captured once in a CUDA graph and replayed: one launch per step.

A decode step launches about as many kernels as the model has operations (some 1,500 for an 8B Llama), each
costing the host a few microseconds: on a GPU that makes an eager step launch-bound, far above what reading
the weights and the cache costs. A compressed cache has a fixed size per layer and every buffer of a
:class:`~draftapprox_integrations.engine.batching.DecodeBatch` (slots, lengths, tokens, positions, sampling
rules, token bitmasks) stays at one address, so the whole step (forward, masks, sampling, the in-place state update) is
captured once per shape and replayed: the shape is (rows rounded up to a power of two, the store's per-layer capacities,
which sampling path, masked or not), captured after its first few eager steps. Rows beyond the live ones are dead slots: their length stays 0 and nothing reads them.

Capturing runs the step twice first (kernels and allocator warm), on the batch's real buffers: the writes
land where the next real step writes the same values, and the small state tensors are restored, so a
capture leaves the batch as it found it. CUDA only; :func:`graphs_for` says whether a device gets them.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

# Steps of a shape run eagerly before it is captured: a capture costs about three steps.
EAGER_STEPS = 3


def graphs_for(device, enabled: bool = True) -> GraphedSteps | None:
    """A graph cache for a batch on ``device``, or None (eager steps) off CUDA or when ``enabled`` is False."""
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return None
    return GraphedSteps()


def _rows_bucket(rows: int, slots: int) -> int:
    """Rows rounded up to a power of two, within the store's slots: few shapes, few captures."""
    width = 1
    while width < rows:
        width *= 2
    return min(width, slots)


class GraphedSteps:
    """The captured steps of one batch, by shape. ``forget()`` drops them when the batch's buffers change."""

    def __init__(self) -> None:
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self._seen: dict[tuple, int] = {}
        self._pool = None
        self.captures = 0  # how many shapes were captured (a count for tests and benchmarks)

    def forget(self) -> None:
        self._graphs.clear()
        self._seen.clear()

    def run(self, batch, rows: int, randomized: bool, nucleus: bool, constrained: bool = False) -> None:
        width = _rows_bucket(rows, batch.store.slots)
        key = (width, batch.store.slots, batch.store.capacities, randomized, nucleus, constrained)
        graph = self._graphs.get(key)
        if graph is None:
            self._seen[key] = self._seen.get(key, 0) + 1
            if self._seen[key] <= EAGER_STEPS:  # a short decode (a lookahead of a few tokens) never pays a capture
                batch.forward_and_sample(rows, randomized, nucleus, constrained)
                return
            graph = self._graphs[key] = self._capture(batch, width, randomized, nucleus, constrained)
        graph.replay()

    def _capture(self, batch, width: int, randomized: bool, nucleus: bool, constrained: bool) -> torch.cuda.CUDAGraph:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        state = [batch.tokens, batch.positions, batch.steps, batch.store.lengths]
        saved = [t.clone() for t in state]
        side = torch.cuda.Stream(device=batch.device)
        side.wait_stream(torch.cuda.current_stream(batch.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                batch.forward_and_sample(width, randomized, nucleus, constrained)
                for t, s in zip(state, saved):
                    t.copy_(s)
        torch.cuda.current_stream(batch.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            batch.forward_and_sample(width, randomized, nucleus, constrained)
        for t, s in zip(state, saved):  # capturing ran nothing, but be explicit: the batch is as it was
            t.copy_(s)
        self.captures += 1
        logger.debug("captured a decode step: %d rows, capacity %d", width, batch.store.capacity)
        return graph
