"""Tuning algorithms: each is one coroutine over ``study.train``.

Grid, Random, SHA (Jamieson & Talwalkar), ASHA (Li et al., MLSys 2020), Hyperband (Li et al.,
JMLR 2018), MedianStopping (Vizier), PBT (Jaderberg et al.) and an adapter for Optuna samplers.
Write your own the same way: subclass :class:`Tuner`, implement ``async def run(self, study)``
and type ``study`` as :class:`StudyLike`, the protocol of what a tuner may use from a study.
"""

from hippo_dask.tuners._asha import ASHA
from hippo_dask.tuners._base import StudyLike, Tuner, wait_all, wait_any
from hippo_dask.tuners._grid import Grid
from hippo_dask.tuners._hyperband import Hyperband
from hippo_dask.tuners._median import MedianStopping
from hippo_dask.tuners._optuna import Optuna
from hippo_dask.tuners._pbt import PBT, Exploit
from hippo_dask.tuners._random import Random
from hippo_dask.tuners._rungs import Decision
from hippo_dask.tuners._sha import SHA

__all__ = [
    "ASHA",
    "SHA",
    "PBT",
    "Decision",
    "Exploit",
    "Grid",
    "Hyperband",
    "MedianStopping",
    "Optuna",
    "Random",
    "StudyLike",
    "Tuner",
    "wait_all",
    "wait_any",
]
