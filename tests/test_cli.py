"""The ``hippo-dask`` command line: ``hippo-dask plan SPACE_FILE --steps N [--trials K]``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cli import main
from hippo_dask.plan import SearchPlan

GRID = """\
import hippo_dask as hd
from hippo_dask import seq

space = hd.GridSpace(
    lr=[seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
        seq.StepLR(0.1, gamma=0.1, milestones=[40, 50]),
        seq.Warmup(5, 0.1, then=seq.Exponential(0.1, gamma=0.95))],
    batch_size=[seq.Constant(128), seq.MultiStep([128, 256], milestones=[25])],
    optimizer=["sgd", "adam"],
)
"""


def grid_space() -> hd.GridSpace:
    """The space GRID defines, built here so the test computes its own figures."""
    return hd.GridSpace(
        lr=[
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
            seq.StepLR(0.1, gamma=0.1, milestones=[40, 50]),
            seq.Warmup(5, 0.1, then=seq.Exponential(0.1, gamma=0.95)),
        ],
        batch_size=[seq.Constant(128), seq.MultiStep([128, 256], milestones=[25])],
        optimizer=["sgd", "adam"],
    )


def expected_output(
    path: Path, space: hd.GridSpace | hd.RandomSpace, trials: list[hd.Trial], steps: int
) -> str:
    plan = SearchPlan()
    for trial in trials:
        plan.add(trial, steps)
    stats = plan.stats()
    tree = plan.stage_tree()  # unprofiled nodes count 1 s per step, the CLI's default
    critical = tree.critical_path()
    depth = len(critical)
    assert stats.merge_rate > 1
    repeats = len(trials) - stats.trials  # a random space may draw one configuration twice
    return (
        f"space: {path} ({type(space).__name__})\n"
        f"trials: {stats.trials}"
        + (f" ({repeats} repeated draws planned once)" if repeats else "")
        + "\n"
        f"requested steps: {stats.requested_steps}\n"
        f"unique steps: {stats.unique_steps}\n"
        f"merge rate: {stats.merge_rate:.2f}\n"
        f"stages: {len(tree)}\n"
        f"critical path: {depth} stage{'' if depth == 1 else 's'}, "
        f"{sum(s.steps for s in critical)} steps, {sum(s.seconds for s in critical):.1f} s "
        "at 1 s per step\n"
    )


def write(tmp_path: Path, text: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_plan_prints_the_plan_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GRID)
    assert main(["plan", str(path), "--steps", "60"]) == 0
    out, err = capsys.readouterr()
    space = grid_space()
    assert out == expected_output(path, space, list(space), 60)
    assert err == ""


def test_trials_takes_the_first_grid_configurations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GRID)
    assert main(["plan", str(path), "--steps", "60", "--trials", "5"]) == 0
    space = grid_space()
    assert capsys.readouterr().out == expected_output(path, space, list(space)[:5], 60)


def test_console_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GRID)
    script = Path(sys.executable).parent / "hippo-dask"
    assert script.exists(), f"console script not installed at {script}"
    done = subprocess.run(
        [str(script), "plan", str(path), "--steps", "60"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    space = grid_space()
    assert done.stdout == expected_output(path, space, list(space), 60)


@pytest.mark.parametrize(
    ("text", "line", "kind"),
    [
        (  # a sequence validated when it is built
            """\
            import hippo_dask as hd
            from hippo_dask import seq

            lr = [seq.Constant(0.1),
                  seq.StepLR(0.1, gamma=-1.0, milestones=[30])]
            space = hd.GridSpace(lr=lr)
            """,
            5,
            "InvalidSequenceError: StepLR: `gamma` must be > 0",
        ),
        (
            """\
            x = 1
            y = [1, 2
            space = None
            """,
            2,
            "SyntaxError: ",
        ),
        (  # raised inside a function of the file: the deepest line in the file
            """\
            def schedules():
                return {}["lr"]

            space = schedules()
            """,
            2,
            "KeyError: 'lr'",
        ),
        (  # raised by `where` while the space is enumerated, after the file ran
            """\
            import hippo_dask as hd
            from hippo_dask import seq

            def keep(config):
                return config["momentum"] > 0.5

            space = hd.GridSpace(lr=[seq.Constant(0.1)], where=keep)
            """,
            5,
            "KeyError: 'momentum'",
        ),
    ],
)
def test_errors_name_the_line_of_the_space_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, kind: str
) -> None:
    path = write(tmp_path, text)
    assert main(["plan", str(path), "--steps", "10"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}:{line}: {kind}")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_missing_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "import hippo_dask as hd\nspaces = []\n")
    assert main(["plan", str(path), "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: defines no `space`")
    assert "GridSpace" in err and "RandomSpace" in err


def test_space_of_the_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "space = [1, 2]\n")
    assert main(["plan", str(path), "--steps", "10"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: `space` is a list")


RANDOM = """\
import hippo_dask as hd
from hippo_dask import seq

space = hd.RandomSpace(
    lr=seq.StepLR(0.1, gamma=0.1, milestones=hd.choice([[30], [40]])),
    optimizer=hd.choice(["sgd", "adam"]),
    random_state=3{extra},
)
"""


def random_space(n_trials: int | None = None) -> hd.RandomSpace:
    """The space RANDOM defines (draws repeat configurations: only 4 exist)."""
    return hd.RandomSpace(
        lr=seq.StepLR(0.1, gamma=0.1, milestones=hd.choice([[30], [40]])),  # type: ignore[arg-type]
        optimizer=hd.choice(["sgd", "adam"]),
        random_state=3,
        n_trials=n_trials,
    )


def test_random_space_without_n_trials_needs_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RANDOM.format(extra=""))
    with pytest.raises(SystemExit) as exit:
        main(["plan", str(path), "--steps", "60"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "hippo-dask plan: error:" in err and "--trials" in err and "n_trials" in err

    assert main(["plan", str(path), "--steps", "60", "--trials", "6"]) == 0
    space = random_space()
    assert capsys.readouterr().out == expected_output(path, space, space.sample(6), 60)


def test_random_space_with_n_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, RANDOM.format(extra=", n_trials=5"))
    assert main(["plan", str(path), "--steps", "60"]) == 0
    space = random_space(n_trials=5)
    assert capsys.readouterr().out == expected_output(path, space, list(space), 60)


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"],
        ["--steps", "-3"],
        ["--steps", "ten"],
        [],
        ["--steps", "10", "--trials", "0"],
        ["--steps", "10", "--seconds-per-step", "nan"],
    ],
)
def test_bad_arguments_are_argparse_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = write(tmp_path, GRID)
    with pytest.raises(SystemExit) as exit:
        main(["plan", str(path), *argv])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hippo-dask plan") and "error:" in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["plan", str(tmp_path / "nope.py"), "--steps", "10"])
    assert exit.value.code == 2
    assert "no such file" in capsys.readouterr().err


def test_seconds_per_step_scales_the_critical_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GRID)
    assert main(["plan", str(path), "--steps", "60", "--seconds-per-step", "2.5"]) == 0
    assert "60 steps, 150.0 s at 2.5 s per step" in capsys.readouterr().out


def test_the_example_space(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "space_resnet.py"
    assert main(["plan", str(example), "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert "(GridSpace)" in out and "critical path:" in out
