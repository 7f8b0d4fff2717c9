"""The runner: equal padded batches, outputs handed back per job, failing jobs isolated."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SIZE

from onnxcam import NumericalError, TargetError
from onnxcam.runner import Job, Runner, chunk_size
from onnxcam.runtime import Session


class Recorder:
    """A session stand-in: output ``y`` = the row's first value; remembers batch shapes."""

    def __init__(self, nan_at: float | None = None) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.nan_at = nan_at

    def run(self, feed, outputs):
        self.shapes.append(feed.shape)
        y = feed.reshape(len(feed), -1)[:, :1].astype(np.float32).copy()
        if self.nan_at is not None:
            y[y == self.nan_at] = np.nan
        return {"y": y}


def rows_job(values, block=3, keep=None):
    data = np.asarray(values, np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 1, 2, 2), np.float32)

    def inputs(chunk):
        step = min(block, chunk)
        for start in range(0, len(data), step):
            yield data[start : start + step]

    return Job(len(data), inputs, ("y",), keep or (lambda out: {"y": out["y"][:, 0]}))


def test_chunk_size_is_as_few_equal_runs_as_the_batch_allows():
    assert [chunk_size(n, 16) for n in (1, 16, 17, 32, 33, 100)] == [1, 16, 9, 16, 11, 15]


def test_rows_come_back_to_their_job_in_order_with_one_batch_shape():
    session = Recorder()
    jobs = [rows_job(range(0, 5)), rows_job(range(10, 17), block=2), rows_job([]), rows_job([99])]
    out = Runner(session, batch=4).run(jobs)  # type: ignore[arg-type]
    assert [list(o.values.get("y", [])) for o in out] == [
        [0, 1, 2, 3, 4], list(range(10, 17)), [], [99],
    ]  # fmt: skip
    assert len(set(session.shapes)) == 1 and session.shapes[0][0] == chunk_size(13, 4)
    assert sum(s[0] for s in session.shapes) >= 13


def test_results_do_not_depend_on_the_batch_size():
    values = [float(v) for v in range(23)]
    for batch in (1, 2, 5, 7, 64):
        out = Runner(Recorder(), batch=batch).run([rows_job(values[:10]), rows_job(values[10:])])  # type: ignore[arg-type]
        assert list(out[0].values["y"]) + list(out[1].values["y"]) == values


def test_fixed_batch_runs_exactly_that_many_rows_and_pads_with_real_rows():
    session = Recorder(nan_at=0.0)  # a zero row would be NaN: padding must not use zeros
    out = Runner(session, batch=16, fixed=3).run([rows_job([5, 6, 7, 8])])  # type: ignore[arg-type]
    assert list(out[0].values["y"]) == [5, 6, 7, 8]
    assert session.shapes == [(3, 1, 2, 2), (3, 1, 2, 2)]


def test_a_failing_job_is_isolated_and_the_others_keep_their_values():
    session = Recorder(nan_at=13.0)
    jobs = [rows_job([1, 2]), rows_job([12, 13, 14]), rows_job([20, 21])]
    out = Runner(session, batch=4).run(jobs)  # type: ignore[arg-type]
    assert isinstance(out[1], NumericalError) and "NaN" in str(out[1])
    assert list(out[0].values["y"]) == [1, 2] and list(out[2].values["y"]) == [20, 21]


def test_a_keep_that_raises_fails_its_job_only():
    def bad(out):
        raise TargetError("target 'x' returned shape (2, 3)")

    out = Runner(Recorder(), batch=8).run([rows_job([1]), rows_job([2, 3], keep=bad)])  # type: ignore[arg-type]
    assert list(out[0].values["y"]) == [1] and isinstance(out[1], TargetError)


def test_runner_on_a_real_session(tiny):
    session = Session(tiny.read_bytes(), device="cpu")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 3, SIZE, SIZE)).astype(np.float32)
    job = Job(5, lambda chunk: iter([x[:2], x[2:]]), ("logits",), dict)
    out = Runner(session, batch=4).run([job])[0]
    single = np.concatenate([session.run(x[i : i + 1], ["logits"])["logits"] for i in range(5)])
    np.testing.assert_allclose(out.values["logits"], single, rtol=1e-5, atol=1e-6)


def test_a_job_that_yields_too_few_rows_is_a_bug_not_a_silent_gap():
    job = Job(4, lambda chunk: iter([np.zeros((2, 1, 2, 2), np.float32)]), ("y",), dict)
    with pytest.raises(ValueError, match="fewer rows"):
        Runner(Recorder(), batch=8).run([job])  # type: ignore[arg-type]
