"""Settings: a keyword argument, else ``dask.config``, else the packaged ``hippo.yaml``."""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

__all__ = ["setting"]

_PATH = os.path.join(os.path.dirname(__file__), "hippo.yaml")

with open(_PATH, encoding="utf-8") as _handle:
    _DEFAULTS: dict[str, Any] = yaml.safe_load(_handle)
dask.config.update_defaults(_DEFAULTS)


def setting(name: str, value: Any = None) -> Any:
    """``value`` if given, else ``dask.config.get("hippo.<name>")``."""
    return dask.config.get(f"hippo.{name}") if value is None else value
