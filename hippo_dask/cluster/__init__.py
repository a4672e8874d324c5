"""Dask clusters for studies: on this machine, or on SLURM through dask-jobqueue.

Every worker started here advertises one ``GPU`` (the resource each stage asks for): one worker
per GPU, or on CPU-only machines one per core (local) or per job slot (SLURM).

- :func:`local`: the embedded cluster a :class:`~hippo_dask.Study` starts without ``client=``.
- :func:`slurm`: SLURM jobs of one worker per GPU, replaced when they end, optionally adaptive.
- :func:`cuda_devices`: the CUDA devices this process may use.
"""

from hippo_dask.cluster._local import ClusterClient, cuda_devices, local
from hippo_dask.cluster._slurm import slurm

__all__ = ["ClusterClient", "cuda_devices", "local", "slurm"]
