"""The progress bar of ``study.tune``: trials finished, steps executed / requested, merge rate.

The bar counts trials (a tuner's requests, grouped by trial) finished out of those asked for so
far; tuners such as ASHA ask for more as they go, so the total grows. Next to it: the steps the
workers trained in this run against the steps the requests add up to trial by trial, and the
merge rate so far (requested / unique steps of this run's requests, Hippo's *p*).

It uses tqdm, which comes with the ``dashboard`` extra: the notebook widget in Jupyter (with
ipywidgets, also in that extra), text elsewhere. ``progress=None`` (the default of
``study.tune``) shows it only when someone watches (a terminal or a notebook) and tqdm is
installed; ``True`` insists, ``False`` is quiet.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from hippo_dask.errors import HippoError
from hippo_dask.plan import RequestTally

if TYPE_CHECKING:
    from hippo_dask.execution import StageReport
    from hippo_dask.trial import Trial

__all__ = ["TuneProgress", "watched"]

logger = logging.getLogger(__name__)


def watched() -> bool:
    """Whether a person is likely watching: stderr is a terminal, or this is a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _bar_class(progress: bool | None) -> Any:
    """The tqdm class to draw with (the notebook widget in Jupyter when ipywidgets is there,
    text otherwise), or ``None`` when no bar is wanted or tqdm is missing."""
    if progress is False or (progress is None and not watched()):
        return None
    try:
        from tqdm.std import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        if progress:
            raise HippoError(
                "study.tune(progress=True) needs tqdm: pip install 'hippo-dask[dashboard]' (or "
                "pip install tqdm), or pass progress=False"
            ) from None
        logger.debug("tqdm is not installed: no progress bar")
        return None
    if "ipykernel" in sys.modules and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as widget  # type: ignore[import-untyped, unused-ignore]

        return widget
    return tqdm


class TuneProgress:
    """Counts of one ``tune`` run, shown as a bar if wanted.

    Parameters
    ----------
    name
        The study's name, the bar's label.
    progress
        ``True`` (show; needs tqdm), ``False`` (quiet) or ``None`` (show if watched).

    Attributes
    ----------
    requests
        This run's requests (:class:`~hippo_dask.plan.RequestTally`): the study's result
        takes its step counts and merge rate from here.
    requested_steps, unique_steps, executed_steps, merge_rate
        This run's figures so far (kept whether or not a bar is shown).
    """

    def __init__(self, name: str, progress: bool | None = None) -> None:
        if progress not in (True, False, None):
            raise HippoError(
                f"study.tune: `progress` must be True, False or None, got {progress!r}"
            )
        self.requests = RequestTally()
        self._open: dict[str, int] = {}
        self._answered: set[str] = set()
        self.executed_steps = 0
        self._drawn = -float("inf")
        bar = _bar_class(progress)
        self._bar = (
            None
            if bar is None
            else bar(
                total=0,
                desc=f"tune {name}",
                unit="trial",
                dynamic_ncols=True,
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trials "
                "[{elapsed}{postfix}]",
            )
        )

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    @property
    def trials(self) -> int:
        """Trials asked for so far."""
        return len(self._open)

    @property
    def finished(self) -> int:
        """Trials with an answer and no request outstanding."""
        return sum(1 for tag, n in self._open.items() if n == 0 and tag in self._answered)

    @property
    def requested_steps(self) -> int:
        return self.requests.requested_steps

    @property
    def unique_steps(self) -> int:
        return self.requests.unique_steps

    @property
    def merge_rate(self) -> float:
        return self.requests.merge_rate

    def asked(self, tag: str, trial: Trial, steps: int) -> None:
        """A tuner asked for ``trial`` (as the plan keys it) at ``steps`` steps."""
        self.requests.add(trial, steps, tag=tag)
        self._open[tag] = self._open.get(tag, 0) + 1
        self._show()

    def answered(self, tag: str) -> None:
        """A request of trial ``tag`` came back (with metrics or an error)."""
        self._open[tag] = max(0, self._open.get(tag, 1) - 1)
        self._answered.add(tag)
        self._show()

    def on_report(self, report: StageReport) -> None:
        """A stage finished on a worker (the driver's report hook)."""
        self.executed_steps += report.trained_steps
        self._show()

    def summary(self) -> str:
        """``steps 440/720, p=1.64``: executed / requested steps and the merge rate."""
        return (
            f"steps {self.executed_steps:,}/{self.requested_steps:,} executed/requested, "
            f"merge rate {self.merge_rate:.2f}"
        )

    def _show(self, force: bool = False) -> None:
        bar = self._bar
        if bar is None or (not force and time.monotonic() - self._drawn < 0.1):
            return
        self._drawn = time.monotonic()
        bar.total = self.trials
        bar.n = self.finished
        bar.set_postfix_str(self.summary(), refresh=False)
        bar.refresh()

    def close(self) -> None:
        """Draw the final state and release the bar."""
        if self._bar is not None:
            self._show(force=True)
            self._bar.close()
            self._bar = None
