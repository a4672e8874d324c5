"""Hyper-parameter sequences: a value as a function of the training step.

``Constant``, ``StepLR``, ``MultiStep``, ``Exponential``, ``Linear``, ``Cosine``,
``CosineWarmRestarts``, ``Cyclic`` follow ``torch.optim.lr_scheduler``; ``Warmup`` and
``Piecewise`` compose them. All are immutable, hashable and validated when built.
"""

from hippo_dask.seq._base import PiecewiseConstant, Sequence, SequenceTemplate, from_dict

# For hippo_dask's other packages (spaces, trials, tuners, the worker), not the user-facing API
# below: what stands for a value until drawn, drawing it, and a sequence value as a Python type.
from hippo_dask.seq._base import Sampleable as Sampleable
from hippo_dask.seq._base import native as native
from hippo_dask.seq._base import resolve as resolve
from hippo_dask.seq._compose import Piecewise, Warmup
from hippo_dask.seq._diff import DifferenceCache, first_difference
from hippo_dask.seq._schedules import (
    Constant,
    Cosine,
    CosineWarmRestarts,
    Cyclic,
    Exponential,
    Linear,
    MultiStep,
    StepLR,
)

__all__ = [
    "Constant",
    "Cosine",
    "CosineWarmRestarts",
    "Cyclic",
    "DifferenceCache",
    "Exponential",
    "Linear",
    "MultiStep",
    "Piecewise",
    "PiecewiseConstant",
    "Sequence",
    "SequenceTemplate",
    "StepLR",
    "Warmup",
    "first_difference",
    "from_dict",
]
