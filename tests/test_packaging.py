"""The conda environment and pyproject.toml declare the same dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_NAME = {"torch": "pytorch", "moto[server]": "moto"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_lists_every_pyproject_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [_name(r) for r in project["dependencies"]]
    for requirements in project["optional-dependencies"].values():
        wanted += [_name(r) for r in requirements if not r.startswith("hippo-dask")]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    missing = sorted(CONDA_NAME.get(n, n) for n in wanted if CONDA_NAME.get(n, n) not in conda)
    assert missing == [], f"environment.yml lacks {missing}"
    assert "python" in conda
