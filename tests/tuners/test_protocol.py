"""``StudyLike`` states what a tuner needs from a study, and ``Study`` provides it.

Tuners are typed against the protocol instead of ``hippo_dask.study.Study`` so that the tuners
package does not import the study module, which imports the tuners. A type checker checks that
``Study`` satisfies the protocol wherever a study is passed to ``Tuner.run``; these tests check
the same at runtime: every member the protocol names exists on ``Study`` (and on the fake study
of the tuner tests) with the same parameters, and no tuner module imports the study module.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

import hippo_dask as hd
import hippo_dask.tuners._base as base
from hippo_dask.tuners import StudyLike
from tests.tuners.fake import FakeStudy

TUNERS = Path(hd.tuners.__file__).parent


def members(protocol: type) -> list[str]:
    """The names a protocol declares: its methods, properties and annotated attributes."""
    names = {name for name in vars(protocol) if not name.startswith("_")}
    names |= set(getattr(protocol, "__annotations__", {}))
    return sorted(names)


def hints(function: Any, namespace: dict[str, Any]) -> dict[str, Any]:
    return typing.get_type_hints(function, globalns=namespace)


def test_protocol_names_train() -> None:
    assert members(StudyLike) == ["train"]
    assert hd.tuners.StudyLike is StudyLike


@pytest.mark.parametrize("study_cls", [hd.Study, FakeStudy], ids=["Study", "FakeStudy"])
def test_study_has_every_member_with_the_same_signature(study_cls: type) -> None:
    for name in members(StudyLike):
        assert hasattr(study_cls, name), f"{study_cls.__name__} lacks {name!r}"
        wanted = getattr(StudyLike, name)
        got = getattr(study_cls, name)
        if not callable(wanted):
            continue
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), name
        want_params = [(p.name, p.kind) for p in inspect.signature(wanted).parameters.values()]
        got_params = [(p.name, p.kind) for p in inspect.signature(got).parameters.values()]
        assert got_params == want_params, name


def test_study_train_has_the_protocols_types() -> None:
    namespace = {**vars(base), "Trial": hd.Trial}
    assert hints(hd.Study.train, namespace) == hints(StudyLike.train, namespace)


def test_no_tuner_module_imports_the_study_module() -> None:
    offenders = []
    for path in sorted(TUNERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(n == "hippo_dask.study" or n.startswith("hippo_dask.study.") for n in names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def _study_is_study_like(study: hd.Study) -> StudyLike:
    """For a type checker run over the tests: ``Study`` is assignable to ``StudyLike``."""
    return study
