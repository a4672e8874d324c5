"""The oldest dependency versions that hippo_dask's promises rest on, and the checks for them.

``pyproject.toml`` declares these floors (``tests/security/test_floors.py`` checks that the
installed metadata says the same); the constants here are what the code relies on:

:data:`TORCH_FLOOR`
    "No checkpoint can run code" rests on ``torch.load(weights_only=True)``. Its restricted
    unpickler could be bypassed by crafted files before torch 2.6.0 (CVE-2025-32434) and again
    before 2.10.0 (CVE-2026-24747). :func:`check_torch_loads_safely` refuses to load a
    checkpoint on an older torch; :func:`hippo_dask.torch.load_state`, through which every
    checkpoint loads, calls it before unpickling a byte.
:data:`ZARR_FLOOR`
    The metrics store relies on zarr's local store writing each chunk atomically (a temporary
    file, then a rename), which zarr does from 3.1.3 on.
:data:`PYTHON_FLOOR`
    What zarr 3 needs.
"""

from __future__ import annotations

import re

from hippo_dask.errors import DependencyError

__all__ = [
    "PYTHON_FLOOR",
    "TORCH_FLOOR",
    "ZARR_FLOOR",
    "check_torch_loads_safely",
    "release",
]

TORCH_FLOOR: tuple[int, ...] = (2, 10)
"""Oldest torch whose ``torch.load(weights_only=True)`` has no known way to run code."""

ZARR_FLOOR: tuple[int, ...] = (3, 1, 3)
"""Oldest zarr whose local store writes atomically."""

PYTHON_FLOOR: tuple[int, ...] = (3, 11)
"""Oldest Python (zarr 3 needs it)."""

_RELEASE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)(.*)$")
_PRE = re.compile(r"^[-_.]?(a|alpha|b|beta|c|rc|pre|preview|dev)", re.IGNORECASE)


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string, for comparing with a floor.

    ``"2.13.0+cpu"`` gives ``(2, 13, 0)``. A pre-release or development build counts as just
    below its release (``"2.10.0rc1"`` and ``"2.10.0.dev20260101"`` compare below ``(2, 10)``),
    since a fix is only promised by the release. An unparsable string gives ``()``, below
    every floor.
    """
    found = _RELEASE.match(str(version))
    if found is None:
        return ()
    parts = tuple(int(p) for p in found.group(1).split("."))
    if _PRE.match(found.group(2)):
        while parts and parts[-1] == 0:  # 2.10.0rc1 -> 2.10 -> just below it
            parts = parts[:-1]
        if not parts:
            return ()
        return (*parts[:-1], parts[-1] - 1, 2**31)
    return parts


def _at_least(version: str, floor: tuple[int, ...]) -> bool:
    parts = release(version)
    width = max(len(parts), len(floor))
    return parts + (0,) * (width - len(parts)) >= floor + (0,) * (width - len(floor))


def _dotted(floor: tuple[int, ...]) -> str:
    return ".".join(map(str, floor))


def check_torch_loads_safely(what: str = "a checkpoint") -> None:
    """Refuse to go on unless the installed torch is at least :data:`TORCH_FLOOR`.

    Reads ``torch.__version__`` at every call (cheap: a string comparison).

    Parameters
    ----------
    what
        What was about to be loaded, for the message (a checkpoint's URI).

    Raises
    ------
    DependencyError
        If torch is older than :data:`TORCH_FLOOR` (or its version cannot be read): its
        ``torch.load(weights_only=True)`` can be made to run code by a crafted file.
    """
    import torch

    version = str(getattr(torch, "__version__", "unknown"))
    if _at_least(version, TORCH_FLOOR):
        return
    floor = _dotted(TORCH_FLOOR)
    raise DependencyError(
        f"refusing to load {what} with torch {version}: before torch {floor}, "
        "torch.load(weights_only=True) can be made to run code by a crafted file "
        "(CVE-2025-32434, fixed in 2.6.0; CVE-2026-24747, fixed in 2.10.0), and hippo_dask "
        f"promises that no checkpoint can run code. Upgrade torch on every worker: "
        f"pip install 'torch>={floor}'"
    )
