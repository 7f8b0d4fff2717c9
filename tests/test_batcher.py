"""The Batcher: requests from many threads sharing batches, per-request methods, targets and
budgets, a bounded queue, no request starved by a large one, a close that finishes all."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT

from onnxcam import BusyError, ConfigError, Explainer, ImageError, jobs
from onnxcam.batcher import Batcher

SHAPES = ROOT / "models" / "shapes_cnn.onnx"
PHOTOS = sorted(EXAMPLES.glob("*.png"))[:4]


class Counting:
    """The explainer's session, counting the batches it runs; ``gate`` holds every run until
    it is set, ``delay_s`` slows each one down."""

    def __init__(self, session, *, delay_s: float = 0.0) -> None:
        self.session = session
        self.calls: list[int] = []
        self.starts: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def run(self, feed, outputs=None, **kwargs):
        self.gate.wait(30)
        with self.lock:
            self.calls.append(len(feed))
            self.starts.append(time.perf_counter())
        time.sleep(self.delay_s)
        return self.session.run(feed, outputs, **kwargs)


@pytest.fixture(scope="module")
def shapes():
    return Explainer(SHAPES, device="cpu", threads=1, batch_size=24)


def counted(explainer: Explainer, **kwargs) -> Counting:
    counting = Counting(explainer.runner.session, **kwargs)
    explainer.runner.session = counting
    return counting


@pytest.fixture
def batcher(shapes):
    original = shapes.runner.session
    made = Batcher(shapes, max_queue=64)
    yield made
    made.close()
    shapes.runner.session = original


def rows_of(explainer: Explainer, image) -> int:
    fwd = explainer.forward(image)
    return jobs.planned(fwd, explainer.bind(fwd), explainer.method, explainer.norm).plan.count


def test_concurrent_requests_share_batches(shapes, batcher):
    rows = [rows_of(shapes, p) for p in PHOTOS * 2]
    batch = shapes.runner.batch
    counting = counted(shapes)
    counting.gate.clear()  # every request is in before the first batch runs
    futures = [batcher.submit(p) for p in PHOTOS * 2]
    counting.gate.set()
    results = [f.result(60) for f in futures]
    masked = len(counting.calls) - len(futures)  # one clean pass each
    assert masked == math.ceil(sum(rows) / batch)  # shared: only the very last batch is short
    assert masked < sum(math.ceil(r / batch) for r in rows)  # alone, each pads its own last
    assert batcher.rounds == masked and batcher.rows == sum(rows)
    for path, result in zip(PHOTOS * 2, results, strict=True):
        np.testing.assert_allclose(result.saliency, shapes.explain(path).saliency, atol=1e-6)


def test_many_threads_every_request_answered_once_with_the_serial_maps(shapes, batcher):
    serial = {p: shapes.explain(p, target="top:2") for p in PHOTOS}
    asked = [PHOTOS[i % len(PHOTOS)] for i in range(8 * 5)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: (p, batcher.explain(p, target="top:2")), asked))
    assert len(answers) == len(asked) and batcher.pending() == 0
    for path, result in answers:
        for got, want in zip(result.targets, serial[path].targets, strict=True):
            np.testing.assert_allclose(got.saliency, want.saliency, atol=1e-6)
            assert got.info["spec"] == want.info["spec"] == "top:2"


def test_each_request_has_its_own_method_and_targets(shapes, batcher):
    group, top = batcher.submit(PHOTOS[0], method="groupcam"), batcher.submit(PHOTOS[1], target=2)
    assert group.result(60).method == "groupcam" and top.result(60).class_index == 2
    want = Explainer(SHAPES, device="cpu", threads=1, method="groupcam").explain(PHOTOS[0])
    np.testing.assert_allclose(group.result().saliency, want.saliency, atol=1e-6)


def test_bad_requests_fail_alone(shapes, batcher, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        batcher.submit(PHOTOS[0], method="nope")
    with pytest.raises(ConfigError, match="takes no time budget"):
        batcher.submit(PHOTOS[0], method="rise", budget_s=0.1)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad, good = batcher.submit(tmp_path / "bad.png"), batcher.submit(PHOTOS[0])
    with pytest.raises(ImageError):
        bad.result(60)
    assert good.result(60).saliency.shape == shapes.explain(PHOTOS[0]).saliency.shape
    with pytest.raises(ConfigError, match="could not be split off"):
        batcher.explain(PHOTOS[0], method="ablation")


@contextmanager
def watched(explainer: Explainer, *, delay_s: float = 0.0, max_queue: int = 64):
    """A batcher over ``explainer`` with its session counted (and slowed by ``delay_s``);
    closed, and the session given back, afterwards."""
    counting = counted(explainer, delay_s=delay_s)
    batcher = Batcher(explainer, max_queue=max_queue)
    try:
        yield batcher, counting
    finally:
        counting.gate.set()
        batcher.close()
        explainer.runner.session = counting.session


def test_a_full_queue_refuses_with_a_retry_time(shapes):
    with watched(shapes, max_queue=2) as (batcher, counting):
        counting.gate.clear()
        taken = [batcher.submit(PHOTOS[0]), batcher.submit(PHOTOS[1])]
        with pytest.raises(BusyError, match="queue is full") as refused:
            batcher.submit(PHOTOS[2])
        assert refused.value.retry_after_s >= 1
        counting.gate.set()
        assert all(f.result(60).saliency.size for f in taken)
        assert batcher.explain(PHOTOS[2]).saliency.size  # room again


def test_a_budget_counts_from_arrival_and_stops_within_a_batch(shapes):
    with watched(shapes, delay_s=0.02) as (batcher, counting):
        t0 = time.perf_counter()
        result = batcher.explain(PHOTOS[0], budget_s=0.1)
        info = result.targets[0].info
        assert info["masks_run"] < info["masks_planned"]
        # every batch but the last started within the budget (the clock may be slow here: a
        # busy machine stretches the batches, not this property)
        masked = counting.starts[1:]  # after the clean pass
        assert len(masked) >= 1 and all(start < t0 + 0.1 for start in masked[:-1])
        assert info["masks_run"] <= len(masked) * shapes.runner.batch


def test_a_small_request_is_not_starved_by_a_large_one(shapes):
    with watched(shapes, delay_s=0.005) as (batcher, _):
        large = batcher.submit(PHOTOS[0], method="rise")  # 4,000 masked passes
        while batcher.rounds < 3:
            time.sleep(0.01)
        small = batcher.submit(PHOTOS[1])  # a few batches' worth
        small.result(60)
        assert not large.done()
        assert large.result(120).method == "rise"


def test_close_answers_every_request_taken(shapes):
    batcher = Batcher(shapes)
    futures = [batcher.submit(p) for p in PHOTOS]
    batcher.close()
    assert all(f.done() and f.result().saliency.size for f in futures)
    with pytest.raises(BusyError, match="shutting down"):
        batcher.submit(PHOTOS[0])
