"""Study: one tuning job over a trainer, a storage root and a tuner.

``Study("digits-cnn", DigitsTrainer, storage="./hippo-runs")`` keeps its search plan, checkpoints
and metrics under ``<storage>/<name>/``. Studies with the same name on the same storage share one
plan, so a second study (or the same script run again after a crash) reuses everything the
first trained: rerunning is how you resume.

``tune`` blocks in scripts; ``await tune_async(...)`` runs in a notebook's event loop. Both drive
a tuner, whose only way in is ``await study.train(trial, steps)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
import warnings
import weakref
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from hippo_dask._fingerprint import trainer_fingerprint
from hippo_dask._fs import STORAGE_NAME
from hippo_dask._redact import Redactor
from hippo_dask._results import Result, StudyStats, TrialResult, _Run
from hippo_dask.errors import HippoError, HippoWarning, InvalidTrialError, StorageError
from hippo_dask.execution import Driver, RunStats, TrialFailedError
from hippo_dask.plan import SearchPlan, mean_seconds_per_step, trial_by_trial_seconds
from hippo_dask.progress import TuneProgress
from hippo_dask.trainer import Trainer
from hippo_dask.trial import Trial, check_steps, check_user_names

if TYPE_CHECKING:
    import distributed
    import pandas as pd

    from hippo_dask.storage import GarbageReport
    from hippo_dask.tuners import Tuner

__all__ = ["Result", "Study", "StudyStats", "TrialResult"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Fixed values the engine adds to every trial it puts in the plan; the trainer never sees them.
CODE_KEY = "_hippo_code"
ISOLATE_KEY = "_hippo_isolate"


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hippo-tune") as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Study:
    """A tuning job: a trainer, a storage root, and the search plan they share.

    Parameters
    ----------
    name
        The study's name; studies with the same name on the same storage share one plan.
    trainer_cls
        A :class:`~hippo_dask.Trainer` subclass.
    storage
        Root URL (local path, ``s3://bucket/prefix``, ...); the study lives in
        ``<storage>/<name>/`` with ``plan/``, ``ckpt/`` and ``metrics.zarr``.
    client
        A ``distributed.Client`` whose workers advertise ``GPU``; ``None`` starts an embedded
        local cluster (:func:`hippo_dask.cluster.local`) on first use, listening on 127.0.0.1
        only (nobody on another machine can reach it).
    eval_every
        Also record metrics every that many steps, for learning curves.
    sharing
        ``False`` trains every trial from scratch on the same machinery (the honest baseline,
        Hippo's "Hippo-trial"); it never reuses the shared runs' work.
    storage_options
        Passed to fsspec (credentials, ``endpoint_url``); never written to storage or logs.
    storage_timeout
        Seconds storage may stay unreachable (writes are retried with backoff) before the study
        stops with :class:`~hippo_dask.StorageError`; default: the ``hippo.storage-timeout``
        setting (300 s). The plan journal stays intact either way.
    retries
        Run a stage whose trainer raised up to that many more times (on the same worker, from
        its last checkpoint) before the trials that need it are marked failed.
    version
        Declares the trainer's code version. By default a digest of the trainer's source and of
        the user's own code it uses (its module, base classes and package; not installed
        packages): edited code does not reuse checkpoints or metrics of the old code. Pass the
        same ``version`` to declare an edit compatible. A trainer whose source cannot be read
        (a REPL, a notebook, a ``.pyc``-only module) warns: declare ``version`` for it.
    """

    def __init__(
        self,
        name: str,
        trainer_cls: type[Trainer],
        storage: str = "./hippo-runs",
        *,
        client: distributed.Client | None = None,
        eval_every: int | None = None,
        sharing: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        version: str | None = None,
        retries: int = 0,
        storage_timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not STORAGE_NAME.fullmatch(name):
            raise HippoError(
                f"Study: `name` must be 1-200 letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit (it names a folder and zarr keys), e.g. 'digits-cnn'; got {name!r}"
            )
        if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
            raise HippoError(
                f"Study: `trainer_cls` must be a subclass of hippo_dask.Trainer, got {trainer_cls!r}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise HippoError(f"Study: `retries` must be an int >= 0, got {retries!r}")
        if eval_every is not None and (
            isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1
        ):
            raise HippoError(f"Study: `eval_every` must be an int >= 1 or None, got {eval_every!r}")
        self.name = name
        self.trainer_cls = trainer_cls
        self.storage = str(storage)
        self.root = f"{self.storage.rstrip('/')}/{name}"
        self.sharing = bool(sharing)
        self.eval_every = eval_every
        self.retries = retries
        self.storage_timeout = storage_timeout
        self.storage_options = dict(storage_options or {})
        self._redact = Redactor(self.storage_options)
        self.fingerprint = trainer_fingerprint(trainer_cls, version, stacklevel=3)
        _check_picklable(trainer_cls)
        try:
            self.plan = SearchPlan.open(self.root, self.storage_options)
            self.plan.probe_write()
        except HippoError as exc:
            if self._redact(str(exc)) == str(exc):
                raise
            exc.args = (self._redact(str(exc)),)  # it showed a password: same error, masked
            raise exc.with_traceback(None) from None
        except (OSError, ValueError, ImportError) as exc:
            raise StorageError(
                self._redact(
                    f"Study: cannot use storage {self.root!r}: {type(exc).__name__}: {exc}; check "
                    "the URL (protocol, bucket, path) and that this process may write there"
                )
            ) from None
        self._warn_if_code_changed()
        from hippo_dask.storage import MetricsStore, StudyCheckpointStore

        # Journaled as ``ckpt/<name>.ckpt``: a copied or moved study resolves its own files.
        self.checkpoints = StudyCheckpointStore(self.root, self.storage_options)
        self.metrics_store = MetricsStore(f"{self.root}/metrics.zarr", self.storage_options)
        self._client = client
        self._driver: Driver | None = None
        self._run: _Run | None = None
        self._finalizer: weakref.finalize | None = None

    def _warn_if_code_changed(self) -> None:
        """Say so when this trainer's code is new to a plan that holds results of its earlier
        code, which are not reused."""
        prefix = f"{self.trainer_cls.__qualname__}:"
        known = {
            str(t.fixed.get(CODE_KEY))
            for t in self.plan.trials.values()
            if str(t.fixed.get(CODE_KEY, "")).startswith(prefix)
        }
        older = known - {self.fingerprint}
        if older and self.fingerprint not in known:  # the first run of new code says so once
            warnings.warn(
                f"{self.trainer_cls.__qualname__}'s code differs from the code that trained "
                f"{len(older)} earlier version(s) in {self._redact(self.root)} ({', '.join(sorted(older))}"
                "); their checkpoints and metrics are not reused. If the change cannot alter results, "
                "pass the same Study(..., version=...) the runs were made with.",
                HippoWarning,
                stacklevel=3,
            )

    def gc(
        self,
        keep: str = "branch-points",
        *,
        metric: str | None = None,
        mode: str = "max",
        dry_run: bool = False,
        orphan_age: float = 3600.0,
        temp_age: float | None = None,
    ) -> GarbageReport:
        """Delete checkpoints this study no longer needs; see :func:`hippo_dask.storage.collect_garbage`."""
        from hippo_dask.storage import collect_garbage

        self.plan.flush()
        report = collect_garbage(
            self.root,
            self.storage_options,
            keep=keep,
            metric=metric,
            mode=mode,
            dry_run=dry_run,
            orphan_age=orphan_age,
            temp_age=temp_age,
        )
        self.plan.refresh()  # take in what the collection forgot
        return report

    # -- the cluster --------------------------------------------------------------------------

    @property
    def client(self) -> distributed.Client:
        """The Dask client (the embedded cluster's, started on first use)."""
        if self._client is None:
            from hippo_dask.cluster import close_in_background, local

            self._client = local()
            # A study dropped without close() stops its cluster from the garbage collector,
            # which must not block on the locks of the thread it interrupts.
            self._finalizer = weakref.finalize(self, close_in_background, self._client)
        if getattr(self._client, "asynchronous", False):
            raise HippoError(
                "Study needs a synchronous distributed.Client (Client(...) without "
                "asynchronous=True); `await study.tune_async(...)` works with it in notebooks"
            )
        return self._client

    def close(self) -> None:
        """Flush the plan (and snapshot it when due, see :meth:`SearchPlan.compact`), and stop
        the embedded cluster, if this study started one."""
        self.plan.flush()
        self._snapshot_if_due()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
            client, self._client = self._client, None
            if client is not None:
                client.close()  # a ClusterClient: its cluster stops too

    def _snapshot_if_due(self) -> None:
        """Snapshot the plan once ``hippo.snapshot-every`` journal records were applied or written
        since the snapshot it opened from, so that opening it again replays only what follows
        (:mod:`hippo_dask.plan._snapshot`). A failure only logs: the journal is intact."""
        from hippo_dask._settings import setting

        every = int(setting("snapshot-every"))
        if every <= 0 or self.plan.since_snapshot < every:
            return
        try:
            path = self.plan.compact()
        except OSError as exc:
            logger.warning(
                "could not write a snapshot of the search plan (the journal is "
                "intact, it is read in full next time): %s",
                exc,
            )
        else:
            logger.info("wrote search plan snapshot %s", path)  # a path: no credentials

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- trials in the plan ---------------------------------------------------------------------

    def _plan_trial(self, trial: Trial) -> Trial:
        """The trial as the plan keys it: with the code fingerprint (and isolation without sharing)."""
        if not isinstance(trial, Trial):
            raise InvalidTrialError(f"expected a hippo_dask.Trial, got {trial!r}")
        check_user_names(trial.config, "Study")
        extra = {CODE_KEY: self.fingerprint}
        if not self.sharing:
            extra[ISOLATE_KEY] = trial.id
        return Trial(**trial.config, **extra)

    @staticmethod
    def _config_of(trial: Trial) -> dict[str, Any]:
        return {k: v for k, v in trial.fixed.items() if not k.startswith("_hippo_")}

    def _check_workers_can_load_trainer(self) -> None:
        """Workers unpickle the trainer class by reference when it lives in a module: check
        once per client that they can import it, instead of failing in every stage."""
        client = self.client
        if getattr(client, "_hippo_checked", None) == id(self.trainer_cls):
            return
        import cloudpickle

        payload = cloudpickle.dumps(self.trainer_cls)
        problems = {w: p for w, p in client.run(_load_problem, payload).items() if p}
        if problems:
            worker, problem = next(iter(problems.items()))
            raise HippoError(
                f"the Dask workers cannot load trainer class {self.trainer_cls.__qualname__} "
                f"from module {self.trainer_cls.__module__!r} ({worker}: {problem}); install "
                "that module where the workers run, start the cluster after making it importable, "
                "or define the class in the script that runs the study"
            )
        client._hippo_checked = id(self.trainer_cls)  # type: ignore[attr-defined]

    def _ensure_driver(self) -> Driver:
        loop = asyncio.get_running_loop()
        if self._driver is None or self._driver.loop is not loop:
            self._check_workers_can_load_trainer()
            self.plan.refresh()
            self._driver = Driver(
                plan=self.plan,
                client=self.client,
                trainer_cls=self.trainer_cls,
                config_of=self._config_of,
                checkpoints=self.checkpoints,
                metrics_store=self.metrics_store,
                fingerprint=self.fingerprint,
                eval_every=self.eval_every,
                retries=self.retries,
                storage_timeout=self.storage_timeout,
            )
        return self._driver

    # -- the primitive tuners use --------------------------------------------------------------

    async def train(self, trial: Trial, steps: int) -> dict[str, float]:
        """Metrics of ``trial`` after ``steps`` steps; trains only what the plan lacks.

        Returns at once when the plan already holds the answer. Raises
        :class:`~hippo_dask.execution.TrialFailedError` if a stage it needs failed.
        """
        run = self._run
        progress = None if run is None else run.progress
        try:  # bad input (steps, reserved names) stops the run as other configuration errors do
            steps = check_steps(steps, "Study.train")
            planned = self._plan_trial(trial)
            driver = self._ensure_driver()
            if progress is not None:
                progress.asked(trial.id, planned, steps)
            metrics = await driver.request(planned, steps, tag=trial.id)
        except asyncio.CancelledError as exc:
            if run is not None:
                run.record(trial, steps, None, exc)
            raise
        except TrialFailedError as exc:
            if run is not None:
                run.record(trial, steps, None, exc)
            raise
        except HippoError as exc:  # storage down, a misconfigured cluster: the run stops
            if run is not None and run.fatal is None:
                run.fatal = exc
            raise
        finally:
            if progress is not None:
                progress.answered(trial.id)
        if run is not None:
            run.record(trial, steps, metrics, None)
            tuner = run.tuner
            if tuner is not None and tuner.metric not in metrics:
                error = HippoError(
                    f"the tuner ranks by metric {tuner.metric!r}, but {self.trainer_cls.__name__}"
                    f".evaluate() returns {sorted(metrics)}; pass metric= one of those"
                )
                run.fatal = error
                raise error
        return metrics

    def eval(self, config: Trial | Mapping[str, Any], step: int) -> dict[str, float]:
        """Metrics of any configuration at any step, training only what is missing."""
        trial = config if isinstance(config, Trial) else Trial(**dict(config))

        async def go() -> dict[str, float]:
            try:
                return await self.train(trial, step)
            finally:
                await self._close_driver()

        return run_sync(go())

    # -- tuning ----------------------------------------------------------------------------------

    def tune(self, tuner: Tuner, *, progress: bool | None = None) -> Result:
        """Run ``tuner`` to completion and return its result (blocks). ``progress``: see
        :mod:`hippo_dask.progress` (``None``: a bar in terminals and notebooks; ``False``: quiet)."""
        return run_sync(self.tune_async(tuner, progress=progress))

    async def tune_async(self, tuner: Tuner, *, progress: bool | None = None) -> Result:
        """Run ``tuner`` in the current event loop: ``result = await study.tune_async(tuner)``."""
        bar = TuneProgress(self.name, progress)
        run = self._run = _Run(tuner, bar)
        driver = self._ensure_driver()
        before = RunStats(**vars(driver.stats))
        driver.on_report.append(bar.on_report)
        try:
            task = asyncio.ensure_future(tuner.run(self))
            await task
        except HippoError:
            if run.fatal is None:
                raise
        finally:
            self._run = None
            bar.close()
            await self._close_driver()
        if run.fatal is not None:
            raise run.fatal
        return self._result(run, driver.stats, before)

    async def _close_driver(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None

    # -- results ---------------------------------------------------------------------------------

    def _result(self, run: _Run, stats: RunStats, before: RunStats) -> Result:
        import pandas as pd

        records = list(run.records.values())
        tuner = run.tuner
        if tuner is not None:
            for r in records:
                status = tuner.trial_status(r.trial) if r.status == "done" else None
                if status is not None:
                    r.status = status
        rows = []
        for r in records:
            row: dict[str, Any] = {"trial_id": r.trial.id}
            for key, value in r.trial.fixed.items():
                row[key] = value
            for key, value in r.trial.sequences.items():
                row[key] = repr(value)
            row.update({"steps": r.steps, "status": r.status})
            row.update(r.metrics or {})
            row.update({"error_type": r.error_type, "error": r.error})
            rows.append(row)
        frame = pd.DataFrame(rows)
        best = None
        if tuner is not None:
            done = [r for r in records if r.status == "done"]
            if done:
                best = max(done, key=lambda r: tuner.score(r.metrics))
                if not math.isfinite(tuner.score(best.metrics)):
                    best = None
        return Result(frame, best, self._stats(run, stats, before), records)

    def _stats(self, run: _Run, stats: RunStats, before: RunStats) -> StudyStats:
        asked = run.progress.requests  # every request of this run, as the plan keys it
        executed = stats.executed_steps - before.executed_steps
        worker_seconds = stats.worker_seconds - before.worker_seconds
        seconds = trial_by_trial_seconds(
            asked.requested_steps,
            executed,
            worker_seconds,
            fallback=mean_seconds_per_step(self.plan.nodes),
        )
        return StudyStats(
            trials=len(run.records),
            requested_steps=asked.requested_steps,
            unique_steps=asked.unique_steps,
            merge_rate=asked.merge_rate,
            executed_steps=executed,
            stages=stats.stages - before.stages,
            worker_seconds=worker_seconds,
            trial_by_trial_seconds=0.0 if seconds is None else seconds,
            wall_seconds=time.time() - run.started,
            train_seconds=stats.train_seconds - before.train_seconds,
            stages_resumed_in_memory=stats.resumed_from_memory - before.resumed_from_memory,
            stages_resumed_from_checkpoint=(
                stats.resumed_from_checkpoint - before.resumed_from_checkpoint
            ),
            stages_from_scratch=stats.started_from_scratch - before.started_from_scratch,
        )

    def curves(self, result: Result) -> pd.DataFrame:
        """Learning curves of ``result``'s trials: one row per trial and recorded step.

        Metrics of a shared prefix were measured once; every trial through it gets those rows,
        so each trial's curve is complete. Columns: ``trial_id``, ``step`` and one per metric.
        Record more points with ``Study(eval_every=...)``.
        """
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for record in result.records:
            node = self.plan.locate(self._plan_trial(record.trial), record.steps)
            if node is None:
                continue
            path = node.path()
            for here, below in zip(path, path[1:] + [None]):
                end = record.steps if below is None else below.start
                for step in sorted(s for s in here.metrics if here.start < s <= end):
                    rows.append({"trial_id": record.trial.id, "step": step, **here.metrics[step]})
        frame = pd.DataFrame(rows)
        return frame.sort_values(["trial_id", "step"], ignore_index=True) if rows else frame

    def dashboard(
        self,
        *,
        serve: bool = False,
        scheduler: bool = False,
        port: int = 0,
        host: str = "127.0.0.1",
        interval: float = 2.0,
    ) -> Any:
        """The dashboard (:mod:`hippo_dask.dashboard`): a Bokeh layout of the panels now (show it
        with ``bokeh.io.show``); ``serve=True``: a live server in the background (its ``url``,
        a link in Jupyter); ``scheduler=True``: pages on the Dask dashboard (their URLs).

        The server listens on ``host``, 127.0.0.1 by default (this machine only); another
        ``host`` (``"0.0.0.0"``) shows the study to anyone who can reach the port, without a
        login (see :func:`hippo_dask.dashboard.serve`)."""
        from hippo_dask import dashboard

        self.plan.flush()
        reader = dashboard.StudyReader(self.root, self.storage_options)
        if scheduler:
            return dashboard.add_to_scheduler(self.client, reader, interval=interval)
        if serve:
            return dashboard.serve(reader, port=port, host=host, interval=interval, background=True)
        board = dashboard.StudyDashboard(reader, interactive=False)
        board.update()
        return board.root

    def __repr__(self) -> str:
        return f"<Study {self.name!r} at {self._redact(self.root)}, trainer {self.trainer_cls.__qualname__}>"


def _load_problem(payload: bytes) -> str | None:
    """On a worker: why the pickled trainer class cannot be loaded here, or ``None``."""
    import pickle

    try:
        pickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - reported back to the driver
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_picklable(trainer_cls: type[Trainer]) -> None:
    """Workers receive the trainer class by pickle: fail now, not in the first stage."""
    import cloudpickle

    try:
        cloudpickle.dumps(trainer_cls)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's to fix
        raise HippoError(
            f"Study: trainer class {trainer_cls.__qualname__} cannot be pickled to send to the "
            f"workers ({type(exc).__name__}: {exc}); keep unpicklable objects (locks, open "
            "files, clients) out of class attributes and create them in __init__"
        ) from None
