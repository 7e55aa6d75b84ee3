"""Streams hold the engine lock only while a chunk is computed (FINDINGS BUG-6), and cancelled calls stop.

Each test would hang or fail on a lock held between chunks; the hangs are bounded with timeouts so a
regression fails instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time

import pytest

from draftapprox_integrations._shared.threads import aiter_in_thread, run_in_thread
from draftapprox_integrations.engine import DraftApproxEngine, SpecKVConfig
from draftapprox_integrations.engine.locking import FairRLock

PROMPT = (
    "Alice keeps the red key in the kitchen drawer. Bob hides the blue key under the mat. "
    "The green key sits on the shelf next to the old clock. Which key is under the mat?"
)
OPTIONS = dict(method="speckv", config=SpecKVConfig(budget=16, window_size=4), max_new_tokens=8)


@pytest.fixture
def engine(tiny_model_factory):
    """A fresh engine (and lock) per test, so one test's stuck lock cannot hang the next; the weights are
    loaded once and shared through the engine's model registry."""
    folder = str(tiny_model_factory("llama"))
    return DraftApproxEngine(folder, folder, device="cpu", dtype="float32").load()


def _in_daemon_thread(fn, timeout: float = 60.0):
    """fn() in a daemon thread; fails (instead of hanging the suite) if it does not finish in time."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: deadlock"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _text(chunks) -> str:
    return "".join(c.text for c in chunks)


def test_a_stream_read_from_two_threads_leaves_the_engine_free(engine):
    expected = engine.generate(PROMPT, **OPTIONS).text
    stream = engine.stream(PROMPT, **OPTIONS)
    first = _in_daemon_thread(lambda: next(stream))  # thread A
    second = _in_daemon_thread(lambda: next(stream))  # thread B
    rest = _in_daemon_thread(lambda: list(stream))
    assert _text([first, second, *rest]) == expected
    assert engine.lock.acquire(timeout=5)
    engine.lock.release()


def test_a_paused_stream_blocks_no_other_thread(engine):
    expected = engine.generate(PROMPT, **OPTIONS).text
    stream = engine.stream(PROMPT, **OPTIONS)
    first = _in_daemon_thread(lambda: next(stream))  # paused with the generation half done
    other = _in_daemon_thread(lambda: engine.generate(PROMPT, method="snapkv", budget=40, max_new_tokens=4), 60)
    assert other.stats.completion_tokens == 4
    assert _text([first, *_in_daemon_thread(lambda: list(stream))]) == expected


def test_two_streams_on_one_event_loop_do_not_deadlock(engine):
    expected = engine.generate(PROMPT, **OPTIONS).text

    async def main():
        it1 = engine.stream(PROMPT, **OPTIONS)
        first = await asyncio.to_thread(next, it1)  # a worker thread took the first chunk
        it2 = engine.stream(PROMPT, **OPTIONS)  # built on the loop thread while it1 is suspended
        second_text = _text(list(it2))
        return _text([first, *it1]), second_text

    first_text, second_text = _in_daemon_thread(lambda: asyncio.run(main()), 120)
    assert first_text == second_text == expected


def test_an_abandoned_stream_releases_the_engine(engine):
    stream = engine.stream(PROMPT, **OPTIONS)
    next(stream)
    del stream
    assert engine.lock.acquire(timeout=5)
    engine.lock.release()


def _forwards_by_thread(engine):
    """Count target forwards per thread (a hook on the model)."""
    counts: dict[int, int] = {}

    def hook(module, args, output):
        ident = threading.get_ident()
        counts[ident] = counts.get(ident, 0) + 1

    return counts, engine.target.model.register_forward_hook(hook)


def test_a_cancelled_async_call_stops_before_its_next_step(engine):
    long = dict(method="snapkv", budget=40, max_new_tokens=600)
    assert engine.generate(PROMPT, **long).stats.completion_tokens == 600  # it would run 600 steps
    counts, handle = _forwards_by_thread(engine)
    try:

        async def main():
            task = asyncio.create_task(run_in_thread(engine.generate, PROMPT, **long))
            while not counts:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled_thread, at_cancel = next(iter(counts.items()))
            await asyncio.sleep(0.3)  # ~100 more decode steps of the tiny model, had it gone on
            # Read before the next call: the executor may run that call on the cancelled call's thread.
            extra = counts[cancelled_thread] - at_cancel
            nxt = await run_in_thread(engine.generate, PROMPT, method="snapkv", budget=40, max_new_tokens=2)
            return extra, nxt, None

        extra_steps, nxt, _ = _in_daemon_thread(lambda: asyncio.run(main()), 120)
    finally:
        handle.remove()
    assert nxt.stats.completion_tokens == 2
    assert extra_steps <= 2, f"the cancelled call ran {extra_steps} more forwards"


def test_an_async_stream_whose_reader_stops_ends_the_generation(engine):
    long = dict(method="snapkv", budget=40, max_new_tokens=600)
    counts, handle = _forwards_by_thread(engine)
    try:

        async def main():
            agen = aiter_in_thread(lambda: engine.stream(PROMPT, **long))
            async for _ in agen:
                break
            await agen.aclose()
            await asyncio.sleep(0.5)
            return sum(counts.values())

        total = _in_daemon_thread(lambda: asyncio.run(main()), 120)
    finally:
        handle.remove()
    assert total < 50, f"{total} forwards ran for a stream whose reader left after one chunk"


# -- the lock itself ---------------------------------------------------------------------------------


def test_fair_lock_is_reentrant_and_owned():
    lock = FairRLock()
    with lock:
        with lock:
            assert lock.locked()
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    lock.acquire()
    other = cf.ThreadPoolExecutor(1)
    try:
        assert other.submit(lock.acquire, True, 0.05).result() is False  # timed out: held by this thread
        with pytest.raises(RuntimeError):
            other.submit(lock.release).result()
    finally:
        lock.release()
        other.shutdown()


def test_fair_lock_hands_over_in_arrival_order():
    lock = FairRLock()
    order: list[str] = []

    def worker(name: str):
        for _ in range(20):
            with lock:
                order.append(name)
                time.sleep(0.01)  # the other thread is waiting by now

    threads = [threading.Thread(target=worker, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(order) == ["a"] * 20 + ["b"] * 20
    # After both have started, neither gets the lock twice in a row while the other waits.
    start = order.index("b") if order[0] == "a" else order.index("a")
    tail = order[start:]
    longest = max(len(run) for run in "".join(tail).replace("ab", "a b").replace("ba", "b a").split())
    assert longest <= 2, "".join(order)
