"""Many callers' explanations at once, their passes sharing batches.

A service gets its requests one by one from many connections; explained alone, each would run
its passes in batches of its own, and a request arriving behind a large one would wait for all
of it. A :class:`Batcher` takes requests from any thread, each with its own targets, method and
time budget, and one thread of its own works them off:

- a request's clean pass runs when the thread takes it up; then its passes join the *round*;
- a round is one batch of rows (the explainer's batch size), shared among the requests in
  progress in turns, one row each until the batch is full: one request alone fills whole
  batches, sixteen each put one row in; a request that arrives during a round joins the next
  one, so it never waits behind a large request for more than one batch;
- a budget counts from the request's arrival, queue included: a request whose time would be
  spent by the end of the next round (rounds are timed as they run) and that has run the rows
  its method requires takes no more rows, so it is answered within its budget, or within one
  batch past it when a single batch takes longer than its budget;
- at most ``max_queue`` requests are taken or in progress at once; one more is refused with a
  :class:`~onnxcam.errors.BusyError` that says when to retry.

Every row still goes through the explainer's one runner (it pads, checks NaN, isolates a
failing request); this module only decides which rows go into each round.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from . import jobs, methods
from .activation import ImageLike
from .errors import BusyError, ConfigError, OnnxCamError
from .explain import Explainer, provenance
from .jobs import Bound
from .methods import METHODS, Method
from .result import Result
from .runner import Feed, Job, JobResult, feed_rows, feed_slice, feed_stack
from .targets import TargetLike

__all__ = ["Batcher"]


@dataclass(eq=False)
class _Request:
    """One caller's request and how far its passes have come."""

    image: ImageLike | None
    tensor: np.ndarray | None
    target: TargetLike | Iterable[TargetLike] | None
    method: Method
    arrived: float
    deadline: float | None
    future: Future[Result] = field(default_factory=Future)
    bound: Bound | None = None
    job: Job | None = None
    stream: Iterator[Feed] | None = None
    spare: Feed | None = None
    taken: int = 0
    kept: dict[str, list[np.ndarray]] = field(default_factory=dict)
    build_s: float = 0.0
    run_s: float = 0.0


class Batcher:
    """Explains requests from many threads with their passes in shared batches.

    Args:
        explainer: the model, its settings and its runner (its method and budget are each
            request's default).
        max_queue: requests taken and not yet answered, at most; one more raises
            :class:`BusyError`.

    Counters (for tests and metrics): ``rounds`` run, ``rows`` run.
    """

    def __init__(self, explainer: Explainer, *, max_queue: int = 64) -> None:
        if max_queue < 1:
            raise ConfigError(f"max_queue must be at least 1, got {max_queue}")
        self.explainer = explainer
        self.max_queue = max_queue
        self.rounds = 0
        self.rows = 0
        self._waiting: list[_Request] = []
        self._active: list[_Request] = []
        self._turn = 0  # who puts the first row into the next round
        self._mean_s = 1.0  # a request's time, smoothed, for Retry-After
        self._round_s = 0.0  # a round's time, smoothed, to stop a budget before it runs out
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="onnxcam-batcher", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- callers

    def submit(
        self, image: ImageLike | None = None, *, tensor: np.ndarray | None = None,
        target: TargetLike | Iterable[TargetLike] | None = None, method: str | None = None,
        budget_s: float | None = None, arrived: float | None = None,
    ) -> Future[Result]:  # fmt: skip
        """Take a request (as :meth:`Explainer.explain` takes it, with its own ``method`` and
        ``budget_s``, default the explainer's); its :class:`Result` or error comes in the
        future. A budget counts from ``arrived`` (a :func:`time.perf_counter` time, e.g. when
        the request reached the server; default: now).

        Raises:
            ConfigError: an unknown method, or a budget the method does not take.
            BusyError: ``max_queue`` requests are in already, or the batcher is closing.
        """
        arrived = time.perf_counter() if arrived is None else arrived
        chosen = self._method(method, budget_s)
        default = method is None and budget_s is None
        budget = self.explainer.config.budget_s if default else budget_s
        request = _Request(
            image, tensor, target, chosen, arrived, None if budget is None else arrived + budget
        )  # fmt: skip
        with self._cond:
            if self._closing:
                raise BusyError("the service is shutting down", retry_after_s=1.0)
            if len(self._waiting) + len(self._active) >= self.max_queue:
                raise BusyError(
                    f"{self.max_queue} requests are in progress already (the queue is full); "
                    "retry later",
                    retry_after_s=max(1.0, math.ceil(self._mean_s)),
                )
            self._waiting.append(request)
            self._cond.notify()
        return request.future

    def explain(
        self, image: ImageLike | None = None, *, tensor: np.ndarray | None = None,
        target: TargetLike | Iterable[TargetLike] | None = None, method: str | None = None,
        budget_s: float | None = None,
    ) -> Result:  # fmt: skip
        """:meth:`submit`, then wait for the result; the request's error raises."""
        future = self.submit(image, tensor=tensor, target=target, method=method, budget_s=budget_s)
        return future.result()

    def pending(self) -> int:
        """Requests taken and not yet answered."""
        with self._cond:
            return len(self._waiting) + len(self._active)

    def close(self) -> None:
        """Take no more requests; return when those taken are answered."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _method(self, name: str | None, budget_s: float | None) -> Method:
        if name is None and budget_s is None:
            return self.explainer.method
        config = self.explainer.config
        name = name or config.method
        if name not in METHODS:
            raise ConfigError(f"unknown method '{name}'; valid: {', '.join(METHODS)}")
        kind = METHODS[name]
        return methods.create(
            name, options=config.options if name == config.method else None,
            baseline=config.baseline if kind.takes_baseline else "none", budget_s=budget_s,
        )  # fmt: skip

    # ----------------------------------------------------------------- the worker thread

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._active and not self._closing:
                    self._cond.wait()
                if self._closing and not self._waiting and not self._active:
                    return
                arrived, self._waiting = self._waiting, []
            for request in arrived:
                self._start(request)
            if self._active:
                self._round()

    def _start(self, request: _Request) -> None:
        """The request's clean pass, targets and plan; it joins the rounds (or is answered at
        once: an error, or a method with no passes)."""
        explainer = self.explainer
        try:
            fwd = explainer.forward(request.image, tensor=request.tensor)
            targets = explainer.bind(fwd, request.target, method=request.method)
            request.bound = jobs.planned(fwd, targets, request.method, explainer.norm)
            stage = explainer.stage(request.method)
            request.job = jobs.passes_job(request.bound, stage=stage, prepared=explainer.prepared)
        except Exception as exc:  # the caller gets it: one request's problem, not the service's
            self._fail(request, exc)
            return
        request.stream = request.job.inputs(explainer.runner.batch)
        with self._cond:
            self._active.append(request)
        if request.job.count == 0:
            self._finish(request)

    def _round(self) -> None:
        """One batch of rows from the requests in progress, in turns; then answer those whose
        rows have all run or whose budget is spent."""
        now = time.perf_counter()
        for request in list(self._active):
            if self._spent(request, now):
                self._finish(request)
        active = list(self._active)
        if not active:
            return
        shares = dict.fromkeys(active, 0)
        room = self.explainer.runner.batch
        order = active[self._turn % len(active) :] + active[: self._turn % len(active)]
        self._turn += 1
        while room:
            given = 0
            for request in order:
                assert request.job is not None
                if room and request.taken + shares[request] < request.job.count:
                    shares[request] += 1
                    room -= 1
                    given += 1
            if not given:
                break
        chosen = [r for r in order if shares[r]]
        t0 = time.perf_counter()
        try:
            parts = [self._part(r, shares[r]) for r in chosen]
            ran = self.explainer.runner.run(parts)
        except Exception as exc:  # a mistake that every request of the round shares
            for request in chosen:
                self._fail(request, exc)
            return
        self._round_s = 0.7 * self._round_s + 0.3 * (time.perf_counter() - t0)
        self.rounds += 1
        self.rows += sum(shares.values())
        for request, outcome in zip(chosen, ran, strict=True):
            if isinstance(outcome, OnnxCamError):
                self._fail(request, outcome)
                continue
            for key, value in outcome.values.items():
                request.kept.setdefault(key, []).append(value)
            request.run_s += outcome.run_s
            request.taken += shares[request]
            assert request.job is not None
            if request.taken >= request.job.count:
                self._finish(request)

    def _part(self, request: _Request, rows: int) -> Job:
        """The next ``rows`` rows of the request's passes, as a job of their own."""
        assert request.job is not None and request.stream is not None
        t0 = time.perf_counter()
        blocks, have = [], 0
        if request.spare is not None:
            blocks, have, request.spare = [request.spare], feed_rows(request.spare), None
        while have < rows:
            block = next(request.stream, None)
            if block is None or feed_rows(block) == 0:
                raise ValueError(f"a plan yielded fewer rows than its count {request.job.count}")
            blocks.append(block)
            have += feed_rows(block)
        block = feed_stack(blocks)
        if have > rows:
            request.spare = feed_slice(block, rows, None)
            block = feed_slice(block, 0, rows)
        request.build_s += time.perf_counter() - t0

        def inputs(chunk: int) -> Iterator[Feed]:
            yield block

        return replace(request.job, count=rows, inputs=inputs, budget_s=None, required=0)

    def _spent(self, request: _Request, now: float) -> bool:
        """Whether the request's budget is spent by the end of the next round (a round takes
        about ``_round_s``), once its required rows have run."""
        assert request.job is not None
        return (
            request.deadline is not None
            and request.taken >= request.job.required
            and now + self._round_s >= request.deadline
        )

    def _finish(self, request: _Request) -> None:
        assert request.bound is not None
        values = {key: np.concatenate(parts) for key, parts in request.kept.items()}
        outcome = JobResult(values, request.build_s, request.run_s)
        try:
            result = Result.from_passes(request.bound, outcome, provenance(self.explainer))
        except Exception as exc:
            self._fail(request, exc)
            return
        self._done(request)
        request.future.set_result(result)

    def _fail(self, request: _Request, exc: BaseException) -> None:
        self._done(request)
        request.future.set_exception(exc)

    def _done(self, request: _Request) -> None:
        with self._cond:
            if request in self._active:
                self._active.remove(request)
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - request.arrived)
