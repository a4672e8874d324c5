"""Search spaces: where trials come from.

``GridSpace`` is the cartesian product of lists of options; ``RandomSpace`` draws from
distributions, which may also sit inside a sequence's arguments
(``seq.StepLR(hd.loguniform(1e-3, 1), gamma=0.1, milestones=hd.choice([[30, 45], [40, 60]]))``).
Both yield :class:`~hippo_dask.trial.Trial` objects. A random space takes ``random_state``, not
``seed``, because "seed" is a common hyper-parameter name.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from hippo_dask.errors import InvalidSpaceError
from hippo_dask.seq import Sampleable, SequenceTemplate, resolve
from hippo_dask.trial import Trial, check_user_names

__all__ = [
    "Distribution",
    "GridSpace",
    "RandomSpace",
    "choice",
    "loguniform",
    "randint",
    "uniform",
]

Where = Callable[[dict[str, Any]], bool]


def _number(value: Any, *, family: str, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidSpaceError(f"{family}: `{argument}` must be a finite number, got {value!r}")
    return float(value)


class Distribution(Sampleable):
    """A value a random space draws: :func:`uniform`, :func:`loguniform`, :func:`choice`,
    :func:`randint`."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


class _Uniform(Distribution):
    __slots__ = ("low", "high", "log")
    low: float
    high: float
    log: bool

    def __init__(self, low: float, high: float, log: bool) -> None:
        family = "loguniform" if log else "uniform"
        lo = _number(low, family=family, argument="low")
        hi = _number(high, family=family, argument="high")
        if not lo < hi:
            raise InvalidSpaceError(f"{family}: needs low < high, got low={low!r}, high={high!r}")
        if log and lo <= 0:
            raise InvalidSpaceError(
                f"loguniform: needs low > 0 (it draws log(value) uniformly), got low={low!r}; "
                "use uniform() for ranges that include 0"
            )
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        object.__setattr__(self, "log", log)

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def __repr__(self) -> str:
        return f"{'loguniform' if self.log else 'uniform'}({self.low!r}, {self.high!r})"


class _RandInt(Distribution):
    __slots__ = ("low", "high")
    low: int
    high: int

    def __init__(self, low: int, high: int) -> None:
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InvalidSpaceError(f"randint: `{name}` must be an int, got {value!r}")
        if not low < high:
            raise InvalidSpaceError(
                f"randint: draws from low (inclusive) to high (exclusive), so it needs low < "
                f"high; got low={low!r}, high={high!r}"
            )
        object.__setattr__(self, "low", int(low))
        object.__setattr__(self, "high", int(high))

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high))

    def __repr__(self) -> str:
        return f"randint({self.low!r}, {self.high!r})"


class _Choice(Distribution):
    __slots__ = ("options",)
    options: tuple[Any, ...]

    def __init__(self, options: Any) -> None:
        if isinstance(options, (str, bytes, Mapping)) or not hasattr(options, "__iter__"):
            raise InvalidSpaceError(f"choice: `options` must be a list, got {options!r}")
        items = tuple(options)
        if not items:
            raise InvalidSpaceError("choice: `options` is empty; give at least one option")
        object.__setattr__(self, "options", items)

    def sample(self, rng: np.random.Generator) -> Any:
        return resolve(self.options[int(rng.integers(len(self.options)))], rng)

    def __repr__(self) -> str:
        return f"choice({list(self.options)!r})"


def uniform(low: float, high: float) -> Distribution:
    """A float drawn uniformly from ``[low, high)``."""
    return _Uniform(low, high, log=False)


def loguniform(low: float, high: float) -> Distribution:
    """A float whose logarithm is uniform on ``[log(low), log(high))``; for learning rates."""
    return _Uniform(low, high, log=True)


def randint(low: int, high: int) -> Distribution:
    """An int from ``low`` (inclusive) to ``high`` (exclusive), as ``numpy``'s ``integers``."""
    return _RandInt(low, high)


def choice(options: Any) -> Distribution:
    """One of ``options``, each equally likely. Options may be sequences or hold distributions."""
    return _Choice(options)


def _check_where(where: Where | None, space: str) -> None:
    if where is not None and not callable(where):
        raise InvalidSpaceError(
            f"{space}: `where` must be a function of the configuration dict returning a bool, "
            f"got {where!r}"
        )


class GridSpace:
    """Every combination of the given options (cartesian product, in argument order).

    Parameters
    ----------
    **axes
        Per hyper-parameter, a list of options (plain values, sequences, or ``choice``). A single
        value or sequence that is not a list is one option. A fixed value that is itself a list
        must be wrapped: ``layers=[[64, 32]]``.
    where
        Keeps only configurations for which ``where(config)`` is true; ``config`` maps names to
        values and sequence objects.

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.GridSpace(lr=[seq.Constant(0.1), seq.StepLR(0.1, 0.1, [30])],
    ...                      optimizer=["sgd", "adam"])
    >>> len(space)
    4
    """

    def __init__(self, where: Where | None = None, **axes: Any) -> None:
        if not axes:
            raise InvalidSpaceError("GridSpace: give at least one axis, e.g. GridSpace(lr=[...])")
        _check_where(where, "GridSpace")
        check_user_names(axes, "GridSpace", InvalidSpaceError)
        self.axes: dict[str, tuple[Any, ...]] = {}
        for name, options in axes.items():
            if isinstance(options, _Choice):
                options = list(options.options)
            elif isinstance(options, (Distribution, SequenceTemplate)):
                raise InvalidSpaceError(
                    f"GridSpace: axis `{name}` = {options!r} is a distribution, which a grid "
                    "cannot enumerate; list the options, or use RandomSpace"
                )
            elif not isinstance(options, (list, tuple)):
                options = [options]
            if len(options) == 0:
                raise InvalidSpaceError(
                    f"GridSpace: axis `{name}` has no options; give at least one, e.g. {name}=[...]"
                )
            for option in options:
                if isinstance(option, (Distribution, SequenceTemplate)):
                    raise InvalidSpaceError(
                        f"GridSpace: axis `{name}` holds {option!r}, which is random; a grid "
                        "needs concrete options (use RandomSpace to draw them)"
                    )
            self.axes[name] = tuple(options)
        self.where = where
        self._size: int | None = None

    def __iter__(self) -> Iterator[Trial]:
        names = list(self.axes)
        for combination in itertools.product(*self.axes.values()):
            config = dict(zip(names, combination))
            if self.where is None or self.where(dict(config)):
                yield Trial(**config)

    def __len__(self) -> int:
        if self._size is None:
            if self.where is None:
                self._size = math.prod(len(v) for v in self.axes.values())
            else:
                self._size = sum(1 for _ in self)
        return self._size

    def __repr__(self) -> str:
        axes = ", ".join(f"{k}={list(v)!r}" for k, v in self.axes.items())
        return f"GridSpace({axes})"


class RandomSpace:
    """Trials drawn from distributions; the same ``random_state`` draws the same trials.

    Parameters
    ----------
    **axes
        Per hyper-parameter: a distribution (``uniform``, ``loguniform``, ``choice``,
        ``randint``), a sequence whose arguments hold distributions, or a constant.
    random_state
        Seed of the draws (int). ``None`` picks one at construction, so one space object always
        draws the same trials.
    n_trials
        Makes the space finite: iteration then yields that many trials. Without it, use
        :meth:`sample`.
    where
        Keeps only configurations for which ``where(config)`` is true (draws again otherwise).
    """

    def __init__(
        self,
        where: Where | None = None,
        random_state: int | None = None,
        n_trials: int | None = None,
        **axes: Any,
    ) -> None:
        if not axes:
            raise InvalidSpaceError("RandomSpace: give at least one axis, e.g. RandomSpace(lr=...)")
        _check_where(where, "RandomSpace")
        check_user_names(axes, "RandomSpace", InvalidSpaceError)
        if random_state is None:
            random_state = int(np.random.SeedSequence().entropy % (2**63))  # type: ignore[operator]
        if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
            raise InvalidSpaceError(
                f"RandomSpace: `random_state` must be an int, got {random_state!r}"
            )
        if n_trials is not None and (
            isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 1
        ):
            raise InvalidSpaceError(
                f"RandomSpace: `n_trials` must be an int >= 1, got {n_trials!r}"
            )
        self.axes = dict(axes)
        self.where = where
        self.random_state = int(random_state)
        self.n_trials = n_trials

    def sample(self, n: int) -> list[Trial]:
        """The first ``n`` trials this space draws (always the same for one ``random_state``)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise InvalidSpaceError(f"RandomSpace.sample: `n` must be an int >= 0, got {n!r}")
        rng = np.random.default_rng(self.random_state)
        trials: list[Trial] = []
        attempts = 0
        limit = 1000 * max(int(n), 1)
        while len(trials) < n:
            attempts += 1
            if attempts > limit:
                raise InvalidSpaceError(
                    f"RandomSpace: `where` accepted only {len(trials)} of {attempts - 1} draws; "
                    f"it rejects almost everything, so {n} trials cannot be drawn"
                )
            config = {name: resolve(axis, rng) for name, axis in self.axes.items()}
            if self.where is None or self.where(dict(config)):
                trials.append(Trial(**config))
        return trials

    def __iter__(self) -> Iterator[Trial]:
        if self.n_trials is None:
            raise TypeError(
                "RandomSpace has no fixed size: pass n_trials=... when building it, or call "
                "space.sample(n)"
            )
        return iter(self.sample(self.n_trials))

    def __len__(self) -> int:
        if self.n_trials is None:
            raise TypeError("RandomSpace has no fixed size: pass n_trials=... when building it")
        return self.n_trials

    def __repr__(self) -> str:
        axes = ", ".join(f"{k}={v!r}" for k, v in self.axes.items())
        return f"RandomSpace({axes}, random_state={self.random_state})"
