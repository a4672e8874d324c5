"""Population Based Training (Jaderberg et al., 2017) on the search plan.

PBT trains a population of members side by side; at intervals the worst members copy the
weights of better ones ("exploit") and carry on with perturbed hyper-parameters ("explore").
Other implementations copy checkpoints between trials. Here a copied member is simply a new
trial whose sequences equal the donor's for steps ``0..t-1`` and the explored value afterwards,
``seq.Piecewise((donor_sequence, t), seq.Constant(new_value))``: the search plan sees that it
shares the donor's first ``t`` steps and resumes it from the donor's checkpoint at ``t``. The
copy trains nothing, and the whole run costs ``population * steps`` steps.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hippo_dask.errors import InvalidSpaceError, TrialFailedError
from hippo_dask.seq import Constant, Piecewise, Sequence, resolve
from hippo_dask.space import GridSpace, RandomSpace
from hippo_dask.trial import Trial
from hippo_dask.tuners._base import Tuner, wait_all

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["PBT", "Exploit"]


@dataclass(frozen=True)
class Exploit:
    """One exploit-and-explore step of :class:`PBT`: who copied whom, when, and what changed.

    Attributes
    ----------
    step
        The step at which ``member`` took over the donor's weights; ``trial`` equals the donor
        on steps ``0..step-1``.
    member
        Index of the population slot that was replaced.
    replaced
        The trial that slot trained until ``step`` (it stops there: status ``"stopped"``).
    donor_member, donor
        The slot and trial whose weights were copied.
    trial
        The new trial the slot trains from ``step`` on.
    changes
        ``{name: (donor's value at step, new value)}`` for every sequential hyper-parameter
        whose value changed.
    """

    step: int
    member: int
    replaced: Trial
    donor_member: int
    donor: Trial
    trial: Trial
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)


def _whole(value: Any, *, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidSpaceError(f"PBT: `{name}` must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def continue_with(sequence: Sequence, step: int, then: Sequence) -> Sequence:
    """``sequence`` for steps ``0..step-1``, then ``then`` (counted from ``step``).

    A sequence that is already a :class:`~hippo_dask.seq.Piecewise` whose finite pieces end by
    ``step`` (an earlier generation of PBT) is extended rather than nested; both forms take the
    same values at every step.
    """
    if isinstance(sequence, Piecewise):
        length = sum(n for _, n in sequence.pieces)
        if length <= step:
            pieces: list[Any] = list(sequence.pieces)
            if step > length:
                pieces.append((sequence.last, step - length))
            return Piecewise(*pieces, then)
    return Piecewise((sequence, step), then)


def scale_int(value: int, factor: float) -> int:
    """``value * factor`` rounded; if rounding undid the change, moved one further from zero
    (factor > 1) or closer to it (factor < 1), but never to zero: 3 * 1.2 gives 4, 1 * 0.8
    stays 1, 0 stays 0."""
    scaled = int(round(value * factor))
    if scaled == value and factor != 1.0 and value != 0:
        nudged = value + (1 if factor > 1.0 else -1) * (1 if value > 0 else -1)
        if nudged != 0:
            scaled = nudged
    return scaled


class PBT(Tuner):
    """Population Based Training over sequential hyper-parameters, sharing the copied prefix.

    Jaderberg et al., "Population Based Training of Neural Networks" (2017). ``population``
    members train in rounds of ``interval`` steps up to ``steps``. After every round but the
    last, the members in the bottom ``quantile`` (and every member whose training failed)
    *exploit* a member of the top ``quantile``, chosen at random, and *explore*: every
    sequential hyper-parameter continues at the donor's value at that step times a factor drawn
    from ``perturb`` (floats stay floats; ints are rounded), while str and bool values are
    drawn afresh from the space with probability ``resample_probability`` and kept otherwise.
    A value that does not change leaves the donor's schedule running. Fixed values cannot change
    in the middle of training, so the new member keeps the donor's. As in the paper, explored
    values are not clipped to the space's ranges, nor checked against its ``where``.

    Rounds are synchronous: every member reaches the end of a round before anyone exploits, so
    the decisions depend only on ``seed`` and the metrics, never on timing, and a rerun against
    the same storage repeats them without training anything.

    The exploited member is a new :class:`~hippo_dask.Trial` whose sequences are
    ``seq.Piecewise((donor_sequence, t), seq.Constant(new_value))``: it shares steps ``0..t-1``
    with the donor in the search plan and resumes from the donor's checkpoint at ``t``, so
    copying weights costs no training and no checkpoint handling. Later generations extend the
    piecewise sequence, which thereby records the schedule PBT discovered.

    Parameters
    ----------
    space
        Where the initial population comes from: a :class:`~hippo_dask.RandomSpace` (draws
        ``population`` trials), a :class:`~hippo_dask.GridSpace` or an iterable of
        :class:`~hippo_dask.Trial` (with more than ``population`` trials, a random subset).
        Explored str/bool values are drawn from the same space. Trials need at least one
        sequential hyper-parameter to explore.
    metric, mode
        What ranks the members (NaN and infinities rank worst).
    population
        Number of members, at least 2.
    interval
        Steps per round: members exploit and explore every ``interval`` steps.
    steps
        Steps every member trains in total (the last round may be shorter).
    perturb
        Factors an explored float or int value is multiplied by, one drawn per value.
    quantile
        Fraction of the population that exploits (bottom) and that donates (top), in
        ``(0, 0.5]``; at least one member either way.
    resample_probability
        Chance that an explored str or bool value is drawn afresh from the space.
    seed
        Seeds the tuner's own ``numpy`` generator (subset, donors, factors, resampling).

    Attributes
    ----------
    lineage
        :class:`Exploit` records of the last run, in order.
    members
        The population's trials at the end of the last run, by slot.

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.RandomSpace(lr=seq.Constant(hd.loguniform(1e-3, 1e-1)), random_state=0)
    >>> tuner = hd.tuners.PBT(space, "val_acc", population=8, interval=10, steps=100)
    """

    def __init__(
        self,
        space: GridSpace | RandomSpace | Iterable[Trial],
        metric: str,
        mode: str = "max",
        *,
        population: int,
        interval: int,
        steps: int,
        perturb: Iterable[float] = (0.8, 1.2),
        quantile: float = 0.25,
        resample_probability: float = 0.25,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        self.population = _whole(population, name="population", minimum=2)
        self.interval = _whole(interval, name="interval", minimum=1)
        self.steps = _whole(steps, name="steps", minimum=1)
        if isinstance(perturb, (str, bytes)) or not isinstance(perturb, Iterable):
            raise InvalidSpaceError(
                f"PBT: `perturb` must be a list of factors such as (0.8, 1.2), got {perturb!r}"
            )
        factors = tuple(perturb)
        if not factors or any(
            isinstance(f, bool) or not isinstance(f, numbers.Real) or not math.isfinite(f) or f <= 0
            for f in factors
        ):
            raise InvalidSpaceError(
                f"PBT: `perturb` must hold finite factors > 0, such as (0.8, 1.2), got {perturb!r}"
            )
        self.perturb = tuple(float(f) for f in factors)
        if (
            isinstance(quantile, bool)
            or not isinstance(quantile, numbers.Real)
            or not 0 < quantile <= 0.5
        ):
            raise InvalidSpaceError(
                f"PBT: `quantile` must be in (0, 0.5] (the bottom and top fractions must not "
                f"overlap), got {quantile!r}; the paper uses 0.2 to 0.25"
            )
        self.quantile = float(quantile)
        if (
            isinstance(resample_probability, bool)
            or not isinstance(resample_probability, numbers.Real)
            or not 0 <= resample_probability <= 1
        ):
            raise InvalidSpaceError(
                f"PBT: `resample_probability` must be in [0, 1], got {resample_probability!r}"
            )
        self.resample_probability = float(resample_probability)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InvalidSpaceError(f"PBT: `seed` must be an int, got {seed!r}")
        self.seed = int(seed)
        if not isinstance(space, (GridSpace, RandomSpace)) and (
            isinstance(space, (str, bytes, Mapping)) or not isinstance(space, Iterable)
        ):
            raise InvalidSpaceError(
                f"PBT: `space` must be a GridSpace, a RandomSpace or a list of Trials, got {space!r}"
            )
        self.space = space
        self.lineage: list[Exploit] = []
        self.members: list[Trial] = []
        self._stopped: set[str] = set()
        self._pool: list[Trial] = []
        self._rng = np.random.default_rng(self.seed)

    @property
    def n_quantile(self) -> int:
        """Members that exploit (and that donate) after each round."""
        return int(max(1, min(math.ceil(self.population * self.quantile), self.population // 2)))

    # -- the population --------------------------------------------------------------------------

    def _initial(self) -> list[Trial]:
        if isinstance(self.space, RandomSpace):
            trials = self.space.sample(self.population)
        else:
            self._pool = list(self.space)
            for trial in self._pool:
                if not isinstance(trial, Trial):
                    raise InvalidSpaceError(
                        f"PBT: `space` must yield hippo_dask.Trial objects, got {trial!r}"
                    )
            if len(self._pool) < self.population:
                raise InvalidSpaceError(
                    f"PBT: the space holds {len(self._pool)} trials, fewer than "
                    f"population={self.population}; pass population={len(self._pool)} or a "
                    "RandomSpace, which draws as many as needed"
                )
            chosen = np.sort(self._rng.choice(len(self._pool), self.population, replace=False))
            trials = [self._pool[int(i)] for i in chosen]
        if not any(trial.sequences for trial in trials):
            raise InvalidSpaceError(
                "PBT: the trials have no sequential hyper-parameters, so there is nothing to "
                "explore; give at least one as a sequence, e.g. lr=seq.Constant(hd.loguniform("
                "1e-4, 1e-1))"
            )
        return trials

    def _fresh_value(self, name: str, kind: str, step: int, current: Any) -> Any:
        """A str/bool value drawn afresh from the space for ``name``, at ``step``."""
        drawn: Any = None
        if isinstance(self.space, RandomSpace):
            if name in self.space.axes:
                drawn = resolve(self.space.axes[name], self._rng)
        elif isinstance(self.space, GridSpace):
            options = self.space.axes.get(name, ())
            if options:
                drawn = options[int(self._rng.integers(len(options)))]
        else:
            holders = [t for t in self._pool if name in t.sequences]
            if holders:
                drawn = holders[int(self._rng.integers(len(holders)))].sequences[name]
        if isinstance(drawn, Sequence) and drawn.kind == kind:
            return drawn(step)
        return current

    def _explore(self, donor: Trial, step: int) -> tuple[Trial, dict[str, tuple[Any, Any]]]:
        config: dict[str, Any] = dict(donor.fixed)
        changes: dict[str, tuple[Any, Any]] = {}
        for name in donor.names:
            sequence = donor.sequences[name]
            current = sequence(step)
            kind = sequence.kind
            if kind in ("float", "int"):
                factor = self.perturb[int(self._rng.integers(len(self.perturb)))]
                new = float(current * factor) if kind == "float" else scale_int(current, factor)
            elif self._rng.random() < self.resample_probability:
                new = self._fresh_value(name, kind, step, current)
            else:
                new = current
            if new == current:
                config[name] = sequence  # unchanged: the donor's schedule goes on
            else:
                config[name] = continue_with(sequence, step, Constant(new))
                changes[name] = (current, new)
        return Trial(**config), changes

    # -- the algorithm ---------------------------------------------------------------------------

    async def run(self, study: StudyLike) -> None:
        self._rng = np.random.default_rng(self.seed)
        self.lineage = []
        self._stopped = set()
        self._pool = []
        members = self._initial()
        self.members = members
        alive = [True] * self.population
        bounds = list(range(self.interval, self.steps, self.interval)) + [self.steps]
        for bound in bounds:
            active = [i for i in range(self.population) if alive[i]]
            results = await wait_all(study.train(members[i], bound) for i in active)
            scores = [-math.inf] * self.population
            failed: list[int] = []
            for i, result in zip(active, results):
                if isinstance(result, TrialFailedError):
                    failed.append(i)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    scores[i] = self.score(result)
            if bound == self.steps:
                break
            self._exploit(members, alive, scores, failed, bound)
        self.members = members

    def _exploit(
        self,
        members: list[Trial],
        alive: list[bool],
        scores: list[float],
        failed: list[int],
        step: int,
    ) -> None:
        """Replace the bottom quantile of the members still training, and every member whose
        training failed, by explored copies of the top quantile's finite-scored members."""
        n = self.n_quantile
        for i in failed:
            alive[i] = False  # without a donor, a failed member trains no further
        ranked = sorted(
            (i for i in range(self.population) if alive[i]), key=lambda i: (scores[i], i)
        )
        bottom = sorted(set(ranked[:n]) | set(failed))
        donors = [i for i in ranked[::-1][:n] if math.isfinite(scores[i]) and i not in bottom]
        if not donors:
            return
        for i in bottom:
            d = donors[int(self._rng.integers(len(donors)))]
            trial, changes = self._explore(members[d], step)
            self.lineage.append(Exploit(step, i, members[i], d, members[d], trial, changes))
            self._stopped.add(members[i].id)
            members[i] = trial
            alive[i] = True

    def trial_status(self, trial: Trial) -> str | None:
        """``"stopped"`` for members replaced by exploitation (their lineage goes on in the
        trial that replaced them); ``None`` otherwise."""
        if trial.id in self._stopped and all(m.id != trial.id for m in self.members):
            return "stopped"
        return None
