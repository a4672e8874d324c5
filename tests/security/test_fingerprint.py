"""The trainer fingerprint covers the user's own code the trainer uses, not installed packages.

Results of edited code must never be served as results of the new code: the fingerprint that
salts every state changes when the trainer's module, its base classes, its model builder or a
helper in its package changes, even if the trainer class's own text did not. It stays put when
an installed package changes, and is the same in a fresh process. A trainer whose source cannot
be read warns that edits go undetected and says to declare ``version=``.
"""

from __future__ import annotations

import importlib
import os
import py_compile
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import hippo_dask as hd

TRAINER = '''
from hippo_dask.testing.simulated import SimulatedTrainer


def helper(score):
    return score * {factor}


class HelpedTrainer(SimulatedTrainer):
    """The trainer's own text never changes; the helper above does."""

    def evaluate(self):
        metrics = super().evaluate()
        metrics["score"] = helper(metrics["score"])
        return metrics
'''

PACKAGE = {
    "__init__.py": "",
    "models.py": "def build_model(width):\n    return [0.0] * width * {width}\n",
    "base.py": textwrap.dedent("""
        from hippo_dask.testing.simulated import SimulatedTrainer


        class BaseTrainer(SimulatedTrainer):
            def evaluate(self):
                metrics = super().evaluate()
                metrics["bias"] = {bias}
                return metrics
    """),
    "lazy.py": "def late():\n    return {late}\n",
    "trainer.py": textwrap.dedent("""
        from fp_pkg.base import BaseTrainer
        from fp_pkg.models import build_model


        class PackagedTrainer(BaseTrainer):
            def setup(self, hp):
                super().setup(hp)
                self.model = build_model(2)

            def evaluate(self):
                from fp_pkg.lazy import late  # imported only when it runs

                metrics = super().evaluate()
                metrics["late"] = late()
                return metrics
    """),
}


REPL = textwrap.dedent("""
    from hippo_dask.testing.simulated import SimulatedTrainer

    class TypedInTrainer(SimulatedTrainer):
        pass
""")


def _fingerprint(trainer: type[hd.Trainer], tmp_path: Path, **kwargs: object) -> str:
    study = hd.Study("fingerprint", trainer, storage=str(tmp_path / "runs"), **kwargs)  # type: ignore[arg-type]
    return study.fingerprint


def _write(folder: Path, files: dict[str, str], **values: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text.format(**values) if values else text)


def _reload(name: str) -> object:
    importlib.invalidate_caches()
    return importlib.reload(importlib.import_module(name))


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A folder on sys.path for modules the test writes; they leave sys.modules afterwards."""
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith(("fp_", "fp_pkg")):
            del sys.modules[name]


def test_editing_a_helper_in_the_trainers_module_changes_the_fingerprint(
    code: Path, tmp_path: Path
) -> None:
    source = code / "fp_helped.py"
    source.write_text(TRAINER.format(factor=1))
    first = _fingerprint(importlib.import_module("fp_helped").HelpedTrainer, tmp_path)
    assert first.startswith("HelpedTrainer:")
    assert _fingerprint(_reload("fp_helped").HelpedTrainer, tmp_path) == first  # type: ignore[attr-defined]
    source.write_text(TRAINER.format(factor=2))
    edited = _fingerprint(_reload("fp_helped").HelpedTrainer, tmp_path)  # type: ignore[attr-defined]
    assert edited != first
    # a declared version wins over the code, edited or not
    declared = _fingerprint(_reload("fp_helped").HelpedTrainer, tmp_path, version="7")  # type: ignore[attr-defined]
    assert declared == "HelpedTrainer:v:7"


def test_base_classes_model_builders_and_package_helpers_count(code: Path, tmp_path: Path) -> None:
    values = {"width": 1, "bias": 0, "late": 0}
    _write(code / "fp_pkg", PACKAGE, **values)
    trainer = importlib.import_module("fp_pkg.trainer").PackagedTrainer
    first = _fingerprint(trainer, tmp_path)
    seen = {first}
    for key in ("width", "bias", "late"):  # the model builder, the base class, a lazy helper
        values[key] += 1
        _write(code / "fp_pkg", PACKAGE, **values)
        for module in ("fp_pkg.models", "fp_pkg.base", "fp_pkg.trainer"):
            _reload(module)
        now = _fingerprint(sys.modules["fp_pkg.trainer"].PackagedTrainer, tmp_path)
        assert now not in seen, f"editing {key} did not change the fingerprint"
        seen.add(now)
    # a virtual environment kept inside the package is not the user's code
    _write(code / "fp_pkg" / "venv", {"pyvenv.cfg": "home = /usr/bin\n"})
    _write(code / "fp_pkg" / "venv" / "lib" / "dep", {"dep.py": "X = {x}\n"}, x=1)
    assert _fingerprint(sys.modules["fp_pkg.trainer"].PackagedTrainer, tmp_path) == now
    _write(code / "fp_pkg" / "venv" / "lib" / "dep", {"dep.py": "X = {x}\n"}, x=2)
    assert _fingerprint(sys.modules["fp_pkg.trainer"].PackagedTrainer, tmp_path) == now
    # the same in a fresh process, with another hash seed and working directory
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import hippo_dask as hd; "
        "from fp_pkg.trainer import PackagedTrainer as T; "
        "print(hd.Study('fingerprint', T, storage=sys.argv[2]).fingerprint)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    fresh = subprocess.run(
        [sys.executable, "-c", script, str(code), str(tmp_path / "other")],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(code),
        timeout=120,
        check=False,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == now


def test_a_helper_in_a_sibling_module_counts_an_installed_package_does_not(
    code: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "env" / "lib" / "site-packages"
    monkeypatch.syspath_prepend(str(installed))
    _write(installed / "fp_installed", {"__init__.py": "def scale(x):\n    return x * {k}\n"}, k=1)
    _write(code, {"fp_sibling.py": "def build():\n    return {k}\n"}, k=1)
    _write(
        code,
        {
            "fp_script_trainer.py": textwrap.dedent("""
        from fp_installed import scale
        from fp_sibling import build

        from hippo_dask.testing.simulated import SimulatedTrainer


        class ScriptTrainer(SimulatedTrainer):
            def evaluate(self):
                metrics = super().evaluate()
                metrics["score"] = scale(metrics["score"]) + build()
                return metrics
    """)
        },
    )
    trainer = importlib.import_module("fp_script_trainer").ScriptTrainer
    first = _fingerprint(trainer, tmp_path)

    _write(installed / "fp_installed", {"__init__.py": "def scale(x):\n    return x * {k}\n"}, k=3)
    _reload("fp_installed")
    trainer = _reload("fp_script_trainer").ScriptTrainer  # type: ignore[attr-defined]
    assert _fingerprint(trainer, tmp_path) == first, "an installed package changed it"

    _write(code, {"fp_sibling.py": "def build():\n    return {k}\n"}, k=2)
    _reload("fp_sibling")
    trainer = _reload("fp_script_trainer").ScriptTrainer  # type: ignore[attr-defined]
    assert _fingerprint(trainer, tmp_path) != first, "the user's helper module did not count"


def test_a_trainer_defined_without_source_warns_to_declare_a_version(tmp_path: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    typed = compile(REPL, "<stdin>", "exec")  # what a REPL compiles: no file to read back
    exec(typed, namespace)  # noqa: S102 - the test stands in for a user typing into a REPL
    trainer = namespace["TypedInTrainer"]
    with pytest.warns(
        hd.HippoWarning,
        match=r"cannot read the source of trainer class .*"
        r"TypedInTrainer.*edits to it cannot be detected.*version=",
    ):
        _fingerprint(trainer, tmp_path)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error", hd.HippoWarning)
        assert _fingerprint(trainer, tmp_path, version="1") == "TypedInTrainer:v:1"  # type: ignore[arg-type]


def test_a_trainer_from_a_pyc_only_module_warns(code: Path, tmp_path: Path) -> None:
    source = code / "fp_compiled.py"
    source.write_text(TRAINER.format(factor=1))
    py_compile.compile(str(source), cfile=str(code / "fp_compiled.pyc"), doraise=True)
    source.unlink()
    importlib.invalidate_caches()
    module = importlib.import_module("fp_compiled")
    assert module.__file__ is not None and module.__file__.endswith(".pyc")
    with pytest.warns(hd.HippoWarning, match=r"cannot read the source.*HelpedTrainer.*version="):
        _fingerprint(module.HelpedTrainer, tmp_path)
