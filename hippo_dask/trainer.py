"""The Trainer: what users write so the engine can train, pause, branch and resume their model.

The engine calls, on a worker:

1. ``Trainer(config)`` with the trial's fixed values (optimizer name, seed, width, ...);
2. ``load_state_dict(state)`` when the stage resumes from a checkpoint;
3. ``setup(hp)`` with every sequential value right after (1) or (2), and later with only the
   values that changed before the next step;
4. ``train(steps)`` to train that many steps at the current values (``train(2); train(3)`` must
   give the same weights as ``train(5)``, which a resumable data order makes true);
5. ``evaluate()`` where a request ends, and ``state_dict()`` where a checkpoint is due.

This follows Hippo's client library (section 5.2, Figure 9), where ``setup`` receives the
updated sequential values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

__all__ = ["Trainer"]


class Trainer(ABC):
    """Base class of a user's training code.

    Parameters
    ----------
    config
        The trial's fixed values, by name, in their JSON form (lists, not tuples).

    Notes
    -----
    ``state_dict`` must hold everything needed to resume bit for bit: model and optimizer state,
    data order position, random generator states, and any counters. Values may be tensors, numpy
    arrays, Python scalars and strings, and nested dicts, lists and tuples of them; checkpoints
    carry them exactly and load them with ``torch.load(weights_only=True)``, so no code runs on
    load. :mod:`hippo_dask.torch` has a resumable data order and RNG capture to help.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    @abstractmethod
    def setup(self, hp: Mapping[str, Any]) -> None:
        """Apply sequential hyper-parameter values (all of them first, then only changes)."""

    @abstractmethod
    def train(self, steps: int) -> None:
        """Train ``steps`` steps at the current values."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Metrics of the current model, e.g. ``{"val_acc": 0.93, "val_loss": 0.21}``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly where training is now."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (possibly in another process)."""
