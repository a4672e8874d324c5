"""The tuner contract: one coroutine over ``study.train``, plus waiting helpers.

A tuner asks for metrics with ``await study.train(trial, steps)``; the study answers from the
plan when it can and trains only what is missing. Everything a tuner decides follows from the
metrics it sees and its own seed, so a rerun makes the same decisions and costs nothing.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hippo_dask.errors import InvalidSpaceError

if TYPE_CHECKING:
    from hippo_dask.trial import Trial

__all__ = ["StudyLike", "Tuner", "wait_all", "wait_any"]

T = TypeVar("T")


class StudyLike(Protocol):
    """What a tuner needs from a study: the one coroutine ``train``.

    :class:`~hippo_dask.Study` satisfies it structurally (it does not inherit from it), and so
    does any object with the same coroutine, such as a fake study in a tuner's unit tests.
    Tuners are typed against this protocol rather than ``Study`` so that ``hippo_dask.tuners``
    does not depend on ``hippo_dask.study``, which depends on the tuners.
    """

    async def train(self, trial: Trial, steps: int) -> dict[str, float]:
        """Metrics of ``trial`` after ``steps`` steps.

        Raises :class:`~hippo_dask.TrialFailedError` if the trial failed; any other error stops
        the whole study.
        """
        ...


async def wait_all(awaitables: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    """Wait for every awaitable; results in order, a failure in place of its result."""
    return list(await asyncio.gather(*awaitables, return_exceptions=True))


async def wait_any(
    tasks: Iterable[asyncio.Future[T]],
) -> tuple[set[asyncio.Future[T]], set[asyncio.Future[T]]]:
    """Wait until at least one of ``tasks`` is done: ``(done, pending)``.

    Wrap coroutines with ``asyncio.ensure_future`` first so they run while you wait.
    """
    pending = set(tasks)
    if not pending:
        return set(), set()
    done, rest = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    return done, rest


class Tuner(ABC):
    """Base class of tuning algorithms.

    A subclass implements ``async def run(self, study)`` and asks for metrics with
    ``await study.train(trial, steps)``. Type ``study`` as :class:`StudyLike`, the protocol of
    what a tuner may use from a study, so that a tuner runs under :class:`~hippo_dask.Study`
    and under any stand-in with the same ``train`` coroutine.

    Parameters
    ----------
    metric
        The metric to optimise, as the trainer's ``evaluate()`` names it.
    mode
        ``"max"`` or ``"min"``. NaN and infinities rank worst either way.
    """

    def __init__(self, metric: str, mode: str = "max") -> None:
        if not isinstance(metric, str) or not metric:
            raise InvalidSpaceError(
                f"{type(self).__name__}: `metric` must be a metric name, got {metric!r}"
            )
        if mode not in ("max", "min"):
            raise InvalidSpaceError(
                f"{type(self).__name__}: `mode` must be 'max' or 'min', got {mode!r}"
            )
        self.metric = metric
        self.mode = mode

    @abstractmethod
    async def run(self, study: StudyLike) -> None:
        """Drive the study with ``await study.train(trial, steps)`` until done."""

    def trial_status(self, trial: Trial) -> str | None:
        """How this tuner ended ``trial`` for ``result.trials``: ``"stopped"`` for one it pruned
        early; ``None`` (the default) leaves the study's own status ("done", "failed")."""
        return None

    def score(self, metrics: Mapping[str, Any] | None) -> float:
        """A number to maximise: the metric, negated for ``mode="min"``.

        NaN, infinities and a missing metric all rank worst (``-inf``): a diverged trial never
        wins, whichever way the metric points.
        """
        if metrics is None or self.metric not in metrics:
            return -math.inf
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return -math.inf
        return value if self.mode == "max" else -value
