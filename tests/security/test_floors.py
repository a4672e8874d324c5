"""Dependency floors: what the installed metadata declares is what the code relies on.

"No checkpoint can run code" rests on ``torch.load(weights_only=True)``, which crafted files
could bypass before torch 2.10 (CVE-2025-32434, CVE-2026-24747): checkpoints must refuse to
load on an older torch, and the package must not install with one. The metrics store relies on
zarr >= 3.1.3 writing local chunks atomically; zarr 3 needs Python >= 3.11.
"""

from __future__ import annotations

import io
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml
import zarr

import hippo_dask as hd
from hippo_dask import _floors
from hippo_dask.storage import FsspecCheckpointStore
from hippo_dask.torch import load_state, save_state

ROOT = Path(__file__).resolve().parents[2]
DIST = "hippo-dask"


def _floor(requirements: list[str], name: str, extra: str | None = None) -> tuple[int, ...]:
    """The ``>=`` floor of ``name`` among ``requirements`` (metadata or pyproject syntax)."""
    found = []
    for line in requirements:
        spec, _, marker = line.partition(";")
        if extra is not None and f'extra == "{extra}"' not in marker.replace("'", '"'):
            continue
        match = re.fullmatch(rf"\s*{re.escape(name)}\s*(\[[^\]]*\])?\s*>=\s*([\d.]+)\s*", spec)
        if match:
            found.append(tuple(int(p) for p in match.group(2).split(".")))
    assert len(found) == 1, f"expected one `{name}>=` requirement, found {found} in {requirements}"
    return found[0]


def _python_floor(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"\s*>=\s*([\d.]+)\s*", text)
    assert match, f"Requires-Python should be a plain `>=` floor, got {text!r}"
    return tuple(int(p) for p in match.group(1).split("."))


def test_installed_metadata_declares_the_floors_the_code_relies_on() -> None:
    requirements = metadata.requires(DIST) or []
    assert _floor(requirements, "torch", extra="torch") == _floors.TORCH_FLOOR == (2, 10)
    assert _floor(requirements, "zarr") == _floors.ZARR_FLOOR == (3, 1, 3)
    requires_python = metadata.metadata(DIST)["Requires-Python"]
    assert _python_floor(requires_python) == _floors.PYTHON_FLOOR == (3, 11)


def test_pyproject_and_the_conda_environment_declare_the_same_floors() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _floor(project["optional-dependencies"]["torch"], "torch") == _floors.TORCH_FLOOR
    assert _floor(project["dependencies"], "zarr") == _floors.ZARR_FLOOR
    assert _python_floor(project["requires-python"]) == _floors.PYTHON_FLOOR
    conda = [
        d
        for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
        if isinstance(d, str)
    ]
    assert _floor(conda, "pytorch") == _floors.TORCH_FLOOR
    assert _floor(conda, "zarr") == _floors.ZARR_FLOOR
    assert _floor(conda, "python") == _floors.PYTHON_FLOOR


def test_the_installed_versions_meet_the_floors() -> None:
    assert _floors.release(torch.__version__) >= _floors.TORCH_FLOOR
    assert _floors.release(zarr.__version__) >= _floors.ZARR_FLOOR
    assert sys.version_info[:2] >= _floors.PYTHON_FLOOR


@pytest.mark.parametrize(
    ("version", "release"),
    [
        ("2.13.0+cpu", (2, 13, 0)),
        ("2.10.0", (2, 10, 0)),
        ("3.1.3", (3, 1, 3)),
        ("2.10.1.post2", (2, 10, 1)),
    ],
)
def test_release_reads_plain_versions(version: str, release: tuple[int, ...]) -> None:
    assert _floors.release(version) == release


@pytest.mark.parametrize(
    "version",
    ["2.10.0rc1", "2.10.0a0+git1234", "2.10.0.dev20260101", "2.9.1", "2.6.0", "not-a-version"],
)
def test_pre_releases_and_older_versions_are_below_the_torch_floor(version: str) -> None:
    assert _floors.release(version) < _floors.TORCH_FLOOR


def _checkpoint() -> bytes:
    buffer = io.BytesIO()
    save_state({"w": torch.arange(3.0), "step": 7}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("old", ["2.9.1", "2.6.0", "2.10.0rc1"])
def test_checkpoints_refuse_to_load_on_an_older_torch(
    old: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = _checkpoint()
    store = FsspecCheckpointStore(str(tmp_path / "ckpt"))
    uri = store.save("step-7", {"w": torch.arange(3.0), "step": 7})
    monkeypatch.setattr(torch, "__version__", old)
    with pytest.raises(
        hd.DependencyError,
        match=(
            rf"refusing to load checkpoint .* with torch {re.escape(old)}: before torch 2\.10.*"
            r"CVE-2025-32434.*CVE-2026-24747.*pip install 'torch>=2\.10'"
        ),
    ) as refused:
        load_state(io.BytesIO(data), name="file:///ckpt/x")
    assert isinstance(refused.value, hd.HippoError)
    with pytest.raises(hd.DependencyError, match=re.escape(uri)):
        store.load(uri)
    monkeypatch.undo()
    assert load_state(io.BytesIO(data))["step"] == 7
    assert store.load(uri)["step"] == 7
