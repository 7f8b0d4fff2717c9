"""The one loop that runs the model: jobs in, equal padded batches through the session, values out.

A :class:`Job` is one image's share of the work: ``count`` model inputs, built lazily by the
job in blocks of any size, and a ``keep`` function that reduces the outputs of some of those
rows to what the caller needs (the clean outputs of an activation pass, or one score per row
and target for masked passes). The runner streams the rows of many jobs into batches of one
size, pads the last one by repeating its final row (a padding row is a real input, so it
cannot produce NaN where the model would not), runs them, checks the real rows for NaN and
Inf, and hands each job back exactly its rows. Memory holds one batch of inputs and the kept
values, never all outputs of all passes.

A job whose rows fail (the model raises, returns NaN, or its ``keep`` raises) does not take the
others down: the jobs that finished keep their values, and the rest are run again one at a
time to find the failing one.

Rows go to the runner's model unless a job names another :class:`Stage` (the model's head,
fed feature maps); a row is then a set of named inputs, and jobs of one stage share batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import ConfigError, NumericalError, OnnxCamError, OutputError, TimeLimitError

__all__ = [
    "Feed",
    "Job",
    "JobResult",
    "Runnable",
    "Runner",
    "Stage",
    "chunk_size",
    "feed_rows",
    "feed_slice",
    "feed_stack",
    "one_input",
]

Values = dict[str, np.ndarray]
#: A block of rows: an array for the model's first input, or arrays for named inputs.
Feed = np.ndarray | Mapping[str, np.ndarray]


class Runnable(Protocol):
    """What the runner runs batches through: what a backend opens (:mod:`onnxcam.backends`;
    a :class:`onnxcam.runtime.Session` for ONNX Runtime)."""

    def run(
        self, feed: Feed, outputs: Sequence[str] | None = None, *, time_limit: float | None = None
    ) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class Stage:
    """A model other than the runner's own that jobs can run on (the head after the explained
    maps), and its fixed batch dimension when it has one."""

    session: Runnable
    fixed: int | None = None


@dataclass(frozen=True)
class Job:
    """One image's model inputs and what to keep of their outputs.

    Attributes:
        count: the number of model inputs (rows).
        inputs: ``inputs(chunk)`` yields the rows as blocks of at most ``chunk`` rows each,
            ``count`` rows in all, in the model's input layout and dtype: arrays, or mappings
            of input name to array (every array with the block's rows). It is called again
            when the job is re-run alone, so it must start from the beginning each time.
        outputs: the model outputs ``keep`` reads.
        keep: reduces the outputs of consecutive rows (a mapping of name to ``(n, ...)``) to
            arrays with ``n`` rows each; the runner concatenates them per key.
        budget_s: once the job has spent this many seconds (building its rows and its share
            of the runs), no more of its rows are taken: its values then have fewer than
            ``count`` rows. It stops between blocks, so it overruns by at most one batch.
        required: rows taken whatever the budget.
        what: what the rows are, for messages ("masked inputs").
        labels: names for outputs in messages (e.g. "the feature map of node 'x'").
        hint: what to try when an output goes NaN or Inf.
        stage: where the rows run; None for the runner's model.
    """

    count: int
    inputs: Callable[[int], Iterator[Feed]]
    outputs: tuple[str, ...]
    keep: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
    budget_s: float | None = None
    required: int = 0
    what: str = "inputs"
    labels: Mapping[str, str] = field(default_factory=dict)
    hint: str = "check the preprocessing (--preset/--mean/--std) and that the model is float32-safe"
    stage: Stage | None = None


@dataclass(frozen=True)
class JobResult:
    """The kept values of one job (``count`` rows per key) and where its time went."""

    values: Values
    build_s: float
    run_s: float


def one_input(x: np.ndarray) -> Callable[[int], Iterator[np.ndarray]]:
    """The ``inputs`` of a job whose rows are the prepared array ``x``."""

    def inputs(chunk: int) -> Iterator[np.ndarray]:
        yield x

    return inputs


def chunk_size(total: int, batch: int) -> int:
    """Rows per run: as few runs as ``batch`` allows, of equal size (the last one padded)."""
    runs = max(1, math.ceil(total / max(1, batch)))
    return max(1, math.ceil(total / runs))


class Runner:
    """Runs jobs through one session in batches of one shape.

    Args:
        session: the session (any model whose first input takes the jobs' rows).
        batch: rows per run at most.
        fixed: the model's batch dimension when it is fixed; every run then has exactly
            that many rows.
        time_limit: seconds each job's rows may take in all (a run that would go past it is
            stopped, and the job fails with a :class:`TimeLimitError`).
    """

    def __init__(
        self,
        session: Runnable,
        *,
        batch: int,
        fixed: int | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.session = session
        self.batch = max(1, fixed or batch)
        self.fixed = fixed
        self.time_limit = time_limit

    def run(self, jobs: Sequence[Job]) -> list[JobResult | OnnxCamError]:
        """Each job's values, or the error that its rows raised, in job order.

        Raises:
            ConfigError, OutputError: a mistake that no other image would escape.
        """
        outcomes: list[JobResult | OnnxCamError | None] = [None] * len(jobs)
        stages: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            stages.setdefault(id(job.stage), []).append(i)
        for group in stages.values():
            try:
                self._run_shared(jobs, group, outcomes)
            except (ConfigError, OutputError):
                raise
            except OnnxCamError as exc:
                pending = [i for i in group if outcomes[i] is None]
                if len(pending) == 1:
                    outcomes[pending[0]] = exc
                    continue
                for i in pending:
                    try:
                        self._run_shared(jobs, [i], outcomes)
                    except (ConfigError, OutputError):
                        raise
                    except OnnxCamError as alone:
                        outcomes[i] = alone
        return [o for o in outcomes if o is not None]

    def _run_shared(
        self, jobs: Sequence[Job], which: list[int], outcomes: list[JobResult | OnnxCamError | None]
    ) -> None:
        """Run the jobs ``which`` (all of one stage) in shared batches; fill ``outcomes`` as each
        one completes."""
        stage = jobs[which[0]].stage
        session = self.session if stage is None else stage.session
        fixed = self.fixed if stage is None else stage.fixed
        total = sum(jobs[i].count for i in which)
        chunk = fixed or chunk_size(total, self.batch)
        kept: dict[int, dict[str, list[np.ndarray]]] = {i: {} for i in which}
        build = dict.fromkeys(which, 0.0)
        spent = dict.fromkeys(which, 0.0)
        names = sorted({name for i in which for name in jobs[i].outputs})

        bad: dict[int, dict[str, int]] = {i: {} for i in which}

        def finish(i: int) -> None:
            values = {k: np.concatenate(v) for k, v in kept.pop(i).items()}
            if bad[i]:
                outcomes[i] = _not_finite(jobs[i], bad[i])
                return
            outcomes[i] = JobResult(values, build[i], spent[i])

        for i in which:
            if jobs[i].count == 0:
                finish(i)
        batches = self._batches(jobs, [i for i in which if jobs[i].count], chunk, build, spent)
        for batch, segments in batches:
            if batch is None:  # a job's budget ran out after its rows had all run
                for i, _, _ in segments:
                    finish(i)
                continue
            t0 = time.perf_counter()
            n = feed_rows(batch)
            if n < chunk:
                batch = _pad(batch, chunk)
            limit = None
            if self.time_limit is not None:
                limit = min(self.time_limit - build[i] - spent[i] for i, _, _ in segments)
                if limit <= 0:
                    raise TimeLimitError(
                        f"an image's passes took longer than the time limit of "
                        f"{self.time_limit:.3g} s; raise --time-limit if it is only slow"
                    )
            deadline = {} if limit is None else {"time_limit": limit}
            out = session.run(batch, names, **deadline)
            elapsed = time.perf_counter() - t0
            start = 0
            for i, rows, last in segments:
                part = {name: out[name][start : start + rows] for name in jobs[i].outputs}
                t1 = time.perf_counter()
                for name, count in _non_finite_rows(part).items():
                    bad[i][name] = bad[i].get(name, 0) + count
                if not bad[i]:  # a job that went NaN keeps nothing more; it fails at its end
                    for key, value in jobs[i].keep(part).items():
                        kept[i].setdefault(key, []).append(np.asarray(value))
                spent[i] += elapsed * rows / n + time.perf_counter() - t1
                start += rows
                if last:
                    finish(i)

    @staticmethod
    def _batches(
        jobs: Sequence[Job],
        which: list[int],
        chunk: int,
        build: dict[int, float],
        spent: dict[int, float],
    ) -> Iterator[tuple[Feed | None, list[tuple[int, int, bool]]]]:
        """Regroup the jobs' rows into batches of ``chunk`` rows (the last one may be short).

        Yields each batch with its segments ``(job, rows, is the job's last segment)``; a
        batch of None only closes a job whose budget ran out after its rows had run.
        """
        pending: list[Feed] = []
        segments: list[tuple[int, int, bool]] = []
        count = 0
        for i in which:
            job = jobs[i]
            left = job.count
            stream = job.inputs(chunk)
            while left:
                taken = job.count - left
                if (
                    job.budget_s is not None
                    and taken >= job.required
                    and build[i] + spent[i] >= job.budget_s
                ):
                    if segments and segments[-1][0] == i:
                        segments[-1] = (i, segments[-1][1], True)
                    else:
                        yield None, [(i, 0, True)]
                    break
                t = time.perf_counter()
                block = next(stream, None)
                build[i] += time.perf_counter() - t
                if block is None or feed_rows(block) == 0:
                    raise ValueError(f"job {i} yielded fewer rows than its count")
                block = feed_slice(block, 0, left)
                left -= feed_rows(block)
                while feed_rows(block):
                    take = min(chunk - count, feed_rows(block))
                    pending.append(feed_slice(block, 0, take))
                    block = feed_slice(block, take, None)
                    count += take
                    segments.append((i, take, left == 0 and not feed_rows(block)))
                    if count == chunk:
                        yield feed_stack(pending), segments
                        pending, segments, count = [], [], 0
        if count:
            yield feed_stack(pending), segments


def feed_rows(block: Feed) -> int:
    """The rows of a block."""
    if isinstance(block, np.ndarray):
        return len(block)
    return len(next(iter(block.values())))


def feed_slice(block: Feed, start: int, stop: int | None) -> Feed:
    """Rows ``start:stop`` of a block."""
    if isinstance(block, np.ndarray):
        return block[start:stop]
    return {name: value[start:stop] for name, value in block.items()}


def feed_stack(blocks: list[Feed]) -> Feed:
    """Blocks of one kind, one after another, as one block."""
    if len(blocks) == 1:
        return blocks[0]
    arrays = [b for b in blocks if isinstance(b, np.ndarray)]
    if arrays:
        return np.concatenate(arrays)
    named = [b for b in blocks if not isinstance(b, np.ndarray)]
    return {name: np.concatenate([b[name] for b in named]) for name in named[0]}


def _pad(batch: Feed, rows: int) -> Feed:
    """The batch with its last row repeated up to ``rows`` rows (a real input: no NaN)."""

    def padded(value: np.ndarray) -> np.ndarray:
        return np.concatenate([value, np.repeat(value[-1:], rows - len(value), axis=0)])

    if isinstance(batch, np.ndarray):
        return padded(batch)
    return {name: padded(value) for name, value in batch.items()}


def _non_finite_rows(outputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Per float output, how many rows hold a NaN or an Inf (only those that do)."""
    counts = {}
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and len(value):
            rows = int((~np.isfinite(value.reshape(len(value), -1))).any(axis=1).sum())
            if rows:
                counts[name] = rows
    return counts


def _not_finite(job: Job, counts: Mapping[str, int]) -> NumericalError:
    """What went NaN or Inf, for how many of the job's inputs, and what to try."""
    what = ", ".join(
        f"{job.labels.get(name, f'model output {name!r}')} in {rows} of {job.count}"
        for name, rows in counts.items()
    )
    return NumericalError(f"NaN or Inf in {what} {job.what}; {job.hint}")
