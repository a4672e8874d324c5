"""An adapter that runs any Optuna sampler (TPE, CMA-ES, GP, random) through ask/tell.

Optuna decides which configuration to try next; hippo_dask trains it, sharing every prefix the
configuration has in common with what the plan already holds. The space is translated into
Optuna's define-by-run suggestions, so samplers see ordinary float, int and categorical
parameters; with a pruner, trials are trained rung by rung and reported as intermediate values.
Optuna is an optional dependency (``pip install hippo-dask[optuna]``), imported when the
adapter is built.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hippo_dask.errors import InvalidSpaceError, TrialFailedError
from hippo_dask.seq import Sampleable, SequenceTemplate
from hippo_dask.space import GridSpace, RandomSpace, _Choice, _RandInt, _Uniform
from hippo_dask.trial import Trial
from hippo_dask.tuners._base import Tuner, wait_all

if TYPE_CHECKING:
    import optuna

    from hippo_dask.tuners._base import StudyLike

__all__ = ["Optuna"]


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise InvalidSpaceError(
            "Optuna: the optuna package is not installed; install it with "
            "`pip install hippo-dask[optuna]` (or `pip install optuna`)"
        ) from None
    return optuna


def _check_mappable(value: Any, path: str) -> None:
    """Reject random values that have no Optuna suggestion (a user-made ``Sampleable``)."""
    if isinstance(value, _Choice):
        for index, option in enumerate(value.options):
            _check_mappable(option, f"{path}.{index}")
    elif isinstance(value, SequenceTemplate):
        for index, arg in enumerate(value.args):
            _check_mappable(arg, f"{path}.v{index}")
        for key, arg in value.kwargs.items():
            _check_mappable(arg, f"{path}.{key}")
    elif isinstance(value, (_Uniform, _RandInt)):
        return
    elif isinstance(value, Sampleable):
        raise InvalidSpaceError(
            f"Optuna: `{path}` = {value!r} is a distribution Optuna cannot suggest; use "
            "hd.uniform, hd.loguniform, hd.randint or hd.choice"
        )
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_mappable(item, f"{path}.{index}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_mappable(item, f"{path}.{key}")


def suggest(trial: optuna.Trial, name: str, value: Any) -> Any:
    """Draw ``value`` (a distribution, a sequence template, or a plain value holding them) with
    Optuna suggestions named after ``name``.

    ``uniform`` -> ``suggest_float``, ``loguniform`` -> ``suggest_float(log=True)``,
    ``randint(low, high)`` -> ``suggest_int(low, high - 1)``, ``choice`` ->
    ``suggest_categorical`` over the option indices (the chosen option's own distributions are
    named ``"<name>.<index>..."``). A sequence template's arguments become parameters of their own
    ("parametrised choices"): ``lr=seq.StepLR(hd.loguniform(1e-3, 1), gamma=hd.uniform(0.1,
    0.5), milestones=[30])`` suggests ``"lr.v0"`` and ``"lr.gamma"``.
    """
    if isinstance(value, _Uniform):
        return trial.suggest_float(name, value.low, value.high, log=value.log)
    if isinstance(value, _RandInt):
        return trial.suggest_int(name, value.low, value.high - 1)
    if isinstance(value, _Choice):
        index = 0
        if len(value.options) > 1:
            index = int(trial.suggest_categorical(name, list(range(len(value.options)))))
        return suggest(trial, f"{name}.{index}", value.options[index])
    if isinstance(value, SequenceTemplate):
        args = [suggest(trial, f"{name}.v{i}", arg) for i, arg in enumerate(value.args)]
        kwargs = {key: suggest(trial, f"{name}.{key}", arg) for key, arg in value.kwargs.items()}
        return value.family(*args, **kwargs)
    if isinstance(value, list):
        return [suggest(trial, f"{name}.{i}", item) for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(suggest(trial, f"{name}.{i}", item) for i, item in enumerate(value))
    if isinstance(value, Mapping):
        return {key: suggest(trial, f"{name}.{key}", item) for key, item in value.items()}
    return value


class Optuna(Tuner):
    """Any Optuna sampler, driven through ask/tell, training what it asks for with sharing.

    Samplers: TPE (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS
    2011), CMA-ES (Hansen, "The CMA Evolution Strategy: A Tutorial", 2016), Gaussian processes,
    random search: anything derived from ``optuna.samplers.BaseSampler`` (Akiba et al.,
    "Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019). Pruners
    (``MedianPruner``, ``SuccessiveHalvingPruner``, ...) stop trials at the ``rungs``.

    The space becomes Optuna parameters: a :class:`~hippo_dask.GridSpace` axis with several
    options is a categorical over the option *indices* (sequences are options like any other);
    a :class:`~hippo_dask.RandomSpace` maps ``uniform``, ``loguniform``, ``randint`` and
    ``choice`` to ``suggest_float``, ``suggest_float(log=True)``, ``suggest_int`` and a
    categorical over indices, and a sequence with distributions among its arguments suggests each
    argument (``"lr.v0"`` for the first positional one, ``"lr.gamma"`` for a keyword); a list of
    trials is one categorical, ``"trial"``. A configuration that the space's ``where`` rejects is
    told ``FAIL`` and asked again (it does not count towards ``n_trials``); a drawn sequence
    that fails validation raises, as it would from ``RandomSpace.sample``.

    Trials run in synchronous batches of ``concurrency``: a batch is asked, trained together
    (rung by rung with a pruner), and told in the order it was asked. Optuna therefore sees the
    same history whatever the workers' timing, so a seeded sampler makes the same decisions on
    every run, and a rerun against the same storage trains nothing. Within a batch the sampler
    sees its companions as running trials (TPE's ``constant_liar``). Use ``concurrency=1`` for
    strictly sequential optimisation.

    Parameters
    ----------
    sampler
        An ``optuna.samplers.BaseSampler`` instance; seed it (``TPESampler(seed=0)``) for
        reproducible decisions. ``None``: ``TPESampler(seed=seed)``. The instance is copied at
        every run, so running the same tuner twice makes the same decisions.
    space
        A :class:`~hippo_dask.GridSpace`, a :class:`~hippo_dask.RandomSpace` or a list of
        :class:`~hippo_dask.Trial`.
    n_trials
        How many configurations to ask for.
    metric, mode
        Told to Optuna as the objective, raw, with direction ``"maximize"`` or ``"minimize"``.
        A trial whose training failed or whose metric is NaN or infinite is told ``FAIL``.
    steps
        Steps a trial that is not pruned trains.
    pruner
        An ``optuna.pruners.BasePruner`` instance, or ``None`` for no pruning.
    rungs
        Steps at which a pruned run reports intermediate values and may stop (with a pruner
        only); default ``[steps // 4, steps // 2, steps]``. ``steps`` is added if missing.
    concurrency
        Trials trained at the same time (one batch).
    seed
        Seed of the default sampler (``sampler=None``); a sampler you pass keeps its own seed.

    Attributes
    ----------
    optuna_study
        The ``optuna.Study`` of the last run (``best_params``, visualisation, ...). Parameters
        of categorical axes are option indices.
    suggested
        ``{optuna trial number: hippo_dask.Trial}`` of the last run.

    Examples
    --------
    >>> import optuna
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.RandomSpace(lr=seq.Cosine(hd.loguniform(1e-3, 1e-1), 100),
    ...                        optimizer=hd.choice(["sgd", "adam"]))
    >>> tuner = hd.tuners.Optuna(optuna.samplers.TPESampler(seed=0), space, 50, "val_acc",
    ...                          steps=100, pruner=optuna.pruners.MedianPruner())
    """

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler | None,
        space: GridSpace | RandomSpace | Iterable[Trial],
        n_trials: int,
        metric: str,
        mode: str = "max",
        *,
        steps: int,
        pruner: optuna.pruners.BasePruner | None = None,
        rungs: Iterable[int] | None = None,
        concurrency: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        lib = _import_optuna()
        for name, value, minimum in (
            ("n_trials", n_trials, 1),
            ("steps", steps, 1),
            ("concurrency", concurrency, 1),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral)
                or value < minimum
            ):
                raise InvalidSpaceError(
                    f"Optuna: `{name}` must be a whole number >= {minimum}, got {value!r}"
                )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InvalidSpaceError(f"Optuna: `seed` must be an int, got {seed!r}")
        self.n_trials = int(n_trials)
        self.steps = int(steps)
        self.concurrency = int(concurrency)
        self.seed = int(seed)
        if sampler is None:
            sampler = lib.samplers.TPESampler(seed=self.seed)
        if not isinstance(sampler, lib.samplers.BaseSampler):
            raise InvalidSpaceError(
                f"Optuna: `sampler` must be an optuna sampler instance such as "
                f"optuna.samplers.TPESampler(seed=0), got {sampler!r}"
            )
        if pruner is not None and not isinstance(pruner, lib.pruners.BasePruner):
            raise InvalidSpaceError(
                f"Optuna: `pruner` must be an optuna pruner instance such as "
                f"optuna.pruners.MedianPruner(), or None, got {pruner!r}"
            )
        self.sampler = sampler
        self.pruner = pruner
        self.rungs = self._check_rungs(rungs)
        self.space = space
        self._trials: list[Trial] | None = None
        if isinstance(space, GridSpace):
            pass
        elif isinstance(space, RandomSpace):
            for name, axis in space.axes.items():
                _check_mappable(axis, name)
        elif isinstance(space, Iterable) and not isinstance(space, (str, bytes, Mapping)):
            self._trials = list(space)
            if not self._trials or not all(isinstance(t, Trial) for t in self._trials):
                raise InvalidSpaceError(
                    f"Optuna: a `space` given as a list must hold at least one hippo_dask.Trial, "
                    f"got {self._trials!r}"
                )
        else:
            raise InvalidSpaceError(
                f"Optuna: `space` must be a GridSpace, a RandomSpace or a list of Trials, got "
                f"{space!r}"
            )
        self.optuna_study: optuna.Study | None = None
        self.suggested: dict[int, Trial] = {}
        self._stopped: set[str] = set()
        self._finished: set[str] = set()

    def _check_rungs(self, rungs: Iterable[int] | None) -> tuple[int, ...]:
        if self.pruner is None:
            if rungs is not None:
                raise InvalidSpaceError(
                    f"Optuna: `rungs`={rungs!r} only matter with a pruner; pass "
                    "pruner=optuna.pruners.MedianPruner() (say), or drop `rungs`"
                )
            return (self.steps,)
        if rungs is None:
            return tuple(
                sorted({r for r in (self.steps // 4, self.steps // 2) if r >= 1} | {self.steps})
            )
        if isinstance(rungs, (str, bytes)) or not isinstance(rungs, Iterable):
            raise InvalidSpaceError(f"Optuna: `rungs` must be a list of steps, got {rungs!r}")
        items = list(rungs)
        if any(
            isinstance(r, bool) or not isinstance(r, numbers.Integral) or not 1 <= r <= self.steps
            for r in items
        ):
            raise InvalidSpaceError(
                f"Optuna: `rungs` must hold whole steps from 1 to steps={self.steps}, got {items!r}"
            )
        if any(b <= a for a, b in zip(items, items[1:])):
            raise InvalidSpaceError(
                f"Optuna: `rungs` must be strictly increasing, got {items!r}; did you mean "
                f"rungs={sorted(set(int(r) for r in items))!r}?"
            )
        result = [int(r) for r in items]
        if not result or result[-1] != self.steps:
            result.append(self.steps)
        return tuple(result)

    # -- ask -------------------------------------------------------------------------------------

    def _configure(self, otrial: optuna.Trial) -> Trial | None:
        """The hippo_dask trial for an asked Optuna trial; ``None`` if ``where`` rejects it."""
        if self._trials is not None:
            index = 0
            if len(self._trials) > 1:
                index = int(otrial.suggest_categorical("trial", list(range(len(self._trials)))))
            return self._trials[index]
        space = self.space
        if isinstance(space, GridSpace):
            config: dict[str, Any] = {}
            for name, options in space.axes.items():
                index = 0
                if len(options) > 1:
                    index = int(otrial.suggest_categorical(name, list(range(len(options)))))
                config[name] = options[index]
        else:
            assert isinstance(space, RandomSpace)
            config = {name: suggest(otrial, name, axis) for name, axis in space.axes.items()}
        if space.where is not None and not space.where(dict(config)):
            return None
        return Trial(**config)

    def _ask(self, ostudy: optuna.Study) -> tuple[optuna.Trial, Trial]:
        lib = _import_optuna()
        rejected = 0
        while True:
            otrial = ostudy.ask()
            try:
                trial = self._configure(otrial)
            except BaseException:
                ostudy.tell(otrial, state=lib.trial.TrialState.FAIL)
                raise
            if trial is not None:
                otrial.set_user_attr("hippo_trial_id", trial.id)
                self.suggested[otrial.number] = trial
                return otrial, trial
            otrial.set_user_attr("hippo_rejected_by_where", True)
            ostudy.tell(otrial, state=lib.trial.TrialState.FAIL)
            rejected += 1
            if rejected >= 1000:
                raise InvalidSpaceError(
                    "Optuna: the space's `where` rejected 1000 configurations in a row; it "
                    "rejects almost everything the sampler proposes, so relax it"
                )

    # -- the algorithm ---------------------------------------------------------------------------

    async def run(self, study: StudyLike) -> None:
        lib = _import_optuna()
        pruner = copy.deepcopy(self.pruner) if self.pruner is not None else lib.pruners.NopPruner()
        ostudy = lib.create_study(
            sampler=copy.deepcopy(self.sampler),
            pruner=pruner,
            direction="maximize" if self.mode == "max" else "minimize",
        )
        self.optuna_study = ostudy
        self.suggested = {}
        self._stopped = set()
        self._finished = set()
        asked = 0
        while asked < self.n_trials:
            size = min(self.concurrency, self.n_trials - asked)
            batch = [self._ask(ostudy) for _ in range(size)]
            asked += size
            await self._train(study, ostudy, batch)

    async def _train(
        self, study: StudyLike, ostudy: optuna.Study, batch: list[tuple[optuna.Trial, Trial]]
    ) -> None:
        """Train one batch rung by rung; report, prune and tell in the order it was asked."""
        state = _import_optuna().trial.TrialState
        live = batch
        for rung in self.rungs:
            results = await wait_all(study.train(trial, rung) for _, trial in live)
            reported: list[tuple[optuna.Trial, Trial]] = []
            for (otrial, trial), result in zip(live, results):
                if isinstance(result, TrialFailedError):
                    ostudy.tell(otrial, state=state.FAIL)
                    continue
                if isinstance(result, BaseException):
                    raise result
                value = float(result.get(self.metric, math.nan))
                if not math.isfinite(value):
                    ostudy.tell(otrial, state=state.FAIL)
                    if rung < self.steps:
                        self._stopped.add(trial.id)
                    continue
                if rung == self.steps:
                    ostudy.tell(otrial, value)
                    self._finished.add(trial.id)
                    continue
                otrial.report(value, rung)
                reported.append((otrial, trial))
            live = []
            for otrial, trial in reported:
                if otrial.should_prune():
                    ostudy.tell(otrial, state=state.PRUNED)
                    self._stopped.add(trial.id)
                else:
                    live.append((otrial, trial))
            if not live:
                return

    def trial_status(self, trial: Trial) -> str | None:
        """``"stopped"`` for trials the pruner stopped (or that diverged at a rung), unless the
        same configuration also ran to the end."""
        if trial.id in self._stopped and trial.id not in self._finished:
            return "stopped"
        return None
