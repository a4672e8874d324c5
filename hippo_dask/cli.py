"""The ``hippo-dask`` command line.

``hippo-dask plan SPACE_FILE --steps N [--trials K]`` dry-runs a search space: it runs the Python
file ``SPACE_FILE``, which must define ``space`` (a :class:`~hippo_dask.GridSpace` or
:class:`~hippo_dask.RandomSpace`), adds every trial to an in-memory search plan for ``N`` steps and
prints what sharing saves and the stage tree's critical path. Nothing is trained or stored.

``hippo-dask dashboard STORAGE_URL [--name STUDY] [--port 5006]`` serves the live dashboard of a
study (:mod:`hippo_dask.dashboard`); ``hippo-dask report STORAGE_URL -o report.html`` writes it
to a standalone HTML file. ``hippo-dask gc`` deletes checkpoints a study no longer needs;
``hippo-dask compact`` writes a snapshot of a study's search plan (:mod:`hippo_dask.plan._snapshot`).
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
import traceback
from collections.abc import Sequence

from hippo_dask._redact import mask_url
from hippo_dask.plan import SearchPlan, build_stage_tree
from hippo_dask.space import GridSpace, RandomSpace
from hippo_dask.trial import Trial

__all__ = ["main"]


class SpaceFileError(Exception):
    """The space file failed or defines no usable ``space``; the message is what to print."""


def _count(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hippo-dask", description="Hyper-parameter optimization that shares training prefixes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plan = commands.add_parser(
        "plan",
        help="dry-run a search space: merge rate, stages and critical path",
        description=(
            "Run SPACE_FILE (a Python file defining `space`, a GridSpace or RandomSpace), add every "
            "trial to an in-memory search plan and print what sharing saves. Trains nothing."
        ),
    )
    plan.add_argument("space_file", metavar="SPACE_FILE", help="Python file that defines `space`")
    plan.add_argument(
        "--steps", type=_count, required=True, metavar="N", help="steps every trial is trained for"
    )
    plan.add_argument(
        "--trials",
        type=_count,
        metavar="K",
        help="trials to draw from a RandomSpace (required without n_trials); "
        "with a GridSpace, only the first K configurations",
    )
    plan.add_argument(
        "--seconds-per-step",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="estimated seconds per training step, for the critical path (default 1)",
    )
    plan.set_defaults(run=_plan, parser=plan)

    gc = commands.add_parser(
        "gc",
        help="delete checkpoints a study no longer needs",
        description=(
            "Delete checkpoints of the study at STORAGE_URL (with --name, the study of that name "
            "under it) that no pending request needs. Never deletes what a running study resumes "
            "from. --keep all only removes orphaned files; branch-points (default) also "
            "checkpoints that are not where trials diverge; best keeps only the best trial's "
            "final checkpoint besides what pending requests need. Deletes only files of this "
            "study's own ckpt/ folder (whatever locations its journal holds), never the files "
            "of stages still running (their driver's lease), and temporaries of writers killed "
            "mid-write once older than --temp-age. Credentials come from the "
            "environment (e.g. AWS_ACCESS_KEY_ID) or --endpoint-url for S3-compatible stores."
        ),
    )
    gc.add_argument(
        "storage", metavar="STORAGE_URL", help="the study's folder, or its storage root with --name"
    )
    gc.add_argument("--name", help="the study's name, if STORAGE_URL is the storage root")
    gc.add_argument("--keep", choices=["best", "branch-points", "all"], default="branch-points")
    gc.add_argument("--metric", help="metric that ranks trials for --keep best")
    gc.add_argument("--mode", choices=["max", "min"], default="max")
    gc.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    gc.add_argument(
        "--orphan-age",
        type=_seconds,
        default=3600.0,
        metavar="S",
        help="delete unreferenced checkpoint files older than S seconds (default "
        "3600); files a running stage holds (a fresh lease) are kept",
    )
    gc.add_argument(
        "--temp-age",
        type=_seconds,
        default=None,
        metavar="S",
        help="delete temporary files of writers killed mid-write (checkpoints, "
        "journal segments, zarr chunks) older than S seconds (default: the "
        "orphan age)",
    )
    gc.add_argument(
        "--endpoint-url", help="S3-compatible endpoint (credentials from the environment)"
    )
    gc.set_defaults(run=_gc, parser=gc)

    compact = commands.add_parser(
        "compact",
        help="snapshot a study's search plan, so opening it reads only what came after",
        description=(
            "Write a snapshot of the search plan of the study at STORAGE_URL (with --name, the "
            "study of that name under it): opening the study then reads the snapshot and only the "
            "journal segments written after it. Deletes nothing unless --prune."
        ),
    )
    compact.add_argument(
        "storage", metavar="STORAGE_URL", help="the study's folder, or its storage root with --name"
    )
    compact.add_argument("--name", help="the study's name, if STORAGE_URL is the storage root")
    compact.add_argument(
        "--prune",
        action="store_true",
        help="also delete the journal segments and older snapshots the new "
        "snapshot holds (after reading it back); only while no study or "
        "dashboard has the plan open, and never needed for correctness",
    )
    compact.add_argument(
        "--endpoint-url", help="S3-compatible endpoint (credentials from the environment)"
    )
    compact.set_defaults(run=_compact, parser=compact)

    where = (
        "the storage root given to Study(..., storage=...), with --name, or a study's own "
        "folder; any fsspec URL"
    )
    board = commands.add_parser(
        "dashboard",
        help="serve a live dashboard of a study (stage tree, curves, savings, worker lanes)",
        description=(
            "Serve a Bokeh dashboard of the study at STORAGE_URL: its stage tree with the "
            "critical path, learning curves, savings and worker lanes, read from the plan "
            "journal and the metrics store every few seconds. Works from any machine that can "
            "read the storage, while the study runs or after it finished. Listens on 127.0.0.1 "
            "unless --host says otherwise."
        ),
    )
    board.add_argument("storage", metavar="STORAGE_URL", help=where)
    board.add_argument("--name", help="the study's name (needed when STORAGE_URL holds several)")
    board.add_argument(
        "--port",
        type=_port,
        default=5006,
        help="port to listen on (default 5006; 0 picks a free one)",
    )
    board.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; "
        "0.0.0.0 for every interface: anyone who can reach the port sees "
        "the study, there is no login; prefer an SSH tunnel)",
    )
    board.add_argument(
        "--interval",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="seconds between refreshes from storage (default 2)",
    )
    board.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another name browsers reach the server by (a proxy, a tunnel)",
    )
    board.add_argument(
        "--endpoint-url", help="S3-compatible endpoint (credentials from the environment)"
    )
    board.set_defaults(run=_dashboard, parser=board)

    report = commands.add_parser(
        "report",
        help="write a study's dashboard to a standalone HTML file",
        description=(
            "Write the dashboard panels of the study at STORAGE_URL, as they are now, to one "
            "HTML file that opens offline (Bokeh's JavaScript inline): to attach to a paper or "
            "a ticket."
        ),
    )
    report.add_argument("storage", metavar="STORAGE_URL", help=where)
    report.add_argument(
        "-o", "--output", required=True, metavar="FILE.html", help="the HTML file to write"
    )
    report.add_argument("--name", help="the study's name (needed when STORAGE_URL holds several)")
    report.add_argument(
        "--endpoint-url", help="S3-compatible endpoint (credentials from the environment)"
    )
    report.set_defaults(run=_report, parser=report)
    return parser


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value}")
    return value


def _needs_bokeh(command: str) -> str | None:
    """Why ``hippo-dask COMMAND`` cannot run here (Bokeh missing), or ``None``."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return (
            f"hippo-dask {command}: needs Bokeh, which is not installed; "
            "pip install 'hippo-dask[dashboard]'"
        )
    return None


def _dashboard(args: argparse.Namespace) -> int:
    """``hippo-dask dashboard``: serve the study's dashboard until interrupted."""
    from hippo_dask.dashboard import serve
    from hippo_dask.errors import HippoError

    problem = _needs_bokeh("dashboard")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    try:
        server = serve(
            args.storage,
            args.name,
            port=args.port,
            host=args.host,
            interval=args.interval,
            storage_options=options,
            allow_origin=args.allow_origin,
        )
    except HippoError as exc:
        print(f"hippo-dask dashboard: {mask_url(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the host is not ours
        print(
            f"hippo-dask dashboard: cannot listen on {args.host}:{args.port}: {exc}; pick "
            "another --port (0: any free one)",
            file=sys.stderr,
        )
        return 2
    print(
        f"hippo-dask dashboard: study {server.reader.name!r} ({mask_url(server.reader.root)}) at "
        f"{server.url} (Ctrl-C stops)",
        flush=True,
    )
    server.run()
    return 0


def _report(args: argparse.Namespace) -> int:
    """``hippo-dask report``: write the dashboard to a standalone HTML file."""
    from hippo_dask.dashboard import save_report
    from hippo_dask.errors import HippoError

    problem = _needs_bokeh("report")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    try:
        path = save_report(args.storage, args.output, args.name, storage_options=options)
    except HippoError as exc:
        print(f"hippo-dask report: {mask_url(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hippo-dask report: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    print(f"hippo-dask report: wrote {path}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from hippo_dask.errors import HippoError
    from hippo_dask.storage import collect_garbage

    url = args.storage.rstrip("/") + (f"/{args.name}" if args.name else "")
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    try:
        report = collect_garbage(
            url,
            options,
            keep=args.keep,
            metric=args.metric,
            mode=args.mode,
            dry_run=args.dry_run,
            orphan_age=args.orphan_age,
            temp_age=args.temp_age,
        )
    except HippoError as exc:
        print(f"hippo-dask gc: {mask_url(str(exc))}", file=sys.stderr)
        return 2
    print(f"{mask_url(url)}: {report}")
    for where in report.deleted + report.orphans + report.temporaries:
        print(f"  {where}")
    for problem in report.problems:
        print(f"hippo-dask gc: {problem}", file=sys.stderr)
    return 0


def _compact(args: argparse.Namespace) -> int:
    """``hippo-dask compact``: snapshot the study's plan (and prune with ``--prune``)."""
    import time

    from hippo_dask.errors import HippoError

    url = args.storage.rstrip("/") + (f"/{args.name}" if args.name else "")
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    started = time.perf_counter()
    try:
        plan = SearchPlan.open(url, options, create=False)
        replayed = plan.since_snapshot
        path = plan.compact(prune=args.prune)
    except (HippoError, OSError) as exc:
        print(f"hippo-dask compact: {mask_url(str(exc))}", file=sys.stderr)
        return 2
    stats = plan.stats()
    print(
        f"hippo-dask compact: {path}: {stats.trials} trials, {stats.requests} requests, "
        f"{stats.nodes} nodes ({replayed} journal records after the previous snapshot; "
        f"{time.perf_counter() - started:.1f} s)" + ("; pruned" if args.prune else "")
    )
    return 0


def _user_line(exc: BaseException, path: str) -> int | None:
    """The line of ``path`` that raised ``exc``: the deepest traceback frame in that file."""
    target = os.path.realpath(path)
    if isinstance(exc, SyntaxError) and exc.filename and os.path.realpath(exc.filename) == target:
        return exc.lineno
    line: int | None = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == target:
            line = frame.lineno
    return line


def _describe(exc: BaseException, path: str) -> str:
    """``path:LINE: ExceptionType: message`` (without ``LINE`` if no frame is in the file)."""
    line = _user_line(exc, path)
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    where = path if line is None else f"{path}:{line}"
    return f"{where}: {type(exc).__name__}" + (f": {message}" if message else "")


def load_space(path: str) -> GridSpace | RandomSpace:
    """Run ``path`` (not as ``__main__``, its directory importable) and return its ``space``.

    Raises :class:`SpaceFileError` when the file raises, or defines no GridSpace/RandomSpace.
    """
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(path, run_name="__hippo_dask_space__")
    except Exception as exc:
        raise SpaceFileError(_describe(exc, path)) from exc
    finally:
        sys.path.remove(folder)
    if "space" not in namespace:
        raise SpaceFileError(
            f"{path}: defines no `space`; assign the search space to a module-level variable "
            "named `space`, e.g. space = hd.GridSpace(lr=[...]) or hd.RandomSpace(..., n_trials=20)"
        )
    space = namespace["space"]
    if not isinstance(space, (GridSpace, RandomSpace)):
        raise SpaceFileError(
            f"{path}: `space` is a {type(space).__name__}, expected a hippo_dask GridSpace or "
            "RandomSpace"
        )
    return space


def _sized(space: RandomSpace) -> bool:
    """Whether a random space was built with ``n_trials`` (``len`` raises TypeError without)."""
    try:
        len(space)
    except TypeError:
        return False
    return True


def _trials(space: GridSpace | RandomSpace, limit: int | None, path: str) -> list[Trial]:
    """The trials to plan: ``limit`` of them if given, else the whole space."""
    try:
        if isinstance(space, RandomSpace):
            return space.sample(limit if limit is not None else len(space))
        trials: list[Trial] = []
        for trial in space:
            if limit is not None and len(trials) == limit:
                break
            trials.append(trial)
        return trials
    except Exception as exc:  # a `where` function or a value the space cannot hold
        raise SpaceFileError(_describe(exc, path)) from exc


def _plan(args: argparse.Namespace) -> int:
    """``hippo-dask plan``: print the figures of planning the space for ``args.steps`` steps."""
    parser: argparse.ArgumentParser = args.parser
    path: str = args.space_file
    if not os.path.isfile(path):
        parser.error(f"SPACE_FILE {path!r}: no such file")
    try:
        space = load_space(path)
        if isinstance(space, RandomSpace) and args.trials is None and not _sized(space):
            parser.error(
                f"{path}: `space` is a RandomSpace without n_trials, so it has no size: pass "
                "--trials K (how many trials to draw), or build it with n_trials=K"
            )
        trials = _trials(space, args.trials, path)
    except SpaceFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    plan = SearchPlan()
    for trial in trials:
        plan.add(trial, args.steps)
    stats = plan.stats()
    seconds: float = args.seconds_per_step
    tree = build_stage_tree(plan.pending(), seconds_per_step=lambda node: seconds)
    path_stages = tree.critical_path()
    print(f"space: {path} ({type(space).__name__})")
    repeats = len(trials) - stats.trials
    print(
        f"trials: {stats.trials}" + (f" ({repeats} repeated draws planned once)" if repeats else "")
    )
    print(f"requested steps: {stats.requested_steps}")
    print(f"unique steps: {stats.unique_steps}")
    print(f"merge rate: {stats.merge_rate:.2f}")
    print(f"stages: {len(tree)}")
    depth = len(path_stages)
    print(
        f"critical path: {depth} stage{'' if depth == 1 else 's'}, "
        f"{sum(s.steps for s in path_stages)} steps, "
        f"{sum(s.seconds for s in path_stages):.1f} s at {seconds:g} s per step"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hippo-dask`` console script; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
