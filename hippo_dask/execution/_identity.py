"""Names for training states that are equal in every process: digests of per-step values.

The state after ``s`` steps along a trial's path is determined by the trainer (its fingerprint),
the fixed values and every sequential value at steps ``0 .. s - 1``. Its digest names the
checkpoint file (so two writers of one state write the same bytes to the same name) and the Dask
keys of stages (so one stage submitted by two studies on one client is one task).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from hippo_dask.trial import Trial

__all__ = ["state_digest"]


def _value_bytes(values: np.ndarray) -> bytes:
    if values.dtype == object:
        return json.dumps(values.tolist()).encode()
    return np.ascontiguousarray(values).tobytes()


def state_digest(trial: Trial, steps: int, fingerprint: str = "") -> str:
    """Hex digest of the state after ``steps`` steps of ``trial`` (``steps >= 0``).

    ``fingerprint`` (the trainer's code fingerprint) separates trainers: the same schedule
    trained by different code is a different state.
    """
    h = hashlib.sha256()
    h.update(fingerprint.encode())
    h.update(b"\0")
    h.update(repr((trial.fixed_key, trial.names, trial.kinds, steps)).encode())
    for name in trial.names:
        h.update(b"\0")
        h.update(_value_bytes(trial.sequences[name].values(0, steps)))
    return h.hexdigest()
